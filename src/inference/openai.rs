//! The `openai` backend: any OpenAI-compatible server (llama.cpp's server, vLLM,
//! Ollama, OpenAI) by `base_url`, over reqwest.
//!
//! One [`reqwest::Client`] per backend: HTTP/1.1 with keep-alive, the connect
//! timeout from the settings, redirects not followed, no overall timeout (the pool
//! above imposes its deadlines by dropping the future or the stream, which closes
//! the connection) and no retries. Errors are classified ([`classify`]); they never
//! carry the API key nor more than an excerpt of what the server sent, and no
//! answer is buffered past [`MAX_BODY_BYTES`] (one streamed event: [`MAX_EVENT_BYTES`]).

mod classify;
mod sse;
mod stream;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use futures::future::BoxFuture;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{RequestBuilder, Response, Url};

use self::classify::{ServerError, body_text, classify_status, classify_transport, excerpt};
use self::wire::{ChatBody, Completion, EmbeddingList, EmbeddingsBody, ModelList, finish_reason};
use crate::config::BackendSettings;
use crate::inference::backend::{
    BackendError, ChatRequest, ChatResponse, Delta, DeltaStream, Embeddings, FinishReason, LlmBackend,
    ModelInfo, ModelKind, Usage,
};

/// Largest whole answer read (a completion, embeddings, the model list).
pub const MAX_BODY_BYTES: usize = 16 << 20;
/// Largest single event of a streamed answer.
pub const MAX_EVENT_BYTES: usize = 1 << 20;
/// Most of a refused answer's body read (for its error message).
const MAX_ERROR_BODY_BYTES: usize = 64 << 10;
/// Idle connections are closed after this.
const POOL_IDLE: Duration = Duration::from_secs(60);
/// TCP keep-alive probes on open connections (a vanished server is noticed).
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// Why a backend cannot be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum OpenAiError {
    #[error("{name}: base_url must be an http:// or https:// URL ({reason})")]
    BaseUrl { name: String, reason: String },
    #[error("{name}: failed to build the HTTP client: {reason}")]
    Client { name: String, reason: String },
}

/// A client of one `[[inference.backends]]` server.
pub struct OpenAiBackend {
    name: String,
    client: reqwest::Client,
    /// Sent as `Authorization: Bearer`; `None` when empty.
    api_key: Option<Arc<str>>,
    chat_url: Url,
    embeddings_url: Url,
    models_url: Url,
    /// The server's names of the embedding models.
    embedding_models: HashSet<String>,
}

impl OpenAiBackend {
    /// A client for `settings` (it connects on the first request).
    pub fn new(settings: &BackendSettings) -> Result<Self, OpenAiError> {
        let name = settings.name.clone();
        let bad = |reason: String| OpenAiError::BaseUrl { name: name.clone(), reason };
        let base = Url::parse(&settings.base_url).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none_or(str::is_empty) {
            return Err(bad("not an http(s) URL with a host".to_owned()));
        }
        let base = base.as_str().trim_end_matches('/');
        let url = |path: &str| Url::parse(&format!("{base}/{path}")).map_err(|e| bad(e.to_string()));
        let (chat_url, embeddings_url, models_url) =
            (url("chat/completions")?, url("embeddings")?, url("models")?);
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(settings.workers)
            .tcp_keepalive(TCP_KEEPALIVE)
            .tcp_nodelay(true)
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("castwork/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OpenAiError::Client { name: name.clone(), reason: e.to_string() })?;
        let embedding_models = settings
            .embedding_models
            .iter()
            .filter_map(|public| settings.models.get(public))
            .cloned()
            .collect();
        let api_key = (!settings.api_key.is_empty()).then(|| Arc::from(settings.api_key.expose()));
        Ok(Self { name, client, api_key, chat_url, embeddings_url, models_url, embedding_models })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends a request; an answer other than 2xx is classified.
    async fn send(&self, request: RequestBuilder) -> Result<Response, BackendError> {
        let request = match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        };
        let response = request.send().await.map_err(|e| classify_transport(e, "sending the request"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let headers = response.headers().clone();
        let body = read_prefix(response, MAX_ERROR_BODY_BYTES).await;
        Err(classify_status(status, &headers, body_text(&body)))
    }

    fn redact(&self, error: BackendError) -> BackendError {
        redact(error, self.api_key.as_deref())
    }

    async fn chat_stream_inner(&self, request: ChatRequest) -> Result<DeltaStream, BackendError> {
        let body = ChatBody::new(&request, true);
        let response = self
            .send(self.client.post(self.chat_url.clone()).header(ACCEPT, "text/event-stream").json(&body))
            .await?;
        if is_json(&response) {
            // a server that does not stream answers whole
            let answer = completion(&read_body(response).await?)?;
            let mut items = Vec::with_capacity(2);
            if !answer.text.is_empty() {
                items.push(Ok(Delta::Text(answer.text)));
            }
            items.push(Ok(Delta::Done { finish: answer.finish, usage: answer.usage }));
            return Ok(Box::pin(futures::stream::iter(items)));
        }
        let bytes = response.bytes_stream().map_err(classify::classify_broken_body);
        Ok(stream::deltas(bytes, MAX_EVENT_BYTES, self.api_key.clone()))
    }

    async fn chat_inner(&self, request: ChatRequest) -> Result<ChatResponse, BackendError> {
        let body = ChatBody::new(&request, false);
        let response = self.send(self.client.post(self.chat_url.clone()).json(&body)).await?;
        completion(&read_body(response).await?)
    }

    async fn embed_inner(&self, model: &str, texts: Vec<String>) -> Result<Embeddings, BackendError> {
        if texts.is_empty() {
            return Ok(Embeddings { vectors: Vec::new(), prompt_tokens: 0 });
        }
        let body = EmbeddingsBody { model, input: &texts };
        let response = self.send(self.client.post(self.embeddings_url.clone()).json(&body)).await?;
        let body = read_body(response).await?;
        let list: EmbeddingList = parse(&body, "embeddings")?;
        let count = texts.len();
        if list.data.len() != count {
            return Err(BackendError::Retryable(format!(
                "{} embeddings for {count} inputs",
                list.data.len()
            )));
        }
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; count];
        for (position, item) in list.data.into_iter().enumerate() {
            let index = item.index.unwrap_or(position);
            match vectors.get_mut(index) {
                Some(slot @ None) => *slot = Some(item.embedding),
                _ => return Err(BackendError::Retryable(format!("embedding index {index} is out of place"))),
            }
        }
        let vectors = vectors.into_iter().flatten().collect();
        let prompt_tokens = list.usage.and_then(|u| u.prompt_tokens).unwrap_or(0);
        Ok(Embeddings { vectors, prompt_tokens })
    }

    async fn models_inner(&self) -> Result<Vec<ModelInfo>, BackendError> {
        let response = self.send(self.client.get(self.models_url.clone())).await?;
        let list: ModelList = parse(&read_body(response).await?, "model list")?;
        Ok(list
            .data
            .into_iter()
            .map(|model| {
                let kind = if self.embedding_models.contains(&model.id) {
                    ModelKind::Embedding
                } else {
                    ModelKind::Chat
                };
                ModelInfo { id: model.id, kind }
            })
            .collect())
    }
}

impl LlmBackend for OpenAiBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn chat_stream(&self, request: ChatRequest) -> BoxFuture<'_, Result<DeltaStream, BackendError>> {
        Box::pin(async move { self.chat_stream_inner(request).await.map_err(|e| self.redact(e)) })
    }

