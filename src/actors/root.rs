//! The root of the tree: a [`Supervisor`] whose children are the HealthActor and
//! (as castwork grows) the per-concern supervisors. [`Runtime`] is what the HTTP
//! layer holds to reach them.

use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, SpawnErr};
use sea_orm::DatabaseConnection;
use tokio::task::JoinHandle;

use super::health::{DatabaseProbe, HealthActor, HealthArgs, HealthMsg, Probe};
use super::views::{ViewArgs, ViewCounter, ViewMsg};
use crate::config::Settings;
use crate::explore::ExploreService;
use crate::supervision::child::{ChildSpec, StartedChild};
use crate::supervision::slot::ActorSlot;
use crate::supervision::strategy::RestartStrategy;
use crate::supervision::supervisor::{ChaosAction, ChaosError, Supervisor, SupervisorArgs, SupervisorMsg};
use crate::supervision::tree::{ActorNode, ActorStats, NodeStatus};

/// The running actor tree of one node.
pub struct Runtime {
    root: ActorRef<SupervisorMsg>,
    handle: std::sync::Mutex<Option<JoinHandle<()>>>,
    stats: Arc<ActorStats>,
    /// Where handlers find the current HealthActor.
    pub health: ActorSlot<HealthMsg>,
    /// Where handlers find the current ViewCounter.
    pub views: ActorSlot<ViewMsg>,
    ask_timeout: Duration,
}

impl Runtime {
    /// Starts the root supervisor and its children.
    pub async fn start(
        settings: &Settings,
        db: DatabaseConnection,
        explore: ExploreService,
    ) -> Result<Self, SpawnErr> {
        let sup = &settings.supervision;
        let health = ActorSlot::<HealthMsg>::new("health");
        let views = ActorSlot::<ViewMsg>::new("views");
        let children =
            vec![health_child(settings, db, health.clone()), views_child(settings, explore, views.clone())];
        let root = Supervisor {
            name: "root".to_owned(),
            strategy: RestartStrategy::OneForOne,
            intensity: sup.intensity(),
            backoff: sup.backoff(),
            down_retry: sup.down_retry(),
            ask_timeout: sup.ask_timeout(),
            shutdown_timeout: Duration::from_secs(settings.server.shutdown_grace_secs),
        };
        let stats = Arc::new(ActorStats::default());
        let (root, handle) =
            Actor::spawn(None, root, SupervisorArgs { children, stats: stats.clone() }).await?;
        Ok(Self {
            root,
            handle: std::sync::Mutex::new(Some(handle)),
            stats,
            health,
            views,
            ask_timeout: sup.ask_timeout(),
        })
    }

    /// Deadline for asks to actors.
    pub fn ask_timeout(&self) -> Duration {
        self.ask_timeout
    }

    /// The live tree from the root down.
    pub async fn tree(&self) -> ActorNode {
        let (status, children) = match self.root.call(SupervisorMsg::Snapshot, Some(self.ask_timeout)).await {
            Ok(CallResult::Success(children)) => (NodeStatus::Running, children),
            _ => (NodeStatus::Unresponsive, Vec::new()),
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

fn health_child(settings: &Settings, db: DatabaseConnection, slot: ActorSlot<HealthMsg>) -> ChildSpec {
    let health = settings.health.clone();
    ChildSpec::new("health", "health", move |ctx| {
        let probes: Vec<Arc<dyn Probe>> = vec![Arc::new(DatabaseProbe::new(db.clone()))];
        let actor = HealthActor { settings: health.clone() };
        let slot = slot.clone();
        async move {
            let args = HealthArgs { probes, stats: ctx.stats };
            let (actor, _handle) = Actor::spawn_linked(None, actor, args, ctx.supervisor).await?;
            slot.set(actor.clone());
            Ok(StartedChild::worker(actor))
        }
    })
}

fn views_child(settings: &Settings, explore: ExploreService, slot: ActorSlot<ViewMsg>) -> ChildSpec {
    let flush_every = Duration::from_millis(settings.explore.views_flush_ms);
    let half_life = Duration::from_secs_f64(settings.explore.trend_half_life_hours * 3600.0);
    ChildSpec::new("views", "view-counter", move |ctx| {
        let actor = ViewCounter { flush_every, half_life };
        let args = ViewArgs { service: explore.clone(), stats: ctx.stats };
        let slot = slot.clone();
        async move {
            let (actor, _handle) = Actor::spawn_linked(None, actor, args, ctx.supervisor).await?;
            slot.set(actor.clone());
            Ok(StartedChild::worker(actor))
        }
    })
}
