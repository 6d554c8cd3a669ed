//! CacheResync (`cache-resync`): the catch-up after a Redis outage. While Redis
//! was unreachable this node bumped the generations of the families its writes
//! touched only locally ([`Generations::bump_local`]); when the listener sees the
//! connection come back it sends [`ResyncMsg::Reconnected`], and this actor
//! forgets L1 and the local generation values, then bumps those families in
//! Redis, so every node stops serving pages cached before the outage.
//!
//! The bumps run as a task the actor owns (its mailbox never waits on Redis);
//! the task's result comes back as [`ResyncMsg::Pushed`]. Redis may still refuse
//! for a moment (the breaker, a pool that reconnects after the subscriber): a
//! refused push is tried again after a backoff, as a scheduled
//! [`ResyncMsg::Push`], at most [`MAX_ATTEMPTS`] times; past that the families
//! stay marked for the next invalidation to take along. A newer reconnection
//! supersedes the catch-up in progress. Families being pushed when the actor
//! dies are marked again for the next incarnation, which resumes the catch-up
//! when it starts with Redis connected.
//!
//! [`Generations::bump_local`]: super::generations::Generations::bump_local

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::task::JoinSet;

use super::Cache;
use super::generations::Family;
use crate::metrics;
use crate::supervision::backoff::Backoff;
use crate::supervision::child::ChaosTarget;
use crate::supervision::supervisor::chaos_panic;
use crate::supervision::tree::ActorStats;

/// Pushes tried per reconnection before the families are left for the next invalidation.
pub const MAX_ATTEMPTS: u32 = 10;

/// Messages the CacheResync handles.
pub enum ResyncMsg {
    /// The Redis connection is back after an outage.
    Reconnected,
    /// Push the families bumped locally (scheduled: `round` says which reconnection).
    Push { round: u64 },
    /// A push ended; `left` families are still to be bumped in Redis.
    Pushed { round: u64, left: bool },
    /// Chaos: panic while handling this message.
    Panic,
}

impl ractor::Message for ResyncMsg {}

impl ChaosTarget for ResyncMsg {
    fn chaos_panic() -> Self {
        Self::Panic
    }
}

/// The CacheResync's configuration.
pub struct CacheResync {
    /// Delay before each retry of a refused push.
    pub retry: Backoff,
    /// Pushes tried per reconnection.
    pub max_attempts: u32,
}

impl Default for CacheResync {
    /// 250 ms doubling up to 5 s, [`MAX_ATTEMPTS`] attempts.
    fn default() -> Self {
        let retry = Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.2,
        };
        Self { retry, max_attempts: MAX_ATTEMPTS }
    }
}

/// What the CacheResync is started with.
pub struct ResyncArgs {
    pub cache: Cache,
    pub stats: Arc<ActorStats>,
}

/// The CacheResync's state.
pub struct ResyncState {
    cache: Cache,
    stats: Arc<ActorStats>,
    /// Which reconnection is being caught up (stale timers and results are ignored).
    round: u64,
    /// Pushes tried for this round.
    attempt: u32,
    /// The push running, if any (aborted with the state).
    push: JoinSet<()>,
    /// A push of this round is running: its `Pushed` has not come back yet.
    pushing: bool,
    rng: StdRng,
}

