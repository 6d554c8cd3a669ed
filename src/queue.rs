//! Jobs and events: the QueueBridge to RabbitMQ (or the in-process
//! [`LocalBroker`](local::LocalBroker) when `queue.amqp_url` is unset), the outbox
//! relay, the JobWorker pool and the job schedules, under one `child_spec()` in
//! [`tree`].
//!
//! - [`store`]: the `jobs` table; every state change with the outbox rows announcing it.
//! - [`handler`]: the [`JobHandler`](handler::JobHandler) trait and the context a job runs with.
//! - [`kinds`]: the job kinds (`import_catalog`, `backup`, ...).
//! - [`transport`]: what is published and delivered; [`broker`] picks the carrier.
//! - [`relay`]: publishes the outbox; [`worker`]: runs jobs; [`consumer`]: feeds received events to the node.
//! - [`schedule`]: cron schedules, each tick once across all nodes.

pub mod bridge;
pub mod broker;
pub mod consumer;
pub mod handler;
pub mod kinds;
pub mod local;
pub mod model;
pub mod relay;
pub mod schedule;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transport;
pub mod tree;
pub mod worker;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Notify;

use crate::config::Settings;
use crate::events::{self, Bus};
use crate::metrics;
use handler::{FieldErrors, Handlers};
use model::{JobEvent, JobView};
use store::{JobStore, NewJob, StoreError};

/// The node's job events (`job.progress`, `job.finished`, `job.cancel`) from
/// whichever node the job runs on.
pub type JobEvents = Bus<JobEvent>;

/// Why a job request was refused.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("unknown job kind {kind:?}; known kinds: {known}")]
    UnknownKind { kind: String, known: String },
    #[error("the job payload is invalid")]
    Invalid(FieldErrors),
    #[error("the job payload is {size} bytes; at most {max} are accepted (queue.max_payload_bytes)")]
    PayloadTooLarge { size: usize, max: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What handlers reach of the queue: submit, read, cancel, retry, watch.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    store: JobStore,
    handlers: Handlers,
    events: JobEvents,
    outbox_written: Arc<Notify>,
    max_attempts: u32,
    max_payload_bytes: usize,
    embedded: bool,
    schedules: schedule::Schedules,
}

impl Queue {
    /// The queue of a node with these settings and job kinds; `outbox_written`
    /// wakes the relay.
    pub fn new(
        settings: &Settings,
        store: JobStore,
        handlers: Handlers,
        outbox_written: Arc<Notify>,
    ) -> Self {
        let inner = Inner {
            store,
            handlers,
            events: Bus::new("job_events", events::DEFAULT_BUFFER, events::DEFAULT_INLINE_TIMEOUT),
            outbox_written,
            max_attempts: settings.queue.max_attempts,
            max_payload_bytes: settings.queue.max_payload_bytes,
            embedded: !settings.queue.uses_amqp(),
            schedules: schedule::Schedules::from_settings(&settings.queue),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Validates and creates a job (`false`: an idempotent repeat answered with the first job).
    pub async fn submit(
        &self,
        kind: &str,
        payload: Value,
        created_by: &str,
        idempotency_key: Option<String>,
    ) -> Result<(JobView, bool), QueueError> {
        let handler = self.inner.handlers.get(kind).ok_or_else(|| QueueError::UnknownKind {
            kind: kind.to_owned(),
            known: self.inner.handlers.kinds().join(", "),
        })?;
        let size = serde_json::to_vec(&payload).map(|b| b.len()).unwrap_or(usize::MAX);
        if size > self.inner.max_payload_bytes {
            return Err(QueueError::PayloadTooLarge { size, max: self.inner.max_payload_bytes });
        }
        handler.validate(&payload).map_err(QueueError::Invalid)?;
        let new = NewJob {
            kind: handler.kind().to_owned(),
            payload,
            created_by: created_by.to_owned(),
            idempotency_key,
            max_attempts: self.inner.max_attempts,
        };
        let answer = self.inner.store.submit(new).await?;
        if answer.1 {
            metrics::job_submitted(handler.kind());
            self.outbox_written();
        }
        Ok(answer)
    }

    /// Cancels a job (see [`JobStore::cancel`]).
    pub async fn cancel(&self, id: &str) -> Result<JobView, QueueError> {
        let view = self.inner.store.cancel(id).await?;
        self.outbox_written();
        Ok(view)
    }

    /// Queues a failed job again.
    pub async fn retry(&self, id: &str) -> Result<JobView, QueueError> {
        let view = self.inner.store.retry(id).await?;
        self.outbox_written();
        Ok(view)
    }

    /// The jobs table.
    pub fn store(&self) -> &JobStore {
        &self.inner.store
    }

    /// The registered kinds.
    pub fn handlers(&self) -> &Handlers {
        &self.inner.handlers
    }

    /// Job events as they reach this node.
    pub fn events(&self) -> &JobEvents {
        &self.inner.events
    }

    /// Wakes the relay: something was appended to the outbox.
    pub fn outbox_written(&self) {
        self.inner.outbox_written.notify_one();
    }

    /// The relay's wake-up.
    pub fn outbox_signal(&self) -> &Arc<Notify> {
        &self.inner.outbox_written
    }

    /// Attempts a new job gets.
    pub fn max_attempts(&self) -> u32 {
        self.inner.max_attempts
    }

    /// The configured schedules.
    pub fn schedules(&self) -> &schedule::Schedules {
        &self.inner.schedules
    }

    /// Whether jobs and events stay in this process (no `queue.amqp_url`).
    pub fn embedded(&self) -> bool {
        self.inner.embedded
    }
}
