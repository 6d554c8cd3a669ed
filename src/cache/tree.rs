//! The cache's place in the tree: a supervisor (one for one: a child's failure
//! touches no other) over, with Redis, the L2 reader first, then the shards, and,
//! with Redis, the invalidation listener and the post-outage resync.

use std::time::Duration;

use ractor::Actor;

use super::Cache;
use super::listener::{CacheListener, ListenerArgs};
use super::reader::{L2Reader, L2ReaderActor, ReaderArgs};
use super::redis::RedisTier;
use super::resync::{CacheResync, ResyncArgs};
use super::shard::{CacheShard, ShardArgs};
use crate::config::{CacheSettings, Settings};
use crate::supervision::child::{ChildSpec, StartedChild};
use crate::supervision::supervisor::SupervisorArgs;

/// The cache subtree: a supervisor over the L2 reader (with Redis), the shards,
/// and (with Redis) the listener and the resync.
pub fn child_spec(settings: &Settings, cache: Cache) -> ChildSpec {
    let supervisor = settings.supervisor("cache");
    let cs = settings.cache.clone();
    let slots: Vec<_> = (0..cache.shard_count()).filter_map(|i| cache.slot(i).cloned()).collect();
    let reader_slot = cache.reader().map(|reader| reader.slot().clone());
    let resync_slot = cache.l2().map(|_| cache.resync().clone());
    let spec = ChildSpec::new("cache", "supervisor", move |ctx| {
        let n = cache.shard_count();
        let mut children: Vec<ChildSpec> = Vec::with_capacity(n + 3);
        if let (Some(reader), Some(tier)) = (cache.reader(), cache.l2()) {
            children.push(reader_child(reader, tier, cache.l2_reads_in_flight()));
        }
        children.extend((0..n).map(|i| shard_child(&cs, &cache, i)));
        if cache.l2().is_some() {
            children.push(listener_child(&cache));
            children.push(resync_child(&cache));
        }
        let supervisor = supervisor.clone();
        async move {
            let args = SupervisorArgs { children, stats: ctx.stats, events: ctx.events };
            let (actor, _handle) = Actor::spawn_linked(None, supervisor, args, ctx.supervisor).await?;
            Ok(StartedChild::supervisor(actor))
        }
    });
    // the supervisor down: so are its children, whatever became of them
    let spec = slots.iter().fold(spec, |spec, slot| spec.with_slot(slot));
    let spec = match reader_slot {
        Some(slot) => spec.with_slot(&slot),
        None => spec,
    };
    match resync_slot {
        Some(slot) => spec.with_slot(&slot),
        None => spec,
    }
}

/// `cache-l2-reader`, published in the reader handle's slot at each start.
fn reader_child(reader: &L2Reader, tier: &RedisTier, max_in_flight: usize) -> ChildSpec {
    let slot = reader.slot().clone();
    let tier = tier.clone();
    let breaker = tier.breaker().clone();
    let spec = ChildSpec::new("cache-l2-reader", "cache-l2-reader", move |ctx| {
        let actor = L2ReaderActor { tier: tier.clone(), max_in_flight };
        let slot = slot.clone();
        let args = ReaderArgs { stats: ctx.stats };
        async move {
            let (actor, _handle) = Actor::spawn_linked(None, actor, args, ctx.supervisor).await?;
            slot.set(actor.clone());
            Ok(StartedChild::worker(actor))
        }
    });
    spec.with_slot(reader.slot()).with_breaker(breaker)
}

fn listener_child(cache: &Cache) -> ChildSpec {
    let cache = cache.clone();
    ChildSpec::new("cache-listener", "cache-listener", move |ctx| {
        let args = ListenerArgs { cache: cache.clone(), stats: ctx.stats };
        async move {
            let (actor, _handle) = Actor::spawn_linked(None, CacheListener, args, ctx.supervisor).await?;
            Ok(StartedChild::worker(actor))
        }
    })
}

/// `cache-resync`, published in the cache's resync slot at each start.
fn resync_child(cache: &Cache) -> ChildSpec {
    let cache = cache.clone();
    let marker = cache.resync().clone();
    let spec = ChildSpec::new("cache-resync", "cache-resync", move |ctx| {
        let args = ResyncArgs { cache: cache.clone(), stats: ctx.stats };
        let slot = cache.resync().clone();
        async move {
            let (actor, _handle) =
                Actor::spawn_linked(None, CacheResync::default(), args, ctx.supervisor).await?;
            slot.set(actor.clone());
            Ok(StartedChild::worker(actor))
        }
    });
    spec.with_slot(&marker)
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
        load_timeout: cache.load_timeout(),
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
