//! [`LocalBroker`]: the embedded carrier (no `queue.amqp_url`). Jobs and events
//! go through bounded in-process channels with the same delivery rules as over
//! RabbitMQ: a delivery dropped unsettled is delivered again, a retry waits its
//! delay, a dead letter is counted and logged.
//!
//! What it cannot do: reach other nodes, or keep a message across a restart. A
//! job's state is in the database all along, so at start the node hands its
//! workers every unfinished job no live worker holds
//! ([`JobStore::orphans`](super::store::JobStore::orphans)).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::transport::{Consumers, Delivery, Outgoing, PublishError, Route, Settle};
use crate::metrics;

/// The in-process carrier.
#[derive(Clone, Debug)]
pub struct LocalBroker {
    work: mpsc::Sender<Delivery>,
    events: mpsc::Sender<Delivery>,
    dead: Arc<AtomicU64>,
    published_events: Arc<AtomicU64>,
}

/// Events waiting for the node's consumer before publishing waits.
const EVENTS_CAPACITY: usize = 4096;

impl LocalBroker {
    /// A broker holding at most `work_capacity` waiting jobs.
    pub fn new(work_capacity: usize) -> (Self, Consumers) {
        let (work, work_rx) = mpsc::channel(work_capacity.max(1));
        let (events, events_rx) = mpsc::channel(EVENTS_CAPACITY);
        let broker = Self { work, events, dead: Arc::default(), published_events: Arc::default() };
        (broker, Consumers { work: work_rx, events: events_rx })
    }

    /// Hands `message` on; fails at once when its channel is full or closed (the
    /// outbox keeps it and the relay tries again).
    pub async fn publish(&self, message: Outgoing) -> Result<(), PublishError> {
        let Outgoing { id, route, body } = message;
        metrics::amqp_published(route_label(&route));
        match route {
            Route::Work => self.deliver_work(id, body, false),
            Route::Retry(delay) => {
                let broker = self.clone();
                // the wait is this process's; a restart loses it and the orphan
                // scan at start hands the job out again
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Err(err) = broker.deliver_work(id.clone(), body, false) {
                        tracing::warn!(message = %id, error = %err, "a delayed job could not be queued; it runs at the next start");
                    }
                });
                Ok(())
            }
            Route::DeadLetter => {
                self.dead.fetch_add(1, Ordering::Relaxed);
                metrics::amqp_dead_lettered();
                tracing::warn!(message = %id, "message dead-lettered");
                Ok(())
            }
            Route::Event(_) => {
                let settle = Box::new(Noop);
                self.events.try_send(Delivery::new(Some(id), body, false, settle)).map_err(|e| {
                    let reason = full_or_closed(&e);
                    e.into_inner().disarm();
                    PublishError::Unavailable(format!("the event channel is {reason}"))
                })?;
                self.published_events.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// Events published so far.
    pub fn events_published(&self) -> u64 {
        self.published_events.load(Ordering::Relaxed)
    }

    /// Messages dead-lettered so far.
    pub fn dead_lettered(&self) -> u64 {
        self.dead.load(Ordering::Relaxed)
    }

    fn deliver_work(&self, id: String, body: Bytes, redelivered: bool) -> Result<(), PublishError> {
        let settle = Box::new(LocalSettle { broker: self.clone(), id: id.clone(), body: body.clone() });
        self.work.try_send(Delivery::new(Some(id), body, redelivered, settle)).map_err(|e| {
            let reason = full_or_closed(&e);
            // dropped unsettled, it would be given back through this same call, without end
            e.into_inner().abandon();
            PublishError::Unavailable(format!("the local job queue is {reason}"))
        })
    }
}

fn full_or_closed<T>(error: &mpsc::error::TrySendError<T>) -> &'static str {
    match error {
        mpsc::error::TrySendError::Full(_) => "full",
        mpsc::error::TrySendError::Closed(_) => "closed",
    }
}

