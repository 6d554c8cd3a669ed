//! The queue's subtree and its `child_spec()`:
//!
//! ```text
//! queue (one-for-one)
//! ├── queue-bridge          RabbitMQ connection (only with queue.amqp_url)
//! ├── outbox-relay
//! ├── event-consumer
//! ├── job-scheduler
//! └── queue-workers (one-for-one)
//!     └── job-worker-0 .. job-worker-<queue.workers - 1>
//! ```
//!
//! [`build`] makes the parts the subtree and the HTTP handlers share before
//! anything starts: the [`Queue`] handle, the carrier, the running-jobs registry.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ractor::Actor;
use sea_orm::DatabaseConnection;
use serde_json::json;
use tokio::sync::{Mutex, Notify};

use super::bridge::{Bridge, BridgeConfig};
use super::broker::Broker;
use super::consumer::{self, Seen, Sinks};
use super::local::LocalBroker;
use super::relay::{self, OutboxLag, RelayConfig, RelayParts};
use super::schedule;
use super::store::JobStore;
use super::transport::{Consumers, Outgoing, Route};
use super::worker::run::Limits;
use super::worker::running::Running;
use super::worker::{self, Pool};
use super::{Queue, kinds};
use crate::config::Settings;
use crate::explore::ChangeBus;
use crate::health::Probe;
use crate::supervision::child::{ChildSpec, StartedChild};
use crate::supervision::supervisor::SupervisorArgs;

/// Why the queue could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum QueueSetupError {
    #[error("queue.schedules: {name}: unknown job kind {kind:?}; known kinds: {known}")]
    UnknownScheduleKind { name: String, kind: String, known: String },
    #[error("queue.schedules: {name}: the payload is refused by kind {kind}: {reason}")]
    BadSchedulePayload { name: String, kind: String, reason: String },
    #[error("failed to read unfinished jobs at start: {0}")]
    Database(String),
}

/// This node's own item changes, watched from before its first write: they wake
/// the relay at once, and their events coming back from the exchange are not
/// applied a second time.
#[derive(Clone)]
pub struct LocalChanges {
    seen: Arc<std::sync::Mutex<Seen>>,
    outbox_written: Arc<Notify>,
}

impl LocalChanges {
    /// Subscribes to `changes` (Explore's bus); call it before anything writes.
    pub fn watch(changes: &ChangeBus) -> Self {
        let local = Self { seen: Arc::default(), outbox_written: Arc::new(Notify::new()) };
        let (marks, wake) = (local.seen.clone(), local.outbox_written.clone());
        changes.on_publish("queue", move |changes| {
            let mut marks = marks.lock().unwrap_or_else(|p| p.into_inner());
            for change in changes.iter() {
                marks.first(&consumer::change_key(change));
            }
            wake.notify_one();
            Box::pin(async {})
        });
        local
    }
}

/// Makes a child spec anew for each start of the queue's subtree.
pub type BridgeChild = Arc<dyn Fn() -> ChildSpec + Send + Sync>;

/// The queue's parts, built before the tree starts.
pub struct QueueParts {
    pub queue: Queue,
    pub broker: Broker,
    pub running: Running,
    pub lag: Arc<OutboxLag>,
    /// This node's id (jobs' `locked_by`, the SQLite relay lease holder).
    pub node: String,
    /// Makes the RabbitMQ bridge's child, with `queue.amqp_url`.
    pub bridge: Option<BridgeChild>,
    /// Probes for `/health`: `amqp` (with `queue.amqp_url`) and `outbox`.
    pub probes: Vec<Arc<dyn Probe>>,
    consumers: Consumers,
    db: DatabaseConnection,
    remote_changes: ChangeBus,
    local: Arc<std::sync::Mutex<Seen>>,
}

/// Builds the queue's parts over `db`: item changes other processes commit reach
/// `remote_changes`; `local` marks this node's own (see [`LocalChanges`]). With no `queue.amqp_url`, unfinished jobs no live worker
/// holds are handed to this node's workers again.
pub async fn build(
    settings: &Settings,
    db: DatabaseConnection,
    remote_changes: ChangeBus,
    local: LocalChanges,
    deps: &kinds::KindDeps,
) -> Result<QueueParts, QueueSetupError> {
    let LocalChanges { seen: local, outbox_written } = local;
    let q = &settings.queue;
    let node = uuid::Uuid::new_v4().to_string();
    let handlers = kinds::handlers(deps);
    for entry in &q.schedules {
        let Some(handler) = handlers.get(&entry.kind) else {
            return Err(QueueSetupError::UnknownScheduleKind {
                name: entry.name.clone(),
                kind: entry.kind.clone(),
                known: handlers.kinds().join(", "),
            });
        };
        if let Err(fields) = handler.validate(&entry.payload) {
            let reason = fields.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("; ");
            return Err(QueueSetupError::BadSchedulePayload {
                name: entry.name.clone(),
                kind: entry.kind.clone(),
                reason,
            });
        }
    }
    let store = JobStore::new(db.clone(), q.max_pending_jobs);
    let queue = Queue::new(settings, store.clone(), handlers, outbox_written);
    let lag = Arc::new(OutboxLag::default());
    let mut probes: Vec<Arc<dyn Probe>> =
        vec![Arc::new(relay::OutboxProbe::new(lag.clone(), Duration::from_secs(q.outbox_lag_alert_secs)))];
    let (broker, consumers, bridge) = if q.uses_amqp() {
        let config = BridgeConfig::from_settings(q);
        let (bridge, consumers) = Bridge::new(&config);
        probes.push(Arc::new(bridge.probe()));
        let handle = bridge.clone();
        let child: BridgeChild = Arc::new(move || super::bridge::child_spec(config.clone(), handle.clone()));
        (Broker::Amqp(bridge), consumers, Some(child))
    } else {
        let capacity = usize::try_from(q.max_pending_jobs).unwrap_or(usize::MAX).saturating_add(q.workers);
        let (local, consumers) = LocalBroker::new(capacity);
        requeue_orphans(&store, &local, q.max_pending_jobs).await?;
        (Broker::Local(local), consumers, None)
    };
    Ok(QueueParts {
        queue,
        broker,
        running: Running::default(),
        lag,
        node,
        bridge,
        probes,
        consumers,
        db,
        remote_changes,
        local,
    })
}

