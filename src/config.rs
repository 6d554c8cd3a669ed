//! Layered configuration: embedded `config/default.toml` < `config/$CASTWORK_ENV.toml`
//! < `CASTWORK_*` environment variables (`__` nests: `CASTWORK_SERVER__PORT=9000`).
//!
//! Every environment variable castwork reads is named in [`env`]; every key is
//! documented in `docs/OPERATIONS.md`. [`Settings::load`] validates the result and
//! reports the first bad key by its dotted name.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

use crate::supervision::backoff::Backoff;
use crate::supervision::intensity::RestartIntensity;
use crate::supervision::strategy::RestartStrategy;
use crate::supervision::supervisor::Supervisor;

mod environment;
mod inference;
mod validate;

pub use environment::{Environment, MIN_SECRET_BITS, estimated_entropy_bits};
pub use inference::{BackendSettings, BudgetSettings, InferenceSettings, LocalSettings};

/// The environment variables castwork reads, in one place.
pub mod env {
    /// Prefix of every configuration override (`CASTWORK_SERVER__PORT`, ...).
    pub const PREFIX: &str = "CASTWORK_";
    /// `development` (default), `test` or `production` (strict), any case; selects
    /// `config/<name>.toml` by the lowercase name. Any other value is refused.
    pub const ENVIRONMENT: &str = "CASTWORK_ENV";
    /// Directory holding the per-environment TOML files (default `./config`).
    pub const CONFIG_DIR: &str = "CASTWORK_CONFIG_DIR";
    /// Password for the bootstrap `admin` user, created at start when absent.
    pub const BOOTSTRAP_ADMIN_PASSWORD: &str = "CASTWORK_BOOTSTRAP_ADMIN_PASSWORD";
    /// Password read by `castwork user add` when stdin is not used.
    pub const USER_PASSWORD: &str = "CASTWORK_USER_PASSWORD";
    /// Standard tracing filter; overrides `log.level` when set.
    pub const RUST_LOG: &str = "RUST_LOG";
    /// PostgreSQL server the integration tests create their databases on.
    pub const TEST_PG_URL: &str = "CASTWORK_TEST_PG_URL";
    /// Redis the integration tests use (default `redis://127.0.0.1:6379`).
    pub const TEST_REDIS_URL: &str = "CASTWORK_TEST_REDIS_URL";
    /// RabbitMQ the queue tests use (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
    pub const TEST_AMQP_URL: &str = "CASTWORK_TEST_AMQP_URL";
    /// Catalogue the whole-catalogue import test reads (default `assets/arxiv/catalog.jsonl.gz`).
    pub const TEST_CATALOG: &str = "CASTWORK_TEST_CATALOG";
    /// Base URL of the node `castwork jobs ...` talks to (default `http://127.0.0.1:8080`).
    pub const URL: &str = "CASTWORK_URL";
    /// Access token `castwork jobs ...` sends.
    pub const TOKEN: &str = "CASTWORK_TOKEN";
    /// Threads of candle's CPU kernel pool (read by candle); the local inference
    /// backend wants 1: each kernel on the compute thread that calls it.
    pub const CANDLE_NUM_THREADS: &str = "CANDLE_NUM_THREADS";
    /// Threads of rayon's global pool (read by rayon; candle's float matrix products
    /// use it); the local inference backend wants 1.
    pub const RAYON_NUM_THREADS: &str = "RAYON_NUM_THREADS";
    /// Keys under [`PREFIX`] that are not configuration keys.
    pub(super) const NOT_KEYS: [&str; 10] = [
        "env",
        "config_dir",
        "bootstrap_admin_password",
        "user_password",
        "url",
        "token",
        "test_pg_url",
        "test_redis_url",
        "test_amqp_url",
        "test_catalog",
    ];
}

/// hyper's own ceiling on a request target (`server.max_uri_bytes` stays below it): longer
/// targets get hyper's bodyless 414 before castwork sees them.
pub const HYPER_MAX_URI_BYTES: usize = 65_534;
/// The highest zxcvbn score (`auth.password_min_score` is at most this).
pub const PASSWORD_MAX_SCORE: u8 = 4;

const DEFAULTS: &str = include_str!("../config/default.toml");

/// A configuration error, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The sources could not be read or a value has the wrong type.
    #[error("invalid configuration: {0}")]
    Source(String),
    /// A value parsed but is not acceptable.
    #[error("invalid configuration: {key}: {reason}")]
    Invalid {
        /// Dotted key, e.g. `server.port`.
        key: &'static str,
        /// What is wrong and what would be right.
        reason: String,
    },
}

