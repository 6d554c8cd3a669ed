//! `GET /metrics`: Prometheus text.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;
use crate::{db, metrics, telemetry};

/// Renders every metric, refreshing the pool gauges first.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Every metric in the Prometheus text exposition format 0.0.4.",
            body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"),
    ),
)]
#[tracing::instrument(skip_all)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let (size, idle) = db::pool_stats(state.db());
    metrics::db_pool(size, idle, state.settings().database.max_connections);
    let body = telemetry::prometheus().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}
