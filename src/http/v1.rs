//! The OpenAI-compatible inference API (viewer or above): `POST /v1/chat/completions`
//! (whole, or streamed as Server-Sent Events with `stream: true`), `POST /v1/embeddings`
//! and `GET /v1/models`. A castwork access token is the Bearer key, so OpenAI's SDKs
//! work when their base URL points at castwork's `/v1`.
//!
//! Errors have OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`,
//! except a 401 from the authentication layer, which has castwork's (`code` and
//! `message`, which OpenAI's SDKs read too).
//! Bounds (`[inference]`): messages, characters, `max_tokens`, inputs; past them 400.
//! Each user spends at most its role's tokens per minute (`[inference.budget]`);
//! past it 429 with `Retry-After`.
//!
//! A streamed answer that fails after its first token ends with one event
//! `data: {"error": {...}}` and no `data: [DONE]`: a client never takes a cut answer
//! for a whole one.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::extract::Viewer;
use super::openapi::Unauthenticated;
use crate::auth::{Principal, Role as UserRole};
use crate::inference::backend::{BackendError, Delta, ModelKind, Usage};
use crate::inference::budget::{self, OverBudget, Reservation};
use crate::inference::{CachePolicy, ChatCall, ChatMessage, InferenceError, Role, Sampling};
use crate::metrics;

/// An error in OpenAI's shape.
#[derive(Debug)]
pub struct V1Error {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
    param: Option<&'static str>,
    retry_after: Option<Duration>,
}

/// `{"error": {...}}`.
#[derive(Serialize, ToSchema)]
pub struct V1ErrorBody {
    pub error: V1ErrorDetail,
}

/// OpenAI's error object.
#[derive(Serialize, ToSchema)]
pub struct V1ErrorDetail {
    /// What went wrong and what to fix.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `rate_limit_error`, `timeout_error`, `service_unavailable_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// A stable code (`model_not_found`, `context_length_exceeded`, `rate_limited`, ...).
    pub code: Option<String>,
}

impl V1Error {
    fn invalid(param: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code,
            message: message.into(),
            param: Some(param),
            retry_after: None,
        }
    }

    fn over_budget(over: OverBudget) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: "rate_limit_error",
            code: "token_budget_exceeded",
            message: "this user's tokens for the minute are spent; retry after Retry-After seconds"
                .to_owned(),
            param: None,
            retry_after: Some(over.retry_after),
        }
    }

    fn body(&self) -> V1ErrorBody {
        V1ErrorBody {
            error: V1ErrorDetail {
                message: self.message.clone(),
                kind: self.kind.to_owned(),
                param: self.param.map(str::to_owned),
                code: Some(self.code.to_owned()),
            },
        }
    }
}

impl From<ApiError> for V1Error {
    fn from(err: ApiError) -> Self {
        let status = err.status();
        let kind = match status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::SERVICE_UNAVAILABLE => "service_unavailable_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        };
        let retry_after = match &err {
            ApiError::TooManyRequests { retry_after, .. } | ApiError::Unavailable { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        };
        let message = match &err {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        Self { status, kind, code: err.code(), message, param: None, retry_after }
    }
}

impl From<InferenceError> for V1Error {
    fn from(err: InferenceError) -> Self {
        let message = err.to_string();
        let (status, kind, code, retry_after) = match &err {
            InferenceError::Disabled => {
                (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable_error", "inference_disabled", None)
            }
            InferenceError::UnknownModel(_) => {
                (StatusCode::NOT_FOUND, "invalid_request_error", "model_not_found", None)
            }
            InferenceError::WrongKind { .. } => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", "model_not_supported", None)
            }
            InferenceError::Shed { retry_after } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "overloaded", Some(*retry_after))
            }
            InferenceError::Unavailable { retry_after, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable_error",
                "backend_unavailable",
                Some(*retry_after),
            ),
            InferenceError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout_error", "timeout", None),
            InferenceError::Rejected(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", "rejected_by_backend", None)
            }
            InferenceError::Failed(_) => (StatusCode::BAD_GATEWAY, "server_error", "backend_failed", None),
        };
        let param = matches!(err, InferenceError::UnknownModel(_) | InferenceError::WrongKind { .. })
            .then_some("model");
        Self { status, kind, code, message, param, retry_after }
    }
}

impl IntoResponse for V1Error {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(after) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
        }
        response
    }
}

