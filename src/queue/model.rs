//! A job as the API and the workers see it: its [`JobState`], progress and outcome.
//!
//! ```text
//!            submit                claim                 Ok
//!   ─────────► queued ───────────► running ─────────────► succeeded
//!                ▲  │ cancel        │  │ Err, attempts left
//!                │  ▼               │  ▼
//!                │ cancelled ◄──────┤ retrying ──(delay)──► running ...
//!                │        cancel    │
//!                └── retry (API) ── failed ◄── Err, last attempt / deadline
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::db::entities::job;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, waiting for a worker.
    Queued,
    /// A worker is running it.
    Running,
    /// An attempt failed; the next one waits for its delay.
    Retrying,
    /// Done.
    Succeeded,
    /// Its last attempt failed (or it was past its deadline).
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 6] =
        [Self::Queued, Self::Running, Self::Retrying, Self::Succeeded, Self::Failed, Self::Cancelled];

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state stored under `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the job is over (nothing will change it but a retry).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// What a running job has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    /// Units done (lines, rows, items).
    pub processed: u64,
    /// Units in all, when known.
    pub total: Option<u64>,
    /// What it is doing now.
    pub message: Option<String>,
}

/// A job, as the API answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: String,
    pub kind: String,
    pub state: JobState,
    #[schema(value_type = Object)]
    pub payload: Value,
    /// Attempts started so far.
    pub attempts: u32,
    pub max_attempts: u32,
    pub progress: Progress,
    /// processed / total in percent, when total is known.
    pub percent: Option<f64>,
    /// Units per second since the job started.
    pub rate_per_sec: Option<f64>,
    /// Seconds left at that rate, when total is known.
    pub eta_secs: Option<f64>,
    /// What the job returned.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// The last attempt's error.
    pub error: Option<String>,
    /// Cancellation was asked for and not yet honoured.
    pub cancel_requested: bool,
    /// The username that created it (`schedule:<name>` for a scheduled job).
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobView {
    /// The view of a stored job, with its rate and ETA as of `now`.
    pub fn from_model(row: job::Model, now: DateTime<Utc>) -> Self {
        let state = JobState::parse(&row.state).unwrap_or(JobState::Failed);
        let processed = u64::try_from(row.processed).unwrap_or(0);
        let total = row.total.and_then(|t| u64::try_from(t).ok());
        let percent =
            total.map(|t| if t == 0 { 100.0 } else { (processed as f64 * 100.0 / t as f64).min(100.0) });
        let end = row.finished_at.unwrap_or(now);
        let rate_per_sec = row.started_at.and_then(|started| {
            let secs = (end - started).num_milliseconds() as f64 / 1000.0;
            (secs > 0.0 && processed > 0).then(|| processed as f64 / secs)
        });
        let eta_secs = match (state, total, rate_per_sec) {
            (JobState::Running, Some(total), Some(rate)) if rate > 0.0 => {
                Some(total.saturating_sub(processed) as f64 / rate)
            }
            _ => None,
        };
        Self {
            id: row.id,
            kind: row.kind,
            state,
            payload: row.payload,
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            max_attempts: u32::try_from(row.max_attempts).unwrap_or(0),
            progress: Progress { processed, total, message: row.message },
            percent,
            rate_per_sec,
            eta_secs,
            result: row.result,
            error: row.last_error,
            cancel_requested: row.cancel_requested,
            created_by: row.created_by,
            created_at: row.created_at,
            updated_at: row.updated_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
        }
    }
}

/// What a job event says (`job.progress`, `job.finished`, `job.cancel`), on the
/// events exchange and on the node's job event bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum JobEvent {
    /// A running job's progress.
    #[serde(rename = "job.progress")]
    Progress { job_id: String, attempt: u32, progress: Progress },
    /// A job reached a state (terminal, or retrying).
    #[serde(rename = "job.finished")]
    Finished { job_id: String, state: JobState, error: Option<String> },
    /// Cancel the job wherever it runs.
    #[serde(rename = "job.cancel")]
    Cancel { job_id: String },
}

impl JobEvent {
    /// The job it is about.
    pub fn job_id(&self) -> &str {
        match self {
            Self::Progress { job_id, .. } | Self::Finished { job_id, .. } | Self::Cancel { job_id } => job_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
        assert_eq!(JobState::parse("done"), None);
        let terminal: Vec<_> = JobState::ALL.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [JobState::Succeeded, JobState::Failed, JobState::Cancelled]);
    }

    #[test]
    fn job_events_carry_their_type() {
        let event = JobEvent::Finished { job_id: "j".into(), state: JobState::Succeeded, error: None };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "job.finished");
        assert_eq!(serde_json::from_value::<JobEvent>(json).unwrap(), event);
    }
}
