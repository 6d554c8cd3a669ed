//! The HealthActor's place in the tree.

use std::sync::Arc;

use ractor::Actor;

use super::actor::{HealthActor, HealthArgs, HealthMsg};
use super::probe::Probe;
use crate::config::Settings;
use crate::supervision::child::{ChildSpec, StartedChild};
use crate::supervision::slot::ActorSlot;

/// The HealthActor over `probes`, published in `slot` at each start.
pub fn child_spec(settings: &Settings, probes: Vec<Arc<dyn Probe>>, slot: ActorSlot<HealthMsg>) -> ChildSpec {
    let health = settings.health.clone();
    let marker = slot.clone();
    let spec = ChildSpec::new("health", "health", move |ctx| {
        let probes = probes.clone();
        let actor = HealthActor { settings: health.clone() };
        let slot = slot.clone();
        async move {
            let args = HealthArgs { probes, stats: ctx.stats };
            let (actor, _handle) = Actor::spawn_linked(None, actor, args, ctx.supervisor).await?;
            slot.set(actor.clone());
            Ok(StartedChild::worker(actor))
        }
    });
    spec.with_slot(&marker)
}
