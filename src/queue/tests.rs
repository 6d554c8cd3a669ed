//! The queue's parts together, in process: a node's queue subtree over a fresh
//! database, driven through [`Queue`] and observed in the `jobs` table, the job
//! event bus and the in-process broker. (RabbitMQ is covered by the bridge's own
//! tests and the API tests.)

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::broker::Broker;
use super::model::{JobEvent, JobState};
use super::transport::{Outgoing, Route};
use super::tree::{self, QueueParts};
use super::{Queue, kinds};
use crate::config::{Environment, Settings};
use crate::db::testing::{Backend, TestDatabase};
use crate::explore::cached::{CachedExplore, Ttls};
use crate::explore::{ChangeBus, ExploreService, change};
use crate::supervision::chaos::ChaosAction;
use crate::supervision::root::RootTree;

/// A node's queue and what the tests look at.
pub struct Node {
    pub tree: RootTree,
    pub queue: Queue,
    pub broker: Broker,
    pub remote: ChangeBus,
    pub db: sea_orm::DatabaseConnection,
}

/// Test settings (`config/test.toml`) with `tweak` applied.
pub fn settings(data_dir: &std::path::Path, tweak: impl FnOnce(&mut Settings)) -> Settings {
    let figment = Settings::figment(&Environment::Test, std::path::Path::new("config"));
    let mut settings = Settings::from_figment_in(figment, Environment::Test).expect("test settings");
    settings.data_dir = data_dir.to_path_buf();
    tweak(&mut settings);
    settings
}

impl Node {
    /// Starts a queue subtree over `db`.
    pub async fn start(db: sea_orm::DatabaseConnection, settings: Settings) -> Self {
        let settings = Arc::new(settings);
        let explore = ExploreService::new(db.clone(), b"cursor-secret-for-tests-0123456789");
        let cached = CachedExplore::new(explore.clone(), None, Ttls::from_settings(&settings.cache));
        let inference = crate::inference::Inference::disabled(&settings.inference);
        let deps = kinds::KindDeps {
            settings: settings.clone(),
            db: db.clone(),
            semantic: crate::explore::semantic::Semantic::detached(cached.clone(), inference.clone()),
            explore,
            cached,
            inference,
        };
        let remote = change::change_bus();
        let parts: QueueParts = tree::build(
            &settings,
            db.clone(),
            remote.clone(),
            tree::LocalChanges::watch(deps.explore.changes()),
            &deps,
        )
        .await
        .expect("the queue builds");
        let (queue, broker) = (parts.queue.clone(), parts.broker.clone());
        let spec = tree::child_spec(&settings, parts);
        let tree = RootTree::start(settings.supervisor("root"), vec![spec]).await.expect("the tree starts");
        Self { tree, queue, broker, remote, db }
    }

    /// Submits a `noop_sleep` job; its id.
    pub async fn noop(&self, payload: Value) -> String {
        let (job, created) =
            self.queue.submit("noop_sleep", payload, "tester", None).await.expect("submitted");
        assert!(created);
        job.id
    }

