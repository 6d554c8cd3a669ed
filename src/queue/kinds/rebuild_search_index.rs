//! `rebuild_search_index`: rebuilds the full-text index of the catalogue.
//!
//! - SQLite: FTS5's `rebuild` of `items_fts` from `items`, one statement in one
//!   transaction (searches see the old index until the new one is whole). It cannot
//!   be cancelled once started (cancellation is honoured before it); progress is the
//!   item count before and after.
//! - PostgreSQL: the generated `search` tsvector of every item is recomputed, in
//!   batches of `batch_size` items walked by id (needed after the text search
//!   configuration changed), then its GIN index is rebuilt with
//!   `REINDEX ... CONCURRENTLY` (reads and writes go on). A checkpoint after each
//!   batch (the last id and the count): rewriting a row twice is harmless, so a
//!   redelivered job resumes after the last checkpoint and counts each item once.
//!   Cancellation is honoured between batches and before the reindex.
//!
//! Payload: `{"batch_size": 1000}` (optional, 1 to 100,000; PostgreSQL only).
//!
//! Result: `{"items_indexed", "backend"}`.

use futures::future::BoxFuture;
use sea_orm::{DatabaseConnection, DbBackend};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::support::{MAX_BATCH_SIZE, fatal_payload, finish, optional_u64};
use crate::explore::maintenance;
use crate::queue::handler::{FieldErrors, JobContext, JobError, JobHandler, only_fields};
use crate::queue::model::Progress;

/// Items per batch when the payload names none.
pub const DEFAULT_BATCH_SIZE: u64 = 1000;

/// The `rebuild_search_index` kind.
#[derive(Clone)]
pub struct RebuildSearchIndex {
    db: DatabaseConnection,
}

/// The checkpoint (PostgreSQL).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct Walk {
    /// The last id whose tsvector was recomputed.
    after: Option<String>,
    indexed: u64,
}

fn failed(error: sea_orm::DbErr) -> JobError {
    JobError::Failed(format!("database error: {error}"))
}

impl RebuildSearchIndex {
    /// The kind over `db`.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    fn parse(payload: &Value) -> Result<u64, FieldErrors> {
        only_fields(payload, &["batch_size"])?;
        let mut errors = FieldErrors::new();
        let batch_size = optional_u64(payload, "batch_size", 1..=MAX_BATCH_SIZE, &mut errors);
        finish(errors)?;
        Ok(batch_size.unwrap_or(DEFAULT_BATCH_SIZE))
    }

    async fn rebuild(self, ctx: JobContext) -> Result<Value, JobError> {
        let batch_size = Self::parse(&ctx.payload).map_err(|errors| fatal_payload(&errors))?;
        let total = maintenance::item_count(&self.db).await.map_err(failed)?;
        match self.db.get_database_backend() {
            DbBackend::Sqlite => {
                ctx.progress(0, Some(total), Some("rebuilding the FTS5 index".to_owned())).await?;
                let indexed = maintenance::rebuild_fts_sqlite(&self.db).await.map_err(failed)?;
                let progress = Progress { processed: indexed, total: Some(indexed), message: None };
                ctx.checkpoint(progress, json!({ "indexed": indexed })).await?;
                tracing::info!(job = %ctx.job_id, items = indexed, backend = "sqlite", "search index rebuilt");
                Ok(json!({ "items_indexed": indexed, "backend": "sqlite" }))
            }
            DbBackend::Postgres => self.rebuild_postgres(&ctx, batch_size, total).await,
            other => Err(JobError::Fatal(format!("no full-text index on {other:?}"))),
        }
    }

    async fn rebuild_postgres(
        &self,
        ctx: &JobContext,
        batch_size: u64,
        total: u64,
    ) -> Result<Value, JobError> {
        let mut walk: Walk = match &ctx.checkpoint {
            Some(checkpoint) => serde_json::from_value(checkpoint.clone())
                .map_err(|e| JobError::Fatal(format!("the job's checkpoint is unreadable: {e}")))?,
            None => Walk::default(),
        };
        ctx.progress(walk.indexed, Some(total), Some("recomputing the search vectors".to_owned())).await?;
        loop {
            ctx.check()?;
            let ids =
                maintenance::next_ids(&self.db, walk.after.as_deref(), batch_size).await.map_err(failed)?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            let rewritten = maintenance::recompute_search_pg(&self.db, &ids).await.map_err(failed)?;
            walk = Walk { after: Some(last), indexed: walk.indexed + rewritten };
            let progress = Progress { processed: walk.indexed, total: Some(total), message: None };
            let checkpoint = serde_json::to_value(&walk).unwrap_or(Value::Null);
            ctx.checkpoint(progress, checkpoint).await?;
        }
        ctx.check()?;
        ctx.progress(walk.indexed, Some(total), Some("rebuilding the index".to_owned())).await?;
        maintenance::reindex_search_pg(&self.db).await.map_err(failed)?;
        tracing::info!(job = %ctx.job_id, items = walk.indexed, backend = "postgres", "search index rebuilt");
        Ok(json!({ "items_indexed": walk.indexed, "backend": "postgres" }))
    }
}

impl JobHandler for RebuildSearchIndex {
    fn kind(&self) -> &'static str {
        "rebuild_search_index"
    }

    fn validate(&self, payload: &Value) -> Result<(), FieldErrors> {
        Self::parse(payload).map(|_| ())
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<Value, JobError>> {
        Box::pin(self.clone().rebuild(ctx))
    }
}
