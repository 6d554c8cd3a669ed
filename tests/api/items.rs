use serde_json::{Value, json};

use crate::both;
use crate::helpers::{Backend, TestApp, encode, spawn_app_with};

fn item(id: &str) -> Value {
    json!({
        "id": id, "title": "Modeling Market Mechanism with Minority Game",
        "body": "Using the Minority Game model we study market mechanism.",
        "category": "Statistical Mechanics", "category_code": "cond-mat.stat-mech", "group": "Physics",
        "tags": ["cond-mat.stat-mech", "q-fin.TR"], "source_url": "https://arxiv.org/abs/cond-mat/9909265",
        "published_at": "1999-09-17T14:39:02Z"
    })
}

fn path(id: &str) -> String {
    format!("/api/v1/items/{}", encode(id))
}

async fn outbox(app: &TestApp, id: &str) -> i64 {
    app.count_rows("outbox", "aggregate_id", id).await
}

async fn create_update_delete_with_outbox(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let editor = app.user_token("editor1", "editor").await;
    let viewer = app.user_token("viewer1", "viewer").await;
    let id = "cond-mat/9909265";

    let response =
        app.client.post(app.url("/api/v1/items")).bearer_auth(&viewer).json(&item(id)).send().await.unwrap();
    assert_eq!(response.status(), 403);

    let response =
        app.client.post(app.url("/api/v1/items")).bearer_auth(&editor).json(&item(id)).send().await.unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["etag"], "\"1\"");
    assert_eq!(response.headers()["location"], "/api/v1/explore/items/cond-mat%2F9909265");
    assert_eq!(outbox(&app, id).await, 1);
    let (status, got) = app.get_json(&format!("/api/v1/explore/items/{}", encode(id)), Some(&viewer)).await;
    assert_eq!((status, got["version"].as_i64()), (200, Some(1)));

    let response =
        app.client.post(app.url("/api/v1/items")).bearer_auth(&editor).json(&item(id)).send().await.unwrap();
    assert_eq!(response.status(), 409, "duplicate id");
    assert_eq!(outbox(&app, id).await, 1, "a failed write leaves no event");

    // PUT needs If-Match
    let mut changed = item(id);
    changed["title"] = json!("A new title");
    let response =
        app.client.put(app.url(&path(id))).bearer_auth(&editor).json(&changed).send().await.unwrap();
    assert_eq!(response.status(), 428);
    let response = app
        .client
        .put(app.url(&path(id)))
        .bearer_auth(&editor)
        .header("if-match", "\"1\"")
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"2\"");
    assert_eq!(outbox(&app, id).await, 2);

    // stale version → 409 with the current one, no event
    let response = app
        .client
        .patch(app.url(&path(id)))
        .bearer_auth(&editor)
        .header("if-match", "\"1\"")
        .json(&json!({ "title": "stale" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "version_conflict");
    assert_eq!(body["error"]["current_version"], 2);
    assert_eq!(outbox(&app, id).await, 2);

    // invalid patch → 422 per field, no event
    let response = app
        .client
        .patch(app.url(&path(id)))
        .bearer_auth(&editor)
        .header("if-match", "\"2\"")
        .json(&json!({ "title": "", "tags": (0..21).map(|i| format!("t{i}")).collect::<Vec<_>>() }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["fields"]["title"].is_string() && body["error"]["fields"]["tags"].is_string(),
        "{body}"
    );
    assert_eq!(outbox(&app, id).await, 2);

    let response = app
        .client
        .patch(app.url(&path(id)))
        .bearer_auth(&editor)
        .header("if-match", "\"2\"")
        .json(&json!({ "tags": ["q-fin.TR"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let patched: Value = response.json().await.unwrap();
    assert_eq!((patched["version"].as_i64(), patched["title"].as_str()), (Some(3), Some("A new title")));
    assert_eq!(patched["tags"], json!(["q-fin.TR"]));

    let response = app
        .client
        .delete(app.url(&path(id)))
        .bearer_auth(&editor)
        .header("if-match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let response = app
        .client
        .delete(app.url(&path(id)))
        .bearer_auth(&editor)
        .header("if-match", "\"3\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(outbox(&app, id).await, 4);
    assert_eq!(app.count_rows("outbox", "event_type", "item.deleted").await, 1);
    let (status, _) = app.get_json(&format!("/api/v1/explore/items/{}", encode(id)), Some(&viewer)).await;
    assert_eq!(status, 404);
    assert_eq!(app.count_rows("item_tags", "item_id", id).await, 0);
}
both!(create_update_delete_with_outbox);

async fn concurrent_puts_one_wins(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let editor = app.user_token("racer", "editor").await;
    let id = "race-1";
    let response =
        app.client.post(app.url("/api/v1/items")).bearer_auth(&editor).json(&item(id)).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let put = |title: &'static str| {
        let mut body = item(id);
        body["title"] = json!(title);
        app.client.put(app.url(&path(id))).bearer_auth(&editor).header("if-match", "\"1\"").json(&body).send()
    };
    let (a, b) = tokio::join!(put("first writer"), put("second writer"));
    let mut statuses = vec![a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, vec![200, 409]);
    assert_eq!(outbox(&app, id).await, 2, "one create, one winning update");
}
both!(concurrent_puts_one_wins);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_validation_is_422_per_field() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let editor = app.user_token("valid", "editor").await;
    let mut bad = item("bad id with spaces");
    bad["title"] = json!("x".repeat(501));
    bad["body"] = json!("y".repeat(100 * 1024 + 1));
    bad["category_code"] = json!("not a code");
    let response =
        app.client.post(app.url("/api/v1/items")).bearer_auth(&editor).json(&bad).send().await.unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    for field in ["id", "title", "body", "category_code"] {
        assert!(body["error"]["fields"][field].is_string(), "{field}: {body}");
    }
    let mut bad_date = item("x1");
    bad_date["published_at"] = json!("last tuesday");
    let response =
        app.client.post(app.url("/api/v1/items")).bearer_auth(&editor).json(&bad_date).send().await.unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(app.count_rows("outbox", "aggregate_id", "x1").await, 0);
}

async fn send_patch(app: &TestApp, token: &str, id: &str, if_match: &str, body: &Value) -> reqwest::Response {
    let request = app.client.patch(app.url(&path(id))).bearer_auth(token).header("if-match", if_match);
    request.json(body).send().await.unwrap()
}

async fn writes_that_change_nothing_are_no_ops(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let editor = app.user_token("noop-editor", "editor").await;
    let id = "noop-1";
    let response =
        app.client.post(app.url("/api/v1/items")).bearer_auth(&editor).json(&item(id)).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(outbox(&app, id).await, 1);

    // an empty patch, a patch with the stored values, a replace with the stored content:
    // 200 with the current item, the same version and ETag, no event
    let same = json!({ "title": created["title"], "tags": created["tags"], "published_at": created["published_at"] });
    for body in [json!({}), same] {
        let response = send_patch(&app, &editor, id, "\"1\"", &body).await;
        assert_eq!(response.status(), 200, "{body}");
        assert_eq!(response.headers()["etag"], "\"1\"", "{body}");
        let got: Value = response.json().await.unwrap();
        assert_eq!(got, created, "{body}");
    }
    let response = app
        .client
        .put(app.url(&path(id)))
        .bearer_auth(&editor)
        .header("if-match", "*")
        .json(&item(id))
        .send()
        .await
        .unwrap();
    assert_eq!((response.status().as_u16(), response.headers()["etag"].to_str().unwrap()), (200, "\"1\""));
    assert_eq!(outbox(&app, id).await, 1, "no event for a write that changes nothing");

    // If-Match still applies to a patch that would change nothing
    let response = send_patch(&app, &editor, id, "\"7\"", &json!({})).await;
    assert_eq!(response.status(), 409);

    // null on a required field is refused and named; nothing is written
    let response = send_patch(
        &app,
        &editor,
        id,
        "\"1\"",
        &json!({ "title": null, "published_at": null, "group": null }),
    )
    .await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    for field in ["title", "published_at", "group"] {
        assert!(
            body["error"]["fields"][field].as_str().is_some_and(|m| m.contains("null")),
            "{field}: {body}"
        );
    }
    assert_eq!(outbox(&app, id).await, 1);

    // null clears the fields that may be empty, as a real change: a new version and an event
    let response =
        send_patch(&app, &editor, id, "\"1\"", &json!({ "body": null, "tags": null, "source_url": null }))
            .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"2\"");
    let cleared: Value = response.json().await.unwrap();
    assert_eq!(
        (&cleared["body"], &cleared["tags"], &cleared["source_url"]),
        (&json!(""), &json!([]), &Value::Null)
    );
    assert_eq!(outbox(&app, id).await, 2);
    let response = send_patch(&app, &editor, id, "\"2\"", &json!({ "body": null, "source_url": null })).await;
    assert_eq!((response.status().as_u16(), response.headers()["etag"].to_str().unwrap()), (200, "\"2\""));
    let response = send_patch(&app, &editor, id, "\"2\"", &json!({ "title": "Changed" })).await;
    assert_eq!((response.status().as_u16(), response.headers()["etag"].to_str().unwrap()), (200, "\"3\""));
    assert_eq!(outbox(&app, id).await, 3);
}
both!(writes_that_change_nothing_are_no_ops);
