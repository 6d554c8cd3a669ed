//! Bounded password work: every argon2 hash and verification of a node (logins, the dummy
//! verification for unknown users, user creation, password changes, the bootstrap admin,
//! `castwork user add`) runs on the blocking pool under one semaphore of
//! `auth.hashing_concurrency` permits (0: one per core). Each verification holds about
//! 19 MiB while it runs, so the permits bound both the CPU and the memory password work can
//! take, whatever the number of requests.
//!
//! A caller waits at most `auth.hashing_wait_ms` for a permit; past it the work is refused
//! with [`AuthError::Busy`] (503 with `Retry-After`) rather than queued without end. The permit
//! travels into the blocking task and is released when the work ends, even if the request
//! that started it has gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;

use super::AuthError;
use super::password::{hash_password, verify_dummy, verify_password};
use crate::metrics;

/// What a busy caller is told to wait.
pub const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// What a verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The password matches the user's hash.
    Match,
    /// It does not.
    Mismatch,
    /// No such user: the dummy hash was verified instead, for the same cost.
    UnknownUser,
}

impl Verification {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Match => "match",
            Self::Mismatch => "mismatch",
            Self::UnknownUser => "unknown_user",
        }
    }
}

/// The node's password hashing: a semaphore in front of the blocking pool, and its counters.
#[derive(Debug)]
pub struct Hashing {
    permits: Arc<Semaphore>,
    size: usize,
    wait: Duration,
    matched: AtomicU64,
    mismatched: AtomicU64,
    unknown_user: AtomicU64,
    hashed: AtomicU64,
    busy: AtomicU64,
}

/// The counters of this node's password work since start, for the admin report.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub struct HashingReport {
    /// Permits: the most hashes and verifications running at once.
    pub permits: usize,
    /// Permits held now.
    pub in_use: usize,
    /// Verifications that matched.
    pub verified_match: u64,
    /// Verifications that did not match.
    pub verified_mismatch: u64,
    /// Dummy verifications, for logins naming an unknown user.
    pub verified_unknown_user: u64,
    /// Passwords hashed (users created, passwords changed).
    pub hashed: u64,
    /// Requests refused because no permit came free in time.
    pub busy: u64,
}

impl Hashing {
    /// `concurrency` permits (0: the number of cores), waited for at most `wait`.
    pub fn new(concurrency: usize, wait: Duration) -> Self {
        let size = if concurrency == 0 {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        } else {
            concurrency
        };
        metrics::hashing_permits(size, 0);
        Self {
            permits: Arc::new(Semaphore::new(size)),
            size,
            wait,
            matched: AtomicU64::new(0),
            mismatched: AtomicU64::new(0),
            unknown_user: AtomicU64::new(0),
            hashed: AtomicU64::new(0),
            busy: AtomicU64::new(0),
        }
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: String) -> Result<String, AuthError> {
        let hash = self.run("hash", move || hash_password(&password)).await??;
        self.hashed.fetch_add(1, Ordering::Relaxed);
        Ok(hash)
    }

    /// Verifies `password` against a user's stored hash, or against the dummy hash when there
    /// is no such user (`None`), so both cost the same.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<Verification, AuthError> {
        let outcome = self
            .run("verify", move || match phc {
                Some(phc) if verify_password(&password, &phc) => Verification::Match,
                Some(_) => Verification::Mismatch,
                None => {
                    verify_dummy(&password);
                    Verification::UnknownUser
                }
            })
            .await?;
        let counter = match outcome {
            Verification::Match => &self.matched,
            Verification::Mismatch => &self.mismatched,
            Verification::UnknownUser => &self.unknown_user,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::password_verification(outcome.as_str());
        Ok(outcome)
    }

    /// This node's counters.
    pub fn report(&self) -> HashingReport {
        HashingReport {
            permits: self.size,
            in_use: self.in_use(),
            verified_match: self.matched.load(Ordering::Relaxed),
            verified_mismatch: self.mismatched.load(Ordering::Relaxed),
            verified_unknown_user: self.unknown_user.load(Ordering::Relaxed),
            hashed: self.hashed.load(Ordering::Relaxed),
            busy: self.busy.load(Ordering::Relaxed),
        }
    }

