//! `summarize_items`: summarises every item whose summary by the configured chat
//! model (`inference.chat_model`) is missing or stale, as
//! `GET /api/v1/explore/items/{id}/summary` would (a request for an item the job
//! is summarising joins that generation instead of starting its own).
//!
//! Payload: `{"ids": [...], "limit": 100, "batch_size": 8}`, all optional
//! ([`super::derive`]; `batch_size` 1 to 256). Within a batch, two summaries are
//! generated at a time (the local backend's default pool). A checkpoint after
//! each batch: a redelivered or retried job resumes after it, and a cancelled one
//! stops between batches (summaries already stored stay).
//!
//! Result: `{"items_scanned", "items_summarized", "items_skipped", "model"}`.

use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::derive::{self, Request, Walk};
use super::embed_items::inference_failed;
use crate::explore::semantic::service::{Semantic, SemanticError};
use crate::explore::semantic::store::Derived;
use crate::queue::handler::{FieldErrors, JobContext, JobError, JobHandler};

/// Items per batch when the payload names none.
pub const DEFAULT_BATCH_SIZE: u64 = 8;
/// Most items per batch.
pub const MAX_BATCH_SIZE: u64 = 256;
/// Summaries generated at a time.
const CONCURRENCY: usize = 2;

/// The `summarize_items` kind.
#[derive(Clone)]
pub struct SummarizeItems {
    semantic: Semantic,
}

fn failed(err: SemanticError) -> JobError {
    match err {
        SemanticError::Inference(err) => inference_failed(err),
        other => JobError::Failed(other.to_string()),
    }
}

impl SummarizeItems {
    /// The kind over the node's semantic reads.
    pub fn new(semantic: Semantic) -> Self {
        Self { semantic }
    }

    fn parse(payload: &Value) -> Result<Request, FieldErrors> {
        derive::parse(payload, DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE)
    }

    async fn summarize(self, ctx: JobContext) -> Result<Value, JobError> {
        let request = Self::parse(&ctx.payload).map_err(|errors| super::support::fatal_payload(&errors))?;
        let db = self.semantic.db().clone();
        let model = self.semantic.inference().chat_model().to_owned();
        let db_failed = |e: sea_orm::DbErr| JobError::Failed(format!("database error: {e}"));
        let mut walk = Walk::resume(&ctx)?;
        let total = derive::total(&db, &request).await.map_err(db_failed)?;
        ctx.progress(walk.scanned, Some(total), Some(format!("{} summarized", walk.done))).await?;
        while !walk.reached(&request) {
            ctx.check()?;
            let step =
                derive::next_step(&db, Derived::Summary, &model, &request, &walk).await.map_err(db_failed)?;
            let Some(step) = step else {
                break;
            };
            let results: Vec<Result<(), SemanticError>> = futures::stream::iter(step.pending.iter().cloned())
                .map(|pending| {
                    let semantic = self.semantic.clone();
                    async move { semantic.ensure_summary(pending.id, pending.input).await.map(|_| ()) }
                })
                .buffered(CONCURRENCY)
                .collect()
                .await;
            let (mut done, mut skipped) = (0, 0);
            for result in results {
                match result {
                    Ok(()) => done += 1,
                    // deleted meanwhile
                    Err(SemanticError::NotFound(_)) => skipped += 1,
                    Err(err) => return Err(failed(err)),
                }
            }
            walk = Walk {
                after: Some(step.last),
                scanned: walk.scanned + step.scanned,
                done: walk.done + done,
                skipped: walk.skipped + skipped,
            };
            walk.save(&ctx, total, "summarized").await?;
        }
        tracing::info!(job = %ctx.job_id, scanned = walk.scanned, summarized = walk.done, model = %model, "items summarized");
        Ok(json!({
            "items_scanned": walk.scanned,
            "items_summarized": walk.done,
            "items_skipped": walk.skipped,
            "model": model,
        }))
    }
}

impl JobHandler for SummarizeItems {
    fn kind(&self) -> &'static str {
        "summarize_items"
    }

    fn validate(&self, payload: &Value) -> Result<(), FieldErrors> {
        Self::parse(payload).map(|_| ())
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<Value, JobError>> {
        Box::pin(self.clone().summarize(ctx))
    }
}
