//! `GET /api/v1/explore/items/{id}/summary`: generated once, stored, served again
//! without a generation, generated again after the item's text changes; concurrent
//! requests share one generation, with the cache on and off.

use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_inference_app};

const ID: &str = "2406.00001";

fn paper() -> Value {
    json!({
        "id": ID, "title": "Graph neural networks for traffic forecasting",
        "body": "We model a road network as a graph and predict traffic speed with a graph neural network \
                 that combines spatial message passing with temporal convolutions. On two public datasets \
                 the model lowers the forecasting error by ten percent against recurrent baselines.",
        "category": "Machine Learning", "category_code": "cs.LG", "group": "Computer Science",
        "tags": ["cs.LG"], "published_at": "2024-06-01T00:00:00Z"
    })
}

async fn summary(app: &TestApp, token: &str) -> Value {
    let (status, body) = app.get_json(&format!("/api/v1/explore/items/{ID}/summary"), Some(token)).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// `n` requests at once: every answer, and the rows `item_summaries` holds after.
async fn concurrent(app: &TestApp, token: &str, n: usize) -> (Vec<Value>, i64) {
    let answers = join_all((0..n).map(|_| summary(app, token))).await;
    (answers, app.count_rows("item_summaries", "item_id", ID).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_is_generated_once_stored_and_generated_again_after_an_edit() {
    let app = spawn_inference_app(|_| {}).await;
    let editor = app.user_token("writer", "editor").await;
    let viewer = app.user_token("reader", "viewer").await;
    let response =
        app.client.post(app.url("/api/v1/items")).bearer_auth(&editor).json(&paper()).send().await.unwrap();
    assert_eq!(response.status(), 201);

    // four at once: one generation, all four waited for it
    let (answers, rows) = concurrent(&app, &viewer, 4).await;
    assert_eq!(rows, 1);
    let first = &answers[0];
    assert!(!first["summary"].as_str().unwrap().trim().is_empty(), "{first}");
    assert_eq!(first["model"], "smollm2-135m-instruct");
    assert_eq!(first["item_id"], ID);
    for answer in &answers {
        assert_eq!(
            (&answer["summary"], &answer["generated_at"], &answer["cached"]),
            (&first["summary"], &first["generated_at"], &json!(false)),
            "one generation shared: {answers:?}"
        );
    }

    // again: stored, not generated
    let again = summary(&app, &viewer).await;
    assert_eq!(
        (&again["generated_at"], &again["summary"], &again["cached"]),
        (&first["generated_at"], &first["summary"], &json!(true))
    );

    // a change that leaves the text as it was keeps the summary
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/items/{ID}")))
        .bearer_auth(&editor)
        .header("if-match", "\"1\"")
        .json(&json!({ "tags": ["cs.LG", "cs.AI"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(summary(&app, &viewer).await["generated_at"], first["generated_at"]);

    // a new text: generated again, and stored in place of the old one
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/items/{ID}")))
        .bearer_auth(&editor)
        .header("if-match", "\"2\"")
        .json(&json!({ "body": "We measure the rotation curves of nearby spiral galaxies with radio telescopes." }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let regenerated = summary(&app, &viewer).await;
    assert_eq!(regenerated["cached"], false, "{regenerated}");
    assert!(regenerated["generated_at"].as_str() > first["generated_at"].as_str(), "{regenerated}");
    assert_eq!(app.count_rows("item_summaries", "item_id", ID).await, 1);
    let (status, body) =
        app.get_json(&format!("/api/v1/explore/items/{ID}/summary?x=1"), Some(&viewer)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_query")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_cache_off_concurrent_requests_still_share_one_generation() {
    let app = spawn_inference_app(|s| s.cache.enabled = false).await;
    let editor = app.user_token("writer", "editor").await;
    let response =
        app.client.post(app.url("/api/v1/items")).bearer_auth(&editor).json(&paper()).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let (answers, rows) = concurrent(&app, &editor, 3).await;
    assert_eq!(rows, 1);
    assert!(
        answers.iter().all(|a| a["generated_at"] == answers[0]["generated_at"] && a["cached"] == false),
        "{answers:?}"
    );
    let again = summary(&app, &editor).await;
    assert_eq!((&again["generated_at"], &again["cached"]), (&answers[0]["generated_at"], &json!(true)));
}