    /// Polls the job until `done` holds for its row, or fails after 20 s.
    pub async fn wait_for(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&crate::db::entities::job::Model) -> bool,
    ) -> crate::db::entities::job::Model {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // a read refused under load (no pooled connection in time) is tried again
            let row = self.queue.store().get(id).await.ok().flatten();
            if let Some(row) = &row
                && done(row)
            {
                return row.clone();
            }
            assert!(Instant::now() < deadline, "job {id} never got {what}: {row:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the job is in a terminal state.
    pub async fn finished(&self, id: &str) -> crate::db::entities::job::Model {
        self.wait_for(id, "to a terminal state", |row| {
            JobState::parse(&row.state).is_some_and(JobState::is_terminal)
        })
        .await
    }

    pub async fn stop(self) {
        self.tree.shutdown(Instant::now() + Duration::from_secs(2), Duration::from_millis(200)).await;
    }
}

/// Waits until the relay has stamped every outbox row published.
async fn outbox_drained(db: &sea_orm::DatabaseConnection, within: Duration) {
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let deadline = Instant::now() + within;
    loop {
        let left = crate::db::entities::outbox::Entity::find()
            .filter(crate::db::entities::outbox::Column::PublishedAt.is_null())
            .count(db)
            .await
            .unwrap();
        if left == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{left} outbox rows left unpublished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn node(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> (TestDatabase, Node) {
    let (database, db) = TestDatabase::migrated(backend).await;
    let settings = settings(&database.dir, tweak);
    let node = Node::start(db, settings).await;
    (database, node)
}

#[tokio::test]
async fn a_job_runs_to_success_with_monotonic_progress_and_a_final_event() {
    let (_db, node) = node(Backend::Sqlite, |_| {}).await;
    let mut events = node.queue.events().subscribe("test");
    let id = node.noop(json!({ "steps": 8, "step_ms": 5 })).await;
    let row = node.finished(&id).await;
    assert_eq!(row.state, "succeeded", "{row:?}");
    assert_eq!((row.attempts, row.processed, row.total), (1, 8, Some(8)));
    assert_eq!(row.result.as_ref().and_then(|r| r.get("steps")), Some(&json!(8)));
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let event =
            tokio::time::timeout_at(deadline, events.recv()).await.expect("a final event").expect("open");
        match &*event {
            JobEvent::Progress { job_id, progress, .. } if *job_id == id => seen.push(progress.processed),
            JobEvent::Finished { job_id, state, .. } if *job_id == id => {
                assert_eq!(*state, JobState::Succeeded);
                break;
            }
            _ => {}
        }
    }
    assert!(!seen.is_empty(), "progress events arrive");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "progress only moves forward: {seen:?}");
    node.stop().await;
}

#[tokio::test]
async fn a_killed_worker_is_replaced_and_its_job_resumes_from_the_checkpoint() {
    let (_db, node) = node(Backend::Sqlite, |s| s.queue.workers = 1).await;
    let id = node.noop(json!({ "steps": 60, "step_ms": 20 })).await;
    node.wait_for(&id, "some progress", |row| row.processed >= 5).await;
    node.tree.chaos("job-worker-0", ChaosAction::Kill).await.expect("the worker is killed");
    let row = node.finished(&id).await;
    assert_eq!(row.state, "succeeded", "{row:?}");
    assert_eq!(row.attempts, 2, "the redelivered job is a second attempt");
    let resumed = row.result.as_ref().and_then(|r| r["resumed_from"].as_u64()).unwrap_or(0);
    assert!(resumed >= 5, "it resumed from its checkpoint, not from zero: {row:?}");
    assert_eq!(row.processed, 60);
    node.stop().await;
}

#[tokio::test]
async fn a_failing_job_is_retried_with_backoff_then_fails_into_the_dead_letter_queue() {
    let (_db, node) = node(Backend::Sqlite, |s| s.queue.max_attempts = 3).await;
    let retried = node.noop(json!({ "steps": 1, "fail_attempts": 1 })).await;
    let failing = node.noop(json!({ "steps": 1, "fail_attempts": 99 })).await;
    let fatal = node.noop(json!({ "steps": 1, "fail_attempts": 99, "fatal": true })).await;
    let row = node.finished(&retried).await;
    assert_eq!((row.state.as_str(), row.attempts), ("succeeded", 2), "{row:?}");
    let row = node.finished(&failing).await;
    assert_eq!((row.state.as_str(), row.attempts), ("failed", 3), "{row:?}");
    assert!(row.last_error.as_deref().is_some_and(|e| e.contains("on purpose")), "{row:?}");
    let row = node.finished(&fatal).await;
    assert_eq!((row.state.as_str(), row.attempts), ("failed", 1), "a fatal error is not retried: {row:?}");
    let Broker::Local(local) = &node.broker else { panic!("embedded") };
    assert_eq!(local.dead_lettered(), 2, "both failed jobs went to the dead-letter queue");
    node.stop().await;
}

#[tokio::test]
async fn cancelling_a_running_job_stops_it_and_a_queued_one_never_runs() {
    let (_db, node) = node(Backend::Sqlite, |s| s.queue.workers = 1).await;
    let running = node.noop(json!({ "steps": 500, "step_ms": 20 })).await;
    let queued = node.noop(json!({ "steps": 1 })).await;
    node.wait_for(&running, "to run", |row| row.state == "running").await;
    let view = node.queue.cancel(&queued).await.expect("cancelled");
    assert_eq!(view.state, JobState::Cancelled);
    let view = node.queue.cancel(&running).await.expect("asked to cancel");
    assert!(view.cancel_requested || view.state == JobState::Cancelled, "{view:?}");
    let row = node.finished(&running).await;
    assert_eq!(row.state, "cancelled", "{row:?}");
    assert!(row.processed < 500);
    let row = node.finished(&queued).await;
    assert_eq!((row.state.as_str(), row.attempts), ("cancelled", 0), "{row:?}");
    assert!(node.queue.cancel(&running).await.is_err(), "a finished job cannot be cancelled");
    node.stop().await;
}

#[tokio::test]
async fn an_undecodable_message_is_dead_lettered_and_a_duplicate_runs_nothing_twice() {
    let (_db, node) = node(Backend::Sqlite, |_| {}).await;
    let poison = Outgoing { id: "poison".into(), route: Route::Work, body: Bytes::from_static(b"not json") };
    node.broker.publish(poison).await.expect("published");
    let id = node.noop(json!({ "steps": 3, "step_ms": 5 })).await;
    let row = node.finished(&id).await;
    assert_eq!((row.state.as_str(), row.attempts), ("succeeded", 1));
    // the same work message again (a relay publishes at least once)
    let again = Outgoing {
        id: "dup".into(),
        route: Route::Work,
        body: Bytes::from(json!({ "v": 1, "job_id": id, "kind": "noop_sleep" }).to_string()),
    };
    node.broker.publish(again).await.expect("published");
    let Broker::Local(local) = &node.broker else { panic!("embedded") };
    let deadline = Instant::now() + Duration::from_secs(5);
    while local.dead_lettered() < 1 {
        assert!(Instant::now() < deadline, "the poison message is dead-lettered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // a fresh job after the duplicate proves the duplicate was handled (one worker suffices)
    let later = node.noop(json!({ "steps": 1 })).await;
    node.finished(&later).await;
    let row = node.queue.store().get(&id).await.unwrap().unwrap();
    assert_eq!((row.state.as_str(), row.attempts), ("succeeded", 1), "the duplicate did not run it again");
    node.stop().await;
}

#[tokio::test]
async fn an_unfinished_job_is_handed_out_again_when_an_embedded_node_restarts() {
    let (database, db) = TestDatabase::migrated(Backend::Sqlite).await;
    let first = Node::start(db.clone(), settings(&database.dir, |s| s.queue.workers = 1)).await;
    let id = first.noop(json!({ "steps": 200, "step_ms": 20 })).await;
    first.wait_for(&id, "some progress", |row| row.processed >= 3).await;
    // the node dies: its tree goes, the job stays `running` with its lease
    first.stop().await;
    // a lease run out (the test does not wait 30 s for it)
    use sea_orm::{ConnectionTrait, Statement};
    db.execute_raw(Statement::from_string(db.get_database_backend(), "UPDATE jobs SET locked_until = NULL"))
        .await
        .unwrap();
    let second = Node::start(db, settings(&database.dir, |_| {})).await;
    let row = second.wait_for(&id, "a second attempt", |row| row.attempts == 2 && row.processed >= 3).await;
    assert_eq!(row.state, "running");
    let view = second.queue.cancel(&id).await.unwrap();
    assert!(view.cancel_requested || view.state == JobState::Cancelled);
    second.finished(&id).await;
    second.stop().await;
}

#[tokio::test]
async fn the_relay_publishes_item_changes_another_process_committed() {
    let (_db, node) = node(Backend::Sqlite, |_| {}).await;
    let mut remote = node.remote.subscribe("test");
    // what `castwork import` in another process writes: an item change's outbox row, nothing in process
    let change = crate::explore::ItemChange {
        id: "elsewhere".into(),
        version: 1,
        before: None,
        after: Some(crate::explore::Families {
            group: "g".into(),
            category_code: "cs.AI".into(),
            tags: vec![],
        }),
    };
    crate::outbox::append(&node.db, vec![change.to_outbox_event()]).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), remote.recv())
        .await
        .expect("within the poll bound")
        .unwrap();
    assert_eq!(*got, vec![change]);
    outbox_drained(&node.db, Duration::from_secs(5)).await;
    node.stop().await;
}

#[tokio::test]
async fn two_nodes_relay_one_postgres_outbox_and_publish_each_row_once() {
    let (database, db) = TestDatabase::migrated(Backend::Postgres).await;
    let rows = 400;
    let tweak = |s: &mut Settings| {
        s.queue.outbox_batch = 25;
        s.queue.workers = 1;
    };
    let a = Node::start(database.connect().await, settings(&database.dir, tweak)).await;
    let b = Node::start(database.connect().await, settings(&database.dir, tweak)).await;
    // written by "another process" once both relays run: both poll for them at once
    for chunk in 0..4 {
        let events: Vec<_> = (0..rows / 4)
            .map(|i| crate::outbox::OutboxEvent {
                event_type: "test.event",
                aggregate_id: format!("a{chunk}-{i}"),
                payload: json!({ "i": i }),
            })
            .collect();
        crate::outbox::append(&db, events).await.unwrap();
    }
    outbox_drained(&db, Duration::from_secs(20)).await;
    use sea_orm::{EntityTrait, PaginatorTrait};
    let published = |node: &Node| {
        let Broker::Local(local) = &node.broker else { panic!("embedded") };
        local.events_published()
    };
    let (pa, pb) = (published(&a), published(&b));
    let stamped = crate::db::entities::outbox::Entity::find().count(&db).await.unwrap();
    assert_eq!(stamped, rows, "every row is there, stamped");
    assert_eq!(pa + pb, rows, "every row published exactly once between the two relays ({pa} + {pb})");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_schedule_tick_starts_one_job_however_many_nodes_try() {
    let (_database, node) = node(Backend::Sqlite, |_| {}).await;
    let tick = chrono::Utc::now();
    let new = || super::store::NewJob {
        kind: "noop_sleep".into(),
        payload: json!({}),
        created_by: "schedule:test".into(),
        idempotency_key: None,
        max_attempts: 1,
    };
    let first = node.queue.store().submit_scheduled(new(), "test", tick).await.unwrap();
    let second = node.queue.store().submit_scheduled(new(), "test", tick).await.unwrap();
    assert!(first.is_some() && second.is_none());
    let last = node.queue.store().last_run("test").await.unwrap().unwrap();
    assert_eq!(Some(last.job_id), first.map(|job| job.id));
    node.stop().await;
}

#[tokio::test]
async fn schedulers_on_two_nodes_start_each_tick_once() {
    let (database, db) = TestDatabase::migrated(Backend::Postgres).await;
    let tweak = |s: &mut Settings| {
        s.queue.schedules = vec![crate::config::ScheduleSettings {
            name: "every-second".into(),
            cron: "* * * * * *".into(),
            kind: "noop_sleep".into(),
            payload: json!({}),
        }];
    };
    let a = Node::start(database.connect().await, settings(&database.dir, tweak)).await;
    let b = Node::start(database.connect().await, settings(&database.dir, tweak)).await;
    use sea_orm::{EntityTrait, PaginatorTrait};
    let deadline = Instant::now() + Duration::from_secs(20);
    while crate::db::entities::job_schedule_run::Entity::find().count(&db).await.unwrap() < 3 {
        assert!(Instant::now() < deadline, "ticks are started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.stop().await;
    b.stop().await;
    let runs = crate::db::entities::job_schedule_run::Entity::find().all(&db).await.unwrap();
    let jobs = crate::db::entities::job::Entity::find().all(&db).await.unwrap();
    assert_eq!(runs.len(), jobs.len(), "one job per tick, however many schedulers saw it");
    let mut ticks: Vec<_> = runs.iter().map(|r| r.tick).collect();
    ticks.dedup();
    assert_eq!(ticks.len(), runs.len());
}

/// A node whose jobs and events go through the local RabbitMQ under a prefix of its own.
async fn amqp_node(
    backend: Backend,
    tweak: impl FnOnce(&mut Settings),
) -> (TestDatabase, super::testing::AmqpScope, Node) {
    let (database, db) = TestDatabase::migrated(backend).await;
    let mut settings = settings(&database.dir, tweak);
    let scope = super::testing::AmqpScope::new(&settings.queue.retry_delays_ms);
    settings.queue.amqp_url = crate::config::Secret::new(crate::db::testing::amqp_url());
    settings.queue.prefix = scope.prefix.clone();
    let node = Node::start(db, settings).await;
    (database, scope, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_rabbitmq_a_job_runs_end_to_end_and_a_killed_worker_resumes_from_its_checkpoint() {
    let (_db, _scope, node) = amqp_node(Backend::Sqlite, |s| s.queue.workers = 1).await;
    let mut events = node.queue.events().subscribe("test");
    let quick = node.noop(json!({ "steps": 4, "step_ms": 5 })).await;
    let row = node.finished(&quick).await;
    assert_eq!((row.state.as_str(), row.attempts), ("succeeded", 1), "{row:?}");
    // its finished event came back through the events exchange
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let event =
            tokio::time::timeout_at(deadline, events.recv()).await.expect("a finished event").unwrap();
        if matches!(&*event, JobEvent::Finished { job_id, .. } if *job_id == quick) {
            break;
        }
    }
    let long = node.noop(json!({ "steps": 60, "step_ms": 20 })).await;
    node.wait_for(&long, "some progress", |row| row.processed >= 5).await;
    node.tree.chaos("job-worker-0", ChaosAction::Kill).await.expect("the worker is killed");
    let row = node.finished(&long).await;
    assert_eq!((row.state.as_str(), row.attempts, row.processed), ("succeeded", 2, 60), "{row:?}");
    let resumed = row.result.as_ref().and_then(|r| r["resumed_from"].as_u64()).unwrap_or(0);
    assert!(resumed >= 5, "it resumed from its checkpoint: {row:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_rabbitmq_failures_are_retried_through_the_retry_queues_then_dead_lettered() {
    let (_db, scope, node) = amqp_node(Backend::Sqlite, |s| s.queue.max_attempts = 2).await;
    let retried = node.noop(json!({ "steps": 1, "fail_attempts": 1 })).await;
    let failing = node.noop(json!({ "steps": 1, "fail_attempts": 99 })).await;
    let row = node.finished(&retried).await;
    assert_eq!((row.state.as_str(), row.attempts), ("succeeded", 2), "{row:?}");
    let row = node.finished(&failing).await;
    assert_eq!((row.state.as_str(), row.attempts), ("failed", 2), "{row:?}");
    // the failed job's message waits in the dead-letter queue
    let connection =
        lapin::Connection::connect(&crate::db::testing::amqp_url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let dead = super::transport::Names::new(&scope.prefix).dead_queue;
    let deadline = Instant::now() + Duration::from_secs(10);
    let message = loop {
        let got = channel
            .basic_get(dead.as_str().into(), lapin::options::BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        if let Some(message) = got {
            break message;
        }
        assert!(Instant::now() < deadline, "the failed job reaches the dead-letter queue");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let body: Value = serde_json::from_slice(&message.delivery.data).unwrap();
    assert_eq!(body["job_id"], json!(failing));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_over_rabbitmq_publish_each_outbox_row_once() {
    let (database, db) = TestDatabase::migrated(Backend::Postgres).await;
    let base = settings(&database.dir, |_| {});
    let scope = super::testing::AmqpScope::new(&base.queue.retry_delays_ms);
    let tweak = |s: &mut Settings| {
        s.queue.amqp_url = crate::config::Secret::new(crate::db::testing::amqp_url());
        s.queue.prefix = scope.prefix.clone();
        s.queue.outbox_batch = 20;
    };
    let a = Node::start(database.connect().await, settings(&database.dir, tweak)).await;
    let b = Node::start(database.connect().await, settings(&database.dir, tweak)).await;
    // a consumer of the events exchange counting event ids
    let connection =
        lapin::Connection::connect(&crate::db::testing::amqp_url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let exchange = super::transport::Names::new(&scope.prefix).events_exchange;
    let deadline = Instant::now() + Duration::from_secs(10);
    // the nodes declare the exchange when they connect
    let queue = loop {
        let queue = channel
            .queue_declare(
                "".into(),
                lapin::options::QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap();
        let bound = channel
            .queue_bind(
                queue.name().as_str().into(),
                exchange.as_str().into(),
                "test.#".into(),
                Default::default(),
                Default::default(),
            )
            .await;
        if bound.is_ok() {
            break queue;
        }
        assert!(Instant::now() < deadline, "the events exchange is declared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rows = 300;
    for chunk in 0..3 {
        let events: Vec<_> = (0..rows / 3)
            .map(|i| crate::outbox::OutboxEvent {
                event_type: "test.event",
                aggregate_id: format!("a{chunk}-{i}"),
                payload: json!({ "i": i }),
            })
            .collect();
        crate::outbox::append(&db, events).await.unwrap();
    }
    let mut consumer = channel
        .basic_consume(queue.name().as_str().into(), "count".into(), Default::default(), Default::default())
        .await
        .unwrap();
    use futures::StreamExt;
    let mut ids = std::collections::HashMap::<String, u32>::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ids.len() < rows {
        let delivery = tokio::time::timeout_at(deadline, consumer.next())
            .await
            .expect("all rows arrive")
            .unwrap()
            .unwrap();
        let body: Value = serde_json::from_slice(&delivery.data).unwrap();
        *ids.entry(body["id"].as_str().unwrap().to_owned()).or_default() += 1;
        delivery.ack(Default::default()).await.unwrap();
    }
    // anything published twice would arrive shortly after
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await
    {
        let body: Value = serde_json::from_slice(&delivery.data).unwrap();
        *ids.entry(body["id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert_eq!(ids.len(), rows);
    assert!(ids.values().all(|&n| n == 1), "every row published once");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_tick_missed_while_every_node_was_down_runs_once_at_the_next_start() {
    let (database, db) = TestDatabase::migrated(Backend::Sqlite).await;
    // a yearly schedule: its latest tick passed long before this test
    let tweak = |s: &mut Settings| {
        s.queue.schedules = vec![crate::config::ScheduleSettings {
            name: "yearly".into(),
            cron: "0 0 1 1 *".into(),
            kind: "noop_sleep".into(),
            payload: json!({}),
        }];
    };
    use sea_orm::{EntityTrait, PaginatorTrait};
    let count = |db: sea_orm::DatabaseConnection| async move {
        crate::db::entities::job_schedule_run::Entity::find().count(&db).await.unwrap()
    };
    let first = Node::start(db.clone(), settings(&database.dir, tweak)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(db.clone()).await < 1 {
        assert!(Instant::now() < deadline, "the missed tick is started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.stop().await;
    // the next start finds it started: nothing runs twice
    let second = Node::start(db.clone(), settings(&database.dir, tweak)).await;
    // wait until its scheduler has looked at the schedule
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tree = second.tree.tree().await;
        if tree.find("job-scheduler").is_some_and(|node| node.messages_handled >= 1) {
            break;
        }
        assert!(Instant::now() < deadline, "the second scheduler checks its schedule");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let views = super::schedule::views(&second.queue, second.queue.schedules()).await.unwrap();
    assert_eq!(views.len(), 1);
    assert!(views[0].last_tick.is_some() && views[0].next_tick > views[0].last_tick, "{views:?}");
    second.stop().await;
    assert_eq!(count(db.clone()).await, 1);
    let jobs = crate::db::entities::job::Entity::find().count(&db).await.unwrap();
    assert_eq!(jobs, 1, "one job for the missed tick");
}