impl Actor for CacheResync {
    type Msg = ResyncMsg;
    type State = ResyncState;
    type Arguments = ResyncArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ResyncMsg>,
        args: ResyncArgs,
    ) -> Result<ResyncState, ActorProcessingErr> {
        Ok(ResyncState {
            cache: args.cache,
            stats: args.stats,
            round: 0,
            attempt: 0,
            push: JoinSet::new(),
            pushing: false,
            rng: StdRng::from_os_rng(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<ResyncMsg>,
        state: &mut ResyncState,
    ) -> Result<(), ActorProcessingErr> {
        // a catch-up cut short by the previous incarnation left its families marked
        let connected = state.cache.l2().is_some_and(|l2| l2.is_connected());
        if connected && state.cache.generations().has_dirty() {
            let _ = myself.cast(ResyncMsg::Push { round: state.round });
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ResyncMsg>,
        message: ResyncMsg,
        state: &mut ResyncState,
    ) -> Result<(), ActorProcessingErr> {
        state.stats.handled();
        match message {
            ResyncMsg::Reconnected => {
                // a newer reconnection supersedes the catch-up in progress; its families
                // are marked again as its task is dropped
                state.push.shutdown().await;
                state.pushing = false;
                state.round += 1;
                state.attempt = 0;
                state.cache.forget_local();
                let _ = myself.cast(ResyncMsg::Push { round: state.round });
            }
            ResyncMsg::Push { round } if round == state.round && !state.pushing => {
                while state.push.try_join_next().is_some() {}
                // the pool may come back a moment after the subscriber: a call made
                // before would only fail, and count against the breaker
                if state.cache.l2().is_some_and(|l2| l2.is_connected()) {
                    self.push(&myself, state);
                } else {
                    self.retry_later(&myself, state);
                }
            }
            ResyncMsg::Push { .. } => {}
            ResyncMsg::Pushed { round, left } if round == state.round => {
                state.pushing = false;
                self.pushed(&myself, state, left);
            }
            ResyncMsg::Pushed { .. } => {}
            ResyncMsg::Panic => chaos_panic("cache-resync"),
        }
        Ok(())
    }
}

impl CacheResync {
    /// Starts bumping in Redis every family marked as bumped locally.
    fn push(&self, myself: &ActorRef<ResyncMsg>, state: &mut ResyncState) {
        let families = state.cache.generations().take_dirty();
        if families.is_empty() {
            return;
        }
        tracing::info!(
            families = families.len(),
            attempt = state.attempt,
            "redis is back; bumping families changed during the outage"
        );
        let cache = state.cache.clone();
        let round = state.round;
        let done = myself.clone();
        let unpushed = Unpushed { cache: cache.clone(), families: families.clone() };
        state.pushing = true;
        state.push.spawn(
            async move {
                // a family Redis refuses is bumped locally again, and so marked again
                cache.invalidate(&families, Vec::new()).await;
                unpushed.pushed();
                cache.generations().has_dirty()
            }
            .map(move |left| {
                let _ = done.cast(ResyncMsg::Pushed { round, left });
            }),
        );
    }

    fn pushed(&self, myself: &ActorRef<ResyncMsg>, state: &mut ResyncState, left: bool) {
        if !left {
            metrics::cache_resync("pushed");
            state.attempt = 0;
            return;
        }
        // refused again: forget the local values once more, and wait
        state.cache.forget_local();
        self.retry_later(myself, state);
    }

    /// Schedules the next push after a backoff, or gives up past `max_attempts`.
    fn retry_later(&self, myself: &ActorRef<ResyncMsg>, state: &mut ResyncState) {
        state.attempt += 1;
        if state.attempt >= self.max_attempts {
            metrics::cache_resync("gave_up");
            tracing::warn!(
                attempts = state.attempt,
                "redis keeps refusing the catch-up; the next invalidation takes the families along"
            );
            return;
        }
        metrics::cache_resync("retry");
        let delay = self.retry.delay(state.attempt - 1, &mut state.rng);
        let round = state.round;
        myself.send_after(delay, move || ResyncMsg::Push { round });
    }
}

/// Families taken out to be pushed: dropped before [`Unpushed::pushed`] (the push
/// was aborted with its actor), it marks them again, so none is forgotten.
struct Unpushed {
    cache: Cache,
    families: Vec<Family>,
}

impl Unpushed {
    fn pushed(mut self) {
        self.families.clear();
    }
}

impl Drop for Unpushed {
    fn drop(&mut self) {
        if !self.families.is_empty() {
            self.cache.generations().mark_dirty(&self.families);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheOptions;
    use crate::cache::bypass::Bypass;

    fn cache() -> Cache {
        let options = CacheOptions {
            shards: 1,
            ask_timeout: Duration::from_secs(5),
            load_timeout: Duration::from_secs(4),
            l2_reads_in_flight: 1,
            l2_max_queued_reads: 16,
            load_gate: None,
        };
        Cache::new(options, None, Bypass::new(1, 1))
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_connection_it_retries_by_timer_then_leaves_the_families_marked() {
        let cache = cache();
        cache.generations().bump_local(&Family::All);
        let stats = Arc::<ActorStats>::default();
        let args = ResyncArgs { cache: cache.clone(), stats: stats.clone() };
        let (actor, _handle) = Actor::spawn(None, CacheResync::default(), args).await.unwrap();
        actor.cast(ResyncMsg::Reconnected).unwrap();
        // the first push at once, then one scheduled retry per backoff (at most 5 s each)
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(stats.messages(), 1 + u64::from(MAX_ATTEMPTS), "Reconnected, then a Push per attempt");
        assert!(cache.generations().has_dirty(), "given up: left for the next invalidation");
        // nothing more is scheduled
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(stats.messages(), 1 + u64::from(MAX_ATTEMPTS));
        // a new reconnection starts over
        actor.cast(ResyncMsg::Reconnected).unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(stats.messages(), 2 * (1 + u64::from(MAX_ATTEMPTS)));
        actor.stop(None);
    }
}
