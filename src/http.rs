//! The HTTP layer: one file per API area, one error type, one router. Handlers
//! only validate input, ask actors or services, and map the answer to HTTP.

pub mod admin;
pub mod auth;
#[cfg(feature = "bench-routes")]
pub mod bench;
pub mod cache;
pub mod client_addr;
pub mod edge;
pub mod error;
pub mod explore;
pub mod extract;
pub mod health;
pub mod items;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod shed;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request, StatusCode};
use axum::routing::{get, post, put};
use sea_orm::DatabaseConnection;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::AuthService;
use crate::config::Settings;
use crate::explore::cached::CachedExplore;
use crate::runtime::Runtime;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Arc<Settings>,
    runtime: Arc<Runtime>,
    auth: AuthService,
    explore: CachedExplore,
    db: DatabaseConnection,
    shutting_down: AtomicBool,
    started: tokio::time::Instant,
}

impl AppState {
    /// Bundles the node's parts for the handlers.
    pub fn new(
        settings: Arc<Settings>,
        runtime: Arc<Runtime>,
        auth: AuthService,
        explore: CachedExplore,
        db: DatabaseConnection,
    ) -> Self {
        let inner = Inner {
            settings,
            runtime,
            auth,
            explore,
            db,
            shutting_down: AtomicBool::new(false),
            started: tokio::time::Instant::now(),
        };
        Self { inner: Arc::new(inner) }
    }
    /// The effective configuration.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }
    /// The actor tree.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }
    /// Authentication.
    pub fn auth(&self) -> &AuthService {
        &self.inner.auth
    }
    /// The catalogue.
    pub fn explore(&self) -> &CachedExplore {
        &self.inner.explore
    }
    /// The database pool (for pool gauges only; handlers go through services).
    pub fn db(&self) -> &DatabaseConnection {
        &self.inner.db
    }
    /// Marks the node as shutting down: readiness turns 503.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }
    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }
    /// Time since the node started.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole API.
pub fn router(state: AppState) -> Router {
    let settings = state.settings().clone();
    let routes = Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/health", get(health::health))
        .route("/metrics", get(ops::metrics))
        .route("/api/openapi.json", get(openapi::openapi))
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/refresh", post(auth::refresh))
        .route("/api/v1/auth/logout", post(auth::logout))
        .route("/api/v1/auth/me", get(auth::me))
        .route("/api/v1/explore/items", get(explore::list))
        .route("/api/v1/explore/items/{id}", get(explore::item))
        .route("/api/v1/explore/categories", get(explore::categories))
        .route("/api/v1/explore/trending", get(explore::trending))
        .route("/api/v1/explore/search", get(explore::search))
        .route("/api/v1/items", post(items::create))
        .route("/api/v1/items/{id}", put(items::replace).patch(items::patch).delete(items::delete))
        .route("/api/v1/admin/users", post(admin::create_user))
        .route("/api/v1/admin/auth", get(admin::auth_report))
        .route("/api/v1/admin/users/{username}/revoke-sessions", post(admin::revoke_sessions))
        .route("/api/v1/admin/cache", get(cache::report).delete(cache::flush))
        .route("/api/v1/admin/cache/warm", post(cache::warm))
        .route("/api/v1/admin/actors", get(admin::actors))
        .route("/api/v1/admin/chaos", post(admin::chaos));
    #[cfg(feature = "bench-routes")]
    let routes = routes.merge(bench::routes());
    let api = routes
        .fallback(middleware::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::authenticate))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(settings.server.request_timeout_secs),
        ))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        // outermost of the routed layers: it sees timeouts, panics and auth refusals too
        .layer(axum::middleware::from_fn(middleware::track))
        .with_state(state);

    let request_span = |req: &Request<_>| {
        let request_id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
        tracing::info_span!(
            "http",
            method = %req.method(),
            path = %req.uri().path(),
            request_id = %request_id,
            client = tracing::field::Empty,
            user = tracing::field::Empty,
        )
    };
    let proxies = client_addr::TrustedProxies::from_settings(&settings.server);

    api.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
            .layer(TraceLayer::new_for_http().make_span_with(request_span))
            // inside the trace layer, so the span it records `client` in is the request's
            .layer(axum::middleware::from_fn_with_state(proxies, client_addr::resolve))
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(axum::middleware::from_fn(middleware::json_errors))
            .layer(DefaultBodyLimit::max(settings.server.body_limit_bytes)),
    )
    // past the concurrency limit: a fast 503, before any per-request work
    .layer(shed::ShedLayer::new(shed::ShedLimits::from_settings(&settings.server)))
    // outermost: limits answered before anything is logged, and a bad incoming
    // request id dropped before it is logged or echoed
    .layer(edge::EdgeLayer::new(edge::EdgeLimits::from_settings(&settings.server), REQUEST_ID))
}
