//! Explore's subtree and its `child_spec()`:
//!
//! ```text
//! explore (one-for-one)
//! ├── views              ViewCounter (views.rs)
//! └── semantic-indexer   SemanticIndexer (semantic/indexer.rs)
//! ```

use std::sync::Arc;
use std::time::Duration;

use ractor::Actor;

use super::ExploreService;
use super::semantic::Semantic;
use super::semantic::changes::ChangeQueue;
use super::semantic::indexer::{IndexerArgs, IndexerMsg, SemanticIndexer};
use super::views::{ViewArgs, ViewCounter, ViewMsg};
use crate::config::Settings;
use crate::supervision::child::{ChildSpec, StartedChild};
use crate::supervision::slot::ActorSlot;
use crate::supervision::supervisor::SupervisorArgs;

/// What the semantic indexer is started with (see [`Semantic::indexer_parts`]).
#[derive(Clone)]
pub struct IndexerParts {
    pub semantic: Semantic,
    /// The item changes waiting for it (the change buses push into it).
    pub queue: Arc<ChangeQueue>,
    /// Where the current indexer is published.
    pub slot: ActorSlot<IndexerMsg>,
}

/// Explore's subtree: the ViewCounter over `explore`, published in `views`, and
/// the semantic indexer.
pub fn child_spec(
    settings: &Settings,
    explore: ExploreService,
    views: ActorSlot<ViewMsg>,
    indexer: IndexerParts,
) -> ChildSpec {
    let supervisor = settings.supervisor("explore");
    let views = views_child(settings, explore, views);
    let indexer = indexer_child(settings, indexer);
    ChildSpec::new("explore", "supervisor", move |ctx| {
        let children = vec![views(), indexer()];
        let supervisor = supervisor.clone();
        async move {
            let args = SupervisorArgs { children, stats: ctx.stats, events: ctx.events };
            let (actor, _handle) = Actor::spawn_linked(None, supervisor, args, ctx.supervisor).await?;
            Ok(StartedChild::supervisor(actor))
        }
    })
}

/// Makes a child spec anew for each start of the subtree.
type MakeChild = Arc<dyn Fn() -> ChildSpec + Send + Sync>;

fn views_child(settings: &Settings, explore: ExploreService, slot: ActorSlot<ViewMsg>) -> MakeChild {
    let flush_every = Duration::from_millis(settings.explore.views_flush_ms);
    let half_life = Duration::from_secs_f64(settings.explore.trend_half_life_hours * 3600.0);
    let dedup_window = Duration::from_secs(settings.explore.view_dedup_window_secs);
    let dedup_max_entries = settings.explore.view_dedup_max_entries;
    Arc::new(move || {
        let (explore, slot) = (explore.clone(), slot.clone());
        let marker = slot.clone();
        let spec = ChildSpec::new("views", "view-counter", move |ctx| {
            let actor = ViewCounter { flush_every, half_life, dedup_window, dedup_max_entries };
            let args = ViewArgs { service: explore.clone(), stats: ctx.stats };
            let slot = slot.clone();
            async move {
                let (actor, _handle) = Actor::spawn_linked(None, actor, args, ctx.supervisor).await?;
                slot.set(actor.clone());
                Ok(StartedChild::worker(actor))
            }
        });
        spec.with_slot(&marker)
    })
}

fn indexer_child(settings: &Settings, parts: IndexerParts) -> MakeChild {
    let batch_max = settings.explore.semantic_batch_max;
    let sync_every = Duration::from_secs(settings.explore.semantic_sync_secs);
    let retry = settings.supervision.backoff();
    Arc::new(move || {
        let parts = parts.clone();
        let marker = parts.slot.clone();
        let spec = ChildSpec::new("semantic-indexer", "semantic-indexer", move |ctx| {
            let actor = SemanticIndexer { batch_max, sync_every, retry };
            let IndexerParts { semantic, queue, slot } = parts.clone();
            let args = IndexerArgs {
                db: semantic.db().clone(),
                inference: semantic.inference().clone(),
                index: semantic.index().clone(),
                queue,
                stats: ctx.stats,
            };
            async move {
                let (actor, _handle) = Actor::spawn_linked(None, actor, args, ctx.supervisor).await?;
                slot.set(actor.clone());
                Ok(StartedChild::worker(actor))
            }
        });
        spec.with_slot(&marker)
    })
}
