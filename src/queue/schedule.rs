//! Cron schedules (`queue.schedules`): the [`Scheduler`] starts each tick's job
//! exactly once across all nodes. Every node runs a scheduler; the tick's row in
//! `job_schedule_runs` (primary key: schedule and tick), written in the same
//! transaction as the job, lets only the first node through.
//!
//! A tick missed while every node was down is not lost: at start, each schedule's
//! latest tick that has passed is started, once, if no node started it (so a new
//! deployment runs each schedule's latest tick at its first start).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use croner::Cron;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::Queue;
use super::store::NewJob;
use crate::config::QueueSettings;
use crate::supervision::chaos::chaos_panic;
use crate::supervision::child::{ChaosTarget, ChildSpec, StartedChild};
use crate::supervision::tree::ActorStats;

/// Longest single wait between checks (the clock may jump).
const MAX_WAIT: Duration = Duration::from_secs(60);

/// One schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub name: String,
    pub cron: Cron,
    pub expression: String,
    pub kind: String,
    pub payload: Value,
}

impl Schedule {
    /// The first tick after `now`.
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // croner keeps the start's fraction of a second: a tick is a whole second
        self.cron.find_next_occurrence(&now.trunc_subsecs(0), false).ok()
    }
    /// The latest tick at or before `now` (a whole second: every node and every
    /// check names the same tick the same, which is what runs it once).
    pub fn latest(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_previous_occurrence(&now.trunc_subsecs(0), true).ok()
    }
}

/// Every configured schedule.
#[derive(Clone, Debug, Default)]
pub struct Schedules(pub Arc<Vec<Schedule>>);

impl Schedules {
    /// From `queue.schedules` (validated at load: a schedule that does not parse is left out).
    pub fn from_settings(settings: &QueueSettings) -> Self {
        let list = settings
            .schedules
            .iter()
            .filter_map(|s| {
                let cron = s.parse_cron().ok()?;
                Some(Schedule {
                    name: s.name.clone(),
                    cron,
                    expression: s.cron.clone(),
                    kind: s.kind.clone(),
                    payload: s.payload.clone(),
                })
            })
            .collect();
        Self(Arc::new(list))
    }
}

/// A schedule as `GET /api/v1/jobs/schedules` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScheduleView {
    pub name: String,
    pub cron: String,
    pub kind: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    /// The last tick started (by any node).
    pub last_tick: Option<DateTime<Utc>>,
    /// The job that tick started.
    pub last_job_id: Option<String>,
    pub next_tick: Option<DateTime<Utc>>,
}

/// Messages the scheduler handles.
pub enum SchedulerMsg {
    /// Start what is due, then wait for the next tick.
    Check,
    /// Chaos: panic while handling this message.
    Panic,
}

impl ractor::Message for SchedulerMsg {}

impl ChaosTarget for SchedulerMsg {
    fn chaos_panic() -> Self {
        Self::Panic
    }
}

/// The scheduler actor.
pub struct Scheduler {
    pub schedules: Schedules,
}

/// Its state.
pub struct SchedulerState {
    queue: Queue,
    stats: Arc<ActorStats>,
}

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = (Queue, Arc<ActorStats>);

    async fn pre_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        (queue, stats): (Queue, Arc<ActorStats>),
    ) -> Result<SchedulerState, ActorProcessingErr> {
        if !self.schedules.0.is_empty() {
            myself.cast(SchedulerMsg::Check)?;
        }
        Ok(SchedulerState { queue, stats })
    }

    async fn handle(
        &self,
        myself: ActorRef<SchedulerMsg>,
        msg: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        state.stats.handled();
        match msg {
            SchedulerMsg::Panic => chaos_panic("job-scheduler"),
            SchedulerMsg::Check => {
                let now = Utc::now();
                for schedule in self.schedules.0.iter() {
                    if let Some(tick) = schedule.latest(now) {
                        start(&state.queue, schedule, tick).await;
                    }
                }
                let next = self.schedules.0.iter().filter_map(|s| s.next_after(now)).min();
                let wait = next
                    .and_then(|at| (at - Utc::now()).to_std().ok())
                    .unwrap_or(Duration::ZERO)
                    .min(MAX_WAIT);
                myself.send_after(wait, || SchedulerMsg::Check);
            }
        }
        Ok(())
    }
}

/// Starts `schedule`'s job for `tick` unless a node already did.
async fn start(queue: &Queue, schedule: &Schedule, tick: DateTime<Utc>) {
    let new = NewJob {
        kind: schedule.kind.clone(),
        payload: schedule.payload.clone(),
        created_by: format!("schedule:{}", schedule.name),
        idempotency_key: None,
        max_attempts: queue.max_attempts(),
    };
    match queue.store().submit_scheduled(new, &schedule.name, tick).await {
        Ok(Some(job)) => {
            tracing::info!(schedule = %schedule.name, tick = %tick, job = %job.id, "scheduled job started");
            queue.outbox_written();
        }
        Ok(None) => {}
        Err(err) => {
            tracing::warn!(schedule = %schedule.name, tick = %tick, error = %err, "could not start a scheduled job")
        }
    }
}

/// Every schedule with its last and next tick.
pub async fn views(
    queue: &Queue,
    schedules: &Schedules,
) -> Result<Vec<ScheduleView>, super::store::StoreError> {
    let now = Utc::now();
    let mut views = Vec::with_capacity(schedules.0.len());
    for schedule in schedules.0.iter() {
        let last = queue.store().last_run(&schedule.name).await?;
        views.push(ScheduleView {
            name: schedule.name.clone(),
            cron: schedule.expression.clone(),
            kind: schedule.kind.clone(),
            payload: schedule.payload.clone(),
            last_tick: last.as_ref().map(|run| run.tick),
            last_job_id: last.map(|run| run.job_id),
            next_tick: schedule.next_after(now),
        });
    }
    Ok(views)
}

/// The scheduler as a child of the queue supervisor.
pub fn child_spec(schedules: Schedules, queue: Queue) -> ChildSpec {
    ChildSpec::new("job-scheduler", "job-scheduler", move |ctx| {
        let actor = Scheduler { schedules: schedules.clone() };
        let queue = queue.clone();
        async move {
            let (actor, _handle) =
                Actor::spawn_linked(None, actor, (queue, ctx.stats), ctx.supervisor).await?;
            Ok(StartedChild::worker(actor))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_whole_seconds_whatever_the_clock_says() {
        let settings = crate::config::ScheduleSettings {
            name: "daily".into(),
            cron: "0 3 * * *".into(),
            kind: "noop_sleep".into(),
            payload: Value::Null,
        };
        let schedule = Schedule {
            name: settings.name.clone(),
            cron: settings.parse_cron().unwrap(),
            expression: settings.cron.clone(),
            kind: settings.kind.clone(),
            payload: Value::Null,
        };
        let at = |text: &str| text.parse::<DateTime<Utc>>().unwrap();
        let now = at("2026-06-01T12:34:56.789Z");
        assert_eq!(schedule.latest(now), Some(at("2026-06-01T03:00:00Z")));
        assert_eq!(schedule.latest(at("2026-06-01T12:40:00.001Z")), schedule.latest(now), "the same tick");
        assert_eq!(schedule.next_after(now), Some(at("2026-06-02T03:00:00Z")));
        assert_eq!(schedule.latest(at("2026-06-02T03:00:00.5Z")), Some(at("2026-06-02T03:00:00Z")));
    }
}
