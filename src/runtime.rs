//! The runtime: assembles a node's actor tree from each concern's `child_spec()`,
//! and hands the HealthActor a probe per dependency, built here from the probe types
//! the concerns own (`health::probe::DatabaseProbe`, `cache::redis::RedisProbe`). It
//! only assembles: every concern owns its actors, its subtree and its probe types.
//!
//! Adding a concern (the queue, inference, the cluster) is one entry in
//! [`Runtime::start`]'s list, plus its handle here if handlers reach it.

use std::sync::Arc;
use std::time::Duration;

use ractor::SpawnErr;
use sea_orm::DatabaseConnection;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::auth::revocation::Revocations;
use crate::cache::Cache;
use crate::cache::redis::RedisProbe;
use crate::config::Settings;
use crate::explore::ExploreService;
use crate::explore::semantic::Semantic;
use crate::explore::tree::IndexerParts;
use crate::explore::views::ViewMsg;
use crate::health::probe::DatabaseProbe;
use crate::health::{HealthMsg, Probe};
use crate::inference::Inference;
use crate::inference::tree::InferenceParts;
use crate::queue::Queue;
use crate::queue::tree::QueueParts;
use crate::supervision::events::LifecycleEvents;
use crate::supervision::root::RootTree;
use crate::supervision::slot::ActorSlot;
use crate::supervision::supervisor::{ChaosAction, ChaosError};
use crate::supervision::tree::ActorNode;
use crate::{auth, cache, explore, health, inference, queue};

/// What the concerns are built over.
pub struct Parts {
    pub db: DatabaseConnection,
    pub explore: ExploreService,
    /// `None` when the cache is disabled.
    pub cache: Option<Cache>,
    pub revocations: Arc<Revocations>,
    /// Jobs and events.
    pub queue: QueueParts,
    /// Inference: the deployments, the handle, the probes.
    pub inference: InferenceParts,
    /// Explore on inference: the reads and the semantic indexer.
    pub semantic: IndexerParts,
}

/// The running actor tree of one node, and where handlers find its actors.
pub struct Runtime {
    tree: RootTree,
    /// Where handlers find the current HealthActor.
    pub health: ActorSlot<HealthMsg>,
    /// Where handlers find the current ViewCounter.
    pub views: ActorSlot<ViewMsg>,
    /// Jobs: submit, read, cancel, watch.
    pub queue: Queue,
    /// Inference: chat and embeddings.
    pub inference: Inference,
    /// Explore's reads on inference: summaries, related items, semantic search.
    pub semantic: Semantic,
}

impl Runtime {
    /// Starts the root supervisor over every concern's subtree.
    pub async fn start(settings: &Settings, parts: Parts) -> Result<Self, SpawnErr> {
        let Parts { db, explore, cache, revocations, queue, inference, semantic } = parts;
        let redis = cache.as_ref().and_then(Cache::l2).cloned();
        let mut probes: Vec<Arc<dyn Probe>> = vec![Arc::new(DatabaseProbe::new(db))];
        if let Some(l2) = &redis {
            probes.push(Arc::new(RedisProbe::new(l2.clone())));
        }
        probes.extend(queue.probes.iter().cloned());
        probes.extend(inference.probes.iter().cloned());
        let handle = queue.queue.clone();
        let health = ActorSlot::<HealthMsg>::new("health");
        let views = ActorSlot::<ViewMsg>::new("views");
        let mut children = vec![
            health::tree::child_spec(settings, probes, health.clone()),
            explore::tree::child_spec(settings, explore, views.clone(), semantic.clone()),
            auth::sync::child_spec(settings, revocations, redis),
        ];
        if let Some(cache) = cache {
            children.push(cache::tree::child_spec(settings, cache));
        }
        children.push(queue::tree::child_spec(settings, queue));
        children.push(inference::tree::child_spec(settings, &inference));
        let tree = RootTree::start(settings.supervisor("root"), children).await?;
        Ok(Self {
            tree,
            health,
            views,
            queue: handle,
            inference: inference.inference,
            semantic: semantic.semantic,
        })
    }

    /// Owns a background task of the node under `name`, so shutdown lets it finish
    /// (or, past the grace period, aborts it and says so).
    pub fn track(&self, name: impl Into<String>, task: JoinHandle<()>) {
        self.tree.track(name, task);
    }

    /// Deadline for asks to actors.
    pub fn ask_timeout(&self) -> Duration {
        self.tree.ask_timeout()
    }

    /// The live tree from the root down.
    pub async fn tree(&self) -> ActorNode {
        self.tree.tree().await
    }

    /// The names of the actors now down (past their restart intensity), kept
    /// current by the supervisors' lifecycle events: no mailbox is asked.
    pub fn actors_down(&self) -> Vec<String> {
        self.tree.down().down()
    }

    /// Every supervisor's lifecycle events, for subscribers.
    pub fn events(&self) -> &Arc<LifecycleEvents> {
        self.tree.events()
    }

    /// Applies a chaos action to the named actor anywhere below the root.
    pub async fn chaos(&self, target: &str, action: ChaosAction) -> Result<(), ChaosError> {
        self.tree.chaos(target, action).await
    }

    /// Lets tracked tasks finish until `deadline`, then stops the tree
    /// children-first (see [`RootTree::shutdown`]).
    pub async fn shutdown(&self, deadline: Instant) {
        // the actors get at least a moment to stop cleanly, even past the deadline
        self.tree.shutdown(deadline, Duration::from_secs(1)).await;
    }
}
