use std::time::Duration;

use crate::helpers::{Backend, find_node, poll_until, spawn_app, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tree_shows_root_and_health() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let tree = app.tree(&token).await;
    assert_eq!(tree["name"], "root");
    assert_eq!(tree["kind"], "supervisor");
    let health = find_node(&tree, "health").expect("health in the tree");
    assert_eq!(health["status"], "running");
    assert_eq!(health["restarts"], 0);
    assert!(health["actor_id"].is_string());
    assert!(health["messages_handled"].as_u64().is_some());

    let text = app
        .client
        .get(app.url("/api/v1/admin/actors?format=text"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.starts_with("root [supervisor] running"), "{text}");
    assert!(text.contains("\n  health [health] running"), "{text}");
}

async fn restarts_of(app: &crate::helpers::TestApp, token: &str) -> (u64, String, String) {
    let tree = app.tree(token).await;
    let node = find_node(&tree, "health").expect("health node").clone();
    (
        node["restarts"].as_u64().unwrap_or(0),
        node["status"].as_str().unwrap_or("").to_owned(),
        node["actor_id"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_health_actor_is_restarted_and_counted() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let (_, _, before_id) = restarts_of(&app, &token).await;

    let response = app.chaos(&token, "health", "kill").await;
    assert_eq!(response.status(), 202);

    let restarted = poll_until(Duration::from_secs(10), || async {
        let (restarts, status, id) = restarts_of(&app, &token).await;
        (restarts == 1 && status == "running" && id != before_id).then_some(())
    })
    .await;
    assert!(restarted.is_some(), "health was not restarted: {}", app.tree(&token).await);

    let tree = app.tree(&token).await;
    let health = find_node(&tree, "health").unwrap();
    assert_eq!(health["last_failure"]["kind"], "killed");

    // /health answered throughout and still does, through the new incarnation
    let (status, body) = app.get_json("/health", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["components"]["database"]["status"], "ok", "{body}");
    // (the restart metric itself is checked against a recorder of its own in
    // supervision::supervisor::tests: /metrics here is every test node's)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_actor_is_restarted() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    assert_eq!(app.chaos(&token, "health", "panic").await.status(), 202);
    let restarted = poll_until(Duration::from_secs(10), || async {
        let (restarts, status, _) = restarts_of(&app, &token).await;
        (restarts == 1 && status == "running").then_some(())
    })
    .await;
    assert!(restarted.is_some());
    let tree = app.tree(&token).await;
    let failure = &find_node(&tree, "health").unwrap()["last_failure"];
    assert_eq!(failure["kind"], "failed");
    assert!(failure["reason"].as_str().unwrap().contains("chaos: injected panic"), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_intensity_limit_the_actor_is_down_and_the_node_serves() {
    // test.toml allows 3 restarts in 60 s
    let app = spawn_app_with(Backend::Sqlite, |s| s.supervision.max_restarts = 3).await;
    let token = app.admin_token().await;
    for round in 1..=3u64 {
        assert_eq!(app.chaos(&token, "health", "kill").await.status(), 202);
        let restarted = poll_until(Duration::from_secs(10), || async {
            let (restarts, status, _) = restarts_of(&app, &token).await;
            (restarts == round && status == "running").then_some(())
        })
        .await;
        assert!(restarted.is_some(), "round {round}: {}", app.tree(&token).await);
    }
    assert_eq!(app.chaos(&token, "health", "kill").await.status(), 202);
    let down = poll_until(Duration::from_secs(10), || async {
        let (_, status, _) = restarts_of(&app, &token).await;
        (status == "down").then_some(())
    })
    .await;
    assert!(down.is_some(), "{}", app.tree(&token).await);

    // a down actor cannot be targeted again
    assert_eq!(app.chaos(&token, "health", "kill").await.status(), 409);

    let (status, _) = app.get_json("/health/live", None).await;
    assert_eq!(status, 200);
    let (status, body) = app.get_json("/health", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["actors_down"], serde_json::json!(["health"]));
    assert_eq!(body["components"]["health_monitor"]["status"], "down", "{body}");
    // the API still serves
    let (status, body) = app.get_json("/api/v1/auth/me", Some(&token)).await;
    assert_eq!((status, body["username"].as_str()), (200, Some("admin")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_is_404_when_disabled_and_validates_input() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.chaos.enabled = false).await;
    let token = app.admin_token().await;
    assert_eq!(app.chaos(&token, "health", "kill").await.status(), 404);

    let app = spawn_app().await;
    let token = app.admin_token().await;
    assert_eq!(app.chaos(&token, "nobody", "kill").await.status(), 404);
    assert_eq!(app.chaos(&token, "root", "kill").await.status(), 409);
    let response = app.chaos(&token, "health", "explode").await;
    assert_eq!(response.status(), 422);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "validation_failed");
    let viewer = app.user_token("viewer1", "viewer").await;
    assert_eq!(app.chaos(&viewer, "health", "kill").await.status(), 403);
}
