//! The generic supervisor actor: starts its children in order, watches them, and
//! restarts them by strategy, within a restart intensity, after a jittered backoff.
//! A child past its intensity is marked down; the supervisor itself carries on.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Deserialize;
use tokio::time::Instant;

use super::backoff::Backoff;
use super::child::{ChildContext, ChildSpec, Control, StartedChild};
use super::intensity::{IntensityDecision, RestartIntensity, RestartWindow};
use super::strategy::RestartStrategy;
use super::tree::{ActorNode, ActorStats, Failure, FailureKind, NodeStatus};
use crate::metrics;

/// What the chaos hook can do to an actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChaosAction {
    /// Terminate it forcefully, mid-message if need be.
    Kill,
    /// Make its next message handler panic.
    Panic,
    /// Ask it to stop gracefully, as if it exited on its own.
    Stop,
}

impl ChaosAction {
    /// Label used in metrics and responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Panic => "panic",
            Self::Stop => "stop",
        }
    }
}

/// Why a chaos request was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChaosError {
    /// No actor of that name in this subtree.
    #[error("no actor named '{0}'")]
    NotFound(String),
    /// The actor exists but is not running (restarting or down).
    #[error("actor '{0}' is not running")]
    NotRunning(String),
}

/// Messages a supervisor handles.
pub enum SupervisorMsg {
    /// Timer-driven: start these children (index, generation) if still wanted.
    Restart(Vec<(usize, u64)>),
    /// The subtree below this supervisor.
    Snapshot(RpcReplyPort<Vec<ActorNode>>),
    /// Apply a chaos action to a named actor in this subtree.
    Chaos { target: String, action: ChaosAction, reply: RpcReplyPort<Result<(), ChaosError>> },
    /// Chaos: panic while handling this message.
    Panic,
}

impl ractor::Message for SupervisorMsg {}

/// A supervisor's configuration.
#[derive(Debug, Clone)]
pub struct Supervisor {
    /// Name used in logs and the tree.
    pub name: String,
    pub strategy: RestartStrategy,
    pub intensity: RestartIntensity,
    pub backoff: Backoff,
    /// Retry a down child after this long (`None`: it stays down).
    pub down_retry: Option<Duration>,
    /// How long a snapshot or chaos request waits for a nested supervisor.
    pub ask_timeout: Duration,
    /// How long shutdown waits for each child to stop.
    pub shutdown_timeout: Duration,
}

/// What a supervisor is started with.
pub struct SupervisorArgs {
    pub children: Vec<ChildSpec>,
    /// The supervisor's own counters (owned by its parent, or by the application for the root).
    pub stats: Arc<ActorStats>,
}

struct Child {
    spec: ChildSpec,
    stats: Arc<ActorStats>,
    running: Option<StartedChild>,
    status: NodeStatus,
    restarts: u64,
    last_failure: Option<Failure>,
    window: RestartWindow,
    /// Bumped whenever a restart is scheduled or the child is stopped on purpose,
    /// so stale timers are ignored.
    generation: u64,
    /// Whether the down gauge is raised for it (cleared by the next successful start).
    marked_down: bool,
}

