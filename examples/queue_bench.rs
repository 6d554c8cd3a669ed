//! Jobs and events over RabbitMQ, side by side with raw lapin, for
//! `scripts/bench/queue.sh` (method in docs/BENCHMARKS.md).
//!
//! `queue_bench jobs N`: N trivial jobs (`noop_sleep`, one step of 0 ms)
//! submitted through castwork's `Queue` on an in-process node (its queue subtree:
//! relay, bridge, 4 workers) until all are `succeeded` in the database, against a
//! raw lapin loop that publishes N messages of the same size to a durable quorum
//! queue with publisher confirms (128 in flight) and consumes them with manual
//! acks (prefetch 8).
//!
//! `queue_bench events N`: N outbox rows published by the relay to the events
//! exchange until a plain consumer has received all of them, against raw lapin
//! publishing N messages of the same size to a topic exchange with confirms.
//! Then the outbox lag (row written → event received) p50 and p99 at a steady
//! 2,000 rows per second for 5 s.
//!
//! Environment: `BENCH_AMQP_URL` (`amqp://guest:guest@127.0.0.1:5672/%2f`); the
//! database is a fresh PostgreSQL one (`CASTWORK_TEST_PG_URL`), dropped at the end.
//! Prints one `RESULT` line per measurement.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use castwork::config::{Environment, Settings};
use castwork::db::testing::{Backend, TestDatabase};
use castwork::explore::cached::{CachedExplore, Ttls};
use castwork::explore::{ExploreService, change};
use castwork::outbox::{self, OutboxEvent};
use castwork::queue::{Queue, kinds, tree};
use castwork::supervision::root::RootTree;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::json;

const IN_FLIGHT: usize = 128;
const PREFETCH: u16 = 8;

