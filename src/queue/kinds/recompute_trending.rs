//! `recompute_trending`: re-encodes every trending score under the configured
//! half-life (`explore.trend_half_life_hours`).
//!
//! A score is stored against a fixed epoch ([`crate::explore::trend`]), so time
//! passing needs no rewrite: ordering by it is ordering by views decayed to any
//! common instant. What does go stale is a score written under another half-life:
//! after changing `explore.trend_half_life_hours`, run this job with the previous
//! value. Each viewed item's score is decayed to the job's start under
//! `previous_half_life_hours` and re-encoded under the configured half-life: it
//! stands for the same decayed views at that instant and decays at the new pace from
//! then on. With the previous half-life equal to the configured one (the default)
//! there is nothing to change and no row is written.
//!
//! Payload: `{"previous_half_life_hours": 12.0, "batch_size": 1000}`, both optional
//! (`batch_size`: items per transaction, 1 to 100,000).
//!
//! Batches walk the items by id. Each batch's checkpoint (the last id, the counts and
//! the shift) is written in the batch's own transaction, so a redelivered job never
//! shifts a score twice, and its counts are exact. Cancellation is honoured between
//! batches, but a cancelled run leaves the items it reached re-encoded and the others
//! not (a new run would shift the first ones again): let it finish (a batch is one
//! `UPDATE`; 100,000 items take seconds).
//!
//! Result: `{"rows_scanned", "rows_updated", "shift", "half_life_hours",
//! "previous_half_life_hours"}`.

use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use sea_orm::{DatabaseConnection, SqliteTransactionMode, TransactionOptions, TransactionTrait};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::support::{
    MAX_BATCH_SIZE, fatal_payload, finish, optional_positive, optional_u64, save_checkpoint_in,
};
use crate::explore::{maintenance, trend};
use crate::queue::handler::{FieldErrors, JobContext, JobError, JobHandler, only_fields};
use crate::queue::model::Progress;

/// Items per batch when the payload names none.
pub const DEFAULT_BATCH_SIZE: u64 = 1000;
/// The longest half-life a payload may name (ten years).
const MAX_HALF_LIFE_HOURS: f64 = 87_600.0;

/// The `recompute_trending` kind.
#[derive(Clone)]
pub struct RecomputeTrending {
    db: DatabaseConnection,
    half_life_hours: f64,
}

struct Request {
    previous_half_life_hours: f64,
    batch_size: u64,
}

/// The checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Walk {
    /// The last id done.
    after: Option<String>,
    scanned: u64,
    updated: u64,
    /// What every score gets added (fixed at the first attempt's start).
    shift: f64,
}

fn hours(hours: f64) -> Duration {
    Duration::from_secs_f64(hours * 3600.0)
}

impl RecomputeTrending {
    /// The kind over `db`, for scores under `half_life_hours`.
    pub fn new(db: DatabaseConnection, half_life_hours: f64) -> Self {
        Self { db, half_life_hours }
    }

    fn parse(&self, payload: &Value) -> Result<Request, FieldErrors> {
        only_fields(payload, &["previous_half_life_hours", "batch_size"])?;
        let mut errors = FieldErrors::new();
        let previous =
            optional_positive(payload, "previous_half_life_hours", MAX_HALF_LIFE_HOURS, &mut errors);
        let batch_size = optional_u64(payload, "batch_size", 1..=MAX_BATCH_SIZE, &mut errors);
        finish(errors)?;
        Ok(Request {
            previous_half_life_hours: previous.unwrap_or(self.half_life_hours),
            batch_size: batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
        })
    }

    async fn recompute(self, ctx: JobContext) -> Result<Value, JobError> {
        let request = self.parse(&ctx.payload).map_err(|errors| fatal_payload(&errors))?;
        let mut walk = match &ctx.checkpoint {
            Some(checkpoint) => serde_json::from_value(checkpoint.clone())
                .map_err(|e| JobError::Fatal(format!("the job's checkpoint is unreadable: {e}")))?,
            None => Walk {
                after: None,
                scanned: 0,
                updated: 0,
                shift: trend::rescale_shift(
                    Utc::now(),
                    hours(request.previous_half_life_hours),
                    hours(self.half_life_hours),
                ),
            },
        };
        let failed = |e: sea_orm::DbErr| JobError::Failed(format!("database error: {e}"));
        let total = maintenance::item_count(&self.db).await.map_err(failed)?;
        ctx.progress(walk.scanned, Some(total), None).await?;
        while walk.shift != 0.0 {
            ctx.check()?;
            let options = TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            };
            let txn = self.db.begin_with_options(options).await.map_err(failed)?;
            let ids = maintenance::next_ids(&txn, walk.after.as_deref(), request.batch_size)
                .await
                .map_err(failed)?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            let updated = maintenance::shift_trends(&txn, &ids, walk.shift).await.map_err(failed)?;
            let next = Walk {
                after: Some(last),
                scanned: walk.scanned + ids.len() as u64,
                updated: walk.updated + updated,
                shift: walk.shift,
            };
            let progress = Progress { processed: next.scanned, total: Some(total), message: None };
            let checkpoint = serde_json::to_value(&next).unwrap_or(Value::Null);
            save_checkpoint_in(&txn, &ctx.job_id, ctx.attempt, &progress, &checkpoint).await?;
            txn.commit().await.map_err(failed)?;
            walk = next;
            ctx.progress(walk.scanned, Some(total), None).await?;
        }
        tracing::info!(
            job = %ctx.job_id,
            rows_scanned = walk.scanned,
            rows_updated = walk.updated,
            shift = walk.shift,
            "trending scores re-encoded"
        );
        Ok(json!({
            "rows_scanned": walk.scanned,
            "rows_updated": walk.updated,
            "shift": walk.shift,
            "half_life_hours": self.half_life_hours,
            "previous_half_life_hours": request.previous_half_life_hours,
        }))
    }
}

impl JobHandler for RecomputeTrending {
    fn kind(&self) -> &'static str {
        "recompute_trending"
    }

    fn validate(&self, payload: &Value) -> Result<(), FieldErrors> {
        self.parse(payload).map(|_| ())
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<Value, JobError>> {
        Box::pin(self.clone().recompute(ctx))
    }
}
