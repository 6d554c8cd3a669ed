//! The `local` backend: SmolLM2-135M-Instruct (GGUF, candle's quantized llama)
//! and all-MiniLM-L6-v2 (candle's BERT) in process, on dedicated compute threads.
//!
//! - `chat_tokenizer`: SmolLM2's BPE tokenizer built from the GGUF's metadata, and its ChatML prompt.
//! - `chat`: the chat model and one generation, decoded token by token.
//! - `text`: streamed text: whole characters only, stop sequences across tokens.
//! - `embed`: the embedding model, one forward pass per batch.
//! - `compute`: the compute threads and their queue ([`LocalCompute`]): one
//!   thread per generation (`inference.local.threads`), one for embeddings.
//!
//! The model files live under `inference.local.models_dir`, where
//! `scripts/fetch-models.sh` puts them ([`CHAT_MODEL_FILE`], [`EMBEDDING_MODEL_FILES`]).
//! With only one model's files present, the backend serves that model alone
//! and [`LocalBackend::missing`] names the rest; with none, it does not load.

mod chat;
mod chat_tokenizer;
mod compute;
mod embed;
#[cfg(test)]
mod tests;
mod text;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

pub use self::chat::ChatWeights;
use self::chat::{ChatModel, Generated};
use self::compute::ComputePool;
pub use self::compute::LocalCompute;
use self::embed::EmbeddingModel;
use super::backend::{
    BackendError, ChatRequest, Delta, DeltaStream, Embeddings, LlmBackend, ModelInfo, ModelKind, Sampling,
};
use crate::config::{LocalSettings, env};

/// Public name of the local chat model.
pub const CHAT_MODEL: &str = "smollm2-135m-instruct";
/// Public name of the local embedding model.
pub const EMBEDDING_MODEL: &str = "all-minilm-l6-v2";
/// The command that fetches the model files.
pub const FETCH_COMMAND: &str = "scripts/fetch-models.sh";
/// The chat model's file, under the models directory.
pub const CHAT_MODEL_FILE: &str = "smollm2-135m-instruct/model.Q4_1.gguf";
/// The embedding model's files, under the models directory.
pub const EMBEDDING_MODEL_FILES: [&str; 3] =
    ["all-minilm-l6-v2/model.safetensors", "all-minilm-l6-v2/config.json", "all-minilm-l6-v2/tokenizer.json"];

/// Text deltas a generation may run ahead of its reader; past it, the compute
/// thread waits (a reader that never reads is dropped by its request timeout,
/// which ends the generation).
const STREAM_BUFFER: usize = 32;

/// Threads for embedding batches: one, as the pool above batches concurrent requests.
const EMBEDDING_THREADS: usize = 1;

/// Why the local models could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LocalLoadError {
    #[error("model files missing in {dir}: {missing}; run {FETCH_COMMAND}", dir = .dir.display(), missing = .missing.join(", "))]
    Missing { dir: PathBuf, missing: Vec<String> },
    #[error("failed to load {path}: {reason}", path = .path.display())]
    Load { path: PathBuf, reason: String },
}

/// The local backend: the models found in the models directory, and the
/// compute threads that run them.
pub struct LocalBackend {
    chat: Option<Arc<ChatModel>>,
    embedding: Option<Arc<EmbeddingModel>>,
    missing: Vec<String>,
    /// Generations, one per thread.
    chat_pool: ComputePool,
    /// Embedding batches, apart: a search's query vector never waits for a
    /// generation to end (the pool above joins concurrent texts into one batch).
    embedding_pool: ComputePool,
}

impl LocalBackend {
    /// Loads the models found in `settings.models_dir` (the chat model
    /// requantised to Q8_0). Blocking (a second or two): call it off the async runtime.
    pub fn load(settings: &LocalSettings) -> Result<Self, LocalLoadError> {
        Self::load_with(settings, ChatWeights::default())
    }

