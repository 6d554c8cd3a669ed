//! [`JobHandler`]: what a job kind does, registered at start in [`Handlers`]. A
//! handler gets a [`JobContext`]: its payload, its last checkpoint (a redelivered
//! job resumes from it), progress reporting and a cancellation token.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::model::Progress;

/// Why an attempt did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JobError {
    /// Cancellation was asked for (or the deadline passed) and the handler stopped.
    #[error("cancelled")]
    Cancelled,
    /// Worth another attempt (a dependency failed).
    #[error("{0}")]
    Failed(String),
    /// Will fail the same way again: no retry.
    #[error("{0}")]
    Fatal(String),
    /// Another worker took the job over (this one was presumed dead).
    #[error("the job was taken over by another worker")]
    LeaseLost,
}

/// Per-field errors of a payload (422).
pub type FieldErrors = BTreeMap<String, String>;

/// One job kind.
pub trait JobHandler: Send + Sync + 'static {
    /// Its name in `POST /jobs` (`import_catalog`, ...).
    fn kind(&self) -> &'static str;
    /// Checks a payload before the job is accepted.
    fn validate(&self, payload: &Value) -> Result<(), FieldErrors>;
    /// Runs one attempt.
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<Value, JobError>>;
}

/// The registered kinds.
#[derive(Clone, Default)]
pub struct Handlers {
    by_kind: HashMap<&'static str, Arc<dyn JobHandler>>,
}

impl Handlers {
    /// Registers `handler` under its kind (a second one of a kind replaces the first).
    pub fn register(&mut self, handler: impl JobHandler) {
        self.by_kind.insert(handler.kind(), Arc::new(handler));
    }
    /// Adds every kind of `other`.
    pub fn extend(&mut self, other: Handlers) {
        self.by_kind.extend(other.by_kind);
    }
    /// The handler of `kind`.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn JobHandler>> {
        self.by_kind.get(kind)
    }
    /// Every registered kind, sorted.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds: Vec<_> = self.by_kind.keys().copied().collect();
        kinds.sort_unstable();
        kinds
    }
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kinds()).finish()
    }
}

/// Where a running job's progress and checkpoints go (the worker implements it:
/// the database, throttled, and the `job.progress` event).
pub trait Reporter: Send + Sync + 'static {
    /// Records progress; `checkpoint` is always written, plain progress at most
    /// every `queue.progress_interval_ms`. Err when the job must stop.
    fn report(
        &self,
        progress: Progress,
        checkpoint: Option<Value>,
        force: bool,
    ) -> BoxFuture<'_, Result<(), JobError>>;
}

/// What a running attempt can use.
pub struct JobContext {
    pub job_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub payload: Value,
    /// The last checkpoint an earlier attempt saved.
    pub checkpoint: Option<Value>,
    cancel: CancellationToken,
    reporter: Arc<dyn Reporter>,
    throttle: Mutex<Throttle>,
}

struct Throttle {
    every: Duration,
    last: Option<Instant>,
}

impl JobContext {
    /// A context reporting through `reporter` at most every `interval`.
    pub fn new(
        job_id: String,
        attempt: u32,
        payload: Value,
        checkpoint: Option<Value>,
        cancel: CancellationToken,
        reporter: Arc<dyn Reporter>,
        interval: Duration,
    ) -> Self {
        let throttle = Mutex::new(Throttle { every: interval, last: None });
        Self { job_id, attempt, payload, checkpoint, cancel, reporter, throttle }
    }

    /// Fires when the job is to stop (cancelled, deadline).
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Err(Cancelled) once cancellation was asked for.
    pub fn check(&self) -> Result<(), JobError> {
        if self.cancel.is_cancelled() { Err(JobError::Cancelled) } else { Ok(()) }
    }

    /// Reports progress (written at most every `queue.progress_interval_ms`).
    pub async fn progress(
        &self,
        processed: u64,
        total: Option<u64>,
        message: Option<String>,
    ) -> Result<(), JobError> {
        self.check()?;
        let due = {
            let mut throttle = self.throttle.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let due = throttle.last.is_none_or(|last| now.duration_since(last) >= throttle.every);
            if due {
                throttle.last = Some(now);
            }
            due
        };
        if due {
            self.reporter.report(Progress { processed, total, message }, None, false).await?;
        }
        self.check()
    }

    /// Saves a checkpoint with the progress it stands for (always written): a
    /// later attempt starts from it.
    pub async fn checkpoint(&self, progress: Progress, checkpoint: Value) -> Result<(), JobError> {
        self.check()?;
        if let Ok(mut throttle) = self.throttle.lock() {
            throttle.last = Some(Instant::now());
        }
        self.reporter.report(progress, Some(checkpoint), true).await?;
        self.check()
    }
}

/// Reads a field of an object payload, for validators.
pub fn field<'a>(payload: &'a Value, name: &str) -> Option<&'a Value> {
    payload.as_object().and_then(|o| o.get(name))
}

/// Refuses fields a kind does not know, and a payload that is not an object.
pub fn only_fields(payload: &Value, known: &[&str]) -> Result<(), FieldErrors> {
    let Some(object) = payload.as_object() else {
        return Err(FieldErrors::from([("payload".to_owned(), "must be a JSON object".to_owned())]));
    };
    let unknown: FieldErrors = object
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| (format!("payload.{k}"), format!("unknown field; known: {}", known.join(", "))))
        .collect();
    if unknown.is_empty() { Ok(()) } else { Err(unknown) }
}
