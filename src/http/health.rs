//! `GET /health/live`, `GET /health/ready`, `GET /health`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::openapi::{LiveBody, ReadyBody};
use crate::health::{ComponentHealth, ComponentStatus, HealthMsg, HealthReport};

/// The node's overall status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overall {
    /// Every component ok and no supervised actor down.
    Ok,
    /// Something is not ok, but no critical component is down.
    Degraded,
    /// A critical component is down.
    Down,
}

/// The body of `GET /health`.
#[derive(Serialize, ToSchema)]
pub struct HealthBody {
    pub status: Overall,
    /// The crate version.
    #[schema(example = "0.1.0")]
    pub version: &'static str,
    pub uptime_secs: u64,
    /// Every probed component, by name (e.g. `database`).
    pub components: BTreeMap<String, ComponentHealth>,
    /// Names of supervised actors that are down.
    pub actors_down: Vec<String>,
    /// How jobs and events travel.
    pub queue: QueueMode,
}

/// `queue` in `GET /health`.
#[derive(Serialize, ToSchema)]
pub struct QueueMode {
    /// `amqp` (RabbitMQ: jobs and events reach every node) or `embedded` (in
    /// process: this node's jobs run here and its events reach only itself).
    #[schema(example = "embedded")]
    pub mode: &'static str,
}

/// 200 while the process runs.
#[utoipa::path(
    get,
    path = "/health/live",
    operation_id = "live",
    tag = "health",
    responses((status = 200, description = "The process is running.", body = LiveBody)),
)]
#[tracing::instrument(skip_all)]
pub async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "alive" }))
}

/// Folds component statuses into the node's status: a critical component down
/// makes the node down; anything else not ok makes it degraded.
pub fn overall(components: &BTreeMap<String, ComponentHealth>, actors_down: usize) -> Overall {
    let mut overall = if actors_down > 0 { Overall::Degraded } else { Overall::Ok };
    for c in components.values() {
        match c.status {
            ComponentStatus::Down if c.critical => return Overall::Down,
            ComponentStatus::Ok => {}
            _ => overall = Overall::Degraded,
        }
    }
    overall
}

/// The cache as a component: `degraded` while any shard is marked down (its reads
/// go to the database, so the node still serves); absent when the cache is off.
fn cache_component(state: &AppState) -> Option<ComponentHealth> {
    let cache = state.explore().cache()?;
    let down = cache.shards_down();
    let (status, last_error) = match down {
        0 => (ComponentStatus::Ok, None),
        n => {
            let total = cache.shard_count();
            let why = format!("{n} of {total} cache shards are down; their reads go to the database");
            (ComponentStatus::Degraded, Some(why))
        }
    };
    Some(ComponentHealth {
        status,
        critical: false,
        latency_ms: None,
        last_error,
        checked_at: Some(chrono::Utc::now()),
        consecutive_failures: 0,
        breaker: None,
    })
}

async fn report(state: &AppState) -> BTreeMap<String, ComponentHealth> {
    let mut components = probed(state).await;
    if let Some(cache) = cache_component(state) {
        components.insert("cache".to_owned(), cache);
    }
    components
}

async fn probed(state: &AppState) -> BTreeMap<String, ComponentHealth> {
    let health = &state.runtime().health;
    // health answers fast or says why not: never wait out a long restart backoff here
    let deadline = state.runtime().ask_timeout().min(std::time::Duration::from_secs(1));
    match health.ask_idempotent(deadline, HealthMsg::Report).await {
        Ok(HealthReport { components }) => components,
        Err(err) => {
            // the monitor itself is missing: say so rather than guess about the rest
            let monitor = ComponentHealth {
                status: ComponentStatus::Down,
                critical: false,
                latency_ms: None,
                last_error: Some(err.to_string()),
                checked_at: None,
                consecutive_failures: 0,
                breaker: None,
            };
            BTreeMap::from([("health_monitor".to_owned(), monitor)])
        }
    }
}

/// 200 when the node can serve; 503 with the reason otherwise.
#[utoipa::path(
    get,
    path = "/health/ready",
    operation_id = "ready",
    tag = "health",
    responses(
        (status = 200, description = "The node can serve: `{\"ready\": true}`.", body = ReadyBody),
        (status = 503, description = "Shutting down, or a critical component is down or not probed yet.",
            body = ReadyBody),
    ),
)]
#[tracing::instrument(skip_all)]
pub async fn ready(State(state): State<AppState>) -> Response {
    if state.is_shutting_down() {
        let body = serde_json::json!({ "ready": false, "reason": "shutting down" });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    let components = report(&state).await;
    let blocking: Vec<_> = components
        .iter()
        .filter(|(_, c)| c.critical && matches!(c.status, ComponentStatus::Down | ComponentStatus::Unknown))
        .map(|(name, c)| {
            let why = c.last_error.clone().unwrap_or_else(|| "not probed yet".to_owned());
            serde_json::json!({ "component": name, "status": c.status, "reason": why })
        })
        .collect();
    if blocking.is_empty() {
        (StatusCode::OK, Json(serde_json::json!({ "ready": true }))).into_response()
    } else {
        let body = serde_json::json!({ "ready": false, "reason": "a critical component is not ok", "components": blocking });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// Every component with its status, latency, last error and breaker state, plus
/// supervised actors that are down. 503 when the node is down.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "health",
    responses(
        (status = 200, description = "The node is `ok` or `degraded`.", body = HealthBody),
        (status = 503, description = "The node is `down`: a critical component is down.", body = HealthBody),
    ),
)]
#[tracing::instrument(skip_all)]
pub async fn health(State(state): State<AppState>) -> Response {
    let components = report(&state).await;
    // kept current by the supervisors' lifecycle events: a public route never walks mailboxes
    let actors_down = state.runtime().actors_down();
    let status = overall(&components, actors_down.len());
    let body = HealthBody {
        status,
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: state.uptime().as_secs(),
        components,
        actors_down,
        queue: QueueMode { mode: if state.runtime().queue.embedded() { "embedded" } else { "amqp" } },
    };
    let code = if status == Overall::Down { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(status: ComponentStatus, critical: bool) -> ComponentHealth {
        ComponentHealth {
            status,
            critical,
            latency_ms: None,
            last_error: None,
            checked_at: None,
            consecutive_failures: 0,
            breaker: None,
        }
    }

    #[test]
    fn folding() {
        let mut m = BTreeMap::new();
        m.insert("db".to_owned(), c(ComponentStatus::Ok, true));
        assert_eq!(overall(&m, 0), Overall::Ok);
        assert_eq!(overall(&m, 1), Overall::Degraded);
        m.insert("redis".to_owned(), c(ComponentStatus::Down, false));
        assert_eq!(overall(&m, 0), Overall::Degraded);
        m.insert("db".to_owned(), c(ComponentStatus::Down, true));
        assert_eq!(overall(&m, 0), Overall::Down);
    }
}
