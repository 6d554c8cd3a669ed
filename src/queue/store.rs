//! [`JobStore`]: every state change of a job, each in one transaction with the
//! outbox rows that announce it, so that a job is never accepted without its work
//! message and never finished without its `job.finished` event.
//!
//! A worker holds a job by a **lease** (`locked_by`, `locked_until`), renewed with
//! its progress. A second delivery of the same job (the relay publishes at least
//! once; the broker redelivers what a lost channel held) finds it terminal (and is
//! dropped), leased by a live worker (and is put off), or with its lease run out
//! (its worker died: this one takes it over and resumes from the checkpoint).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr, TransactionTrait,
};
use serde_json::{Value, json};

use super::model::{JobState, JobView, Progress};
use crate::db::entities::{job, job_schedule_run};
use crate::outbox::{self, OutboxEvent};

/// A job's work message (route: the work queue).
pub const JOB_SUBMITTED: &str = "job.submitted";
/// A failed attempt's next one (route: the retry queue of `delay_ms`).
pub const JOB_RETRY: &str = "job.retry";
/// A job reached a terminal state or `retrying` (route: the events exchange).
pub const JOB_FINISHED: &str = "job.finished";
/// Cancel a running job wherever it runs (route: the events exchange).
pub const JOB_CANCEL: &str = "job.cancel";

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no job {0}")]
    NotFound(String),
    /// The job is in a state the call does not apply to.
    #[error("job {id} is {state}: {reason}")]
    WrongState { id: String, state: &'static str, reason: &'static str },
    /// The idempotency key was used for another request.
    #[error("the Idempotency-Key was already used for a different job request (job {0})")]
    IdempotencyConflict(String),
    /// Too many jobs waiting or running.
    #[error("{0} jobs are waiting or running, the most this node accepts (queue.max_pending_jobs)")]
    QueueFull(u64),
    #[error("invalid cursor")]
    BadCursor,
    #[error(transparent)]
    Database(#[from] DbErr),
}

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub payload: Value,
    pub created_by: String,
    pub idempotency_key: Option<String>,
    pub max_attempts: u32,
}

/// What a claim found.
#[derive(Debug)]
pub enum Claim {
    /// The caller holds the job now (its attempt is counted).
    Claimed(Box<job::Model>),
    /// Over (or cancelled before it ran): drop the delivery.
    Done(JobState),
    /// A live worker holds it until then: put the delivery off.
    Busy { until: DateTime<Utc> },
    /// No such job (pruned): drop the delivery.
    Missing,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Succeeded(Value),
    /// Failed; retried after `Some(delay)`, failed for good on `None`.
    Failed {
        error: String,
        retry_in: Option<Duration>,
    },
    Cancelled,
}

/// `GET /jobs` filters.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub kind: Option<String>,
    pub state: Option<JobState>,
    /// Only this user's jobs (a non-admin reader).
    pub created_by: Option<String>,
    pub after: Option<String>,
    pub limit: u64,
}

/// One page of jobs, newest first.
#[derive(Debug, Clone)]
pub struct JobPage {
    pub jobs: Vec<JobView>,
    pub next: Option<String>,
}

/// The jobs table.
#[derive(Clone, Debug)]
pub struct JobStore {
    db: DatabaseConnection,
    max_pending: u64,
}

const PENDING: [&str; 3] = ["queued", "running", "retrying"];

impl JobStore {
    /// A store over `db` accepting at most `max_pending` unfinished jobs.
    pub fn new(db: DatabaseConnection, max_pending: u64) -> Self {
        Self { db, max_pending }
    }

    /// A write transaction. On SQLite it takes the write lock up front (`BEGIN
    /// IMMEDIATE`): one that reads first and writes then fails at once with "database
    /// is locked" when another connection wrote in between.
    async fn begin_write(&self) -> Result<sea_orm::DatabaseTransaction, DbErr> {
        let options = sea_orm::TransactionOptions {
            sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
            ..sea_orm::TransactionOptions::default()
        };
        self.db.begin_with_options(options).await
    }