async fn requeue_orphans(store: &JobStore, local: &LocalBroker, limit: u64) -> Result<(), QueueSetupError> {
    let orphans = store.orphans(limit).await.map_err(|e| QueueSetupError::Database(e.to_string()))?;
    if !orphans.is_empty() {
        tracing::info!(jobs = orphans.len(), "unfinished jobs handed to this node's workers again");
    }
    for job in orphans {
        let body = json!({ "v": 1, "job_id": job.id, "kind": job.kind });
        let message =
            Outgoing { id: job.id.clone(), route: Route::Work, body: Bytes::from(body.to_string()) };
        if let Err(err) = local.publish(message).await {
            tracing::warn!(job = %job.id, error = %err, "an unfinished job could not be queued again");
        }
    }
    Ok(())
}

/// The queue's subtree.
pub fn child_spec(settings: &Settings, parts: QueueParts) -> ChildSpec {
    let supervisor = settings.supervisor("queue");
    let workers_supervisor = settings.supervisor("queue-workers");
    let q = settings.queue.clone();
    let QueueParts {
        queue, broker, running, lag, node, bridge, consumers, db, remote_changes, local, ..
    } = parts;
    let Consumers { work, events } = consumers;
    let pool = Arc::new(Pool {
        queue: queue.clone(),
        broker: broker.clone(),
        deliveries: Mutex::new(work),
        running: running.clone(),
        node: node.clone(),
        limits: Limits {
            job_timeout: Duration::from_secs(q.job_timeout_secs),
            progress_interval: Duration::from_millis(q.progress_interval_ms),
            retry_delays: q.retry_delays_ms.iter().map(|&ms| Duration::from_millis(ms)).collect(),
        },
    });
    let sinks = Arc::new(Sinks {
        queue: queue.clone(),
        running,
        remote_changes,
        deliveries: Mutex::new(events),
        seen: std::sync::Mutex::new(Seen::default()),
        local,
    });
    let relay_config = RelayConfig {
        poll: Duration::from_millis(q.outbox_poll_ms),
        batch: q.outbox_batch,
        outbox_retention: q.outbox_retention(),
        job_retention: q.job_retention(),
        node,
    };
    let relay_parts = RelayParts {
        db: db.clone(),
        store: queue.store().clone(),
        broker,
        wake: queue.outbox_signal().clone(),
        lag,
    };
    let schedules = queue.schedules().clone();
    ChildSpec::new("queue", "supervisor", move |ctx| {
        let mut children = Vec::new();
        if let Some(bridge) = &bridge {
            children.push(bridge());
        }
        children.push(relay::child_spec(relay_config.clone(), relay_parts.clone()));
        children.push(consumer::child_spec(sinks.clone()));
        children.push(schedule::child_spec(schedules.clone(), queue.clone()));
        children.push(workers_child(workers_supervisor.clone(), &pool, q.workers));
        let supervisor = supervisor.clone();
        async move {
            let args = SupervisorArgs { children, stats: ctx.stats, events: ctx.events };
            let (actor, _handle) = Actor::spawn_linked(None, supervisor, args, ctx.supervisor).await?;
            Ok(StartedChild::supervisor(actor))
        }
    })
}

fn workers_child(
    supervisor: crate::supervision::supervisor::Supervisor,
    pool: &Arc<Pool>,
    count: usize,
) -> ChildSpec {
    let pool = pool.clone();
    ChildSpec::new("queue-workers", "supervisor", move |ctx| {
        let children = worker::children(&pool, count);
        let supervisor = supervisor.clone();
        async move {
            let args = SupervisorArgs { children, stats: ctx.stats, events: ctx.events };
            let (actor, _handle) = Actor::spawn_linked(None, supervisor, args, ctx.supervisor).await?;
            Ok(StartedChild::supervisor(actor))
        }
    })
}
