//! The pool and the router, driven through the [`Inference`] handle over a
//! scripted backend (an implementation of castwork's own trait, in process), under
//! paused time: shedding, fallback before the first token and none after it,
//! time-to-first-token, breakers, a lost worker, a client leaving, batching.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use ractor::{Actor, ActorRef};
use tokio::sync::mpsc;

use super::backend::*;
use super::batch::Batcher;
use super::pool::{Deployment, InferenceActor, InferenceArgs, InferenceMsg};
use super::router::Inference;
use super::{CachePolicy, ChatCall, InferenceError, Streamed};
use crate::config::{BreakerSettings, InferenceSettings};
use crate::supervision::breaker::{BreakerState, CircuitBreaker};
use crate::supervision::tree::ActorStats;

/// What the scripted backend does with the next chat.
#[derive(Clone)]
enum Script {
    /// These tokens, one per `every`.
    Tokens { tokens: Vec<&'static str>, every: Duration },
    /// Fails before any token.
    Fail(BackendError),
    /// Sends `n` tokens, then fails.
    FailAfter(usize, BackendError),
    /// Never sends anything.
    Hang,
}

struct Scripted {
    name: String,
    script: Mutex<Script>,
    chats: AtomicUsize,
    /// Generations that stopped because nobody read them any more.
    abandoned: Arc<AtomicUsize>,
    batches: Mutex<Vec<usize>>,
}

impl Scripted {
    fn new(name: &str, script: Script) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            script: Mutex::new(script),
            chats: AtomicUsize::new(0),
            abandoned: Arc::default(),
            batches: Mutex::default(),
        })
    }

    fn set(&self, script: Script) {
        *self.script.lock().unwrap() = script;
    }
}

impl LlmBackend for Scripted {
    fn name(&self) -> &str {
        &self.name
    }

    fn chat_stream(&self, _request: ChatRequest) -> BoxFuture<'_, Result<DeltaStream, BackendError>> {
        self.chats.fetch_add(1, Ordering::SeqCst);
        let script = self.script.lock().unwrap().clone();
        let abandoned = self.abandoned.clone();
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(1);
            match script {
                Script::Fail(err) => return Err(err),
                Script::Hang => {
                    tokio::spawn(async move {
                        tx.closed().await;
                        abandoned.fetch_add(1, Ordering::SeqCst);
                    });
                }
                Script::Tokens { tokens, every } => {
                    tokio::spawn(async move {
                        let n = tokens.len() as u32;
                        for t in tokens {
                            tokio::time::sleep(every).await;
                            if tx.send(Ok(Delta::Text(t.to_owned()))).await.is_err() {
                                abandoned.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        }
                        let usage = Usage { prompt_tokens: 5, completion_tokens: n };
                        let _ = tx.send(Ok(Delta::Done { finish: FinishReason::Stop, usage })).await;
                    });
                }
                Script::FailAfter(n, err) => {
                    tokio::spawn(async move {
                        for _ in 0..n {
                            let _ = tx.send(Ok(Delta::Text("x".to_owned()))).await;
                        }
                        let _ = tx.send(Err(err)).await;
                    });
                }
            }
            let stream =
                futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
            Ok(Box::pin(stream) as DeltaStream)
        })
    }

    fn embed(&self, _model: &str, texts: Vec<String>) -> BoxFuture<'_, Result<Embeddings, BackendError>> {
        self.batches.lock().unwrap().push(texts.len());
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let vectors = texts.iter().map(|t| vec![t.len() as f32, 1.0]).collect();
            Ok(Embeddings { vectors, prompt_tokens: texts.len() as u32 })
        })
    }

    fn models(&self) -> BoxFuture<'_, Result<Vec<ModelInfo>, BackendError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

fn settings() -> InferenceSettings {
    let mut s = InferenceSettings::for_tests();
    s.request_timeout_secs = 120;
    s.first_token_timeout_secs = 30;
    s.cooldown_ms = 1000;
    s
}

fn breaker() -> Arc<CircuitBreaker> {
    let b = BreakerSettings {
        window_size: 4,
        minimum_calls: 2,
        failure_rate_threshold: 0.5,
        slow_call_rate_threshold: 1.0,
        slow_call_ms: 600_000,
        half_open_permitted_calls: 1,
        open_ms: 10_000,
        max_open_ms: 60_000,
    };
    CircuitBreaker::new("inference-test", b.to_config())
}