/// A message's content: a string, or OpenAI's list of parts (text parts only).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One part of a message's content.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ContentPart {
    /// Only `text`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// A message of `POST /v1/chat/completions`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct V1Message {
    /// `system` (or `developer`), `user` or `assistant`.
    pub role: String,
    pub content: Content,
}

/// `stop`: one sequence or up to four.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// `POST /v1/chat/completions`. Fields OpenAI defines that castwork does not use are ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// A model of `GET /v1/models`.
    #[schema(example = "smollm2-135m-instruct")]
    pub model: String,
    pub messages: Vec<V1Message>,
    /// 0 to 2; 0 (the default) decodes greedily.
    pub temperature: Option<f32>,
    /// (0, 1].
    pub top_p: Option<f32>,
    /// With a seed, sampling is reproducible (and cacheable).
    pub seed: Option<i64>,
    /// Most tokens generated (`inference.default_max_tokens` when left out).
    pub max_tokens: Option<u32>,
    /// The newer name of `max_tokens`.
    pub max_completion_tokens: Option<u32>,
    pub stop: Option<Stop>,
    /// Stream the answer as Server-Sent Events.
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    /// Only 1.
    pub n: Option<u32>,
}

/// `usage`.
#[derive(Debug, Serialize, ToSchema)]
pub struct V1Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

impl From<Usage> for V1Usage {
    fn from(u: Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total(),
        }
    }
}

/// The assistant's message.
#[derive(Debug, Serialize, ToSchema)]
pub struct V1AnswerMessage {
    /// `assistant`.
    pub role: &'static str,
    pub content: String,
}

/// One choice (there is one).
#[derive(Debug, Serialize, ToSchema)]
pub struct V1Choice {
    pub index: u32,
    pub message: V1AnswerMessage,
    /// `stop` or `length`.
    pub finish_reason: &'static str,
}

/// The answer of `POST /v1/chat/completions` without `stream`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    /// `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: i64,
    pub model: String,
    pub choices: Vec<V1Choice>,
    pub usage: V1Usage,
}

/// `POST /v1/embeddings`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EmbeddingRequest {
    #[schema(example = "all-minilm-l6-v2")]
    pub model: String,
    pub input: EmbeddingInput,
    /// `float` (the default) or `base64` (little-endian f32s).
    pub encoding_format: Option<String>,
}

/// One text or a list of texts.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
}

/// One vector.
#[derive(Debug, Serialize, ToSchema)]
pub struct V1Embedding {
    /// `embedding`.
    pub object: &'static str,
    pub index: usize,
    pub embedding: Vector,
}

/// A vector as `encoding_format` asks: numbers, or the base64 of its little-endian f32s.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

impl Vector {
    fn encode(vector: Vec<f32>, base64: bool) -> Self {
        if !base64 {
            return Self::Float(vector);
        }
        use base64::Engine as _;
        let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
        Self::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

/// Token counts of an embeddings request.
#[derive(Debug, Serialize, ToSchema)]
pub struct V1EmbeddingUsage {
    pub prompt_tokens: u32,
    pub total_tokens: u32,
}

/// The answer of `POST /v1/embeddings`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingList {
    /// `list`.
    pub object: &'static str,
    pub data: Vec<V1Embedding>,
    pub model: String,
    pub usage: V1EmbeddingUsage,
}

/// A model.
#[derive(Debug, Serialize, ToSchema)]
pub struct V1Model {
    pub id: String,
    /// `model`.
    pub object: &'static str,
    pub created: i64,
    /// `castwork`.
    pub owned_by: &'static str,
    /// `chat` or `embedding` (castwork's addition).
    pub kind: ModelKind,
    /// Backends serving it, in routing order (castwork's addition).
    pub backends: Vec<String>,
}

/// The answer of `GET /v1/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// `list`.
    pub object: &'static str,
    pub data: Vec<V1Model>,
}

fn authorized(viewer: Result<Viewer, ApiError>) -> Result<Principal, V1Error> {
    viewer.map(|v| v.principal).map_err(V1Error::from)
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, V1Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        V1Error {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: "invalid_body",
            message: if path == "." { e.inner().to_string() } else { format!("{path}: {}", e.inner()) },
            param: None,
            retry_after: None,
        }
    })
}

