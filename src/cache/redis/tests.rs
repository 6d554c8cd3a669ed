//! Tests against the machine's real Redis (`CASTWORK_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`: [`crate::db::testing`]). Each test uses a
//! random key prefix and deletes its keys at the end, even when it fails.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use fred::types::{CustomCommand, Value};
use futures::FutureExt;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::*;
use crate::supervision::breaker::BreakerState;

const DEADLINE: Duration = Duration::from_secs(10);

fn settings(url: &str, prefix: &str) -> RedisSettings {
    RedisSettings {
        url: url.to_owned(),
        key_prefix: prefix.to_owned(),
        pool_size: 2,
        // Generous: the test machine may be busy; timeouts are tested with a stalled proxy.
        command_timeout: Duration::from_secs(1),
        breaker: BreakerConfig::default(),
    }
}

use crate::db::testing::{redis_address, redis_prefix as random_prefix, redis_url};

/// A plain client for looking under the tier (raw values, PTTL, cleanup).
async fn raw() -> Client {
    let client = Client::new(Config::from_url(&redis_url()).unwrap(), None, None, None);
    client.init().await.unwrap();
    client
}

/// Polls `check` until it holds or [`DEADLINE`] passes.
async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next event, failing the test after [`DEADLINE`].
async fn next_event(sub: &mut Subscription) -> RedisEvent {
    tokio::time::timeout(DEADLINE, sub.recv()).await.expect("no event in time").expect("subscription ended")
}

/// Skips events until `wanted` arrives.
async fn wait_for(sub: &mut Subscription, wanted: RedisEvent) {
    loop {
        if next_event(sub).await == wanted {
            return;
        }
    }
}

