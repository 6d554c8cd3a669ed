//! A supervisor's children through their lives: start (as a task, within the
//! start deadline), running, exit, restart by policy and strategy, down, added
//! and removed at run time.
//!
//! Every child has a stable key (its index shifts when a sibling is removed)
//! and a generation, bumped whenever what was scheduled or started for it no
//! longer stands (a restart is scheduled, it is marked down, stopped by a
//! sibling's failure or removed). Restart timers and start results carry the
//! generation they were made for; a stale one is ignored, and a stale start's
//! actor is stopped.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ractor::{ActorCell, ActorId, ActorRef, MessagingErr, RpcReplyPort};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::child::{ChildContext, ChildSpec, Restart, StartedChild};
use super::events::{LifecycleEvents, LifecycleKind};
use super::handle::ChildError;
use super::intensity::{IntensityDecision, RestartIntensity, RestartWindow};
use super::supervisor::{Supervisor, SupervisorArgs, SupervisorMsg};
use super::tree::{ActorNode, ActorStats, Failure, FailureKind, NodeStatus};
use crate::metrics;

/// A child's identity within its supervisor, stable while siblings come and go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChildKey(u64);

/// Why a start did not produce a running child.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The start function returned an error.
    #[error("{0}")]
    Failed(String),
    /// The start function did not finish within the start deadline.
    #[error("start did not finish within {0:?}")]
    TimedOut(Duration),
}

impl StartError {
    fn kind(&self) -> FailureKind {
        match self {
            Self::Failed(_) => FailureKind::StartFailed,
            Self::TimedOut(_) => FailureKind::StartTimedOut,
        }
    }
}

pub(super) struct Child {
    key: ChildKey,
    spec: ChildSpec,
    stats: Arc<ActorStats>,
    running: Option<StartedChild>,
    /// A start task is out for the current generation (`restart`: not its first start).
    pending: Option<PendingStart>,
    status: NodeStatus,
    restarts: u64,
    last_failure: Option<Failure>,
    window: RestartWindow,
    generation: u64,
    /// Whether the down gauge is raised for it (cleared by the next successful start).
    marked_down: bool,
}

#[derive(Debug, Clone, Copy)]
struct PendingStart {
    restart: bool,
}

impl Child {
    fn new(key: ChildKey, spec: ChildSpec, intensity: RestartIntensity) -> Self {
        Self {
            key,
            spec,
            stats: Arc::default(),
            running: None,
            pending: None,
            status: NodeStatus::Starting,
            restarts: 0,
            last_failure: None,
            window: RestartWindow::new(intensity),
            generation: 0,
            marked_down: false,
        }
    }

    /// The current incarnation, if it is running.
    pub(super) fn running(&self) -> Option<&StartedChild> {
        self.running.as_ref()
    }
}

/// A supervisor's state, built in `pre_start`.
pub struct SupervisorState {
    name: Arc<str>,
    children: Vec<Child>,
    next_key: u64,
    rng: StdRng,
    stats: Arc<ActorStats>,
    events: Arc<LifecycleEvents>,
    /// Start tasks, snapshot and chaos lookups, stops of removed children:
    /// aborted when the supervisor stops.
    tasks: JoinSet<()>,
    /// Exits of actors whose start has not been reported yet (the exit event can
    /// overtake the start task's message); emptied once no start is out.
    early_exits: HashMap<ActorId, (FailureKind, String)>,
}

impl SupervisorState {
    pub(super) fn new(name: &str, intensity: RestartIntensity, args: SupervisorArgs) -> Self {
        let children: Vec<Child> = args
            .children
            .into_iter()
            .zip(0..)
            .map(|(spec, key)| Child::new(ChildKey(key), spec, intensity))
            .collect();
        Self {
            name: name.into(),
            next_key: u64::try_from(children.len()).unwrap_or(u64::MAX),
            children,
            rng: StdRng::from_os_rng(),
            stats: args.stats,
            events: args.events,
            tasks: JoinSet::new(),
            early_exits: HashMap::new(),
        }
    }

    /// How many children.
    pub(super) fn len(&self) -> usize {
        self.children.len()
    }

