//! [`Attempt`]: one delivery of a job, from claim to acknowledgement.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Pool;
use crate::metrics;
use crate::queue::handler::{JobContext, JobError, Reporter};
use crate::queue::model::{JobEvent, Progress};
use crate::queue::store::{Claim, Outcome};
use crate::queue::transport::{Delivery, Outgoing, Route};

/// How long a worker's hold on a job lasts without a heartbeat; a job whose
/// worker died is taken over at most this long after its last heartbeat.
pub const LEASE: Duration = Duration::from_secs(30);
/// How often a running job's lease is renewed (and its cancel flag read).
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a cancelled or overdue attempt has to stop before it is dropped.
pub const GRACE: Duration = Duration::from_secs(5);
/// Pause before a delivery the database could not take is given back.
const DB_PAUSE: Duration = Duration::from_secs(1);

/// The pool's limits, from `[queue]`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub job_timeout: Duration,
    pub progress_interval: Duration,
    /// `queue.retry_delays_ms`, as durations.
    pub retry_delays: Vec<Duration>,
}

impl Limits {
    /// The wait before retry `attempt` (1-based; the last delay repeats).
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let index = (attempt.max(1) as usize - 1).min(self.retry_delays.len().saturating_sub(1));
        self.retry_delays.get(index).copied().unwrap_or(Duration::from_secs(1))
    }
}

/// A work message's body.
#[derive(Debug, Deserialize)]
struct WorkMessage {
    v: u64,
    job_id: String,
}

/// One delivery being handled.
pub struct Attempt<'a> {
    pool: &'a Arc<Pool>,
    delivery: Delivery,
}

impl<'a> Attempt<'a> {
    /// Takes `delivery` on.
    pub fn new(pool: &'a Arc<Pool>, delivery: Delivery) -> Self {
        Self { pool, delivery }
    }

    /// Claims, runs, records and settles.
    pub async fn run(self) {
        let Self { pool, delivery } = self;
        let message = match serde_json::from_slice::<WorkMessage>(&delivery.body) {
            Ok(message) if message.v == 1 => message,
            _ => {
                tracing::warn!(message = ?delivery.id, bytes = delivery.body.len(), "undecodable job message dead-lettered");
                metrics::event_received("job.submitted", "undecodable");
                delivery.dead_letter().await;
                return;
            }
        };
        let job_id = message.job_id;
        let Some(guard) = pool.running.enter(&job_id) else {
            // another worker of this node runs it: look again when its lease could be over
            defer(pool, delivery, &job_id, LEASE).await;
            return;
        };
        let row = match pool.queue.store().claim(&job_id, &pool.node, LEASE).await {
            Ok(Claim::Claimed(row)) => row,
            Ok(Claim::Done(_) | Claim::Missing) => {
                delivery.ack().await;
                return;
            }
            Ok(Claim::Busy { until }) => {
                drop(guard);
                let wait = (until - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
                defer(pool, delivery, &job_id, wait.clamp(Duration::from_millis(100), LEASE)).await;
                return;
            }
            Err(err) => {
                tracing::warn!(job = %job_id, error = %err, "could not claim a job; it is given back");
                tokio::time::sleep(DB_PAUSE).await;
                drop(delivery);
                return;
            }
        };
        let kind = row.kind.clone();
        let attempt = u32::try_from(row.attempts).unwrap_or(u32::MAX);
        let max_attempts = u32::try_from(row.max_attempts).unwrap_or(1);
        let Some(handler) = pool.queue.handlers().get(&kind).cloned() else {
            let error = format!("no handler for job kind {kind:?} on this node");
            finish(pool, &job_id, &kind, Outcome::Failed { error, retry_in: None }, Duration::ZERO).await;
            delivery.dead_letter().await;
            return;
        };
        let reporter = Arc::new(DbReporter { pool: pool.clone(), job_id: job_id.clone(), attempt });
        let token = guard.token().clone();
        let ctx = JobContext::new(
            job_id.clone(),
            attempt,
            row.payload.clone(),
            row.checkpoint.clone(),
            token.clone(),
            reporter.clone(),
            pool.limits.progress_interval,
        );
        metrics::job_workers_busy(1.0);
        let started = Instant::now();
        tracing::info!(job = %job_id, kind = %kind, attempt, resumed = row.checkpoint.is_some(), "job started");
        let result = supervise(pool, &job_id, &token, handler.run(ctx)).await;
        metrics::job_workers_busy(-1.0);
        let elapsed = started.elapsed();
        let (outcome, dead) = match result {
            Ok(value) => (Outcome::Succeeded(value), false),
            Err(JobError::LeaseLost) => {
                tracing::warn!(job = %job_id, "job taken over by another worker; this attempt stops");
                delivery.ack().await;
                return;
            }
            Err(JobError::Cancelled)
                if !pool.queue.store().cancel_requested(&job_id).await.unwrap_or(true) =>
            {
                // stopped by its deadline, not by a user
                let error = format!(
                    "the job ran past queue.job_timeout_secs ({} s)",
                    pool.limits.job_timeout.as_secs()
                );
                retry_or_fail(pool, attempt, max_attempts, error)
            }
            Err(JobError::Cancelled) => (Outcome::Cancelled, false),
            Err(JobError::Failed(error)) => retry_or_fail(pool, attempt, max_attempts, error),
            Err(JobError::Fatal(error)) => (Outcome::Failed { error, retry_in: None }, true),
        };
        if !finish(pool, &job_id, &kind, outcome, elapsed).await {
            // not recorded: give the delivery back for a later attempt
            tokio::time::sleep(DB_PAUSE).await;
            drop(delivery);
            return;
        }
        drop(guard);
        if dead {
            delivery.dead_letter().await;
        } else {
            delivery.ack().await;
        }
    }
}

fn retry_or_fail(pool: &Pool, attempt: u32, max_attempts: u32, error: String) -> (Outcome, bool) {
    if attempt < max_attempts {
        (Outcome::Failed { error, retry_in: Some(pool.limits.retry_delay(attempt)) }, false)
    } else {
        (Outcome::Failed { error, retry_in: None }, true)
    }
}

/// Runs the handler with the lease heartbeat and the job's deadline.
async fn supervise(
    pool: &Arc<Pool>,
    job_id: &str,
    token: &tokio_util::sync::CancellationToken,
    work: BoxFuture<'static, Result<Value, JobError>>,
) -> Result<Value, JobError> {
    let mut work = work;
    let deadline = tokio::time::sleep(pool.limits.job_timeout);
    tokio::pin!(deadline);
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            result = &mut work => return result,
            () = &mut deadline, if !token.is_cancelled() => {
                tracing::warn!(job = %job_id, "job past its deadline; cancelling it");
                token.cancel();
            }
            _ = heartbeat.tick() => {
                match pool.queue.store().renew(job_id, &pool.node, LEASE).await {
                    Ok(held) if !held.held => return Err(JobError::LeaseLost),
                    Ok(held) if held.cancel_requested => token.cancel(),
                    Ok(_) => {}
                    Err(err) => tracing::warn!(job = %job_id, error = %err, "could not renew a job's lease"),
                }
            }
        }
        if token.is_cancelled() {
            // it has GRACE to stop by itself
            return match tokio::time::timeout(GRACE, &mut work).await {
                Ok(result) => result,
                Err(_) => Err(JobError::Cancelled),
            };
        }
    }
}