/// A supervisor's state, built in `pre_start`.
pub struct SupervisorState {
    children: Vec<Child>,
    rng: StdRng,
    stats: Arc<ActorStats>,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let children = args
            .children
            .into_iter()
            .map(|spec| Child {
                spec,
                stats: Arc::default(),
                running: None,
                status: NodeStatus::Restarting,
                restarts: 0,
                last_failure: None,
                window: RestartWindow::new(self.intensity),
                generation: 0,
                marked_down: false,
            })
            .collect();
        Ok(SupervisorState { children, rng: StdRng::from_os_rng(), stats: args.stats })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        for idx in 0..state.children.len() {
            self.start_child(&myself, state, idx, false).await;
        }
        tracing::info!(supervisor = %self.name, children = state.children.len(), "supervisor started");
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(supervisor = %self.name))]
    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        state.stats.handled();
        match message {
            SupervisorMsg::Restart(batch) => {
                for (idx, generation) in batch {
                    let wanted = state
                        .children
                        .get(idx)
                        .is_some_and(|c| c.generation == generation && c.running.is_none());
                    if wanted {
                        self.start_child(&myself, state, idx, true).await;
                    }
                }
            }
            SupervisorMsg::Snapshot(reply) => {
                if !reply.is_closed() {
                    let nodes = self.snapshot(state).await;
                    let _ = reply.send(nodes);
                }
            }
            SupervisorMsg::Chaos { target, action, reply } => {
                let result = self.chaos(state, &target, action).await;
                let _ = reply.send(result);
            }
            SupervisorMsg::Panic => chaos_panic(&self.name),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, kind, reason) = match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let reason = reason.unwrap_or_else(|| "stopped".to_owned());
                let kind = if reason == "killed" { FailureKind::Killed } else { FailureKind::Stopped };
                (cell, kind, reason)
            }
            SupervisionEvent::ActorFailed(cell, err) => (cell, FailureKind::Failed, err.to_string()),
            _ => return Ok(()),
        };
        let id = cell.get_id();
        let found =
            state.children.iter().position(|c| c.running.as_ref().is_some_and(|r| r.cell.get_id() == id));
        // a child we stopped on purpose (sibling restart, shutdown) is no longer `running`
        if let Some(idx) = found {
            self.on_child_exit(&myself, state, idx, kind, reason);
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // children first, in reverse start order
        for child in state.children.iter_mut().rev() {
            child.generation += 1;
            if let Some(running) = child.running.take() {
                let stopped = running
                    .cell
                    .stop_and_wait(Some("shutdown".to_owned()), Some(self.shutdown_timeout))
                    .await;
                if stopped.is_err() {
                    tracing::warn!(supervisor = %self.name, child = %child.spec.name, "child did not stop in time; killing it");
                    running.cell.kill();
                }
            }
        }
        tracing::info!(supervisor = %self.name, "supervisor stopped");
        Ok(())
    }
}

impl Supervisor {
    async fn start_child(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        idx: usize,
        is_restart: bool,
    ) {
        let Some(child) = state.children.get_mut(idx) else { return };
        let ctx = ChildContext { supervisor: myself.get_cell(), stats: child.stats.clone() };
        match (child.spec.start)(ctx).await {
            Ok(started) => {
                child.running = Some(started);
                if child.marked_down {
                    // its slots are back up as the start function publishes the new incarnation
                    child.marked_down = false;
                    metrics::actor_down(&child.spec.name, false);
                }
                child.status = NodeStatus::Running;
                if is_restart {
                    child.restarts += 1;
                    let cause = child.last_failure.as_ref().map_or("sibling", |f| f.kind.as_str());
                    metrics::actor_restart(&child.spec.name, cause);
                    tracing::info!(supervisor = %self.name, child = %child.spec.name, restarts = child.restarts, "child restarted");
                }
            }
            Err(err) => {
                let reason = err.to_string();
                self.on_child_exit(myself, state, idx, FailureKind::StartFailed, reason);
            }
        }
    }