/// The metric label of a route.
pub fn route_label(route: &Route) -> &'static str {
    match route {
        Route::Work => "work",
        Route::Retry(_) => "retry",
        Route::DeadLetter => "dead",
        Route::Event(_) => "event",
    }
}

struct LocalSettle {
    broker: LocalBroker,
    id: String,
    body: Bytes,
}

impl Settle for LocalSettle {
    fn ack(self: Box<Self>) -> BoxFuture<'static, ()> {
        metrics::amqp_acked();
        futures::future::ready(()).boxed()
    }

    fn dead_letter(self: Box<Self>) -> BoxFuture<'static, ()> {
        let broker = self.broker.clone();
        let message = Outgoing { id: self.id.clone(), route: Route::DeadLetter, body: self.body.clone() };
        async move {
            let _ = broker.publish(message).await;
        }
        .boxed()
    }

    fn requeue(self: Box<Self>) {
        metrics::amqp_redelivered();
        if let Err(err) = self.broker.deliver_work(self.id.clone(), self.body.clone(), true) {
            tracing::warn!(message = %self.id, error = %err, "an unsettled job could not be queued again; it runs at the next start");
        }
    }
}

/// Events need no settling in process.
struct Noop;

impl Settle for Noop {
    fn ack(self: Box<Self>) -> BoxFuture<'static, ()> {
        futures::future::ready(()).boxed()
    }
    fn dead_letter(self: Box<Self>) -> BoxFuture<'static, ()> {
        futures::future::ready(()).boxed()
    }
    fn requeue(self: Box<Self>) {}
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn job(id: &str, route: Route) -> Outgoing {
        Outgoing { id: id.into(), route, body: Bytes::from_static(b"{}") }
    }

    #[tokio::test]
    async fn an_unsettled_delivery_comes_back_redelivered_and_an_acked_one_does_not() {
        let (broker, mut consumers) = LocalBroker::new(8);
        broker.publish(job("a", Route::Work)).await.unwrap();
        let first = consumers.work.recv().await.unwrap();
        assert_eq!((first.id.as_deref(), first.redelivered), (Some("a"), false));
        drop(first);
        let again = consumers.work.recv().await.unwrap();
        assert_eq!((again.id.as_deref(), again.redelivered), (Some("a"), true));
        again.ack().await;
        assert!(consumers.work.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_arrives_after_its_delay() {
        let (broker, mut consumers) = LocalBroker::new(8);
        broker.publish(job("r", Route::Retry(Duration::from_secs(10)))).await.unwrap();
        tokio::task::yield_now().await;
        assert!(consumers.work.try_recv().is_err());
        tokio::time::advance(Duration::from_secs(10)).await;
        let delivery = consumers.work.recv().await.unwrap();
        assert_eq!(delivery.id.as_deref(), Some("r"));
        delivery.ack().await;
    }

    #[tokio::test]
    async fn a_delivery_dropped_after_its_queue_closed_is_let_go() {
        let (broker, mut consumers) = LocalBroker::new(8);
        broker.publish(job("a", Route::Work)).await.unwrap();
        let delivery = consumers.work.recv().await.unwrap();
        drop(consumers);
        // giving it back fails (closed); it must not be given back again and again
        drop(delivery);
        assert!(matches!(broker.publish(job("b", Route::Work)).await, Err(PublishError::Unavailable(_))));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_dead_letter_is_counted() {
        let (broker, mut consumers) = LocalBroker::new(1);
        broker.publish(job("a", Route::Work)).await.unwrap();
        assert!(matches!(broker.publish(job("b", Route::Work)).await, Err(PublishError::Unavailable(_))));
        let delivery = consumers.work.recv().await.unwrap();
        delivery.dead_letter().await;
        assert_eq!(broker.dead_lettered(), 1);
        assert!(consumers.work.try_recv().is_err());
    }
}
