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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post, put};
use sea_orm::DatabaseConnection;

use crate::actors::root::Runtime;
use crate::auth::AuthService;
use crate::config::Settings;
use crate::explore::cached::CachedExplore;

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

/// The whole API.
pub fn router(state: AppState) -> Router {
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
    // every layer, in one call: see `middleware::stack` for the order
    let layers = middleware::stack(&state);
    routes.fallback(middleware::not_found).layer(layers).with_state(state)
}