/// A string that never prints: `Debug`, `Display` and `Serialize` show `[redacted]`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether no secret was configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "[redacted]" })
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "[redacted]" })
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Local state directory (SQLite file, ...).
    pub data_dir: PathBuf,
    /// HTTP server.
    pub server: ServerSettings,
    /// Database connection.
    pub database: DatabaseSettings,
    /// Authentication.
    pub auth: AuthSettings,
    /// Chaos hook.
    pub chaos: ChaosSettings,
    /// Logging.
    pub log: LogSettings,
    /// Health probing.
    pub health: HealthSettings,
    /// Supervisor defaults.
    pub supervision: SupervisionSettings,
    /// The Explore catalogue.
    pub explore: ExploreSettings,
    /// The Explore cache.
    pub cache: CacheSettings,
    /// Jobs and events (RabbitMQ or embedded).
    pub queue: QueueSettings,
    /// Database backups.
    pub backup: BackupSettings,
    /// Inference: models, backends, pools, bounds, budgets.
    pub inference: InferenceSettings,
    /// The environment, from `CASTWORK_ENV` (not a key).
    #[serde(skip)]
    pub environment: Environment,
    /// Password of the bootstrap `admin` user, from `CASTWORK_BOOTSTRAP_ADMIN_PASSWORD` (not a key).
    #[serde(skip, default = "bootstrap_admin_password")]
    pub bootstrap_admin_password: Secret,
}

fn bootstrap_admin_password() -> Secret {
    Secret::new(std::env::var(env::BOOTSTRAP_ADMIN_PASSWORD).unwrap_or_default())
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub body_limit_bytes: usize,
    pub request_timeout_secs: u64,
    pub shutdown_grace_secs: u64,
    /// A connection must deliver a whole request head this long after it opens, or after
    /// the first byte of its next request.
    pub header_read_timeout_secs: u64,
    /// A keep-alive connection with no request in flight is closed after this long.
    pub idle_timeout_secs: u64,
    /// How long a write may wait for a client that reads nothing before its connection closes.
    pub write_timeout_secs: u64,
    /// Cap on open connections; 0: derived from the open-file limit.
    pub max_connections: usize,
    /// Requests served at once (0: no limit); past it requests wait (see `max_queued_requests`).
    pub max_in_flight_requests: usize,
    /// Requests waiting for a turn at once; more are answered 503 `overloaded` at once.
    pub max_queued_requests: usize,
    /// Longest wait for a turn before 503 `overloaded`, in milliseconds.
    pub queue_wait_ms: u64,
    /// Longest request target (path and query) answered; longer: 414.
    pub max_uri_bytes: usize,
    /// Largest total of request header lines (name, value and 4 bytes each); larger: 431.
    pub max_header_bytes: usize,
    /// Most request header lines; more: 431.
    pub max_headers: usize,
    /// Peers (CIDRs or single addresses) whose forwarding header names the client.
    pub trusted_proxies: Vec<String>,
    /// The header a trusted proxy names the client in.
    pub client_ip_header: ClientIpHeader,
}

/// The header trusted proxies name the client in (`server.client_ip_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum ClientIpHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    #[serde(rename = "forwarded")]
    Forwarded,
}

impl ServerSettings {
    /// `server.trusted_proxies` as networks; a single address is its own /32 or /128.
    /// The error names the entry that is neither.
    pub fn trusted_proxy_networks(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .iter()
            .map(|entry| {
                let entry = entry.trim();
                entry
                    .parse::<ipnet::IpNet>()
                    .map(|net| net.trunc())
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        format!("'{entry}' is not an IP address or CIDR network (e.g. 10.0.0.0/8, ::1)")
                    })
            })
            .collect()
    }
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Empty for the embedded SQLite file; may hold a password, so it is a secret.
    pub url: Secret,
    pub max_connections: u32,
    pub connect_timeout_secs: u64,
}

/// JWT signing algorithm, pinned by configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum JwtAlgorithm {
    HS256,
    EdDSA,
    RS256,
}

