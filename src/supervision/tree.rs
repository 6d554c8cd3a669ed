//! The actor-tree snapshot served by `GET /api/v1/admin/actors`, and the per-actor
//! counters that feed it.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::breaker::BreakerSnapshot;

/// Counters an actor keeps about itself; shared with its supervisor so they
/// survive restarts.
#[derive(Debug, Default)]
pub struct ActorStats {
    messages: AtomicU64,
}

impl ActorStats {
    /// Counts one handled message.
    pub fn handled(&self) {
        self.messages.fetch_add(1, Ordering::Relaxed);
    }
    /// Messages handled so far, across restarts.
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }
}

/// What a supervisor knows of a child's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Its start function is running (within `supervision.start_timeout_ms`).
    Starting,
    /// Started and processing messages.
    Running,
    /// Failed; a restart is scheduled after backoff.
    Restarting,
    /// Past its restart intensity: not restarted (until `down_retry`, if set).
    Down,
    /// Ended and, by its restart policy, left stopped (a transient child that
    /// stopped cleanly, a temporary child).
    Stopped,
    /// Did not answer a snapshot request in time.
    Unresponsive,
}

/// How an actor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Panicked or returned an error from a handler.
    Failed,
    /// Killed (forcefully terminated).
    Killed,
    /// Stopped without being asked to by its supervisor.
    Stopped,
    /// Could not be started: its start function returned an error.
    StartFailed,
    /// Its start function did not finish within the start deadline.
    StartTimedOut,
}

impl FailureKind {
    /// Label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Killed => "killed",
            Self::Stopped => "stopped",
            Self::StartFailed => "start_failed",
            Self::StartTimedOut => "start_timeout",
        }
    }

    /// Whether this is an abnormal end: anything but a clean stop. A transient
    /// child is restarted only after an abnormal end.
    pub fn is_abnormal(self) -> bool {
        self != Self::Stopped
    }
}

/// The last failure of an actor.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Failure {
    pub kind: FailureKind,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// One actor in the tree.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActorNode {
    #[schema(example = "explore")]
    pub name: String,
    /// `null` while the actor is not running.
    #[schema(required = true)]
    pub actor_id: Option<String>,
    pub kind: String,
    pub status: NodeStatus,
    pub restarts: u64,
    #[schema(required = true)]
    pub last_failure: Option<Failure>,
    pub messages_handled: u64,
    /// Present for actors that guard a dependency with a circuit breaker.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub breaker: Option<BreakerSnapshot>,
    #[schema(no_recursion)]
    pub children: Vec<ActorNode>,
}

impl ActorNode {
    /// Depth-first search by name.
    pub fn find(&self, name: &str) -> Option<&ActorNode> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }

    /// Every node, depth first.
    pub fn walk(&self) -> Vec<&ActorNode> {
        let mut out = vec![self];
        for child in &self.children {
            out.extend(child.walk());
        }
        out
    }

    /// An indented plain-text rendering for terminals.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out, 0);
        out
    }

    fn render_into(&self, out: &mut String, depth: usize) {
        let indent = "  ".repeat(depth);
        let _ = write!(
            out,
            "{indent}{} [{}] {} id={} restarts={} messages={}",
            self.name,
            self.kind,
            serde_plain(&self.status),
            self.actor_id.as_deref().unwrap_or("-"),
            self.restarts,
            self.messages_handled
        );
        if let Some(b) = &self.breaker {
            let _ = write!(out, " breaker={}", b.state.as_str());
        }
        if let Some(f) = &self.last_failure {
            let _ = write!(out, " last_failure={}@{}: {}", f.kind.as_str(), f.at.to_rfc3339(), f.reason);
        }
        out.push('\n');
        for child in &self.children {
            child.render_into(out, depth + 1);
        }
    }
}

fn serde_plain(status: &NodeStatus) -> &'static str {
    match status {
        NodeStatus::Starting => "starting",
        NodeStatus::Running => "running",
        NodeStatus::Restarting => "restarting",
        NodeStatus::Down => "down",
        NodeStatus::Stopped => "stopped",
        NodeStatus::Unresponsive => "unresponsive",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, children: Vec<ActorNode>) -> ActorNode {
        ActorNode {
            name: name.into(),
            actor_id: Some("0.1".into()),
            kind: "worker".into(),
            status: NodeStatus::Running,
            restarts: 0,
            last_failure: None,
            messages_handled: 3,
            breaker: None,
            children,
        }
    }

    #[test]
    fn find_and_render() {
        let tree = node("root", vec![node("health", vec![]), node("cache", vec![node("shard-0", vec![])])]);
        assert!(tree.find("shard-0").is_some());
        assert!(tree.find("nope").is_none());
        assert_eq!(tree.walk().len(), 4);
        let text = tree.render_text();
        assert!(text.starts_with("root [worker] running"));
        assert!(text.contains("\n    shard-0 [worker]"), "{text}");
    }

    #[test]
    fn stats_count() {
        let s = ActorStats::default();
        s.handled();
        s.handled();
        assert_eq!(s.messages(), 2);
    }
}
