//! What `embed_items` and `summarize_items` share: their payload, and the walk
//! over the items whose embedding or summary is missing or stale.
//!
//! Payload (every field optional):
//! - `ids`: only these items (1 to 10,000 ids; unknown ones are skipped);
//!   otherwise the whole catalogue;
//! - `limit`: stop after this many items were embedded or summarised;
//! - `batch_size`: items read per step (each step ends with a checkpoint).
//!
//! The walk goes by id (the listed ids, sorted, or the catalogue). Each step reads
//! `batch_size` items after the checkpoint's last id and keeps those that need
//! work ([`store::scan_pending`]); items already current are passed over at the
//! cost of reading them, so a job run again (or resumed after a redelivery) does
//! only what is left. Progress counts the items read.

use std::collections::BTreeSet;

use sea_orm::{DatabaseConnection, DbErr};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::support::{finish, optional_u64};
use crate::explore::maintenance;
use crate::explore::semantic::store::{self, Derived, Pending};
use crate::explore::validate::is_valid_id;
use crate::queue::handler::{FieldErrors, JobContext, JobError, field, only_fields};
use crate::queue::model::Progress;

/// Most ids a payload may list.
pub const MAX_IDS: usize = 10_000;
/// Largest `limit`.
const MAX_LIMIT: u64 = 100_000_000;

/// A parsed payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Sorted, without repeats.
    pub ids: Option<Vec<String>>,
    pub limit: Option<u64>,
    pub batch_size: u64,
}

/// Reads a payload; `batch_size` defaults to `default_batch` and may be at most `max_batch`.
pub fn parse(payload: &Value, default_batch: u64, max_batch: u64) -> Result<Request, FieldErrors> {
    only_fields(payload, &["ids", "limit", "batch_size"])?;
    let mut errors = FieldErrors::new();
    let ids = ids(payload, &mut errors);
    let limit = optional_u64(payload, "limit", 1..=MAX_LIMIT, &mut errors);
    let batch_size = optional_u64(payload, "batch_size", 1..=max_batch, &mut errors);
    finish(errors)?;
    Ok(Request { ids, limit, batch_size: batch_size.unwrap_or(default_batch) })
}

fn ids(payload: &Value, errors: &mut FieldErrors) -> Option<Vec<String>> {
    let value = field(payload, "ids").filter(|v| !v.is_null())?;
    let Some(list) = value.as_array().filter(|l| (1..=MAX_IDS).contains(&l.len())) else {
        errors.insert("payload.ids".to_owned(), format!("must be a list of 1 to {MAX_IDS} item ids"));
        return None;
    };
    let mut ids = BTreeSet::new();
    for (i, id) in list.iter().enumerate() {
        match id.as_str().filter(|id| is_valid_id(id)) {
            Some(id) => {
                ids.insert(id.to_owned());
            }
            None => {
                errors.insert(
                    format!("payload.ids[{i}]"),
                    "must be an item id (letters, digits and . _ - /, e.g. 2506.20941)".to_owned(),
                );
            }
        }
    }
    Some(ids.into_iter().collect())
}

/// The checkpoint: where the walk stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Walk {
    /// The last id read.
    pub after: Option<String>,
    /// Items read.
    pub scanned: u64,
    /// Items embedded or summarised.
    pub done: u64,
    /// Items that needed work but were deleted meanwhile.
    pub skipped: u64,
}

impl Walk {
    /// The checkpoint of an earlier attempt, or the start.
    pub fn resume(ctx: &JobContext) -> Result<Self, JobError> {
        match &ctx.checkpoint {
            Some(checkpoint) => serde_json::from_value(checkpoint.clone())
                .map_err(|e| JobError::Fatal(format!("the job's checkpoint is unreadable: {e}"))),
            None => Ok(Self::default()),
        }
    }

    /// Whether `limit` items are done.
    pub fn reached(&self, request: &Request) -> bool {
        request.limit.is_some_and(|limit| self.done >= limit)
    }

