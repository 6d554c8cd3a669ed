//! [`OutboxRelay`]: publishes the outbox. Unpublished rows go out in `seq` order
//! through the node's [`Broker`]; a row is stamped `published_at` only after the
//! carrier confirmed it, so a crash or a broker outage between the two publishes it
//! again (at least once: consumers deduplicate by event id).
//!
//! Several nodes relay one database without double work: on PostgreSQL each takes
//! its batch with `FOR UPDATE SKIP LOCKED`; on SQLite one process at a time holds
//! the `outbox-relay` lease. The relay wakes when this node appends to the outbox
//! and polls every `queue.outbox_poll_ms` for rows other processes wrote (a
//! `castwork import` beside the server). It also keeps the outbox lag gauges and
//! applies retention to published rows and finished jobs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use sea_orm::sea_query::{Expr, LockBehavior, LockType};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, SqliteTransactionMode, Statement, TransactionOptions,
    TransactionTrait,
};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::broker::Broker;
use super::local::route_label;
use super::store::{JOB_RETRY, JOB_SUBMITTED, JobStore};
use super::transport::{Outgoing, Route};
use crate::db::entities::outbox;
use crate::metrics;
use crate::supervision::chaos::chaos_panic;
use crate::supervision::child::{ChaosTarget, ChildSpec, StartedChild};
use crate::supervision::tree::ActorStats;

/// Publishes in flight at once within a batch.
const IN_FLIGHT: usize = 128;
/// How long the SQLite relay lease lasts without renewal.
const LEASE: Duration = Duration::from_secs(15);
/// How often retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// The lease's name.
const LEASE_NAME: &str = "outbox-relay";

/// The outbox's lag, as the relay last measured it (read by the `outbox` probe).
#[derive(Debug, Default)]
pub struct OutboxLag {
    millis: AtomicU64,
    rows: AtomicU64,
}

impl OutboxLag {
    /// Age of the oldest unpublished row.
    pub fn lag(&self) -> Duration {
        Duration::from_millis(self.millis.load(Ordering::Relaxed))
    }
    /// Unpublished rows.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }
}

/// The relay's configuration.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub poll: Duration,
    pub batch: u64,
    pub outbox_retention: Duration,
    pub job_retention: Duration,
    /// This node's id (the SQLite lease holder).
    pub node: String,
}

/// Messages the relay handles.
pub enum RelayMsg {
    /// Publish what is waiting.
    Tick,
    /// Chaos: panic while handling this message.
    Panic,
}

impl ractor::Message for RelayMsg {}

impl ChaosTarget for RelayMsg {
    fn chaos_panic() -> Self {
        Self::Panic
    }
}

/// The relay actor.
pub struct OutboxRelay {
    pub config: RelayConfig,
}

/// What the relay starts with.
pub struct RelayArgs {
    pub db: DatabaseConnection,
    pub store: JobStore,
    pub broker: Broker,
    pub wake: Arc<Notify>,
    pub lag: Arc<OutboxLag>,
    pub stats: Arc<ActorStats>,
}

/// The relay's state.
pub struct RelayState {
    args: RelayArgs,
    last_prune: Option<Instant>,
    _ticker: JoinSet<()>,
}

impl Actor for OutboxRelay {
    type Msg = RelayMsg;
    type State = RelayState;
    type Arguments = RelayArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RelayMsg>,
        args: RelayArgs,
    ) -> Result<RelayState, ActorProcessingErr> {
        let mut ticker = JoinSet::new();
        let wake = args.wake.clone();
        let poll = self.config.poll;
        ticker.spawn(async move {
            loop {
                if myself.cast(RelayMsg::Tick).is_err() {
                    return;
                }
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(poll) => {}
                }
            }
        });
        Ok(RelayState { args, last_prune: None, _ticker: ticker })
    }

    async fn handle(
        &self,
        _myself: ActorRef<RelayMsg>,
        msg: RelayMsg,
        state: &mut RelayState,
    ) -> Result<(), ActorProcessingErr> {
        state.args.stats.handled();
        match msg {
            RelayMsg::Panic => chaos_panic("outbox-relay"),
            RelayMsg::Tick => {
                if let Err(err) = self.drain(&state.args).await {
                    tracing::warn!(error = %err, "outbox relay could not read or stamp the outbox");
                }
                if let Err(err) = measure_lag(&state.args).await {
                    tracing::debug!(error = %err, "could not measure the outbox lag");
                }
                if state.last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                    state.last_prune = Some(Instant::now());
                    if let Err(err) = self.prune(&state.args).await {
                        tracing::warn!(error = %err, "outbox and job retention failed");
                    }
                }
            }
        }
        Ok(())
    }
}

