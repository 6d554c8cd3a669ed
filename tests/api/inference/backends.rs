//! Backends behind a node: a second castwork node as a real OpenAI-compatible
//! server, and a fault-injecting one (castwork's test kit) for each failure class:
//! the breaker opening and closing, fallbacks, shedding, a worker killed mid-answer.

use std::collections::BTreeMap;
use std::time::Duration;

use castwork::config::{BackendSettings, BreakerSettings, Secret, Settings};
use castwork::inference::testing::{Behaviour, FakeOpenAi};
use serde_json::{Value, json};

use super::{CHAT, EMBED, post, sse_data};
use crate::helpers::{Backend, TestApp, find_node, poll_until, spawn_app_with, spawn_inference_app};

fn backend(name: &str, base_url: String, models: &[(&str, &str)]) -> BackendSettings {
    BackendSettings {
        name: name.to_owned(),
        base_url,
        api_key: Secret::default(),
        models: models.iter().map(|(public, own)| ((*public).to_owned(), (*own).to_owned())).collect(),
        embedding_models: Vec::new(),
        workers: 4,
        queue_capacity: 16,
        connect_timeout_ms: 1000,
        breaker: Some(BreakerSettings {
            window_size: 4,
            minimum_calls: 2,
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 1.0,
            slow_call_ms: 60_000,
            half_open_permitted_calls: 1,
            open_ms: 300,
            max_open_ms: 300,
        }),
    }
}

/// A sampled request: never answered from the response cache.
fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16, "temperature": 0.5})
}

