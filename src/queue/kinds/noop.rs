//! `noop_sleep`: a controllable job for tests (registered only with
//! `queue.test_jobs`): `steps` steps of `step_ms` each, a checkpoint after every
//! step, failing its first `fail_attempts` attempts.
//!
//! Payload: `{"steps": 10, "step_ms": 20, "fail_attempts": 0, "fatal": false}`.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::queue::handler::{FieldErrors, JobContext, JobError, JobHandler, only_fields};
use crate::queue::model::Progress;

/// The `noop_sleep` kind.
pub struct NoopSleep;

const MAX_STEPS: u64 = 100_000;
const MAX_STEP_MS: u64 = 60_000;

#[derive(Deserialize)]
struct Payload {
    #[serde(default = "one")]
    steps: u64,
    #[serde(default)]
    step_ms: u64,
    #[serde(default)]
    fail_attempts: u32,
    #[serde(default)]
    fatal: bool,
}

fn one() -> u64 {
    1
}

impl JobHandler for NoopSleep {
    fn kind(&self) -> &'static str {
        "noop_sleep"
    }

    fn validate(&self, payload: &Value) -> Result<(), FieldErrors> {
        only_fields(payload, &["steps", "step_ms", "fail_attempts", "fatal"])?;
        let parsed: Payload = serde_json::from_value(payload.clone())
            .map_err(|e| FieldErrors::from([("payload".to_owned(), e.to_string())]))?;
        let mut errors = FieldErrors::new();
        if !(1..=MAX_STEPS).contains(&parsed.steps) {
            errors.insert("payload.steps".into(), format!("must be between 1 and {MAX_STEPS}"));
        }
        if parsed.step_ms > MAX_STEP_MS {
            errors.insert("payload.step_ms".into(), format!("must be at most {MAX_STEP_MS}"));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<Value, JobError>> {
        Box::pin(async move {
            let payload: Payload =
                serde_json::from_value(ctx.payload.clone()).map_err(|e| JobError::Fatal(e.to_string()))?;
            let start =
                ctx.checkpoint.as_ref().and_then(|c| c.get("step")).and_then(Value::as_u64).unwrap_or(0);
            for step in start..payload.steps {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(payload.step_ms)) => {}
                    () = ctx.cancelled().cancelled() => return Err(JobError::Cancelled),
                }
                let done = step + 1;
                let progress = Progress { processed: done, total: Some(payload.steps), message: None };
                ctx.checkpoint(progress, json!({ "step": done })).await?;
            }
            if ctx.attempt <= payload.fail_attempts {
                let error = format!(
                    "failing attempt {} of the first {} on purpose",
                    ctx.attempt, payload.fail_attempts
                );
                return Err(if payload.fatal { JobError::Fatal(error) } else { JobError::Failed(error) });
            }
            Ok(json!({ "steps": payload.steps, "resumed_from": start, "attempt": ctx.attempt }))
        })
    }
}