    /// [`Self::load`], choosing how the chat model's weights are held.
    pub fn load_with(settings: &LocalSettings, weights: ChatWeights) -> Result<Self, LocalLoadError> {
        let dir = &settings.models_dir;
        let missing = missing_files(dir);
        let has = |files: &[&str]| files.iter().all(|f| !missing.iter().any(|m| m == f));
        let (has_chat, has_embedding) = (has(&[CHAT_MODEL_FILE]), has(&EMBEDDING_MODEL_FILES));
        if !has_chat && !has_embedding {
            return Err(LocalLoadError::Missing { dir: dir.clone(), missing });
        }
        if !missing.is_empty() {
            tracing::warn!(
                dir = %dir.display(),
                missing = missing.join(", "),
                fetch = FETCH_COMMAND,
                "some local model files are missing; serving the models that are present"
            );
        }
        let chat = if has_chat {
            let path = dir.join(CHAT_MODEL_FILE);
            let model =
                ChatModel::load(&path, weights).map_err(|reason| LocalLoadError::Load { path, reason })?;
            Some(Arc::new(model))
        } else {
            None
        };
        let embedding = if has_embedding {
            let model_dir = dir.join(EMBEDDING_MODEL);
            let model = EmbeddingModel::load(&model_dir)
                .map_err(|(file, reason)| LocalLoadError::Load { path: model_dir.join(file), reason })?;
            Some(Arc::new(model))
        } else {
            None
        };
        check_kernel_threads();
        let threads = match settings.threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let start = |name, threads| {
            ComputePool::start(name, threads)
                .map_err(|reason| LocalLoadError::Load { path: dir.clone(), reason })
        };
        let chat_pool = start("infer", threads)?;
        let embedding_pool = start("embed", EMBEDDING_THREADS)?;
        tracing::info!(
            threads,
            chat = chat.is_some(),
            embeddings = embedding.is_some(),
            "local inference backend ready"
        );
        Ok(Self { chat, embedding, missing, chat_pool, embedding_pool })
    }

    /// The models served, by public name.
    pub fn served(&self) -> Vec<ModelInfo> {
        let chat = self.chat.as_ref().map(|_| ModelInfo { id: CHAT_MODEL.to_owned(), kind: ModelKind::Chat });
        let embedding = self
            .embedding
            .as_ref()
            .map(|_| ModelInfo { id: EMBEDDING_MODEL.to_owned(), kind: ModelKind::Embedding });
        chat.into_iter().chain(embedding).collect()
    }

    /// Model files that were missing at load (their models are not served).
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// The generation threads: how many (generations decoding at once), busy,
    /// queued, cancelled.
    pub fn compute(&self) -> LocalCompute {
        self.chat_pool.compute().clone()
    }

    /// The embedding thread: busy, queued.
    pub fn embedding_compute(&self) -> LocalCompute {
        self.embedding_pool.compute().clone()
    }

    /// Tokens of prompt and answer together the chat model reads, if loaded.
    pub fn chat_context(&self) -> Option<usize> {
        self.chat.as_ref().map(|chat| chat.context())
    }

    fn chat_model(&self, model: &str) -> Result<&Arc<ChatModel>, BackendError> {
        match (&self.chat, model) {
            (Some(chat), CHAT_MODEL) => Ok(chat),
            (None, CHAT_MODEL) => Err(BackendError::Fatal(format!(
                "model {CHAT_MODEL} is not loaded: its file is missing; run {FETCH_COMMAND}"
            ))),
            _ => Err(unknown_model(model)),
        }
    }

    fn embedding_model(&self, model: &str) -> Result<&Arc<EmbeddingModel>, BackendError> {
        match (&self.embedding, model) {
            (Some(embedding), EMBEDDING_MODEL) => Ok(embedding),
            (None, EMBEDDING_MODEL) => Err(BackendError::Fatal(format!(
                "model {EMBEDDING_MODEL} is not loaded: its files are missing; run {FETCH_COMMAND}"
            ))),
            _ => Err(unknown_model(model)),
        }
    }
}

impl LlmBackend for LocalBackend {
    fn name(&self) -> &str {
        "local"
    }

    /// Queues the generation, and answers once a compute thread has taken it
    /// and read its prompt: a prompt too long for the model is refused here,
    /// with [`BackendError::Fatal`].
    fn chat_stream(&self, request: ChatRequest) -> BoxFuture<'_, Result<DeltaStream, BackendError>> {
        Box::pin(async move {
            let chat = Arc::clone(self.chat_model(&request.model)?);
            check_sampling(&request.sampling)?;
            let (deltas, receiver) = mpsc::channel(STREAM_BUFFER);
            let (admitted, admission) = oneshot::channel();
            submit(&self.chat_pool, move |compute| {
                run_generation(&chat, &request, admitted, &deltas, compute)
            })?;
            admission.await.map_err(|_| lost_thread())??;
            let stream = futures::stream::unfold(receiver, |mut receiver| async move {
                receiver.recv().await.map(|delta| (delta, receiver))
            });
            Ok(Box::pin(stream) as DeltaStream)
        })
    }

    fn embed(&self, model: &str, texts: Vec<String>) -> BoxFuture<'_, Result<Embeddings, BackendError>> {
        let model = self.embedding_model(model).map(Arc::clone);
        Box::pin(async move {
            let model = model?;
            if texts.is_empty() {
                return Ok(Embeddings { vectors: Vec::new(), prompt_tokens: 0 });
            }
            let (reply, answer) = oneshot::channel();
            submit(&self.embedding_pool, move |_| {
                if !reply.is_closed() {
                    let result = model
                        .embed(&texts)
                        .map_err(|e| BackendError::Retryable(format!("{EMBEDDING_MODEL} failed: {e}")));
                    let _ = reply.send(result);
                }
            })?;
            answer.await.map_err(|_| lost_thread())?
        })
    }

    fn models(&self) -> BoxFuture<'_, Result<Vec<ModelInfo>, BackendError>> {
        Box::pin(async move { Ok(self.served()) })
    }
}

