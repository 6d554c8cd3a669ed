//! `[inference]`: the models, the backends behind them, the pools, the bounds on
//! what a client may ask, and the per-user token budgets.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{BreakerSettings, ConfigError, Secret};

/// `[inference]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceSettings {
    /// Serves inference at all; false: `/v1/*` and the Explore summaries answer 503.
    pub enabled: bool,
    /// Public name of the chat model Explore's summaries use.
    pub chat_model: String,
    /// Public name of the embedding model semantic search and related items use.
    pub embedding_model: String,
    /// A request (queue wait included) that has not finished by then fails with a timeout.
    pub request_timeout_secs: u64,
    /// A generation that has not produced its first token by then fails with a timeout
    /// (and, when nothing was sent yet, moves to the next backend).
    pub first_token_timeout_secs: u64,
    /// What `Retry-After` says when a request is shed or every backend is down.
    pub retry_after_secs: u64,
    /// Bounds on one chat request: messages, characters of all messages, `max_tokens`.
    pub max_messages: usize,
    pub max_input_chars: usize,
    pub max_tokens_limit: u32,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: u32,
    /// Bounds on one embeddings request: inputs and characters of each.
    pub max_embedding_inputs: usize,
    pub max_embedding_chars: usize,
    /// Concurrent embedding requests are joined into one forward pass of at most
    /// this many texts, waiting at most `embed_batch_wait_ms` for company.
    pub embed_batch_max: usize,
    pub embed_batch_wait_ms: u64,
    /// Deterministic answers (temperature 0 or a fixed seed) are cached this long (0: not cached).
    pub cache_ttl_secs: u64,
    /// A deployment that failed is skipped by routing for this long.
    pub cooldown_ms: u64,
    /// Ordered fallbacks by public model name: `"gpt-4o" = ["smollm2-135m-instruct"]`.
    pub fallbacks: BTreeMap<String, Vec<String>>,
    /// The in-process models.
    pub local: LocalSettings,
    /// Per-user token budgets.
    pub budget: BudgetSettings,
    /// OpenAI-compatible servers (llama.cpp's server, vLLM, Ollama, OpenAI).
    pub backends: Vec<BackendSettings>,
}

/// `[inference.local]`: SmolLM2-135M-Instruct and all-MiniLM-L6-v2 in process.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSettings {
    /// Serve the local models (when their files are present).
    pub enabled: bool,
    /// Directory `scripts/fetch-models.sh` fills.
    pub models_dir: PathBuf,
    /// Compute threads (0: one per core); never tokio's workers.
    pub threads: usize,
    /// InferenceActors of the local backend: generations decoding at once.
    pub workers: usize,
    /// Requests waiting for a local worker; past it: 429 with `Retry-After`.
    pub queue_capacity: usize,
    /// The breaker in front of the local backend.
    pub breaker: BreakerSettings,
}

/// `[inference.budget]`: tokens (prompt and completion) a user may spend per
/// minute, by role; 0: no limit.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSettings {
    pub viewer_tokens_per_minute: u64,
    pub editor_tokens_per_minute: u64,
    pub admin_tokens_per_minute: u64,
}

/// One `[[inference.backends]]` entry: an OpenAI-compatible server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSettings {
    /// Unique name (`[a-z0-9-]`), shown in `/health`, the tree and metrics.
    pub name: String,
    /// `http://` or `https://` base URL including `/v1`, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// Bearer key; empty: none sent.
    #[serde(default)]
    pub api_key: Secret,
    /// Public model name → the server's model name; a model served here is a
    /// deployment of that public name.
    pub models: BTreeMap<String, String>,
    /// Public names (among `models`) that are embedding models.
    #[serde(default)]
    pub embedding_models: Vec<String>,
    /// InferenceActors (requests in flight to this server).
    #[serde(default = "default_backend_workers")]
    pub workers: usize,
    /// Requests waiting for one of them; past it: shed.
    #[serde(default = "default_backend_queue")]
    pub queue_capacity: usize,
    /// Connect timeout.
    #[serde(default = "default_connect_ms")]
    pub connect_timeout_ms: u64,
    /// The breaker in front of this server (default: `[inference.local.breaker]`'s values).
    #[serde(default)]
    pub breaker: Option<BreakerSettings>,
}

fn default_backend_workers() -> usize {
    32
}
fn default_backend_queue() -> usize {
    256
}
fn default_connect_ms() -> u64 {
    2000
}

