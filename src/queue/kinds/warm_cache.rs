//! `warm_cache`: the cache warm-up ([`crate::explore::warm`]: the first page of
//! every group and category, categories, trending and the most viewed items'
//! details) as a job, e.g. on a schedule.
//!
//! Payload: `{}`. Progress counts the reads (the total is known once the
//! categories are read). Cancellation stops it between reads (what was loaded
//! stays cached). It succeeds when any read did (a failed read is counted and the
//! warm-up goes on); it fails, to be retried, when every read failed.
//!
//! Result: `{"pages", "items", "errors", "elapsed", "cache_enabled"}` (with the
//! cache disabled the reads go to the database and nothing is kept).

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::support::finish;
use crate::explore::cached::CachedExplore;
use crate::explore::warm::{self, WarmProgress};
use crate::queue::handler::{FieldErrors, JobContext, JobError, JobHandler, only_fields};

/// The `warm_cache` kind.
#[derive(Clone)]
pub struct WarmCache {
    cached: CachedExplore,
}

impl WarmCache {
    /// The kind over the node's cached Explore reads.
    pub fn new(cached: CachedExplore) -> Self {
        Self { cached }
    }

    async fn warm(self, ctx: JobContext) -> Result<Value, JobError> {
        ctx.check()?;
        let (steps, mut heard) = watch::channel((0, 0));
        let steps = Steps(steps);
        let warming = warm::warm_with_progress(&self.cached, &steps);
        tokio::pin!(warming);
        let mut listening = true;
        let report = loop {
            tokio::select! {
                report = &mut warming => break report,
                changed = heard.changed(), if listening => {
                    if changed.is_err() {
                        listening = false;
                        continue;
                    }
                    let (done, total) = *heard.borrow_and_update();
                    ctx.progress(done, Some(total), None).await?;
                }
                () = ctx.cancelled().cancelled() => return Err(JobError::Cancelled),
            }
        };
        if report.errors > 0 && report.pages == 0 && report.items == 0 {
            return Err(JobError::Failed(format!(
                "every read of the warm-up failed ({} reads)",
                report.errors
            )));
        }
        let mut result = serde_json::to_value(&report).unwrap_or_else(|_| json!({}));
        result["cache_enabled"] = json!(self.cached.cache().is_some());
        Ok(result)
    }
}

/// Passes the warm-up's steps to the job.
struct Steps(watch::Sender<(u64, u64)>);

impl WarmProgress for Steps {
    fn on_step(&self, done: u64, total: u64) {
        self.0.send_replace((done, total));
    }
}

impl JobHandler for WarmCache {
    fn kind(&self) -> &'static str {
        "warm_cache"
    }

    fn validate(&self, payload: &Value) -> Result<(), FieldErrors> {
        only_fields(payload, &[])?;
        finish(FieldErrors::new())
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<Value, JobError>> {
        Box::pin(self.clone().warm(ctx))
    }
}
