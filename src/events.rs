//! [`Bus`]: an in-process event bus with any number of subscribers, shared by
//! every concern (it imports nothing of theirs, so any of them can own one).
//! Explore publishes committed item changes on one ([`crate::explore::ChangeBus`]);
//! the cache subscribes today, the outbox relay, SSE and the cluster next.
//!
//! Two kinds of subscriber, because they need different guarantees:
//!
//! - **Inline** ([`Bus::on_publish`]): an async handler that [`Bus::publish`] runs
//!   and awaits before it returns, so a write is not answered before, say, the
//!   cache has invalidated what it touched (read-your-writes). The handlers run
//!   concurrently. They are async rather than plain `Fn(&T)` because the cache's
//!   invalidation talks to Redis. A handler that panics (when called or while
//!   running) or outlives the bus's inline timeout is cut off, logged and counted;
//!   the publisher and the other subscribers carry on. Keep them short: their time
//!   is the writer's.
//! - **Buffered** ([`Bus::subscribe`]): a [`Subscription`] over a bounded
//!   `tokio::sync::broadcast` channel, for subscribers that work at their own pace
//!   (a relay, a stream to a client). Publishing never waits for them. One that
//!   falls more than the buffer behind loses the oldest events it has not read: the
//!   loss is logged and counted (`castwork_events_lagged_total`), and memory stays
//!   bounded by the buffer whatever the subscriber does.
//!
//! Events are shared as `Arc<T>`: publishing clones nothing but the pointer.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::metrics;

/// Events a buffered subscriber may fall behind before it loses the oldest.
pub const DEFAULT_BUFFER: usize = 1024;

/// How long an inline subscriber may take per event before it is cut off.
pub const DEFAULT_INLINE_TIMEOUT: Duration = Duration::from_secs(5);

/// An inline subscriber: called with each event; the future it returns is awaited
/// (with a timeout) before [`Bus::publish`] returns.
pub type Handler<T> = Arc<dyn Fn(Arc<T>) -> BoxFuture<'static, ()> + Send + Sync>;

/// What a bus has seen, counted since it was made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BusStats {
    /// Events published.
    pub published: u64,
    /// Inline handlers that panicked (one per handler and event).
    pub panicked: u64,
    /// Inline handlers cut off by the inline timeout.
    pub timed_out: u64,
    /// Events buffered subscribers lost by falling behind.
    pub lagged: u64,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    panicked: AtomicU64,
    timed_out: AtomicU64,
    lagged: AtomicU64,
}

struct Inline<T> {
    name: Arc<str>,
    handler: Handler<T>,
}

impl<T> Clone for Inline<T> {
    fn clone(&self) -> Self {
        Self { name: self.name.clone(), handler: self.handler.clone() }
    }
}

struct Inner<T> {
    name: &'static str,
    inline: RwLock<Vec<Inline<T>>>,
    inline_timeout: Duration,
    sender: broadcast::Sender<Arc<T>>,
    counters: Arc<Counters>,
}

