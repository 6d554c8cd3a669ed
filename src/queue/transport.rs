//! What the queue's parts send and receive, whichever carries it: RabbitMQ through
//! the [`QueueBridge`](super::bridge) or, with `queue.amqp_url` unset, the
//! in-process [`LocalBroker`](super::local).
//!
//! A [`Delivery`] is settled once: [`Delivery::ack`] after its effect is committed,
//! [`Delivery::dead_letter`] for a message that can never succeed. A delivery
//! dropped unsettled (its worker died holding it) goes back to its queue, as an
//! unacknowledged AMQP message does when its channel closes.

use std::time::Duration;

use bytes::Bytes;

/// Where a published message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The work queue (a job to run now).
    Work,
    /// The retry queue of this delay; it dead-letters back to the work queue when the delay has passed.
    Retry(Duration),
    /// The dead-letter queue (a job past its last attempt, or an undecodable message).
    DeadLetter,
    /// The events exchange under this routing key (`item.changed`, `job.progress`, ...).
    Event(String),
}

/// A message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The message id consumers deduplicate by (an outbox row's event id, a job id).
    pub id: String,
    pub route: Route,
    /// JSON.
    pub body: Bytes,
}

/// Why a publish was not confirmed; the message may or may not have reached the
/// broker, so the caller keeps it and publishes again (consumers deduplicate).
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// No connection to the broker now (or the `amqp` breaker is open).
    #[error("the message broker is unavailable: {0}")]
    Unavailable(String),
    /// The broker refused the message (a negative confirm).
    #[error("the message broker refused the message")]
    Nacked,
    /// No confirm arrived in time.
    #[error("the message broker did not confirm the message in time")]
    Timeout,
}

/// How a delivery is settled with whatever carried it.
pub trait Settle: Send + Sync + 'static {
    /// Done: remove the message.
    fn ack(self: Box<Self>) -> futures::future::BoxFuture<'static, ()>;
    /// Never deliverable: to the dead-letter queue.
    fn dead_letter(self: Box<Self>) -> futures::future::BoxFuture<'static, ()>;
    /// Give it back to its queue now (on drop without settling).
    fn requeue(self: Box<Self>);
}

/// A received message.
pub struct Delivery {
    /// The message id, if the publisher set one.
    pub id: Option<String>,
    pub body: Bytes,
    /// Whether the broker delivered it before (its first consumer did not settle it).
    pub redelivered: bool,
    settle: Option<Box<dyn Settle>>,
}

impl Delivery {
    /// A delivery settled through `settle`.
    pub fn new(id: Option<String>, body: Bytes, redelivered: bool, settle: Box<dyn Settle>) -> Self {
        Self { id, body, redelivered, settle: Some(settle) }
    }

    /// Acknowledges it: call only once its effect is committed.
    pub async fn ack(mut self) {
        if let Some(settle) = self.settle.take() {
            settle.ack().await;
        }
    }

    /// Forgets how to settle it (a delivery that was never handed out): dropping
    /// it then gives nothing back.
    pub fn disarm(mut self) {
        self.settle = None;
    }

    /// Sends it to the dead-letter queue.
    pub async fn dead_letter(mut self) {
        if let Some(settle) = self.settle.take() {
            settle.dead_letter().await;
        }
    }

    /// Drops it without giving it back: for a carrier that could not take it back
    /// (giving it back again would try the same thing again, without end).
    pub fn abandon(mut self) {
        self.settle.take();
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(settle) = self.settle.take() {
            settle.requeue();
        }
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.id)
            .field("bytes", &self.body.len())
            .field("redelivered", &self.redelivered)
            .finish()
    }
}

/// The queue names under `queue.prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Direct exchange for jobs: `<prefix>.jobs`.
    pub jobs_exchange: String,
    /// Quorum work queue: `<prefix>.work`.
    pub work_queue: String,
    /// Dead-letter queue: `<prefix>.dead`.
    pub dead_queue: String,
    /// Topic exchange for events: `<prefix>.events`.
    pub events_exchange: String,
    prefix: String,
}

impl Names {
    /// The names under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            jobs_exchange: format!("{prefix}.jobs"),
            work_queue: format!("{prefix}.work"),
            dead_queue: format!("{prefix}.dead"),
            events_exchange: format!("{prefix}.events"),
            prefix: prefix.to_owned(),
        }
    }

    /// The retry queue of `delay`: `<prefix>.retry.<ms>`.
    pub fn retry_queue(&self, delay: Duration) -> String {
        format!("{}.retry.{}", self.prefix, delay.as_millis())
    }
}

/// The receiving ends a carrier delivers into: jobs for the workers, events for
/// the node's event consumer. Bounded: a full channel makes the carrier wait
/// (RabbitMQ holds the rest under the prefetch limit).
pub struct Consumers {
    pub work: tokio::sync::mpsc::Receiver<Delivery>,
    pub events: tokio::sync::mpsc::Receiver<Delivery>,
}