fn tokens_per_minute(state: &AppState, role: UserRole) -> u64 {
    let budget = &state.settings().inference.budget;
    match role {
        UserRole::Viewer => budget.viewer_tokens_per_minute,
        UserRole::Editor => budget.editor_tokens_per_minute,
        UserRole::Admin => budget.admin_tokens_per_minute,
    }
}

fn reserve(state: &AppState, who: &Principal, estimate: u64) -> Result<Reservation, V1Error> {
    let limit = tokens_per_minute(state, who.role);
    state.token_budgets().reserve(&who.user_id, limit, estimate).map_err(|over| {
        metrics::inference_budget_exceeded(who.role.as_str());
        V1Error::over_budget(over)
    })
}

/// Checks a chat request against the bounds and makes the call.
fn chat_call(
    state: &AppState,
    request: ChatCompletionRequest,
    headers: &HeaderMap,
) -> Result<(ChatCall, usize), V1Error> {
    let s = &state.settings().inference;
    if request.messages.is_empty() {
        return Err(V1Error::invalid(
            "messages",
            "invalid_messages",
            "messages must hold at least one message",
        ));
    }
    if request.messages.len() > s.max_messages {
        return Err(V1Error::invalid(
            "messages",
            "too_many_messages",
            format!("at most {} messages (inference.max_messages)", s.max_messages),
        ));
    }
    if request.n.is_some_and(|n| n != 1) {
        return Err(V1Error::invalid("n", "unsupported_parameter", "only n = 1 is supported"));
    }
    let mut chars = 0usize;
    let mut messages = Vec::with_capacity(request.messages.len());
    for (i, message) in request.messages.into_iter().enumerate() {
        let role = match message.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(V1Error::invalid(
                    "messages",
                    "invalid_role",
                    format!("messages[{i}].role: {other:?} is not one of system, developer, user, assistant"),
                ));
            }
        };
        let content = match message.content {
            Content::Text(text) => text,
            Content::Parts(parts) => {
                let mut text = String::new();
                for part in parts {
                    match (part.kind.as_str(), part.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        (kind, _) => {
                            return Err(V1Error::invalid(
                                "messages",
                                "unsupported_content",
                                format!("messages[{i}].content: only text parts are supported, not {kind:?}"),
                            ));
                        }
                    }
                }
                text
            }
        };
        chars = chars.saturating_add(content.chars().count());
        if chars > s.max_input_chars {
            return Err(V1Error::invalid(
                "messages",
                "context_length_exceeded",
                format!(
                    "the messages hold more than {} characters (inference.max_input_chars)",
                    s.max_input_chars
                ),
            ));
        }
        messages.push(ChatMessage { role, content });
    }
    let temperature = request.temperature.unwrap_or(0.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(V1Error::invalid("temperature", "invalid_value", "temperature must be between 0 and 2"));
    }
    if let Some(top_p) = request.top_p
        && !(top_p > 0.0 && top_p <= 1.0)
    {
        return Err(V1Error::invalid("top_p", "invalid_value", "top_p must be in (0, 1]"));
    }
    let max_tokens = request.max_completion_tokens.or(request.max_tokens).unwrap_or(s.default_max_tokens);
    if max_tokens == 0 || max_tokens > s.max_tokens_limit {
        return Err(V1Error::invalid(
            "max_tokens",
            "invalid_value",
            format!("max_tokens must be between 1 and {} (inference.max_tokens_limit)", s.max_tokens_limit),
        ));
    }
    let stop = match request.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > 4 || stop.iter().any(|s| s.is_empty() || s.len() > 256) {
        return Err(V1Error::invalid("stop", "invalid_value", "stop: at most 4 sequences of 1 to 256 bytes"));
    }
    let seed = request.seed.map(|s| s as u64);
    let cache = if no_cache(headers) { CachePolicy::Bypass } else { CachePolicy::Use };
    let sampling = Sampling { temperature, top_p: request.top_p, seed, max_tokens, stop };
    Ok((ChatCall { model: request.model, messages, sampling, cache }, chars))
}

fn no_cache(headers: &HeaderMap) -> bool {
    headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|d| matches!(d.trim().to_ascii_lowercase().as_str(), "no-cache" | "no-store"))
        })
    })
}

fn completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

