use serde_json::Value;

use crate::helpers::{Backend, spawn_app, spawn_app_with};

async fn body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/json"), "error bodies are JSON (status {status})");
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body("{\"username\": ")
        .send()
        .await
        .unwrap();
    let (status, body) = body(response).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "malformed_json");
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_field_types_and_unknown_fields_are_422() {
    let app = spawn_app().await;
    for payload in
        [r#"{"username": 5, "password": "x"}"#, r#"{"username": "a", "password": "b", "extra": 1}"#]
    {
        let response = app
            .client
            .post(app.url("/api/v1/auth/login"))
            .header("content-type", "application/json")
            .body(payload)
            .send()
            .await
            .unwrap();
        let (status, body) = body(response).await;
        assert_eq!(status, 422, "{payload}");
        assert_eq!(body["error"]["code"], "validation_failed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_type_is_415() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("content-type", "text/plain")
        .body("username=admin")
        .send()
        .await
        .unwrap();
    let (status, body) = body(response).await;
    assert_eq!(status, 415);
    assert_eq!(body["error"]["code"], "unsupported_media_type");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_413() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.server.body_limit_bytes = 4096).await;
    let big = format!(r#"{{"username": "admin", "password": "{}"}}"#, "x".repeat(10_000));
    let response = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let (status, body) = body(response).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "payload_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_values_are_400() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    for query in ["format=xml", "format=", "unknown=1"] {
        let response = app
            .client
            .get(app.url(&format!("/api/v1/admin/actors?{query}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let (status, body) = body(response).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods() {
    let app = spawn_app().await;
    // auth is on by default: an unknown route is not public
    let response = app.client.get(app.url("/api/v1/nope")).send().await.unwrap();
    let (status, _) = body(response).await;
    assert_eq!(status, 401);

    let token = app.admin_token().await;
    let response = app.client.get(app.url("/api/v1/nope")).bearer_auth(&token).send().await.unwrap();
    let (status, body_404) = body(response).await;
    assert_eq!(status, 404);
    assert_eq!(body_404["error"]["code"], "not_found");

    let response = app.client.get(app.url("/api/v1/auth/login")).send().await.unwrap();
    let (status, body_405) = body(response).await;
    assert_eq!(status, 405);
    assert_eq!(body_405["error"]["code"], "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_credentials_are_400() {
    let app = spawn_app().await;
    let response = app.login("", "").await;
    let (status, body) = body(response).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "missing_credentials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_segment_that_is_not_utf8_is_400_invalid_path() {
    let app = spawn_app().await;
    let viewer = app.user_token("path-viewer", "viewer").await;
    let admin = app.admin_token().await;
    let item =
        app.client.get(app.url("/api/v1/explore/items/%FF%FE")).bearer_auth(&viewer).send().await.unwrap();
    let (status, json) = body(item).await;
    assert_eq!((status, json["error"]["code"].as_str()), (400, Some("invalid_path")), "{json}");
    let revoke = app
        .client
        .post(app.url("/api/v1/admin/users/%C3%28/revoke-sessions"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let (status, json) = body(revoke).await;
    assert_eq!((status, json["error"]["code"].as_str()), (400, Some("invalid_path")), "{json}");
}
