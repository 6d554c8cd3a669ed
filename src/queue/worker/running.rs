//! [`Running`]: the jobs this node's workers run now, each with its cancellation
//! token, so a `job.cancel` event reaches the worker and a redelivery can tell a
//! live worker of this node from a dead one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// This node's running jobs.
#[derive(Clone, Debug, Default)]
pub struct Running {
    jobs: Arc<Mutex<HashMap<String, CancellationToken>>>,
}

impl Running {
    /// Registers `job` as running here; dropping the guard unregisters it (also
    /// when its worker is killed).
    pub fn enter(&self, job: &str) -> Option<RunningGuard> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if jobs.contains_key(job) {
            return None;
        }
        let token = CancellationToken::new();
        jobs.insert(job.to_owned(), token.clone());
        Some(RunningGuard { running: self.clone(), job: job.to_owned(), token })
    }

    /// Whether a worker of this node runs `job`.
    pub fn contains(&self, job: &str) -> bool {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).contains_key(job)
    }

    /// Asks the worker running `job` here to stop; false when none does.
    pub fn cancel(&self, job: &str) -> bool {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.get(job).map(CancellationToken::cancel).is_some()
    }
}

/// A job's registration; unregisters on drop.
#[derive(Debug)]
pub struct RunningGuard {
    running: Running,
    job: String,
    token: CancellationToken,
}

impl RunningGuard {
    /// The job's cancellation token.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.running.jobs.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_runs_once_per_node_and_is_forgotten_when_its_guard_drops() {
        let running = Running::default();
        let guard = running.enter("a").unwrap();
        assert!(running.enter("a").is_none());
        assert!(running.cancel("a"));
        assert!(guard.token().is_cancelled());
        assert!(!running.cancel("b"));
        drop(guard);
        assert!(!running.contains("a"));
        assert!(running.enter("a").is_some());
    }
}