/// `POST /v1/chat/completions`.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    operation_id = "createChatCompletion",
    tag = "inference",
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "The answer; with `stream: true` a `text/event-stream` of \
            `chat.completion.chunk` objects ending with `data: [DONE]` (or, when the answer fails after its \
            first token, with one `data: {\"error\": ...}` and no `[DONE]`). `x-castwork-cache` says `hit`, \
            `miss`, `bypass` or `off`; `x-castwork-backend` names the backend that answered.",
            body = ChatCompletion),
        (status = 400, description = "A bound or value refused (`param` names the field).", body = V1ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 404, description = "Unknown model (`model_not_found`).", body = V1ErrorBody),
        (status = 429, description = "The backends' queues are full (`overloaded`) or the user's token budget \
            is spent (`token_budget_exceeded`); `Retry-After` says when to come back.", body = V1ErrorBody),
        (status = 502, description = "The backend failed mid-answer.", body = V1ErrorBody),
        (status = 503, description = "No backend can serve the model now (`backend_unavailable`), with \
            `Retry-After`.", body = V1ErrorBody),
        (status = 504, description = "No answer in time.", body = V1ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn chat_completions(
    State(state): State<AppState>,
    viewer: Result<Viewer, ApiError>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, V1Error> {
    let who = authorized(viewer)?;
    let request: ChatCompletionRequest = parse(&body)?;
    let stream = request.stream;
    let include_usage = request.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let (call, chars) = chat_call(&state, request, &headers)?;
    let reservation = reserve(&state, &who, budget::estimate(chars, call.sampling.max_tokens))?;
    let inference = state.runtime().inference.clone();
    if stream {
        let streamed = inference.chat_stream(call).await.map_err(V1Error::from)?;
        let backend = streamed.backend.clone();
        let events = chunks(streamed, reservation, include_usage);
        let mut response = Sse::new(events).keep_alive(KeepAlive::default()).into_response();
        set_header(&mut response, "x-castwork-cache", "off");
        set_header(&mut response, "x-castwork-backend", &backend);
        return Ok(response);
    }
    let answer = match inference.chat(call).await {
        Ok(answer) => answer,
        Err(err) => {
            reservation.settle(0);
            return Err(err.into());
        }
    };
    reservation.settle(u64::from(answer.response.usage.total()));
    let completion = ChatCompletion {
        id: completion_id(),
        object: "chat.completion",
        created: chrono::Utc::now().timestamp(),
        model: answer.model,
        choices: vec![V1Choice {
            index: 0,
            message: V1AnswerMessage { role: "assistant", content: answer.response.text },
            finish_reason: answer.response.finish.as_str(),
        }],
        usage: answer.response.usage.into(),
    };
    let mut response = Json(completion).into_response();
    set_header(&mut response, "x-castwork-cache", answer.cache.as_str());
    set_header(&mut response, "x-castwork-backend", &answer.backend);
    Ok(response)
}

fn set_header(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

/// The SSE events of a streamed answer.
fn chunks(
    streamed: crate::inference::Streamed,
    reservation: Reservation,
    include_usage: bool,
) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    let id = completion_id();
    let created = chrono::Utc::now().timestamp();
    let model = streamed.model;
    let chunk = move |delta: serde_json::Value, finish: Option<&str>| {
        serde_json::json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let opening = chunk(serde_json::json!({"role": "assistant", "content": ""}), None);
    let state = (streamed.stream, Some(reservation), chunk, false);
    let rest = futures::stream::unfold(state, move |(mut stream, mut reservation, chunk, done)| async move {
        if done {
            return None;
        }
        let mut events = Vec::new();
        let mut finished = false;
        match stream.next().await {
            Some(Ok(Delta::Text(text))) => {
                events.push(data(&chunk(serde_json::json!({"content": text}), None)))
            }
            Some(Ok(Delta::Done { finish, usage })) => {
                if let Some(r) = reservation.take() {
                    r.settle(u64::from(usage.total()));
                }
                events.push(data(&chunk(serde_json::json!({}), Some(finish.as_str()))));
                if include_usage {
                    let mut last = chunk(serde_json::json!({}), None);
                    last["choices"] = serde_json::json!([]);
                    last["usage"] = serde_json::to_value(V1Usage::from(usage)).unwrap_or_default();
                    events.push(data(&last));
                }
                events.push(Event::default().data("[DONE]"));
                finished = true;
            }
            Some(Err(err)) => {
                events.push(data(&stream_error(&err)));
                finished = true;
            }
            None => {
                events
                    .push(data(&stream_error(&BackendError::Truncated("the answer ended early".to_owned()))));
                finished = true;
            }
        }
        Some((futures::stream::iter(events.into_iter().map(Ok)), (stream, reservation, chunk, finished)))
    });
    futures::stream::once(async move { Ok(data(&opening)) }).chain(rest.flatten())
}

fn data(value: &serde_json::Value) -> Event {
    Event::default().data(value.to_string())
}

/// The last event of a stream that failed after its first token.
fn stream_error(err: &BackendError) -> serde_json::Value {
    serde_json::json!({"error": {"message": err.to_string(), "type": "server_error", "param": null, "code": err.kind()}})
}

/// `POST /v1/embeddings`.
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    operation_id = "createEmbeddings",
    tag = "inference",
    request_body = EmbeddingRequest,
    responses(
        (status = 200, description = "One L2-normalised vector per input, in order.", body = EmbeddingList),
        (status = 400, description = "A bound or value refused (`param` names the field).", body = V1ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 404, description = "Unknown model (`model_not_found`).", body = V1ErrorBody),
        (status = 429, description = "Overloaded, or the token budget is spent; see `Retry-After`.", body = V1ErrorBody),
        (status = 503, description = "No backend can serve the model now, with `Retry-After`.", body = V1ErrorBody),
        (status = 504, description = "No answer in time.", body = V1ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn embeddings(
    State(state): State<AppState>,
    viewer: Result<Viewer, ApiError>,
    body: Bytes,
) -> Result<Json<EmbeddingList>, V1Error> {
    let who = authorized(viewer)?;
    let request: EmbeddingRequest = parse(&body)?;
    let s = &state.settings().inference;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(V1Error::invalid(
                "encoding_format",
                "unsupported_parameter",
                "encoding_format must be \"float\" or \"base64\"",
            ));
        }
    };
    let texts = match request.input {
        EmbeddingInput::One(text) => vec![text],
        EmbeddingInput::Many(texts) => texts,
    };
    if texts.is_empty() || texts.len() > s.max_embedding_inputs {
        return Err(V1Error::invalid(
            "input",
            "invalid_input",
            format!("input must hold 1 to {} texts (inference.max_embedding_inputs)", s.max_embedding_inputs),
        ));
    }
    if let Some(i) = texts.iter().position(|t| t.chars().count() > s.max_embedding_chars) {
        return Err(V1Error::invalid(
            "input",
            "context_length_exceeded",
            format!(
                "input[{i}] is longer than {} characters (inference.max_embedding_chars)",
                s.max_embedding_chars
            ),
        ));
    }
    let chars: usize = texts.iter().map(|t| t.chars().count()).sum();
    let reservation = reserve(&state, &who, budget::estimate(chars, 0))?;
    let result = state.runtime().inference.embed(&request.model, texts).await;
    let embeddings = match result {
        Ok(e) => e,
        Err(err) => {
            reservation.settle(0);
            return Err(err.into());
        }
    };
    reservation.settle(u64::from(embeddings.prompt_tokens));
    let data = embeddings
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, embedding)| V1Embedding {
            object: "embedding",
            index,
            embedding: Vector::encode(embedding, base64),
        })
        .collect();
    let tokens = embeddings.prompt_tokens;
    Ok(Json(EmbeddingList {
        object: "list",
        data,
        model: request.model,
        usage: V1EmbeddingUsage { prompt_tokens: tokens, total_tokens: tokens },
    }))
}

/// `GET /v1/models`.
#[utoipa::path(
    get,
    path = "/v1/models",
    operation_id = "listModels",
    tag = "inference",
    responses(
        (status = 200, description = "The models this node routes, chat and embedding.", body = ModelList),
        (status = 401, response = Unauthenticated),
    ),
    security(("bearer" = [])),
)]
pub async fn models(
    State(state): State<AppState>,
    viewer: Result<Viewer, ApiError>,
) -> Result<Json<ModelList>, V1Error> {
    authorized(viewer)?;
    let created = state.started_unix();
    let data = state
        .runtime()
        .inference
        .models()
        .into_iter()
        .map(|m| V1Model {
            id: m.id,
            object: "model",
            created,
            owned_by: "castwork",
            kind: m.kind,
            backends: m.backends,
        })
        .collect();
    Ok(Json(ModelList { object: "list", data }))
}
