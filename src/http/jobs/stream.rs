//! [`JobStream`]: the Server-Sent Events of `GET /api/v1/jobs/{id}/events`.
//!
//! The handler subscribes to the node's job events *before* it reads the job, so
//! nothing that happens after that read is missed; then the stream sends:
//!
//! - `snapshot`: the job as read (data: the `JobView`);
//! - `progress`: each `job.progress` event of the job that moves `processed`
//!   forward (data: [`JobProgress`]); events that do not (older than the snapshot,
//!   or replayed by a resumed attempt) are dropped;
//! - `finished`: the final `JobView`, once the job is over; then the stream ends.
//!
//! **Event ids.** `snapshot` and `progress` carry the job's `processed` count as
//! their id, which only rises across the stream and across reconnections;
//! `finished` carries one more than the highest id before it (the client's
//! `Last-Event-ID` included). A client that reconnects with `Last-Event-ID: n`
//! gets only events with an id above `n`: what it saw is not sent again, and
//! `finished` always comes.
//!
//! **Never missing the end.** The event bus is best effort: a subscriber that
//! falls behind loses events, and an event published by another node may not
//! arrive. So the job's row is read again when the subscription reports a loss,
//! when `job.finished` arrives, and every [`HEARTBEAT`]; a row found over ends the
//! stream with `finished`, a row further on than the last event sends `progress`.
//!
//! **Bounds.** A node serves at most [`MAX_STREAMS`] streams at once (a permit
//! each, held until the stream is dropped; past it 503 `too_many_streams`), and
//! each costs one bounded bus subscription and one row read per heartbeat. When
//! the node shuts down every stream ends (without `finished`): clients reconnect,
//! with `Last-Event-ID`, to a node that serves.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::Event;
use chrono::Utc;
use futures::Stream;
use serde::Serialize;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::db::entities::job;
use crate::events::{Received, Subscription};
use crate::http::error::ApiError;
use crate::metrics;
use crate::queue::Queue;
use crate::queue::model::{JobEvent, JobState, JobView, Progress};

/// Most job event streams a node serves at once.
pub const MAX_STREAMS: usize = 1024;

/// How often a stream sends its `:keepalive` comment and reads its job's row again.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// 503 past the node's bound ([`MAX_STREAMS`] unless set otherwise at start).
pub fn too_many_streams() -> ApiError {
    ApiError::Unavailable {
        code: "too_many_streams",
        message: "this node serves as many job event streams as it allows; retry shortly, or poll the job"
            .to_owned(),
        retry_after: Duration::from_secs(5),
    }
}

/// The data of a `progress` event.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct JobProgress {
    /// `running` for a progress report; the row's state when it comes from reading the job again.
    pub state: JobState,
    /// The attempt that reported it (1 for the first).
    pub attempt: u32,
    /// Units done.
    pub processed: u64,
    /// Units in all, when known.
    pub total: Option<u64>,
    /// What the job is doing now.
    pub message: Option<String>,
    /// processed / total in percent, when total is known.
    pub percent: Option<f64>,
}

impl JobProgress {
    fn new(state: JobState, attempt: u32, progress: &Progress) -> Self {
        let percent = progress.total.map(|total| match total {
            0 => 100.0,
            total => (progress.processed as f64 * 100.0 / total as f64).min(100.0),
        });
        Self {
            state,
            attempt,
            processed: progress.processed,
            total: progress.total,
            message: progress.message.clone(),
            percent,
        }
    }
}

/// What woke a waiting stream.
enum Wake {
    Stopping,
    Received(Received<JobEvent>),
    Tick,
}

/// One client's stream of one job's events (see the module docs).
pub struct JobStream {
    queue: Queue,
    id: String,
    events: Subscription<JobEvent>,
    /// The highest id sent, or the client's `Last-Event-ID`: every event sent is above it.
    floor: Option<u64>,
    ready: VecDeque<Event>,
    over: bool,
    reread: Interval,
    stopping: CancellationToken,
    _permit: OwnedSemaphorePermit,
    _open: Open,
}

/// Counts the stream in `castwork_job_streams_open` while it lives.
struct Open;

impl Open {
    fn new() -> Self {
        metrics::job_streams_open(1.0);
        Self
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics::job_streams_open(-1.0);
    }
}