/// An event bus. Cheap to clone; clones share subscribers.
pub struct Bus<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Bus<T> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<T: Send + Sync + 'static> Bus<T> {
    /// A bus called `name` (a metric label); buffered subscribers may fall `buffer`
    /// events behind (at least 1); inline handlers get `inline_timeout` per event.
    pub fn new(name: &'static str, buffer: usize, inline_timeout: Duration) -> Self {
        let (sender, _) = broadcast::channel(buffer.max(1));
        Self {
            inner: Arc::new(Inner {
                name,
                inline: RwLock::default(),
                inline_timeout,
                sender,
                counters: Arc::default(),
            }),
        }
    }

    /// Adds an inline subscriber called `name` (a log field and metric label).
    pub fn on_publish<F>(&self, name: &str, handler: F)
    where
        F: Fn(Arc<T>) -> BoxFuture<'static, ()> + Send + Sync + 'static,
    {
        let mut inline = self.inner.inline.write().unwrap_or_else(|e| e.into_inner());
        inline.push(Inline { name: Arc::from(name), handler: Arc::new(handler) });
    }

    /// Adds a buffered subscriber called `name`; it sees events published from now on.
    pub fn subscribe(&self, name: &str) -> Subscription<T> {
        Subscription {
            bus: self.inner.name,
            name: Arc::from(name),
            receiver: self.inner.sender.subscribe(),
            counters: self.inner.counters.clone(),
        }
    }

    /// Publishes `event`: queues it for every buffered subscriber, then runs every
    /// inline handler and waits for them (each bounded by the inline timeout). Never
    /// fails: what goes wrong in a subscriber stays with that subscriber.
    pub async fn publish(&self, event: T) {
        let event = Arc::new(event);
        self.inner.counters.published.fetch_add(1, Ordering::Relaxed);
        metrics::events_published(self.inner.name);
        // an error only means no buffered subscriber is listening
        let _ = self.inner.sender.send(event.clone());
        let handlers = self.inner.inline.read().unwrap_or_else(|e| e.into_inner()).clone();
        let runs = handlers.iter().map(|inline| self.run_inline(inline, event.clone()));
        futures::future::join_all(runs).await;
    }

    async fn run_inline(&self, inline: &Inline<T>, event: Arc<T>) {
        let handler = &inline.handler;
        let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(event))) {
            Ok(run) => tokio::time::timeout(self.inner.inline_timeout, AssertUnwindSafe(run).catch_unwind())
                .await
                .map(|finished| finished.is_ok()),
            Err(_) => Ok(false),
        };
        let (bus, subscriber) = (self.inner.name, &*inline.name);
        match outcome {
            Ok(true) => {}
            Ok(false) => {
                self.inner.counters.panicked.fetch_add(1, Ordering::Relaxed);
                metrics::events_subscriber_failure(bus, subscriber, "panic");
                tracing::error!(bus, subscriber, "event subscriber panicked; the event is lost to it");
            }
            Err(_) => {
                self.inner.counters.timed_out.fetch_add(1, Ordering::Relaxed);
                metrics::events_subscriber_failure(bus, subscriber, "timeout");
                tracing::warn!(
                    bus,
                    subscriber,
                    timeout_ms = self.inner.inline_timeout.as_millis() as u64,
                    "event subscriber took too long; cut off"
                );
            }
        }
    }

    /// This bus's counters.
    pub fn stats(&self) -> BusStats {
        let c = &self.inner.counters;
        BusStats {
            published: c.published.load(Ordering::Relaxed),
            panicked: c.panicked.load(Ordering::Relaxed),
            timed_out: c.timed_out.load(Ordering::Relaxed),
            lagged: c.lagged.load(Ordering::Relaxed),
        }
    }
}

/// What [`Subscription::next`] found.
#[derive(Debug)]
pub enum Received<T> {
    /// The next event.
    Event(Arc<T>),
    /// This many events were lost by falling behind (logged and counted); the
    /// subscriber may want to look up the state they would have told it.
    Lagged(u64),
    /// Every clone of the bus is gone.
    Closed,
}

/// A buffered subscriber's end of a [`Bus`].
pub struct Subscription<T> {
    bus: &'static str,
    name: Arc<str>,
    receiver: broadcast::Receiver<Arc<T>>,
    counters: Arc<Counters>,
}