/// `[auth]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub jwt_secret: Secret,
    pub algorithm: JwtAlgorithm,
    pub private_key_path: String,
    pub public_key_path: String,
    pub issuer: String,
    pub audience: String,
    pub access_ttl_secs: u64,
    pub refresh_ttl_secs: u64,
    pub login_burst: u32,
    pub login_per_minute: u32,
    /// Password hashes and verifications running at once; 0: one per core.
    pub hashing_concurrency: usize,
    /// How long a request waits for a hashing permit before 503 `busy`.
    pub hashing_wait_ms: u64,
    /// Least zxcvbn score (0–4) a new password needs; 0 checks only length and characters.
    pub password_min_score: u8,
    /// How often each node reads sessions revoked by other nodes from the database, in ms.
    pub revocation_poll_ms: u64,
    /// Most revoked sessions held in memory; see `crate::auth::revocation` for what happens past it.
    pub revocation_max_entries: usize,
}

/// `[chaos]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosSettings {
    pub enabled: bool,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
    Compact,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// `[health]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    pub probe_interval_ms: u64,
    pub probe_timeout_ms: u64,
    pub degraded_latency_ms: u64,
}

/// `[supervision]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisionSettings {
    pub max_restarts: u32,
    pub within_secs: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub down_retry_secs: u64,
    pub ask_timeout_ms: u64,
    /// How long a child's start may take before it counts as a failure.
    pub start_timeout_ms: u64,
}

/// `[cache]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    pub enabled: bool,
    pub shards: usize,
    pub l1_enabled: bool,
    pub l1_max_bytes: u64,
    pub l1_max_entries: usize,
    pub item_ttl_secs: u64,
    pub list_ttl_secs: u64,
    pub search_ttl_secs: u64,
    pub categories_ttl_secs: u64,
    pub trending_ttl_secs: u64,
    /// Lifetime of a stored item summary in the cache.
    pub summary_ttl_secs: u64,
    pub negative_ttl_secs: u64,
    pub ttl_jitter: f64,
    pub xfetch_beta: f64,
    pub compress_threshold_bytes: usize,
    pub warm_on_start: bool,
    /// Reads whose shard cannot answer that may load from the database at once
    /// (0: `database.max_connections`).
    pub bypass_max_in_flight: usize,
    /// Such reads that may wait for a turn; beyond that they are refused (503 `overloaded`).
    pub bypass_max_queued: usize,
    /// Longest a cache load may run before its waiters get 503 `cache_load_timeout`
    /// and the key is free to load again, in milliseconds.
    pub load_timeout_ms: u64,
    pub redis: CacheRedisSettings,
}

/// `[cache.redis]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRedisSettings {
    /// May carry a password, so it is a secret.
    pub url: Secret,
    pub key_prefix: String,
    pub pool_size: usize,
    /// `MGET`s the L2 reader keeps in flight at once (1 batches the most).
    pub read_batches_in_flight: usize,
    /// Misses that may wait for the L2 reader at once; more go straight to the database.
    pub max_queued_reads: usize,
    pub timeout_ms: u64,
    pub breaker: BreakerSettings,
}

/// A circuit breaker's settings (`[cache.redis.breaker]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    pub window_size: u32,
    pub minimum_calls: u32,
    pub failure_rate_threshold: f64,
    pub slow_call_rate_threshold: f64,
    pub slow_call_ms: u64,
    pub half_open_permitted_calls: u32,
    pub open_ms: u64,
    pub max_open_ms: u64,
}

#[cfg(test)]
impl AuthSettings {
    /// The embedded defaults' `[auth]` with `secret`: unit tests start from what a node runs
    /// with and change only what they test.
    pub fn for_tests(secret: &str) -> Self {
        let figment = Figment::new().merge(Toml::string(DEFAULTS));
        let mut auth = figment.extract_inner::<AuthSettings>("auth").expect("the embedded [auth] parses");
        auth.jwt_secret = Secret::new(secret);
        auth
    }
}

impl BreakerSettings {
    /// The breaker configuration these settings describe.
    pub fn to_config(&self) -> crate::supervision::breaker::BreakerConfig {
        crate::supervision::breaker::BreakerConfig {
            window_size: self.window_size,
            minimum_calls: self.minimum_calls,
            failure_rate_threshold: self.failure_rate_threshold,
            slow_call_rate_threshold: self.slow_call_rate_threshold,
            slow_call_duration: Duration::from_millis(self.slow_call_ms),
            half_open_permitted_calls: self.half_open_permitted_calls,
            open_duration: Duration::from_millis(self.open_ms),
            max_open_duration: Duration::from_millis(self.max_open_ms),
        }
    }
}