struct Pool {
    deployment: Arc<Deployment>,
    workers: Vec<ActorRef<InferenceMsg>>,
}

async fn pool(
    name: &str,
    models: &[(&str, ModelKind)],
    backend: Arc<Scripted>,
    workers: usize,
    queue: usize,
) -> Pool {
    let models: BTreeMap<String, (String, ModelKind)> =
        models.iter().map(|(m, k)| ((*m).to_owned(), ((*m).to_owned(), *k))).collect();
    let deployment = Deployment::new(name, models, breaker(), workers, queue);
    deployment.ready(backend);
    let mut refs = Vec::new();
    for _ in 0..workers {
        let args = InferenceArgs { deployment: deployment.clone(), stats: Arc::new(ActorStats::default()) };
        let (actor, _) = Actor::spawn(None, InferenceActor, args).await.unwrap();
        refs.push(actor);
    }
    Pool { deployment, workers: refs }
}

fn handle(settings: &InferenceSettings, pools: &[&Pool]) -> Inference {
    let deployments: Vec<_> = pools.iter().map(|p| p.deployment.clone()).collect();
    let batchers: HashMap<String, Batcher> = deployments
        .iter()
        .map(|d| {
            (
                d.name().to_owned(),
                Batcher::start(d.clone(), settings.embed_batch_max, Duration::from_millis(2), 64),
            )
        })
        .collect();
    Inference::new(settings, deployments, batchers, None)
}

fn call(model: &str) -> ChatCall {
    ChatCall {
        model: model.to_owned(),
        messages: vec![ChatMessage::new(Role::User, "hi")],
        sampling: Sampling::greedy(16),
        cache: CachePolicy::Use,
    }
}

async fn text_of(streamed: Streamed) -> (String, Vec<String>) {
    let mut text = String::new();
    let mut errors = Vec::new();
    let mut stream = streamed.stream;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Delta::Text(t)) => text.push_str(&t),
            Ok(Delta::Done { .. }) => {}
            Err(e) => errors.push(e.kind().to_owned()),
        }
    }
    (text, errors)
}

const FAST: Duration = Duration::from_millis(5);

#[tokio::test(start_paused = true)]
async fn a_full_queue_sheds_at_once_with_retry_after() {
    let backend = Scripted::new("a", Script::Hang);
    let a = pool("a", &[("m", ModelKind::Chat)], backend, 1, 1).await;
    let inference = handle(&settings(), &[&a]);
    // one held by the worker, one waiting in the queue
    let first = tokio::spawn({
        let i = inference.clone();
        async move { i.chat_stream(call("m")).await.map(|_| ()) }
    });
    tokio::task::yield_now().await;
    while a.deployment.queue_depth() > 0 || a.deployment.outstanding() == 0 {
        tokio::task::yield_now().await;
    }
    let second = tokio::spawn({
        let i = inference.clone();
        async move { i.chat_stream(call("m")).await.map(|_| ()) }
    });
    while a.deployment.queue_depth() == 0 {
        tokio::task::yield_now().await;
    }
    let started = tokio::time::Instant::now();
    let third = inference.chat_stream(call("m")).await.err().expect("shed");
    assert_eq!(started.elapsed(), Duration::ZERO, "shedding never waits");
    assert_eq!(third, InferenceError::Shed { retry_after: Duration::from_secs(1) });
    first.abort();
    second.abort();
}