fn submit(pool: &ComputePool, job: impl FnOnce(&LocalCompute) + Send + 'static) -> Result<(), BackendError> {
    if pool.submit(Box::new(job)) { Ok(()) } else { Err(lost_thread()) }
}

/// One generation, on a compute thread: the prompt is read and admitted (or
/// refused), then decoded until done or until its reader goes away.
fn run_generation(
    chat: &ChatModel,
    request: &ChatRequest,
    admitted: oneshot::Sender<Result<(), BackendError>>,
    deltas: &mpsc::Sender<Result<Delta, BackendError>>,
    compute: &LocalCompute,
) {
    if admitted.is_closed() {
        // the caller gave up while the job was queued
        compute.count_cancelled();
        return;
    }
    let prompt = match chat.prompt(&request.messages) {
        Ok(prompt) => prompt,
        Err(refused) => {
            let _ = admitted.send(Err(refused));
            return;
        }
    };
    if admitted.send(Ok(())).is_err() {
        compute.count_cancelled();
        return;
    }
    match chat.generate(&prompt, &request.sampling, deltas) {
        Ok(Generated::Done { finish, usage }) => {
            let _ = deltas.blocking_send(Ok(Delta::Done { finish, usage }));
        }
        Ok(Generated::Cancelled) => compute.count_cancelled(),
        Err(failed) => {
            tracing::warn!(error = %failed, "local generation failed");
            let _ = deltas.blocking_send(Err(failed));
        }
    }
}

/// Warns unless candle's kernels run on the thread that calls them. candle 0.11
/// splits each CPU kernel over a process-wide pool (`CANDLE_NUM_THREADS`, float
/// matrix products over rayon's, `RAYON_NUM_THREADS`; both default to one thread
/// per core) that serves one caller at a time and spins while waiting: concurrent
/// generations would take turns, at twice the CPU per token, and on a busy
/// machine decoding is about nine times slower (docs/BENCHMARKS.md). candle
/// reads them once, at its first kernel call.
fn check_kernel_threads() {
    let unpinned: Vec<String> = [env::CANDLE_NUM_THREADS, env::RAYON_NUM_THREADS]
        .into_iter()
        .filter_map(|name| match std::env::var(name) {
            Ok(value) if value == "1" => None,
            Ok(value) => Some(format!("{name}={value}")),
            Err(_) => Some(format!("{name} unset")),
        })
        .collect();
    if !unpinned.is_empty() {
        tracing::warn!(
            variables = unpinned.join(", "),
            "candle's kernels will use a shared thread pool: concurrent generations take turns; \
             set CANDLE_NUM_THREADS=1 and RAYON_NUM_THREADS=1 for one core per generation"
        );
    }
}

/// Refuses sampling values the sampler cannot use.
fn check_sampling(sampling: &Sampling) -> Result<(), BackendError> {
    if !sampling.temperature.is_finite() || sampling.temperature < 0.0 {
        return Err(BackendError::Fatal("temperature must be a finite number, 0 or more".to_owned()));
    }
    if sampling.top_p.is_some_and(|p| !p.is_finite() || p <= 0.0 || p > 1.0) {
        return Err(BackendError::Fatal("top_p must be above 0 and at most 1".to_owned()));
    }
    Ok(())
}

fn unknown_model(model: &str) -> BackendError {
    BackendError::Fatal(format!(
        "unknown model {model:?}: the local backend serves {CHAT_MODEL} and {EMBEDDING_MODEL}"
    ))
}

fn lost_thread() -> BackendError {
    BackendError::Retryable("the local compute thread failed".to_owned())
}

/// The model files not present in `dir`, as paths under it.
pub fn missing_files(dir: &Path) -> Vec<String> {
    std::iter::once(CHAT_MODEL_FILE)
        .chain(EMBEDDING_MODEL_FILES)
        .filter(|f| !dir.join(f).is_file())
        .map(str::to_owned)
        .collect()
}

/// Loads the local backend as the pool holds it. Blocking: call it off the async runtime.
pub fn load_backend(settings: &LocalSettings) -> Result<Arc<dyn LlmBackend>, LocalLoadError> {
    Ok(Arc::new(LocalBackend::load(settings)?))
}
