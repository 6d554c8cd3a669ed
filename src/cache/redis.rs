//! The L2 tier: Redis through a `fred` pool, every call guarded by the `redis`
//! circuit breaker and a per-call timeout.
//!
//! The tier never holds the node back: [`RedisTier::connect`] returns at once
//! and the pool connects (and reconnects, with exponential backoff, forever) in
//! the background. While no connection is up every call fails fast with
//! [`CacheRedisError::Unavailable`] instead of queueing, and counts as a breaker
//! failure; once the breaker opens, calls are turned away without touching the
//! network until a half-open probe succeeds.
//!
//! [`RedisTier::subscribe`] opens a dedicated subscriber connection whose
//! [`Subscription`] also reports connection changes of the whole tier, so the
//! cache can drop its L1 whenever invalidations may have been missed.
//!
//! Keys and channels are namespaced: callers pass `key`, Redis sees `{prefix}:{key}`.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::clients::{Client, Pool};
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::{ClientLike, KeysInterface, PubsubInterface};
use fred::types::config::{
    Config, ConnectionConfig, Options, PerformanceConfig, ReconnectPolicy, TcpConfig, UnresponsiveConfig,
};
use fred::types::{ConnectHandle, Expiration};
use futures::future::BoxFuture;
use tokio::time::Instant;

pub use self::subscription::{RedisEvent, Subscription};
use super::format::{self, CachedValue};
use crate::health::Probe;
use crate::metrics;
use crate::supervision::breaker::{BreakerConfig, BreakerState, CircuitBreaker};

/// The per-call timeout when none is configured.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(200);
/// Name of the tier's circuit breaker (its metrics label).
pub const BREAKER_NAME: &str = "redis";

/// First and longest delay between reconnection attempts (doubling in between).
const RECONNECT_MIN_DELAY_MS: u32 = 100;
const RECONNECT_MAX_DELAY_MS: u32 = 5_000;
/// TCP connect and handshake (`HELLO`, `SELECT`) limits for one attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection with a command in flight this long is dropped and reconnected.
const UNRESPONSIVE_AFTER: Duration = Duration::from_secs(5);
/// Buffer of a [`Subscription`] and of the subscriber's message stream.
const EVENT_BUFFER: usize = 1024;

/// Where the tier connects and how it guards calls. `Debug` hides the URL,
/// which may carry a password.
#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Namespace of every key and channel: `{key_prefix}:{key}`.
    pub key_prefix: String,
    /// Connections in the command pool (at least 1).
    pub pool_size: usize,
    /// Limit on each call, see [`DEFAULT_COMMAND_TIMEOUT`].
    pub command_timeout: Duration,
    /// The `redis` breaker's tuning.
    pub breaker: BreakerConfig,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &"[redacted]")
            .field("key_prefix", &self.key_prefix)
            .field("pool_size", &self.pool_size)
            .field("command_timeout", &self.command_timeout)
            .field("breaker", &self.breaker)
            .finish()
    }
}

/// Why a Redis call did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheRedisError {
    /// No answer within the call's timeout.
    #[error("redis did not answer in time")]
    Timeout,
    /// No connection (down, refused, reset, or still connecting), or the server is loading.
    #[error("redis is unavailable")]
    Unavailable,
    /// The server refused a write because it is at `maxmemory`.
    #[error("redis is out of memory")]
    OutOfMemory,
    /// The circuit breaker is open: the call was not sent.
    #[error("redis circuit breaker is open")]
    BreakerOpen,
    /// The settings cannot work (bad URL, empty pool).
    #[error("invalid redis settings: {0}")]
    InvalidConfig(String),
    /// Any other error reply or client error.
    #[error("redis error: {0}")]
    Other(String),
}

impl CacheRedisError {
    /// The `outcome` label of [`metrics::CACHE_REDIS_OPS_TOTAL`].
    #[must_use]
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::BreakerOpen => "rejected",
            Self::Unavailable | Self::OutOfMemory | Self::InvalidConfig(_) | Self::Other(_) => "error",
        }
    }

    /// Whether the call says Redis is unreachable or too slow, which is what the
    /// breaker guards against. An error *reply* (`OOM`, `WRONGTYPE`) came back
    /// promptly from a live server, so it counts as a success for the breaker.
    #[must_use]
    pub fn is_availability_failure(&self) -> bool {
        matches!(self, Self::Timeout | Self::Unavailable)
    }
}

