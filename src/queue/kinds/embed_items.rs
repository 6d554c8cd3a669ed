//! `embed_items`: embeds every item whose embedding by the configured embedding
//! model (`inference.embedding_model`) is missing or stale, `batch_size` texts
//! per embed call; stores the vectors and puts them in this node's semantic index
//! (other nodes pick them up at their next sync, `explore.semantic_sync_secs`).
//!
//! Payload: `{"ids": [...], "limit": 1000, "batch_size": 64}`, all optional
//! ([`super::derive`]; `batch_size` 1 to 256). A checkpoint after each batch (the
//! last id and the counts): a redelivered or retried job resumes after it, and a
//! cancelled one stops between batches, keeping what it stored.
//!
//! Result: `{"items_scanned", "items_embedded", "items_skipped", "model"}`.

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::derive::{self, Request, Walk};
use crate::explore::semantic::indexer::{EmbedError, embed_pending};
use crate::explore::semantic::service::Semantic;
use crate::explore::semantic::store::Derived;
use crate::inference::InferenceError;
use crate::queue::handler::{FieldErrors, JobContext, JobError, JobHandler};

/// Texts per embed call when the payload names none.
pub const DEFAULT_BATCH_SIZE: u64 = 64;
/// Most texts per embed call (`inference.max_embedding_inputs` may be lower).
pub const MAX_BATCH_SIZE: u64 = 256;

/// The `embed_items` kind.
#[derive(Clone)]
pub struct EmbedItems {
    semantic: Semantic,
}

/// A model that will not answer on retry either fails the job; any other failure is retried.
pub fn inference_failed(err: InferenceError) -> JobError {
    match err {
        InferenceError::Disabled | InferenceError::UnknownModel(_) | InferenceError::WrongKind { .. } => {
            JobError::Fatal(err.to_string())
        }
        other => JobError::Failed(other.to_string()),
    }
}

fn embed_failed(err: EmbedError) -> JobError {
    match err {
        EmbedError::Inference(err) => inference_failed(err),
        other => JobError::Failed(other.to_string()),
    }
}

fn db_failed(err: sea_orm::DbErr) -> JobError {
    JobError::Failed(format!("database error: {err}"))
}

impl EmbedItems {
    /// The kind over the node's semantic reads (their inference handle and index).
    pub fn new(semantic: Semantic) -> Self {
        Self { semantic }
    }

    fn parse(payload: &Value) -> Result<Request, FieldErrors> {
        derive::parse(payload, DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE)
    }

    async fn embed(self, ctx: JobContext) -> Result<Value, JobError> {
        let request = Self::parse(&ctx.payload).map_err(|errors| super::support::fatal_payload(&errors))?;
        let (db, index) = (self.semantic.db().clone(), self.semantic.index().clone());
        let model = index.model().to_owned();
        let inference = self.semantic.inference().clone();
        let chunk = usize::try_from(request.batch_size).unwrap_or(usize::MAX);
        let mut walk = Walk::resume(&ctx)?;
        let total = derive::total(&db, &request).await.map_err(db_failed)?;
        ctx.progress(walk.scanned, Some(total), Some(format!("{} embedded", walk.done))).await?;
        while !walk.reached(&request) {
            ctx.check()?;
            let step = derive::next_step(&db, Derived::Embedding, &model, &request, &walk)
                .await
                .map_err(db_failed)?;
            let Some(step) = step else {
                break;
            };
            let rows =
                embed_pending(&db, &inference, &model, &step.pending, chunk).await.map_err(embed_failed)?;
            for row in &rows {
                if let Err(err) = index.upsert(&row.item_id, &row.vector) {
                    tracing::warn!(item = %row.item_id, error = %err, "an embedding was stored but not indexed");
                }
            }
            walk = Walk {
                after: Some(step.last),
                scanned: walk.scanned + step.scanned,
                done: walk.done + rows.len() as u64,
                skipped: walk.skipped + (step.pending.len() - rows.len()) as u64,
            };
            walk.save(&ctx, total, "embedded").await?;
        }
        tracing::info!(job = %ctx.job_id, scanned = walk.scanned, embedded = walk.done, model = %model, "items embedded");
        Ok(json!({
            "items_scanned": walk.scanned,
            "items_embedded": walk.done,
            "items_skipped": walk.skipped,
            "model": model,
        }))
    }
}

impl JobHandler for EmbedItems {
    fn kind(&self) -> &'static str {
        "embed_items"
    }

    fn validate(&self, payload: &Value) -> Result<(), FieldErrors> {
        Self::parse(payload).map(|_| ())
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<Value, JobError>> {
        Box::pin(self.clone().embed(ctx))
    }
}