/// `[explore]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExploreSettings {
    /// Import the sample catalogue embedded in the binary when `items` is empty at start.
    pub import_sample_on_start: bool,
    /// Key that signs list cursors; empty: derived from `auth.jwt_secret` when set,
    /// else a random key per process.
    pub cursor_secret: Secret,
    /// How often counted item views are flushed to the database.
    pub views_flush_ms: u64,
    /// Half-life of a view in the trending score.
    pub trend_half_life_hours: f64,
    /// A view counts once per (user, item) within this many seconds; 0 counts every view.
    pub view_dedup_window_secs: u64,
    /// Most (user, item) pairs the ViewCounter remembers for that (about 40 bytes each).
    pub view_dedup_max_entries: usize,
    /// Item changes the semantic indexer applies at once (and texts per embed call).
    pub semantic_batch_max: usize,
    /// Item changes waiting for the semantic indexer; past it they are dropped and
    /// the index is reloaded from the database.
    pub semantic_queue_capacity: usize,
    /// How often the semantic indexer reads the vectors other nodes and jobs wrote.
    pub semantic_sync_secs: u64,
}

/// `[queue]`: jobs, the outbox relay and events.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// `amqp://` or `amqps://` URL of RabbitMQ; empty: embedded, in-process delivery.
    pub amqp_url: Secret,
    /// Prefix of every exchange and queue name (`<prefix>.jobs`, `<prefix>.events`, ...).
    pub prefix: String,
    /// JobWorkers on this node (jobs run at once).
    pub workers: usize,
    /// Unacknowledged deliveries the broker hands this node at once (AMQP prefetch).
    pub prefetch: u16,
    /// Attempts of a failing job before it is dead-lettered and `failed`.
    pub max_attempts: u32,
    /// The retry delays in milliseconds, one retry queue each; attempt n waits the
    /// n-th (the last one past the end).
    pub retry_delays_ms: Vec<u64>,
    /// Quorum queue delivery limit: redeliveries of one message (a worker dying each
    /// time) before the broker dead-letters it.
    pub delivery_limit: u32,
    /// A running job's progress is written to the database at most this often.
    pub progress_interval_ms: u64,
    /// A job still running this long after it started is cancelled and its worker replaced.
    pub job_timeout_secs: u64,
    /// The relay looks for unpublished outbox rows this often (writes by this node also wake it).
    pub outbox_poll_ms: u64,
    /// Outbox rows published per batch.
    pub outbox_batch: u64,
    /// Published outbox rows older than this are deleted (`30m`, `12h`, `7d`).
    pub outbox_retention: String,
    /// Finished jobs older than this are deleted (`30m`, `12h`, `7d`).
    pub job_retention: String,
    /// Outbox lag past this many seconds reports the `outbox` health component degraded.
    pub outbox_lag_alert_secs: u64,
    /// First and longest wait between reconnects to RabbitMQ.
    pub reconnect_initial_ms: u64,
    pub reconnect_max_ms: u64,
    /// Largest job payload accepted, in bytes of JSON.
    pub max_payload_bytes: usize,
    /// Most jobs waiting or running at once (queued, retrying, running); past it new
    /// jobs are refused with 503 `queue_full`.
    pub max_pending_jobs: u64,
    /// Directory `import_catalog` jobs may read server-side files from; empty:
    /// `<data_dir>/imports`.
    pub import_dir: String,
    /// Cron schedules: each tick starts one job across all nodes.
    pub schedules: Vec<ScheduleSettings>,
    /// Enables the `noop_sleep` job kind (a controllable job for tests); refused in production.
    pub test_jobs: bool,
}

/// One `[[queue.schedules]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSettings {
    /// Unique name, e.g. `nightly-backup`.
    pub name: String,
    /// Cron expression (5 fields, or 6 with seconds first), in UTC.
    pub cron: String,
    /// The job kind to start.
    pub kind: String,
    /// Its payload.
    #[serde(default = "empty_object")]
    pub payload: serde_json::Value,
}

impl ScheduleSettings {
    /// The cron expression, parsed (seconds optional).
    pub fn parse_cron(&self) -> Result<croner::Cron, String> {
        croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(&self.cron)
            .map_err(|e| e.to_string())
    }
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// `[backup]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSettings {
    /// Passphrase or key that encrypts archives at rest; empty: archives are not
    /// encrypted (refused in production).
    pub encryption_key: Secret,
    /// Archives kept in `<data_dir>/backups/`; older ones are deleted after a backup (0: all kept).
    pub keep: usize,
}