#[tokio::test(start_paused = true)]
async fn a_retryable_failure_before_the_first_token_falls_back_and_the_breaker_opens() {
    let failing = Scripted::new("a", Script::Fail(BackendError::Retryable("500".into())));
    let good = Scripted::new("b", Script::Tokens { tokens: vec!["Par", "is"], every: FAST });
    let a = pool("a", &[("big", ModelKind::Chat)], failing.clone(), 1, 4).await;
    let b = pool("b", &[("small", ModelKind::Chat)], good.clone(), 1, 4).await;
    let mut s = settings();
    s.fallbacks = BTreeMap::from([("big".to_owned(), vec!["small".to_owned()])]);
    let inference = handle(&s, &[&a, &b]);
    for _ in 0..3 {
        let streamed = inference.chat_stream(call("big")).await.expect("served by the fallback");
        assert_eq!((streamed.model.as_str(), streamed.backend.as_str()), ("small", "b"));
        assert_eq!(text_of(streamed).await, ("Paris".to_owned(), vec![]));
    }
    // two failures in a window of 2: open; the third request never reached `a`
    assert_eq!(a.deployment.breaker().state(), BreakerState::Open);
    assert_eq!(failing.chats.load(Ordering::SeqCst), 2);
    // a bad request is final: no fallback
    failing.set(Script::Fail(BackendError::Fatal("bad".into())));
    a.deployment.breaker().reset();
    let err = inference.chat_stream(call("big")).await.err().expect("rejected");
    assert!(matches!(err, InferenceError::Rejected(_)), "{err:?}");
    assert_eq!(good.chats.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn after_the_first_token_a_failure_ends_the_stream_and_is_not_retried() {
    let broken = Scripted::new("a", Script::FailAfter(2, BackendError::Retryable("reset".into())));
    let spare = Scripted::new("b", Script::Tokens { tokens: vec!["x"], every: FAST });
    let a = pool("a", &[("m", ModelKind::Chat)], broken, 1, 4).await;
    let b = pool("b", &[("m", ModelKind::Chat)], spare.clone(), 1, 4).await;
    // `b` busier: `a` is chosen first
    let _held = b.deployment.hold();
    let inference = handle(&settings(), &[&a, &b]);
    let streamed = inference.chat_stream(call("m")).await.expect("first token");
    assert_eq!(streamed.backend, "a");
    assert_eq!(text_of(streamed).await, ("xx".to_owned(), vec!["retryable".to_owned()]));
    assert_eq!(spare.chats.load(Ordering::SeqCst), 0, "never generated twice");
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_token_times_out_and_moves_on() {
    let slow = Scripted::new("a", Script::Tokens { tokens: vec!["late"], every: Duration::from_secs(60) });
    let quick = Scripted::new("b", Script::Tokens { tokens: vec!["on", " time"], every: FAST });
    let a = pool("a", &[("m", ModelKind::Chat)], slow.clone(), 1, 4).await;
    let b = pool("b", &[("m", ModelKind::Chat)], quick, 1, 4).await;
    let _held = b.deployment.hold();
    let inference = handle(&settings(), &[&a, &b]);
    let started = tokio::time::Instant::now();
    let streamed = inference.chat_stream(call("m")).await.expect("the second backend");
    assert_eq!(streamed.backend, "b");
    assert_eq!(started.elapsed().as_secs(), 30, "moved on at inference.first_token_timeout_secs");
    assert_eq!(text_of(streamed).await.0, "on time");
    assert!(a.deployment.cooling(), "the slow deployment cools down");
    // its generation was dropped, not left running
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(slow.abandoned.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_stops_the_generation() {
    let tokens = vec!["a"; 100];
    let backend = Scripted::new("a", Script::Tokens { tokens, every: Duration::from_millis(50) });
    let a = pool("a", &[("m", ModelKind::Chat)], backend.clone(), 1, 4).await;
    let inference = handle(&settings(), &[&a]);
    let mut streamed = inference.chat_stream(call("m")).await.expect("stream");
    let _ = streamed.stream.next().await;
    drop(streamed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(a.deployment.cancelled(), 1, "the worker saw its reader leave");
    assert_eq!(backend.abandoned.load(Ordering::SeqCst), 1, "and stopped decoding");
    assert_eq!(a.deployment.outstanding(), 0);
    // the worker is free for the next request
    backend.set(Script::Tokens { tokens: vec!["next"], every: FAST });
    let again = inference.chat_stream(call("m")).await.expect("served");
    assert_eq!(text_of(again).await.0, "next");
}

#[tokio::test(start_paused = true)]
async fn with_every_worker_killed_a_request_fails_cleanly_and_never_hangs() {
    let backend = Scripted::new("a", Script::Hang);
    let a = pool("a", &[("m", ModelKind::Chat)], backend.clone(), 2, 4).await;
    let inference = handle(&settings(), &[&a]);
    let pending = tokio::spawn({
        let i = inference.clone();
        async move { i.chat_stream(call("m")).await.map(|s| s.backend) }
    });
    while backend.chats.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    for worker in &a.workers {
        worker.kill();
    }
    let result = tokio::time::timeout(Duration::from_secs(300), pending).await.expect("never hangs").unwrap();
    assert!(matches!(result, Err(InferenceError::Timeout(_))), "{result:?}");
    assert_eq!(backend.abandoned.load(Ordering::SeqCst), 1, "the killed worker's generation was dropped");
}

#[tokio::test(start_paused = true)]
async fn a_lost_worker_is_retried_once_on_a_live_one() {
    let backend = Scripted::new("a", Script::Hang);
    let a = pool("a", &[("m", ModelKind::Chat)], backend.clone(), 2, 4).await;
    let inference = handle(&settings(), &[&a]);
    // the first worker takes a request that hangs; then it is killed
    let pending = tokio::spawn({
        let i = inference.clone();
        async move { i.chat_stream(call("m")).await.map(|s| s.backend) }
    });
    while backend.chats.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    backend.set(Script::Tokens { tokens: vec!["ok"], every: FAST });
    // whichever worker is busy holds the only request: kill the busy one (the idle one waits on the queue lock)
    for worker in &a.workers {
        worker.kill();
        tokio::task::yield_now().await;
        if backend.abandoned.load(Ordering::SeqCst) > 0 {
            break;
        }
        // that one was idle: start a fresh idle worker in its place
        let args = InferenceArgs { deployment: a.deployment.clone(), stats: Arc::new(ActorStats::default()) };
        Actor::spawn(None, InferenceActor, args).await.unwrap();
    }
    let served = tokio::time::timeout(Duration::from_secs(60), pending).await.expect("never hangs").unwrap();
    assert_eq!(served, Ok("a".to_owned()));
    assert_eq!(backend.chats.load(Ordering::SeqCst), 2, "generated again after the loss, before any token");
}

#[tokio::test(start_paused = true)]
async fn concurrent_embeddings_share_forward_passes() {
    let backend = Scripted::new("a", Script::Hang);
    let a = pool("a", &[("e", ModelKind::Embedding)], backend.clone(), 1, 64).await;
    let inference = handle(&settings(), &[&a]);
    let asks: Vec<_> = (0..16)
        .map(|i| {
            let inference = inference.clone();
            tokio::spawn(async move { inference.embed("e", vec!["x".repeat(i + 1)]).await })
        })
        .collect();
    for (i, ask) in asks.into_iter().enumerate() {
        let embeddings = ask.await.unwrap().expect("vectors");
        assert_eq!(embeddings.vectors, vec![vec![(i + 1) as f32, 1.0]], "each ask gets its own vector back");
    }
    let batches = backend.batches.lock().unwrap().clone();
    assert_eq!(batches.iter().sum::<usize>(), 16);
    assert!(batches.len() <= 3, "16 concurrent asks in {} passes: {batches:?}", batches.len());
    // a chat model is refused for embeddings, an unknown one named
    assert!(matches!(inference.embed("nope", vec!["x".into()]).await, Err(InferenceError::UnknownModel(_))));
}

#[tokio::test(start_paused = true)]
async fn every_backend_down_is_unavailable_with_retry_after() {
    let backend = Scripted::new(
        "a",
        Script::Fail(BackendError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            message: "slow down".into(),
        }),
    );
    let a = pool("a", &[("m", ModelKind::Chat)], backend, 1, 4).await;
    let inference = handle(&settings(), &[&a]);
    let err = inference.chat_stream(call("m")).await.err().expect("unavailable");
    match err {
        InferenceError::Unavailable { retry_after, .. } => assert_eq!(retry_after, Duration::from_secs(7)),
        other => panic!("{other:?}"),
    }
    assert!(a.deployment.cooling(), "cools down for the Retry-After it was given");
    assert!(matches!(inference.chat_stream(call("other")).await, Err(InferenceError::UnknownModel(_))));
    let err = inference.embed("m", vec!["x".into()]).await.err().expect("wrong kind");
    assert!(matches!(err, InferenceError::WrongKind { .. }));
}