    /// The connection, for job handlers.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Creates a job and its work message. With an idempotency key already used
    /// for the same kind and payload, answers that job instead (`false`).
    pub async fn submit(&self, new: NewJob) -> Result<(JobView, bool), StoreError> {
        if let Some(key) = &new.idempotency_key
            && let Some(existing) = self.by_idempotency_key(key).await?
        {
            return same_request(existing, &new).map(|view| (view, false));
        }
        let txn = self.begin_write().await?;
        let created = match self.insert(&txn, &new).await {
            Ok(created) => created,
            Err(StoreError::Database(err)) => {
                drop(txn);
                // a concurrent request with the same key won the race: answer its job
                if let (Some(SqlErr::UniqueConstraintViolation(_)), Some(key)) =
                    (err.sql_err(), &new.idempotency_key)
                    && let Some(existing) = self.by_idempotency_key(key).await?
                {
                    return same_request(existing, &new).map(|view| (view, false));
                }
                return Err(err.into());
            }
            Err(other) => return Err(other),
        };
        txn.commit().await?;
        Ok((JobView::from_model(created, Utc::now()), true))
    }

    /// Starts schedule `schedule`'s job for `tick` unless some node already did:
    /// the tick's row and the job are written in one transaction.
    pub async fn submit_scheduled(
        &self,
        new: NewJob,
        schedule: &str,
        tick: DateTime<Utc>,
    ) -> Result<Option<JobView>, StoreError> {
        let txn = self.begin_write().await?;
        let run = job_schedule_run::ActiveModel {
            schedule: Set(schedule.to_owned()),
            tick: Set(tick),
            job_id: Set(String::new()),
            created_at: Set(Utc::now()),
        };
        if let Err(err) = job_schedule_run::Entity::insert(run).exec_without_returning(&txn).await {
            return match err.sql_err() {
                Some(SqlErr::UniqueConstraintViolation(_)) => Ok(None),
                _ => Err(err.into()),
            };
        }
        let created = self.insert(&txn, &new).await?;
        job_schedule_run::Entity::update_many()
            .col_expr(job_schedule_run::Column::JobId, Expr::value(created.id.clone()))
            .filter(job_schedule_run::Column::Schedule.eq(schedule))
            .filter(job_schedule_run::Column::Tick.eq(tick))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(Some(JobView::from_model(created, Utc::now())))
    }

    /// The last tick started for `schedule`, and its job.
    pub async fn last_run(&self, schedule: &str) -> Result<Option<job_schedule_run::Model>, StoreError> {
        Ok(job_schedule_run::Entity::find()
            .filter(job_schedule_run::Column::Schedule.eq(schedule))
            .order_by_desc(job_schedule_run::Column::Tick)
            .one(&self.db)
            .await?)
    }

    async fn insert<C: ConnectionTrait>(&self, txn: &C, new: &NewJob) -> Result<job::Model, StoreError> {
        let pending = job::Entity::find().filter(job::Column::State.is_in(PENDING)).count(txn).await?;
        if pending >= self.max_pending {
            return Err(StoreError::QueueFull(pending));
        }
        let now = Utc::now();
        let id = uuid::Uuid::new_v4().to_string();
        let row = job::ActiveModel {
            id: Set(id.clone()),
            kind: Set(new.kind.clone()),
            payload: Set(new.payload.clone()),
            state: Set(JobState::Queued.as_str().to_owned()),
            attempts: Set(0),
            max_attempts: Set(i32::try_from(new.max_attempts).unwrap_or(i32::MAX)),
            processed: Set(0),
            total: Set(None),
            message: Set(None),
            checkpoint: Set(None),
            result: Set(None),
            last_error: Set(None),
            created_by: Set(new.created_by.clone()),
            idempotency_key: Set(new.idempotency_key.clone()),
            cancel_requested: Set(false),
            locked_by: Set(None),
            locked_until: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            started_at: Set(None),
            finished_at: Set(None),
            run_after: Set(None),
        };
        job::Entity::insert(row).exec_without_returning(txn).await?;
        outbox::append(txn, vec![work_event(&id, &new.kind)]).await?;
        Ok(find(txn, &id).await?)
    }

