//! Explore on inference: item summaries, related items, semantic and hybrid
//! search, the semantic index following item changes, and the `embed_items` and
//! `summarize_items` jobs, against nodes serving the local models
//! (`scripts/fetch-models.sh` puts them in `models/`; `make test` runs it). A node
//! whose models cannot answer answers 503 with `Retry-After`.

mod jobs;
mod summary;

use std::collections::HashMap;
use std::time::Duration;

use castwork::queue::model::{JobState, JobView};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, encode, poll_until, spawn_app_with, spawn_inference_app};

/// A node with the local models and the embedded sample catalogue (2,000 papers).
async fn sample_node() -> TestApp {
    spawn_inference_app(|s| s.explore.import_sample_on_start = true).await
}

impl TestApp {
    /// Submits a job as the admin and waits (long: the models run on a small CPU) for it to end.
    async fn run_slow_job(&self, kind: &str, payload: Value) -> JobView {
        let (job, _) = self.queue.submit(kind, payload, "admin", None).await.unwrap();
        self.wait_slow_job(&job.id).await
    }

    async fn wait_slow_job(&self, id: &str) -> JobView {
        let view = poll_until(Duration::from_secs(1500), || async {
            let row = self.queue.store().get(id).await.unwrap()?;
            let view = JobView::from_model(row, chrono::Utc::now());
            view.state.is_terminal().then_some(view)
        })
        .await;
        view.unwrap_or_else(|| panic!("job {id} did not end in time"))
    }

    /// `GET /api/v1/explore/search` with `mode`: the status and the body.
    async fn search_mode(&self, token: &str, q: &str, mode: &str, limit: u32) -> (u16, Value) {
        let path = format!("/api/v1/explore/search?q={}&mode={mode}&limit={limit}", encode(q));
        self.get_json(&path, Some(token)).await
    }