    fn chat(&self, request: ChatRequest) -> BoxFuture<'_, Result<ChatResponse, BackendError>> {
        Box::pin(async move { self.chat_inner(request).await.map_err(|e| self.redact(e)) })
    }

    fn embed(&self, model: &str, texts: Vec<String>) -> BoxFuture<'_, Result<Embeddings, BackendError>> {
        let model = model.to_owned();
        Box::pin(async move { self.embed_inner(&model, texts).await.map_err(|e| self.redact(e)) })
    }

    fn models(&self) -> BoxFuture<'_, Result<Vec<ModelInfo>, BackendError>> {
        Box::pin(async move { self.models_inner().await.map_err(|e| self.redact(e)) })
    }
}

/// A whole completion from its body. Without `usage`, the estimate is no prompt
/// tokens and one completion token per 4 bytes of text.
fn completion(body: &[u8]) -> Result<ChatResponse, BackendError> {
    let answer: Completion = parse(body, "completion")?;
    let Some(choice) = answer.choices.into_iter().next() else {
        return Err(match ServerError::parse(body) {
            Some(error) => error.classify_in_stream(),
            None => BackendError::Retryable(format!("a completion without choices: {}", excerpt(body))),
        });
    };
    let text = choice.message.and_then(|m| m.content).unwrap_or_default();
    let finish = choice.finish_reason.as_deref().map(finish_reason).unwrap_or(FinishReason::Stop);
    let usage = answer.usage.map(Usage::from).unwrap_or(Usage {
        prompt_tokens: 0,
        completion_tokens: u32::try_from(text.len().div_ceil(4)).unwrap_or(u32::MAX),
    });
    Ok(ChatResponse { text, finish, usage })
}

/// Parses a 2xx body; what does not parse is the server's fault.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, BackendError> {
    serde_json::from_slice(body).map_err(|error| match ServerError::parse(body) {
        Some(server) => server.classify_in_stream(),
        None => BackendError::Retryable(format!("malformed {what} ({error}): {}", excerpt(body))),
    })
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"))
}

/// The whole body, refused past [`MAX_BODY_BYTES`].
async fn read_body(mut response: Response) -> Result<Vec<u8>, BackendError> {
    let too_large = || BackendError::Retryable(format!("the answer is larger than {MAX_BODY_BYTES} bytes"));
    let announced = response.content_length().unwrap_or(0);
    if announced > MAX_BODY_BYTES as u64 {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(usize::try_from(announced).unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(classify::classify_broken_body)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// At most `limit` bytes of the body (what arrived, if it breaks off).
async fn read_prefix(mut response: Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// `error` with every occurrence of the API key replaced.
fn redact(error: BackendError, api_key: Option<&str>) -> BackendError {
    let Some(key) = api_key.filter(|k| !k.is_empty()) else { return error };
    let clean = |text: String| if text.contains(key) { text.replace(key, "[redacted]") } else { text };
    match error {
        BackendError::Retryable(m) => BackendError::Retryable(clean(m)),
        BackendError::RateLimited { retry_after, message } => {
            BackendError::RateLimited { retry_after, message: clean(message) }
        }
        BackendError::Timeout(m) => BackendError::Timeout(clean(m)),
        BackendError::Truncated(m) => BackendError::Truncated(clean(m)),
        BackendError::Fatal(m) => BackendError::Fatal(clean(m)),
    }
}
