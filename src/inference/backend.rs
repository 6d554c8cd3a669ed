//! [`LlmBackend`]: what castwork needs of an inference backend, and the types
//! that cross it. Two implementations: [`super::local`] (candle, in process) and
//! [`super::openai`] (any OpenAI-compatible server). Neither retries: retries,
//! fallbacks and breakers belong to the pool and the router above them
//! (docs/adr/0010-inference-backends.md).

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into() }
    }
}

/// How tokens are chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// 0: greedy (deterministic).
    pub temperature: f32,
    /// Nucleus sampling; `None` or 1: off.
    pub top_p: Option<f32>,
    /// Seed of the sampler: with it, sampling is reproducible.
    pub seed: Option<u64>,
    /// Most tokens generated.
    pub max_tokens: u32,
    /// The text ends before the first of these (which is not included).
    pub stop: Vec<String>,
}

impl Sampling {
    /// Greedy decoding of at most `max_tokens`.
    pub fn greedy(max_tokens: u32) -> Self {
        Self { temperature: 0.0, top_p: None, seed: None, max_tokens, stop: Vec::new() }
    }

    /// Whether the same request always gives the same answer (so it may be cached).
    pub fn is_deterministic(&self) -> bool {
        self.temperature <= 0.0 || self.seed.is_some()
    }
}

/// A generation request, as a backend receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The backend's own name of the model.
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub sampling: Sampling,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// The model ended its answer, or a stop sequence was met.
    Stop,
    /// `max_tokens` was reached.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// Tokens a request consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

impl Usage {
    pub fn total(&self) -> u32 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// A whole answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    pub text: String,
    pub finish: FinishReason,
    pub usage: Usage,
}

/// One event of a streamed answer: text as it is generated, then exactly one
/// `Done`. A stream that ends without `Done` was cut short.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    Text(String),
    Done { finish: FinishReason, usage: Usage },
}

/// A streamed answer. Dropping it cancels the generation.
pub type DeltaStream = Pin<Box<dyn Stream<Item = Result<Delta, BackendError>> + Send>>;

/// Vectors for texts, in their order.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    /// Tokens read.
    pub prompt_tokens: u32,
}

/// What a model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Chat,
    Embedding,
}

/// A model a backend serves, by the backend's own name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub id: String,
    pub kind: ModelKind,
}

/// Why a backend call failed, classified for the router: whether the request
/// may move to another backend, and whether the breaker counts it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// Worth trying again elsewhere: a 5xx, a refused or reset connection, a lost worker.
    #[error("backend unavailable: {0}")]
    Retryable(String),
    /// The backend asked to slow down (429), possibly saying for how long.
    #[error("backend rate limited{}", retry_after_text(*.retry_after))]
    RateLimited { retry_after: Option<Duration>, message: String },
    /// No answer (or no first token) in time.
    #[error("backend timed out: {0}")]
    Timeout(String),
    /// A stream ended without its finish (`finish_reason` / `[DONE]`).
    #[error("the answer stream was cut short: {0}")]
    Truncated(String),
    /// The request itself is wrong (a 4xx other than 429, an unknown model,
    /// context too long): another backend would refuse it too.
    #[error("backend refused the request: {0}")]
    Fatal(String),
}

fn retry_after_text(after: Option<Duration>) -> String {
    after.map(|d| format!(" (retry after {} ms)", d.as_millis())).unwrap_or_default()
}

impl BackendError {
    /// Whether the request may be tried on the next backend (before its first token).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Fatal(_))
    }

    /// Whether the backend's breaker counts it as a failure (a bad request is the
    /// client's fault, not the backend's).
    pub fn counts_against_backend(&self) -> bool {
        !matches!(self, Self::Fatal(_))
    }

    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Retryable(_) => "retryable",
            Self::RateLimited { .. } => "rate_limited",
            Self::Timeout(_) => "timeout",
            Self::Truncated(_) => "truncated",
            Self::Fatal(_) => "fatal",
        }
    }
}

/// An inference backend. Implementations never retry and never sleep on a
/// rate limit: they classify what went wrong and return it.
pub trait LlmBackend: Send + Sync + 'static {
    /// The backend's name (`local`, or an `[[inference.backends]]` name).
    fn name(&self) -> &str;

    /// Generates a streamed answer. Dropping the stream stops the generation.
    fn chat_stream(&self, request: ChatRequest) -> BoxFuture<'_, Result<DeltaStream, BackendError>>;

    /// Generates a whole answer (by default, the stream collected).
    fn chat(&self, request: ChatRequest) -> BoxFuture<'_, Result<ChatResponse, BackendError>> {
        Box::pin(async move { collect(self.chat_stream(request).await?).await })
    }

    /// One vector per text, in order (one forward pass where the backend can).
    fn embed(&self, model: &str, texts: Vec<String>) -> BoxFuture<'_, Result<Embeddings, BackendError>>;

    /// The models it serves now, by its own names.
    fn models(&self) -> BoxFuture<'_, Result<Vec<ModelInfo>, BackendError>>;
}

impl fmt::Debug for dyn LlmBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LlmBackend({})", self.name())
    }
}

/// Collects a stream into a whole answer; a stream that ends without `Done` is
/// [`BackendError::Truncated`].
pub async fn collect(mut stream: DeltaStream) -> Result<ChatResponse, BackendError> {
    let mut text = String::new();
    while let Some(delta) = stream.next().await {
        match delta? {
            Delta::Text(piece) => text.push_str(&piece),
            Delta::Done { finish, usage } => return Ok(ChatResponse { text, finish, usage }),
        }
    }
    Err(BackendError::Truncated("the stream ended before its finish".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_without_its_finish_is_truncated_and_a_whole_one_collects() {
        let cut: DeltaStream = Box::pin(futures::stream::iter(vec![Ok(Delta::Text("Par".into()))]));
        assert!(matches!(collect(cut).await, Err(BackendError::Truncated(_))));
        let usage = Usage { prompt_tokens: 3, completion_tokens: 2 };
        let whole: DeltaStream = Box::pin(futures::stream::iter(vec![
            Ok(Delta::Text("Par".into())),
            Ok(Delta::Text("is".into())),
            Ok(Delta::Done { finish: FinishReason::Stop, usage }),
        ]));
        let answer = collect(whole).await.expect("whole stream");
        assert_eq!(
            (answer.text.as_str(), answer.finish, answer.usage.total()),
            ("Paris", FinishReason::Stop, 5)
        );
    }

    #[test]
    fn only_a_bad_request_is_final() {
        assert!(!BackendError::Fatal("x".into()).is_retryable());
        for e in [
            BackendError::Retryable("x".into()),
            BackendError::RateLimited { retry_after: None, message: "x".into() },
            BackendError::Timeout("x".into()),
            BackendError::Truncated("x".into()),
        ] {
            assert!(e.is_retryable() && e.counts_against_backend(), "{e}");
        }
    }
}
