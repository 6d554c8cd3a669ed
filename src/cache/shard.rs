//! CacheActor: one shard of the Explore cache. It owns the L1 for its slice of
//! the key space (bounded by bytes, `quick_cache`'s unsync cache with a weigher)
//! and coalesces concurrent misses for a key into one load (single flight).
//!
//! The mailbox never waits on I/O: an L2 lookup goes to the node's
//! [`L2Reader`], which batches the misses of every shard into `MGET`s and answers
//! with [`ShardMsg::L2Read`]; on a miss there the loader runs as a tracked task
//! whose result comes back as [`ShardMsg::Filled`], and the task writes L2 after
//! the waiters have their answer. A waiter whose deadline passes gets a timeout
//! from its ask, while the load still fills the cache.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use quick_cache::unsync::Cache as L1;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::format::{self, CachedValue};
use super::handle::{LoadError, Loader};
use super::reader::{L2Answer, L2Reader, Read};
use super::redis::RedisTier;
use crate::metrics;
use crate::supervision::child::ChaosTarget;
use crate::supervision::supervisor::chaos_panic;
use crate::supervision::tree::ActorStats;

/// What a shard answers a lookup with.
pub type Lookup = Result<CachedValue, LoadError>;

/// Messages a CacheActor handles.
pub enum ShardMsg {
    /// Look a key up; on a miss, load it with `loader` (once, however many ask).
    Get { key: String, ttl: Duration, loader: Loader, reply: RpcReplyPort<Lookup> },
    /// A load task finished.
    Filled { key: String, ticket: u64, result: Result<Loaded, LoadError> },
    /// The L2 reader's answers for keys of this shard.
    L2Read(Vec<L2Answer>),
    /// Drop these keys from L1 (and make in-flight loads of them not fill L1).
    Evict(Vec<String>),
    /// Drop everything from L1.
    Flush,
    /// Entries, bytes and in-flight loads.
    Stats(RpcReplyPort<ShardStats>),
    /// Chaos: panic while handling this message.
    Panic,
}

impl ractor::Message for ShardMsg {}

impl ChaosTarget for ShardMsg {
    fn chaos_panic() -> Self {
        Self::Panic
    }
}

/// A finished load.
pub struct Loaded {
    pub value: CachedValue,
    pub ttl: Duration,
    /// How long computing it took (XFetch's δ).
    pub delta: Duration,
    pub from_l2: bool,
}

/// Counters that outlive a shard's restarts (read by `GET /api/v1/admin/cache`).
#[derive(Debug, Default)]
pub struct ShardCounters {
    pub hits_l1: AtomicU64,
    pub hits_l2: AtomicU64,
    pub misses: AtomicU64,
    pub loads: AtomicU64,
    pub coalesced: AtomicU64,
    pub refreshes: AtomicU64,
    pub evictions: AtomicU64,
    pub load_errors: AtomicU64,
}

/// A shard's live numbers.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ShardStats {
    pub entries: usize,
    pub bytes: u64,
    pub in_flight: usize,
}

/// A shard's configuration.
#[derive(Debug, Clone)]
pub struct CacheShard {
    pub index: usize,
    pub l1_enabled: bool,
    pub l1_max_bytes: u64,
    pub l1_max_entries: usize,
    pub negative_ttl: Duration,
    pub ttl_jitter: f64,
    pub xfetch_beta: f64,
    pub compress_threshold: usize,
}

/// What a shard is started with.
pub struct ShardArgs {
    pub l2: Option<RedisTier>,
    /// Reads L2 for misses (present with `l2`).
    pub reader: Option<L2Reader>,
    pub counters: Arc<ShardCounters>,
    pub stats: Arc<ActorStats>,
}

struct Entry {
    value: CachedValue,
    expires_at: Instant,
    delta: Duration,
}

#[derive(Clone)]
struct ByBytes;

impl Weighter<String, Entry> for ByBytes {
    fn weight(&self, key: &String, entry: &Entry) -> u64 {
        // the key, the body and the entry's own bookkeeping
        u64::try_from(key.len() + entry.value.body.len() + 96).unwrap_or(u64::MAX)
    }
}

