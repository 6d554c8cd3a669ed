//! [`FakeOpenAi`]: a small OpenAI-compatible server on `127.0.0.1:0` whose
//! [`Behaviour`] the test sets and changes while it runs: answers, rate limits,
//! server errors, errors in the middle of a stream, cut connections, a slow first
//! token, or no answer at all. The `openai` backend's tests, the pool and router
//! tests and the gateway benchmark talk to it over real HTTP.
//!
//! It serves `POST /v1/chat/completions` (whole or streamed), `POST /v1/embeddings`
//! (deterministic vectors, [`fake_embedding`]) and `GET /v1/models`, accepts any
//! model name, and is cheap per request (answers are prepared when the behaviour
//! is set; nothing is logged), so benchmarks can push thousands of requests a
//! second through it.
//!
//! Compiled for the crate's unit tests and, through the `testing` feature, for the
//! integration tests and benchmarks; never in a release build.
#![allow(clippy::expect_used, reason = "a test fixture fails by panicking")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The model names `/v1/models` lists (any name is accepted in requests).
pub const CHAT_MODEL: &str = "fake-chat";
pub const EMBEDDING_MODEL: &str = "fake-embed";
/// `prompt_tokens` of every answer's usage.
pub const PROMPT_TOKENS: u32 = 7;
/// Length of [`fake_embedding`]'s vectors.
pub const EMBEDDING_DIMENSION: usize = 8;
/// The text of the behaviours that do not name one.
pub const DEFAULT_TEXT: &str = "The quick brown fox jumps over the lazy dog.";
/// Text deltas an answer is streamed in (fewer when its text has fewer characters).
pub const STREAM_PIECES: usize = 4;

/// How the server answers, until [`FakeOpenAi::set`] changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// After `latency`: `text`, whole or streamed in [`STREAM_PIECES`] deltas, with
    /// `finish_reason` "stop", a usage chunk and `[DONE]`; embeddings; the model list.
    Ok { text: String, latency: Duration },
    /// 429 with `Retry-After` and OpenAI's error JSON.
    RateLimited { retry_after_secs: u64 },
    /// 500 with OpenAI's error JSON.
    ServerError,
    /// This status (a 4xx, say) with OpenAI's error JSON.
    Status(u16),
    /// A stream sends its first two deltas, then an error event (then `[DONE]`, as
    /// vLLM does); a whole answer or embeddings get a 500.
    ErrorMidStream,
    /// A stream sends its first two deltas, then the connection closes without a
    /// finish or `[DONE]`; a whole answer or embeddings break off halfway.
    CutStream,
    /// The answer (headers at once when streamed) waits this long before its first delta.
    SlowFirstToken(Duration),
    /// No answer, ever (until the server shuts down).
    Hang,
}

impl Behaviour {
    /// Answers `text` at once.
    pub fn ok(text: impl Into<String>) -> Self {
        Self::Ok { text: text.into(), latency: Duration::ZERO }
    }
}

/// The running server; dropping it stops it.
pub struct FakeOpenAi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
}

struct Shared {
    script: ArcSwap<Script>,
    requests: AtomicU64,
    connections: AtomicU64,
    /// Requests without `Authorization: Bearer <key>` get a 401.
    api_key: Option<String>,
    stopping: watch::Receiver<bool>,
}

impl FakeOpenAi {
    /// Starts a server answering as `behaviour`.
    pub async fn start(behaviour: Behaviour) -> Self {
        Self::serve(behaviour, None).await
    }

    /// Starts a server that wants `api_key` as a bearer token: other requests get a
    /// 401 whose message quotes the key they sent, as some servers do.
    pub async fn with_api_key(behaviour: Behaviour, api_key: &str) -> Self {
        Self::serve(behaviour, Some(api_key.to_owned())).await
    }

