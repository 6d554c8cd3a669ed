use crate::both;
use crate::helpers::{Backend, spawn_app_with};

async fn health_reports_database_ok(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let (status, body) = app.get_json("/health", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["components"]["database"]["status"], "ok", "{body}");
    assert_eq!(body["components"]["database"]["critical"], true);
    assert!(body["components"]["database"]["latency_ms"].as_f64().is_some());
    assert_eq!(body["actors_down"].as_array().map(Vec::len), Some(0));
}
both!(health_reports_database_ok);

async fn live_and_ready(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let (status, body) = app.get_json("/health/live", None).await;
    assert_eq!((status, &body["status"]), (200, &serde_json::json!("alive")));
    let (status, body) = app.get_json("/health/ready", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["ready"], true);
}
both!(live_and_ready);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_public_prometheus_text() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    // make sure at least one request has been counted
    let _ = app.get_json("/health/live", None).await;
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.unwrap();
    assert!(text.contains("castwork_http_requests_total"), "{text}");
    assert!(text.contains("castwork_http_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains("castwork_db_pool_connections"), "{text}");
    assert!(text.contains("castwork_health_status{component=\"database\"}"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_honoured_and_returned() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let response =
        app.client.get(app.url("/health/live")).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let response = app.client.get(app.url("/health/live")).send().await.unwrap();
    let generated = response.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(generated.len(), 36, "a UUID is generated: {generated}");
}
