//! Inference's subtree and its `child_spec()`:
//!
//! ```text
//! inference (one-for-one)
//! ├── inference-local (one-for-one; breaker `inference-local`)
//! │   └── inference-local-0 .. inference-local-<inference.local.workers - 1>
//! └── inference-<backend> (one per [[inference.backends]]; breaker `inference-<backend>`)
//!     └── inference-<backend>-0 .. <workers - 1>
//! ```
//!
//! [`build`] makes the deployments, the [`Inference`] handle and the probes before
//! anything starts; the local models load on a blocking thread, off every
//! supervisor's loop, and their deployment serves once they are in.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ractor::Actor;

use super::backend::{LlmBackend, ModelKind};
use super::batch::Batcher;
use super::local;
use super::openai::OpenAiBackend;
use super::pool::{self, Deployment};
use super::probe::{BackendProbe, InferenceProbe};
use super::router::Inference;
use crate::cache::handle::Cache;
use crate::config::{BackendSettings, Settings};
use crate::health::Probe;
use crate::supervision::breaker::CircuitBreaker;
use crate::supervision::child::{ChildSpec, StartedChild};
use crate::supervision::supervisor::SupervisorArgs;

/// Inference's parts, built before the tree starts.
pub struct InferenceParts {
    pub inference: Inference,
    /// `inference` and one `inference-<backend>` per backend.
    pub probes: Vec<Arc<dyn Probe>>,
    deployments: Vec<Arc<Deployment>>,
}

/// Builds the deployments (loading the local models in the background) and the
/// handle; `cache` holds the response cache when the node has one.
pub fn build(settings: &Settings, cache: Option<Cache>) -> InferenceParts {
    let s = &settings.inference;
    if !s.enabled {
        // like an unconfigured Redis: not a component of this node
        return InferenceParts {
            inference: Inference::disabled(s),
            probes: Vec::new(),
            deployments: Vec::new(),
        };
    }
    let mut deployments = Vec::new();
    if s.local.enabled {
        let models = BTreeMap::from([
            (local::CHAT_MODEL.to_owned(), (local::CHAT_MODEL.to_owned(), ModelKind::Chat)),
            (local::EMBEDDING_MODEL.to_owned(), (local::EMBEDDING_MODEL.to_owned(), ModelKind::Embedding)),
        ]);
        let breaker = CircuitBreaker::new("inference-local", s.local.breaker.to_config());
        let deployment = Deployment::new("local", models, breaker, s.local.workers, s.local.queue_capacity);
        load_local(&deployment, s.local.clone());
        deployments.push(deployment);
    }
    for backend in &s.backends {
        deployments.push(remote(backend, &s.local.breaker));
    }
    let wait = Duration::from_millis(s.embed_batch_wait_ms);
    let batchers: HashMap<String, Batcher> = deployments
        .iter()
        .filter(|d| d.models().values().any(|(_, kind)| *kind == ModelKind::Embedding))
        .map(|d| {
            let capacity = s.local.queue_capacity.max(d.workers()).saturating_mul(4);
            (d.name().to_owned(), Batcher::start(d.clone(), s.embed_batch_max, wait, capacity))
        })
        .collect();
    let inference = Inference::new(s, deployments.clone(), batchers, cache);
    let mut probes: Vec<Arc<dyn Probe>> = Vec::new();
    if !deployments.is_empty() {
        probes.push(Arc::new(InferenceProbe::new(deployments.clone())));
    }
    probes.extend(deployments.iter().map(|d| Arc::new(BackendProbe::new(d.clone())) as Arc<dyn Probe>));
    InferenceParts { inference, probes, deployments }
}

/// Loads the local models on a blocking thread; the deployment serves once they are in.
fn load_local(deployment: &Arc<Deployment>, settings: crate::config::LocalSettings) {
    let deployment = deployment.clone();
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        match tokio::task::spawn_blocking(move || local::load_backend(&settings)).await {
            Ok(Ok(backend)) => {
                tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "local models loaded");
                deployment.ready(backend);
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "the local models are not served");
                deployment.failed(err.to_string());
            }
            Err(err) => deployment.failed(format!("loading the local models failed: {err}")),
        }
    });
}

/// The deployment of one OpenAI-compatible server.
fn remote(backend: &BackendSettings, default_breaker: &crate::config::BreakerSettings) -> Arc<Deployment> {
    let models = backend
        .models
        .iter()
        .map(|(public, own)| {
            let kind = if backend.embedding_models.contains(public) {
                ModelKind::Embedding
            } else {
                ModelKind::Chat
            };
            (public.clone(), (own.clone(), kind))
        })
        .collect();
    let breaker_settings = backend.breaker.as_ref().unwrap_or(default_breaker);
    let breaker = CircuitBreaker::new(format!("inference-{}", backend.name), breaker_settings.to_config());
    let deployment = Deployment::new(&backend.name, models, breaker, backend.workers, backend.queue_capacity);
    match OpenAiBackend::new(backend) {
        Ok(client) => deployment.ready(Arc::new(client) as Arc<dyn LlmBackend>),
        Err(err) => deployment.failed(err.to_string()),
    }
    deployment
}

/// Inference's subtree.
pub fn child_spec(settings: &Settings, parts: &InferenceParts) -> ChildSpec {
    let supervisor = settings.supervisor("inference");
    let backend_supervisors: Vec<_> = parts
        .deployments
        .iter()
        .map(|d| (d.clone(), settings.supervisor(format!("inference-{}", d.name()))))
        .collect();
    ChildSpec::new("inference", "supervisor", move |ctx| {
        let children: Vec<ChildSpec> =
            backend_supervisors.iter().map(|(d, sup)| deployment_child(d, sup.clone())).collect();
        let supervisor = supervisor.clone();
        async move {
            let args = SupervisorArgs { children, stats: ctx.stats, events: ctx.events };
            let (actor, _handle) = Actor::spawn_linked(None, supervisor, args, ctx.supervisor).await?;
            Ok(StartedChild::supervisor(actor))
        }
    })
}

fn deployment_child(
    deployment: &Arc<Deployment>,
    supervisor: crate::supervision::supervisor::Supervisor,
) -> ChildSpec {
    let d = deployment.clone();
    ChildSpec::new(format!("inference-{}", deployment.name()), "supervisor", move |ctx| {
        let children = pool::children(&d);
        let supervisor = supervisor.clone();
        async move {
            let args = SupervisorArgs { children, stats: ctx.stats, events: ctx.events };
            let (actor, _handle) = Actor::spawn_linked(None, supervisor, args, ctx.supervisor).await?;
            Ok(StartedChild::supervisor(actor))
        }
    })
    .with_breaker(deployment.breaker().clone())
}
