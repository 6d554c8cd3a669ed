//! One [`Deployment`] per backend: its breaker, its bounded request queue, its
//! load state, and the InferenceActors (`inference-<backend>-<i>`) that take
//! requests from the queue, one at a time each.
//!
//! The queue is the pool's backpressure: [`Deployment::submit`] never waits, a
//! full queue sheds the request. An InferenceActor's run loop lives in its state:
//! killing the actor drops the request it holds (its caller sees the reply channel
//! close and decides whether to try again, see [`super::router`]). A request's
//! deadline bounds every wait of the loop; a worker still busy past it plus a
//! grace is a stuck worker, and its watchdog tick fails the actor so its
//! supervisor starts a fresh one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::backend::{BackendError, ChatRequest, Delta, Embeddings, LlmBackend, ModelKind};
use crate::metrics;
use crate::supervision::breaker::CircuitBreaker;
use crate::supervision::chaos::chaos_panic;
use crate::supervision::child::{ChaosTarget, ChildSpec, StartedChild};
use crate::supervision::tree::ActorStats;

/// How long past its deadline a request may hold a worker before the worker is replaced.
pub(super) const STUCK_GRACE: Duration = Duration::from_secs(5);
/// Events buffered between a worker and the request's reader.
const EVENT_BUFFER: usize = 32;

/// What a worker does for one request.
pub(super) enum Work {
    /// Generate, sending each event to `events`; stop when its reader is gone.
    Chat {
        request: ChatRequest,
        events: mpsc::Sender<Result<Delta, BackendError>>,
        first_token_by: Instant,
        deadline: Instant,
    },
    /// One forward pass over `texts`.
    Embed {
        model: String,
        texts: Vec<String>,
        reply: oneshot::Sender<Result<Embeddings, BackendError>>,
        deadline: Instant,
    },
}

impl Work {
    fn deadline(&self) -> Instant {
        match self {
            Self::Chat { deadline, .. } | Self::Embed { deadline, .. } => *deadline,
        }
    }
}

/// Whether a deployment's backend can take requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadState {
    Loading,
    Ready,
    /// Not loaded, and why (for a local model: the command that fetches it).
    Failed(String),
}

/// The queue was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Full;

/// One backend as the router sees it.
pub struct Deployment {
    name: String,
    /// Public model name → (the backend's name for it, its kind).
    models: BTreeMap<String, (String, ModelKind)>,
    backend: OnceLock<Arc<dyn LlmBackend>>,
    state: Mutex<LoadState>,
    breaker: Arc<CircuitBreaker>,
    queue: mpsc::Sender<Work>,
    pending: tokio::sync::Mutex<mpsc::Receiver<Work>>,
    workers: usize,
    outstanding: AtomicUsize,
    /// Routing skips the deployment until then (ms since `epoch`; 0: not cooling down).
    cooldown_until_ms: AtomicU64,
    epoch: Instant,
    /// Generations whose reader left before the end.
    cancelled: AtomicU64,
}