    async fn serve(behaviour: Behaviour, api_key: Option<String>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("the bound address");
        let (stop, stopping) = watch::channel(false);
        let shared = Arc::new(Shared {
            script: ArcSwap::from_pointee(Script::new(behaviour)),
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            api_key,
            stopping: stopping.clone(),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/models", get(models))
            .with_state(Arc::clone(&shared));
        let counted = Arc::clone(&shared);
        let listener = listener.tap_io(move |_| {
            counted.connections.fetch_add(1, Ordering::Relaxed);
        });
        let mut signal = stopping;
        let server = tokio::spawn(async move {
            let stopped = async move {
                let _ = signal.wait_for(|stop| *stop).await;
            };
            let _ = axum::serve(listener, app).with_graceful_shutdown(stopped).await;
        });
        Self { addr, shared, stop, server: Some(server) }
    }

    /// `http://127.0.0.1:<port>/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Answers as `behaviour` from the next request on (requests under way keep theirs).
    pub fn set(&self, behaviour: Behaviour) {
        self.shared.script.store(Arc::new(Script::new(behaviour)));
    }

    /// Requests received so far (all routes).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Connections accepted so far (a client that keeps its connections alive opens few).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Stops the server: waiting answers end at once, and it waits for its
    /// connections to close.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// A deterministic unit vector of [`EMBEDDING_DIMENSION`] for `text` (from an
/// FNV-1a hash of it, spread by SplitMix64).
pub fn fake_embedding(text: &str) -> Vec<f32> {
    let mut state =
        text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let mut vector: Vec<f32> = (0..EMBEDDING_DIMENSION)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            // the top 24 bits as a number in [-1, 1)
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    vector.iter_mut().for_each(|x| *x /= norm);
    vector
}

/// A behaviour and the answers it gives, built once.
struct Script {
    behaviour: Behaviour,
    /// The SSE events of a streamed answer, in order.
    events: Arc<[Bytes]>,
    /// A whole answer's JSON.
    completion: Bytes,
}

impl Script {
    fn new(behaviour: Behaviour) -> Self {
        let text = match &behaviour {
            Behaviour::Ok { text, .. } => text.as_str(),
            _ => DEFAULT_TEXT,
        };
        let pieces = split(text);
        let chunk = |delta: serde_json::Value, finish: Option<&str>| {
            let choice = json!({"index": 0, "delta": delta, "finish_reason": finish});
            event(&json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                "model": CHAT_MODEL, "choices": [choice]}))
        };
        let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
        events.extend(pieces.iter().map(|piece| chunk(json!({"content": piece}), None)));
        match behaviour {
            Behaviour::ErrorMidStream => {
                events.truncate(3);
                events.push(event(&error_body("the model failed mid-answer", "server_error", json!(500))));
                events.push(Bytes::from_static(b"data: [DONE]\n\n"));
            }
            Behaviour::CutStream => events.truncate(3),
            _ => {
                events.push(chunk(json!({}), Some("stop")));
                events.push(event(&json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                    "created": 0, "model": CHAT_MODEL, "choices": [], "usage": usage(pieces.len())})));
                events.push(Bytes::from_static(b"data: [DONE]\n\n"));
            }
        }
        let completion = json!({"id": "chatcmpl-fake", "object": "chat.completion", "created": 0,
            "model": CHAT_MODEL, "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": text}}], "usage": usage(pieces.len())});
        Self { behaviour, events: events.into(), completion: Bytes::from(completion.to_string()) }
    }
}

/// `text` in at most [`STREAM_PIECES`] pieces of about equal length, cut between characters.
fn split(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(STREAM_PIECES).max(1);
    chars.chunks(size).map(|piece| piece.iter().collect()).collect()
}

fn usage(pieces: usize) -> serde_json::Value {
    json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": pieces,
        "total_tokens": PROMPT_TOKENS as usize + pieces})
}

fn event(data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

fn error_body(message: &str, kind: &str, code: serde_json::Value) -> serde_json::Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

fn error(status: StatusCode, message: &str, kind: &str, code: serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], error_body(message, kind, code).to_string())
        .into_response()
}

impl Shared {
    /// Counts the request, checks its key and takes the current script; `Err`: the answer.
    fn admit(&self, headers: &HeaderMap) -> Result<Arc<Script>, Box<Response>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(key) = &self.api_key {
            let sent = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
            let sent = sent.strip_prefix("Bearer ").unwrap_or(sent);
            if sent != key {
                let message = format!("Incorrect API key provided: {sent}.");
                let refused = error(
                    StatusCode::UNAUTHORIZED,
                    &message,
                    "invalid_request_error",
                    json!("invalid_api_key"),
                );
                return Err(Box::new(refused));
            }
        }
        Ok(self.script.load_full())
    }

    /// Waits `delay`; false if the server is stopping first.
    async fn wait(&self, delay: Duration) -> bool {
        if delay.is_zero() {
            return true;
        }
        let mut stopping = self.stopping.clone();
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            _ = stopping.wait_for(|stop| *stop) => false,
        }
    }

    /// The answer of a failing behaviour (one that answers no request), waiting as it says.
    async fn failure(&self, behaviour: &Behaviour) -> Option<Response> {
        match behaviour {
            Behaviour::RateLimited { retry_after_secs } => {
                let mut response = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Rate limit reached for requests",
                    "requests",
                    json!("rate_limit_exceeded"),
                );
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
                Some(response)
            }
            Behaviour::ServerError => Some(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server had an error",
                "server_error",
                json!(null),
            )),
            Behaviour::Status(status) => {
                let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST);
                let message = format!("refused with {}", status.as_u16());
                Some(error(status, &message, "invalid_request_error", json!(status.as_u16())))
            }
            Behaviour::Hang => {
                let _ = self.stopping.clone().wait_for(|stop| *stop).await;
                Some(StatusCode::SERVICE_UNAVAILABLE.into_response())
            }
            Behaviour::Ok { latency, .. } => (!self.wait(*latency).await).then(stopping),
            Behaviour::SlowFirstToken(_) | Behaviour::ErrorMidStream | Behaviour::CutStream => None,
        }
    }
}