/// Runs `body` with a connected tier under a fresh prefix, then deletes every
/// key under that prefix, also when `body` panics.
async fn with_tier<F, Fut>(body: F)
where
    F: FnOnce(RedisTier, Client) -> Fut,
    Fut: Future<Output = ()>,
{
    let prefix = random_prefix();
    let tier = RedisTier::connect(settings(&redis_url(), &prefix)).await.unwrap();
    let raw = raw().await;
    assert!(tier.wait_connected(DEADLINE).await, "the pool did not connect");
    let outcome = AssertUnwindSafe(body(tier, raw.clone())).catch_unwind().await;
    let keys: Vec<String> = raw
        .custom(CustomCommand::new_static("KEYS", None, false), vec![format!("{prefix}:*")])
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = raw.del(keys).await.unwrap();
    }
    let _ = raw.quit().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn value(body: &[u8], etag: Option<i64>, not_found: bool) -> CachedValue {
    CachedValue { body: Bytes::copy_from_slice(body), etag, not_found }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_get_round_trip_plain_compressed_and_negative() {
    with_tier(|tier, raw| async move {
        let ttl = Duration::from_secs(30);
        let plain = value(b"{\"id\":1}", Some(7), false);
        let big = "{\"title\":\"the same catalogue line again\"}".repeat(100);
        let compressed = value(big.as_bytes(), None, false);
        let negative = value(b"", None, true);
        tier.set("plain", &plain, ttl, 1024).await.unwrap();
        tier.set("big", &compressed, ttl, 1024).await.unwrap();
        tier.set("gone", &negative, ttl, 1024).await.unwrap();
        assert_eq!(tier.get("plain").await, Ok(Some(plain)));
        assert_eq!(tier.get("big").await, Ok(Some(compressed)));
        assert_eq!(tier.get("gone").await, Ok(Some(negative)));
        assert_eq!(tier.get("never-set").await, Ok(None));
        // The big body went to Redis compressed, under the prefixed key.
        let stored: i64 = raw.strlen(tier.full_key("big")).await.unwrap();
        assert!(stored < i64::try_from(big.len() / 4).unwrap(), "{stored} bytes stored");
        assert_eq!(tier.del(&["plain".to_owned(), "big".to_owned(), "nope".to_owned()]).await, Ok(2));
        assert_eq!(tier.get("plain").await, Ok(None));
        assert_eq!(tier.del(&[]).await, Ok(0));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_is_applied_in_milliseconds() {
    with_tier(|tier, raw| async move {
        let base = Duration::from_secs(60);
        let ttl = format::jittered_ttl(base, 0.1, &mut StdRng::seed_from_u64(9));
        tier.set("k", &value(b"v", None, false), ttl, 1024).await.unwrap();
        let pttl: i64 = raw.pttl(tier.full_key("k")).await.unwrap();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap();
        assert!(pttl <= ttl_ms && pttl > ttl_ms - 5_000, "pttl {pttl} for ttl {ttl_ms}");
        assert!((54_000 - 5_000..=66_000).contains(&pttl), "pttl {pttl} outside the jittered bounds");
        // A sub-millisecond TTL is stored as 1 ms rather than refused.
        tier.set("short", &value(b"v", None, false), Duration::from_micros(10), 1024).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_values_are_misses_and_get_deleted() {
    with_tier(|tier, raw| async move {
        let mut newer = format::encode(&value(b"v", None, false), 1024);
        newer[1] = format::FORMAT_VERSION + 1;
        let newer = Bytes::from(newer);
        let garbage = Bytes::from_static(b"not a cached value");
        for (key, bytes) in [("newer", newer), ("garbage", garbage)] {
            let _: () =
                raw.set(tier.full_key(key), bytes, Some(Expiration::EX(60)), None, false).await.unwrap();
            assert_eq!(tier.get(key).await, Ok(None), "{key}");
            let exists: i64 = raw.exists(tier.full_key(key)).await.unwrap();
            assert_eq!(exists, 0, "{key} was not deleted");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_reads_in_order_and_deletes_undecodable_values() {
    with_tier(|tier, raw| async move {
        let ttl = Duration::from_secs(30);
        let plain = value(b"{\"id\":1}", Some(3), false);
        let big = "{\"title\":\"the same catalogue line again\"}".repeat(100);
        let compressed = value(big.as_bytes(), None, false);
        tier.set("a", &plain, ttl, 1024).await.unwrap();
        tier.set("b", &compressed, ttl, 1024).await.unwrap();
        let _: () = raw
            .set(tier.full_key("junk"), Bytes::from_static(b"junk"), Some(Expiration::EX(60)), None, false)
            .await
            .unwrap();
        let keys = ["b", "missing", "junk", "a"].map(str::to_owned);
        assert_eq!(tier.get_many(&keys).await, Ok(vec![Some(compressed), None, None, Some(plain.clone())]));
        let exists: i64 = raw.exists(tier.full_key("junk")).await.unwrap();
        assert_eq!(exists, 0, "the undecodable value was not deleted");
        assert_eq!(tier.get_many(&keys[3..]).await, Ok(vec![Some(plain)]));
        assert_eq!(tier.get_many(&keys[1..2]).await, Ok(vec![None]));
        assert_eq!(tier.get_many(&[] as &[&str]).await, Ok(vec![]));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_and_mget_counters() {
    with_tier(|tier, _raw| async move {
        assert_eq!(tier.incr("gen:items").await, Ok(1));
        assert_eq!(tier.incr("gen:items").await, Ok(2));
        assert_eq!(tier.incr("gen:lists").await, Ok(1));
        let keys = ["gen:items", "gen:missing", "gen:lists"].map(str::to_owned);
        assert_eq!(tier.mget_i64(&keys).await, Ok(vec![Some(2), None, Some(1)]));
        assert_eq!(tier.mget_i64(&keys[..1]).await, Ok(vec![Some(2)]));
        assert_eq!(tier.mget_i64(&keys[1..2]).await, Ok(vec![None]));
        assert_eq!(tier.mget_i64(&[]).await, Ok(vec![]));
        // A value that is no counter is an error, not a panic.
        tier.set("blob", &value(b"v", None, false), Duration::from_secs(30), 1024).await.unwrap();
        assert!(matches!(tier.incr("blob").await, Err(CacheRedisError::Other(_))));
        assert!(matches!(tier.mget_i64(&["blob".to_owned()]).await, Err(CacheRedisError::Other(_))));
        assert_eq!(tier.breaker().state(), BreakerState::Closed);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_messages_reach_the_subscriber_until_it_is_dropped() {
    with_tier(|tier, raw| async move {
        let mut sub = tier.subscribe("invalidations").await.unwrap();
        wait_for(&mut sub, RedisEvent::Reconnected).await;
        tier.publish("elsewhere", "not for us").await.unwrap();
        tier.publish("invalidations", "{\"keys\":[\"a\"]}").await.unwrap();
        assert_eq!(next_event(&mut sub).await, RedisEvent::Message("{\"keys\":[\"a\"]}".to_owned()));
        let channel = tier.full_key("invalidations");
        let numsub = || async {
            let reply: Vec<Value> = raw
                .custom(
                    CustomCommand::new_static("PUBSUB", None, false),
                    vec!["NUMSUB".to_owned(), channel.clone()],
                )
                .await
                .unwrap();
            reply.get(1).and_then(Value::as_i64).unwrap()
        };
        assert_eq!(numsub().await, 1);
        drop(sub);
        eventually("the subscriber connection to close", || async { numsub().await == 0 }).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_fails_fast_and_opens_the_breaker() {
    let mut settings = settings("redis://127.0.0.1:1", &random_prefix());
    settings.breaker = BreakerConfig { window_size: 10, minimum_calls: 5, ..BreakerConfig::default() };
    let started = Instant::now();
    let tier = RedisTier::connect(settings).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(500), "connect took {:?}", started.elapsed());
    assert!(!tier.is_connected());
    assert!(!tier.wait_connected(Duration::from_millis(300)).await);
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(tier.get("k").await, Err(CacheRedisError::Unavailable));
        assert!(started.elapsed() < Duration::from_millis(300), "call took {:?}", started.elapsed());
    }
    assert_eq!(tier.breaker().state(), BreakerState::Open);
    let started = Instant::now();
    assert_eq!(
        tier.set("k", &value(b"v", None, false), Duration::from_secs(1), 0).await,
        Err(CacheRedisError::BreakerOpen)
    );
    assert_eq!(tier.incr("k").await, Err(CacheRedisError::BreakerOpen));
    assert!(started.elapsed() < Duration::from_millis(300), "rejections took {:?}", started.elapsed());
    // The probe bypasses the breaker and reports the real state.
    assert_eq!(tier.ping_unguarded(Duration::from_millis(500)).await, Err(CacheRedisError::Unavailable));
    let probe = RedisProbe::new(tier.clone());
    assert_eq!((probe.component(), probe.critical()), ("redis", false));
    assert!(probe.check().await.is_err());
    // Subscribing while Redis is down does not fail either.
    let mut sub = tier.subscribe("invalidations").await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(300), sub.recv()).await.is_err());
}

#[test]
fn redis_errors_map_to_tier_errors() {
    let cases = [
        (
            ErrorKind::Unknown,
            "OOM command not allowed when used memory > 'maxmemory'.",
            CacheRedisError::OutOfMemory,
        ),
        (ErrorKind::Timeout, "Request timed out.", CacheRedisError::Timeout),
        (ErrorKind::IO, "Connection reset by peer (os error 104)", CacheRedisError::Unavailable),
        (ErrorKind::Canceled, "Connection closed unexpectedly.", CacheRedisError::Unavailable),
        (ErrorKind::Unknown, "LOADING Redis is loading the dataset in memory", CacheRedisError::Unavailable),
        (ErrorKind::Url, "Invalid scheme.", CacheRedisError::InvalidConfig("Invalid scheme.".to_owned())),
        (
            ErrorKind::InvalidArgument,
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            CacheRedisError::Other(
                "WRONGTYPE Operation against a key holding the wrong kind of value".to_owned(),
            ),
        ),
    ];
    for (kind, details, expected) in cases {
        assert_eq!(classify(&FredError::new(kind, details)), expected, "{details}");
    }
    assert!(CacheRedisError::Timeout.is_availability_failure());
    assert!(CacheRedisError::Unavailable.is_availability_failure());
    assert!(!CacheRedisError::OutOfMemory.is_availability_failure());
    assert_eq!(CacheRedisError::BreakerOpen.outcome(), "rejected");
    assert_eq!(CacheRedisError::OutOfMemory.outcome(), "error");
}

#[tokio::test]
async fn bad_settings_are_rejected_and_the_url_never_printed() {
    let bad = RedisTier::connect(settings("not a url", "p")).await;
    assert!(matches!(bad, Err(CacheRedisError::InvalidConfig(_))), "{bad:?}");
    let mut empty = settings(&redis_url(), "p");
    empty.pool_size = 0;
    assert!(matches!(RedisTier::connect(empty).await, Err(CacheRedisError::InvalidConfig(_))));
    let secret = settings("redis://:hunter2@127.0.0.1:6379", "p");
    assert!(!format!("{secret:?}").contains("hunter2"));
}

/// A loopback proxy to Redis that can stall or cut every connection, and
/// delay the connections it accepts from now on.
pub(crate) struct Cutter {
    addr: SocketAddr,
    pub(crate) stalled: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    cut: Arc<AtomicBool>,
    connections: Arc<std::sync::Mutex<JoinSet<()>>>,
    accept: JoinHandle<()>,
}

impl Cutter {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stalled = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let cut = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(std::sync::Mutex::new(JoinSet::new()));
        let (s, d, c, conns) = (stalled.clone(), delay_ms.clone(), cut.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue;
                }
                let stalled = s.clone();
                let delay = Duration::from_millis(d.load(Ordering::SeqCst));
                conns.lock().unwrap().spawn(async move {
                    let Ok(upstream) = TcpStream::connect(redis_address()).await else { return };
                    let (cr, cw) = client.into_split();
                    let (ur, uw) = upstream.into_split();
                    tokio::join!(pipe(cr, uw, stalled.clone(), delay), pipe(ur, cw, stalled, delay));
                });
            }
        });
        Self { addr, stalled, delay_ms, cut, connections, accept }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            self.connections.lock().unwrap().abort_all();
        }
    }
}

impl Drop for Cutter {
    fn drop(&mut self) {
        self.accept.abort();
        self.connections.lock().unwrap().abort_all();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        tokio::time::sleep(delay).await;
        while stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_times_out_and_counts_against_the_breaker() {
    let proxy = Cutter::start().await;
    let mut settings = settings(&proxy.url(), &random_prefix());
    settings.command_timeout = Duration::from_millis(300);
    settings.breaker = BreakerConfig { window_size: 4, minimum_calls: 2, ..BreakerConfig::default() };
    let tier = RedisTier::connect(settings).await.unwrap();
    assert!(tier.wait_connected(DEADLINE).await, "the pool did not connect");
    assert_eq!(tier.ping_unguarded(DEADLINE).await, Ok(()));
    proxy.stalled.store(true, Ordering::SeqCst);
    let started = Instant::now();
    assert_eq!(tier.get("k").await, Err(CacheRedisError::Timeout));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(290) && took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(tier.get("k").await, Err(CacheRedisError::Timeout));
    assert_eq!(tier.breaker().state(), BreakerState::Open);
    assert_eq!(tier.get("k").await, Err(CacheRedisError::BreakerOpen));
    proxy.stalled.store(false, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_is_reported_and_the_subscription_comes_back() {
    let proxy = Cutter::start().await;
    let prefix = random_prefix();
    let tier = RedisTier::connect(settings(&proxy.url(), &prefix)).await.unwrap();
    let mut sub = tier.subscribe("inv").await.unwrap();
    wait_for(&mut sub, RedisEvent::Reconnected).await;

    proxy.cut(true);
    assert_eq!(next_event(&mut sub).await, RedisEvent::Disconnected);
    eventually("calls to fail fast", || async { tier.get("k").await == Err(CacheRedisError::Unavailable) })
        .await;
    proxy.cut(false);
    wait_for(&mut sub, RedisEvent::Reconnected).await;

    // Resubscribed: a message published now arrives.
    tier.breaker().reset();
    eventually("a publish to go through", || async { tier.publish("inv", "after").await.is_ok() }).await;
    wait_for(&mut sub, RedisEvent::Message("after".to_owned())).await;
}

/// fred answers `SUBSCRIBE` before the server has seen it; `Reconnected` must
/// still mean that a message published right after it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnected_means_the_subscription_is_active_on_the_server() {
    let proxy = Cutter::start().await;
    let tier = RedisTier::connect(settings(&proxy.url(), &random_prefix())).await.unwrap();
    assert!(tier.wait_connected(DEADLINE).await, "the pool did not connect");
    // Only the subscriber's connection, opened next, is slow.
    proxy.delay_ms.store(200, Ordering::SeqCst);
    let mut sub = tier.subscribe("inv").await.unwrap();
    wait_for(&mut sub, RedisEvent::Reconnected).await;
    tier.publish("inv", "first").await.unwrap();
    assert_eq!(next_event(&mut sub).await, RedisEvent::Message("first".to_owned()));
}
