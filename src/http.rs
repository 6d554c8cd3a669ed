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
use sea_orm::DatabaseConnection;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

/// Every route of the API with its OpenAPI operation, declared once: the
/// router ([`router`]) and the document ([`openapi::document`], served at
/// `GET /api/openapi.json`) are both built from it. `routes!` adds a handler's
/// route and its `#[utoipa::path]` operation together, one path per call; a
/// plain `.route(...)` would serve a path the document does not describe
/// (`tests/api/openapi.rs` fails on that).
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::health))
        .routes(routes!(ops::metrics))
        .routes(routes!(openapi::openapi))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::me))
        .routes(routes!(explore::list))
        .routes(routes!(explore::item))
        .routes(routes!(explore::categories))
        .routes(routes!(explore::trending))
        .routes(routes!(explore::search))
        .routes(routes!(items::create))
        .routes(routes!(items::replace, items::patch, items::delete))
        .routes(routes!(admin::create_user))
        .routes(routes!(admin::auth_report))
        .routes(routes!(admin::revoke_sessions))
        .routes(routes!(cache::report, cache::flush))
        .routes(routes!(cache::warm))
        .routes(routes!(admin::actors))
        .routes(routes!(admin::chaos))
}

/// The whole API: the routes of [`api`] (its document half is the one
/// [`openapi::document`] serves) with the middleware around them.
pub fn router(state: AppState) -> Router {
    let settings = state.settings().clone();
    // the document half is the one `openapi::document` serves, built by the same `api()`
    let (routes, _document) = api().split_for_parts();
    // benchmark-only routes are served, but not described
    #[cfg(feature = "bench-routes")]
    let routes = routes.merge(bench::routes());
    let routed = routes
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

    routed
        .layer(
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
