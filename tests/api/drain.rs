//! Backpressure and draining at the edge: a write held in flight by a row lock
//! (PostgreSQL) fills the node's only request slot, so the next requests are shed
//! with fast 503s while the probes still answer; and a shutdown requested while the
//! write is in flight lets it commit and answer before the node stops.

use std::time::Duration;

use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, Statement, TransactionTrait,
};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, encode, poll_until, spawn_app_with};

fn item(id: &str) -> Value {
    json!({
        "id": id, "title": "Before the lock",
        "body": "An item whose row a test locks while the API writes it.",
        "category": "Statistical Mechanics", "category_code": "cond-mat.stat-mech", "group": "Physics",
        "tags": ["cond-mat.stat-mech"], "source_url": "https://arxiv.org/abs/cond-mat/0000001",
        "published_at": "2001-01-01T00:00:00Z"
    })
}

/// Creates the item, then holds its row locked in a transaction of another connection.
async fn locked_item(app: &TestApp, editor: &str, id: &str) -> (DatabaseConnection, DatabaseTransaction) {
    let created =
        app.client.post(app.url("/api/v1/items")).bearer_auth(editor).json(&item(id)).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let db = Database::connect(&app.database_url).await.unwrap();
    let lock = db.begin().await.unwrap();
    lock.execute_raw(Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        "SELECT id FROM items WHERE id = $1 FOR UPDATE",
        [id.into()],
    ))
    .await
    .unwrap();
    (db, lock)
}

/// Sends a PATCH of the locked item's title and waits until the database shows it
/// blocked on the lock: from then on the request is in flight.
async fn patch_in_flight(
    app: &TestApp,
    db: &DatabaseConnection,
    editor: &str,
    id: &str,
) -> tokio::task::JoinHandle<reqwest::Response> {
    let request = app
        .client
        .patch(app.url(&format!("/api/v1/items/{}", encode(id))))
        .bearer_auth(editor)
        .header("if-match", "\"1\"")
        .json(&json!({ "title": "Written while the node stopped" }));
    let patch = tokio::spawn(async move { request.send().await.unwrap() });
    let waiting = poll_until(Duration::from_secs(10), || async {
        let row = db
            .query_one_raw(Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
            ))
            .await
            .ok()??;
        let n: i64 = row.try_get("", "n").ok()?;
        (n > 0).then_some(())
    })
    .await;
    assert!(waiting.is_some(), "the PATCH never reached the locked row");
    patch
}

async fn stored_title(db: &DatabaseConnection, id: &str) -> String {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT title FROM items WHERE id = $1",
            [id.into()],
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get("", "title").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_concurrency_limit_requests_get_fast_503s_and_probes_still_answer() {
    let app = spawn_app_with(Backend::Postgres, |s| {
        s.server.max_in_flight_requests = 1;
        s.server.max_queued_requests = 0;
    })
    .await;
    let editor = app.user_token("shed-editor", "editor").await;
    let (db, lock) = locked_item(&app, &editor, "shed-1").await;
    let patch = patch_in_flight(&app, &db, &editor, "shed-1").await;

    // the one slot is taken: reads are refused at once, never queued
    for _ in 0..5 {
        let response = app.client.get(app.url("/api/v1/explore/items")).send().await.unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "overloaded");
    }
    let live = app.client.get(app.url("/health/live")).send().await.unwrap();
    assert_eq!(live.status(), 200, "liveness is never shed");
    let ready = app.client.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "readiness is never shed");

    lock.commit().await.unwrap();
    assert_eq!(patch.await.unwrap().status(), 200);
    let (status, _) = app.get_json("/api/v1/explore/items", Some(&editor)).await;
    assert_eq!(status, 200, "the slot is free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_flight_at_shutdown_commits_and_is_answered() {
    let app = spawn_app_with(Backend::Postgres, |s| s.server.shutdown_grace_secs = 30).await;
    let editor = app.user_token("drain-editor", "editor").await;
    let (db, lock) = locked_item(&app, &editor, "drain-1").await;
    let patch = patch_in_flight(&app, &db, &editor, "drain-1").await;

    let app = std::sync::Arc::new(app);
    let stopping = tokio::spawn({
        let app = std::sync::Arc::clone(&app);
        async move { app.shut_down().await }
    });
    // the node stops accepting: a new connection is refused or closed unanswered
    let refused = poll_until(Duration::from_secs(10), || async {
        let fresh = reqwest::Client::new();
        fresh.get(app.url("/health/live")).send().await.is_err().then_some(())
    })
    .await;
    assert!(refused.is_some(), "the node still accepts new requests while draining");
    assert!(!stopping.is_finished(), "the node stopped with a write in flight");

    lock.commit().await.unwrap();
    let response = patch.await.unwrap();
    assert_eq!(response.status(), 200, "the write in flight is answered");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["title"], "Written while the node stopped");
    stopping.await.unwrap();
    assert_eq!(stored_title(&db, "drain-1").await, "Written while the node stopped", "and committed");
    assert_eq!(app.count_rows("outbox", "aggregate_id", "drain-1").await, 2, "with its event");
}