    /// The job, if any.
    pub async fn get(&self, id: &str) -> Result<Option<job::Model>, StoreError> {
        Ok(job::Entity::find_by_id(id).one(&self.db).await?)
    }

    /// Jobs newest first, filtered, after a cursor from the previous page.
    pub async fn list(&self, filter: &ListFilter) -> Result<JobPage, StoreError> {
        let mut query = job::Entity::find();
        if let Some(kind) = &filter.kind {
            query = query.filter(job::Column::Kind.eq(kind.as_str()));
        }
        if let Some(state) = filter.state {
            query = query.filter(job::Column::State.eq(state.as_str()));
        }
        if let Some(user) = &filter.created_by {
            query = query.filter(job::Column::CreatedBy.eq(user.as_str()));
        }
        if let Some(cursor) = &filter.after {
            let (at, id) = decode_cursor(cursor)?;
            query = query.filter(
                Condition::any()
                    .add(job::Column::CreatedAt.lt(at))
                    .add(Condition::all().add(job::Column::CreatedAt.eq(at)).add(job::Column::Id.lt(id))),
            );
        }
        let limit = Ord::max(filter.limit, 1);
        let mut rows = query
            .order_by_desc(job::Column::CreatedAt)
            .order_by_desc(job::Column::Id)
            .limit(limit + 1)
            .all(&self.db)
            .await?;
        let next = if rows.len() as u64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|last| encode_cursor(last.created_at, &last.id))
        } else {
            None
        };
        let now = Utc::now();
        Ok(JobPage { jobs: rows.into_iter().map(|row| JobView::from_model(row, now)).collect(), next })
    }

    /// Takes the job for `owner` (this node) for `lease` (see the module docs).
    /// Call it only while the job is registered in this node's
    /// [`Running`](super::worker::running::Running).
    pub async fn claim(&self, id: &str, owner: &str, lease: Duration) -> Result<Claim, StoreError> {
        let now = Utc::now();
        let until = now + lease_delta(lease);
        let claimable = Condition::any().add(job::Column::State.is_in(["queued", "retrying"])).add(
            Condition::all().add(job::Column::State.eq("running")).add(
                Condition::any()
                    .add(job::Column::LockedUntil.is_null())
                    .add(job::Column::LockedUntil.lt(now))
                    // the caller registered the job in its node's `Running` first,
                    // so no live worker of this node holds it
                    .add(job::Column::LockedBy.eq(owner)),
            ),
        );
        let updated = job::Entity::update_many()
            .col_expr(job::Column::State, Expr::value("running"))
            .col_expr(job::Column::Attempts, Expr::col(job::Column::Attempts).add(1))
            .col_expr(job::Column::LockedBy, Expr::value(owner))
            .col_expr(job::Column::LockedUntil, Expr::value(until))
            .col_expr(job::Column::StartedAt, Expr::value(now))
            .col_expr(job::Column::UpdatedAt, Expr::value(now))
            .col_expr(job::Column::RunAfter, Expr::value(Option::<DateTime<Utc>>::None))
            .filter(job::Column::Id.eq(id))
            .filter(job::Column::CancelRequested.eq(false))
            .filter(claimable)
            .exec(&self.db)
            .await?;
        let Some(row) = self.get(id).await? else {
            return Ok(Claim::Missing);
        };
        if updated.rows_affected == 1 {
            return Ok(Claim::Claimed(Box::new(row)));
        }
        let state = JobState::parse(&row.state).unwrap_or(JobState::Failed);
        if state.is_terminal() {
            return Ok(Claim::Done(state));
        }
        if row.cancel_requested && self.finish(id, None, Outcome::Cancelled).await? {
            // asked to cancel, and no live worker holds it to honour that
            return Ok(Claim::Done(JobState::Cancelled));
        }
        Ok(Claim::Busy { until: row.locked_until.unwrap_or(until) })
    }

    /// Records progress (and the checkpoint, when given) and renews the lease;
    /// answers whether cancellation was asked for. `false` for `held` means
    /// another worker took the job over: stop.
    pub async fn report(
        &self,
        id: &str,
        owner: &str,
        progress: &Progress,
        checkpoint: Option<&Value>,
        lease: Duration,
    ) -> Result<Held, StoreError> {
        let now = Utc::now();
        let mut update = job::Entity::update_many()
            .col_expr(
                job::Column::Processed,
                Expr::value(i64::try_from(progress.processed).unwrap_or(i64::MAX)),
            )
            .col_expr(job::Column::Total, Expr::value(progress.total.and_then(|t| i64::try_from(t).ok())))
            .col_expr(job::Column::Message, Expr::value(progress.message.clone()))
            .col_expr(job::Column::LockedUntil, Expr::value(now + lease_delta(lease)))
            .col_expr(job::Column::UpdatedAt, Expr::value(now));
        if let Some(checkpoint) = checkpoint {
            update = update.col_expr(job::Column::Checkpoint, Expr::value(checkpoint.clone()));
        }
        let updated = update
            .filter(job::Column::Id.eq(id))
            .filter(job::Column::LockedBy.eq(owner))
            .filter(job::Column::State.eq("running"))
            .exec(&self.db)
            .await?;
        self.held(id, updated.rows_affected).await
    }

    /// Renews a running job's lease; answers whether it is still held and whether
    /// cancellation was asked for.
    pub async fn renew(&self, id: &str, owner: &str, lease: Duration) -> Result<Held, StoreError> {
        let now = Utc::now();
        let updated = job::Entity::update_many()
            .col_expr(job::Column::LockedUntil, Expr::value(now + lease_delta(lease)))
            .filter(job::Column::Id.eq(id))
            .filter(job::Column::LockedBy.eq(owner))
            .filter(job::Column::State.eq("running"))
            .exec(&self.db)
            .await?;
        self.held(id, updated.rows_affected).await
    }

    /// What an update of the holder's own row (`rows` changed) says of its hold.
    async fn held(&self, id: &str, rows: u64) -> Result<Held, StoreError> {
        if rows == 0 {
            return Ok(Held { held: false, cancel_requested: false });
        }
        Ok(Held { held: true, cancel_requested: self.cancel_requested(id).await? })
    }

    /// Whether cancellation of `id` was asked for.
    pub async fn cancel_requested(&self, id: &str) -> Result<bool, StoreError> {
        Ok(job::Entity::find_by_id(id)
            .select_only()
            .column(job::Column::CancelRequested)
            .into_tuple::<bool>()
            .one(&self.db)
            .await?
            .unwrap_or(false))
    }

    /// Ends an attempt (`owner`: the worker that ran it; `None` for a job no worker
    /// holds), with its `job.finished` event and, for a retry, its delayed work message.
    pub async fn finish(&self, id: &str, owner: Option<&str>, outcome: Outcome) -> Result<bool, StoreError> {
        let now = Utc::now();
        let txn = self.begin_write().await?;
        let (state, error) = match &outcome {
            Outcome::Succeeded(_) => (JobState::Succeeded, None),
            Outcome::Failed { error, retry_in: Some(_) } => (JobState::Retrying, Some(error.clone())),
            Outcome::Failed { error, retry_in: None } => (JobState::Failed, Some(error.clone())),
            Outcome::Cancelled => (JobState::Cancelled, None),
        };
        let mut update = job::Entity::update_many()
            .col_expr(job::Column::State, Expr::value(state.as_str()))
            .col_expr(job::Column::LockedBy, Expr::value(Option::<String>::None))
            .col_expr(job::Column::LockedUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(job::Column::UpdatedAt, Expr::value(now));
        if state.is_terminal() {
            update = update
                .col_expr(job::Column::FinishedAt, Expr::value(now))
                .col_expr(job::Column::CancelRequested, Expr::value(false));
        }
        if let Some(error) = &error {
            update = update.col_expr(job::Column::LastError, Expr::value(error.clone()));
        }
        if let Outcome::Succeeded(result) = &outcome {
            update = update.col_expr(job::Column::Result, Expr::value(result.clone()));
        }
        if let Outcome::Failed { retry_in: Some(delay), .. } = &outcome {
            update = update.col_expr(job::Column::RunAfter, Expr::value(now + lease_delta(*delay)));
        }
        let mut update = update.filter(job::Column::Id.eq(id));
        update = match owner {
            Some(owner) => {
                update.filter(job::Column::LockedBy.eq(owner)).filter(job::Column::State.eq("running"))
            }
            // no worker holds it: waiting, or running with its worker's lease run out
            None => update.filter(
                Condition::any().add(job::Column::State.is_in(["queued", "retrying"])).add(
                    Condition::all().add(job::Column::State.eq("running")).add(
                        Condition::any()
                            .add(job::Column::LockedUntil.is_null())
                            .add(job::Column::LockedUntil.lt(now)),
                    ),
                ),
            ),
        };
        if update.exec(&txn).await?.rows_affected == 0 {
            // taken over by another worker, or already over
            return Ok(false);
        }
        let mut events = vec![OutboxEvent {
            event_type: JOB_FINISHED,
            aggregate_id: id.to_owned(),
            payload: json!({ "type": JOB_FINISHED, "job_id": id, "state": state, "error": error }),
        }];
        if let Outcome::Failed { retry_in: Some(delay), .. } = &outcome {
            let kind = find(&txn, id).await?.kind;
            let mut event = work_event(id, &kind);
            event.event_type = JOB_RETRY;
            event.payload["delay_ms"] = json!(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
            events.push(event);
        }
        outbox::append(&txn, events).await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Cancels a job: at once when it waits; by asking its worker when it runs.
    pub async fn cancel(&self, id: &str) -> Result<JobView, StoreError> {
        let row = self.get(id).await?.ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        let state = JobState::parse(&row.state).unwrap_or(JobState::Failed);
        match state {
            JobState::Queued | JobState::Retrying => {
                if !self.finish(id, None, Outcome::Cancelled).await? {
                    // it started meanwhile: ask its worker
                    return Box::pin(self.cancel(id)).await;
                }
            }
            JobState::Running => {
                let txn = self.begin_write().await?;
                job::Entity::update_many()
                    .col_expr(job::Column::CancelRequested, Expr::value(true))
                    .col_expr(job::Column::UpdatedAt, Expr::value(Utc::now()))
                    .filter(job::Column::Id.eq(id))
                    .filter(job::Column::State.eq("running"))
                    .exec(&txn)
                    .await?;
                outbox::append(
                    &txn,
                    vec![OutboxEvent {
                        event_type: JOB_CANCEL,
                        aggregate_id: id.to_owned(),
                        payload: json!({ "type": JOB_CANCEL, "job_id": id }),
                    }],
                )
                .await?;
                txn.commit().await?;
            }
            _ => {
                return Err(StoreError::WrongState {
                    id: id.to_owned(),
                    state: state.as_str(),
                    reason: "only a queued, retrying or running job can be cancelled",
                });
            }
        }
        let row = self.get(id).await?.ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        Ok(JobView::from_model(row, Utc::now()))
    }

    /// Queues a failed job again with a fresh set of attempts.
    pub async fn retry(&self, id: &str) -> Result<JobView, StoreError> {
        let txn = self.begin_write().await?;
        let row = find(&txn, id).await.map_err(|_| StoreError::NotFound(id.to_owned()))?;
        if row.state != JobState::Failed.as_str() {
            let state = JobState::parse(&row.state).unwrap_or(JobState::Failed);
            return Err(StoreError::WrongState {
                id: id.to_owned(),
                state: state.as_str(),
                reason: "only a failed job can be retried",
            });
        }
        let now = Utc::now();
        job::Entity::update_many()
            .col_expr(job::Column::State, Expr::value("queued"))
            .col_expr(job::Column::Attempts, Expr::value(0))
            .col_expr(job::Column::FinishedAt, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(job::Column::UpdatedAt, Expr::value(now))
            .filter(job::Column::Id.eq(id))
            .filter(job::Column::State.eq("failed"))
            .exec(&txn)
            .await?;
        outbox::append(&txn, vec![work_event(id, &row.kind)]).await?;
        let row = find(&txn, id).await?;
        txn.commit().await?;
        Ok(JobView::from_model(row, now))
    }

    /// Unfinished jobs no live worker holds (queued, retrying, or running with its
    /// lease run out), oldest first: what an embedded node hands its workers again
    /// at start, since its in-process queue did not survive the restart.
    pub async fn orphans(&self, limit: u64) -> Result<Vec<job::Model>, StoreError> {
        let now = Utc::now();
        Ok(job::Entity::find()
            .filter(
                Condition::any().add(job::Column::State.is_in(["queued", "retrying"])).add(
                    Condition::all().add(job::Column::State.eq("running")).add(
                        Condition::any()
                            .add(job::Column::LockedUntil.is_null())
                            .add(job::Column::LockedUntil.lt(now)),
                    ),
                ),
            )
            .order_by_asc(job::Column::CreatedAt)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Deletes jobs that finished before `before`; answers how many.
    pub async fn prune(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let deleted = job::Entity::delete_many()
            .filter(job::Column::FinishedAt.lt(before))
            .filter(job::Column::State.is_in(["succeeded", "failed", "cancelled"]))
            .exec(&self.db)
            .await?;
        Ok(deleted.rows_affected)
    }

    async fn by_idempotency_key(&self, key: &str) -> Result<Option<job::Model>, StoreError> {
        Ok(job::Entity::find().filter(job::Column::IdempotencyKey.eq(key)).one(&self.db).await?)
    }
}

/// Whether the worker still holds its job, and whether it was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub held: bool,
    pub cancel_requested: bool,
}

/// The work message of job `id` as an outbox event.
pub fn work_event(id: &str, kind: &str) -> OutboxEvent {
    OutboxEvent {
        event_type: JOB_SUBMITTED,
        aggregate_id: id.to_owned(),
        payload: json!({ "v": 1, "job_id": id, "kind": kind }),
    }
}

fn same_request(existing: job::Model, new: &NewJob) -> Result<JobView, StoreError> {
    if existing.kind != new.kind || existing.payload != new.payload || existing.created_by != new.created_by {
        return Err(StoreError::IdempotencyConflict(existing.id));
    }
    Ok(JobView::from_model(existing, Utc::now()))
}

async fn find<C: ConnectionTrait>(conn: &C, id: &str) -> Result<job::Model, DbErr> {
    job::Entity::find_by_id(id).one(conn).await?.ok_or_else(|| DbErr::RecordNotFound(format!("job {id}")))
}

fn lease_delta(lease: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(lease).unwrap_or(chrono::TimeDelta::MAX)
}

fn encode_cursor(at: DateTime<Utc>, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{id}", at.timestamp_micros()))
}

fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, String), StoreError> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| StoreError::BadCursor)?;
    let text = String::from_utf8(bytes).map_err(|_| StoreError::BadCursor)?;
    let (micros, id) = text.split_once('|').ok_or(StoreError::BadCursor)?;
    let micros: i64 = micros.parse().map_err(|_| StoreError::BadCursor)?;
    let at = DateTime::from_timestamp_micros(micros).ok_or(StoreError::BadCursor)?;
    Ok((at, id.to_owned()))
}