/// Maps a `fred` error to the tier's error.
#[must_use]
pub fn classify(error: &FredError) -> CacheRedisError {
    let details = error.details();
    let code = details.split_whitespace().next().unwrap_or("");
    match error.kind() {
        ErrorKind::Timeout => CacheRedisError::Timeout,
        ErrorKind::IO | ErrorKind::Canceled | ErrorKind::Routing | ErrorKind::Backpressure => {
            CacheRedisError::Unavailable
        }
        ErrorKind::Config | ErrorKind::Url => CacheRedisError::InvalidConfig(details.to_owned()),
        _ if code == "OOM" => CacheRedisError::OutOfMemory,
        _ if matches!(code, "LOADING" | "MASTERDOWN" | "TRYAGAIN" | "BUSY") => CacheRedisError::Unavailable,
        _ => CacheRedisError::Other(details.to_owned()),
    }
}

/// The Redis tier. Cheap to clone; the connections close when the last clone drops.
#[derive(Clone)]
pub struct RedisTier {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    config: Config,
    perf: PerformanceConfig,
    connection: ConnectionConfig,
    policy: ReconnectPolicy,
    prefix: String,
    command_timeout: Duration,
    options: Options,
    breaker: Arc<CircuitBreaker>,
    connect_tasks: Vec<ConnectHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.connect_tasks {
            task.abort();
        }
    }
}

impl fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTier")
            .field("prefix", &self.inner.prefix)
            .field("pool_size", &self.inner.pool.size())
            .field("connected", &self.is_connected())
            .field("breaker", &self.inner.breaker.state())
            .finish_non_exhaustive()
    }
}

impl RedisTier {
    /// Builds the pool and starts connecting in the background; returns at once,
    /// whether or not Redis is reachable.
    ///
    /// # Errors
    /// [`CacheRedisError::InvalidConfig`] for an unparsable URL or a zero pool size.
    pub async fn connect(settings: RedisSettings) -> Result<RedisTier, CacheRedisError> {
        let invalid = |e: FredError| CacheRedisError::InvalidConfig(e.details().to_owned());
        let mut config = Config::from_url(&settings.url).map_err(invalid)?;
        // Run the reconnect policy for the first connection too, instead of failing.
        config.fail_fast = false;
        let command_timeout = if settings.command_timeout.is_zero() {
            DEFAULT_COMMAND_TIMEOUT
        } else {
            settings.command_timeout
        };
        let perf =
            PerformanceConfig { default_command_timeout: command_timeout, ..PerformanceConfig::default() };
        let connection = ConnectionConfig {
            connection_timeout: CONNECT_TIMEOUT,
            internal_command_timeout: CONNECT_TIMEOUT,
            max_command_attempts: 1,
            unresponsive: UnresponsiveConfig {
                max_timeout: Some(UNRESPONSIVE_AFTER),
                interval: Duration::from_secs(1),
            },
            tcp: TcpConfig { nodelay: Some(true), ..TcpConfig::default() },
            ..ConnectionConfig::default()
        };
        let policy = ReconnectPolicy::new_exponential(0, RECONNECT_MIN_DELAY_MS, RECONNECT_MAX_DELAY_MS, 2);
        let pool = Pool::new(
            config.clone(),
            Some(perf.clone()),
            Some(connection.clone()),
            Some(policy.clone()),
            settings.pool_size,
        )
        .map_err(invalid)?;
        let connect_tasks = pool.connect_pool();
        let options = Options {
            fail_fast: true,
            max_attempts: Some(1),
            timeout: Some(command_timeout),
            ..Options::default()
        };
        let breaker = CircuitBreaker::new(BREAKER_NAME, settings.breaker);
        tracing::info!(pool_size = settings.pool_size, "redis tier connecting in the background");
        let inner = Inner {
            pool,
            config,
            perf,
            connection,
            policy,
            prefix: settings.key_prefix,
            command_timeout,
            options,
            breaker,
            connect_tasks,
        };
        Ok(RedisTier { inner: Arc::new(inner) })
    }

