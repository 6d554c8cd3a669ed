//! [`Inference`]: the handle handlers, jobs and Explore use. It routes a request
//! by public model name to a deployment, falls back, sheds, and caches
//! deterministic answers.
//!
//! Routing: the model's deployments by fewest outstanding requests (one cooling
//! down after a failure goes last), then those of each model in its
//! `inference.fallbacks` chain. A deployment whose breaker is open, whose queue is
//! full, or that fails retryably before the first token is passed over for the
//! next one. Once the first token is out the answer is committed to its
//! deployment: a later failure ends the stream with an error event.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::backend::{
    BackendError, ChatRequest, ChatResponse, Delta, DeltaStream, Embeddings, FinishReason, ModelKind, Usage,
};
use super::batch::{Batcher, EmbedAsk, EmbedFailure};
use super::pool::{self, Deployment, Outstanding, Work};
use super::{Answer, CachePolicy, CacheStatus, ChatCall, InferenceError, PublicModel, Streamed};
use crate::cache::format::CachedValue;
use crate::cache::generations::Family;
use crate::cache::handle::{Cache, LoadError, Loader};
use crate::config::InferenceSettings;
use crate::metrics;
use crate::supervision::breaker::Permit;

/// The namespace of the response cache's keys (see [`Family::Namespace`]).
pub const CACHE_NAMESPACE: &str = "inference";

/// Routes inference requests; cheap to clone.
#[derive(Clone)]
pub struct Inference {
    inner: Arc<Inner>,
}

struct Inner {
    enabled: bool,
    settings: InferenceSettings,
    deployments: Vec<Arc<Deployment>>,
    batchers: HashMap<String, Batcher>,
    models: BTreeMap<String, PublicModel>,
    cache: Option<Cache>,
}

/// One place a request may go.
struct Candidate {
    deployment: Arc<Deployment>,
    /// Public name.
    model: String,
    /// The backend's name of it.
    backend_model: String,
}

impl Inference {
    pub(super) fn new(
        settings: &InferenceSettings,
        deployments: Vec<Arc<Deployment>>,
        batchers: HashMap<String, Batcher>,
        cache: Option<Cache>,
    ) -> Self {
        let mut models: BTreeMap<String, PublicModel> = BTreeMap::new();
        for deployment in &deployments {
            for (public, (_, kind)) in deployment.models() {
                let entry = models.entry(public.clone()).or_insert_with(|| PublicModel {
                    id: public.clone(),
                    kind: *kind,
                    backends: Vec::new(),
                });
                entry.backends.push(deployment.name().to_owned());
            }
        }
        let inner = Inner {
            enabled: settings.enabled,
            settings: settings.clone(),
            deployments,
            batchers,
            models,
            cache,
        };
        Self { inner: Arc::new(inner) }
    }

    /// A handle that refuses every request (`inference.enabled = false`).
    pub fn disabled(settings: &InferenceSettings) -> Self {
        let mut settings = settings.clone();
        settings.enabled = false;
        Self::new(&settings, Vec::new(), HashMap::new(), None)
    }

    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// The models clients may ask for.
    pub fn models(&self) -> Vec<PublicModel> {
        self.inner.models.values().cloned().collect()
    }

    /// Public name of the chat model Explore uses (`inference.chat_model`).
    pub fn chat_model(&self) -> &str {
        &self.inner.settings.chat_model
    }

    /// Public name of the embedding model Explore uses (`inference.embedding_model`).
    pub fn embedding_model(&self) -> &str {
        &self.inner.settings.embedding_model
    }

    /// The settings it was built from.
    pub fn settings(&self) -> &InferenceSettings {
        &self.inner.settings
    }

    /// The deployments, one per backend.
    pub fn deployments(&self) -> &[Arc<Deployment>] {
        &self.inner.deployments
    }

    /// What `Retry-After` says.
    pub fn retry_after(&self) -> Duration {
        Duration::from_secs(self.inner.settings.retry_after_secs.max(1))
    }

