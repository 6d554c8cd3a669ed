//! Inference: generation and embeddings behind the [`backend::LlmBackend`] trait.
//!
//! ```text
//! Inference (handle) ─ route: model → deployments (fewest outstanding, cooldown
//!                      skipped) → fallback models' deployments
//!   └─ Deployment (one per backend): breaker, bounded queue, embedding batcher
//!        └─ InferenceActors (the `inference-<backend>` supervisor's workers)
//! ```
//!
//! A request waits in its deployment's bounded queue for an InferenceActor; a
//! full queue sheds it at once (429 with `Retry-After`). Before the first token a
//! retryable failure, a timeout or an open breaker moves it to the next
//! deployment; after tokens were sent a failure ends the stream with an error.
//! Deterministic chat answers are cached through the cache's shards.

pub mod backend;
mod batch;
pub mod budget;
pub mod local;
pub mod openai;
mod pool;
pub mod probe;
mod router;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tree;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use backend::{ChatMessage, ChatResponse, DeltaStream, Embeddings, ModelKind, Role, Sampling};
pub use router::Inference;

use backend::BackendError;

/// A chat request, by public model name.
#[derive(Debug, Clone)]
pub struct ChatCall {
    /// Public model name (`GET /v1/models`).
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub sampling: Sampling,
    /// Whether a deterministic answer may come from, and go to, the response cache.
    pub cache: CachePolicy,
}

/// Whether the response cache is consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    Use,
    /// `Cache-Control: no-cache`: generate anew (and store the answer).
    Bypass,
}

/// Where an answer came from, said in the `x-castwork-cache` response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    /// Asked not to read the cache.
    Bypass,
    /// Not cacheable (sampling without a seed, a stream) or no cache on this node.
    Off,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
            Self::Off => "off",
        }
    }
}

/// A whole answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub response: ChatResponse,
    /// The public model that answered (a fallback's, when one did).
    pub model: String,
    /// The backend that answered.
    pub backend: String,
    pub cache: CacheStatus,
}

/// A streamed answer: its first event has arrived (so no fallback is possible any
/// more). Dropping the stream cancels the generation.
pub struct Streamed {
    pub model: String,
    pub backend: String,
    pub stream: DeltaStream,
}

/// A model as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicModel {
    pub id: String,
    pub kind: ModelKind,
    /// Backends that serve it, in configuration order.
    pub backends: Vec<String>,
}

/// Why an inference request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InferenceError {
    /// `inference.enabled = false`.
    #[error("inference is disabled on this node")]
    Disabled,
    /// No backend serves this model name.
    #[error("unknown model {0:?}; GET /v1/models lists the models")]
    UnknownModel(String),
    /// The model exists but does something else (an embedding model asked to chat).
    #[error("model {model:?} is not a {wanted} model")]
    WrongKind { model: String, wanted: &'static str },
    /// Every deployment's queue is full: come back after `retry_after`.
    #[error("inference is busy; retry after {} s", .retry_after.as_secs().max(1))]
    Shed { retry_after: Duration },
    /// No deployment can serve now (breakers open, models not loaded, backends down).
    #[error("no inference backend can serve {model:?} now: {reason}")]
    Unavailable { model: String, reason: String, retry_after: Duration },
    /// No answer within the request's deadline or time-to-first-token limit.
    #[error("inference timed out: {0}")]
    Timeout(String),
    /// The backend refused the request itself (it would fail anywhere).
    #[error("{0}")]
    Rejected(String),
    /// The last backend tried failed and no other was left.
    #[error("inference failed: {0}")]
    Failed(BackendError),
}

impl InferenceError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::UnknownModel(_) => "unknown_model",
            Self::WrongKind { .. } => "wrong_kind",
            Self::Shed { .. } => "shed",
            Self::Unavailable { .. } => "unavailable",
            Self::Timeout(_) => "timeout",
            Self::Rejected(_) => "rejected",
            Self::Failed(_) => "failed",
        }
    }
}