fn stopping() -> Response {
    StatusCode::SERVICE_UNAVAILABLE.into_response()
}

/// A body of `parts`, the first after `first_delay`; `cut`: the connection then closes
/// without ending the body.
fn body(shared: Arc<Shared>, parts: Arc<[Bytes]>, first_delay: Duration, cut: bool) -> Body {
    let stream = futures::stream::unfold(0usize, move |at| {
        let (shared, parts) = (Arc::clone(&shared), Arc::clone(&parts));
        async move {
            if at == 0 && !shared.wait(first_delay).await {
                return None;
            }
            match parts.get(at) {
                Some(part) => Some((Ok(part.clone()), at + 1)),
                None if cut && at == parts.len() => {
                    // hyper writes out what it holds while the body is pending: the client
                    // gets the parts, then the connection closes
                    tokio::task::yield_now().await;
                    Some((Err(std::io::Error::other("the fake server cuts the connection")), at + 1))
                }
                None => None,
            }
        }
    });
    Body::from_stream(stream)
}

#[derive(Deserialize)]
struct ChatIn {
    #[serde(default)]
    stream: bool,
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body_bytes: Bytes) -> Response {
    let script = match shared.admit(&headers) {
        Ok(script) => script,
        Err(refused) => return *refused,
    };
    let Ok(request) = serde_json::from_slice::<ChatIn>(&body_bytes) else {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON", "invalid_request_error", json!(null));
    };
    if let Some(response) = shared.failure(&script.behaviour).await {
        return response;
    }
    let delay = match script.behaviour {
        Behaviour::SlowFirstToken(delay) => delay,
        _ => Duration::ZERO,
    };
    if request.stream {
        let body = body(
            Arc::clone(&shared),
            Arc::clone(&script.events),
            delay,
            script.behaviour == Behaviour::CutStream,
        );
        return ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], body)
            .into_response();
    }
    whole(&shared, &script, script.completion.clone(), delay).await
}

/// A whole JSON answer as the behaviour says: at once, after a delay, broken off or a 500.
async fn whole(shared: &Arc<Shared>, script: &Script, json: Bytes, delay: Duration) -> Response {
    match script.behaviour {
        Behaviour::ErrorMidStream => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the model failed mid-answer",
            "server_error",
            json!(500),
        ),
        Behaviour::CutStream => {
            let half = json.slice(..json.len() / 2);
            let body = body(Arc::clone(shared), Arc::from([half]), Duration::ZERO, true);
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        _ if !shared.wait(delay).await => stopping(),
        _ => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct EmbeddingsIn {
    input: Input,
}

async fn embeddings(State(shared): State<Arc<Shared>>, headers: HeaderMap, body_bytes: Bytes) -> Response {
    let script = match shared.admit(&headers) {
        Ok(script) => script,
        Err(refused) => return *refused,
    };
    let Ok(request) = serde_json::from_slice::<EmbeddingsIn>(&body_bytes) else {
        return error(
            StatusCode::BAD_REQUEST,
            "input must be a string or strings",
            "invalid_request_error",
            json!(null),
        );
    };
    if let Some(response) = shared.failure(&script.behaviour).await {
        return response;
    }
    let texts = match request.input {
        Input::One(text) => vec![text],
        Input::Many(texts) => texts,
    };
    let tokens: usize = texts.iter().map(|t| t.split_whitespace().count().max(1)).sum();
    // last first, as the index says where each belongs (clients must not rely on the order)
    let data: Vec<_> = texts
        .iter()
        .enumerate()
        .rev()
        .map(
            |(index, text)| json!({"object": "embedding", "index": index, "embedding": fake_embedding(text)}),
        )
        .collect();
    let answer = json!({"object": "list", "model": EMBEDDING_MODEL, "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}});
    let delay = match script.behaviour {
        Behaviour::SlowFirstToken(delay) => delay,
        _ => Duration::ZERO,
    };
    whole(&shared, &script, Bytes::from(answer.to_string()), delay).await
}

async fn models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let script = match shared.admit(&headers) {
        Ok(script) => script,
        Err(refused) => return *refused,
    };
    match script.behaviour {
        Behaviour::RateLimited { .. } | Behaviour::ServerError | Behaviour::Status(_) | Behaviour::Hang => {
            shared.failure(&script.behaviour).await.unwrap_or_else(stopping)
        }
        _ => {
            let model = |id: &str| json!({"id": id, "object": "model", "created": 0, "owned_by": "castwork"});
            let list = json!({"object": "list", "data": [model(CHAT_MODEL), model(EMBEDDING_MODEL)]});
            ([(header::CONTENT_TYPE, "application/json")], list.to_string()).into_response()
        }
    }
}
