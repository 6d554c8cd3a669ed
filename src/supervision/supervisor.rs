//! The generic supervisor actor: starts its children, watches them, and
//! restarts them by strategy and by each child's restart policy, within a
//! restart intensity, after a jittered backoff. A child past its intensity is
//! marked down; the supervisor itself carries on.
//!
//! Nothing slow runs in the supervisor's mailbox: start functions, snapshots of
//! nested supervisors, chaos lookups below it and the stop of a removed child
//! run as tasks the supervisor owns (aborted when it stops), whose outcome comes
//! back as a message or goes straight to the caller. The child life cycle itself
//! is in `lifecycle.rs`.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::chaos;
pub use super::chaos::{ChaosAction, ChaosError, chaos_panic};
use super::child::{ChildSpec, StartedChild};
use super::events::LifecycleEvents;
use super::handle::{ChildError, fill_nested};
use super::intensity::RestartIntensity;
pub use super::lifecycle::{ChildKey, StartError, SupervisorState};
use super::strategy::RestartStrategy;
use super::tree::{ActorNode, ActorStats, FailureKind};

/// Messages a supervisor handles.
pub enum SupervisorMsg {
    /// Timer-driven: start these children (key, generation) if still wanted.
    Restart(Vec<(ChildKey, u64)>),
    /// A start task's outcome, for the child's generation when it began.
    Started { key: ChildKey, generation: u64, result: Result<StartedChild, StartError> },
    /// The subtree below this supervisor, to be answered within `budget`
    /// (nested supervisors get a smaller share of it).
    Snapshot { budget: Duration, reply: RpcReplyPort<Vec<ActorNode>> },
    /// Apply a chaos action to a named actor in this subtree.
    Chaos { target: String, action: ChaosAction, reply: RpcReplyPort<Result<(), ChaosError>> },
    /// Add this child (last in start order) and start it.
    AddChild(ChildSpec, RpcReplyPort<Result<(), ChildError>>),
    /// Stop the named child without restarting it and forget it.
    RemoveChild(String, RpcReplyPort<Result<(), ChildError>>),
    /// Chaos: panic while handling this message.
    Panic,
}

impl ractor::Message for SupervisorMsg {}

/// A supervisor's configuration.
#[derive(Debug, Clone)]
pub struct Supervisor {
    /// Name used in logs, events and the tree.
    pub name: String,
    pub strategy: RestartStrategy,
    pub intensity: RestartIntensity,
    pub backoff: Backoff,
    /// Retry a down child after this long (`None`: it stays down).
    pub down_retry: Option<Duration>,
    /// How long a chaos request waits for a nested supervisor.
    pub ask_timeout: Duration,
    /// How long shutdown (or removal) waits for each child to stop.
    pub shutdown_timeout: Duration,
    /// How long a child's start function may run; past it the start is a failure.
    pub start_timeout: Duration,
}

/// What a supervisor is started with.
pub struct SupervisorArgs {
    pub children: Vec<ChildSpec>,
    /// The supervisor's own counters (owned by its parent, or by the application for the root).
    pub stats: Arc<ActorStats>,
    /// Where the supervisor publishes its children's lifecycle events: the same
    /// for the whole tree (a start function passes on `ChildContext::events`).
    pub events: Arc<LifecycleEvents>,
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
        Ok(SupervisorState::new(&self.name, self.intensity, args))
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // all at once: each start reports back as `Started`, and a failure
        // before the others are up is handled by the strategy like any other
        for pos in 0..state.len() {
            self.begin_start(&myself, state, pos, false);
        }
        tracing::info!(supervisor = %self.name, children = state.len(), "supervisor started");
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(supervisor = %self.name))]
    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        state.handled();
        match message {
            SupervisorMsg::Restart(batch) => self.restart(&myself, state, batch),
            SupervisorMsg::Started { key, generation, result } => {
                self.on_started(&myself, state, key, generation, result);
            }
            SupervisorMsg::Snapshot { budget, reply } => {
                if reply.is_closed() {
                    return Ok(());
                }
                let deadline = Instant::now() + budget;
                let nodes = self.nodes(state);
                if nodes.iter().all(|(_, nested)| nested.is_none()) {
                    let _ = reply.send(nodes.into_iter().map(|(node, _)| node).collect());
                } else {
                    state.spawn(async move {
                        let _ = reply.send(fill_nested(nodes, deadline).await);
                    });
                }
            }
            SupervisorMsg::Chaos { target, action, reply } => match state.find(&target) {
                Some(child) => {
                    let _ = reply.send(chaos::apply(&self.name, &target, child.running(), action));
                }
                None => {
                    let nested = state.nested();
                    let wait = self.ask_timeout * 3 / 4;
                    state.spawn(async move {
                        let _ = reply.send(chaos::ask_nested(nested, target, action, wait).await);
                    });
                }
            },
            SupervisorMsg::AddChild(spec, reply) => {
                let _ = reply.send(self.add_child(&myself, state, spec));
            }
            SupervisorMsg::RemoveChild(name, reply) => self.remove_child(state, &name, reply),
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
        self.on_exit_event(&myself, state, cell.get_id(), kind, reason);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        self.stop_children(state).await;
        tracing::info!(supervisor = %self.name, "supervisor stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests;
