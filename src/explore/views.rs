//! ViewCounter: counts item detail views in memory and flushes them to the
//! database in batches (one transaction per flush), so a popular item costs one
//! write per interval instead of one per request. Views are what trending ranks by.
//!
//! A view counts once per (user, item) per `explore.view_dedup_window_secs`
//! ([`ViewDedup`]): repeating a request does not move trending. The pairs are
//! remembered in this actor, per node, and forgotten when it restarts.
//!
//! A flush runs as a tracked task whose result comes back as a message; a failed
//! flush puts its counts back, so a database outage loses nothing (up to a bound on
//! distinct pending items). Graceful stop flushes what is pending; a kill loses at
//! most one interval of counts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

use super::ExploreService;
use super::view_dedup::{ViewDedup, ViewOutcome};
use crate::metrics;
use crate::supervision::child::ChaosTarget;
use crate::supervision::supervisor::chaos_panic;
use crate::supervision::tree::ActorStats;

/// Most distinct items held between flushes; views of further items are dropped (and logged).
pub const MAX_PENDING_ITEMS: usize = 100_000;

/// Messages the ViewCounter handles.
pub enum ViewMsg {
    /// One detail view of an item by a user.
    Viewed { item: String, user: String },
    /// Time to flush.
    Flush,
    /// A flush finished; on failure its counts are merged back.
    Flushed { batch: HashMap<String, u64>, ok: bool },
    /// Chaos: panic while handling this message.
    Panic,
}

impl ractor::Message for ViewMsg {}

impl ChaosTarget for ViewMsg {
    fn chaos_panic() -> Self {
        Self::Panic
    }
}

/// The ViewCounter's configuration.
pub struct ViewCounter {
    pub flush_every: Duration,
    pub half_life: Duration,
    /// How long a user's view of an item keeps further ones from counting (zero: never).
    pub dedup_window: Duration,
    /// Most (user, item) pairs remembered for that.
    pub dedup_max_entries: usize,
}

/// What the ViewCounter is started with.
pub struct ViewArgs {
    pub service: ExploreService,
    pub stats: Arc<ActorStats>,
}

/// The ViewCounter's state.
pub struct ViewState {
    service: ExploreService,
    stats: Arc<ActorStats>,
    pending: HashMap<String, u64>,
    dedup: ViewDedup,
    outcomes: OutcomeCounters,
    flushing: Option<JoinHandle<()>>,
    ticker: Option<JoinHandle<()>>,
    dropped_warned: bool,
}

impl Actor for ViewCounter {
    type Msg = ViewMsg;
    type State = ViewState;
    type Arguments = ViewArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ViewMsg>,
        args: ViewArgs,
    ) -> Result<ViewState, ActorProcessingErr> {
        Ok(ViewState {
            service: args.service,
            stats: args.stats,
            pending: HashMap::new(),
            dedup: ViewDedup::new(self.dedup_window, self.dedup_max_entries),
            outcomes: OutcomeCounters::new(),
            flushing: None,
            ticker: None,
            dropped_warned: false,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<ViewMsg>,
        state: &mut ViewState,
    ) -> Result<(), ActorProcessingErr> {
        state.ticker = Some(myself.send_interval(self.flush_every, || ViewMsg::Flush));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ViewMsg>,
        message: ViewMsg,
        state: &mut ViewState,
    ) -> Result<(), ActorProcessingErr> {
        state.stats.handled();
        match message {
            ViewMsg::Viewed { item, user } => viewed(state, item, &user),
            ViewMsg::Flush => {
                metrics::explore_view_dedup_entries(state.dedup.len());
                self.flush(&myself, state);
            }
            ViewMsg::Flushed { batch, ok } => {
                state.flushing = None;
                metrics::explore_view_flush(if ok { "ok" } else { "error" });
                if !ok {
                    for (id, count) in batch {
                        add(state, id, count);
                    }
                }
            }
            ViewMsg::Panic => chaos_panic("views"),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ViewMsg>,
        state: &mut ViewState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(ticker) = state.ticker.take() {
            ticker.abort();
        }
        if let Some(task) = state.flushing.take() {
            let _ = task.await;
        }
        let pending = std::mem::take(&mut state.pending);
        if let Err(err) = state.service.record_views(&pending, self.half_life).await {
            tracing::warn!(error = %err, items = pending.len(), "could not flush views at stop; they are lost");
        }
        Ok(())
    }
}

/// The view counters by outcome, looked up once.
struct OutcomeCounters {
    counted: ::metrics::Counter,
    duplicate: ::metrics::Counter,
    dropped: ::metrics::Counter,
}

impl OutcomeCounters {
    fn new() -> Self {
        Self {
            counted: metrics::explore_views_counter("counted"),
            duplicate: metrics::explore_views_counter("duplicate"),
            dropped: metrics::explore_views_counter("dropped"),
        }
    }
}

/// One view: dropped when no more items can be held (before the pair is remembered,
/// so that a later view may still count), else counted unless it repeats one.
fn viewed(state: &mut ViewState, item: String, user: &str) {
    if !has_room(state, &item) {
        state.outcomes.dropped.increment(1);
        return;
    }
    match state.dedup.check(user, &item) {
        ViewOutcome::Duplicate => state.outcomes.duplicate.increment(1),
        ViewOutcome::Counted => {
            state.outcomes.counted.increment(1);
            add(state, item, 1);
        }
    }
}

fn has_room(state: &mut ViewState, id: &str) -> bool {
    if state.pending.len() < MAX_PENDING_ITEMS || state.pending.contains_key(id) {
        return true;
    }
    if !state.dropped_warned {
        tracing::warn!(
            limit = MAX_PENDING_ITEMS,
            "too many distinct items pending a view flush; dropping views"
        );
        state.dropped_warned = true;
    }
    false
}

fn add(state: &mut ViewState, id: String, count: u64) {
    if !has_room(state, &id) {
        return;
    }
    *state.pending.entry(id).or_default() += count;
}

impl ViewCounter {
    fn flush(&self, myself: &ActorRef<ViewMsg>, state: &mut ViewState) {
        if state.flushing.is_some() || state.pending.is_empty() {
            return;
        }
        state.dropped_warned = false;
        let batch = std::mem::take(&mut state.pending);
        let service = state.service.clone();
        let half_life = self.half_life;
        let actor = myself.clone();
        state.flushing = Some(tokio::spawn(async move {
            let ok = match service.record_views(&batch, half_life).await {
                Ok(()) => true,
                Err(err) => {
                    tracing::warn!(error = %err, items = batch.len(), "view flush failed; will retry");
                    false
                }
            };
            let _ = actor.cast(ViewMsg::Flushed { batch, ok });
        }));
    }
}
