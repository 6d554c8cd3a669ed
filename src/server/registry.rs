//! The open connections, oldest first, so that at the cap the oldest one with no
//! request in flight can be closed to admit a new one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use super::conn::{ConnState, Phase};
use crate::metrics;

/// Every open connection of one server.
#[derive(Debug, Default)]
pub struct Registry {
    conns: Mutex<BTreeMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    /// Notified (to current waiters only) when a connection becomes idle.
    changed: Arc<Notify>,
}

impl Registry {
    fn conns(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<ConnState>>> {
        // the map stays consistent even if a holder panicked: every edit is one call
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a connection just accepted; it is removed when the returned guard drops.
    pub fn register(self: &Arc<Self>) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(ConnState::new(id, self.changed.clone()));
        self.conns().insert(id, conn.clone());
        metrics::http_connection_opened();
        Registered { registry: self.clone(), conn }
    }

    /// Notified when a connection becomes idle (so may be evicted).
    pub fn changed(&self) -> &Notify {
        &self.changed
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.conns().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks the oldest connection that is not serving a request (idle, or still
    /// sending its head) to close. Does nothing while an eviction is under way
    /// (one slot at a time) or when every connection is serving a request.
    /// Returns whether an eviction is under way after the call.
    pub fn evict_oldest_idle(&self) -> bool {
        let conns = self.conns();
        if conns.values().any(|c| c.is_evicting()) {
            return true;
        }
        match conns.values().find(|c| c.phase() != Phase::Busy) {
            Some(oldest) => {
                oldest.request_eviction();
                true
            }
            None => false,
        }
    }

    fn remove(&self, id: u64) {
        self.conns().remove(&id);
        metrics::http_connection_ended();
    }
}

/// A registered connection; dropping it unregisters it.
#[derive(Debug)]
pub struct Registered {
    registry: Arc<Registry>,
    conn: Arc<ConnState>,
}

impl Registered {
    /// The connection's shared state.
    pub fn state(&self) -> &Arc<ConnState> {
        &self.conn
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.remove(self.conn.id());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::conn::InFlight;

    #[tokio::test]
    async fn evicts_the_oldest_connection_not_serving_a_request() {
        let registry = Arc::new(Registry::default());
        let a = registry.register();
        let b = registry.register();
        let c = registry.register();
        let _busy = InFlight::begin(a.state().clone());
        assert!(registry.evict_oldest_idle());
        assert!(!a.state().is_evicting());
        assert!(b.state().is_evicting(), "b is the oldest not serving a request");
        assert!(registry.evict_oldest_idle());
        assert!(!c.state().is_evicting(), "one eviction at a time");
        drop(b);
        assert_eq!(registry.len(), 2);
        assert!(registry.evict_oldest_idle());
        assert!(c.state().is_evicting());
    }

    #[tokio::test]
    async fn nothing_to_evict_when_all_are_busy() {
        let registry = Arc::new(Registry::default());
        let a = registry.register();
        let _busy = InFlight::begin(a.state().clone());
        assert!(!registry.evict_oldest_idle());
    }
}
