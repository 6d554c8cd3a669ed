//! [`Application`]: builds a node (database, migrations, auth, actor tree, router)
//! and runs it until a shutdown signal, then drains requests and stops the actors
//! children-first.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ractor::SpawnErr;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::auth::{AuthError, AuthService, JwtKeys};
use crate::cache::LoadGate;
use crate::cache::bypass::Bypass;
use crate::cache::redis::{RedisSettings, RedisTier};
use crate::cache::{Cache, CacheOptions};
use crate::config::Settings;
use crate::db::{self, DbError};
use crate::explore::cached::{CacheSink, CachedExplore, Ttls};
use crate::explore::semantic::changes::ChangeQueue;
use crate::explore::semantic::{Semantic, SharedIndex, indexer};
use crate::explore::tree::IndexerParts;
use crate::explore::{ExploreService, import, warm};
use crate::http::{self, AppState};
use crate::runtime::{Parts, Runtime};
use crate::server::{self, ServeLimits};
use crate::supervision::slot::ActorSlot;
use crate::telemetry;

/// Why a node could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("failed to set up authentication: {0}")]
    Auth(#[from] AuthError),
    #[error("CASTWORK_BOOTSTRAP_ADMIN_PASSWORD is refused: {0}")]
    BootstrapPassword(crate::auth::PolicyError),
    #[error("failed to start the actor tree: {0}")]
    Actors(#[from] SpawnErr),
    #[error("failed to bind {address}: {source}")]
    Bind { address: String, source: std::io::Error },
    #[error("failed to set up the cache: {0}")]
    Cache(String),
    #[error("failed to set up jobs: {0}")]
    Queue(#[from] crate::queue::tree::QueueSetupError),
}

/// A built node, bound to its port, not yet serving.
pub struct Application {
    listener: TcpListener,
    port: u16,
    state: AppState,
    runtime: Arc<Runtime>,
}

/// What an embedder (the API tests) can hand a node besides its settings: hooks
/// into its parts that are not configuration.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// Holds every cache load until opened (stalls the database behind the cache).
    pub load_gate: Option<LoadGate>,
    /// Most job event streams open at once, in place of
    /// [`http::jobs::MAX_STREAMS`] (a tiny bound, to test it).
    pub max_job_streams: Option<usize>,
}

impl Application {
    /// Connects and migrates the database, sets up auth, starts the actor tree and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with(settings, Hooks::default()).await
    }

    /// [`Application::build`], with `hooks` in place.
    pub async fn build_with(settings: Settings, hooks: Hooks) -> Result<Self, StartupError> {
        telemetry::prometheus();
        let settings = Arc::new(settings);
        let db = db::connect(&settings).await?;
        db::migrate(&db).await?;
        tracing::info!(backend = db::backend_name(&db), "database ready");

        let (keys, generated) = JwtKeys::from_settings(&settings.auth)?;
        if generated {
            tracing::warn!(
                "no auth.jwt_secret configured: using a random development secret; tokens will not survive a \
                 restart and nodes will not accept each other's tokens. Set CASTWORK_AUTH__JWT_SECRET (>= 32 bytes)"
            );
        }
        let auth = AuthService::new(db.clone(), Arc::new(keys), &settings.auth);
        // revoked sessions must be refused from the first request on
        auth.revocations().load().await.map_err(AuthError::from)?;
        if !settings.bootstrap_admin_password.is_empty() {
            auth.ensure_bootstrap_admin(settings.bootstrap_admin_password.expose()).await.map_err(|err| {
                match err {
                    AuthError::Policy(rule) => StartupError::BootstrapPassword(rule),
                    other => StartupError::Auth(other),
                }
            })?;
        }
        // the first login of an unknown user should cost what any other login costs
        let _ = tokio::task::spawn_blocking(crate::auth::password::warm_up).await;

        let address = settings.bind_address();
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|source| StartupError::Bind { address: address.clone(), source })?;
        let port = listener.local_addr().map_err(|source| StartupError::Bind { address, source })?.port();
        let explore = ExploreService::new(db.clone(), &cursor_secret(&settings));
        // the cache subscribes before anything writes, so the sample import below
        // invalidates pages a previous run may have left in Redis
        let cache = build_cache(&settings, hooks.load_gate).await?;
        // item changes other processes commit, as the outbox relay brings them
        let remote_changes = crate::explore::change::change_bus();
        if let Some(cache) = &cache {
            CacheSink { cache: cache.clone() }.subscribe(explore.changes());
            CacheSink { cache: cache.clone() }.subscribe(&remote_changes);
        }
        let local_changes = crate::queue::tree::LocalChanges::watch(explore.changes());
        if settings.explore.import_sample_on_start {
            match import::import_sample_if_empty(&db, explore.changes()).await {
                Ok(Some(summary)) => {
                    tracing::info!(
                        inserted = summary.inserted,
                        rejected = summary.rejected_count,
                        "sample catalogue imported"
                    )
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "could not import the sample catalogue; Explore starts empty")
                }
            }
        }
        if let Some(l2) = cache.as_ref().and_then(Cache::l2) {
            auth.revocations().set_announcer(Arc::new(l2.clone()));
        }
        let cached = CachedExplore::new(explore.clone(), cache.clone(), Ttls::from_settings(&settings.cache));
        let revocations = auth.revocations().clone();
        let inference = crate::inference::tree::build(&settings, cache.clone());
        let semantic = semantic_parts(&settings, &cached, &inference.inference, &remote_changes);
        let deps = crate::queue::kinds::KindDeps {
            settings: settings.clone(),
            db: db.clone(),
            explore: explore.clone(),
            cached: cached.clone(),
            inference: inference.inference.clone(),
            semantic: semantic.semantic.clone(),
        };
        let queue =
            crate::queue::tree::build(&settings, db.clone(), remote_changes, local_changes, &deps).await?;
        let runtime = Arc::new(
            Runtime::start(
                &settings,
                Parts {
                    db: db.clone(),
                    explore,
                    cache: cache.clone(),
                    revocations,
                    queue,
                    inference,
                    semantic,
                },
            )
            .await?,
        );
        if let Some(cache) = cache.as_ref().filter(|c| c.l2().is_some())
            && !cache.wait_subscribed(Duration::from_secs(3)).await
        {
            tracing::warn!(
                "not subscribed to cache invalidations yet; other nodes' writes may be missed until it is"
            );
        }
        if settings.cache.enabled && settings.cache.warm_on_start {
            // in the background: the node serves (slower) while it warms
            let warming = cached.clone();
            runtime.track(
                "cache-warm",
                tokio::spawn(async move {
                    if let Some(l2) = warming.cache().and_then(|c| c.l2()) {
                        // calls before the first connection fail fast and count against the breaker
                        l2.wait_connected(Duration::from_secs(5)).await;
                    }
                    warm::warm(&warming).await;
                }),
            );
        }
        let max_streams = hooks.max_job_streams.unwrap_or(http::jobs::MAX_STREAMS);
        let state = AppState::new(settings, runtime.clone(), auth, cached, db, max_streams);
        Ok(Self { listener, port, state, runtime })
    }

    /// The bound port (useful with `server.port = 0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The node's runtime: its actor tree and the handles to it (the job queue).
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The router this node serves ([`Self::run_until`] serves this one), for
    /// tests that inspect its routes.
    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    /// Serves until SIGINT or SIGTERM.
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `signal` completes; then stops accepting, lets in-flight
    /// requests and the node's background tasks finish within
    /// `server.shutdown_grace_secs`, and stops the actor tree children-first. Only
    /// what is still running at that deadline is cut, and that is logged.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let app = self.router();
        let Self { listener, port, state, runtime } = self;
        let grace = Duration::from_secs(state.settings().server.shutdown_grace_secs);
        let limits = ServeLimits::from_settings(state.settings());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (deadline_tx, mut deadline_rx) = tokio::sync::watch::channel(None::<Instant>);
        let notify_state = state.clone();
        let signal = async move {
            signal.await;
            tracing::info!(
                grace_secs = grace.as_secs(),
                "shutdown requested; draining in-flight requests and tasks"
            );
            let _ = deadline_tx.send(Some(Instant::now() + grace));
            notify_state.begin_shutdown();
            let _ = stop_tx.send(true);
        };
        tracing::info!(
            port,
            max_connections = limits.max_connections,
            header_read_timeout_secs = limits.timeouts.header_read.as_secs(),
            idle_timeout_secs = limits.timeouts.idle.as_secs(),
            "castwork listening"
        );
        let serving = async move {
            tokio::join!(signal, server::serve(listener, app, limits, stop_rx));
        };
        let mut expiry_rx = deadline_rx.clone();
        let grace_expired = async move {
            let deadline = expiry_rx.wait_for(Option::is_some).await.ok().and_then(|deadline| *deadline);
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = serving => {}
            () = grace_expired => {
                tracing::warn!(grace_secs = grace.as_secs(), "requests still in flight after the grace period; closing them");
            }
        }
        let deadline = deadline_rx.borrow_and_update().unwrap_or_else(|| Instant::now() + grace);
        runtime.shutdown(deadline).await;
        tracing::info!("castwork stopped");
        Ok(())
    }
}