    /// Saves this walk as the checkpoint, with its progress out of `total`.
    pub async fn save(&self, ctx: &JobContext, total: u64, verb: &str) -> Result<(), JobError> {
        let progress = Progress {
            processed: self.scanned,
            total: Some(total),
            message: Some(format!("{} {verb}", self.done)),
        };
        ctx.checkpoint(progress, serde_json::to_value(self).unwrap_or(Value::Null)).await
    }
}

/// One step of the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The items read that need work (at most what `limit` leaves).
    pub pending: Vec<Pending>,
    /// The last id read.
    pub last: String,
    /// Items read.
    pub scanned: u64,
}

/// The items the walk covers: the listed ids, or the catalogue.
pub async fn total(db: &DatabaseConnection, request: &Request) -> Result<u64, DbErr> {
    match &request.ids {
        Some(ids) => Ok(ids.len() as u64),
        None => maintenance::item_count(db).await,
    }
}

/// The next step after `walk`, or `None` when the walk is over.
pub async fn next_step(
    db: &DatabaseConnection,
    what: Derived,
    model: &str,
    request: &Request,
    walk: &Walk,
) -> Result<Option<Step>, DbErr> {
    let size = usize::try_from(request.batch_size).unwrap_or(usize::MAX);
    let (mut pending, mut last, scanned) = match &request.ids {
        Some(ids) => {
            let start = walk.after.as_ref().map_or(0, |after| ids.partition_point(|id| id <= after));
            let chunk: Vec<String> = ids.iter().skip(start).take(size).cloned().collect();
            let Some(last) = chunk.last().cloned() else {
                return Ok(None);
            };
            let pending = store::pending_among(db, what, model, &chunk).await?;
            (pending, last, chunk.len() as u64)
        }
        None => {
            let scan =
                store::scan_pending(db, what, model, walk.after.as_deref(), request.batch_size).await?;
            let Some(last) = scan.last else {
                return Ok(None);
            };
            (scan.pending, last, scan.scanned)
        }
    };
    if let Some(limit) = request.limit {
        let left = usize::try_from(limit.saturating_sub(walk.done)).unwrap_or(usize::MAX);
        if pending.len() > left {
            pending.truncate(left);
            // the items after the last one kept are for a later run
            if let Some(kept) = pending.last() {
                last = kept.id.clone();
            }
        }
    }
    Ok(Some(Step { pending, last, scanned }))
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use super::*;
    use crate::db::testing::{Backend, TestDatabase};
    use crate::explore::ExploreService;
    use crate::explore::model::ItemInput;

    struct Fixture {
        db: DatabaseConnection,
        _database: TestDatabase,
    }

    /// Items i0 .. i9; i2 and i5 with a current embedding by "m".
    async fn setup(backend: Backend) -> Fixture {
        let (database, db) = TestDatabase::migrated(backend).await;
        let service = ExploreService::new(db.clone(), b"derive-walk-tests");
        for i in 0..10 {
            let input = ItemInput {
                id: Some(format!("i{i}")),
                title: format!("Paper {i}"),
                body: "An abstract.".into(),
                category: "Machine Learning".into(),
                category_code: "cs.LG".into(),
                group: "Computer Science".into(),
                tags: vec![],
                source_url: None,
                published_at: Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap(),
            };
            service.create(input).await.unwrap();
        }
        let mut rows = Vec::new();
        for id in ["i2", "i5"] {
            let text = store::item_text(&db, id).await.unwrap().unwrap();
            rows.push(store::StoredEmbedding {
                item_id: id.into(),
                model: "m".into(),
                text_hash: text.embedding_input().hash,
                vector: vec![1.0; 4],
            });
        }
        store::save_embeddings(&db, &rows, Utc::now()).await.unwrap();
        Fixture { db, _database: database }
    }

    fn pending(step: &Step) -> Vec<&str> {
        step.pending.iter().map(|p| p.id.as_str()).collect()
    }

    async fn a_walk_resumes_after_its_checkpoint_and_skips_current_items(f: Fixture) {
        let request = Request { ids: None, limit: None, batch_size: 4 };
        let step =
            next_step(&f.db, Derived::Embedding, "m", &request, &Walk::default()).await.unwrap().unwrap();
        assert_eq!((pending(&step), step.last.as_str(), step.scanned), (vec!["i0", "i1", "i3"], "i3", 4));
        // a later attempt starts from the checkpoint
        let walk = Walk { after: Some("i3".into()), scanned: 4, done: 3, skipped: 0 };
        let step = next_step(&f.db, Derived::Embedding, "m", &request, &walk).await.unwrap().unwrap();
        assert_eq!((pending(&step), step.last.as_str()), (vec!["i4", "i6", "i7"], "i7"));
        let end = Walk { after: Some("i9".into()), ..walk.clone() };
        assert_eq!(next_step(&f.db, Derived::Embedding, "m", &request, &end).await.unwrap(), None);
        // a limit stops at the item that reaches it
        let limited = Request { limit: Some(4), ..request.clone() };
        let step = next_step(&f.db, Derived::Embedding, "m", &limited, &walk).await.unwrap().unwrap();
        assert_eq!((pending(&step), step.last.as_str()), (vec!["i4"], "i4"));
        assert!(Walk { done: 4, ..walk }.reached(&limited));
        // listed ids: unknown ones are read past, current ones are not pending
        let ids =
            Request { ids: Some(vec!["i1".into(), "i2".into(), "nope".into()]), limit: None, batch_size: 2 };
        let step = next_step(&f.db, Derived::Embedding, "m", &ids, &Walk::default()).await.unwrap().unwrap();
        assert_eq!((pending(&step), step.last.as_str(), step.scanned), (vec!["i1"], "i2", 2));
        let walk = Walk { after: Some("i2".into()), ..Walk::default() };
        let step = next_step(&f.db, Derived::Embedding, "m", &ids, &walk).await.unwrap().unwrap();
        assert_eq!((pending(&step), step.last.as_str()), (vec![], "nope"));
        assert_eq!(total(&f.db, &ids).await.unwrap(), 3);
        assert_eq!(total(&f.db, &request).await.unwrap(), 10);
        // summaries are walked on their own
        let step =
            next_step(&f.db, Derived::Summary, "chat", &request, &Walk::default()).await.unwrap().unwrap();
        assert_eq!(pending(&step), ["i0", "i1", "i2", "i3"]);
    }

    crate::on_both_backends!(setup => a_walk_resumes_after_its_checkpoint_and_skips_current_items);

    #[test]
    fn a_payload_is_read_strictly() {
        let request = parse(&json!({}), 64, 256).unwrap();
        assert_eq!(request, Request { ids: None, limit: None, batch_size: 64 });
        let request =
            parse(&json!({ "ids": ["b", "a", "b"], "limit": 5, "batch_size": 2 }), 64, 256).unwrap();
        assert_eq!(request.ids, Some(vec!["a".to_owned(), "b".to_owned()]), "sorted, once each");
        assert_eq!((request.limit, request.batch_size), (Some(5), 2));
        let errors = parse(&json!({ "ids": [], "limit": 0, "batch_size": 257 }), 64, 256).unwrap_err();
        assert_eq!(
            errors.keys().map(String::as_str).collect::<Vec<_>>(),
            ["payload.batch_size", "payload.ids", "payload.limit"]
        );
        let errors = parse(&json!({ "ids": ["ok", 3, "no spaces"] }), 64, 256).unwrap_err();
        assert_eq!(
            errors.keys().map(String::as_str).collect::<Vec<_>>(),
            ["payload.ids[1]", "payload.ids[2]"]
        );
        assert!(parse(&json!({ "idz": [] }), 64, 256).unwrap_err().contains_key("payload.idz"));
        assert!(parse(&json!([1]), 64, 256).unwrap_err().contains_key("payload"));
    }
}