    /// Counts a handled message and forgets finished tasks.
    pub(super) fn handled(&mut self) {
        self.stats.handled();
        while self.tasks.try_join_next().is_some() {}
    }

    /// Runs `task` as the supervisor's own: aborted when it stops.
    pub(super) fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// The child called `name`.
    pub(super) fn find(&self, name: &str) -> Option<&Child> {
        self.children.iter().find(|c| &*c.spec.name == name)
    }

    /// The nested supervisors now running, in start order.
    pub(super) fn nested(&self) -> Vec<ActorRef<SupervisorMsg>> {
        self.children.iter().filter_map(|c| c.running.as_ref()?.as_supervisor().cloned()).collect()
    }

    fn position(&self, key: ChildKey) -> Option<usize> {
        self.children.iter().position(|c| c.key == key)
    }

    fn any_pending(&self) -> bool {
        self.children.iter().any(|c| c.pending.is_some())
    }
}

impl Supervisor {
    /// Starts child `pos` as a task; its outcome comes back as `Started`.
    pub(super) fn begin_start(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        pos: usize,
        restart: bool,
    ) {
        let Some(child) = state.children.get_mut(pos) else { return };
        child.status = NodeStatus::Starting;
        child.pending = Some(PendingStart { restart });
        let ctx = ChildContext {
            supervisor: myself.get_cell(),
            stats: child.stats.clone(),
            events: state.events.clone(),
        };
        let start = (child.spec.start)(ctx);
        let (key, generation, limit) = (child.key, child.generation, self.start_timeout);
        let supervisor = myself.clone();
        state.tasks.spawn(async move {
            let result = match tokio::time::timeout(limit, start).await {
                Ok(Ok(started)) => Ok(started),
                Ok(Err(err)) => Err(StartError::Failed(err.to_string())),
                Err(_) => Err(StartError::TimedOut(limit)),
            };
            let report = SupervisorMsg::Started { key, generation, result };
            if let Err(MessagingErr::SendErr(SupervisorMsg::Started { result: Ok(orphan), .. })) =
                supervisor.cast(report)
            {
                orphan.cell.stop(Some("supervisor stopped".to_owned()));
            }
        });
    }

    /// A start task's outcome.
    pub(super) fn on_started(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        key: ChildKey,
        generation: u64,
        result: Result<StartedChild, StartError>,
    ) {
        let current = state.position(key).filter(|&pos| {
            state.children.get(pos).is_some_and(|c| c.generation == generation && c.pending.is_some())
        });
        let Some(pos) = current else {
            // removed, stopped or rescheduled while starting: nobody wants this incarnation
            if let Ok(orphan) = result {
                tracing::info!(supervisor = %self.name, "stale start finished; stopping its actor");
                orphan.cell.stop(Some("start superseded".to_owned()));
            }
            return;
        };
        let restart = state.children.get_mut(pos).and_then(|c| c.pending.take()).is_some_and(|p| p.restart);
        match result {
            Ok(started) => match state.early_exits.remove(&started.cell.get_id()) {
                // it ended before its start was reported: that end is its failure
                Some((kind, reason)) => self.on_child_exit(myself, state, pos, kind, reason),
                None => self.on_running(state, pos, started, restart),
            },
            Err(err) => self.on_child_exit(myself, state, pos, err.kind(), err.to_string()),
        }
        if !state.any_pending() {
            state.early_exits.clear();
        }
    }

    fn on_running(&self, state: &mut SupervisorState, pos: usize, started: StartedChild, restart: bool) {
        let Some(child) = state.children.get_mut(pos) else { return };
        child.running = Some(started);
        child.status = NodeStatus::Running;
        let name = child.spec.name.clone();
        let kind = if restart {
            child.restarts += 1;
            let cause = child.last_failure.as_ref().map_or("sibling", |f| f.kind.as_str());
            metrics::actor_restart(&name, cause);
            tracing::info!(supervisor = %self.name, child = %name, restarts = child.restarts, "child restarted");
            LifecycleKind::Restarted
        } else {
            LifecycleKind::Started
        };
        // its slots are back up as the start function published the new incarnation
        let was_down = std::mem::take(&mut child.marked_down);
        if was_down {
            metrics::actor_down(&name, false);
        }
        state.events.publish(&state.name, &name, kind);
        if was_down {
            state.events.publish(&state.name, &name, LifecycleKind::Up);
        }
    }

