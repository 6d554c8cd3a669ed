//! The chaos hook: kill, panic or stop a named actor of the tree, so tests and
//! operators can see the supervisors at work.

use std::time::Duration;

use ractor::ActorRef;
use ractor::rpc::CallResult;
use serde::Deserialize;

use super::child::{Control, StartedChild};
use super::supervisor::SupervisorMsg;
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
    /// The actor exists but is not running (starting, restarting, stopped or down).
    #[error("actor '{0}' is not running")]
    NotRunning(String),
}

/// Applies `action` to the child called `target` of `supervisor`, found in its
/// own list; `running` is its current incarnation, if any.
pub(super) fn apply(
    supervisor: &str,
    target: &str,
    running: Option<&StartedChild>,
    action: ChaosAction,
) -> Result<(), ChaosError> {
    let Some(running) = running else {
        return Err(ChaosError::NotRunning(target.to_owned()));
    };
    metrics::chaos_action(target, action.as_str());
    tracing::warn!(supervisor, child = target, action = action.as_str(), "chaos action");
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
    Ok(())
}

/// Asks each nested supervisor in turn, each within `wait`; the first that
/// knows `target` answers.
pub(super) async fn ask_nested(
    nested: Vec<ActorRef<SupervisorMsg>>,
    target: String,
    action: ChaosAction,
    wait: Duration,
) -> Result<(), ChaosError> {
    for sup in nested {
        let request = |reply| SupervisorMsg::Chaos { target: target.clone(), action, reply };
        match sup.call(request, Some(wait)).await {
            Ok(CallResult::Success(Err(ChaosError::NotFound(_)))) => continue,
            Ok(CallResult::Success(result)) => return result,
            _ => continue,
        }
    }
    Err(ChaosError::NotFound(target))
}

/// The chaos hook's injected panic: a real panic, so the supervisor sees what a bug would cause.
#[expect(clippy::panic, reason = "the chaos hook exists to inject exactly this panic")]
pub fn chaos_panic(actor: &str) -> ! {
    panic!("chaos: injected panic in {actor}")
}