async fn gateway(tweak: impl FnOnce(&mut Settings)) -> (TestApp, String) {
    let app = spawn_app_with(Backend::Sqlite, tweak).await;
    let token = app.user_token("caller", "viewer").await;
    (app, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_castwork_node_serves_as_a_real_openai_backend() {
    let upstream = spawn_inference_app(|_| {}).await;
    let key = upstream.user_token("gateway", "admin").await;
    let mut peer = backend("peer", upstream.url("/v1"), &[("peer-chat", CHAT), ("peer-embed", EMBED)]);
    peer.api_key = Secret::new(key);
    peer.embedding_models = vec!["peer-embed".to_owned()];
    let (app, token) = gateway(|s| s.inference.backends = vec![peer]).await;

    let (status, models) = app.get_json("/v1/models", Some(&token)).await;
    assert_eq!(status, 200);
    assert!(models.to_string().contains("peer-chat"), "{models}");

    let question = json!({"model": "peer-chat", "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 24, "temperature": 0});
    let whole = post(&app, "/v1/chat/completions", &token, question.clone()).await;
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["x-castwork-backend"], "peer");
    let whole: Value = whole.json().await.unwrap();
    assert!(whole["choices"][0]["message"]["content"].as_str().unwrap().contains("Paris"), "{whole}");
    assert!(whole["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    let mut streamed = question.clone();
    streamed["stream"] = json!(true);
    let body = post(&app, "/v1/chat/completions", &token, streamed).await.text().await.unwrap();
    let events = sse_data(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{body}");
    assert!(body.contains("Paris"), "{body}");

    let vectors =
        post(&app, "/v1/embeddings", &token, json!({"model": "peer-embed", "input": ["a", "b"]})).await;
    assert_eq!(vectors.status(), 200);
    let vectors: Value = vectors.json().await.unwrap();
    assert_eq!(vectors["data"][1]["embedding"].as_array().unwrap().len(), 384);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_before_the_first_token_fall_back_and_the_breaker_opens_then_closes() {
    let flaky = FakeOpenAi::start(Behaviour::ServerError).await;
    let spare = FakeOpenAi::start(Behaviour::ok("from the spare")).await;
    let (app, token) = gateway(|s| {
        s.inference.backends = vec![
            backend("flaky", flaky.base_url(), &[("big", "big-model")]),
            backend("spare", spare.base_url(), &[("small", "small-model")]),
        ];
        s.inference.fallbacks = BTreeMap::from([("big".to_owned(), vec!["small".to_owned()])]);
        s.inference.cooldown_ms = 0;
    })
    .await;
    for _ in 0..4 {
        let response = post(&app, "/v1/chat/completions", &token, ask("big")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-castwork-backend"], "spare");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["model"], "small", "the fallback model answered: {body}");
    }
    // two 500s in a window of two: open; the later requests never reached it
    assert_eq!(flaky.requests(), 2);
    let health = poll_until(Duration::from_secs(10), || async {
        let (_, body) = app.get_json("/health", None).await;
        (body["components"]["inference-flaky"]["status"] == "down").then_some(body)
    })
    .await
    .expect("the breaker shows in /health");
    assert!(
        health["components"]["inference-flaky"]["last_error"].to_string().contains("circuit open"),
        "{health}"
    );
    let admin = app.admin_token().await;
    let tree = app.tree(&admin).await;
    let node = find_node(&tree, "inference-flaky").expect("the backend's supervisor in the tree");
    assert_eq!(node["breaker"]["state"], "open", "{node}");

    // healthy again: after open_ms a probe goes through and the breaker closes
    flaky.set(Behaviour::ok("from the big one"));
    let closed = poll_until(Duration::from_secs(10), || async {
        let response = post(&app, "/v1/chat/completions", &token, ask("big")).await;
        (response.headers()["x-castwork-backend"] == "flaky").then_some(())
    })
    .await;
    assert!(closed.is_some(), "the breaker never closed again");
    let tree = app.tree(&admin).await;
    assert_eq!(find_node(&tree, "inference-flaky").unwrap()["breaker"]["state"], "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_and_a_slow_first_token_move_the_request_on() {
    let limited = FakeOpenAi::start(Behaviour::RateLimited { retry_after_secs: 7 }).await;
    let spare = FakeOpenAi::start(Behaviour::ok("spare answer")).await;
    let (app, token) = gateway(|s| {
        s.inference.backends = vec![
            backend("limited", limited.base_url(), &[("m", "m")]),
            backend("spare", spare.base_url(), &[("m", "m")]),
        ];
        s.inference.first_token_timeout_secs = 1;
    })
    .await;
    // the spare is busier, so `limited` goes first: its 429 moves the request on
    let response = post(&app, "/v1/chat/completions", &token, ask("m")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-castwork-backend"], "spare");
    assert_eq!(limited.requests(), 1);
    // alone, a rate-limited backend is 503 with at least its own Retry-After
    let (alone, alone_token) = gateway(|s| {
        s.inference.backends = vec![backend("limited", limited.base_url(), &[("m", "m")])];
    })
    .await;
    let refused = post(&alone, "/v1/chat/completions", &alone_token, ask("m")).await;
    assert_eq!(refused.status(), 503);
    let after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(after >= 7, "Retry-After {after}");

    // a slow first token: given up after inference.first_token_timeout_secs, and the
    // request moves on (the slow backend is listed first, so it is tried first)
    let slow = FakeOpenAi::start(Behaviour::SlowFirstToken(Duration::from_secs(20))).await;
    let (app, token) = gateway(|s| {
        s.inference.backends = vec![
            backend("slow", slow.base_url(), &[("m", "m")]),
            backend("spare", spare.base_url(), &[("m", "m")]),
        ];
        s.inference.first_token_timeout_secs = 1;
    })
    .await;
    let started = std::time::Instant::now();
    let mut streamed = ask("m");
    streamed["stream"] = json!(true);
    let response = post(&app, "/v1/chat/completions", &token, streamed).await;
    assert_eq!(response.headers()["x-castwork-backend"], "spare");
    let body = response.text().await.unwrap();
    assert_eq!(sse_data(&body).last().map(String::as_str), Some("[DONE]"), "{body}");
    assert_eq!(slow.requests(), 1, "the slow backend was tried first");
    assert!(started.elapsed() < Duration::from_secs(15), "it did not wait for the slow backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_after_the_first_token_end_the_stream_with_an_error_event() {
    let broken = FakeOpenAi::start(Behaviour::ErrorMidStream).await;
    let spare = FakeOpenAi::start(Behaviour::ok("never used")).await;
    let (app, token) = gateway(|s| {
        let mut b = backend("broken", broken.base_url(), &[("m", "m")]);
        // these failures come after the first token: keep the breaker out of the way
        let breaker = b.breaker.as_mut().unwrap();
        (breaker.window_size, breaker.minimum_calls) = (100, 100);
        s.inference.backends = vec![b];
        s.inference.fallbacks = BTreeMap::from([("m".to_owned(), vec!["s".to_owned()])]);
        s.inference.backends.push(backend("spare", spare.base_url(), &[("s", "s")]));
    })
    .await;
    for (behaviour, code) in [(Behaviour::ErrorMidStream, None), (Behaviour::CutStream, Some("truncated"))] {
        broken.set(behaviour);
        let mut streamed = ask("m");
        streamed["stream"] = json!(true);
        let response = post(&app, "/v1/chat/completions", &token, streamed).await;
        assert_eq!(response.status(), 200);
        let body = response.text().await.unwrap();
        let events = sse_data(&body);
        assert_ne!(
            events.last().map(String::as_str),
            Some("[DONE]"),
            "a cut answer never ends as a whole one: {body}"
        );
        let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
        assert!(last["error"]["message"].is_string(), "{body}");
        if let Some(code) = code {
            assert_eq!(last["error"]["code"], code, "{body}");
        }
        // a whole answer: 502, never a short text
        let whole = post(&app, "/v1/chat/completions", &token, ask("m")).await;
        assert!(whole.status() == 502 || whole.status() == 200, "{}", whole.status());
    }
    assert_eq!(spare.requests(), 0, "no answer is generated twice once tokens were sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_shed_at_once_with_retry_after() {
    let stuck = FakeOpenAi::start(Behaviour::Hang).await;
    let (app, token) = gateway(|s| {
        let mut b = backend("stuck", stuck.base_url(), &[("m", "m")]);
        b.workers = 1;
        b.queue_capacity = 1;
        s.inference.backends = vec![b];
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let (client, url, token) = (app.client.clone(), app.url("/v1/chat/completions"), token.clone());
        held.push(tokio::spawn(
            async move { client.post(url).bearer_auth(token).json(&ask("m")).send().await },
        ));
    }
    let deployment = app.inference.deployments()[0].clone();
    let busy = poll_until(Duration::from_secs(10), || {
        let d = deployment.clone();
        async move { (d.outstanding() == 2 && d.queue_depth() == 1).then_some(()) }
    })
    .await;
    assert!(busy.is_some(), "one request on the worker and one queued");
    let started = std::time::Instant::now();
    let shed = post(&app, "/v1/chat/completions", &token, ask("m")).await;
    assert_eq!(shed.status(), 429);
    assert!(started.elapsed() < Duration::from_secs(2), "shed without waiting");
    assert_eq!(shed.headers()["retry-after"], "1");
    let error: Value = shed.json().await.unwrap();
    assert_eq!(error["error"]["code"], "overloaded");
    for request in held {
        request.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_answer_fails_its_request_cleanly_and_is_replaced() {
    let slow = FakeOpenAi::start(Behaviour::Ok {
        text: "one two three four".into(),
        latency: Duration::from_secs(3),
    })
    .await;
    let (app, token) = gateway(|s| {
        let mut b = backend("slow", slow.base_url(), &[("m", "m")]);
        b.workers = 1;
        s.inference.backends = vec![b];
    })
    .await;
    let admin = app.admin_token().await;
    let (client, url, caller) = (app.client.clone(), app.url("/v1/chat/completions"), token.clone());
    let request =
        tokio::spawn(async move { client.post(url).bearer_auth(caller).json(&ask("m")).send().await });
    let deployment = app.inference.deployments()[0].clone();
    poll_until(Duration::from_secs(10), || {
        let d = deployment.clone();
        async move { (d.outstanding() == 1).then_some(()) }
    })
    .await
    .expect("the request is on the worker");
    assert_eq!(app.chaos(&admin, "inference-slow-0", "kill").await.status(), 202);
    let response =
        tokio::time::timeout(Duration::from_secs(20), request).await.expect("never hangs").unwrap().unwrap();
    // lost before its first token: tried once more on the restarted worker, or a clean error
    assert!(matches!(response.status().as_u16(), 200 | 503 | 504), "{}", response.status());
    let replaced = poll_until(Duration::from_secs(10), || async {
        let tree = app.tree(&admin).await;
        let node = find_node(&tree, "inference-slow-0")?.clone();
        (node["status"] == "running" && node["restarts"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    assert!(replaced.is_some(), "the pool is back to full size");
    assert_eq!(post(&app, "/v1/chat/completions", &token, ask("m")).await.status(), 200);
}
