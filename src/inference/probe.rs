//! Inference in `/health`: the component `inference` (down when no backend can
//! serve, with what to do about it: for missing local models, the command that
//! fetches them) and one component `inference-<backend>` per backend (its load
//! state and its breaker). None is critical: without inference the node still
//! serves everything else. A node with inference disabled, or with no backend
//! at all, has none of them (as a node without Redis has no `redis`).

use std::sync::Arc;

use futures::future::BoxFuture;

use super::pool::{Deployment, LoadState};
use crate::health::Probe;
use crate::supervision::breaker::BreakerState;

/// Whether one deployment can serve now; `Err` says why not.
fn serving(deployment: &Deployment) -> Result<(), String> {
    match deployment.load_state() {
        LoadState::Loading => return Err("loading".to_owned()),
        LoadState::Failed(reason) => return Err(reason),
        LoadState::Ready => {}
    }
    match deployment.breaker().state() {
        BreakerState::Open => Err("circuit open".to_owned()),
        _ => Ok(()),
    }
}

/// The component `inference`: up while at least one backend serves; its message
/// names every backend that does not.
pub struct InferenceProbe {
    deployments: Vec<Arc<Deployment>>,
}

impl InferenceProbe {
    pub fn new(deployments: Vec<Arc<Deployment>>) -> Self {
        Self { deployments }
    }
}

impl Probe for InferenceProbe {
    fn component(&self) -> &str {
        "inference"
    }

    fn critical(&self) -> bool {
        false
    }

    fn check(&self) -> BoxFuture<'static, Result<(), String>> {
        let result = if self.deployments.is_empty() {
            Err("no backend configured".to_owned())
        } else {
            let failing: Vec<String> = self
                .deployments
                .iter()
                .filter_map(|d| serving(d).err().map(|why| format!("{}: {why}", d.name())))
                .collect();
            if failing.len() == self.deployments.len() { Err(failing.join("; ")) } else { Ok(()) }
        };
        Box::pin(async move { result })
    }
}

/// The component `inference-<backend>`: its load state and breaker.
pub struct BackendProbe {
    component: String,
    deployment: Arc<Deployment>,
}

impl BackendProbe {
    pub fn new(deployment: Arc<Deployment>) -> Self {
        Self { component: format!("inference-{}", deployment.name()), deployment }
    }
}

impl Probe for BackendProbe {
    fn component(&self) -> &str {
        &self.component
    }

    fn critical(&self) -> bool {
        false
    }

    fn check(&self) -> BoxFuture<'static, Result<(), String>> {
        let result = serving(&self.deployment);
        Box::pin(async move { result })
    }
}
