//! The OpenAI-compatible inference API against a node serving the local models:
//! real generation and embeddings, the response cache, streaming, bounds, budgets,
//! OpenAI's error shape, a client leaving mid-answer, and a node without models.

mod backends;
mod sdk;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_inference_app};

const CHAT: &str = "smollm2-135m-instruct";
const EMBED: &str = "all-minilm-l6-v2";

async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> reqwest::Response {
    app.client.post(app.url(path)).bearer_auth(token).json(&body).send().await.expect("request")
}

fn capital_question() -> Value {
    json!({"model": CHAT, "messages": [{"role": "user", "content": "What is the capital of France?"}],
           "max_tokens": 24, "temperature": 0})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_answers_with_real_text_and_deterministic_answers_are_cached() {
    let app = spawn_inference_app(|_| {}).await;
    let token = app.user_token("reader", "viewer").await;

    let (status, models) = app.get_json("/v1/models", Some(&token)).await;
    assert_eq!(status, 200, "{models}");
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    assert!(ids.contains(&CHAT) && ids.contains(&EMBED), "{models}");

    let response = post(&app, "/v1/chat/completions", &token, capital_question()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-castwork-cache"], "miss");
    assert_eq!(response.headers()["x-castwork-backend"], "local");
    let body: Value = response.json().await.unwrap();
    let text = body["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    assert!(text.contains("Paris"), "{body}");
    assert_eq!(body["object"], "chat.completion");
    let usage = &body["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 5, "{usage}");
    assert!(usage["completion_tokens"].as_u64().unwrap() >= 1, "{usage}");
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap())
    );

    // the same deterministic request: from the cache, the same text
    let again = post(&app, "/v1/chat/completions", &token, capital_question()).await;
    assert_eq!(again.headers()["x-castwork-cache"], "hit");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["choices"][0]["message"]["content"], text.as_str());

    // Cache-Control: no-cache generates anew (greedy: the same text again)
    let fresh = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .header("cache-control", "no-cache")
        .json(&capital_question())
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.headers()["x-castwork-cache"], "bypass");
    let fresh: Value = fresh.json().await.unwrap();
    assert_eq!(fresh["choices"][0]["message"]["content"], text.as_str(), "greedy decoding is deterministic");

    // sampling without a seed is never cached
    let mut sampled = capital_question();
    sampled["temperature"] = json!(0.8);
    let sampled = post(&app, "/v1/chat/completions", &token, sampled).await;
    assert_eq!(sampled.status(), 200);
    assert_eq!(sampled.headers()["x-castwork-cache"], "off");
}