impl Deployment {
    pub(super) fn new(
        name: impl Into<String>,
        models: BTreeMap<String, (String, ModelKind)>,
        breaker: Arc<CircuitBreaker>,
        workers: usize,
        queue_capacity: usize,
    ) -> Arc<Self> {
        let (queue, pending) = mpsc::channel(queue_capacity.max(1));
        Arc::new(Self {
            name: name.into(),
            models,
            backend: OnceLock::new(),
            state: Mutex::new(LoadState::Loading),
            breaker,
            queue,
            pending: tokio::sync::Mutex::new(pending),
            workers,
            outstanding: AtomicUsize::new(0),
            cooldown_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            cancelled: AtomicU64::new(0),
        })
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Public model names it serves, with the backend's names and kinds.
    pub fn models(&self) -> &BTreeMap<String, (String, ModelKind)> {
        &self.models
    }

    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Makes the backend available (once).
    pub(super) fn ready(&self, backend: Arc<dyn LlmBackend>) {
        if self.backend.set(backend).is_ok() {
            self.set_state(LoadState::Ready);
        }
    }

    /// Records why the backend is not available.
    pub(super) fn failed(&self, reason: impl Into<String>) {
        self.set_state(LoadState::Failed(reason.into()));
    }

    fn set_state(&self, state: LoadState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    pub fn load_state(&self) -> LoadState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn backend(&self) -> Option<&Arc<dyn LlmBackend>> {
        self.backend.get()
    }

    /// Queues `work` for a worker, or gives it back at once when the queue is full
    /// (or the pool is gone).
    pub(super) fn submit(&self, work: Work) -> Result<(), Full> {
        match self.queue.try_send(work) {
            Ok(()) => {
                metrics::inference_queue_depth(&self.name, self.queue_depth());
                Ok(())
            }
            Err(_) => {
                metrics::inference_shed(&self.name);
                Err(Full)
            }
        }
    }

    /// Requests waiting for a worker.
    pub fn queue_depth(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Requests routed here and not finished.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Counts a request as outstanding until the guard drops.
    pub(super) fn hold(self: &Arc<Self>) -> Outstanding {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        Outstanding(self.clone())
    }

    /// Whether routing skips it now.
    pub fn cooling(&self) -> bool {
        let until = self.cooldown_until_ms.load(Ordering::Relaxed);
        until != 0 && self.millis_now() < until
    }

    /// Routing skips it for `length`.
    pub(super) fn cool_down(&self, length: Duration) {
        let until =
            self.millis_now().saturating_add(u64::try_from(length.as_millis()).unwrap_or(u64::MAX)).max(1);
        self.cooldown_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    fn millis_now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Generations stopped because their reader left.
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// A request counted as outstanding on its deployment.
pub(super) struct Outstanding(Arc<Deployment>);

impl Outstanding {
    pub(super) fn deployment(&self) -> &Arc<Deployment> {
        &self.0
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Messages an InferenceActor handles.
pub enum InferenceMsg {
    /// The watchdog: fails the actor when its request is past deadline and grace.
    Tick,
    /// Chaos: panic while handling this message.
    Panic,
}

impl ractor::Message for InferenceMsg {}

impl ChaosTarget for InferenceMsg {
    fn chaos_panic() -> Self {
        Self::Panic
    }
}

/// One worker of a deployment's pool.
pub struct InferenceActor;

pub struct InferenceArgs {
    pub deployment: Arc<Deployment>,
    pub stats: Arc<ActorStats>,
}

pub struct InferenceState {
    _run: JoinSet<()>,
    /// Deadline (ms since the deployment's epoch) of the request held now; 0: idle.
    busy_until_ms: Arc<AtomicU64>,
    deployment: Arc<Deployment>,
    stats: Arc<ActorStats>,
}

impl Actor for InferenceActor {
    type Msg = InferenceMsg;
    type State = InferenceState;
    type Arguments = InferenceArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<InferenceMsg>,
        args: InferenceArgs,
    ) -> Result<InferenceState, ActorProcessingErr> {
        let busy_until_ms = Arc::new(AtomicU64::new(0));
        let mut run = JoinSet::new();
        run.spawn(run_loop(args.deployment.clone(), busy_until_ms.clone()));
        myself.send_interval(STUCK_GRACE, || InferenceMsg::Tick);
        Ok(InferenceState { _run: run, busy_until_ms, deployment: args.deployment, stats: args.stats })
    }

    async fn handle(
        &self,
        _myself: ActorRef<InferenceMsg>,
        msg: InferenceMsg,
        state: &mut InferenceState,
    ) -> Result<(), ActorProcessingErr> {
        state.stats.handled();
        match msg {
            InferenceMsg::Tick => {
                let until = state.busy_until_ms.load(Ordering::Relaxed);
                let grace = u64::try_from(STUCK_GRACE.as_millis()).unwrap_or(u64::MAX);
                if until != 0 && state.deployment.millis_now() > until.saturating_add(grace) {
                    metrics::inference_stuck_worker(&state.deployment.name);
                    return Err(format!(
                        "a request held this worker past its deadline on {}",
                        state.deployment.name
                    )
                    .into());
                }
                Ok(())
            }
            InferenceMsg::Panic => chaos_panic("inference-worker"),
        }
    }
}

async fn run_loop(deployment: Arc<Deployment>, busy_until_ms: Arc<AtomicU64>) {
    loop {
        let work = {
            let mut pending = deployment.pending.lock().await;
            pending.recv().await
        };
        let Some(work) = work else { return };
        metrics::inference_queue_depth(&deployment.name, deployment.queue_depth());
        let deadline = work.deadline();
        let until = u64::try_from((deadline - deployment.epoch).as_millis()).unwrap_or(u64::MAX).max(1);
        busy_until_ms.store(until, Ordering::Relaxed);
        perform(&deployment, work).await;
        busy_until_ms.store(0, Ordering::Relaxed);
    }
}

async fn perform(deployment: &Deployment, work: Work) {
    let Some(backend) = deployment.backend().cloned() else {
        let reason = match deployment.load_state() {
            LoadState::Failed(reason) => reason,
            _ => "the backend is still loading".to_owned(),
        };
        match work {
            Work::Chat { events, .. } => {
                let _ = events.send(Err(BackendError::Retryable(reason))).await;
            }
            Work::Embed { reply, .. } => {
                let _ = reply.send(Err(BackendError::Retryable(reason)));
            }
        }
        return;
    };
    match work {
        Work::Chat { request, events, first_token_by, deadline } => {
            if events.is_closed() || Instant::now() >= deadline {
                return;
            }
            stream_chat(deployment, backend.as_ref(), request, &events, first_token_by, deadline).await;
        }
        Work::Embed { model, texts, reply, deadline } => {
            if reply.is_closed() {
                return;
            }
            let result = match tokio::time::timeout_at(deadline, backend.embed(&model, texts)).await {
                Ok(result) => result,
                Err(_) => {
                    Err(BackendError::Timeout("no embeddings before the request's deadline".to_owned()))
                }
            };
            let _ = reply.send(result);
        }
    }
}

/// Forwards a generation's events until its end, its reader leaving, or a deadline.
async fn stream_chat(
    deployment: &Deployment,
    backend: &dyn LlmBackend,
    request: ChatRequest,
    events: &mpsc::Sender<Result<Delta, BackendError>>,
    first_token_by: Instant,
    deadline: Instant,
) {
    let started = Instant::now();
    let opened = tokio::time::timeout_at(first_token_by.min(deadline), backend.chat_stream(request)).await;
    let mut stream = match opened {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            let _ = events.send(Err(err)).await;
            return;
        }
        Err(_) => {
            let _ = events.send(Err(first_token_timeout())).await;
            return;
        }
    };
    let mut first = true;
    loop {
        let by = if first { first_token_by.min(deadline) } else { deadline };
        let next = tokio::select! {
            biased;
            () = events.closed() => {
                deployment.cancelled.fetch_add(1, Ordering::Relaxed);
                metrics::inference_cancelled(&deployment.name);
                return;
            }
            next = tokio::time::timeout_at(by, stream.next()) => next,
        };
        let event = match next {
            Ok(Some(event)) => event,
            Ok(None) => Err(BackendError::Truncated("the generation ended before its finish".to_owned())),
            Err(_) if first => Err(first_token_timeout()),
            Err(_) => Err(BackendError::Timeout("the generation passed the request's deadline".to_owned())),
        };
        if first {
            metrics::inference_first_token(&deployment.name, started.elapsed());
            first = false;
        }
        let end = !matches!(event, Ok(Delta::Text(_)));
        if let Ok(Delta::Done { usage, .. }) = &event {
            let elapsed = started.elapsed().as_secs_f64();
            if usage.completion_tokens > 0 && elapsed > 0.0 {
                metrics::inference_tokens_per_second(
                    &deployment.name,
                    f64::from(usage.completion_tokens) / elapsed,
                );
            }
        }
        let sent = tokio::time::timeout_at(deadline, events.send(event)).await;
        if !matches!(sent, Ok(Ok(()))) {
            deployment.cancelled.fetch_add(1, Ordering::Relaxed);
            metrics::inference_cancelled(&deployment.name);
            return;
        }
        if end {
            return;
        }
    }
}

fn first_token_timeout() -> BackendError {
    BackendError::Timeout("no first token within inference.first_token_timeout_secs".to_owned())
}

/// The channel a chat request's events come back on.
pub(super) fn events()
-> (mpsc::Sender<Result<Delta, BackendError>>, mpsc::Receiver<Result<Delta, BackendError>>) {
    mpsc::channel(EVENT_BUFFER)
}

/// The deployment's workers, named `inference-<backend>-<i>`.
pub(super) fn children(deployment: &Arc<Deployment>) -> Vec<ChildSpec> {
    (0..deployment.workers)
        .map(|i| {
            let deployment = deployment.clone();
            ChildSpec::new(format!("inference-{}-{i}", deployment.name), "inference-worker", move |ctx| {
                let args = InferenceArgs { deployment: deployment.clone(), stats: ctx.stats };
                async move {
                    let (actor, _handle) =
                        Actor::spawn_linked(None, InferenceActor, args, ctx.supervisor).await?;
                    Ok(StartedChild::worker(actor))
                }
            })
        })
        .collect()
}
