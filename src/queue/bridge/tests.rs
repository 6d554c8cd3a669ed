//! Tests against the machine's RabbitMQ (`CASTWORK_TEST_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`: [`crate::db::testing`]). Each test
//! declares its own names under a random prefix and deletes them at the end, even
//! when it fails.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use futures::FutureExt;
use lapin::options::{BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use ractor::ActorRef;
use tokio::task::JoinHandle;

use super::*;
use crate::db::testing::{amqp_address, amqp_prefix, amqp_url};
use crate::supervision::tree::ActorStats;

mod proxy;

use proxy::Proxy;

const DEADLINE: Duration = Duration::from_secs(10);
const SHORT_DELAY: Duration = Duration::from_millis(50);
const LONG_DELAY: Duration = Duration::from_millis(100);

fn config(url: &str, prefix: &str) -> BridgeConfig {
    BridgeConfig {
        url: Secret::new(url),
        names: Names::new(prefix),
        prefetch: 4,
        retry_delays: vec![LONG_DELAY, SHORT_DELAY],
        delivery_limit: 5,
        reconnect: Backoff::new(Duration::from_millis(50), Duration::from_millis(400), 2.0, 0.5).unwrap(),
        consume_work: true,
        confirm_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(5),
        breaker: BreakerConfig::default(),
    }
}

/// A bridge actor (not supervised) with its handle and receivers.
struct Node {
    bridge: Bridge,
    consumers: Consumers,
    actor: ActorRef<BridgeMsg>,
    handle: JoinHandle<()>,
}

impl Node {
    async fn start(config: BridgeConfig) -> Self {
        let (bridge, consumers) = Bridge::new(&config);
        let args = BridgeArgs { bridge: bridge.clone(), stats: Arc::new(ActorStats::default()) };
        let (actor, handle) = Actor::spawn(None, QueueBridge { config }, args).await.unwrap();
        Self { bridge, consumers, actor, handle }
    }

    /// Started, and connected.
    async fn up(config: BridgeConfig) -> Self {
        let node = Self::start(config).await;
        node.until(|state| *state == LinkState::Up).await;
        node
    }

    async fn until(&self, done: impl FnMut(&LinkState) -> bool) -> LinkState {
        let mut link = self.bridge.link();
        let state = tokio::time::timeout(DEADLINE, link.wait_for(done)).await;
        state.expect("the link did not reach the state in time").unwrap().clone()
    }

    async fn stop(self) {
        self.actor.stop(None);
        self.handle.await.unwrap();
    }
}

fn message(route: Route) -> Outgoing {
    Outgoing { id: uuid::Uuid::new_v4().to_string(), route, body: Bytes::from_static(b"{\"n\":1}") }
}

async fn next(rx: &mut mpsc::Receiver<Delivery>) -> Delivery {
    let delivery = tokio::time::timeout(DEADLINE, rx.recv()).await.expect("no delivery in time");
    delivery.expect("the bridge dropped its sender")
}

/// A plain connection and channel, to look under the bridge and clean up.
async fn raw() -> (lapin::Connection, lapin::Channel) {
    let connection =
        lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    (connection, channel)
}

/// Runs `test` with a fresh prefix, then deletes what was declared under it.
async fn with_prefix<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let prefix = amqp_prefix();
    let outcome = AssertUnwindSafe(test(prefix.clone())).catch_unwind().await;
    let names = Names::new(&prefix);
    let (_connection, channel) = raw().await;
    let queues = [names.work_queue.clone(), names.dead_queue.clone()]
        .into_iter()
        .chain([SHORT_DELAY, LONG_DELAY].map(|d| names.retry_queue(d)));
    for queue in queues {
        let _ = channel.queue_delete(queue.into(), QueueDeleteOptions::default()).await;
    }
    for exchange in [&names.jobs_exchange, &names.events_exchange] {
        let _ = channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_job_is_confirmed_consumed_and_gone_once_acked() {
    with_prefix(|prefix| async move {
        let mut node = Node::up(config(&amqp_url(), &prefix)).await;
        let job = message(Route::Work);
        node.bridge.publish(job.clone()).await.unwrap();
        let delivery = next(&mut node.consumers.work).await;
        assert_eq!((delivery.id.as_deref(), delivery.redelivered), (Some(job.id.as_str()), false));
        assert_eq!(delivery.body, job.body);
        delivery.ack().await;
        node.stop().await;

        // after the first node is gone, a marker is the only thing left to consume
        let mut other = Node::up(config(&amqp_url(), &prefix)).await;
        let marker = message(Route::Work);
        other.bridge.publish(marker.clone()).await.unwrap();
        let first = next(&mut other.consumers.work).await;
        assert_eq!(first.id.as_deref(), Some(marker.id.as_str()), "the acknowledged job came back");
        first.ack().await;
        other.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_dropped_unsettled_is_delivered_again() {
    with_prefix(|prefix| async move {
        let mut node = Node::up(config(&amqp_url(), &prefix)).await;
        let job = message(Route::Work);
        node.bridge.publish(job.clone()).await.unwrap();
        let first = next(&mut node.consumers.work).await;
        assert!(!first.redelivered);
        drop(first);
        let again = next(&mut node.consumers.work).await;
        assert_eq!((again.id.as_deref(), again.redelivered), (Some(job.id.as_str()), true));
        again.ack().await;
        node.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_job_lands_in_the_dead_queue() {
    with_prefix(|prefix| async move {
        let mut node = Node::up(config(&amqp_url(), &prefix)).await;
        let job = message(Route::Work);
        node.bridge.publish(job.clone()).await.unwrap();
        next(&mut node.consumers.work).await.dead_letter().await;

        let (_connection, channel) = raw().await;
        let dead = Names::new(&prefix).dead_queue;
        let found = tokio::time::timeout(DEADLINE, async {
            loop {
                let got =
                    channel.basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap();
                match got {
                    Some(message) => break message,
                    None => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await
        .expect("nothing reached the dead queue");
        let id = found.delivery.properties.message_id().as_ref().map(|id| id.to_string());
        assert_eq!(id.as_deref(), Some(job.id.as_str()));
        // and the direct route there
        node.bridge.publish(message(Route::DeadLetter)).await.unwrap();
        node.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_comes_back_to_work_after_its_delay() {
    with_prefix(|prefix| async move {
        let mut node = Node::up(config(&amqp_url(), &prefix)).await;
        // 30 ms has no queue of its own: it waits in the 50 ms one
        let job = message(Route::Retry(Duration::from_millis(30)));
        node.bridge.publish(job.clone()).await.unwrap();
        let delivery = next(&mut node.consumers.work).await;
        assert_eq!(delivery.id.as_deref(), Some(job.id.as_str()));
        delivery.ack().await;
        node.stop().await;
    })
    .await;
}

#[test]
fn a_delay_without_a_queue_takes_the_nearest_longer_one_or_the_longest() {
    let (bridge, _consumers) = Bridge::new(&config("amqp://localhost", "p"));
    let queue = |ms| bridge.retry_queue(Duration::from_millis(ms));
    assert_eq!(queue(50), "p.retry.50");
    assert_eq!(queue(1), "p.retry.50");
    assert_eq!(queue(51), "p.retry.100");
    assert_eq!(queue(60_000), "p.retry.100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_reaches_every_node_and_declaring_twice_changes_nothing() {
    with_prefix(|prefix| async move {
        let mut first = Node::up(config(&amqp_url(), &prefix)).await;
        let job = message(Route::Work);
        first.bridge.publish(job.clone()).await.unwrap();
        // the second node declares the same topology again, and consumes no work
        let mut second = Node::up(BridgeConfig { consume_work: false, ..config(&amqp_url(), &prefix) }).await;
        let event = message(Route::Event("item.changed".to_owned()));
        second.bridge.publish(event.clone()).await.unwrap();
        for node in [&mut first, &mut second] {
            let delivery = next(&mut node.consumers.events).await;
            assert_eq!(delivery.id.as_deref(), Some(event.id.as_str()));
            delivery.ack().await;
        }
        // the job published before the second declaration is still there
        let delivery = next(&mut first.consumers.work).await;
        assert_eq!(delivery.id.as_deref(), Some(job.id.as_str()));
        delivery.ack().await;
        assert!(second.consumers.work.try_recv().is_err(), "a node that consumes no work got some");
        first.stop().await;
        second.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_fails_fast_and_comes_back() {
    with_prefix(|prefix| async move {
        let proxy = Proxy::start(amqp_address()).await;
        let mut node = Node::up(config(&proxy.url(&amqp_url()), &prefix)).await;
        let held = message(Route::Work);
        node.bridge.publish(held.clone()).await.unwrap();
        let stale = next(&mut node.consumers.work).await;

        proxy.cut();
        node.until(|state| matches!(state, LinkState::Down { .. })).await;
        let refused = node.bridge.publish(message(Route::Work)).await;
        assert!(matches!(refused, Err(PublishError::Unavailable(_))), "{refused:?}");
        assert!(node.bridge.probe().check().await.is_err());
        // its channel is gone: the ack goes nowhere, and the broker delivers it again
        stale.ack().await;

        proxy.restore();
        node.until(|state| *state == LinkState::Up).await;
        assert_eq!(node.bridge.probe().check().await, Ok(()));
        let again = next(&mut node.consumers.work).await;
        assert_eq!((again.id.as_deref(), again.redelivered), (Some(held.id.as_str()), true));
        again.ack().await;
        let fresh = message(Route::Work);
        node.bridge.publish(fresh.clone()).await.unwrap();
        let delivery = next(&mut node.consumers.work).await;
        assert_eq!(delivery.id.as_deref(), Some(fresh.id.as_str()));
        delivery.ack().await;
        node.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_work_queue_is_declared_again() {
    with_prefix(|prefix| async move {
        let mut node = Node::up(config(&amqp_url(), &prefix)).await;
        let (_connection, channel) = raw().await;
        let work = Names::new(&prefix).work_queue;
        channel.queue_delete(work.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
        // the broker cancels the consumer; the bridge connects again and declares it
        let job = message(Route::Work);
        let published = tokio::time::timeout(DEADLINE, async {
            while let Err(error) = node.bridge.publish(job.clone()).await {
                assert!(matches!(error, PublishError::Nacked | PublishError::Unavailable(_)), "{error:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(published.is_ok(), "the work queue was not declared again");
        let delivery = next(&mut node.consumers.work).await;
        assert_eq!(delivery.id.as_deref(), Some(job.id.as_str()));
        delivery.ack().await;
        node.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_that_dies_lets_go_of_its_connection_and_the_next_one_takes_over() {
    with_prefix(|prefix| async move {
        let config = config(&amqp_url(), &prefix);
        let mut node = Node::up(config.clone()).await;
        node.actor.cast(BridgeMsg::Panic).unwrap();
        assert!(node.handle.await.is_ok());
        let state = node.bridge.link().borrow().clone();
        assert!(matches!(&state, LinkState::Down { error, .. } if error.contains("restarted")), "{state:?}");
        let refused = node.bridge.publish(message(Route::Work)).await;
        assert!(matches!(refused, Err(PublishError::Unavailable(_))), "{refused:?}");

        // a new incarnation on the same handle: publishes and deliveries flow again
        let args = BridgeArgs { bridge: node.bridge.clone(), stats: Arc::new(ActorStats::default()) };
        let (actor, handle) = Actor::spawn(None, QueueBridge { config }, args).await.unwrap();
        node.actor = actor;
        node.handle = handle;
        node.until(|state| *state == LinkState::Up).await;
        let job = message(Route::Work);
        node.bridge.publish(job.clone()).await.unwrap();
        let delivery = next(&mut node.consumers.work).await;
        assert_eq!(delivery.id.as_deref(), Some(job.id.as_str()));
        delivery.ack().await;
        node.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_the_link_is_down_and_publishes_fail_at_once() {
    // nothing listens on port 1
    let node = Node::start(config("amqp://guest:guest@127.0.0.1:1/%2f", &amqp_prefix())).await;
    let state = node.until(|state| matches!(state, LinkState::Down { .. })).await;
    let LinkState::Down { error, .. } = state else { unreachable!() };
    assert!(!error.contains("guest"), "{error}");
    let probe = node.bridge.probe();
    assert_eq!((probe.component(), probe.critical()), ("amqp", false));
    assert!(probe.check().await.unwrap_err().contains("no connection to RabbitMQ"));
    let refused = node.bridge.publish(message(Route::Work)).await;
    assert!(matches!(refused, Err(PublishError::Unavailable(_))), "{refused:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amqps_url_is_connected_over_tls() {
    // RabbitMQ's plain port answers a TLS hello with the AMQP header: the handshake
    // fails, which it only can on the TLS path
    let url = url::Url::parse(&amqp_url()).unwrap();
    let tls = format!("amqps://guest:guest@{}/%2f", amqp_address());
    assert_eq!(url.scheme(), "amqp", "CASTWORK_TEST_AMQP_URL is a plain amqp:// URL");
    let node = Node::start(config(&tls, &amqp_prefix())).await;
    let state = node.until(|state| matches!(state, LinkState::Down { .. })).await;
    let LinkState::Down { error, .. } = state else { unreachable!() };
    assert!(error.starts_with("connecting failed"), "{error}");
    node.stop().await;
}

#[test]
fn an_amqps_url_selects_tls_on_its_port() {
    let uri = parse_url("amqps://user:secret@rabbit.example/jobs").unwrap();
    assert_eq!((uri.scheme, uri.authority.port), (AMQPScheme::AMQPS, 5671));
    assert_eq!(uri.vhost, "jobs");
    assert_eq!(parse_url("amqp://rabbit.example").unwrap().authority.port, 5672);
}

#[test]
fn redacted_urls_keep_no_credentials() {
    assert_eq!(redacted("amqp://user:secret@rabbit.example:5673/%2f"), "amqp://rabbit.example:5673/%2F");
    assert_eq!(redacted("amqps://user:secret@rabbit.example/jobs"), "amqps://rabbit.example:5671/jobs");
    assert_eq!(redacted("amqp://127.0.0.1"), "amqp://127.0.0.1:5672/%2F");
    let bad = "amqp://user:secret@[rabbit";
    assert_eq!(redacted(bad), "(invalid url)");
    assert!(!parse_url(bad).unwrap_err().to_string().contains("secret"));
    assert!(!format!("{:?}", config("amqp://user:secret@h", "p")).contains("secret"));
}