    /// A whole answer; deterministic ones through the response cache.
    pub async fn chat(&self, call: ChatCall) -> Result<Answer, InferenceError> {
        let ttl = Duration::from_secs(self.inner.settings.cache_ttl_secs);
        let cache = self.inner.cache.as_ref().filter(|_| call.sampling.is_deterministic() && !ttl.is_zero());
        let Some(cache) = cache else {
            let mut answer = self.generate(&call).await?;
            answer.cache =
                if call.cache == CachePolicy::Bypass { CacheStatus::Bypass } else { CacheStatus::Off };
            return Ok(answer);
        };
        let key = cache
            .stamped_key("chat", &[Family::Namespace(CACHE_NAMESPACE.to_owned())], &cache_identity(&call))
            .await;
        if call.cache == CachePolicy::Use
            && let Some(answer) = lookup(cache, &key, ttl).await
        {
            metrics::inference_cache("hit");
            return Ok(answer);
        }
        let mut answer = self.generate(&call).await?;
        store(cache, key, ttl, &answer).await;
        answer.cache =
            if call.cache == CachePolicy::Bypass { CacheStatus::Bypass } else { CacheStatus::Miss };
        metrics::inference_cache(answer.cache.as_str());
        Ok(answer)
    }

    async fn generate(&self, call: &ChatCall) -> Result<Answer, InferenceError> {
        let Streamed { model, backend, stream } = self.chat_stream(call.clone()).await?;
        match super::backend::collect(stream).await {
            Ok(response) => Ok(Answer { response, model, backend, cache: CacheStatus::Off }),
            Err(err) => Err(committed_failure(err)),
        }
    }

    /// A streamed answer, once its first event is in.
    pub async fn chat_stream(&self, call: ChatCall) -> Result<Streamed, InferenceError> {
        let candidates = self.candidates(&call.model, ModelKind::Chat)?;
        let settings = &self.inner.settings;
        let deadline = Instant::now() + settings.request_timeout();
        let mut tried = Tried::default();
        let mut lost_once = false;
        let mut queue: std::collections::VecDeque<Candidate> = candidates.into();
        while let Some(candidate) = queue.pop_front() {
            let deployment = &candidate.deployment;
            let Ok(permit) = deployment.breaker().try_acquire() else {
                tried.open(deployment);
                continue;
            };
            let (events, mut rx) = pool::events();
            let request = ChatRequest {
                model: candidate.backend_model.clone(),
                messages: call.messages.clone(),
                sampling: call.sampling.clone(),
            };
            let first_token_by = (Instant::now() + settings.first_token_timeout()).min(deadline);
            let work = Work::Chat { request, events, first_token_by, deadline };
            if deployment.submit(work).is_err() {
                tried.shed = true;
                continue;
            }
            let held = deployment.hold();
            let started = Instant::now();
            // the worker enforces the first-token limit; this bound only guards a lost reply
            let first = tokio::time::timeout_at(first_token_by + pool::STUCK_GRACE, rx.recv()).await;
            match first {
                Ok(Some(Ok(delta))) => {
                    tried.record_fallback(&call.model, &candidate);
                    let tail = Tail {
                        rx,
                        permit: Some(permit),
                        started,
                        held,
                        model: candidate.model.clone(),
                        sent_any: false,
                    };
                    return Ok(Streamed {
                        model: candidate.model,
                        backend: deployment.name().to_owned(),
                        stream: tail.into_stream(delta),
                    });
                }
                Ok(Some(Err(err))) => {
                    if err.counts_against_backend() {
                        permit.failure(started.elapsed());
                        deployment.cool_down(cooldown_for(&err, settings.cooldown_ms));
                    }
                    metrics::inference_attempt_failed(deployment.name(), err.kind());
                    if !err.is_retryable() {
                        return Err(InferenceError::Rejected(err.to_string()));
                    }
                    tried.failed(deployment, err);
                }
                Ok(None) => {
                    // the worker was lost before anything was sent: once, another worker may take it
                    drop(permit);
                    metrics::inference_attempt_failed(deployment.name(), "worker_lost");
                    if !lost_once {
                        lost_once = true;
                        queue.push_front(candidate);
                    } else {
                        tried.failed(
                            deployment,
                            BackendError::Retryable("the inference worker was lost".to_owned()),
                        );
                    }
                }
                Err(_) => {
                    permit.failure(started.elapsed());
                    deployment.cool_down(Duration::from_millis(settings.cooldown_ms));
                    metrics::inference_attempt_failed(deployment.name(), "timeout");
                    tried.failed(deployment, BackendError::Timeout("no first token in time".to_owned()));
                }
            }
        }
        Err(tried.into_error(&call.model, self.retry_after()))
    }