fn amqp_url() -> String {
    std::env::var("BENCH_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map(String::as_str).unwrap_or("jobs");
    let n: usize = args.get(2).map(|s| s.parse()).transpose().context("N must be a number")?.unwrap_or(2000);
    match what {
        "jobs" => {
            let body = json!({ "v": 1, "job_id": uuid::Uuid::new_v4().to_string(), "kind": "noop_sleep" })
                .to_string();
            let raw = raw_work(n, body.len()).await?;
            let castwork = castwork_jobs(n).await?;
            writeln!(
                std::io::stdout(),
                "RESULT jobs n={n} raw_per_sec={:.0} castwork_per_sec={:.0} ratio={:.2}",
                raw,
                castwork,
                castwork / raw
            )?;
        }
        "events" => {
            let raw = raw_events(n, 260).await?;
            let (castwork, p50, p99) = castwork_events(n).await?;
            writeln!(
                std::io::stdout(),
                "RESULT events n={n} raw_per_sec={:.0} castwork_per_sec={:.0} ratio={:.2} lag_p50_ms={:.1} lag_p99_ms={:.1}",
                raw,
                castwork,
                castwork / raw,
                p50,
                p99
            )?;
        }
        other => bail!("unknown benchmark {other:?}: jobs or events"),
    }
    Ok(())
}

/// Publishes `n` messages of `size` bytes with confirms (`IN_FLIGHT` outstanding)
/// to a fresh quorum queue and consumes them with manual acks: messages per second.
async fn raw_work(n: usize, size: usize) -> anyhow::Result<f64> {
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    let publish = conn.create_channel().await?;
    publish.confirm_select(ConfirmSelectOptions::default()).await?;
    let consume = conn.create_channel().await?;
    consume.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let queue = format!("bench-raw-{}", uuid::Uuid::new_v4().simple());
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    publish
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions { durable: true, ..Default::default() },
            arguments,
        )
        .await?;
    let mut consumer = consume
        .basic_consume(
            queue.as_str().into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let payload = vec![b'x'; size];
    let started = Instant::now();
    let consuming = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            let Some(Ok(delivery)) = consumer.next().await else { break };
            let _ = delivery.ack(BasicAckOptions::default()).await;
            got += 1;
        }
        got
    });
    let properties = BasicProperties::default().with_delivery_mode(2);
    futures::stream::iter(0..n)
        .map(|_| {
            let (publish, queue, payload, properties) = (&publish, &queue, &payload, properties.clone());
            async move {
                publish
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        payload,
                        properties,
                    )
                    .await?
                    .await
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .for_each(|_| async {})
        .await;
    let got = consuming.await?;
    let elapsed = started.elapsed();
    // the consumer's channel first: deleting a queue with a live consumer cancels it under lapin's feet
    let _ = consume.close(200, "done".into()).await;
    let _ = publish.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    if got < n {
        bail!("raw consumer got {got} of {n}");
    }
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// Publishes `n` events of `size` bytes to a topic exchange with confirms; a
/// consumer on an exclusive queue bound `#` receives them: events per second.
async fn raw_events(n: usize, size: usize) -> anyhow::Result<f64> {
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    let publish = conn.create_channel().await?;
    publish.confirm_select(ConfirmSelectOptions::default()).await?;
    let exchange = format!("bench-raw-events-{}", uuid::Uuid::new_v4().simple());
    publish
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions { auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    let mut consumer = bound_consumer(&conn, &exchange).await?;
    let payload = vec![b'x'; size];
    let started = Instant::now();
    let consuming = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            let Some(Ok(delivery)) = consumer.next().await else { break };
            let _ = delivery.ack(BasicAckOptions::default()).await;
            got += 1;
        }
        got
    });
    let properties = BasicProperties::default().with_delivery_mode(2);
    futures::stream::iter(0..n)
        .map(|_| {
            let (publish, exchange, payload, properties) =
                (&publish, &exchange, &payload, properties.clone());
            async move {
                publish
                    .basic_publish(
                        exchange.as_str().into(),
                        "test.event".into(),
                        BasicPublishOptions::default(),
                        payload,
                        properties,
                    )
                    .await?
                    .await
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .for_each(|_| async {})
        .await;
    let got = consuming.await?;
    if got < n {
        bail!("raw consumer got {got} of {n}");
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

async fn bound_consumer(conn: &Connection, exchange: &str) -> anyhow::Result<lapin::Consumer> {
    let channel = conn.create_channel().await?;
    channel.basic_qos(256, BasicQosOptions::default()).await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.name().as_str().into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(channel
        .basic_consume(
            queue.name().as_str().into(),
            "bench-events".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?)
}

struct Node {
    tree: RootTree,
    queue: Queue,
    db: DatabaseConnection,
    prefix: String,
    _database: TestDatabase,
}

async fn node() -> anyhow::Result<Node> {
    let (database, db) = TestDatabase::migrated(Backend::Postgres).await;
    let prefix = format!("castwork-bench-{}", uuid::Uuid::new_v4().simple());
    let figment = Settings::figment(&Environment::Test, std::path::Path::new("config"));
    let mut settings = Settings::from_figment_in(figment, Environment::Test)?;
    settings.data_dir = database.dir.clone();
    settings.queue.amqp_url = castwork::config::Secret::new(amqp_url());
    settings.queue.prefix = prefix.clone();
    settings.queue.max_pending_jobs = 1_000_000;
    let settings = Arc::new(settings);
    let explore = ExploreService::new(db.clone(), b"queue-bench-cursor-secret-0123456789");
    let cached = CachedExplore::new(explore.clone(), None, Ttls::from_settings(&settings.cache));
    let inference = castwork::inference::Inference::disabled(&settings.inference);
    let deps = kinds::KindDeps {
        settings: settings.clone(),
        db: db.clone(),
        semantic: castwork::explore::semantic::Semantic::detached(cached.clone(), inference.clone()),
        explore,
        cached,
        inference,
    };
    let parts = tree::build(
        &settings,
        db.clone(),
        change::change_bus(),
        tree::LocalChanges::watch(deps.explore.changes()),
        &deps,
    )
    .await?;
    let queue = parts.queue.clone();
    let spec = tree::child_spec(&settings, parts);
    let tree = RootTree::start(settings.supervisor("root"), vec![spec]).await?;
    Ok(Node { tree, queue, db, prefix, _database: database })
}

async fn castwork_jobs(n: usize) -> anyhow::Result<f64> {
    let node = node().await?;
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|_| node.queue.submit("noop_sleep", json!({ "steps": 1 }), "bench", None))
        .buffer_unordered(16)
        .for_each(|r| async move {
            if let Err(err) = r {
                eprintln!("submit failed: {err}");
            }
        })
        .await;
    use castwork::db::entities::job;
    loop {
        let done =
            job::Entity::find().filter(job::Column::State.eq("succeeded")).count(&node.db).await? as usize;
        if done >= n {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("only {done} of {n} jobs succeeded in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    node.tree.shutdown(tokio::time::Instant::now() + Duration::from_secs(5), Duration::from_secs(1)).await;
    Ok(rate)
}

async fn castwork_events(n: usize) -> anyhow::Result<(f64, f64, f64)> {
    let node = node().await?;
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    // the node declared its exchange at connect; wait for it
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut consumer = bound_consumer(&conn, &format!("{}.events", node.prefix)).await?;
    let events = |count: usize| -> Vec<OutboxEvent> {
        (0..count)
            .map(|i| OutboxEvent {
                event_type: "test.event",
                aggregate_id: format!("a{i}"),
                payload: json!({ "pad": "x".repeat(64) }),
            })
            .collect()
    };
    for chunk in 0..n.div_ceil(1000) {
        outbox::append(&node.db, events(1000.min(n - chunk * 1000))).await?;
    }
    node.queue.outbox_written();
    let started = Instant::now();
    let mut got = 0;
    while got < n {
        let Some(Ok(delivery)) = consumer.next().await else { bail!("the consumer ended") };
        let _ = delivery.ack(BasicAckOptions::default()).await;
        got += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    // lag at a steady 2,000 rows per second for 5 s
    let producer_db = node.db.clone();
    let producing = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        for _ in 0..500 {
            tick.tick().await;
            let _ = outbox::append(&producer_db, events(20)).await;
        }
    });
    let mut lags = Vec::with_capacity(10_000);
    while lags.len() < 10_000 {
        let Some(Ok(delivery)) = consumer.next().await else { bail!("the consumer ended") };
        let body: serde_json::Value = serde_json::from_slice(&delivery.data)?;
        let _ = delivery.ack(BasicAckOptions::default()).await;
        if let Some(at) =
            body["created_at"].as_str().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        {
            let lag = chrono::Utc::now().signed_duration_since(at);
            lags.push(lag.num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    producing.await?;
    lags.sort_by(f64::total_cmp);
    let at = |q: f64| lags[((lags.len() as f64 - 1.0) * q).round() as usize];
    let (p50, p99) = (at(0.5), at(0.99));
    node.tree.shutdown(tokio::time::Instant::now() + Duration::from_secs(5), Duration::from_secs(1)).await;
    let _ = node.queue.store();
    Ok((rate, p50, p99))
}