    /// An actor linked to this supervisor ended.
    pub(super) fn on_exit_event(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        id: ActorId,
        kind: FailureKind,
        reason: String,
    ) {
        let found =
            state.children.iter().position(|c| c.running.as_ref().is_some_and(|r| r.cell.get_id() == id));
        match found {
            Some(pos) => self.on_child_exit(myself, state, pos, kind, reason),
            // maybe a start not reported yet; a child stopped on purpose (sibling
            // restart, removal, stale start) is no longer `running` and lands here too
            None if state.any_pending() => {
                state.early_exits.insert(id, (kind, reason));
            }
            None => {}
        }
    }

    /// Child `pos` ended (or failed to start): restart it by policy, strategy and intensity.
    fn on_child_exit(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        pos: usize,
        kind: FailureKind,
        reason: String,
    ) {
        let count = state.children.len();
        let Some(child) = state.children.get_mut(pos) else { return };
        child.running = None;
        child.pending = None;
        let name = child.spec.name.clone();
        metrics::actor_failure(&name, kind.as_str());
        tracing::warn!(supervisor = %self.name, child = %name, kind = kind.as_str(), %reason, "child exited");
        child.last_failure = Some(Failure { kind, reason: reason.clone(), at: Utc::now() });
        let decision =
            child.spec.restart.restarts_after(kind).then(|| child.window.try_record(Instant::now()));
        state.events.publish(&state.name, &name, LifecycleKind::Exited { kind, reason });
        let Some(child) = state.children.get_mut(pos) else { return };
        match decision {
            None => {
                child.status = NodeStatus::Stopped;
                child.generation += 1;
                tracing::info!(supervisor = %self.name, child = %name, policy = ?child.spec.restart, "child left stopped");
            }
            Some(IntensityDecision::Exceeded { recent }) => {
                child.status = NodeStatus::Down;
                child.generation += 1;
                child.marked_down = true;
                // asks through its slots now fail at once rather than wait for a restart
                child.spec.set_down();
                metrics::actor_down(&name, true);
                tracing::error!(
                    supervisor = %self.name,
                    child = %name,
                    recent,
                    max_restarts = self.intensity.max_restarts,
                    "restart intensity exceeded; child marked down"
                );
                let batch = vec![(child.key, child.generation)];
                state.events.publish(&state.name, &name, LifecycleKind::Down);
                if let Some(after) = self.down_retry {
                    myself.send_after(after, move || SupervisorMsg::Restart(batch));
                }
            }
            Some(IntensityDecision::Allowed { recent }) => {
                let delay = self.backoff.delay(recent.saturating_sub(1), &mut state.rng);
                let mut batch = Vec::new();
                let mut left_stopped = Vec::new();
                for j in self.strategy.affected(pos, count) {
                    let Some(c) = state.children.get_mut(j) else { continue };
                    if j != pos {
                        if matches!(c.status, NodeStatus::Down | NodeStatus::Stopped) {
                            continue;
                        }
                        if let Some(running) = c.running.take() {
                            running.cell.stop(Some(format!("restarting with sibling {name}")));
                        }
                        c.pending = None;
                        c.last_failure = None;
                        if c.spec.restart == Restart::Temporary {
                            c.status = NodeStatus::Stopped;
                            c.generation += 1;
                            left_stopped.push(c.spec.name.clone());
                            continue;
                        }
                    }
                    c.status = NodeStatus::Restarting;
                    c.generation += 1;
                    batch.push((c.key, c.generation));
                }
                for sibling in left_stopped {
                    // stopped by the strategy, never restarted by its policy: subscribers see it go
                    let reason = format!("stopped with sibling {name}");
                    let exited = LifecycleKind::Exited { kind: FailureKind::Stopped, reason };
                    state.events.publish(&state.name, &sibling, exited);
                }
                myself.send_after(delay, move || SupervisorMsg::Restart(batch));
            }
        }
    }