/// The `data:` payloads of an SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.lines().filter_map(|l| l.strip_prefix("data:")).map(|d| d.trim_start().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_arrives_in_chunks_with_usage_and_done() {
    let app = spawn_inference_app(|_| {}).await;
    let token = app.user_token("streamer", "viewer").await;
    let mut request = capital_question();
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let response = post(&app, "/v1/chat/completions", &token, request).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let body = response.text().await.unwrap();
    let events = sse_data(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{body}");
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect::<Vec<_>>()
        .concat();
    assert!(text.contains("Paris"), "{text}");
    let finish: Vec<&Value> =
        chunks.iter().map(|c| &c["choices"][0]["finish_reason"]).filter(|f| !f.is_null()).collect();
    assert_eq!(finish.len(), 1, "one finish_reason: {body}");
    let usage = &chunks.last().unwrap()["usage"];
    assert!(usage["completion_tokens"].as_u64().unwrap() >= 1, "{body}");
    assert!(chunks.last().unwrap()["choices"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_match_the_reference_similarity() {
    let app = spawn_inference_app(|_| {}).await;
    let token = app.user_token("embedder", "viewer").await;
    let texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The stock market fell sharply today.",
    ];
    let response = post(&app, "/v1/embeddings", &token, json!({"model": EMBED, "input": texts})).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let vectors: Vec<Vec<f64>> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
        .collect();
    assert_eq!(vectors.len(), 3);
    assert_eq!(vectors[0].len(), 384);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let related = dot(&vectors[0], &vectors[1]);
    assert!((related - 0.755).abs() <= 0.01, "cos = {related}");
    assert!(related > dot(&vectors[0], &vectors[2]));
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_in_openais_error_shape() {
    let app = spawn_inference_app(|s| {
        s.inference.max_messages = 3;
        s.inference.max_input_chars = 100;
    })
    .await;
    let token = app.user_token("careless", "viewer").await;
    let user = |text: &str| json!({"role": "user", "content": text});
    let cases = [
        (
            json!({"model": CHAT, "messages": [user("a"), user("b"), user("c"), user("d")]}),
            400,
            "too_many_messages",
        ),
        (json!({"model": CHAT, "messages": [user(&"x".repeat(101))]}), 400, "context_length_exceeded"),
        (json!({"model": CHAT, "messages": [user("hi")], "max_tokens": 100000}), 400, "invalid_value"),
        (json!({"model": CHAT, "messages": [user("hi")], "temperature": 9}), 400, "invalid_value"),
        (json!({"model": CHAT, "messages": [{"role": "tool", "content": "x"}]}), 400, "invalid_role"),
        (json!({"model": CHAT, "messages": []}), 400, "invalid_messages"),
        (json!({"model": CHAT}), 400, "invalid_body"),
        (json!({"model": "no-such-model", "messages": [user("hi")]}), 404, "model_not_found"),
        (json!({"model": EMBED, "messages": [user("hi")]}), 400, "model_not_supported"),
    ];
    for (body, status, code) in cases {
        let response = post(&app, "/v1/chat/completions", &token, body.clone()).await;
        assert_eq!(response.status(), status, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], code, "{body}: {error}");
        assert!(error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
        assert!(error["error"]["type"].is_string(), "{error}");
    }
    let response = post(&app, "/v1/embeddings", &token, json!({"model": EMBED, "input": []})).await;
    assert_eq!(response.status(), 400);
    let no_token =
        app.client.post(app.url("/v1/chat/completions")).json(&capital_question()).send().await.unwrap();
    assert_eq!(no_token.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_past_the_token_budget_is_told_to_wait() {
    let app = spawn_inference_app(|s| s.inference.budget.viewer_tokens_per_minute = 60).await;
    let viewer = app.user_token("thrifty", "viewer").await;
    let ask = json!({"model": CHAT, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 40});
    assert_eq!(post(&app, "/v1/chat/completions", &viewer, ask.clone()).await.status(), 200);
    let refused = post(&app, "/v1/chat/completions", &viewer, ask.clone()).await;
    assert_eq!(refused.status(), 429);
    let after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&after));
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "token_budget_exceeded");
    // another user has a budget of its own; admins have none by default
    let other = app.user_token("other", "viewer").await;
    assert_eq!(post(&app, "/v1/chat/completions", &other, ask.clone()).await.status(), 200);
    let admin = app.admin_token().await;
    for _ in 0..2 {
        assert_eq!(post(&app, "/v1/chat/completions", &admin, ask.clone()).await.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_stops_the_decoding() {
    let app = spawn_inference_app(|_| {}).await;
    let token = app.user_token("quitter", "viewer").await;
    let request = json!({"model": CHAT, "stream": true, "max_tokens": 1000, "temperature": 0,
        "messages": [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}]});
    let response = post(&app, "/v1/chat/completions", &token, request).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let first = body.next().await.expect("a first chunk").expect("bytes");
    assert!(!first.is_empty());
    drop(body);
    let local = app.inference.deployments().iter().find(|d| d.name() == "local").unwrap().clone();
    let stopped = crate::helpers::poll_until(Duration::from_secs(30), || {
        let local = local.clone();
        async move { (local.cancelled() >= 1 && local.outstanding() == 0).then_some(()) }
    })
    .await;
    assert!(stopped.is_some(), "the generation was not stopped: cancelled {}", local.cancelled());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_model_files_the_node_serves_the_rest_and_says_how_to_fetch_them() {
    let empty = castwork::db::testing::temp_dir();
    let app = crate::helpers::spawn_app_with(crate::helpers::Backend::Sqlite, |s| {
        s.inference.local.enabled = true;
        s.inference.local.models_dir = empty.clone();
    })
    .await;
    let health = crate::helpers::poll_until(Duration::from_secs(30), || async {
        let (_, body) = app.get_json("/health", None).await;
        (body["components"]["inference"]["status"] == "down").then_some(body)
    })
    .await
    .expect("inference reported down");
    let message = health["components"]["inference"]["last_error"].to_string();
    assert!(message.contains("scripts/fetch-models.sh"), "{health}");
    assert_ne!(health["status"], "down", "the node itself serves: {health}");
    let token = app.user_token("early", "viewer").await;
    let response = post(&app, "/v1/chat/completions", &token, capital_question()).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "backend_unavailable");
    let _ = std::fs::remove_dir_all(&empty);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_inference_disabled_the_api_says_so() {
    let app =
        crate::helpers::spawn_app_with(crate::helpers::Backend::Sqlite, |s| s.inference.enabled = false)
            .await;
    let token = app.user_token("nobody", "viewer").await;
    let response = post(&app, "/v1/chat/completions", &token, capital_question()).await;
    assert_eq!(response.status(), 503);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "inference_disabled");
    let plain = spawn_app().await;
    let (status, _) = plain.get_json("/v1/models", Some(&plain.user_token("v", "viewer").await)).await;
    assert_eq!(status, 200);
}