/// Records an outcome; false when it could not be written.
async fn finish(pool: &Pool, job_id: &str, kind: &str, outcome: Outcome, elapsed: Duration) -> bool {
    let label = match &outcome {
        Outcome::Succeeded(_) => "succeeded",
        Outcome::Failed { retry_in: Some(_), .. } => "retrying",
        Outcome::Failed { retry_in: None, .. } => "failed",
        Outcome::Cancelled => "cancelled",
    };
    match pool.queue.store().finish(job_id, Some(&pool.node), outcome).await {
        Ok(recorded) => {
            metrics::job_finished(kind, label, elapsed);
            tracing::info!(job = %job_id, kind = %kind, outcome = label, recorded, elapsed_ms = elapsed.as_millis() as u64, "job attempt ended");
            pool.queue.outbox_written();
            true
        }
        Err(err) => {
            tracing::warn!(job = %job_id, error = %err, "could not record a job's outcome; the delivery is given back");
            false
        }
    }
}

/// Puts a delivery off for `wait` through the retry queue.
async fn defer(pool: &Pool, delivery: Delivery, job_id: &str, wait: Duration) {
    metrics::job_deferred();
    let message = Outgoing {
        id: delivery.id.clone().unwrap_or_else(|| job_id.to_owned()),
        route: Route::Retry(wait),
        body: delivery.body.clone(),
    };
    match pool.broker.publish(message).await {
        Ok(()) => delivery.ack().await,
        Err(err) => {
            tracing::warn!(job = %job_id, error = %err, "could not put a delivery off; it is given back");
            tokio::time::sleep(DB_PAUSE).await;
            drop(delivery);
        }
    }
}

/// Progress to the database (throttled by the context) and as `job.progress` events.
struct DbReporter {
    pool: Arc<Pool>,
    job_id: String,
    attempt: u32,
}

impl Reporter for DbReporter {
    fn report(
        &self,
        progress: Progress,
        checkpoint: Option<Value>,
        _force: bool,
    ) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(async move {
            let held = self
                .pool
                .queue
                .store()
                .report(&self.job_id, &self.pool.node, &progress, checkpoint.as_ref(), LEASE)
                .await
                .map_err(|e| JobError::Failed(format!("could not record progress: {e}")))?;
            if !held.held {
                return Err(JobError::LeaseLost);
            }
            let event = JobEvent::Progress { job_id: self.job_id.clone(), attempt: self.attempt, progress };
            let body = json!({
                "id": uuid::Uuid::new_v4().to_string(),
                "type": "job.progress",
                "aggregate_id": self.job_id,
                "payload": event,
            });
            let message = Outgoing {
                id: body["id"].as_str().unwrap_or_default().to_owned(),
                route: Route::Event("job.progress".into()),
                body: Bytes::from(body.to_string()),
            };
            // progress events are best effort: the database has the truth
            let _ = self.pool.broker.publish(message).await;
            if held.cancel_requested {
                return Err(JobError::Cancelled);
            }
            Ok(())
        })
    }
}
