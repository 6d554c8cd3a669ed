//! [`Flights`]: single flight for slow, idempotent work (a summary's generation):
//! concurrent calls for one key share one run of it, and every caller gets its
//! result. The run is a shared future, not a task: it makes progress while any
//! caller awaits it, and the key is free again once it has finished.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

type Flight<T> = Shared<BoxFuture<'static, T>>;

/// Runs in flight by key.
pub struct Flights<T: Clone> {
    running: Mutex<HashMap<String, Flight<T>>>,
}

impl<T: Clone> Default for Flights<T> {
    fn default() -> Self {
        Self { running: Mutex::default() }
    }
}

impl<T: Clone + Send + Sync + 'static> Flights<T> {
    /// The result of the run for `key`: the one in flight, or `start()` when none is.
    pub async fn run(&self, key: &str, start: impl FnOnce() -> BoxFuture<'static, T>) -> T {
        let flight = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            running.entry(key.to_owned()).or_insert_with(|| start().shared()).clone()
        };
        let result = flight.clone().await;
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        // only this run's entry: a newer one may have taken the key meanwhile
        if running.get(key).is_some_and(|current| current.ptr_eq(&flight)) {
            running.remove(key);
        }
        result
    }

    /// Runs in flight now.
    pub fn len(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::Semaphore;

    use super::*;

    #[tokio::test]
    async fn concurrent_calls_for_a_key_share_one_run() {
        let flights: Arc<Flights<usize>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Semaphore::new(0));
        let call = |key: &'static str| {
            let (flights, runs, release) = (flights.clone(), runs.clone(), release.clone());
            async move {
                flights
                    .run(key, move || {
                        Box::pin(async move {
                            let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                            let _permit = release.acquire().await;
                            n
                        })
                    })
                    .await
            }
        };
        let a = tokio::spawn(call("a"));
        let b = tokio::spawn(call("a"));
        let other = tokio::spawn(call("b"));
        while runs.load(Ordering::SeqCst) < 2 || flights.len() < 2 {
            tokio::task::yield_now().await;
        }
        // a single-threaded runtime: these turns let the second caller of "a" join
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        release.add_permits(2);
        let (a, b, other) = (a.await.unwrap(), b.await.unwrap(), other.await.unwrap());
        assert_eq!(a, b, "one run for key a");
        assert_ne!(a, other, "another key runs on its own");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert!(flights.is_empty(), "finished runs free their key");
        // the key runs again afterwards
        let again = flights.run("a", || Box::pin(async { 7 })).await;
        assert_eq!(again, 7);
    }
}
