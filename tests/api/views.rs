//! Item views count once per user and item within `explore.view_dedup_window_secs`.

use std::time::Duration;

use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::json;

use crate::both;
use crate::helpers::{Backend, TestApp, encode, poll_until, spawn_app_with, user_password};

/// The stored view count of an item (what trending ranks by).
pub async fn stored_views(app: &TestApp, id: &str) -> i64 {
    let db = Database::connect(&app.database_url).await.unwrap();
    let backend = db.get_database_backend();
    let placeholder = if backend == sea_orm::DbBackend::Postgres { "$1" } else { "?" };
    let sql = format!("SELECT views FROM items WHERE id = {placeholder}");
    let row =
        db.query_one_raw(Statement::from_sql_and_values(backend, sql, [id.into()])).await.unwrap().unwrap();
    let views: i64 = row.try_get("", "views").unwrap();
    db.close().await.ok();
    views
}

async fn create(app: &TestApp, editor: &str, id: &str) {
    let item = json!({
        "id": id, "title": "Pumped", "category": "Statistical Mechanics",
        "category_code": "cond-mat.stat-mech", "group": "Physics", "published_at": "2020-01-01T00:00:00Z"
    });
    let response =
        app.client.post(app.url("/api/v1/items")).bearer_auth(editor).json(&item).send().await.unwrap();
    assert_eq!(response.status(), 201);
}

async fn view(app: &TestApp, token: &str, id: &str) {
    let (status, _) = app.get_json(&format!("/api/v1/explore/items/{}", encode(id)), Some(token)).await;
    assert_eq!(status, 200);
}

async fn repeated_views_by_one_user_count_once(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let editor = app.user_token("views-editor", "editor").await;
    let pumper = app.user_token("pumper", "viewer").await;
    let reader = app.user_token("reader", "viewer").await;
    create(&app, &editor, "pumped").await;
    create(&app, &editor, "read").await;

    for _ in 0..50 {
        view(&app, &pumper, "pumped").await;
    }
    // a new token of the same user is the same viewer
    let again = app.token_for("pumper", &user_password("pumper")).await;
    view(&app, &again, "pumped").await;
    view(&app, &pumper, "read").await;
    // sent last: once its view is stored, every view before it has been handled
    view(&app, &reader, "pumped").await;
    let stored = poll_until(Duration::from_secs(10), || async {
        let views = stored_views(&app, "pumped").await;
        (views >= 2).then_some(views)
    })
    .await;
    assert_eq!(stored, Some(2), "51 views by one user and 1 by another count as 2");
    let read = poll_until(Duration::from_secs(10), || async {
        let views = stored_views(&app, "read").await;
        (views >= 1).then_some(views)
    })
    .await;
    assert_eq!(read, Some(1), "the same user's view of another item counts");
}
both!(repeated_views_by_one_user_count_once);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_window_counts_every_view() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.explore.view_dedup_window_secs = 0).await;
    let editor = app.user_token("zero-editor", "editor").await;
    create(&app, &editor, "every").await;
    for _ in 0..5 {
        view(&app, &editor, "every").await;
    }
    let stored = poll_until(Duration::from_secs(10), || async {
        let views = stored_views(&app, "every").await;
        (views >= 5).then_some(views)
    })
    .await;
    assert_eq!(stored, Some(5));
}
