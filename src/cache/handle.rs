//! [`Cache`]: what the rest of castwork holds. It routes a key to its shard, asks
//! with a deadline (one retry if the shard is restarting), falls back to loading
//! directly when no shard can answer, and applies invalidations locally, in
//! Redis and (through pub/sub) on every other node.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::bypass::{Bypass, BypassReason, BypassStats};
use super::format::CachedValue;
use super::generations::{Family, Generations};
use super::reader::L2Reader;
use super::redis::RedisTier;
use super::shard::{ShardCounters, ShardMsg, ShardStats};
use super::shard_of;
use crate::metrics;
use crate::supervision::slot::{ActorSlot, AskError};

/// Loads a value on a miss. Called at most once per key at a time per shard.
pub type Loader = Arc<dyn Fn() -> BoxFuture<'static, Result<CachedValue, LoadError>> + Send + Sync>;

/// A loader's error, shared by every waiter of the load. Never cached.
#[derive(Debug, Clone)]
pub struct LoadError(pub Arc<dyn std::error::Error + Send + Sync>);

impl LoadError {
    /// Wraps any error.
    pub fn new(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(err))
    }
    /// The original error, if it is a `T`.
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.0.downcast_ref::<T>()
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for LoadError {}

/// Why a lookup gave no value.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The loader failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// No answer before the deadline (the load goes on and still fills the cache).
    #[error("the cache did not answer in time")]
    Timeout,
    /// The shard could not answer and the bounded path to the database is full.
    #[error("too many reads are bypassing the cache; try again shortly")]
    Overloaded,
}

/// Pub/sub message announcing invalidations to the other nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Announcement {
    pub node: String,
    #[serde(default)]
    pub families: Vec<(Family, i64)>,
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub flush: bool,
}

/// The pub/sub channel (suffix after the key prefix).
pub const CHANNEL: &str = "invalidate";

/// Per-shard numbers for the admin endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct ShardReport {
    pub shard: usize,
    pub available: bool,
    #[serde(flatten)]
    pub live: ShardStats,
    pub hits_l1: u64,
    pub hits_l2: u64,
    pub misses: u64,
    pub loads: u64,
    pub coalesced: u64,
    pub refreshes: u64,
    pub evictions: u64,
    pub load_errors: u64,
}

struct Inner {
    shards: Vec<ActorSlot<ShardMsg>>,
    counters: Vec<Arc<ShardCounters>>,
    l2: Option<RedisTier>,
    reader: Option<L2Reader>,
    generations: Generations,
    ask_timeout: Duration,
    /// Reads whose shard cannot answer go to the database through this.
    bypass: Bypass,
    node: String,
    /// Whether this node's invalidation subscription is live.
    subscribed: tokio::sync::watch::Sender<bool>,
}