    /// The `redis` circuit breaker every call goes through.
    #[must_use]
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.inner.breaker
    }

    /// The limit on each call.
    #[must_use]
    pub fn command_timeout(&self) -> Duration {
        self.inner.command_timeout
    }

    /// Whether at least one pooled connection is up.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.inner.pool.clients().iter().any(ClientLike::is_connected)
    }

    /// Waits up to `limit` for every pooled connection to be up; true if they
    /// are. [`connect`](Self::connect) does not wait, and calls made before the
    /// first connection (the first attempt starts after about 100 ms) fail fast
    /// and count against the breaker, so a node that uses Redis right at start
    /// (cache warming) should give it this grace first.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        let all_up = || self.inner.pool.clients().iter().all(ClientLike::is_connected);
        let deadline = Instant::now() + limit;
        while !all_up() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// The namespaced form of `key`: `{prefix}:{key}`.
    #[must_use]
    pub fn full_key(&self, key: &str) -> String {
        format!("{}:{key}", self.inner.prefix)
    }

    /// Reads `key` (an `MGET` of one key, see [`get_many`](Self::get_many)). A value
    /// that does not decode (corrupt, or written in another format version) is a
    /// miss and is deleted.
    ///
    /// # Errors
    /// A [`CacheRedisError`]; never for a missing or undecodable value.
    pub async fn get(&self, key: &str) -> Result<Option<CachedValue>, CacheRedisError> {
        Ok(self.get_many(&[key]).await?.pop().flatten())
    }

    /// Reads `keys` with one `MGET`, a value (or `None`) per key in order. A value
    /// that does not decode is `None` and is deleted, as in [`get`](Self::get).
    /// No keys: no call.
    ///
    /// # Errors
    /// A [`CacheRedisError`] for the whole batch; never for missing or undecodable values.
    pub async fn get_many(
        &self,
        keys: &[impl AsRef<str>],
    ) -> Result<Vec<Option<CachedValue>>, CacheRedisError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client();
        let full: Vec<String> = keys.iter().map(|k| self.full_key(k.as_ref())).collect();
        let raw = self.call("mget", client.mget::<Vec<Option<Bytes>>, _>(full)).await?;
        let mut undecodable = Vec::new();
        let values = raw
            .into_iter()
            .zip(keys)
            .map(|(raw, key)| match raw.map(format::decode_bytes) {
                Some(Ok(value)) => Some(value),
                Some(Err(error)) => {
                    tracing::warn!(%error, "deleting an undecodable cached value");
                    undecodable.push(key.as_ref().to_owned());
                    None
                }
                None => None,
            })
            .collect();
        if !undecodable.is_empty()
            && let Err(error) = self.del(&undecodable).await
        {
            tracing::debug!(%error, "could not delete undecodable cached values");
        }
        Ok(values)
    }

    /// Stores `value` under `key` for `ttl` (at least 1 ms), compressing bodies of
    /// at least `compress_threshold` bytes.
    ///
    /// # Errors
    /// A [`CacheRedisError`], e.g. [`CacheRedisError::OutOfMemory`].
    pub async fn set(
        &self,
        key: &str,
        value: &CachedValue,
        ttl: Duration,
        compress_threshold: usize,
    ) -> Result<(), CacheRedisError> {
        let client = self.client();
        let full = self.full_key(key);
        let encoded = Bytes::from(format::encode(value, compress_threshold));
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let write = client.set::<(), _, _>(full, encoded, Some(Expiration::PX(ttl_ms)), None, false);
        self.call("set", write).await
    }

    /// Deletes `keys`, returning how many existed. No keys: no call.
    ///
    /// # Errors
    /// A [`CacheRedisError`].
    pub async fn del(&self, keys: &[String]) -> Result<u64, CacheRedisError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let client = self.client();
        let full: Vec<String> = keys.iter().map(|k| self.full_key(k)).collect();
        self.call("del", client.del::<u64, _>(full)).await
    }

    /// Increments the counter at `key` (created at 0), returning the new value.
    ///
    /// # Errors
    /// A [`CacheRedisError`]; [`CacheRedisError::Other`] when `key` holds no integer.
    pub async fn incr(&self, key: &str) -> Result<i64, CacheRedisError> {
        let client = self.client();
        self.call("incr", client.incr::<i64, _>(self.full_key(key))).await
    }

    /// Reads integer counters, `None` for each missing key. No keys: no call.
    ///
    /// # Errors
    /// A [`CacheRedisError`]; [`CacheRedisError::Other`] when a key holds no integer.
    pub async fn mget_i64(&self, keys: &[String]) -> Result<Vec<Option<i64>>, CacheRedisError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client();
        let full: Vec<String> = keys.iter().map(|k| self.full_key(k)).collect();
        let read = client.mget::<Vec<Option<i64>>, _>(full);
        self.call("mget", read).await
    }

    /// Publishes `payload` on the channel `{prefix}:{channel_suffix}`.
    ///
    /// # Errors
    /// A [`CacheRedisError`].
    pub async fn publish(&self, channel_suffix: &str, payload: &str) -> Result<(), CacheRedisError> {
        let client = self.inner.pool.next_connected().with_options(&self.inner.options);
        let channel = self.full_key(channel_suffix);
        let publish = client.publish::<i64, _, _>(channel, payload);
        self.call("publish", async { publish.await.map(drop) }).await
    }

    /// `PING` through the breaker.
    ///
    /// # Errors
    /// A [`CacheRedisError`].
    pub async fn ping(&self) -> Result<(), CacheRedisError> {
        let client = self.client();
        let ping = client.ping::<String>(None);
        self.call("ping", async { ping.await.map(drop) }).await
    }

    /// `PING` with a plain `timeout`, bypassing the breaker (for health probes,
    /// which must see Redis come back while the breaker is still open).
    ///
    /// # Errors
    /// A [`CacheRedisError`] other than [`CacheRedisError::BreakerOpen`].
    pub async fn ping_unguarded(&self, timeout: Duration) -> Result<(), CacheRedisError> {
        let options = Options { timeout: Some(timeout), ..self.inner.options.clone() };
        let client = self.inner.pool.with_options(&options);
        match tokio::time::timeout(timeout, client.ping::<String>(None)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(classify(&error)),
            Err(_) => Err(CacheRedisError::Timeout),
        }
    }

    /// Closes every pooled connection gracefully (`QUIT`); later calls fail.
    pub async fn quit(&self) {
        let _ = self.inner.pool.quit().await;
    }

    /// Subscribes to the channel `{prefix}:{channel_suffix}` on a dedicated
    /// connection that resubscribes after every reconnection. Returns at once,
    /// even while Redis is down; the first [`RedisEvent::Reconnected`] says the
    /// subscription is live.
    ///
    /// # Errors
    /// None today; kept fallible for settings the subscriber may reject later.
    pub async fn subscribe(&self, channel_suffix: &str) -> Result<Subscription, CacheRedisError> {
        let inner = &self.inner;
        let perf = PerformanceConfig { broadcast_channel_capacity: EVENT_BUFFER, ..inner.perf.clone() };
        let subscriber = Client::new(
            inner.config.clone(),
            Some(perf),
            Some(inner.connection.clone()),
            Some(inner.policy.clone()),
        );
        Ok(subscription::start(inner.pool.clients(), subscriber, self.full_key(channel_suffix)))
    }

    /// A pooled client that fails fast while disconnected and times out per call.
    fn client(&self) -> fred::clients::WithOptions<Pool> {
        self.inner.pool.with_options(&self.inner.options)
    }

    /// Runs one call through the breaker and the timeout, and records it.
    async fn call<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, FredError>>,
    ) -> Result<T, CacheRedisError> {
        let Ok(permit) = self.inner.breaker.try_acquire() else {
            metrics::cache_redis_op(op, "rejected", None);
            return Err(CacheRedisError::BreakerOpen);
        };
        let started = Instant::now();
        let result = match tokio::time::timeout(self.inner.command_timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(classify(&error)),
            Err(_) => Err(CacheRedisError::Timeout),
        };
        let elapsed = started.elapsed();
        match &result {
            Ok(_) => {
                permit.success(elapsed);
                metrics::cache_redis_op(op, "ok", Some(elapsed));
            }
            Err(error) => {
                if error.is_availability_failure() {
                    permit.failure(elapsed);
                } else {
                    permit.success(elapsed);
                }
                metrics::cache_redis_op(op, error.outcome(), Some(elapsed));
                tracing::debug!(op, %error, "redis call failed");
            }
        }
        result
    }
}