impl JobStream {
    /// The stream of `row`'s job: `events` was subscribed before `row` was read;
    /// `resume` is the client's `Last-Event-ID`.
    pub fn new(
        queue: Queue,
        row: job::Model,
        events: Subscription<JobEvent>,
        resume: Option<u64>,
        permit: OwnedSemaphorePermit,
        stopping: CancellationToken,
    ) -> Self {
        let mut reread = tokio::time::interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
        reread.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let id = row.id.clone();
        let mut stream = Self {
            queue,
            id,
            events,
            floor: resume,
            ready: VecDeque::new(),
            over: false,
            reread,
            stopping,
            _permit: permit,
            _open: Open::new(),
        };
        let view = JobView::from_model(row, Utc::now());
        stream.push("snapshot", view.progress.processed, &view);
        if view.state.is_terminal() {
            stream.finish(&view);
        }
        stream
    }

    /// The events, for `Sse::new`.
    pub fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
        futures::stream::unfold(self, |stream| stream.next_event())
    }

    /// Queues event `name` with `id` if it is above the floor.
    fn push(&mut self, name: &'static str, id: u64, data: &impl Serialize) {
        if self.floor.is_some_and(|floor| id <= floor) {
            return;
        }
        match Event::default().event(name).id(id.to_string()).json_data(data) {
            Ok(event) => {
                self.ready.push_back(event);
                self.floor = Some(id);
            }
            Err(err) => {
                tracing::warn!(job = %self.id, event = name, error = %err, "could not encode a job event")
            }
        }
    }

    /// Queues `finished` with the final view and ends the stream after it.
    fn finish(&mut self, view: &JobView) {
        // above the floor whatever it is: `finished` is always sent
        let id = self.floor.map_or(view.progress.processed, |floor| floor.max(view.progress.processed)) + 1;
        self.push("finished", id, view);
        self.over = true;
    }

    /// Reads the job again: `finished` if it is over, `progress` if it moved on.
    async fn look(&mut self) {
        match self.queue.store().get(&self.id).await {
            Ok(Some(row)) => {
                let view = JobView::from_model(row, Utc::now());
                if view.state.is_terminal() {
                    self.finish(&view);
                } else {
                    let progress = JobProgress::new(view.state, view.attempts, &view.progress);
                    self.push("progress", progress.processed, &progress);
                }
            }
            Ok(None) => {
                tracing::debug!(job = %self.id, "a watched job is gone (pruned); its stream ends");
                self.over = true;
            }
            Err(err) => {
                tracing::warn!(job = %self.id, error = %err, "could not read a watched job; trying again at the next heartbeat")
            }
        }
    }

    async fn next_event(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some((Ok(event), self));
            }
            if self.over {
                return None;
            }
            let wake = tokio::select! {
                biased;
                () = self.stopping.cancelled() => Wake::Stopping,
                received = self.events.next() => Wake::Received(received),
                _ = self.reread.tick() => Wake::Tick,
            };
            match wake {
                Wake::Stopping => {
                    tracing::debug!(job = %self.id, "the node is shutting down; a job event stream ends");
                    self.over = true;
                }
                Wake::Received(Received::Event(event)) if event.job_id() == self.id => match &*event {
                    JobEvent::Progress { attempt, progress, .. } => {
                        let progress = JobProgress::new(JobState::Running, *attempt, progress);
                        self.push("progress", progress.processed, &progress);
                    }
                    JobEvent::Finished { state, .. } if state.is_terminal() => self.look().await,
                    JobEvent::Finished { .. } | JobEvent::Cancel { .. } => {}
                },
                Wake::Received(Received::Event(_)) => {}
                Wake::Received(Received::Lagged(_)) | Wake::Tick => self.look().await,
                Wake::Received(Received::Closed) => {
                    // the bus is gone with the node's queue: a last look, then the stream ends
                    self.look().await;
                    self.over = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_percent_is_bounded() {
        let at = |processed, total| {
            JobProgress::new(JobState::Running, 1, &Progress { processed, total, message: None })
        };
        assert_eq!(at(5, Some(20)).percent, Some(25.0));
        assert_eq!(at(5, Some(0)).percent, Some(100.0));
        assert_eq!(at(30, Some(20)).percent, Some(100.0));
        assert_eq!(at(5, None).percent, None);
    }
}
