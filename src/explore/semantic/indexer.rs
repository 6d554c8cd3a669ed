//! SemanticIndexer: keeps the node's [`SharedIndex`] in step with the catalogue.
//!
//! - At start it loads the index from `item_embeddings` (page by page); a restart
//!   loads it again, so whatever it missed while down is picked up.
//! - Item changes, this node's (Explore's change bus) and other nodes' (the
//!   queue's remote change bus), land in the bounded [`ChangeQueue`]: the bus's
//!   inline subscriber only pushes and pokes the actor, so a write never waits for
//!   it. The actor takes up to `explore.semantic_batch_max` items at a time: a
//!   deleted item leaves the index; a changed one whose stored embedding is
//!   missing or stale (its `text_hash` differs) is embedded again, all of them in
//!   one embed call, stored and indexed; one whose stored embedding is current
//!   (written by another node) is indexed from the store. Two nodes embedding one
//!   item at once is harmless: same model, same text, same vector, an upsert.
//! - Every `explore.semantic_sync_secs` it reads the vectors written since it last
//!   looked (by `embed_items` jobs and related-item requests on any node).
//! - When the queue overflowed it reloads the whole index instead.
//!
//! One piece of work runs at a time, as a task whose outcome comes back as a
//! message; the mailbox never waits on the database or a model. A failed batch
//! goes back to the queue and is tried again after a backoff.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use sea_orm::DatabaseConnection;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::SharedIndex;
use super::changes::{Batch, ChangeQueue};
use super::store::{self, Derived, StoredEmbedding, UpdateMark};
use crate::explore::ChangeBus;
use crate::inference::{Inference, InferenceError};
use crate::metrics;
use crate::supervision::backoff::Backoff;
use crate::supervision::chaos::chaos_panic;
use crate::supervision::child::ChaosTarget;
use crate::supervision::slot::ActorSlot;
use crate::supervision::tree::ActorStats;

/// How far back a sync looks before the last vector it saw: rows written by a
/// transaction that committed late, or by a node whose clock is a little behind.
pub const SYNC_SLACK: Duration = Duration::from_secs(60);
/// Vectors read per page by a sync.
const SYNC_PAGE: u64 = 1_000;

/// Messages the indexer handles.
pub enum IndexerMsg {
    /// Changes are waiting in the queue (or a retry is due).
    Wake,
    /// Time to read the vectors written elsewhere.
    Sync,
    /// A piece of work ended.
    Done(Outcome),
    /// Chaos: panic while handling this message.
    Panic,
}

impl ractor::Message for IndexerMsg {}

impl ChaosTarget for IndexerMsg {
    fn chaos_panic() -> Self {
        Self::Panic
    }
}

/// How a piece of work ended.
pub enum Outcome {
    Loaded { result: Result<usize, String>, mark: UpdateMark, took: Duration },
    Applied { batch: Batch, result: Result<Applied, String> },
    Synced(Result<Option<UpdateMark>, String>),
}

/// What a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Items embedded anew.
    pub embedded: usize,
    /// Items indexed from their stored, current embedding.
    pub indexed: usize,
    /// Items dropped from the index (deleted, or with no embedding to be had).
    pub removed: usize,
}

/// Subscribes `queue` to `buses`: each change is queued, and the indexer in `slot`
/// (when running) is told. Call before anything writes.
pub fn watch(buses: &[&ChangeBus], queue: &Arc<ChangeQueue>, slot: &ActorSlot<IndexerMsg>) {
    for bus in buses {
        let (queue, slot) = (queue.clone(), slot.clone());
        bus.on_publish("semantic-indexer", move |changes| {
            let dropped = queue.push(&changes);
            if dropped > 0 {
                metrics::explore_indexer_changes("dropped", dropped);
            }
            slot.cast(IndexerMsg::Wake);
            Box::pin(async {})
        });
    }
}

/// The indexer's configuration.
pub struct SemanticIndexer {
    /// Items per batch (and texts per embed call).
    pub batch_max: usize,
    pub sync_every: Duration,
    /// Delay before a failed batch or load is tried again.
    pub retry: Backoff,
}

/// What it works with.
pub struct IndexerArgs {
    pub db: DatabaseConnection,
    pub inference: Inference,
    pub index: SharedIndex,
    pub queue: Arc<ChangeQueue>,
    pub stats: Arc<ActorStats>,
}

/// Its state.
pub struct IndexerState {
    args: IndexerArgs,
    task: Option<JoinHandle<()>>,
    loaded: bool,
    reload: bool,
    sync_due: bool,
    /// Where the next sync starts.
    mark: Option<UpdateMark>,
    failures: u32,
    retry_at: Option<Instant>,
    ticker: Option<JoinHandle<()>>,
}