    /// One vector per text, through the deployments' batchers.
    pub async fn embed(&self, model: &str, texts: Vec<String>) -> Result<Embeddings, InferenceError> {
        let candidates = self.candidates(model, ModelKind::Embedding)?;
        if texts.is_empty() {
            return Ok(Embeddings { vectors: Vec::new(), prompt_tokens: 0 });
        }
        let deadline = Instant::now() + self.inner.settings.request_timeout();
        let mut tried = Tried::default();
        for candidate in candidates {
            let deployment = &candidate.deployment;
            let Some(batcher) = self.inner.batchers.get(deployment.name()) else { continue };
            let Ok(permit) = deployment.breaker().try_acquire() else {
                tried.open(deployment);
                continue;
            };
            let (reply, answer) = oneshot::channel();
            let ask =
                EmbedAsk { model: candidate.backend_model.clone(), texts: texts.clone(), deadline, reply };
            if batcher.submit(ask).is_err() {
                metrics::inference_shed(deployment.name());
                tried.shed = true;
                continue;
            }
            let _held = deployment.hold();
            let started = Instant::now();
            let result = match tokio::time::timeout_at(deadline + pool::STUCK_GRACE, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => {
                    Err(EmbedFailure::Backend(BackendError::Retryable("the batch was lost".to_owned())))
                }
                Err(_) => {
                    Err(EmbedFailure::Backend(BackendError::Timeout("no embeddings in time".to_owned())))
                }
            };
            match result {
                Ok(embeddings) => {
                    permit.success(started.elapsed());
                    tried.record_fallback(model, &candidate);
                    metrics::inference_request(&candidate.model, deployment.name(), "embed", "ok");
                    metrics::inference_tokens(&candidate.model, "in", u64::from(embeddings.prompt_tokens));
                    return Ok(embeddings);
                }
                Err(EmbedFailure::Shed) => tried.shed = true,
                Err(EmbedFailure::Backend(err)) => {
                    if err.counts_against_backend() {
                        permit.failure(started.elapsed());
                        deployment.cool_down(cooldown_for(&err, self.inner.settings.cooldown_ms));
                    }
                    metrics::inference_attempt_failed(deployment.name(), err.kind());
                    if !err.is_retryable() {
                        return Err(InferenceError::Rejected(err.to_string()));
                    }
                    tried.failed(deployment, err);
                }
            }
        }
        let err = tried.into_error(model, self.retry_after());
        metrics::inference_request(model, "none", "embed", err.kind());
        Err(err)
    }

