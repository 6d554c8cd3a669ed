//! The shard's state machine, driven through its messages under paused time.

use std::sync::atomic::AtomicUsize;

use bytes::Bytes;
use ractor::rpc::CallResult;
use tokio::sync::{Semaphore, mpsc};

use super::*;
use crate::cache::reader::{Read, ReaderMsg};
use crate::cache::redis::CacheRedisError;
use crate::supervision::slot::ActorSlot;

const LOAD_TIMEOUT: Duration = Duration::from_secs(4);
const TTL: Duration = Duration::from_secs(60);

fn config() -> CacheShard {
    CacheShard {
        index: 0,
        l1_enabled: true,
        l1_max_bytes: 1 << 20,
        l1_max_entries: 128,
        negative_ttl: Duration::from_secs(5),
        ttl_jitter: 0.0,
        xfetch_beta: 0.0,
        compress_threshold: 1024,
        load_timeout: LOAD_TIMEOUT,
    }
}

fn value(body: &'static [u8]) -> CachedValue {
    CachedValue { body: Bytes::from_static(body), etag: None, not_found: false }
}

#[derive(Clone)]
struct Shard {
    actor: ActorRef<ShardMsg>,
    counters: Arc<ShardCounters>,
}

async fn start(reader: Option<L2Reader>) -> Shard {
    let counters = Arc::<ShardCounters>::default();
    let args = ShardArgs { l2: None, reader, counters: counters.clone(), stats: Arc::default() };
    let (actor, _handle) = Actor::spawn(None, config(), args).await.unwrap();
    Shard { actor, counters }
}

impl Shard {
    async fn get(&self, key: &str, loader: &Loader) -> Lookup {
        let (key, loader) = (key.to_owned(), loader.clone());
        let build = move |reply| ShardMsg::Get { key, ttl: TTL, loader, reply };
        match self.actor.call(build, None).await {
            Ok(CallResult::Success(lookup)) => lookup,
            _ => panic!("the shard did not answer"),
        }
    }

    /// `get` in a task of its own, to have several waiting at once.
    fn spawn_get(&self, key: &str, loader: &Loader) -> tokio::task::JoinHandle<Lookup> {
        let (shard, key, loader) = (self.clone(), key.to_owned(), loader.clone());
        tokio::spawn(async move { shard.get(&key, &loader).await })
    }

    async fn in_flight(&self) -> usize {
        match self.actor.call(ShardMsg::Stats, None).await {
            Ok(CallResult::Success(stats)) => stats.in_flight,
            _ => panic!("the shard did not answer"),
        }
    }

    fn count(&self, counter: impl Fn(&ShardCounters) -> &AtomicU64) -> u64 {
        counter(&self.counters).load(Ordering::Relaxed)
    }