impl Actor for SemanticIndexer {
    type Msg = IndexerMsg;
    type State = IndexerState;
    type Arguments = IndexerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<IndexerMsg>,
        args: IndexerArgs,
    ) -> Result<IndexerState, ActorProcessingErr> {
        Ok(IndexerState {
            args,
            task: None,
            loaded: false,
            reload: true,
            sync_due: false,
            mark: None,
            failures: 0,
            retry_at: None,
            ticker: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<IndexerMsg>,
        state: &mut IndexerState,
    ) -> Result<(), ActorProcessingErr> {
        state.ticker = Some(myself.send_interval(self.sync_every, || IndexerMsg::Sync));
        self.next(&myself, state);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<IndexerMsg>,
        message: IndexerMsg,
        state: &mut IndexerState,
    ) -> Result<(), ActorProcessingErr> {
        state.args.stats.handled();
        match message {
            IndexerMsg::Wake => {}
            IndexerMsg::Sync => state.sync_due = true,
            IndexerMsg::Done(outcome) => {
                state.task = None;
                self.finished(&myself, state, outcome);
            }
            IndexerMsg::Panic => chaos_panic("semantic-indexer"),
        }
        self.next(&myself, state);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<IndexerMsg>,
        state: &mut IndexerState,
    ) -> Result<(), ActorProcessingErr> {
        for task in [state.ticker.take(), state.task.take()].into_iter().flatten() {
            task.abort();
        }
        Ok(())
    }
}

impl SemanticIndexer {
    /// Starts the next piece of work, if none runs and one is due: a load, else a
    /// batch of changes, else a sync.
    fn next(&self, myself: &ActorRef<IndexerMsg>, state: &mut IndexerState) {
        if state.task.is_some() || state.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        state.retry_at = None;
        if state.args.queue.take_overflow() {
            tracing::warn!(
                "item changes were dropped from the semantic indexer's full queue; reloading the index"
            );
            state.reload = true;
        }
        let args = &state.args;
        let (db, index) = (args.db.clone(), args.index.clone());
        let work: futures::future::BoxFuture<'static, Outcome> = if state.reload {
            state.reload = false;
            let mark = UpdateMark { at: Utc::now() - SYNC_SLACK, item_id: String::new() };
            Box::pin(async move {
                let started = Instant::now();
                let result = index.load(&db).await.map(|report| report.loaded).map_err(|e| e.to_string());
                Outcome::Loaded { result, mark, took: started.elapsed() }
            })
        } else if !state.loaded {
            return;
        } else if !args.queue.is_empty() {
            let batch = args.queue.take(self.batch_max);
            let (inference, chunk) = (args.inference.clone(), self.batch_max);
            Box::pin(async move {
                let result = apply(&db, &inference, &index, &batch, chunk).await;
                Outcome::Applied { batch, result }
            })
        } else if state.sync_due {
            state.sync_due = false;
            let mark = state.mark.clone();
            Box::pin(async move { Outcome::Synced(sync(&db, &index, mark).await.map_err(|e| e.to_string())) })
        } else {
            return;
        };
        let actor = myself.clone();
        state.task = Some(tokio::spawn(async move {
            let outcome = work.await;
            let _ = actor.cast(IndexerMsg::Done(outcome));
        }));
    }

    fn finished(&self, myself: &ActorRef<IndexerMsg>, state: &mut IndexerState, outcome: Outcome) {
        let failed = match outcome {
            Outcome::Loaded { result: Ok(loaded), mark, took } => {
                tracing::info!(
                    vectors = loaded,
                    bytes = state.args.index.vector_bytes(),
                    model = %state.args.index.model(),
                    elapsed_ms = took.as_millis() as u64,
                    "semantic index loaded"
                );
                state.loaded = true;
                state.mark = Some(mark);
                None
            }
            Outcome::Loaded { result: Err(err), .. } => {
                state.reload = true;
                Some(format!("loading the index: {err}"))
            }
            Outcome::Applied { batch, result: Ok(applied) } => {
                metrics::explore_indexer_changes("applied", batch.len());
                tracing::debug!(items = batch.len(), embedded = applied.embedded, "item changes indexed");
                None
            }
            Outcome::Applied { batch, result: Err(err) } => {
                let items = batch.len();
                state.args.queue.put_back(Batch { refresh: batch.refresh, remove: Vec::new() });
                Some(format!("indexing {items} changed items: {err}"))
            }
            Outcome::Synced(Ok(mark)) => {
                if mark.is_some() {
                    state.mark = mark;
                }
                None
            }
            Outcome::Synced(Err(err)) => {
                state.sync_due = true;
                Some(format!("reading the vectors written elsewhere: {err}"))
            }
        };
        metrics::explore_semantic_index(state.args.index.len(), state.args.index.vector_bytes());
        match failed {
            None => state.failures = 0,
            Some(reason) => {
                let delay = self.retry.delay(state.failures, &mut rand::rng());
                state.failures = state.failures.saturating_add(1);
                tracing::warn!(error = %reason, retry_ms = delay.as_millis() as u64, "semantic indexer work failed");
                state.retry_at = Some(Instant::now() + delay);
                myself.send_after(delay, || IndexerMsg::Wake);
            }
        }
    }
}