    /// Runs `work` on the blocking pool once a permit is free.
    async fn run<T: Send + 'static>(
        &self,
        operation: &'static str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let permit = self.permit(operation).await?;
        metrics::hashing_permits(self.size, self.in_use());
        let permits = Arc::clone(&self.permits);
        let size = self.size;
        let done = tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            metrics::hashing_permits(size, size.saturating_sub(permits.available_permits()));
            out
        })
        .await;
        done.map_err(|_| AuthError::Hashing)
    }

    async fn permit(&self, operation: &'static str) -> Result<OwnedSemaphorePermit, AuthError> {
        // the usual case: a permit is free, no timer needed
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => {
                metrics::hashing_wait(Duration::ZERO);
                return Ok(permit);
            }
            Err(TryAcquireError::Closed) => return Err(AuthError::Hashing),
            Err(TryAcquireError::NoPermits) => {}
        }
        let started = Instant::now();
        match tokio::time::timeout(self.wait, Arc::clone(&self.permits).acquire_owned()).await {
            Ok(Ok(permit)) => {
                metrics::hashing_wait(started.elapsed());
                Ok(permit)
            }
            Ok(Err(_closed)) => Err(AuthError::Hashing),
            Err(_elapsed) => {
                self.busy.fetch_add(1, Ordering::Relaxed);
                metrics::hashing_busy(operation);
                tracing::warn!(operation, waited_ms = self.wait.as_millis(), "password hashing saturated");
                Err(AuthError::Busy { retry_after: BUSY_RETRY_AFTER })
            }
        }
    }

    fn in_use(&self) -> usize {
        self.size.saturating_sub(self.permits.available_permits())
    }
}

#[cfg(test)]
impl Hashing {
    /// Takes every permit, as if every slot were busy, until the permit drops.
    pub(crate) async fn occupy(&self) -> OwnedSemaphorePermit {
        let all = u32::try_from(self.size).unwrap();
        Arc::clone(&self.permits).acquire_many_owned(all).await.unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_and_counts() {
        let hashing = Hashing::new(1, Duration::from_secs(5));
        let phc = hashing.hash("correct horse battery staple".to_owned()).await.unwrap();
        let ok = hashing.verify("correct horse battery staple".to_owned(), Some(phc.clone())).await;
        let wrong = hashing.verify("wrong".to_owned(), Some(phc)).await;
        let unknown = hashing.verify("anything".to_owned(), None).await;
        assert_eq!(ok.unwrap(), Verification::Match);
        assert_eq!(wrong.unwrap(), Verification::Mismatch);
        assert_eq!(unknown.unwrap(), Verification::UnknownUser);
        let report = hashing.report();
        assert_eq!(
            (report.verified_match, report.verified_mismatch, report.verified_unknown_user, report.hashed),
            (1, 1, 1, 1)
        );
        assert_eq!((report.permits, report.in_use, report.busy), (1, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn saturated_past_the_wait_is_busy() {
        let hashing = Hashing::new(1, Duration::from_millis(200));
        let held = Arc::clone(&hashing.permits).acquire_owned().await.unwrap();
        let refused = hashing.verify("x".to_owned(), None).await.unwrap_err();
        assert!(matches!(refused, AuthError::Busy { retry_after } if retry_after == BUSY_RETRY_AFTER));
        assert!(matches!(hashing.hash("x".to_owned()).await, Err(AuthError::Busy { .. })));
        assert_eq!(hashing.report().busy, 2);
        assert_eq!(hashing.report().verified_unknown_user, 0, "nothing was verified");
        drop(held);
        assert_eq!(hashing.verify("x".to_owned(), None).await.unwrap(), Verification::UnknownUser);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_the_permit_when_it_comes_free_in_time() {
        let hashing = Arc::new(Hashing::new(1, Duration::from_millis(500)));
        let held = Arc::clone(&hashing.permits).acquire_owned().await.unwrap();
        let waiter = {
            let hashing = Arc::clone(&hashing);
            tokio::spawn(async move { hashing.permit("verify").await.map(drop) })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held);
        assert!(waiter.await.unwrap().is_ok());
    }

    #[test]
    fn zero_means_one_per_core() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        assert_eq!(Hashing::new(0, Duration::ZERO).report().permits, cores);
        assert_eq!(Hashing::new(3, Duration::ZERO).report().permits, 3);
    }

    #[tokio::test]
    async fn concurrent_verifications_never_exceed_the_permits() {
        let hashing = Arc::new(Hashing::new(2, Duration::from_secs(60)));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (hashing, peak) = (Arc::clone(&hashing), Arc::clone(&peak));
            tasks.spawn(async move {
                let probe = Arc::clone(&hashing);
                hashing
                    .run("verify", move || {
                        peak.fetch_max(probe.in_use(), Ordering::SeqCst);
                        verify_dummy("x");
                    })
                    .await
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!((1..=2).contains(&peak), "{peak}");
    }
}
