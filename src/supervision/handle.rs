//! [`SupervisorHandle`]: typed calls to a running supervisor, each with a
//! deadline: add or remove a child at run time, take the subtree's snapshot.
//! A pool that grows and shrinks, or cluster members that
//! come and go, use these.

use std::time::Duration;

use ractor::ActorRef;
use ractor::rpc::CallResult;
use tokio::time::Instant;

use super::child::ChildSpec;
use super::supervisor::SupervisorMsg;
use super::tree::{ActorNode, NodeStatus};

/// The share of its own wait that a caller gives a supervisor to gather its
/// snapshot in: each level answers before the level above stops waiting, so a
/// stuck supervisor deep down is shown `unresponsive` by its parent while the
/// rest of the tree comes back complete.
const SNAPSHOT_SHARE: (u32, u32) = (3, 4);

/// Why a call to a supervisor failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChildError {
    /// Another child of this supervisor has that name.
    #[error("a child named '{0}' already exists")]
    NameTaken(String),
    /// No child of this supervisor has that name.
    #[error("no child named '{0}'")]
    NotFound(String),
    /// The supervisor is not running or did not answer before the deadline.
    #[error("the supervisor did not answer in time")]
    Unavailable,
}

/// A running supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorHandle {
    actor: ActorRef<SupervisorMsg>,
}

impl From<ActorRef<SupervisorMsg>> for SupervisorHandle {
    fn from(actor: ActorRef<SupervisorMsg>) -> Self {
        Self { actor }
    }
}

impl SupervisorHandle {
    /// The supervisor's actor.
    pub fn actor(&self) -> &ActorRef<SupervisorMsg> {
        &self.actor
    }

    /// Adds `spec` as the supervisor's last child and starts it; answers once
    /// the start has begun (the child shows `starting` until it is up).
    ///
    /// # Errors
    /// [`ChildError::NameTaken`] when the supervisor has a child of that name;
    /// [`ChildError::Unavailable`] when it does not answer within `wait`.
    pub async fn add_child(&self, spec: ChildSpec, wait: Duration) -> Result<(), ChildError> {
        let answer = self.actor.call(|reply| SupervisorMsg::AddChild(spec, reply), Some(wait)).await;
        match answer {
            Ok(CallResult::Success(result)) => result,
            _ => Err(ChildError::Unavailable),
        }
    }

    /// Stops the child called `name` (not restarted) and removes it from the
    /// tree; answers once it has stopped (or was killed after the supervisor's
    /// shutdown timeout).
    ///
    /// # Errors
    /// [`ChildError::NotFound`] when the supervisor has no child of that name;
    /// [`ChildError::Unavailable`] when it does not answer within `wait`.
    pub async fn remove_child(&self, name: &str, wait: Duration) -> Result<(), ChildError> {
        let request = |reply| SupervisorMsg::RemoveChild(name.to_owned(), reply);
        match self.actor.call(request, Some(wait)).await {
            Ok(CallResult::Success(result)) => result,
            _ => Err(ChildError::Unavailable),
        }
    }

    /// The subtree below the supervisor, within `wait`; nested supervisors that
    /// do not answer within their (shorter) share are shown `unresponsive`.
    ///
    /// # Errors
    /// [`ChildError::Unavailable`] when the supervisor itself does not answer.
    pub async fn snapshot(&self, wait: Duration) -> Result<Vec<ActorNode>, ChildError> {
        let budget = wait * SNAPSHOT_SHARE.0 / SNAPSHOT_SHARE.1;
        match self.actor.call(|reply| SupervisorMsg::Snapshot { budget, reply }, Some(wait)).await {
            Ok(CallResult::Success(nodes)) => Ok(nodes),
            _ => Err(ChildError::Unavailable),
        }
    }
}

/// Fills in the children of the nested supervisors among `nodes`, asking them
/// all at once, each with what is left until `deadline`.
pub(super) async fn fill_nested(
    nodes: Vec<(ActorNode, Option<ActorRef<SupervisorMsg>>)>,
    deadline: Instant,
) -> Vec<ActorNode> {
    let asks = nodes.into_iter().map(|(mut node, nested)| async move {
        if let Some(nested) = nested {
            let wait = deadline.saturating_duration_since(Instant::now());
            match SupervisorHandle::from(nested).snapshot(wait).await {
                Ok(children) => node.children = children,
                Err(_) => node.status = NodeStatus::Unresponsive,
            }
        }
        node
    });
    futures::future::join_all(asks).await
}