impl QueueSettings {
    /// Whether jobs and events go through RabbitMQ (else in-process).
    pub fn uses_amqp(&self) -> bool {
        !self.amqp_url.is_empty()
    }
    /// `queue.outbox_retention`, validated at load.
    pub fn outbox_retention(&self) -> Duration {
        parse_span(&self.outbox_retention).unwrap_or(Duration::from_secs(7 * 86_400))
    }
    /// `queue.job_retention`, validated at load.
    pub fn job_retention(&self) -> Duration {
        parse_span(&self.job_retention).unwrap_or(Duration::from_secs(30 * 86_400))
    }
}

/// `30s`, `15m`, `12h`, `7d`: a span of time as the retention keys write it.
pub fn parse_span(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return None,
    };
    number.checked_mul(seconds).map(Duration::from_secs)
}

impl SupervisionSettings {
    /// The restart intensity these settings describe.
    pub fn intensity(&self) -> RestartIntensity {
        RestartIntensity { max_restarts: self.max_restarts, within: Duration::from_secs(self.within_secs) }
    }
    /// The restart backoff these settings describe (validated at load).
    pub fn backoff(&self) -> Backoff {
        Backoff::new(
            Duration::from_millis(self.backoff_initial_ms),
            Duration::from_millis(self.backoff_max_ms),
            2.0,
            0.5,
        )
        .unwrap_or_default()
    }
    /// How long to wait before retrying a down child, if at all.
    pub fn down_retry(&self) -> Option<Duration> {
        (self.down_retry_secs > 0).then(|| Duration::from_secs(self.down_retry_secs))
    }
    /// Deadline of an ask to an actor.
    pub fn ask_timeout(&self) -> Duration {
        Duration::from_millis(self.ask_timeout_ms)
    }
    /// Deadline of a child's start function.
    pub fn start_timeout(&self) -> Duration {
        Duration::from_millis(self.start_timeout_ms)
    }
}

impl Settings {
    /// A one-for-one supervisor called `name` with the `[supervision]` limits; it
    /// gives each child `server.shutdown_grace_secs` to stop.
    pub fn supervisor(&self, name: impl Into<String>) -> Supervisor {
        let sup = &self.supervision;
        Supervisor {
            name: name.into(),
            strategy: RestartStrategy::OneForOne,
            intensity: sup.intensity(),
            backoff: sup.backoff(),
            down_retry: sup.down_retry(),
            ask_timeout: sup.ask_timeout(),
            shutdown_timeout: Duration::from_secs(self.server.shutdown_grace_secs),
            start_timeout: sup.start_timeout(),
        }
    }

    /// Loads the layered configuration from the process environment and validates it.
    pub fn load() -> Result<Self, ConfigError> {
        let environment = Environment::from_env()?;
        let dir =
            std::env::var(env::CONFIG_DIR).map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("config"));
        let figment = Self::figment(&environment, &dir);
        Self::from_figment_in(figment, environment)
    }

    /// The layered sources, without the environment-specific rules applied.
    pub fn figment(environment: &Environment, config_dir: &Path) -> Figment {
        Figment::new()
            .merge(Toml::string(DEFAULTS))
            .merge(Toml::file(config_dir.join(format!("{}.toml", environment.name()))))
            .merge(Env::prefixed(env::PREFIX).split("__").ignore(&env::NOT_KEYS))
    }

    /// Extracts and validates settings from any figment (tests layer their own values on top),
    /// under the rules of the environment `CASTWORK_ENV` names.
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        Self::from_figment_in(figment, Environment::from_env()?)
    }

    /// Extracts and validates settings from any figment under `environment`'s rules.
    pub fn from_figment_in(figment: Figment, environment: Environment) -> Result<Self, ConfigError> {
        let mut settings: Settings = figment.extract().map_err(|e| ConfigError::Source(one_line(&e)))?;
        settings.environment = environment;
        settings.validate()?;
        Ok(settings)
    }

    /// The address the server binds.
    pub fn bind_address(&self) -> String {
        format!("{}:{}", self.server.host, self.server.port)
    }

    /// The database URL in effect: the configured one, or the embedded SQLite file.
    pub fn database_url(&self) -> String {
        let url = self.database.url.expose();
        if url.is_empty() {
            format!("sqlite://{}?mode=rwc", self.data_dir.join("castwork.db").display())
        } else {
            url.to_owned()
        }
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self).map_err(|e| ConfigError::Source(e.to_string()))
    }
}

/// figment errors can span lines and list several causes; keep the first, on one line.
fn one_line(error: &figment::Error) -> String {
    let mut text = error.to_string().replace('\n', " ");
    let key = error.path.join(".");
    if !key.is_empty() && !text.contains(&key) {
        text = format!("{key}: {text}");
    }
    text
}

#[cfg(test)]
mod tests;
