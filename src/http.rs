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
pub mod jobs;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod shed;
pub mod v1;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use sea_orm::DatabaseConnection;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
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
    /// Cancelled when shutdown begins: long-lived responses (job event streams) end.
    stopping: CancellationToken,
    /// Permits for open job event streams (`GET /api/v1/jobs/{id}/events`).
    job_streams: Arc<Semaphore>,
    started: tokio::time::Instant,
    /// When the node started, in Unix seconds (`created` of `GET /v1/models`).
    started_unix: i64,
    /// Per-user token budgets of the inference API.
    token_budgets: crate::inference::budget::TokenBudgets,
}

impl AppState {
    /// Bundles the node's parts for the handlers; at most `max_job_streams` job
    /// event streams are open at once.
    pub fn new(
        settings: Arc<Settings>,
        runtime: Arc<Runtime>,
        auth: AuthService,
        explore: CachedExplore,
        db: DatabaseConnection,
        max_job_streams: usize,
    ) -> Self {
        let inner = Inner {
            settings,
            runtime,
            auth,
            explore,
            db,
            shutting_down: AtomicBool::new(false),
            stopping: CancellationToken::new(),
            job_streams: Arc::new(Semaphore::new(max_job_streams)),
            started: tokio::time::Instant::now(),
            started_unix: chrono::Utc::now().timestamp(),
            token_budgets: crate::inference::budget::TokenBudgets::new(),
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
    /// Marks the node as shutting down: readiness turns 503 and job event streams end.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        self.inner.stopping.cancel();
    }
    /// Cancelled when shutdown begins.
    pub fn stopping(&self) -> &CancellationToken {
        &self.inner.stopping
    }
    /// Permits for open job event streams.
    pub fn job_streams(&self) -> &Arc<Semaphore> {
        &self.inner.job_streams
    }
    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }
    /// Time since the node started.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }
    /// When the node started, in Unix seconds.
    pub fn started_unix(&self) -> i64 {
        self.inner.started_unix
    }
    /// This node's per-user token budgets.
    pub fn token_budgets(&self) -> &crate::inference::budget::TokenBudgets {
        &self.inner.token_budgets
    }
}

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
        .routes(routes!(explore::summary))
        .routes(routes!(explore::related))
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
        .routes(routes!(v1::chat_completions))
        .routes(routes!(v1::embeddings))
        .routes(routes!(v1::models))
        .routes(routes!(jobs::create, jobs::list))
        .routes(routes!(jobs::schedules))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::events))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::retry))
}

/// The whole API: the routes of [`api`] (its document half is the one
/// [`openapi::document`] serves) with the middleware around them.
pub fn router(state: AppState) -> Router {
    // the document half is the one `openapi::document` serves, built by the same `api()`
    let (routes, _document) = api().split_for_parts();
    // benchmark-only routes are served, but not described
    #[cfg(feature = "bench-routes")]
    let routes = routes.merge(bench::routes());
    // every layer, in one call: see `middleware::stack` for the order
    let layers = middleware::stack(&state);
    routes.fallback(middleware::not_found).layer(layers).with_state(state)
}
