//! [`RootTree`]: the root supervisor of a node and the background tasks it owns;
//! what the node holds to inspect the tree, inject chaos and shut down.

use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, SpawnErr};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::child::ChildSpec;
use super::events::{DownSet, LifecycleEvents};
use super::handle::SupervisorHandle;
use super::supervisor::{ChaosAction, ChaosError, Supervisor, SupervisorArgs, SupervisorMsg};
use super::tree::{ActorNode, ActorStats, NodeStatus};

/// The running actor tree of one node.
pub struct RootTree {
    root: ActorRef<SupervisorMsg>,
    handle: std::sync::Mutex<Option<JoinHandle<()>>>,
    tasks: std::sync::Mutex<Vec<Tracked>>,
    stats: Arc<ActorStats>,
    ask_timeout: Duration,
    /// Every supervisor's lifecycle events.
    events: Arc<LifecycleEvents>,
    /// The actors now down, kept current from `events`.
    down: DownSet,
}

impl RootTree {
    /// Starts `root` (the node's root supervisor) over `children`.
    pub async fn start(root: Supervisor, children: Vec<ChildSpec>) -> Result<Self, SpawnErr> {
        let ask_timeout = root.ask_timeout;
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
            ask_timeout,
            events,
            down,
        })
    }

    /// Owns a background task of the node under `name`, so shutdown lets it
    /// finish (within the grace period) before it stops the tree.
    pub fn track(&self, name: impl Into<String>, task: JoinHandle<()>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.task.is_finished());
        tasks.push(Tracked { name: name.into(), task });
    }

    /// Every supervisor's lifecycle events, for subscribers (the dashboard, the cluster).
    pub fn events(&self) -> &Arc<LifecycleEvents> {
        &self.events
    }

    /// The actors now down (past their restart intensity), without asking any mailbox.
    pub fn down(&self) -> &DownSet {
        &self.down
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

    /// Lets the tracked tasks finish until `deadline`, aborts (and names) those
    /// still running then, and stops the tree children-first, giving it until
    /// `deadline` (at least `floor`) before it is killed.
    pub async fn shutdown(&self, deadline: Instant, floor: Duration) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for Tracked { name, mut task } in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tracing::warn!(task = %name, "background task still running at the shutdown deadline; aborting it");
                task.abort();
            }
        }
        let left = deadline.saturating_duration_since(Instant::now()).max(floor);
        let stopped = self.root.stop_and_wait(Some("shutdown".to_owned()), Some(left)).await;
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

/// A background task the node owns.
struct Tracked {
    name: String,
    task: JoinHandle<()>,
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::supervision::backoff::Backoff;
    use crate::supervision::intensity::RestartIntensity;
    use crate::supervision::strategy::RestartStrategy;

    fn root() -> Supervisor {
        Supervisor {
            name: "root".to_owned(),
            strategy: RestartStrategy::OneForOne,
            intensity: RestartIntensity { max_restarts: 3, within: Duration::from_secs(60) },
            backoff: Backoff::default(),
            down_retry: None,
            ask_timeout: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(1),
            start_timeout: Duration::from_secs(1),
        }
    }

    /// Raises its flag when dropped: an aborted task drops its future.
    struct Dropped(Arc<AtomicBool>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_lets_tracked_tasks_finish_and_aborts_only_those_past_the_deadline() {
        let tree = RootTree::start(root(), Vec::new()).await.unwrap();
        let (finished, aborted) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let done = Arc::clone(&finished);
        tree.track(
            "quick",
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                done.store(true, Ordering::SeqCst);
            }),
        );
        let guard = Dropped(Arc::clone(&aborted));
        tree.track(
            "stuck",
            tokio::spawn(async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            }),
        );
        let started = Instant::now();
        let deadline = started + Duration::from_secs(5);
        tree.shutdown(deadline, Duration::from_secs(1)).await;
        assert!(finished.load(Ordering::SeqCst), "a task that ends within the grace period is let finish");
        assert!(aborted.load(Ordering::SeqCst), "a task still running at the deadline is aborted");
        assert!(Instant::now() >= deadline, "the stuck task was waited for until the deadline");
        assert!(Instant::now() < deadline + Duration::from_secs(2), "and not much longer");
    }
}
