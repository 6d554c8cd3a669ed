//! [`LoadGate`]: holds every cache load of a node until it is opened. A node is
//! built with one only when its embedder asks for it (`startup::Hooks::load_gate`,
//! not a configuration key): the API tests use it to stall the database behind
//! the cache and watch the load deadline and the 503s it gives.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::FutureExt;
use tokio::sync::watch;

use super::handle::Loader;

/// A gate in front of every loader of a cache. Cheap to clone; clones share the gate.
#[derive(Clone, Debug)]
pub struct LoadGate {
    open: watch::Sender<bool>,
    held: Arc<AtomicUsize>,
    passed: Arc<AtomicUsize>,
}

impl LoadGate {
    /// A closed gate: loads wait at it until [`LoadGate::open`].
    #[must_use]
    pub fn closed() -> Self {
        Self { open: watch::Sender::new(false), held: Arc::default(), passed: Arc::default() }
    }

    /// Lets every held load and every later one through.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Holds every later load again.
    pub fn close(&self) {
        self.open.send_replace(false);
    }

    /// Loads waiting at the gate now.
    #[must_use]
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Loads that went through the gate so far.
    #[must_use]
    pub fn passed(&self) -> usize {
        self.passed.load(Ordering::Relaxed)
    }

    /// Waits until the gate is open.
    async fn pass(&self) {
        let mut open = self.open.subscribe();
        if !*open.borrow_and_update() {
            let _held = Held::new(&self.held);
            // the sender lives in `self`: the wait ends only when the gate opens (or
            // the load is dropped, at its deadline)
            let _ = open.wait_for(|open| *open).await;
        }
        self.passed.fetch_add(1, Ordering::Relaxed);
    }

    /// `loader` behind this gate.
    #[must_use]
    pub fn wrap(&self, loader: Loader) -> Loader {
        let gate = self.clone();
        Arc::new(move || {
            let (gate, loader) = (gate.clone(), loader.clone());
            async move {
                gate.pass().await;
                loader().await
            }
            .boxed()
        })
    }
}

/// Counts one held load for as long as it waits, however its wait ends.
struct Held<'a>(&'a AtomicUsize);

impl<'a> Held<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