impl OutboxRelay {
    /// Publishes batches until none is full or a publish fails.
    async fn drain(&self, args: &RelayArgs) -> Result<(), DbErr> {
        loop {
            let (published, full) = self.batch(args).await?;
            if !full || published == 0 {
                return Ok(());
            }
        }
    }

    /// One batch; answers how many rows were published and whether the batch was full.
    async fn batch(&self, args: &RelayArgs) -> Result<(usize, bool), DbErr> {
        let postgres = args.db.get_database_backend() == DbBackend::Postgres;
        if !postgres && !take_lease(&args.db, &self.config.node).await? {
            return Ok((0, false));
        }
        // SQLite: take the write lock up front, as the batch ends in a write
        let txn = args
            .db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await?;
        let mut query = outbox::Entity::find()
            .filter(outbox::Column::PublishedAt.is_null())
            .order_by_asc(outbox::Column::Seq)
            .limit(self.config.batch);
        if postgres {
            query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        let rows = query.all(&txn).await?;
        let full = rows.len() as u64 == self.config.batch;
        if rows.is_empty() {
            return Ok((0, false));
        }
        let results: Vec<(i64, &'static str, bool)> = futures::stream::iter(rows)
            .map(|row| {
                let broker = args.broker.clone();
                async move {
                    let seq = row.seq;
                    let message = message_of(row);
                    let label = route_label(&message.route);
                    let ok = match broker.publish(message).await {
                        Ok(()) => true,
                        Err(err) => {
                            metrics::outbox_publish_failure();
                            tracing::debug!(seq, error = %err, "outbox row not published; it is tried again");
                            false
                        }
                    };
                    (seq, label, ok)
                }
            })
            .buffered(IN_FLIGHT)
            .collect()
            .await;
        let confirmed: Vec<i64> = results.iter().filter(|(_, _, ok)| *ok).map(|(seq, _, _)| *seq).collect();
        if !confirmed.is_empty() {
            outbox::Entity::update_many()
                .col_expr(outbox::Column::PublishedAt, Expr::value(Utc::now()))
                .filter(outbox::Column::Seq.is_in(confirmed.clone()))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        for (_, label, ok) in &results {
            if *ok {
                metrics::outbox_published(label, 1);
            }
        }
        let failed = results.len() - confirmed.len();
        if failed > 0 {
            tracing::warn!(failed, published = confirmed.len(), "outbox rows wait for the broker");
            return Ok((confirmed.len(), false));
        }
        Ok((confirmed.len(), full))
    }

    async fn prune(&self, args: &RelayArgs) -> Result<(), DbErr> {
        let now = Utc::now();
        let outbox_before =
            now - chrono::TimeDelta::from_std(self.config.outbox_retention).unwrap_or(chrono::TimeDelta::MAX);
        let deleted = outbox::Entity::delete_many()
            .filter(outbox::Column::PublishedAt.lt(outbox_before))
            .exec(&args.db)
            .await?;
        metrics::queue_pruned("outbox", deleted.rows_affected);
        let jobs_before =
            now - chrono::TimeDelta::from_std(self.config.job_retention).unwrap_or(chrono::TimeDelta::MAX);
        let jobs = args.store.prune(jobs_before).await.map_err(|e| DbErr::Custom(e.to_string()))?;
        metrics::queue_pruned("jobs", jobs);
        // every schedule keeps its latest tick, so a yearly schedule still knows its last run
        let backend = args.db.get_database_backend();
        let placeholder = if backend == DbBackend::Postgres { "$1" } else { "?" };
        let sql = format!(
            "DELETE FROM job_schedule_runs WHERE tick < {placeholder} AND tick < \
             (SELECT MAX(r.tick) FROM job_schedule_runs r WHERE r.schedule = job_schedule_runs.schedule)"
        );
        args.db.execute_raw(Statement::from_sql_and_values(backend, sql, [jobs_before.into()])).await?;
        Ok(())
    }
}

/// The message an outbox row becomes: a job's work message, its delayed retry, or an event.
pub fn message_of(row: outbox::Model) -> Outgoing {
    match row.event_type.as_str() {
        JOB_SUBMITTED => {
            Outgoing { id: row.id, route: Route::Work, body: Bytes::from(row.payload.to_string()) }
        }
        JOB_RETRY => {
            let delay = row.payload.get("delay_ms").and_then(serde_json::Value::as_u64).unwrap_or(1000);
            Outgoing {
                id: row.id,
                route: Route::Retry(Duration::from_millis(delay)),
                body: Bytes::from(row.payload.to_string()),
            }
        }
        _ => {
            let body = json!({
                "id": row.id,
                "type": row.event_type,
                "aggregate_id": row.aggregate_id,
                "payload": row.payload,
                "created_at": row.created_at,
            });
            Outgoing { id: row.id, route: Route::Event(row.event_type), body: Bytes::from(body.to_string()) }
        }
    }
}

/// Takes or renews the SQLite relay lease; false while another process holds it.
async fn take_lease(db: &DatabaseConnection, node: &str) -> Result<bool, DbErr> {
    let now = Utc::now();
    let until = now + chrono::TimeDelta::from_std(LEASE).unwrap_or(chrono::TimeDelta::MAX);
    let statement = Statement::from_sql_and_values(
        DbBackend::Sqlite,
        "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE leases.holder = excluded.holder OR leases.expires_at < ?",
        [LEASE_NAME.into(), node.into(), until.into(), now.into()],
    );
    Ok(db.execute_raw(statement).await?.rows_affected() == 1)
}

async fn measure_lag(args: &RelayArgs) -> Result<(), DbErr> {
    let unpublished = outbox::Entity::find().filter(outbox::Column::PublishedAt.is_null());
    let rows = unpublished.clone().count(&args.db).await?;
    let oldest: Option<DateTime<Utc>> = unpublished
        .select_only()
        .column(outbox::Column::CreatedAt)
        .order_by_asc(outbox::Column::Seq)
        .into_tuple()
        .one(&args.db)
        .await?;
    let lag = oldest.map(|at| (Utc::now() - at).to_std().unwrap_or(Duration::ZERO)).unwrap_or(Duration::ZERO);
    args.lag.millis.store(u64::try_from(lag.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    args.lag.rows.store(rows, Ordering::Relaxed);
    metrics::outbox_lag(lag.as_secs_f64(), rows);
    Ok(())
}

/// The relay as a child of the queue supervisor.
pub fn child_spec(config: RelayConfig, parts: RelayParts) -> ChildSpec {
    ChildSpec::new("outbox-relay", "outbox-relay", move |ctx| {
        let actor = OutboxRelay { config: config.clone() };
        let args = RelayArgs {
            db: parts.db.clone(),
            store: parts.store.clone(),
            broker: parts.broker.clone(),
            wake: parts.wake.clone(),
            lag: parts.lag.clone(),
            stats: ctx.stats,
        };
        async move {
            let (actor, _handle) = Actor::spawn_linked(None, actor, args, ctx.supervisor).await?;
            Ok(StartedChild::worker(actor))
        }
    })
}

/// What every incarnation of the relay shares.
#[derive(Clone)]
pub struct RelayParts {
    pub db: DatabaseConnection,
    pub store: JobStore,
    pub broker: Broker,
    pub wake: Arc<Notify>,
    pub lag: Arc<OutboxLag>,
}

/// `/health` component `outbox`: down (not critical) while the oldest unpublished
/// row is older than `queue.outbox_lag_alert_secs`.
pub struct OutboxProbe {
    lag: Arc<OutboxLag>,
    alert: Duration,
}

impl OutboxProbe {
    /// A probe reading `lag`.
    pub fn new(lag: Arc<OutboxLag>, alert: Duration) -> Self {
        Self { lag, alert }
    }
}

impl crate::health::Probe for OutboxProbe {
    fn component(&self) -> &str {
        "outbox"
    }
    fn critical(&self) -> bool {
        false
    }
    fn check(&self) -> futures::future::BoxFuture<'static, Result<(), String>> {
        let (lag, rows, alert) = (self.lag.lag(), self.lag.rows(), self.alert);
        Box::pin(async move {
            if lag > alert {
                Err(format!("{rows} outbox rows unpublished, the oldest for {} s", lag.as_secs()))
            } else {
                Ok(())
            }
        })
    }
}
