//! Cache operations (admin): `GET /api/v1/admin/cache`, `DELETE /api/v1/admin/cache`,
//! `POST /api/v1/admin/cache/warm`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use super::extract::Admin;
use super::openapi::{ErrorBody, Forbidden, Unauthenticated};
use crate::cache::bypass::BypassStats;
use crate::cache::handle::ShardReport;
use crate::explore::warm::{WarmReport, warm as run_warm};
use crate::supervision::breaker::BreakerSnapshot;

/// The cache as the admin endpoint shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CacheReport {
    pub enabled: bool,
    /// Whether Redis is configured as L2.
    pub l2: bool,
    /// The Redis breaker; `null` without L2.
    pub breaker: Option<BreakerSnapshot>,
    /// Explore reads that reached the database since start (all paths).
    pub db_loads: u64,
    /// Shards marked down (their reads bypass the cache).
    pub shards_down: usize,
    /// Reads that bypassed the cache since start because their shard could not answer.
    pub bypass: BypassStats,
    /// Per shard: `shard`, `available`, `entries`, `bytes`, `in_flight` (loads running),
    /// `hits_l1`, `hits_l2`, `misses`, `loads`, `coalesced` (waiters on another's load),
    /// `refreshes`, `evictions` and `load_errors`.
    #[schema(value_type = Vec<Object>)]
    pub shards: Vec<ShardReport>,
}

fn disabled() -> ApiError {
    ApiError::NotFound("the cache is disabled (cache.enabled = false)".to_owned())
}

/// Per shard: entries, bytes, hits and misses per tier, loads, coalesced waiters, in-flight loads.
#[utoipa::path(
    get,
    path = "/api/v1/admin/cache",
    operation_id = "cacheReport",
    tag = "admin",
    responses(
        (status = 200, description = "This node's cache: per shard numbers, the Redis breaker, database loads \
            and bypassed reads. With `cache.enabled = false`, `enabled` is `false` and `shards` empty.",
            body = CacheReport),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(admin = %caller.principal.username))]
pub async fn report(State(state): State<AppState>, caller: Admin) -> Json<CacheReport> {
    let explore = state.explore();
    let db_loads = explore.service().loads();
    let Some(cache) = explore.cache() else {
        return Json(CacheReport {
            enabled: false,
            l2: false,
            breaker: None,
            db_loads,
            shards_down: 0,
            bypass: BypassStats::default(),
            shards: Vec::new(),
        });
    };
    let breaker = cache.l2().map(|l2| l2.breaker().snapshot());
    let shards = cache.report().await;
    Json(CacheReport {
        enabled: true,
        l2: cache.l2().is_some(),
        breaker,
        db_loads,
        shards_down: cache.shards_down(),
        bypass: cache.bypass_stats(),
        shards,
    })
}

/// Flushes L1 on every node and makes every L2 entry unreachable.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/cache",
    operation_id = "cacheFlush",
    tag = "admin",
    responses(
        (status = 204, description = "Flushed: L1 of every node, and every Redis entry made unreachable."),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 404, description = "The cache is disabled (`cache.enabled = false`) (`not_found`).",
            body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(admin = %caller.principal.username))]
pub async fn flush(State(state): State<AppState>, caller: Admin) -> Result<StatusCode, ApiError> {
    let cache = state.explore().cache().ok_or_else(disabled)?;
    cache.flush().await;
    Ok(StatusCode::NO_CONTENT)
}

/// Warms the first pages of every group and category, trending and the most viewed items.
#[utoipa::path(
    post,
    path = "/api/v1/admin/cache/warm",
    operation_id = "cacheWarm",
    tag = "admin",
    responses(
        (status = 200, description = "Warming has finished: what it loaded.", body = WarmReport),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 404, description = "The cache is disabled (`cache.enabled = false`) (`not_found`).",
            body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(admin = %caller.principal.username))]
pub async fn warm(State(state): State<AppState>, caller: Admin) -> Result<Json<WarmReport>, ApiError> {
    state.explore().cache().ok_or_else(disabled)?;
    Ok(Json(run_warm(state.explore()).await))
}
