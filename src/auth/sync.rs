//! RevocationSync: keeps this node's deny-list of revoked sessions in step with the others.
//! It polls the `revoked_sessions` table every `auth.revocation_poll_ms` (the only way in
//! without Redis, and a catch-up after Redis outages), prunes expired entries, and with Redis
//! applies other nodes' revocations as they are published.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

use super::revocation::{Announcer, CHANNEL, Revocations};
use crate::cache::redis::{RedisEvent, RedisTier};
use crate::config::Settings;
use crate::metrics;
use crate::supervision::child::{ChaosTarget, ChildSpec, StartedChild};
use crate::supervision::supervisor::chaos_panic;
use crate::supervision::tree::ActorStats;

/// How often expired revocations are pruned.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Messages the RevocationSync handles.
pub enum RevocationMsg {
    /// Time to read revocations other nodes recorded.
    Poll,
    /// Time to drop expired revocations.
    Prune,
    /// Something arrived from Redis.
    Event(RedisEvent),
    /// Chaos: panic while handling this message.
    Panic,
}

impl ractor::Message for RevocationMsg {}

impl ChaosTarget for RevocationMsg {
    fn chaos_panic() -> Self {
        Self::Panic
    }
}

/// The RevocationSync's configuration.
pub struct RevocationSync {
    pub poll_every: Duration,
    pub prune_every: Duration,
}

/// What the RevocationSync is started with.
pub struct RevocationArgs {
    pub revocations: Arc<Revocations>,
    pub redis: Option<RedisTier>,
    pub stats: Arc<ActorStats>,
}

/// The RevocationSync's state.
pub struct RevocationState {
    revocations: Arc<Revocations>,
    redis: Option<RedisTier>,
    stats: Arc<ActorStats>,
    tasks: Vec<JoinHandle<()>>,
}

impl Actor for RevocationSync {
    type Msg = RevocationMsg;
    type State = RevocationState;
    type Arguments = RevocationArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<RevocationMsg>,
        args: RevocationArgs,
    ) -> Result<RevocationState, ActorProcessingErr> {
        Ok(RevocationState {
            revocations: args.revocations,
            redis: args.redis,
            stats: args.stats,
            tasks: Vec::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<RevocationMsg>,
        state: &mut RevocationState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(redis) = &state.redis {
            let mut events = redis
                .subscribe(CHANNEL)
                .await
                .map_err(|e| format!("cannot subscribe to revocations: {e}"))?;
            let forward = myself.clone();
            state.tasks.push(tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    if forward.cast(RevocationMsg::Event(event)).is_err() {
                        break;
                    }
                }
            }));
        }
        state.tasks.push(myself.send_interval(self.poll_every, || RevocationMsg::Poll));
        state.tasks.push(myself.send_interval(self.prune_every, || RevocationMsg::Prune));
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<RevocationMsg>,
        message: RevocationMsg,
        state: &mut RevocationState,
    ) -> Result<(), ActorProcessingErr> {
        state.stats.handled();
        match message {
            RevocationMsg::Event(RedisEvent::Message(payload)) => state.revocations.apply_remote(&payload),
            // announcements may have been missed meanwhile: read the table now
            RevocationMsg::Event(RedisEvent::Reconnected) | RevocationMsg::Poll => {
                poll(&state.revocations).await
            }
            RevocationMsg::Event(RedisEvent::Disconnected) => {}
            RevocationMsg::Prune => {
                if let Err(error) = state.revocations.prune().await {
                    metrics::auth_revocation_error("prune");
                    tracing::warn!(%error, "could not prune expired revocations");
                }
            }
            RevocationMsg::Panic => chaos_panic("revocations"),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RevocationMsg>,
        state: &mut RevocationState,
    ) -> Result<(), ActorProcessingErr> {
        for task in state.tasks.drain(..) {
            task.abort();
        }
        Ok(())
    }
}

async fn poll(revocations: &Revocations) {
    match revocations.poll().await {
        Ok(0) => {}
        Ok(applied) => tracing::debug!(applied, "revocations read from the database"),
        Err(error) => {
            metrics::auth_revocation_error("poll");
            tracing::warn!(%error, "could not read revocations; retrying at the next poll");
        }
    }
}

/// Revocations are announced to the other nodes on the cache's Redis, on [`CHANNEL`].
impl Announcer for RedisTier {
    fn announce(&self, payload: String) -> futures::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.publish(CHANNEL, &payload).await.map_err(|e| e.to_string()) })
    }
}

/// The RevocationSync's place in the tree: polls and prunes the deny-list and, with
/// Redis, applies other nodes' revocations as they are published.
pub fn child_spec(settings: &Settings, revocations: Arc<Revocations>, redis: Option<RedisTier>) -> ChildSpec {
    let poll_every = Duration::from_millis(settings.auth.revocation_poll_ms);
    ChildSpec::new("revocations", "revocation-sync", move |ctx| {
        let actor = RevocationSync { poll_every, prune_every: PRUNE_EVERY };
        let args =
            RevocationArgs { revocations: revocations.clone(), redis: redis.clone(), stats: ctx.stats };
        async move {
            let (actor, _handle) = Actor::spawn_linked(None, actor, args, ctx.supervisor).await?;
            Ok(StartedChild::worker(actor))
        }
    })
}
