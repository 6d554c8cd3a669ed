//! The hand-written layers on their own, in front of stub services.

use std::future::pending;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{HeaderValue, Method};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::time::{Duration, Instant, sleep};
use tower::{ServiceExt, service_fn};

use super::*;
use crate::metrics::HttpRequestMetrics;

#[test]
fn bearer_parsing() {
    let mut h = HeaderMap::new();
    assert_eq!(bearer_token(&h), None);
    h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc.def"));
    assert_eq!(bearer_token(&h), Some("abc.def"));
    h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer   xyz"));
    assert_eq!(bearer_token(&h), Some("xyz"));
    h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic Zm9vOmJhcg=="));
    assert_eq!(bearer_token(&h), None);
    h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
    assert_eq!(bearer_token(&h), None);
}

fn request(uri: &str) -> Request {
    Request::builder().uri(uri).body(Body::empty()).unwrap()
}

fn ok() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

async fn error_code(response: Response) -> String {
    let body = to_bytes(response.into_body(), 4096).await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    json["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test(start_paused = true)]
async fn a_request_past_its_deadline_is_answered_503_when_the_deadline_passes() {
    let started = Instant::now();
    let stuck = service_fn(|_req: Request| async { pending::<Result<Response, Infallible>>().await });
    let response =
        DeadlineLayer::new(Duration::from_secs(5)).layer(stuck).oneshot(request("/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(started.elapsed(), Duration::from_secs(5));

    let slow = service_fn(|_req: Request| async {
        sleep(Duration::from_secs(1)).await;
        Ok::<_, Infallible>(ok())
    });
    let response =
        DeadlineLayer::new(Duration::from_secs(5)).layer(slow).oneshot(request("/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT, "an answer before the deadline is kept");
    assert_eq!(started.elapsed(), Duration::from_secs(6));
}

#[tokio::test]
async fn a_panic_in_the_call_or_in_the_future_becomes_a_json_500() {
    let in_future = service_fn(|_req: Request| async {
        if true {
            panic!("in the future");
        }
        Ok::<_, Infallible>(ok())
    });
    let response = PanicGuardLayer.layer(in_future).oneshot(request("/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error_code(response).await, "internal");

    let in_call = service_fn(|_req: Request| -> std::future::Ready<Result<Response, Infallible>> {
        panic!("in the call");
    });
    let response = PanicGuardLayer.layer(in_call).oneshot(request("/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error_code(response).await, "internal");

    let fine = service_fn(|_req: Request| async { Ok::<_, Infallible>(ok()) });
    let response = PanicGuardLayer.layer(fine).oneshot(request("/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn errors_without_json_get_the_json_body_and_keep_their_headers() {
    let plain = service_fn(|_req: Request| async {
        let mut response = (StatusCode::METHOD_NOT_ALLOWED, "nope").into_response();
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET"));
        Ok::<_, Infallible>(response)
    });
    let response = JsonErrorsLayer.layer(plain).oneshot(request("/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()[header::ALLOW], "GET");
    assert!(response.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("application/json"));
    assert_eq!(error_code(response).await, "method_not_allowed");

    let fine =
        service_fn(|_req: Request| async { Ok::<_, Infallible>((StatusCode::OK, "body").into_response()) });
    let response = JsonErrorsLayer.layer(fine).oneshot(request("/")).await.unwrap();
    assert_eq!(to_bytes(response.into_body(), 64).await.unwrap(), "body", "a success is left alone");
}

#[tokio::test]
async fn the_request_id_is_kept_or_generated_and_echoed() {
    let echo = service_fn(|req: Request| async move {
        let seen = req.headers().get(REQUEST_ID).cloned();
        let mut response = ok();
        if let Some(seen) = seen {
            response.headers_mut().insert("x-seen", seen);
        }
        Ok::<_, Infallible>(response)
    });
    let layer = RequestIdLayer::new(REQUEST_ID);

    let mut given = request("/");
    given.headers_mut().insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
    let response = layer.layer(echo).oneshot(given).await.unwrap();
    assert_eq!(response.headers()[REQUEST_ID], "abc-123");
    assert_eq!(response.headers()["x-seen"], "abc-123");

    let response = layer.layer(echo).oneshot(request("/")).await.unwrap();
    let generated = response.headers()[REQUEST_ID].to_str().unwrap().to_owned();
    assert_eq!(response.headers()["x-seen"], generated.as_str(), "the handler saw the id that is echoed");
    let parsed = uuid::Uuid::parse_str(&generated).unwrap();
    assert_eq!(parsed.get_version_num(), 4);
    assert_eq!(generated, parsed.hyphenated().to_string(), "hyphenated, lowercase");
}

#[tokio::test]
async fn requests_are_counted_by_route_template_method_and_status() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let metrics = Arc::new(HttpRequestMetrics::new());
    let app = Router::new()
        .route("/items/{id}", get(|| async { "item" }))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(TrackLayer::new(metrics.clone()));
    for uri in ["/items/a", "/items/b", "/nowhere"] {
        app.clone().oneshot(request(uri)).await.unwrap();
    }
    let post = Request::builder().method(Method::POST).uri("/items/a").body(Body::empty()).unwrap();
    app.clone().oneshot(post).await.unwrap();

    let rendered = handle.render();
    for (labels, count) in [
        (r#"route="/items/{id}",method="GET",status="200""#, 2),
        (r#"route="unmatched",method="GET",status="404""#, 1),
        (r#"route="/items/{id}",method="POST",status="405""#, 1),
    ] {
        let line = format!("castwork_http_requests_total{{{labels}}} {count}");
        assert!(rendered.lines().any(|l| l == line), "{line} not in\n{rendered}");
    }
    assert_eq!(metrics.series(), 3);
}