#[derive(Clone)]
struct CountEvictions(Arc<ShardCounters>);

impl Lifecycle<String, Entry> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: String, _entry: Entry) {
        self.0.evictions.fetch_add(1, Ordering::Relaxed);
        metrics::cache_eviction();
    }
}

struct InFlight {
    ticket: u64,
    waiters: Vec<RpcReplyPort<Lookup>>,
    /// Evicted while loading: the waiters get their answer, but neither L1 nor L2 is
    /// filled with it (the task reads this before writing L2).
    stale: Arc<AtomicBool>,
    /// The TTL asked for (before jitter).
    ttl: Duration,
    /// Kept while L2 is being read: a miss there starts the loader with it.
    loader: Option<Loader>,
    /// The loader's task, once started.
    task: Option<JoinHandle<()>>,
}

/// A shard's state.
pub struct ShardState {
    l1: L1<String, Entry, ByBytes, DefaultHashBuilder, CountEvictions>,
    in_flight: HashMap<String, InFlight>,
    /// Loads overtaken by an invalidation, by ticket: their waiters still get an
    /// answer, while new askers start a fresh load.
    orphans: HashMap<u64, InFlight>,
    next_ticket: u64,
    l2: Option<RedisTier>,
    reader: Option<L2Reader>,
    counters: Arc<ShardCounters>,
    stats: Arc<ActorStats>,
    rng: StdRng,
    /// `cache_lookups_total` for each tier and outcome a lookup can have, kept: every
    /// lookup counts one.
    l1_hits: ::metrics::Counter,
    l1_misses: ::metrics::Counter,
    l2_hits: ::metrics::Counter,
    l2_misses: ::metrics::Counter,
}