impl InferenceSettings {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
    pub fn first_token_timeout(&self) -> Duration {
        Duration::from_secs(self.first_token_timeout_secs)
    }

    /// Checks the section; the error names the key at fault.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        fn bad(key: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid { key, reason: reason.into() })
        }
        if self.chat_model.is_empty() {
            return bad("inference.chat_model", "must not be empty");
        }
        if self.embedding_model.is_empty() {
            return bad("inference.embedding_model", "must not be empty");
        }
        if self.request_timeout_secs == 0 {
            return bad("inference.request_timeout_secs", "must be at least 1");
        }
        if self.first_token_timeout_secs == 0 || self.first_token_timeout_secs > self.request_timeout_secs {
            return bad(
                "inference.first_token_timeout_secs",
                "must be between 1 and inference.request_timeout_secs",
            );
        }
        if !(1..=1000).contains(&self.max_messages) {
            return bad("inference.max_messages", "must be between 1 and 1000");
        }
        if !(1..=1_000_000).contains(&self.max_input_chars) {
            return bad("inference.max_input_chars", "must be between 1 and 1000000");
        }
        if !(1..=32_768).contains(&self.max_tokens_limit) {
            return bad("inference.max_tokens_limit", "must be between 1 and 32768");
        }
        if self.default_max_tokens == 0 || self.default_max_tokens > self.max_tokens_limit {
            return bad("inference.default_max_tokens", "must be between 1 and inference.max_tokens_limit");
        }
        if !(1..=2048).contains(&self.max_embedding_inputs) {
            return bad("inference.max_embedding_inputs", "must be between 1 and 2048");
        }
        if !(1..=100_000).contains(&self.max_embedding_chars) {
            return bad("inference.max_embedding_chars", "must be between 1 and 100000");
        }
        if !(1..=512).contains(&self.embed_batch_max) {
            return bad("inference.embed_batch_max", "must be between 1 and 512");
        }
        if self.embed_batch_wait_ms > 1000 {
            return bad("inference.embed_batch_wait_ms", "must be at most 1000");
        }
        let local = &self.local;
        if local.threads > 256 {
            return bad("inference.local.threads", "must be at most 256 (0: one per core)");
        }
        if !(1..=64).contains(&local.workers) {
            return bad("inference.local.workers", "must be between 1 and 64");
        }
        if !(1..=100_000).contains(&local.queue_capacity) {
            return bad("inference.local.queue_capacity", "must be between 1 and 100000");
        }
        if let Err(reason) = local.breaker.to_config().validate() {
            return bad("inference.local.breaker", reason);
        }
        let mut names = std::collections::BTreeSet::from(["local".to_owned()]);
        for backend in &self.backends {
            let name = &backend.name;
            if name.is_empty()
                || name.len() > 32
                || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return bad("inference.backends", format!("name {name:?}: 1 to 32 of [a-z0-9-]"));
            }
            if !names.insert(name.clone()) {
                return bad(
                    "inference.backends",
                    format!("name {name:?} is used twice (\"local\" is taken)"),
                );
            }
            match url::Url::parse(&backend.base_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
                _ => {
                    return bad(
                        "inference.backends",
                        format!("{name}: base_url must be an http:// or https:// URL"),
                    );
                }
            }
            if backend.models.is_empty() {
                return bad("inference.backends", format!("{name}: models must name at least one model"));
            }
            if let Some(unknown) = backend.embedding_models.iter().find(|m| !backend.models.contains_key(*m))
            {
                return bad(
                    "inference.backends",
                    format!("{name}: embedding model {unknown:?} is not among its models"),
                );
            }
            if !(1..=4096).contains(&backend.workers) {
                return bad("inference.backends", format!("{name}: workers must be between 1 and 4096"));
            }
            if !(1..=100_000).contains(&backend.queue_capacity) {
                return bad(
                    "inference.backends",
                    format!("{name}: queue_capacity must be between 1 and 100000"),
                );
            }
            if let Some(breaker) = &backend.breaker
                && let Err(reason) = breaker.to_config().validate()
            {
                return bad("inference.backends", format!("{name}: breaker: {reason}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
impl InferenceSettings {
    /// The embedded defaults' `[inference]`: unit tests start from what a node runs with.
    pub fn for_tests() -> Self {
        use figment::providers::Format as _;
        let figment = figment::Figment::new().merge(figment::providers::Toml::string(super::DEFAULTS));
        figment.extract_inner::<InferenceSettings>("inference").expect("the embedded [inference] parses")
    }
}
