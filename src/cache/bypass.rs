//! [`Bypass`]: the bounded path to the database for reads no shard can serve
//! (their shard is marked down, or restarting past the ask deadline).
//!
//! At most `in_flight` bypassed loads run at once (by default the database pool's
//! size) and at most `queued` more wait for a turn; a read beyond that is refused
//! at once with [`CacheError::Overloaded`] (503 `overloaded` with `Retry-After`),
//! so a flood of bypassed reads cannot queue without bound.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::Semaphore;

use super::format::CachedValue;
use super::handle::{CacheError, Loader};
use crate::metrics;

/// Why a read bypassed the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassReason {
    /// Its shard is marked down (past its restart intensity).
    ShardDown,
    /// Its shard was restarting and did not come back before the deadline.
    ShardUnavailable,
}

impl BypassReason {
    /// Label in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ShardDown => "shard_down",
            Self::ShardUnavailable => "shard_unavailable",
        }
    }
}

/// Bypassed reads of one node, for the admin endpoint.
#[derive(Debug, Clone, Copy, Default, Serialize, utoipa::ToSchema)]
pub struct BypassStats {
    /// Reads that went to the database past the cache.
    pub loaded: u64,
    /// Reads refused because `cache.bypass_max_in_flight` + `cache.bypass_max_queued` were taken.
    pub rejected: u64,
}

/// The bounded bypass path.
pub struct Bypass {
    admitted: Semaphore,
    running: Semaphore,
    loaded: AtomicU64,
    rejected: AtomicU64,
}

impl Bypass {
    /// At most `in_flight` loads at once (at least 1) and `queued` waiting.
    pub fn new(in_flight: usize, queued: usize) -> Self {
        let in_flight = in_flight.clamp(1, Semaphore::MAX_PERMITS / 2);
        let admitted = in_flight.saturating_add(queued).min(Semaphore::MAX_PERMITS);
        Self {
            admitted: Semaphore::new(admitted),
            running: Semaphore::new(in_flight),
            loaded: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// Runs `loader` when there is room, else refuses at once.
    pub async fn load(&self, reason: BypassReason, loader: &Loader) -> Result<CachedValue, CacheError> {
        let Ok(_admitted) = self.admitted.try_acquire() else {
            return Err(self.refuse(reason));
        };
        // never closed; a closed semaphore would refuse rather than run unbounded
        let Ok(_running) = self.running.acquire().await else {
            return Err(self.refuse(reason));
        };
        self.loaded.fetch_add(1, Ordering::Relaxed);
        metrics::cache_bypass(reason.as_str(), "loaded");
        loader().await.map_err(CacheError::Load)
    }

    fn refuse(&self, reason: BypassReason) -> CacheError {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        metrics::cache_bypass(reason.as_str(), "rejected");
        CacheError::Overloaded
    }

    /// What this node bypassed so far.
    pub fn stats(&self) -> BypassStats {
        BypassStats {
            loaded: self.loaded.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use futures::FutureExt;

    use super::*;

    fn gated(gate: Arc<Semaphore>) -> Loader {
        Arc::new(move || {
            let gate = gate.clone();
            async move {
                let _open = gate.acquire().await;
                Ok(CachedValue { body: Bytes::from_static(b"{}"), etag: None, not_found: false })
            }
            .boxed()
        })
    }

    #[tokio::test]
    async fn loads_beyond_in_flight_and_queue_are_refused_at_once() {
        let bypass = Arc::new(Bypass::new(1, 1));
        let gate = Arc::new(Semaphore::new(0));
        let loader = gated(gate.clone());
        let first = tokio::spawn({
            let (bypass, loader) = (bypass.clone(), loader.clone());
            async move { bypass.load(BypassReason::ShardDown, &loader).await }
        });
        let second = tokio::spawn({
            let (bypass, loader) = (bypass.clone(), loader.clone());
            async move { bypass.load(BypassReason::ShardDown, &loader).await }
        });
        // both admitted: one running, one waiting for its turn
        while bypass.admitted.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let third = bypass.load(BypassReason::ShardUnavailable, &loader).await;
        assert!(matches!(third, Err(CacheError::Overloaded)), "{third:?}");
        gate.add_permits(2);
        assert!(first.await.unwrap().is_ok());
        assert!(second.await.unwrap().is_ok());
        let stats = bypass.stats();
        assert_eq!((stats.loaded, stats.rejected), (2, 1));
        // room again once they finished
        gate.add_permits(1);
        assert!(bypass.load(BypassReason::ShardDown, &loader).await.is_ok());
    }
}
