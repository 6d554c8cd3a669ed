//! `embed_items` and `summarize_items`: payloads checked field by field, progress
//! reported, a cancelled run keeps what it stored, and the next run does only the rest.

use std::time::Duration;

use castwork::queue::model::JobState;
use serde_json::json;

use super::sample_node;
use crate::helpers::{encode, poll_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_items_reports_progress_stops_when_cancelled_and_the_next_run_does_the_rest() {
    let app = sample_node().await;
    for (payload, field) in [
        (json!({ "ids": "2406.00001" }), "payload.ids"),
        (json!({ "ids": ["ok", "not an id"] }), "payload.ids[1]"),
        (json!({ "batch_size": 0 }), "payload.batch_size"),
        (json!({ "limit": -1 }), "payload.limit"),
        (json!({ "model": "x" }), "payload.model"),
    ] {
        assert_eq!(app.refused("embed_items", payload.clone()).await, [field], "{payload}");
        assert_eq!(app.refused("summarize_items", payload.clone()).await, [field], "{payload}");
    }

    // small batches, so that it is still running when it is cancelled
    let (job, _) = app.queue.submit("embed_items", json!({ "batch_size": 4 }), "admin", None).await.unwrap();
    let running = poll_until(Duration::from_secs(120), || async {
        let view = app.queue.store().get(&job.id).await.unwrap()?;
        (view.processed > 8).then_some(view)
    })
    .await
    .expect("the job reports progress");
    assert_eq!(running.total, Some(2000));
    app.queue.cancel(&job.id).await.unwrap();
    let cancelled = app.wait_slow_job(&job.id).await;
    assert_eq!(cancelled.state, JobState::Cancelled, "{cancelled:?}");
    let stored = app.count_rows("item_embeddings", "model", "all-minilm-l6-v2").await;
    assert!((8..2000).contains(&stored), "it stopped early and kept what it stored: {stored}");
    assert!(cancelled.progress.message.unwrap().ends_with("embedded"));

    // the next run reads everything and embeds only what is left
    let done = app.run_slow_job("embed_items", json!({})).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    let result = done.result.unwrap();
    assert_eq!(result["items_scanned"], 2000);
    assert_eq!(result["items_embedded"].as_i64(), Some(2000 - stored), "{result}");
    assert_eq!(app.count_rows("item_embeddings", "model", "all-minilm-l6-v2").await, 2000);
    assert_eq!((done.progress.processed, done.progress.total), (2000, Some(2000)));
    // nothing left: a run embeds nothing
    let idle = app.run_slow_job("embed_items", json!({ "limit": 5 })).await;
    assert_eq!(idle.result.unwrap()["items_embedded"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summarize_items_summarizes_what_it_is_given_once() {
    let app = sample_node().await;
    let viewer = app.user_token("reader", "viewer").await;
    let (_, page) = app.get_json("/api/v1/explore/items?limit=2", Some(&viewer)).await;
    let ids: Vec<String> =
        page["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect();
    let payload = json!({ "ids": [ids[0], ids[1], "no-such-item"], "batch_size": 1 });
    let job = app.run_slow_job("summarize_items", payload.clone()).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    let result = job.result.unwrap();
    assert_eq!(
        (result["items_scanned"].as_u64(), result["items_summarized"].as_u64()),
        (Some(3), Some(2)),
        "{result}"
    );
    for id in &ids {
        assert_eq!(app.count_rows("item_summaries", "item_id", id).await, 1);
        let (status, summary) =
            app.get_json(&format!("/api/v1/explore/items/{}/summary", encode(id)), Some(&viewer)).await;
        assert_eq!(
            (status, &summary["cached"]),
            (200, &json!(true)),
            "the job's summary is served: {summary}"
        );
    }
    // again: nothing to do
    let again = app.run_slow_job("summarize_items", payload).await;
    assert_eq!(again.result.unwrap()["items_summarized"], 0);
}