    fn on_child_exit(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        idx: usize,
        kind: FailureKind,
        reason: String,
    ) {
        let count = state.children.len();
        let Some(child) = state.children.get_mut(idx) else { return };
        child.running = None;
        metrics::actor_failure(&child.spec.name, kind.as_str());
        tracing::warn!(supervisor = %self.name, child = %child.spec.name, kind = kind.as_str(), %reason, "child exited");
        child.last_failure = Some(Failure { kind, reason, at: Utc::now() });
        match child.window.try_record(Instant::now()) {
            IntensityDecision::Exceeded { recent } => {
                child.status = NodeStatus::Down;
                child.generation += 1;
                child.marked_down = true;
                // asks through its slots now fail at once rather than wait for a restart
                child.spec.set_down();
                metrics::actor_down(&child.spec.name, true);
                tracing::error!(
                    supervisor = %self.name,
                    child = %child.spec.name,
                    recent,
                    max_restarts = self.intensity.max_restarts,
                    "restart intensity exceeded; child marked down"
                );
                if let Some(after) = self.down_retry {
                    let batch = vec![(idx, child.generation)];
                    myself.send_after(after, move || SupervisorMsg::Restart(batch));
                }
            }
            IntensityDecision::Allowed { recent } => {
                let delay = self.backoff.delay(recent.saturating_sub(1), &mut state.rng);
                let mut batch = Vec::new();
                for j in self.strategy.affected(idx, count) {
                    let Some(c) = state.children.get_mut(j) else { continue };
                    if j != idx {
                        if c.status == NodeStatus::Down {
                            continue;
                        }
                        if let Some(running) = c.running.take() {
                            running.cell.stop(Some(format!("restarting with sibling {}", idx)));
                        }
                        c.last_failure = None;
                    }
                    c.status = NodeStatus::Restarting;
                    c.generation += 1;
                    batch.push((j, c.generation));
                }
                myself.send_after(delay, move || SupervisorMsg::Restart(batch));
            }
        }
    }

    async fn snapshot(&self, state: &SupervisorState) -> Vec<ActorNode> {
        let mut nodes = Vec::with_capacity(state.children.len());
        for child in &state.children {
            let mut node = ActorNode {
                name: child.spec.name.clone(),
                actor_id: child.running.as_ref().map(|r| r.cell.get_id().to_string()),
                kind: child.spec.kind.to_owned(),
                status: child.status,
                restarts: child.restarts,
                last_failure: child.last_failure.clone(),
                messages_handled: child.stats.messages(),
                breaker: child.spec.breaker.as_ref().map(|b| b.snapshot()),
                children: Vec::new(),
            };
            if let Some(StartedChild { control: Control::Supervisor(sup), .. }) = &child.running {
                match sup.call(SupervisorMsg::Snapshot, Some(self.ask_timeout)).await {
                    Ok(CallResult::Success(children)) => node.children = children,
                    _ => node.status = NodeStatus::Unresponsive,
                }
            }
            nodes.push(node);
        }
        nodes
    }

    async fn chaos(
        &self,
        state: &SupervisorState,
        target: &str,
        action: ChaosAction,
    ) -> Result<(), ChaosError> {
        if let Some(child) = state.children.iter().find(|c| c.spec.name == target) {
            let Some(running) = &child.running else {
                return Err(ChaosError::NotRunning(target.to_owned()));
            };
            metrics::chaos_action(target, action.as_str());
            tracing::warn!(supervisor = %self.name, child = target, action = action.as_str(), "chaos action");
            match action {
                ChaosAction::Kill => running.cell.kill(),
                ChaosAction::Stop => running.cell.stop(Some("chaos: stop".to_owned())),
                ChaosAction::Panic => {
                    let sent = match &running.control {
                        Control::Worker { inject_panic } => inject_panic(),
                        Control::Supervisor(sup) => sup.cast(SupervisorMsg::Panic).is_ok(),
                    };
                    if !sent {
                        return Err(ChaosError::NotRunning(target.to_owned()));
                    }
                }
            }
            return Ok(());
        }
        for child in &state.children {
            let Some(StartedChild { control: Control::Supervisor(sup), .. }) = &child.running else {
                continue;
            };
            let request = |reply| SupervisorMsg::Chaos { target: target.to_owned(), action, reply };
            match sup.call(request, Some(self.ask_timeout)).await {
                Ok(CallResult::Success(Err(ChaosError::NotFound(_)))) => continue,
                Ok(CallResult::Success(result)) => return result,
                _ => continue,
            }
        }
        Err(ChaosError::NotFound(target.to_owned()))
    }
}

/// The chaos hook's injected panic: a real panic, so the supervisor sees what a bug would cause.
#[expect(clippy::panic, reason = "the chaos hook exists to inject exactly this panic")]
pub fn chaos_panic(actor: &str) -> ! {
    panic!("chaos: injected panic in {actor}")
}
