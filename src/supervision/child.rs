//! How a supervisor starts a child: [`ChildSpec`] names the child, says when it
//! is restarted ([`Restart`]) and holds its start function; [`StartedChild`] is
//! what the start function hands back.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ractor::{ActorCell, ActorRef, Message, SpawnErr};

use super::breaker::CircuitBreaker;
use super::events::LifecycleEvents;
use super::slot::{ActorSlot, Availability};
use super::supervisor::SupervisorMsg;
use super::tree::{ActorStats, FailureKind};

/// A message type that can carry the chaos hook's injected panic.
pub trait ChaosTarget: Message {
    /// The message whose handling panics.
    fn chaos_panic() -> Self;
}

/// When a child that ended is started again (Erlang/OTP's restart types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    /// Always restarted, a clean stop included.
    #[default]
    Permanent,
    /// Restarted only after an abnormal end (a panic, a kill, a failed start);
    /// a clean stop leaves it stopped.
    Transient,
    /// Never restarted; also left stopped when a sibling's failure stops it.
    Temporary,
}

impl Restart {
    /// Whether a child that ended this way is restarted.
    pub fn restarts_after(self, kind: FailureKind) -> bool {
        match self {
            Self::Permanent => true,
            Self::Transient => kind.is_abnormal(),
            Self::Temporary => false,
        }
    }
}

/// What a start function receives.
pub struct ChildContext {
    /// The supervisor to link the child to (`Actor::spawn_linked`).
    pub supervisor: ActorCell,
    /// Counters that outlive each incarnation; the child calls `stats.handled()` per message.
    pub stats: Arc<ActorStats>,
    /// The tree's lifecycle events: a nested supervisor passes them on in its
    /// [`SupervisorArgs`](super::supervisor::SupervisorArgs).
    pub events: Arc<LifecycleEvents>,
}

/// The future a start function returns.
pub type StartFuture = Pin<Box<dyn Future<Output = Result<StartedChild, SpawnErr>> + Send>>;

type StartFn = dyn Fn(ChildContext) -> StartFuture + Send + Sync;

/// A child as its supervisor knows it.
pub struct ChildSpec {
    pub(super) name: Arc<str>,
    pub(super) kind: Arc<str>,
    pub(super) restart: Restart,
    pub(super) breaker: Option<Arc<CircuitBreaker>>,
    /// Told when the child is marked down and when it is back (see [`ChildSpec::with_slot`]).
    pub(super) slots: Vec<Box<dyn Availability>>,
    pub(super) start: Box<StartFn>,
}

impl ChildSpec {
    /// A permanent child called `name` of the given kind, started by `start`.
    /// The start function runs outside the supervisor's mailbox, within the
    /// supervisor's start deadline.
    pub fn new<F, Fut>(name: impl Into<Arc<str>>, kind: impl Into<Arc<str>>, start: F) -> Self
    where
        F: Fn(ChildContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<StartedChild, SpawnErr>> + Send + 'static,
    {
        Self {
            name: name.into(),
            kind: kind.into(),
            restart: Restart::default(),
            breaker: None,
            slots: Vec::new(),
            start: Box::new(move |ctx| Box::pin(start(ctx))),
        }
    }

    /// Sets when the child is restarted (default [`Restart::Permanent`]).
    pub fn with_restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Shows this breaker's state beside the child in the actor tree.
    pub fn with_breaker(mut self, breaker: Arc<CircuitBreaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Marks `slot` down when this child is marked down (or removed), so asks
    /// through it fail at once instead of waiting out their deadline; the child's
    /// start function must publish each incarnation to the slot ([`ActorSlot::set`],
    /// which marks it up). A nested supervisor takes the slots of the workers
    /// below it: when it is down, so are they.
    pub fn with_slot<M: Message>(mut self, slot: &ActorSlot<M>) -> Self {
        self.slots.push(Box::new(slot.clone()));
        self
    }

    /// Marks every slot of this child down. Nothing marks them up again: each
    /// is back when its start function publishes a new incarnation there.
    pub(super) fn set_down(&self) {
        for slot in &self.slots {
            slot.set_down(true);
        }
    }

    /// The child's name, unique within the node.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When the child is restarted.
    pub fn restart(&self) -> Restart {
        self.restart
    }
}

/// A running child: its cell plus the means to reach it for snapshots and chaos.
pub struct StartedChild {
    pub(super) cell: ActorCell,
    pub(super) control: Control,
}

pub(super) enum Control {
    Worker { inject_panic: Box<dyn Fn() -> bool + Send + Sync> },
    Supervisor(ActorRef<SupervisorMsg>),
}

impl StartedChild {
    /// A worker actor.
    pub fn worker<M: ChaosTarget>(actor: ActorRef<M>) -> Self {
        let cell = actor.get_cell();
        let inject_panic = Box::new(move || actor.cast(M::chaos_panic()).is_ok());
        Self { cell, control: Control::Worker { inject_panic } }
    }

    /// A nested supervisor.
    pub fn supervisor(actor: ActorRef<SupervisorMsg>) -> Self {
        Self { cell: actor.get_cell(), control: Control::Supervisor(actor) }
    }

    /// The nested supervisor this child is, if it is one.
    pub(super) fn as_supervisor(&self) -> Option<&ActorRef<SupervisorMsg>> {
        match &self.control {
            Control::Supervisor(sup) => Some(sup),
            Control::Worker { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_follow_otp() {
        use FailureKind::*;
        for kind in [Failed, Killed, Stopped, StartFailed, StartTimedOut] {
            assert!(Restart::Permanent.restarts_after(kind));
            assert!(!Restart::Temporary.restarts_after(kind));
            assert_eq!(Restart::Transient.restarts_after(kind), kind != Stopped);
        }
        assert_eq!(Restart::default(), Restart::Permanent);
    }
}
