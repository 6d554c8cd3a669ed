//! The root of the tree: a [`Supervisor`] whose children are the HealthActor and
//! (as castwork grows) the per-concern supervisors. [`Runtime`] is what the HTTP
//! layer holds to reach them.

use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, SpawnErr};
use sea_orm::DatabaseConnection;
use tokio::task::JoinHandle;

use super::cache_listener::{CacheListener, ListenerArgs};
use super::cache_shard::{CacheShard, ShardArgs};
use super::health::{DatabaseProbe, HealthActor, HealthArgs, HealthMsg, Probe};
use super::revocations::{PRUNE_EVERY, RevocationArgs, RevocationSync};
use super::views::{ViewArgs, ViewCounter, ViewMsg};
use crate::auth::revocation::Revocations;
use crate::cache::Cache;
use crate::cache::redis::RedisProbe;
use crate::config::Settings;
use crate::explore::ExploreService;
use crate::supervision::child::{ChildSpec, StartedChild};
use crate::supervision::events::{DownSet, LifecycleEvents};
use crate::supervision::handle::SupervisorHandle;
use crate::supervision::slot::ActorSlot;
use crate::supervision::strategy::RestartStrategy;
use crate::supervision::supervisor::{ChaosAction, ChaosError, Supervisor, SupervisorArgs, SupervisorMsg};
use crate::supervision::tree::{ActorNode, ActorStats, NodeStatus};

/// The running actor tree of one node.
pub struct Runtime {
    root: ActorRef<SupervisorMsg>,
    handle: std::sync::Mutex<Option<JoinHandle<()>>>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    stats: Arc<ActorStats>,
    /// Where handlers find the current HealthActor.
    pub health: ActorSlot<HealthMsg>,
    /// Where handlers find the current ViewCounter.
    pub views: ActorSlot<ViewMsg>,
    /// Every supervisor's lifecycle events.
    pub events: Arc<LifecycleEvents>,
    /// The actors now down, kept from `events`.
    pub down: DownSet,
    ask_timeout: Duration,
}

impl Runtime {
    /// Starts the root supervisor and its children.
    pub async fn start(
        settings: &Settings,
        db: DatabaseConnection,
        explore: ExploreService,
        cache: Option<Cache>,
        revocations: Arc<Revocations>,
    ) -> Result<Self, SpawnErr> {
        let sup = &settings.supervision;
        let health = ActorSlot::<HealthMsg>::new("health");
        let views = ActorSlot::<ViewMsg>::new("views");
        let mut probes: Vec<Arc<dyn Probe>> = vec![Arc::new(DatabaseProbe::new(db))];
        if let Some(l2) = cache.as_ref().and_then(Cache::l2) {
            probes.push(Arc::new(RedisProbe::new(l2.clone())));
        }
        let mut children = vec![
            health_child(settings, probes, health.clone()),
            views_child(settings, explore, views.clone()),
            revocations_child(settings, revocations, cache.as_ref().and_then(Cache::l2).cloned()),
        ];
        if let Some(cache) = &cache {
            children.push(cache_child(settings, cache.clone()));
        }
        let root = Supervisor {
            name: "root".to_owned(),
            strategy: RestartStrategy::OneForOne,
            intensity: sup.intensity(),
            backoff: sup.backoff(),
            down_retry: sup.down_retry(),
            ask_timeout: sup.ask_timeout(),
            shutdown_timeout: Duration::from_secs(settings.server.shutdown_grace_secs),
            start_timeout: sup.start_timeout(),
        };
        let stats = Arc::new(ActorStats::default());
        let events = LifecycleEvents::new();
        let down = DownSet::attach(&events);
        let args = SupervisorArgs { children, stats: stats.clone(), events: events.clone() };
        let (root, handle) = Actor::spawn(None, root, args).await?;
        Ok(Self {
            root,
            handle: std::sync::Mutex::new(Some(handle)),
            tasks: std::sync::Mutex::default(),
            stats,
            health,
            views,
            events,
            down,
            ask_timeout: sup.ask_timeout(),
        })
    }

    /// Owns a background task of the node, so shutdown waits for (or ends) it.
    pub fn track(&self, task: JoinHandle<()>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Deadline for asks to actors.
    pub fn ask_timeout(&self) -> Duration {
        self.ask_timeout
    }

    /// The live tree from the root down.
    pub async fn tree(&self) -> ActorNode {
        let (status, children) =
            match SupervisorHandle::from(self.root.clone()).snapshot(self.ask_timeout).await {
                Ok(children) => (NodeStatus::Running, children),
                Err(_) => (NodeStatus::Unresponsive, Vec::new()),
            };
        ActorNode {
            name: "root".to_owned(),
            actor_id: Some(self.root.get_id().to_string()),
            kind: "supervisor".to_owned(),
            status,
            restarts: 0,
            last_failure: None,
            messages_handled: self.stats.messages(),
            breaker: None,
            children,
        }
    }

    /// Applies a chaos action to the named actor anywhere below the root.
    pub async fn chaos(&self, target: &str, action: ChaosAction) -> Result<(), ChaosError> {
        let request = |reply| SupervisorMsg::Chaos { target: target.to_owned(), action, reply };
        match self.root.call(request, Some(self.ask_timeout)).await {
            Ok(CallResult::Success(result)) => result,
            _ => Err(ChaosError::NotRunning("root".to_owned())),
        }
    }

    /// Stops the tree children-first and waits for it.
    pub async fn shutdown(&self, grace: Duration) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            task.abort();
        }
        let stopped = self.root.stop_and_wait(Some("shutdown".to_owned()), Some(grace)).await;
        if stopped.is_err() {
            tracing::warn!("actor tree did not stop within the grace period; killing it");
            self.root.kill();
        }
        let handle = self.handle.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
    }
}