/// Health probe of the tier: `PING` with a plain timeout, not through the
/// breaker, so `/health` sees Redis come back before the breaker closes.
pub struct RedisProbe {
    tier: RedisTier,
    timeout: Duration,
}

impl RedisProbe {
    /// The probe's own limit; the HealthActor's probe timeout usually cuts in first.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// A probe pinging through `tier`, giving up after [`Self::DEFAULT_TIMEOUT`].
    #[must_use]
    pub fn new(tier: RedisTier) -> Self {
        Self { tier, timeout: Self::DEFAULT_TIMEOUT }
    }

    /// The same probe giving up after `timeout`.
    #[must_use]
    pub fn with_timeout(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }
}

impl Probe for RedisProbe {
    fn component(&self) -> &str {
        "redis"
    }
    fn critical(&self) -> bool {
        false
    }
    fn check(&self) -> BoxFuture<'static, Result<(), String>> {
        let tier = self.tier.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            // While the breaker is not closed, the probe doubles as its half-open trial:
            // a node whose reads all hit L1 would otherwise never try Redis again and
            // keep reporting the breaker open long after Redis is back.
            if tier.breaker().state() != BreakerState::Closed {
                match tier.ping().await {
                    Ok(()) => return Ok(()),
                    Err(CacheRedisError::BreakerOpen) => {}
                    Err(error) => return Err(error.to_string()),
                }
            }
            tier.ping_unguarded(timeout).await.map_err(|e| e.to_string())
        })
    }
}

mod subscription;
#[cfg(test)]
pub(crate) mod tests;