/// The cache. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl Cache {
    /// A cache of `shards` shards (their actors are started by the cache supervisor).
    /// With `l2`, it starts the [`L2Reader`] (at most `l2_reads_in_flight` batches
    /// at once), so it must be called within a Tokio runtime. Reads whose shard
    /// cannot answer go to the database through `bypass`.
    pub fn new(
        shards: usize,
        l2: Option<RedisTier>,
        l2_reads_in_flight: usize,
        ask_timeout: Duration,
        bypass: Bypass,
    ) -> Self {
        let shards = shards.max(1);
        let inner = Inner {
            shards: (0..shards).map(|_| ActorSlot::new("cache-shard")).collect(),
            counters: (0..shards).map(|_| Arc::default()).collect(),
            reader: l2.as_ref().map(|tier| L2Reader::start(tier.clone(), l2_reads_in_flight)),
            l2,
            generations: Generations::default(),
            ask_timeout,
            bypass,
            node: uuid::Uuid::new_v4().to_string(),
            subscribed: tokio::sync::watch::Sender::new(false),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Shard `i`'s slot (its start function publishes each incarnation there).
    pub fn slot(&self, i: usize) -> Option<&ActorSlot<ShardMsg>> {
        self.inner.shards.get(i)
    }

    /// Shard `i`'s counters.
    pub fn counters(&self, i: usize) -> Arc<ShardCounters> {
        self.inner.counters.get(i).cloned().unwrap_or_default()
    }

    /// How many shards.
    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// The Redis tier, when configured.
    pub fn l2(&self) -> Option<&RedisTier> {
        self.inner.l2.as_ref()
    }

    /// The L2 reader the shards send their misses to, when L2 is configured.
    pub fn reader(&self) -> Option<&L2Reader> {
        self.inner.reader.as_ref()
    }

    /// This node's generation mirror.
    pub fn generations(&self) -> &Generations {
        &self.inner.generations
    }

    /// Records whether the invalidation subscription is live (the listener calls this).
    pub fn set_subscribed(&self, live: bool) {
        self.inner.subscribed.send_replace(live);
    }

    /// Waits up to `limit` for the invalidation subscription to be live; true if it is.
    /// A node that serves before then could cache pages whose invalidation it misses.
    pub async fn wait_subscribed(&self, limit: Duration) -> bool {
        let mut rx = self.inner.subscribed.subscribe();
        matches!(tokio::time::timeout(limit, rx.wait_for(|live| *live)).await, Ok(Ok(_)))
    }

    /// This node's id in announcements.
    pub fn node_id(&self) -> &str {
        &self.inner.node
    }

    /// The value of `key`: from L1, L2, or `loader` (once for all concurrent askers).
    pub async fn get(&self, key: String, ttl: Duration, loader: Loader) -> Result<CachedValue, CacheError> {
        let Some(slot) = self.inner.shards.get(shard_of(&key, self.inner.shards.len())) else {
            return loader().await.map_err(CacheError::Load);
        };
        let ask = slot
            .ask_idempotent(self.inner.ask_timeout, |reply| ShardMsg::Get {
                key: key.clone(),
                ttl,
                loader: loader.clone(),
                reply,
            })
            .await;
        let reason = match ask {
            Ok(result) => return result.map_err(CacheError::Load),
            Err(AskError::Timeout(_)) => return Err(CacheError::Timeout),
            Err(AskError::Down(_)) => BypassReason::ShardDown,
            Err(AskError::Unavailable(_) | AskError::Lost(_)) => BypassReason::ShardUnavailable,
        };
        // no shard to ask: serve from the database rather than fail, within bounds
        metrics::cache_lookup("l1", "bypass");
        Box::pin(self.inner.bypass.load(reason, &loader)).await
    }

    /// How many shards are marked down.
    pub fn shards_down(&self) -> usize {
        self.inner.shards.iter().filter(|slot| slot.is_down()).count()
    }

    /// What this node bypassed so far.
    pub fn bypass_stats(&self) -> BypassStats {
        self.inner.bypass.stats()
    }

    /// The key of a `kind` page that depends on `families` (and the epoch), stamped
    /// with their current generations; reads from Redis first those this node has
    /// not synced yet. The check is one read lock when all are synced.
    pub async fn stamped_key(&self, kind: &str, families: &[Family], identity: &str) -> String {
        if self.inner.l2.is_some() && !self.inner.generations.all_synced(families) {
            let mut all = Vec::with_capacity(families.len() + 1);
            all.push(Family::Epoch);
            all.extend_from_slice(families);
            // boxed: the rare path keeps its Redis future out of every read's state
            Box::pin(self.sync_generations(&all)).await;
        }
        self.inner.generations.key(kind, families, identity)
    }

    /// Reads from Redis the generations of families this node has not synced yet.
    pub async fn sync_generations(&self, families: &[Family]) {
        let Some(l2) = &self.inner.l2 else { return };
        let unsynced: Vec<Family> = self.inner.generations.unsynced(families).into_iter().cloned().collect();
        if unsynced.is_empty() {
            return;
        }
        let keys: Vec<String> = unsynced.iter().map(Family::counter_key).collect();
        if let Ok(values) = l2.mget_i64(&keys).await {
            for (family, value) in unsynced.iter().zip(values) {
                self.inner.generations.observe(family, value.unwrap_or(0));
            }
        }
    }

    /// Bumps families (in Redis when reachable, else locally) and evicts `keys`
    /// everywhere: this node's shards first (read-your-writes), then Redis, then
    /// the other nodes through pub/sub.
    pub async fn invalidate(&self, families: &[Family], keys: Vec<String>) {
        // families bumped only locally while Redis was unreachable go along now
        let mut families = families.to_vec();
        if self.inner.l2.is_some() {
            families.extend(self.inner.generations.take_dirty());
            families.sort();
            families.dedup();
        }
        let mut announced = Vec::with_capacity(families.len());
        for family in &families {
            let value = match &self.inner.l2 {
                Some(l2) => match l2.incr(&family.counter_key()).await {
                    Ok(value) => {
                        self.inner.generations.observe(family, value);
                        value
                    }
                    Err(_) => self.inner.generations.bump_local(family),
                },
                None => self.inner.generations.bump_local(family),
            };
            announced.push((family.clone(), value));
            metrics::cache_invalidation("local", "family");
        }
        if !keys.is_empty() {
            self.evict_local(&keys);
            metrics::cache_invalidation("local", "item");
        }
        if let Some(l2) = &self.inner.l2 {
            if !keys.is_empty() {
                let _ = l2.del(&keys).await;
            }
            let announcement =
                Announcement { node: self.inner.node.clone(), families: announced, keys, flush: false };
            if let Ok(text) = serde_json::to_string(&announcement) {
                let _ = l2.publish(CHANNEL, &text).await;
            }
        }
    }

    /// Sends `Evict` for each key to its shard.
    pub fn evict_local(&self, keys: &[String]) {
        let n = self.inner.shards.len();
        let mut per_shard: Vec<Vec<String>> = vec![Vec::new(); n];
        for key in keys {
            if let Some(bucket) = per_shard.get_mut(shard_of(key, n)) {
                bucket.push(key.clone());
            }
        }
        for (slot, keys) in self.inner.shards.iter().zip(per_shard) {
            if !keys.is_empty() {
                slot.cast(ShardMsg::Evict(keys));
            }
        }
    }

    /// Drops every L1 entry on this node.
    pub fn flush_local(&self) {
        for slot in &self.inner.shards {
            slot.cast(ShardMsg::Flush);
        }
    }

    /// Flushes everything: this node's L1, and L2 for every node (by bumping the
    /// epoch every key embeds), and tells the other nodes to flush their L1.
    pub async fn flush(&self) {
        self.flush_local();
        self.invalidate(&[Family::Epoch], Vec::new()).await;
        metrics::cache_invalidation("local", "flush");
        if let Some(l2) = &self.inner.l2 {
            let announcement = Announcement {
                node: self.inner.node.clone(),
                families: Vec::new(),
                keys: Vec::new(),
                flush: true,
            };
            if let Ok(text) = serde_json::to_string(&announcement) {
                let _ = l2.publish(CHANNEL, &text).await;
            }
        }
    }

    /// Applies another node's announcement.
    pub fn apply_remote(&self, text: &str) {
        let Ok(announcement) = serde_json::from_str::<Announcement>(text) else {
            tracing::warn!("ignoring a malformed cache announcement");
            return;
        };
        if announcement.node == self.inner.node {
            return;
        }
        for (family, value) in &announcement.families {
            self.inner.generations.observe(family, *value);
            metrics::cache_invalidation("remote", "family");
        }
        if !announcement.keys.is_empty() {
            self.evict_local(&announcement.keys);
            metrics::cache_invalidation("remote", "item");
        }
        if announcement.flush {
            self.flush_local();
            metrics::cache_invalidation("remote", "flush");
        }
    }

    /// The Redis connection dropped: announcements may be missed, so L1 cannot be trusted.
    pub fn on_disconnect(&self) {
        tracing::warn!("redis connection lost; flushing L1 because invalidations may be missed");
        self.inner.generations.mark_unsynced();
        self.flush_local();
    }

    /// Redis is back: push the families bumped locally meanwhile, and start L1 afresh.
    pub async fn on_reconnect(&self) {
        let mut dirty = self.inner.generations.take_dirty();
        // L1 goes first: nothing built with this node's local counters may survive the reset
        self.flush_local();
        self.inner.generations.reset();
        if let Some(l2) = &self.inner.l2 {
            // the pool may come back a moment after the subscriber
            l2.wait_connected(Duration::from_secs(2)).await;
        }
        // nothing was written to L2 under the local values, so one bump in Redis makes
        // every page cached before the outage unreachable for every node; the breaker
        // may still refuse for a moment, so retry a few times
        for attempt in 0..10u32 {
            if dirty.is_empty() {
                return;
            }
            tracing::info!(
                families = dirty.len(),
                attempt,
                "redis is back; bumping families changed during the outage"
            );
            self.invalidate(&dirty, Vec::new()).await;
            dirty = self.inner.generations.take_dirty();
            if !dirty.is_empty() {
                // refused again: forget the local values once more and wait
                self.flush_local();
                self.inner.generations.reset();
                tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt + 1))).await;
            }
        }
        // still unreachable: the next invalidation takes them along
        for family in &dirty {
            self.inner.generations.bump_local(family);
        }
    }

    /// Numbers for each shard; a shard that does not answer is reported unavailable.
    pub async fn report(&self) -> Vec<ShardReport> {
        let timeout = self.inner.ask_timeout.min(Duration::from_secs(1));
        let mut out = Vec::with_capacity(self.inner.shards.len());
        for (i, (slot, counters)) in self.inner.shards.iter().zip(&self.inner.counters).enumerate() {
            let live = slot.ask_idempotent(timeout, ShardMsg::Stats).await;
            let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            out.push(ShardReport {
                shard: i,
                available: live.is_ok(),
                live: live.unwrap_or_default(),
                hits_l1: load(&counters.hits_l1),
                hits_l2: load(&counters.hits_l2),
                misses: load(&counters.misses),
                loads: load(&counters.loads),
                coalesced: load(&counters.coalesced),
                refreshes: load(&counters.refreshes),
                evictions: load(&counters.evictions),
                load_errors: load(&counters.load_errors),
            });
        }
        let entries: u64 = out.iter().map(|r| r.live.entries as u64).sum();
        let bytes: u64 = out.iter().map(|r| r.live.bytes).sum();
        metrics::cache_l1_size(entries, bytes);
        out
    }
}