    /// Yields until `counter` reaches `at_least` (the shard has handled the messages sent).
    async fn until(&self, counter: impl Fn(&ShardCounters) -> &AtomicU64, at_least: u64) {
        for _ in 0..10_000 {
            if self.count(&counter) >= at_least {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the counter never reached {at_least}");
    }
}

/// A loader answering `body` after taking a permit of `gate` (if any), counting its calls.
fn loader(calls: &Arc<AtomicUsize>, gate: Option<Arc<Semaphore>>, body: &'static [u8]) -> Loader {
    let calls = calls.clone();
    Arc::new(move || {
        calls.fetch_add(1, Ordering::SeqCst);
        let gate = gate.clone();
        async move {
            if let Some(gate) = gate {
                let _permit = gate.acquire().await;
            }
            Ok(value(body))
        }
        .boxed()
    })
}

fn hanging(calls: &Arc<AtomicUsize>) -> Loader {
    let calls = calls.clone();
    Arc::new(move || {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::pending().boxed()
    })
}

fn panicking(gate: Arc<Semaphore>) -> Loader {
    Arc::new(move || {
        let gate = gate.clone();
        async move {
            let _permit = gate.acquire().await;
            panic!("a bug in the loader");
        }
        .boxed()
    })
}

fn failure(lookup: &Lookup) -> Option<LoadFailure> {
    lookup.as_ref().err().and_then(|e| e.downcast_ref::<LoadFailure>()).cloned()
}

#[tokio::test(start_paused = true)]
async fn a_miss_loads_once_and_then_hits() {
    let shard = start(None).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let load = loader(&calls, None, b"one");
    assert_eq!(shard.get("k", &load).await.unwrap(), value(b"one"));
    assert_eq!(shard.get("k", &load).await.unwrap(), value(b"one"));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the second read is a hit");
    assert_eq!((shard.count(|c| &c.misses), shard.count(|c| &c.hits_l1)), (1, 1));
    assert_eq!(shard.in_flight().await, 0);
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_share_one_load() {
    let shard = start(None).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let load = loader(&calls, Some(gate.clone()), b"shared");
    let waiters: Vec<_> = (0..5).map(|_| shard.spawn_get("k", &load)).collect();
    shard.until(|c| &c.coalesced, 4).await;
    assert_eq!(shard.in_flight().await, 1);
    gate.add_permits(1);
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap().unwrap(), value(b"shared"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one load for five misses");
    assert_eq!(shard.in_flight().await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_load_that_hangs_is_given_up_at_its_deadline_and_the_key_loads_again() {
    let shard = start(None).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let stuck = hanging(&calls);
    let started = Instant::now();
    let waiters: Vec<_> = (0..3).map(|_| shard.spawn_get("k", &stuck)).collect();
    for waiter in waiters {
        let lookup = waiter.await.unwrap();
        assert_eq!(failure(&lookup), Some(LoadFailure::TimedOut(LOAD_TIMEOUT)), "{:?}", lookup.err());
    }
    // every waiter answered at the load's deadline, not later
    let waited = started.elapsed();
    assert!(waited >= LOAD_TIMEOUT && waited < LOAD_TIMEOUT + Duration::from_millis(10), "{waited:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(shard.count(|c| &c.load_timeouts), 1);
    // the key is free: the next read loads again, and that load fills it
    assert_eq!(shard.in_flight().await, 0);
    let fresh = Arc::new(AtomicUsize::new(0));
    assert_eq!(shard.get("k", &loader(&fresh, None, b"back")).await.unwrap(), value(b"back"));
    assert_eq!(fresh.load(Ordering::SeqCst), 1);
    assert_eq!(shard.get("k", &stuck).await.unwrap(), value(b"back"), "now a hit");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_load_is_an_error_for_its_waiters() {
    let shard = start(None).await;
    let gate = Arc::new(Semaphore::new(0));
    let buggy = panicking(gate.clone());
    let waiters: Vec<_> = (0..2).map(|_| shard.spawn_get("k", &buggy)).collect();
    shard.until(|c| &c.coalesced, 1).await;
    gate.add_permits(1);
    for waiter in waiters {
        assert_eq!(failure(&waiter.await.unwrap()), Some(LoadFailure::Panicked));
    }
    assert_eq!(shard.count(|c| &c.load_panics), 1);
    // the shard lives on, and the key is free
    let calls = Arc::new(AtomicUsize::new(0));
    assert_eq!(shard.get("k", &loader(&calls, None, b"ok")).await.unwrap(), value(b"ok"));
}

/// Stands in for the L2 reader: hands every read to the test.
struct FakeReader;

impl Actor for FakeReader {
    type Msg = ReaderMsg;
    type State = mpsc::UnboundedSender<Read>;
    type Arguments = mpsc::UnboundedSender<Read>;

    async fn pre_start(
        &self,
        _myself: ActorRef<ReaderMsg>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle(
        &self,
        _myself: ActorRef<ReaderMsg>,
        message: ReaderMsg,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let ReaderMsg::Read(read) = message {
            let _ = tx.send(read);
        }
        Ok(())
    }
}

async fn fake_reader(max_queued: usize) -> (L2Reader, mpsc::UnboundedReceiver<Read>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (actor, _handle) = Actor::spawn(None, FakeReader, tx).await.unwrap();
    let reader = L2Reader::new(ActorSlot::new("cache-l2-reader"), max_queued);
    reader.slot().set(actor);
    (reader, rx)
}

fn answer(read: Read, outcome: Result<Option<CachedValue>, CacheRedisError>) {
    let (shard, answer) = read.answer(outcome);
    shard.cast(ShardMsg::L2Read(vec![answer])).unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_l2_hit_answers_without_loading() {
    let (reader, mut reads) = fake_reader(16).await;
    let shard = start(Some(reader)).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let load = loader(&calls, None, b"from the database");
    let waiter = shard.spawn_get("k", &load);
    let read = reads.recv().await.unwrap();
    assert_eq!(read.key(), "k");
    answer(read, Ok(Some(value(b"from redis"))));
    assert_eq!(waiter.await.unwrap().unwrap(), value(b"from redis"));
    assert_eq!(calls.load(Ordering::SeqCst), 0, "an L2 hit runs no loader");
    assert_eq!(shard.count(|c| &c.hits_l2), 1);
    // and fills L1: the next read asks neither Redis nor the loader
    assert_eq!(shard.get("k", &load).await.unwrap(), value(b"from redis"));
    assert!(reads.try_recv().is_err());
    assert_eq!(shard.count(|c| &c.hits_l1), 1);
}

#[tokio::test(start_paused = true)]
async fn an_l2_miss_failure_or_lost_read_loads_from_the_loader() {
    let (reader, mut reads) = fake_reader(16).await;
    let shard = start(Some(reader)).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let load = loader(&calls, None, b"loaded");
    let outcomes: [Option<Result<Option<CachedValue>, CacheRedisError>>; 3] =
        [Some(Ok(None)), Some(Err(CacheRedisError::Timeout)), None];
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let waiter = shard.spawn_get(&format!("k{i}"), &load);
        let read = reads.recv().await.unwrap();
        match outcome {
            Some(outcome) => answer(read, outcome),
            // dropped unanswered, as by a reader that died with it
            None => drop(read),
        }
        assert_eq!(waiter.await.unwrap().unwrap(), value(b"loaded"));
        assert_eq!(calls.load(Ordering::SeqCst), i + 1);
    }
    assert_eq!(shard.count(|c| &c.hits_l2), 0);
}

#[tokio::test(start_paused = true)]
async fn a_miss_the_reader_cannot_queue_goes_to_the_loader_at_once() {
    let (reader, mut reads) = fake_reader(1).await;
    let shard = start(Some(reader.clone())).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let load = loader(&calls, None, b"loaded");
    let first = shard.spawn_get("a", &load);
    // held by the test: its place in the reader's queue stays taken
    let held = reads.recv().await.unwrap();
    assert_eq!(shard.get("b", &load).await.unwrap(), value(b"loaded"));
    assert_eq!((reader.refused(), calls.load(Ordering::SeqCst)), (1, 1));
    assert!(reads.try_recv().is_err(), "the second miss was not queued");
    drop(held);
    assert_eq!(first.await.unwrap().unwrap(), value(b"loaded"));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