    /// The model's deployments, then its fallbacks', in routing order.
    fn candidates(&self, model: &str, kind: ModelKind) -> Result<Vec<Candidate>, InferenceError> {
        if !self.inner.enabled {
            return Err(InferenceError::Disabled);
        }
        let Some(public) = self.inner.models.get(model) else {
            return Err(InferenceError::UnknownModel(model.to_owned()));
        };
        if public.kind != kind {
            let wanted = match kind {
                ModelKind::Chat => "chat",
                ModelKind::Embedding => "embedding",
            };
            return Err(InferenceError::WrongKind { model: model.to_owned(), wanted });
        }
        let mut chain = vec![model.to_owned()];
        for fallback in self.inner.settings.fallbacks.get(model).into_iter().flatten() {
            if !chain.contains(fallback) {
                chain.push(fallback.clone());
            }
        }
        let mut out = Vec::new();
        for name in chain {
            let mut group: Vec<Candidate> = self
                .inner
                .deployments
                .iter()
                .filter_map(|d| {
                    let (backend_model, k) = d.models().get(&name)?;
                    (*k == kind).then(|| Candidate {
                        deployment: d.clone(),
                        model: name.clone(),
                        backend_model: backend_model.clone(),
                    })
                })
                .collect();
            group.sort_by_key(|c| (c.deployment.cooling(), c.deployment.outstanding()));
            out.extend(group);
        }
        Ok(out)
    }
}

/// How long a deployment is skipped after `err`: what a rate limit asked for, else the cooldown.
fn cooldown_for(err: &BackendError, cooldown_ms: u64) -> Duration {
    match err {
        BackendError::RateLimited { retry_after: Some(after), .. } => *after,
        _ => Duration::from_millis(cooldown_ms),
    }
}

/// A failure after the first token, when the answer is collected whole.
fn committed_failure(err: BackendError) -> InferenceError {
    match err {
        BackendError::Timeout(reason) => InferenceError::Timeout(reason),
        BackendError::Fatal(reason) => InferenceError::Rejected(reason),
        other => InferenceError::Failed(other),
    }
}

/// What went wrong across the candidates tried.
#[derive(Default)]
struct Tried {
    shed: bool,
    open: Vec<String>,
    last: Option<BackendError>,
    failed: Vec<String>,
}

impl Tried {
    fn open(&mut self, deployment: &Deployment) {
        self.open.push(deployment.name().to_owned());
    }

    fn failed(&mut self, deployment: &Deployment, err: BackendError) {
        self.failed.push(deployment.name().to_owned());
        self.last = Some(err);
    }

    /// Counts a fallback when the request was served elsewhere than its first choice.
    fn record_fallback(&self, asked: &str, served: &Candidate) {
        if !self.failed.is_empty() || !self.open.is_empty() || self.shed || served.model != asked {
            metrics::inference_fallback(asked, served.deployment.name());
        }
    }

    fn into_error(self, model: &str, retry_after: Duration) -> InferenceError {
        if self.shed && self.last.is_none() {
            return InferenceError::Shed { retry_after };
        }
        match self.last {
            Some(BackendError::Timeout(reason)) if self.open.is_empty() => InferenceError::Timeout(reason),
            Some(err) => InferenceError::Unavailable {
                model: model.to_owned(),
                reason: format!("{err}{}", open_text(&self.open)),
                retry_after: match &err {
                    BackendError::RateLimited { retry_after: Some(after), .. } => (*after).max(retry_after),
                    _ => retry_after,
                },
            },
            None if self.shed => InferenceError::Shed { retry_after },
            None if !self.open.is_empty() => InferenceError::Unavailable {
                model: model.to_owned(),
                reason: format!("circuit open{}", open_text(&self.open)),
                retry_after,
            },
            None => InferenceError::Unavailable {
                model: model.to_owned(),
                reason: "no backend serves it on this node".to_owned(),
                retry_after,
            },
        }
    }
}

fn open_text(open: &[String]) -> String {
    if open.is_empty() { String::new() } else { format!(" (breaker open: {})", open.join(", ")) }
}

/// The rest of a committed answer: records its outcome when it ends.
struct Tail {
    rx: mpsc::Receiver<Result<Delta, BackendError>>,
    permit: Option<Permit>,
    started: Instant,
    held: Outstanding,
    model: String,
    sent_any: bool,
}