impl Actor for CacheShard {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ShardArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ShardMsg>,
        args: ShardArgs,
    ) -> Result<ShardState, ActorProcessingErr> {
        let options = OptionsBuilder::new()
            .estimated_items_capacity(self.l1_max_entries.max(16))
            .weight_capacity(self.l1_max_bytes.max(1024))
            .build()
            .map_err(|e| format!("invalid L1 options: {e:?}"))?;
        let l1 = L1::with_options(
            options,
            ByBytes,
            DefaultHashBuilder::default(),
            CountEvictions(args.counters.clone()),
        );
        Ok(ShardState {
            l1,
            in_flight: HashMap::new(),
            orphans: HashMap::new(),
            next_ticket: 0,
            l2: args.l2,
            reader: args.reader,
            counters: args.counters,
            stats: args.stats,
            rng: StdRng::from_os_rng(),
            l1_hits: metrics::cache_lookup_counter("l1", "hit"),
            l1_misses: metrics::cache_lookup_counter("l1", "miss"),
            l2_hits: metrics::cache_lookup_counter("l2", "hit"),
            l2_misses: metrics::cache_lookup_counter("l2", "miss"),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ShardMsg>,
        message: ShardMsg,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        state.stats.handled();
        match message {
            ShardMsg::Get { key, ttl, loader, reply } => self.get(&myself, state, key, ttl, loader, reply),
            ShardMsg::Filled { key, ticket, result } => self.filled(state, key, ticket, result),
            ShardMsg::L2Read(answers) => {
                for answer in answers {
                    self.l2_answered(&myself, state, answer);
                }
            }
            ShardMsg::Evict(keys) => {
                for key in keys {
                    state.l1.remove(&key);
                    if let Some(flight) = state.in_flight.remove(&key) {
                        orphan(state, flight);
                    }
                }
            }
            ShardMsg::Flush => {
                state.l1.clear();
                let flights: Vec<InFlight> = state.in_flight.drain().map(|(_, f)| f).collect();
                for flight in flights {
                    orphan(state, flight);
                }
            }
            ShardMsg::Stats(reply) => {
                let stats = ShardStats {
                    entries: state.l1.len(),
                    bytes: state.l1.weight(),
                    in_flight: state.in_flight.len(),
                };
                let _ = reply.send(stats);
            }
            ShardMsg::Panic => chaos_panic(&format!("cache-shard-{}", self.index)),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ShardMsg>,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        for (_, flight) in
            state.in_flight.drain().chain(state.orphans.drain().map(|(_, f)| (String::new(), f)))
        {
            if let Some(task) = flight.task {
                task.abort();
            }
        }
        Ok(())
    }
}

/// Sets a load aside after an invalidation: it must not fill either tier.
fn orphan(state: &mut ShardState, flight: InFlight) {
    flight.stale.store(true, Ordering::Release);
    state.orphans.insert(flight.ticket, flight);
}

impl CacheShard {
    fn get(
        &self,
        myself: &ActorRef<ShardMsg>,
        state: &mut ShardState,
        key: String,
        ttl: Duration,
        loader: Loader,
        reply: RpcReplyPort<Lookup>,
    ) {
        let now = Instant::now();
        if self.l1_enabled
            && let Some(entry) = state.l1.get(&key)
        {
            if entry.expires_at > now {
                let value = entry.value.clone();
                let refresh = format::should_refresh_early(
                    now,
                    entry.expires_at,
                    entry.delta,
                    self.xfetch_beta,
                    &mut state.rng,
                );
                state.counters.hits_l1.fetch_add(1, Ordering::Relaxed);
                state.l1_hits.increment(1);
                let _ = reply.send(Ok(value));
                if refresh && !state.in_flight.contains_key(&key) {
                    state.counters.refreshes.fetch_add(1, Ordering::Relaxed);
                    self.start_load(myself, state, key, ttl, loader, None, true);
                }
                return;
            }
            state.l1.remove(&key);
        }
        if let Some(flight) = state.in_flight.get_mut(&key) {
            state.counters.coalesced.fetch_add(1, Ordering::Relaxed);
            metrics::cache_coalesced();
            flight.waiters.push(reply);
            return;
        }
        state.counters.misses.fetch_add(1, Ordering::Relaxed);
        state.l1_misses.increment(1);
        self.start_load(myself, state, key, ttl, loader, Some(reply), false);
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site per kind of load; a struct would only rename them"
    )]
    fn start_load(
        &self,
        myself: &ActorRef<ShardMsg>,
        state: &mut ShardState,
        key: String,
        ttl: Duration,
        loader: Loader,
        waiter: Option<RpcReplyPort<Lookup>>,
        skip_l2_read: bool,
    ) {
        state.next_ticket += 1;
        let ticket = state.next_ticket;
        let stale = Arc::new(AtomicBool::new(false));
        let waiters = waiter.into_iter().collect();
        let mut flight = InFlight { ticket, waiters, stale, ttl, loader: None, task: None };
        match state.reader.as_ref().filter(|_| !skip_l2_read) {
            Some(reader) => {
                flight.loader = Some(loader);
                reader.read(Read::new(key.clone(), ticket, myself.clone()));
            }
            None => {
                let task = self.spawn_loader(myself, state, &key, ticket, ttl, loader, &flight.stale);
                flight.task = Some(task);
            }
        }
        state.in_flight.insert(key, flight);
    }

    /// Runs `loader` as a tracked task: its result comes back as [`ShardMsg::Filled`],
    /// then (unless `stale` by then) it is written to L2.
    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of a flight the task needs; a struct would only rename them"
    )]
    fn spawn_loader(
        &self,
        myself: &ActorRef<ShardMsg>,
        state: &mut ShardState,
        key: &str,
        ticket: u64,
        ttl: Duration,
        loader: Loader,
        stale: &Arc<AtomicBool>,
    ) -> JoinHandle<()> {
        let l2 = state.l2.clone();
        let counters = state.counters.clone();
        let actor = myself.clone();
        let task_key = key.to_owned();
        let jittered = format::jittered_ttl(ttl, self.ttl_jitter, &mut state.rng);
        let negative_ttl = format::jittered_ttl(self.negative_ttl, self.ttl_jitter, &mut state.rng);
        let threshold = self.compress_threshold;
        let task_stale = stale.clone();
        tokio::spawn(async move {
            counters.loads.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let result = loader().await;
            let delta = started.elapsed();
            metrics::cache_tier_latency("loader", delta);
            let to_store = result.as_ref().ok().cloned();
            let loaded = result.map(|value| {
                let ttl = if value.not_found { negative_ttl } else { jittered };
                Loaded { value, ttl, delta, from_l2: false }
            });
            if loaded.is_err() {
                counters.load_errors.fetch_add(1, Ordering::Relaxed);
            }
            let store_ttl = loaded.as_ref().map(|l| l.ttl).unwrap_or(jittered);
            let _ = actor.cast(ShardMsg::Filled { key: task_key.clone(), ticket, result: loaded });
            // waiters have their answer; now share it with the other nodes
            if let (Some(l2), Some(value)) = (l2, to_store)
                && !task_stale.load(Ordering::Acquire)
            {
                // boxed: the Redis future is large, and a small task is cheaper to spawn
                let _ = Box::pin(l2.set(&task_key, &value, store_ttl, threshold)).await;
            }
        })
    }

    /// The reader's answer for one key: a hit completes the flight; a miss, or no
    /// answer from Redis, starts the loader.
    fn l2_answered(&self, myself: &ActorRef<ShardMsg>, state: &mut ShardState, answer: L2Answer) {
        let L2Answer { key, ticket, outcome } = answer;
        let current = state.in_flight.get(&key).is_some_and(|f| f.ticket == ticket);
        let flight = if current { state.in_flight.get_mut(&key) } else { state.orphans.get_mut(&ticket) };
        // a flight already answered, or dropped with a stopped shard's state
        let Some(flight) = flight else { return };
        match outcome {
            Ok(Some(value)) => {
                state.counters.hits_l2.fetch_add(1, Ordering::Relaxed);
                state.l2_hits.increment(1);
                let base = if value.not_found { self.negative_ttl } else { flight.ttl };
                let ttl = format::jittered_ttl(base, self.ttl_jitter, &mut state.rng);
                let loaded = Loaded { value, ttl, delta: Duration::ZERO, from_l2: true };
                self.filled(state, key, ticket, Ok(loaded));
            }
            outcome => {
                if let Err(error) = outcome {
                    tracing::debug!(%error, "no answer from L2; loading");
                }
                state.l2_misses.increment(1);
                // the loader is taken once: a second answer for the ticket finds none
                let (Some(loader), ttl, stale) = (flight.loader.take(), flight.ttl, flight.stale.clone())
                else {
                    return;
                };
                let task = self.spawn_loader(myself, state, &key, ticket, ttl, loader, &stale);
                let flight =
                    if current { state.in_flight.get_mut(&key) } else { state.orphans.get_mut(&ticket) };
                if let Some(flight) = flight {
                    flight.task = Some(task);
                }
            }
        }
    }

    fn filled(&self, state: &mut ShardState, key: String, ticket: u64, result: Result<Loaded, LoadError>) {
        let flight = match state.in_flight.remove(&key) {
            Some(flight) if flight.ticket == ticket => flight,
            other => {
                // not the current load of this key: put that back, and look among the orphans
                if let Some(current) = other {
                    state.in_flight.insert(key.clone(), current);
                }
                let Some(orphan) = state.orphans.remove(&ticket) else { return };
                orphan
            }
        };
        let answer = result.as_ref().map(|l| l.value.clone()).map_err(Clone::clone);
        for waiter in flight.waiters {
            let _ = waiter.send(answer.clone());
        }
        if let Ok(loaded) = result
            && self.l1_enabled
            && !flight.stale.load(Ordering::Acquire)
        {
            let entry =
                Entry { expires_at: Instant::now() + loaded.ttl, delta: loaded.delta, value: loaded.value };
            state.l1.insert(key, entry);
        }
    }
}
