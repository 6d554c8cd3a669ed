//! The ViewCounter's place in the tree.

use std::time::Duration;

use ractor::Actor;

use super::ExploreService;
use super::views::{ViewArgs, ViewCounter, ViewMsg};
use crate::config::Settings;
use crate::supervision::child::{ChildSpec, StartedChild};
use crate::supervision::slot::ActorSlot;

/// The ViewCounter over `explore`, published in `slot` at each start.
pub fn child_spec(settings: &Settings, explore: ExploreService, slot: ActorSlot<ViewMsg>) -> ChildSpec {
    let flush_every = Duration::from_millis(settings.explore.views_flush_ms);
    let half_life = Duration::from_secs_f64(settings.explore.trend_half_life_hours * 3600.0);
    let dedup_window = Duration::from_secs(settings.explore.view_dedup_window_secs);
    let dedup_max_entries = settings.explore.view_dedup_max_entries;
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
}