impl Tail {
    fn into_stream(self, first: Delta) -> DeltaStream {
        let first = Some(Ok(first));
        Box::pin(futures::stream::unfold((self, first, false), |(mut tail, mut first, ended)| async move {
            if ended {
                return None;
            }
            let event = match first.take() {
                Some(event) => event,
                None => match tail.rx.recv().await {
                    Some(event) => event,
                    None => Err(BackendError::Retryable(if tail.sent_any {
                        "the inference worker was lost mid-answer".to_owned()
                    } else {
                        "the inference worker was lost".to_owned()
                    })),
                },
            };
            let end = tail.settle(&event);
            Some((event, (tail, None, end)))
        }))
    }

    /// Records the outcome once the stream ends; whether it has.
    fn settle(&mut self, event: &Result<Delta, BackendError>) -> bool {
        let backend = self.held_name();
        match event {
            Ok(Delta::Text(_)) => {
                self.sent_any = true;
                false
            }
            Ok(Delta::Done { usage, .. }) => {
                if let Some(permit) = self.permit.take() {
                    permit.success(self.started.elapsed());
                }
                metrics::inference_request(&self.model, &backend, "chat", "ok");
                metrics::inference_tokens(&self.model, "in", u64::from(usage.prompt_tokens));
                metrics::inference_tokens(&self.model, "out", u64::from(usage.completion_tokens));
                true
            }
            Err(err) => {
                if let Some(permit) = self.permit.take()
                    && err.counts_against_backend()
                {
                    permit.failure(self.started.elapsed());
                }
                metrics::inference_request(&self.model, &backend, "chat", err.kind());
                true
            }
        }
    }

    fn held_name(&self) -> String {
        self.held.name().to_owned()
    }
}

impl Outstanding {
    fn name(&self) -> &str {
        self.deployment().name()
    }
}

/// The response cache's identity of a request: a hash of model, messages and
/// sampling (every field that changes the answer).
fn cache_identity(call: &ChatCall) -> String {
    let mut hash = Sha256::new();
    let canonical = serde_json::json!({
        "model": call.model,
        "messages": call.messages,
        "temperature": call.sampling.temperature,
        "top_p": call.sampling.top_p,
        "seed": call.sampling.seed,
        "max_tokens": call.sampling.max_tokens,
        "stop": call.sampling.stop,
    });
    hash.update(canonical.to_string().as_bytes());
    hex(&hash.finalize())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// An answer as the response cache stores it.
#[derive(Serialize, Deserialize)]
struct Stored {
    text: String,
    finish: FinishReason,
    usage: Usage,
    model: String,
    backend: String,
}

/// The loader of a lookup: finds nothing, so a miss loads nothing and caches nothing.
#[derive(Debug, thiserror::Error)]
#[error("not in the response cache")]
struct NotCached;

async fn lookup(cache: &Cache, key: &str, ttl: Duration) -> Option<Answer> {
    let loader: Loader = Arc::new(|| Box::pin(async { Err(LoadError::new(NotCached)) }));
    let value = cache.get(key.to_owned(), ttl, loader).await.ok()?;
    let stored: Stored = serde_json::from_slice(&value.body).ok()?;
    Some(Answer {
        response: ChatResponse { text: stored.text, finish: stored.finish, usage: stored.usage },
        model: stored.model,
        backend: stored.backend,
        cache: CacheStatus::Hit,
    })
}

async fn store(cache: &Cache, key: String, ttl: Duration, answer: &Answer) {
    let stored = Stored {
        text: answer.response.text.clone(),
        finish: answer.response.finish,
        usage: answer.response.usage,
        model: answer.model.clone(),
        backend: answer.backend.clone(),
    };
    let Ok(body) = serde_json::to_vec(&stored) else { return };
    let value = CachedValue { body: Bytes::from(body), etag: None, not_found: false };
    let loader: Loader = Arc::new(move || {
        let value = value.clone();
        Box::pin(async move { Ok(value) })
    });
    // a get whose loader hands over the answer fills L1 and L2
    if cache.get(key, ttl, loader).await.is_err() {
        tracing::debug!("an inference answer could not be cached");
    }
}