impl<T: Send + Sync + 'static> Subscription<T> {
    /// The next event; `None` once every clone of the bus is gone. Events lost by
    /// falling behind are skipped over (logged and counted), not returned.
    pub async fn recv(&mut self) -> Option<Arc<T>> {
        loop {
            match self.next().await {
                Received::Event(event) => return Some(event),
                Received::Lagged(_) => {}
                Received::Closed => return None,
            }
        }
    }

    /// The next event, or word that some were lost (logged and counted as by
    /// [`Self::recv`]) or that the bus is gone: for a subscriber that must
    /// catch up from elsewhere after a loss.
    pub async fn next(&mut self) -> Received<T> {
        match self.receiver.recv().await {
            Ok(event) => Received::Event(event),
            Err(RecvError::Lagged(missed)) => {
                self.lost(missed);
                Received::Lagged(missed)
            }
            Err(RecvError::Closed) => Received::Closed,
        }
    }

    fn lost(&self, missed: u64) {
        self.counters.lagged.fetch_add(missed, Ordering::Relaxed);
        metrics::events_lagged(self.bus, &self.name, missed);
        tracing::warn!(bus = self.bus, subscriber = %self.name, missed, "event subscriber fell behind; events lost");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn bus() -> Bus<u32> {
        Bus::new("test", 4, Duration::from_secs(1))
    }

    fn recorder(bus: &Bus<u32>, name: &str) -> Arc<Mutex<Vec<u32>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        bus.on_publish(name, move |event| {
            let sink = sink.clone();
            Box::pin(async move { sink.lock().unwrap().push(*event) })
        });
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn every_subscriber_sees_every_event_before_publish_returns() {
        let bus = bus();
        let inline: Vec<_> = (0..5).map(|i| recorder(&bus, &format!("inline-{i}"))).collect();
        let mut buffered: Vec<_> = (0..3).map(|i| bus.subscribe(&format!("buffered-{i}"))).collect();
        for event in 1..=3 {
            bus.publish(event).await;
            for seen in &inline {
                assert_eq!(
                    seen.lock().unwrap().last(),
                    Some(&event),
                    "inline handlers ran before publish returned"
                );
            }
        }
        for subscription in &mut buffered {
            for event in 1..=3 {
                assert_eq!(subscription.recv().await.as_deref(), Some(&event));
            }
        }
        assert_eq!(bus.stats(), BusStats { published: 3, ..BusStats::default() });
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_subscriber_breaks_neither_the_publisher_nor_the_others() {
        let bus = bus();
        let before = recorder(&bus, "before");
        bus.on_publish("panics-when-called", |_| panic!("boom"));
        bus.on_publish("panics-while-running", |_| Box::pin(async { panic!("boom") }));
        let after = recorder(&bus, "after");
        let mut buffered = bus.subscribe("buffered");
        bus.publish(7).await;
        bus.publish(8).await;
        assert_eq!(*before.lock().unwrap(), vec![7, 8]);
        assert_eq!(*after.lock().unwrap(), vec![7, 8]);
        assert_eq!(buffered.recv().await.as_deref(), Some(&7));
        assert_eq!(bus.stats().panicked, 4, "two handlers, two events");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_inline_subscriber_is_cut_off_at_the_timeout() {
        let bus = bus();
        bus.on_publish("stuck", |_| Box::pin(std::future::pending()));
        let quick = recorder(&bus, "quick");
        let started = tokio::time::Instant::now();
        bus.publish(1).await;
        assert_eq!(started.elapsed(), Duration::from_secs(1), "publish waited exactly the inline timeout");
        assert_eq!(*quick.lock().unwrap(), vec![1]);
        assert_eq!(bus.stats().timed_out, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lagging_subscriber_loses_the_oldest_events_and_they_are_counted() {
        let bus = bus();
        let mut slow = bus.subscribe("slow");
        let mut keeping_up = bus.subscribe("keeping-up");
        for event in 1..=10 {
            bus.publish(event).await;
            assert_eq!(keeping_up.recv().await.as_deref(), Some(&event));
        }
        // the buffer holds 4: events 1..=6 are gone, 7..=10 remain
        for event in 7..=10 {
            assert_eq!(slow.recv().await.as_deref(), Some(&event));
        }
        assert_eq!(bus.stats().lagged, 6);
        drop(bus);
        assert!(slow.recv().await.is_none(), "the subscription ends with the bus");
    }

    #[tokio::test(start_paused = true)]
    async fn next_reports_a_loss_once_then_carries_on() {
        let bus = bus();
        let mut told = bus.subscribe("told");
        for event in 1..=6 {
            bus.publish(event).await;
        }
        assert!(matches!(told.next().await, Received::Lagged(2)), "the loss is reported once");
        assert!(matches!(told.next().await, Received::Event(e) if *e == 3));
        drop(bus);
        for event in 4..=6 {
            assert!(matches!(told.next().await, Received::Event(e) if *e == event));
        }
        assert!(matches!(told.next().await, Received::Closed));
    }
}
