//! What several kinds share: reading payload fields strictly, and a checkpoint
//! written inside the transaction of the work it stands for.

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use serde_json::Value;

use crate::db::entities::job;
use crate::queue::handler::{FieldErrors, JobError, field};
use crate::queue::model::Progress;

/// Most items or lines per batch a payload may ask for.
pub const MAX_BATCH_SIZE: u64 = 100_000;

/// An optional whole number field within `range`; a wrong value is recorded in `errors`.
pub fn optional_u64(
    payload: &Value,
    name: &str,
    range: std::ops::RangeInclusive<u64>,
    errors: &mut FieldErrors,
) -> Option<u64> {
    let value = field(payload, name)?;
    match value.as_u64().filter(|n| range.contains(n)) {
        Some(n) => Some(n),
        None => {
            let message = format!("must be a whole number between {} and {}", range.start(), range.end());
            errors.insert(format!("payload.{name}"), message);
            None
        }
    }
}

/// An optional positive number field at most `max`; a wrong value is recorded in `errors`.
pub fn optional_positive(payload: &Value, name: &str, max: f64, errors: &mut FieldErrors) -> Option<f64> {
    let value = field(payload, name)?;
    match value.as_f64().filter(|n| *n > 0.0 && *n <= max) {
        Some(n) => Some(n),
        None => {
            errors.insert(
                format!("payload.{name}"),
                format!("must be a number greater than 0 and at most {max}"),
            );
            None
        }
    }
}

/// An optional string field; a value of another type is recorded in `errors`.
pub fn optional_str<'a>(payload: &'a Value, name: &str, errors: &mut FieldErrors) -> Option<&'a str> {
    let value = field(payload, name)?;
    if value.is_null() {
        return None;
    }
    match value.as_str() {
        Some(text) => Some(text),
        None => {
            errors.insert(format!("payload.{name}"), "must be a string".to_owned());
            None
        }
    }
}

/// `Ok` when no error was recorded.
pub fn finish(errors: FieldErrors) -> Result<(), FieldErrors> {
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// A payload refused at run time (it passed `validate` where it was submitted, but
/// not here: another node, a file gone): it will fail the same way again.
pub fn fatal_payload(errors: &FieldErrors) -> JobError {
    let reasons: Vec<String> = errors.iter().map(|(field, message)| format!("{field}: {message}")).collect();
    JobError::Fatal(format!("the payload is invalid: {}", reasons.join("; ")))
}

/// Saves a job's checkpoint and progress through `conn`, normally the transaction
/// of the batch the checkpoint stands for, so that both commit together or not at
/// all. The write is fenced by the attempt number: it only lands while attempt
/// `attempt` of the job is the one running (a worker that takes a job over counts
/// a new attempt), and answers `Err(LeaseLost)` otherwise, for the caller to roll
/// its transaction back.
pub async fn save_checkpoint_in<C: ConnectionTrait>(
    conn: &C,
    job_id: &str,
    attempt: u32,
    progress: &Progress,
    checkpoint: &Value,
) -> Result<(), CheckpointError> {
    let updated = job::Entity::update_many()
        .col_expr(job::Column::Checkpoint, Expr::value(checkpoint.clone()))
        .col_expr(job::Column::Processed, Expr::value(i64::try_from(progress.processed).unwrap_or(i64::MAX)))
        .col_expr(job::Column::Total, Expr::value(progress.total.and_then(|t| i64::try_from(t).ok())))
        .col_expr(job::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::State.eq("running"))
        .filter(job::Column::Attempts.eq(i32::try_from(attempt).unwrap_or(i32::MAX)))
        .exec(conn)
        .await?;
    if updated.rows_affected == 0 {
        return Err(CheckpointError::Superseded);
    }
    Ok(())
}

/// Why a checkpoint was not saved.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The job is no longer running this attempt.
    #[error("the job was taken over by another worker")]
    Superseded,
    #[error("could not save the checkpoint: {0}")]
    Database(#[from] DbErr),
}

impl From<CheckpointError> for JobError {
    fn from(error: CheckpointError) -> Self {
        match error {
            CheckpointError::Superseded => JobError::LeaseLost,
            CheckpointError::Database(err) => {
                JobError::Failed(format!("could not save the checkpoint: {err}"))
            }
        }
    }
}