fn health_child(settings: &Settings, probes: Vec<Arc<dyn Probe>>, slot: ActorSlot<HealthMsg>) -> ChildSpec {
    let health = settings.health.clone();
    let marker = slot.clone();
    let spec = ChildSpec::new("health", "health", move |ctx| {
        let probes = probes.clone();
        let actor = HealthActor { settings: health.clone() };
        let slot = slot.clone();
        async move {
            let args = HealthArgs { probes, stats: ctx.stats };
            let (actor, _handle) = Actor::spawn_linked(None, actor, args, ctx.supervisor).await?;
            slot.set(actor.clone());
            Ok(StartedChild::worker(actor))
        }
    });
    spec.with_slot(&marker)
}

fn views_child(settings: &Settings, explore: ExploreService, slot: ActorSlot<ViewMsg>) -> ChildSpec {
    let flush_every = Duration::from_millis(settings.explore.views_flush_ms);
    let half_life = Duration::from_secs_f64(settings.explore.trend_half_life_hours * 3600.0);
    let dedup_window = Duration::from_secs(settings.explore.view_dedup_window_secs);
    let dedup_max_entries = settings.explore.view_dedup_max_entries;
    let marker = slot.clone();
    let spec = ChildSpec::new("views", "view-counter", move |ctx| {
        let actor = ViewCounter { flush_every, half_life, dedup_window, dedup_max_entries };
        let args = ViewArgs { service: explore.clone(), stats: ctx.stats };
        let slot = slot.clone();
        async move {
            let (actor, _handle) = Actor::spawn_linked(None, actor, args, ctx.supervisor).await?;
            slot.set(actor.clone());
            Ok(StartedChild::worker(actor))
        }
    });
    spec.with_slot(&marker)
}

/// The RevocationSync: polls and prunes the deny-list, and applies other nodes' revocations.
fn revocations_child(
    settings: &Settings,
    revocations: Arc<Revocations>,
    redis: Option<crate::cache::redis::RedisTier>,
) -> ChildSpec {
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

/// The cache subtree: a supervisor over the shards (one for one: a shard's failure
/// touches no other) and, with Redis, the listener.
fn cache_child(settings: &Settings, cache: Cache) -> ChildSpec {
    let sup = settings.supervision.clone();
    let shutdown = Duration::from_secs(settings.server.shutdown_grace_secs);
    let cs = settings.cache.clone();
    let slots: Vec<_> = (0..cache.shard_count()).filter_map(|i| cache.slot(i).cloned()).collect();
    let spec = ChildSpec::new("cache", "supervisor", move |ctx| {
        let n = cache.shard_count();
        let mut children: Vec<ChildSpec> = (0..n).map(|i| shard_child(&cs, &cache, i)).collect();
        if cache.l2().is_some() {
            let cache = cache.clone();
            children.push(ChildSpec::new("cache-listener", "cache-listener", move |ctx| {
                let args = ListenerArgs { cache: cache.clone(), stats: ctx.stats };
                async move {
                    let (actor, _handle) =
                        Actor::spawn_linked(None, CacheListener, args, ctx.supervisor).await?;
                    Ok(StartedChild::worker(actor))
                }
            }));
        }
        let supervisor = Supervisor {
            name: "cache".to_owned(),
            strategy: RestartStrategy::OneForOne,
            intensity: sup.intensity(),
            backoff: sup.backoff(),
            down_retry: sup.down_retry(),
            ask_timeout: sup.ask_timeout(),
            shutdown_timeout: shutdown,
            start_timeout: sup.start_timeout(),
        };
        async move {
            let args = SupervisorArgs { children, stats: ctx.stats, events: ctx.events };
            let (actor, _handle) = Actor::spawn_linked(None, supervisor, args, ctx.supervisor).await?;
            Ok(StartedChild::supervisor(actor))
        }
    });
    // the supervisor down: so are its shards, whatever became of them
    slots.iter().fold(spec, |spec, slot| spec.with_slot(slot))
}

fn shard_child(cs: &crate::config::CacheSettings, cache: &Cache, index: usize) -> ChildSpec {
    let shards = u64::try_from(cache.shard_count().max(1)).unwrap_or(1);
    let shard = CacheShard {
        index,
        l1_enabled: cs.l1_enabled,
        l1_max_bytes: cs.l1_max_bytes / shards,
        l1_max_entries: cs.l1_max_entries,
        negative_ttl: Duration::from_secs(cs.negative_ttl_secs),
        ttl_jitter: cs.ttl_jitter,
        xfetch_beta: cs.xfetch_beta,
        compress_threshold: cs.compress_threshold_bytes,
    };
    let breaker = cache.l2().map(|l2| l2.breaker().clone());
    let marker = cache.slot(index).cloned();
    let cache = cache.clone();
    let spec = ChildSpec::new(format!("cache-shard-{index}"), "cache-shard", move |ctx| {
        let shard = shard.clone();
        let args = ShardArgs {
            l2: cache.l2().cloned(),
            reader: cache.reader().cloned(),
            counters: cache.counters(index),
            stats: ctx.stats,
        };
        let slot = cache.slot(index).cloned();
        async move {
            let (actor, _handle) = Actor::spawn_linked(None, shard, args, ctx.supervisor).await?;
            if let Some(slot) = slot {
                slot.set(actor.clone());
            }
            Ok(StartedChild::worker(actor))
        }
    });
    let spec = match marker {
        Some(slot) => spec.with_slot(&slot),
        None => spec,
    };
    match breaker {
        Some(breaker) => spec.with_breaker(breaker),
        None => spec,
    }
}