    /// Creates an item as `editor`; answers its JSON.
    async fn create_item(&self, editor: &str, body: Value) -> Value {
        let response =
            self.client.post(self.url("/api/v1/items")).bearer_auth(editor).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect()
}

fn mentions_gnn(hit: &Value) -> bool {
    let text = format!("{} {}", hit["title"], hit["excerpt"]).to_lowercase();
    text.contains("graph neural network") || text.contains("gnn")
}

/// The chance that two items drawn at random share their category: the sum of the
/// squared shares of the categories.
async fn chance_of_same_category(app: &TestApp, token: &str) -> f64 {
    let (status, groups) = app.get_json("/api/v1/explore/categories", Some(token)).await;
    assert_eq!(status, 200);
    let counts: Vec<f64> = groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["categories"].as_array().unwrap().iter().map(|c| c["count"].as_f64().unwrap()))
        .collect();
    let total: f64 = counts.iter().sum();
    counts.iter().map(|c| (c / total).powi(2)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_sample_serves_semantic_search_related_items_and_hybrid_search() {
    let app = sample_node().await;
    let viewer = app.user_token("reader", "viewer").await;
    let job = app.run_slow_job("embed_items", json!({})).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    let result = job.result.unwrap();
    assert_eq!(
        (result["items_scanned"].as_u64(), result["items_embedded"].as_u64()),
        (Some(2000), Some(2000))
    );
    assert_eq!(app.count_rows("item_embeddings", "model", "all-minilm-l6-v2").await, 2000);

    // by meaning: papers on graph neural networks first
    let (status, found) = app.search_mode(&viewer, "graph neural networks", "semantic", 10).await;
    assert_eq!(status, 200, "{found}");
    let hits = found["items"].as_array().unwrap();
    assert_eq!(hits.len(), 10);
    assert!(hits[..3].iter().all(mentions_gnn), "the top 3 are about GNNs: {found:#}");
    assert!(found["next_cursor"].is_null());
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]) && scores[0] <= 1.0001, "{scores:?}");
    assert_eq!(hits[0]["semantic_rank"], 1);
    assert!(hits.iter().all(|h| !h["title_highlight"].as_str().unwrap().contains("<mark>")));

    // related items share their item's category far more often than chance
    let chance = chance_of_same_category(&app, &viewer).await;
    let (_, page) = app.get_json("/api/v1/explore/items?limit=40", Some(&viewer)).await;
    let (mut same, mut all) = (0, 0);
    for item in page["items"].as_array().unwrap() {
        let id = item["id"].as_str().unwrap();
        let path = format!("/api/v1/explore/items/{}/related?limit=5", encode(id));
        let (status, related) = app.get_json(&path, Some(&viewer)).await;
        assert_eq!(status, 200, "{related}");
        let related = related["items"].as_array().unwrap();
        assert_eq!(related.len(), 5);
        assert!(related.iter().all(|r| r["id"] != item["id"]), "an item is not related to itself");
        all += related.len();
        same += related.iter().filter(|r| r["category_code"] == item["category_code"]).count();
    }
    let rate = same as f64 / all as f64;
    assert!(
        rate > 3.0 * chance,
        "related items share the category {rate:.3} of the time; chance: {chance:.3}"
    );

    // hybrid: both rankings, fused; what either ranks first is there
    let (_, text) = app.search_mode(&viewer, "graph neural networks", "text", 10).await;
    let (status, hybrid) = app.search_mode(&viewer, "graph neural networks", "hybrid", 10).await;
    assert_eq!(status, 200, "{hybrid}");
    let fused = ids(&hybrid);
    assert_eq!(fused.len(), 10);
    assert!(fused.contains(&ids(&text)[0]) && fused.contains(&ids(&found)[0]), "{hybrid:#}");
    let hits = hybrid["items"].as_array().unwrap();
    assert!(hits.iter().all(|h| h["text_rank"].is_u64() || h["semantic_rank"].is_u64()));
    assert!(
        hits.iter().any(|h| h["text_rank"].is_u64() && h["semantic_rank"].is_u64()),
        "some hit both rank"
    );
    let marked = hits.iter().filter(|h| h["title_highlight"].as_str().unwrap().contains("<mark>")).count();
    assert!(marked > 0, "hits the words found keep their highlights");
    let by_id: HashMap<&str, f64> =
        hits.iter().map(|h| (h["id"].as_str().unwrap(), h["score"].as_f64().unwrap())).collect();
    assert!(by_id.values().all(|s| *s > 0.0 && *s <= 2.0 / 61.0 + 1e-9), "fused scores: {by_id:?}");
    // stop words only: no words to match, still a ranking by meaning
    let (status, only_meaning) = app.search_mode(&viewer, "the of and", "hybrid", 5).await;
    assert_eq!((status, ids(&only_meaning).len()), (200, 5), "{only_meaning}");

    // modes are checked; a cursor is for mode=text
    let (status, body) = app.search_mode(&viewer, "graph", "fuzzy", 5).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_query")), "{body}");
    let path = "/api/v1/explore/search?q=graph&mode=semantic&cursor=abcdefghijklmnopqrstuvwxyz.abcdefghijklmnopqrstuv";
    let (status, body) = app.get_json(path, Some(&viewer)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("cursor"), "{body}");
    let (status, _) = app.get_json("/api/v1/explore/items/nope/related", Some(&viewer)).await;
    assert_eq!(status, 404);
    let (status, body) = app.get_json("/api/v1/explore/items/nope/related?limit=51", Some(&viewer)).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_follows_item_changes_and_deletes() {
    let app = spawn_inference_app(|_| {}).await;
    let editor = app.user_token("writer", "editor").await;
    let paper = |id: &str, title: &str, body: &str| {
        json!({
            "id": id, "title": title, "body": body, "category": "Machine Learning", "category_code": "cs.LG",
            "group": "Computer Science", "tags": ["cs.LG"], "published_at": "2025-06-01T00:00:00Z"
        })
    };
    app.create_item(
        &editor,
        paper(
            "p1",
            "Graph neural networks for molecules",
            "Message passing on molecular graphs predicts chemical properties.",
        ),
    )
    .await;
    app.create_item(
        &editor,
        paper(
            "p2",
            "Protein structure with deep learning",
            "We predict how proteins fold from their amino acid sequences.",
        ),
    )
    .await;
    app.create_item(
        &editor,
        paper(
            "p3",
            "Surface codes for quantum error correction",
            "Logical qubits protected by topological stabiliser codes.",
        ),
    )
    .await;
    // the indexer embeds what was created; no job ran
    let top = |q: &'static str| {
        let (app, editor) = (&app, &editor);
        async move {
            let (status, page) = app.search_mode(editor, q, "semantic", 3).await;
            assert_eq!(status, 200, "{page}");
            ids(&page)
        }
    };
    let found = poll_until(Duration::from_secs(60), || async {
        let hits = top("fault tolerant quantum computing").await;
        (hits.len() == 3 && hits[0] == "p3").then_some(hits)
    })
    .await;
    assert!(
        found.is_some(),
        "the created items were never indexed: {:?}",
        top("fault tolerant quantum computing").await
    );
    assert_eq!(app.count_rows("item_embeddings", "model", "all-minilm-l6-v2").await, 3);

    // p2 now says something else: it is embedded again
    let response = app
        .client
        .patch(app.url("/api/v1/items/p2"))
        .bearer_auth(&editor)
        .header("if-match", "\"1\"")
        .json(&json!({ "title": "Galaxy rotation curves and dark matter", "body": "Stars orbit faster than visible mass allows." }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let moved = poll_until(Duration::from_secs(60), || async {
        (top("astronomy of galaxies").await.first().map(String::as_str) == Some("p2")).then_some(())
    })
    .await;
    assert!(moved.is_some(), "the edit was not followed: {:?}", top("astronomy of galaxies").await);

    // p3 is deleted: it leaves the index
    let response = app
        .client
        .delete(app.url("/api/v1/items/p3"))
        .bearer_auth(&editor)
        .header("if-match", "*")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let gone = poll_until(Duration::from_secs(30), || async {
        let hits = top("fault tolerant quantum computing").await;
        (hits.len() == 2 && !hits.contains(&"p3".to_owned())).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the delete was not followed: {:?}",
        top("fault tolerant quantum computing").await
    );
    let (status, related) = app.get_json("/api/v1/explore/items/p1/related", Some(&editor)).await;
    assert_eq!((status, ids(&related)), (200, vec!["p2".to_owned()]), "{related}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_model_the_routes_that_need_one_answer_503_with_retry_after() {
    // the local backend is on, but its files are not there: it can never load
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.explore.import_sample_on_start = true;
        s.inference.local.enabled = true;
        s.inference.local.models_dir = std::env::temp_dir().join("castwork-no-models-here");
    })
    .await;
    let viewer = app.user_token("reader", "viewer").await;
    let (_, page) = app.get_json("/api/v1/explore/items?limit=1", Some(&viewer)).await;
    let id = encode(ids(&page)[0].as_str());
    for path in [
        format!("/api/v1/explore/items/{id}/summary"),
        format!("/api/v1/explore/items/{id}/related"),
        "/api/v1/explore/search?q=graph&mode=semantic".to_owned(),
        "/api/v1/explore/search?q=graph&mode=hybrid".to_owned(),
    ] {
        let response = app.client.get(app.url(&path)).bearer_auth(&viewer).send().await.unwrap();
        assert_eq!(response.status(), 503, "{path}");
        assert!(response.headers().contains_key("retry-after"), "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "inference_unavailable", "{path}: {body}");
    }
    // what needs no model is unaffected
    let (status, _) = app.search_mode(&viewer, "graph", "text", 5).await;
    assert_eq!(status, 200);
    let (status, _) = app.get_json("/api/v1/explore/items/nope/summary", Some(&viewer)).await;
    assert_eq!(status, 404, "an unknown item is 404 before any model is asked");
}