/// Explore's reads on inference and the semantic indexer's parts: its queue takes
/// the item changes of this node and of the others from here on (after the sample
/// import: the catalogue is embedded by `embed_items`, and kept current by the
/// indexer after that).
fn semantic_parts(
    settings: &Settings,
    cached: &CachedExplore,
    inference: &crate::inference::Inference,
    remote_changes: &crate::explore::ChangeBus,
) -> IndexerParts {
    let index = SharedIndex::new(inference.embedding_model());
    let semantic = Semantic::new(cached.clone(), inference.clone(), index, cached.ttls().summary);
    let queue = Arc::new(ChangeQueue::new(settings.explore.semantic_queue_capacity));
    let slot = ActorSlot::new("semantic-indexer");
    indexer::watch(&[cached.service().changes(), remote_changes], &queue, &slot);
    IndexerParts { semantic, queue, slot }
}

/// The cache described by `[cache]`: `None` when disabled; L1-only without a Redis URL.
async fn build_cache(
    settings: &Settings,
    load_gate: Option<LoadGate>,
) -> Result<Option<Cache>, StartupError> {
    let cs = &settings.cache;
    if !cs.enabled {
        return Ok(None);
    }
    let l2 = if cs.redis.url.is_empty() {
        None
    } else {
        let redis = RedisSettings {
            url: cs.redis.url.expose().to_owned(),
            key_prefix: cs.redis.key_prefix.clone(),
            pool_size: cs.redis.pool_size,
            command_timeout: Duration::from_millis(cs.redis.timeout_ms),
            breaker: cs.redis.breaker.to_config(),
        };
        let tier = RedisTier::connect(redis).await.map_err(|e| StartupError::Cache(e.to_string()))?;
        // give the pool a moment: calls before the first connection fail fast and would
        // count against the breaker; an unreachable Redis only delays start by this much
        if !tier.wait_connected(Duration::from_secs(2)).await {
            tracing::warn!("redis is not reachable yet; serving from L1 and the database until it is");
        }
        Some(tier)
    };
    let in_flight = match cs.bypass_max_in_flight {
        0 => usize::try_from(settings.database.max_connections).unwrap_or(usize::MAX),
        n => n,
    };
    let bypass = Bypass::new(in_flight, cs.bypass_max_queued);
    let options = CacheOptions {
        shards: cs.shards,
        ask_timeout: settings.supervision.ask_timeout(),
        load_timeout: Duration::from_millis(cs.load_timeout_ms),
        l2_reads_in_flight: cs.redis.read_batches_in_flight,
        l2_max_queued_reads: cs.redis.max_queued_reads,
        load_gate,
    };
    Ok(Some(Cache::new(options, l2, bypass)))
}

/// The key that signs Explore cursors: `explore.cursor_secret`, else derived from
/// `auth.jwt_secret` (so every node of a cluster accepts every node's cursors), else
/// random per process (empty: the codec picks a random key).
fn cursor_secret(settings: &Settings) -> Vec<u8> {
    if !settings.explore.cursor_secret.is_empty() {
        return settings.explore.cursor_secret.expose().as_bytes().to_vec();
    }
    let jwt = settings.auth.jwt_secret.expose();
    if jwt.is_empty() { Vec::new() } else { [b"castwork-cursor:".as_slice(), jwt.as_bytes()].concat() }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