    /// Timer-driven: starts the listed children that still want it.
    pub(super) fn restart(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        batch: Vec<(ChildKey, u64)>,
    ) {
        for (key, generation) in batch {
            let wanted = state.position(key).filter(|&pos| {
                state
                    .children
                    .get(pos)
                    .is_some_and(|c| c.generation == generation && c.running.is_none() && c.pending.is_none())
            });
            if let Some(pos) = wanted {
                self.begin_start(myself, state, pos, true);
            }
        }
    }

    /// Adds `spec` last in start order and starts it.
    pub(super) fn add_child(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        spec: ChildSpec,
    ) -> Result<(), ChildError> {
        if state.find(&spec.name).is_some() {
            return Err(ChildError::NameTaken(spec.name.to_string()));
        }
        tracing::info!(supervisor = %self.name, child = %spec.name, "child added");
        let key = ChildKey(state.next_key);
        state.next_key += 1;
        state.children.push(Child::new(key, spec, self.intensity));
        self.begin_start(myself, state, state.children.len() - 1, false);
        Ok(())
    }

    /// Forgets the child called `name` and stops it; answers once it has stopped.
    pub(super) fn remove_child(
        &self,
        state: &mut SupervisorState,
        name: &str,
        reply: RpcReplyPort<Result<(), ChildError>>,
    ) {
        let Some(pos) = state.children.iter().position(|c| &*c.spec.name == name) else {
            let _ = reply.send(Err(ChildError::NotFound(name.to_owned())));
            return;
        };
        // a start still out for it finds no child and stops what it started
        let child = state.children.remove(pos);
        // asks through its slots fail at once rather than wait for an incarnation
        child.spec.set_down();
        if child.marked_down {
            metrics::actor_down(name, false);
        }
        tracing::info!(supervisor = %self.name, child = name, "child removed");
        state.events.publish(&state.name, &child.spec.name, LifecycleKind::Removed);
        match child.running {
            Some(running) => {
                let (supervisor, limit) = (self.name.clone(), self.shutdown_timeout);
                state.tasks.spawn(async move {
                    stop_within(&supervisor, &running.cell, "removed", limit).await;
                    let _ = reply.send(Ok(()));
                });
            }
            None => {
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// The children as tree nodes, each with its nested supervisor to ask, if it is one.
    pub(super) fn nodes(&self, state: &SupervisorState) -> Vec<(ActorNode, Option<ActorRef<SupervisorMsg>>)> {
        state
            .children
            .iter()
            .map(|child| {
                let node = ActorNode {
                    name: child.spec.name.to_string(),
                    actor_id: child.running.as_ref().map(|r| r.cell.get_id().to_string()),
                    kind: child.spec.kind.to_string(),
                    status: child.status,
                    restarts: child.restarts,
                    last_failure: child.last_failure.clone(),
                    messages_handled: child.stats.messages(),
                    breaker: child.spec.breaker.as_ref().map(|b| b.snapshot()),
                    children: Vec::new(),
                };
                (node, child.running.as_ref().and_then(|r| r.as_supervisor().cloned()))
            })
            .collect()
    }

    /// Shutdown: abort the supervisor's tasks, then stop the children in
    /// reverse start order, each within the shutdown timeout.
    pub(super) async fn stop_children(&self, state: &mut SupervisorState) {
        state.tasks.shutdown().await;
        for child in state.children.iter_mut().rev() {
            child.generation += 1;
            child.pending = None;
            if let Some(running) = child.running.take() {
                stop_within(&self.name, &running.cell, "shutdown", self.shutdown_timeout).await;
            }
        }
    }
}

/// Stops `cell` with `reason`, killing it if it has not stopped within `limit`.
async fn stop_within(supervisor: &str, cell: &ActorCell, reason: &str, limit: Duration) {
    if cell.stop_and_wait(Some(reason.to_owned()), Some(limit)).await.is_err() {
        tracing::warn!(supervisor, actor = %cell.get_id(), "child did not stop in time; killing it");
        cell.kill();
    }
}
