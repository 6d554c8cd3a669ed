//! The cache's place in the tree: a supervisor over the shards (one for one: a
//! shard's failure touches no other) and, with Redis, the invalidation listener.

use std::time::Duration;

use ractor::Actor;

use super::Cache;
use super::listener::{CacheListener, ListenerArgs};
use super::shard::{CacheShard, ShardArgs};
use crate::config::{CacheSettings, Settings};
use crate::supervision::child::{ChildSpec, StartedChild};
use crate::supervision::supervisor::SupervisorArgs;

/// The cache subtree: a supervisor over the shards (one for one: a shard's failure
/// touches no other) and, with Redis, the listener.
pub fn child_spec(settings: &Settings, cache: Cache) -> ChildSpec {
    let supervisor = settings.supervisor("cache");
    let cs = settings.cache.clone();
    let slots: Vec<_> = (0..cache.shard_count()).filter_map(|i| cache.slot(i).cloned()).collect();
    let spec = ChildSpec::new("cache", "supervisor", move |ctx| {
        let n = cache.shard_count();
        let mut children: Vec<ChildSpec> = (0..n).map(|i| shard_child(&cs, &cache, i)).collect();
        if cache.l2().is_some() {
            let cache = cache.clone();
            children.push(ChildSpec::new("cache-listener", "cache-listener", move |ctx| {
                let args = ListenerArgs { cache: cache.clone(), stats: ctx.stats };
                async move {
                    let (actor, _handle) =
                        Actor::spawn_linked(None, CacheListener, args, ctx.supervisor).await?;
                    Ok(StartedChild::worker(actor))
                }
            }));
        }
        let supervisor = supervisor.clone();
        async move {
            let args = SupervisorArgs { children, stats: ctx.stats, events: ctx.events };
            let (actor, _handle) = Actor::spawn_linked(None, supervisor, args, ctx.supervisor).await?;
            Ok(StartedChild::supervisor(actor))
        }
    });
    // the supervisor down: so are its shards, whatever became of them
    slots.iter().fold(spec, |spec, slot| spec.with_slot(slot))
}

fn shard_child(cs: &CacheSettings, cache: &Cache, index: usize) -> ChildSpec {
    let shards = u64::try_from(cache.shard_count().max(1)).unwrap_or(1);
    let shard = CacheShard {
        index,
        l1_enabled: cs.l1_enabled,
        l1_max_bytes: cs.l1_max_bytes / shards,
        l1_max_entries: cs.l1_max_entries,
        negative_ttl: Duration::from_secs(cs.negative_ttl_secs),
        ttl_jitter: cs.ttl_jitter,
        xfetch_beta: cs.xfetch_beta,
        compress_threshold: cs.compress_threshold_bytes,
    };
    let breaker = cache.l2().map(|l2| l2.breaker().clone());
    let marker = cache.slot(index).cloned();
    let cache = cache.clone();
    let spec = ChildSpec::new(format!("cache-shard-{index}"), "cache-shard", move |ctx| {
        let shard = shard.clone();
        let args = ShardArgs {
            l2: cache.l2().cloned(),
            reader: cache.reader().cloned(),
            counters: cache.counters(index),
            stats: ctx.stats,
        };
        let slot = cache.slot(index).cloned();
        async move {
            let (actor, _handle) = Actor::spawn_linked(None, shard, args, ctx.supervisor).await?;
            if let Some(slot) = slot {
                slot.set(actor.clone());
            }
            Ok(StartedChild::worker(actor))
        }
    });
    let spec = match marker {
        Some(slot) => spec.with_slot(&slot),
        None => spec,
    };
    match breaker {
        Some(breaker) => spec.with_breaker(breaker),
        None => spec,
    }
}