/// Applies a batch of changes to the index (and the store).
async fn apply(
    db: &DatabaseConnection,
    inference: &Inference,
    index: &SharedIndex,
    batch: &Batch,
    chunk: usize,
) -> Result<Applied, String> {
    let mut applied = Applied::default();
    for id in &batch.remove {
        applied.removed += usize::from(index.remove(id));
    }
    if batch.refresh.is_empty() {
        return Ok(applied);
    }
    let model = index.model().to_owned();
    let failed = |e: sea_orm::DbErr| format!("database error: {e}");
    let pending =
        store::pending_among(db, Derived::Embedding, &model, &batch.refresh).await.map_err(failed)?;
    let stale: std::collections::HashSet<&str> = pending.iter().map(|p| p.id.as_str()).collect();
    let current: Vec<String> =
        batch.refresh.iter().filter(|id| !stale.contains(id.as_str())).cloned().collect();
    let stored = store::embeddings_of(db, &model, &current).await.map_err(failed)?;
    let mut indexed: std::collections::HashSet<String> = std::collections::HashSet::new();
    for row in &stored {
        if index.upsert(&row.item_id, &row.vector).is_ok() {
            indexed.insert(row.item_id.clone());
            applied.indexed += 1;
        }
    }
    let embedded = match embed_pending(db, inference, &model, &pending, chunk).await {
        Ok(rows) => rows,
        // no model will answer on this node: leave these to a node (or a job) that has
        // one; meanwhile the index keeps what it has of them
        Err(EmbedError::Inference(InferenceError::Disabled)) => Vec::new(),
        Err(err) => return Err(err.to_string()),
    };
    for row in &embedded {
        if index.upsert(&row.item_id, &row.vector).is_ok() {
            indexed.insert(row.item_id.clone());
            applied.embedded += 1;
        }
    }
    // neither pending nor with a stored vector: deleted meanwhile. (One still
    // pending keeps the vector the index has, if any: a little stale beats missing.)
    for id in batch.refresh.iter().filter(|id| !indexed.contains(id.as_str()) && !stale.contains(id.as_str()))
    {
        applied.removed += usize::from(index.remove(id));
    }
    Ok(applied)
}

/// Why embedding failed.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error("the model answered {got} vectors for {asked} texts")]
    Count { asked: usize, got: usize },
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
}

/// Embeds the texts of `pending` by `model`, `chunk` texts per call, and stores
/// the vectors; answers the rows stored (items deleted meanwhile are not).
pub async fn embed_pending(
    db: &DatabaseConnection,
    inference: &Inference,
    model: &str,
    pending: &[store::Pending],
    chunk: usize,
) -> Result<Vec<StoredEmbedding>, EmbedError> {
    let mut out = Vec::with_capacity(pending.len());
    for part in pending.chunks(chunk.max(1)) {
        let texts: Vec<String> = part.iter().map(|p| p.input.text.clone()).collect();
        let vectors = inference.embed(model, texts).await?.vectors;
        if vectors.len() != part.len() {
            return Err(EmbedError::Count { asked: part.len(), got: vectors.len() });
        }
        let rows: Vec<StoredEmbedding> = part
            .iter()
            .zip(vectors)
            .map(|(p, vector)| StoredEmbedding {
                item_id: p.id.clone(),
                model: model.to_owned(),
                text_hash: p.input.hash.clone(),
                vector,
            })
            .collect();
        store::save_embeddings(db, &rows, Utc::now()).await?;
        metrics::explore_embeddings("indexer", rows.len());
        out.extend(rows);
    }
    Ok(out)
}

/// Reads the vectors written after `mark` into the index; answers the mark to
/// start from next time (`None`: nothing new).
async fn sync(
    db: &DatabaseConnection,
    index: &SharedIndex,
    mark: Option<UpdateMark>,
) -> Result<Option<UpdateMark>, sea_orm::DbErr> {
    let mut after = mark;
    let mut last_seen = None;
    loop {
        let rows = store::embeddings_updated_after(db, index.model(), after.as_ref(), SYNC_PAGE).await?;
        let full = rows.len() as u64 == SYNC_PAGE;
        for (row, mark) in rows {
            if let Err(err) = index.upsert(&row.item_id, &row.vector) {
                tracing::warn!(item = %row.item_id, error = %err, "stored embedding left out of the index");
            }
            last_seen = Some(mark.clone());
            after = Some(mark);
        }
        if !full {
            break;
        }
    }
    // next time, look again a little before the newest row seen
    let slack = chrono::Duration::from_std(SYNC_SLACK).unwrap_or_default();
    Ok(last_seen.map(|m| UpdateMark { at: m.at - slack, item_id: String::new() }))
}

#[cfg(test)]
mod tests;
