//! The L2 reader: one actor per node (`cache-l2-reader`, under the cache
//! supervisor) that reads Redis for the misses of every shard, many keys to an
//! `MGET`.
//!
//! A shard that misses in L1 hands the key to the reader ([`L2Reader::read`])
//! and goes on with its mailbox; the reader answers with
//! [`ShardMsg::L2Read`], one message per shard per batch. While a batch is in
//! flight, the keys that arrive wait and go out together in the next one
//! (at most [`MAX_BATCH`] keys, at most `max_in_flight` batches at once), so a
//! busy node sends far fewer commands to Redis than it serves misses, and a
//! quiet one sends each key at once: nothing waits for a timer (a read queues a
//! [`ReaderMsg::Dispatch`] behind itself, so every read already in the mailbox
//! joins the batch). A read that has waited a whole Redis command timeout for
//! its turn (Redis is slow, every batch in flight is stuck) is not sent: it
//! answers [`CacheRedisError::Timeout`], so a miss waits at most about two
//! command timeouts before its shard goes to the database.
//!
//! Bounded: at most `max_queued` reads wait for the reader at once (in its
//! mailbox or its pending list; a permit each, given back when the read goes
//! out in a batch). A miss past that is not queued: [`L2Reader::read`] says so
//! and the shard goes to the loader at once, as for a Redis failure.
//!
//! Nothing is lost: a read that is dropped unanswered (the reader was killed
//! with it in its mailbox or pending list, or its batch was aborted with the
//! reader) answers its shard as a Redis failure on the way out, and the shard
//! loads the key from the database instead. The batches of a reader that dies
//! are aborted with it (they belong to its state), so each of their reads
//! answers that way too; the supervisor restarts the reader.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::format::CachedValue;
use super::redis::{CacheRedisError, RedisTier};
use super::shard::ShardMsg;
use crate::metrics;
use crate::supervision::child::ChaosTarget;
use crate::supervision::slot::ActorSlot;
use crate::supervision::supervisor::chaos_panic;
use crate::supervision::tree::ActorStats;

/// Most keys in one `MGET`.
pub const MAX_BATCH: usize = 64;

/// What a shard gets back for one key.
pub struct L2Answer {
    pub key: String,
    pub ticket: u64,
    /// The value, `None` for a miss, or why Redis gave no answer.
    pub outcome: Result<Option<CachedValue>, CacheRedisError>,
}

/// One key to read for a shard. Dropped unanswered, it answers
/// [`CacheRedisError::Unavailable`], so its shard never waits for it forever.
pub struct Read {
    key: String,
    ticket: u64,
    shard: ActorRef<ShardMsg>,
    queued_at: Instant,
    answered: bool,
    /// Its place in the reader's queue, given back when it goes out in a batch.
    place: Option<OwnedSemaphorePermit>,
}

impl Read {
    /// `key` for the load `ticket` of `shard`.
    #[must_use]
    pub fn new(key: String, ticket: u64, shard: ActorRef<ShardMsg>) -> Self {
        Self { key, ticket, shard, queued_at: Instant::now(), answered: false, place: None }
    }

    /// The key to read.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Takes the answer out, leaving nothing for `Drop` to send.
    pub(super) fn answer(
        mut self,
        outcome: Result<Option<CachedValue>, CacheRedisError>,
    ) -> (ActorRef<ShardMsg>, L2Answer) {
        self.answered = true;
        let key = std::mem::take(&mut self.key);
        (self.shard.clone(), L2Answer { key, ticket: self.ticket, outcome })
    }
}

impl Drop for Read {
    fn drop(&mut self) {
        if !self.answered {
            let key = std::mem::take(&mut self.key);
            let answer = L2Answer { key, ticket: self.ticket, outcome: Err(CacheRedisError::Unavailable) };
            // a stopped shard needs no answer
            let _ = self.shard.cast(ShardMsg::L2Read(vec![answer]));
        }
    }
}

/// Messages the L2 reader handles.
pub enum ReaderMsg {
    /// A key to read for a shard.
    Read(Read),
    /// Send what is pending (queued behind the reads that asked for it).
    Dispatch,
    /// A batch answered its reads.
    BatchDone,
    /// Chaos: panic while handling this message.
    Panic,
}

impl ractor::Message for ReaderMsg {}

impl ChaosTarget for ReaderMsg {
    fn chaos_panic() -> Self {
        Self::Panic
    }
}

/// The handle shards send reads through: the reader's slot and its queue bound.
/// Cheap to clone; it outlives the reader's restarts.
#[derive(Clone)]
pub struct L2Reader {
    slot: ActorSlot<ReaderMsg>,
    queue: Arc<Semaphore>,
    max_queued: usize,
    refused: Arc<AtomicU64>,
}

impl L2Reader {
    /// A handle for the reader published in `slot`, with at most `max_queued`
    /// (at least 1) reads waiting for it.
    #[must_use]
    pub fn new(slot: ActorSlot<ReaderMsg>, max_queued: usize) -> Self {
        let max_queued = max_queued.clamp(1, Semaphore::MAX_PERMITS);
        Self { slot, queue: Arc::new(Semaphore::new(max_queued)), max_queued, refused: Arc::default() }
    }

    /// Where the supervisor's start function publishes each incarnation.
    #[must_use]
    pub fn slot(&self) -> &ActorSlot<ReaderMsg> {
        &self.slot
    }

    /// Queues a read of `key` for the load `ticket` of `shard`; false, with nothing
    /// queued, when `max_queued` reads are waiting already or the reader is not
    /// running: the shard should load at once. A read queued to a reader that dies
    /// answers its shard as a Redis failure.
    pub fn read(&self, key: String, ticket: u64, shard: ActorRef<ShardMsg>) -> bool {
        let Ok(place) = self.queue.clone().try_acquire_owned() else {
            return self.refuse("queue_full");
        };
        let Some(actor) = self.slot.get().filter(|_| !self.slot.is_down()) else {
            return self.refuse("reader_down");
        };
        let mut read = Read::new(key, ticket, shard);
        read.place = Some(place);
        match actor.cast(ReaderMsg::Read(read)) {
            Ok(()) => true,
            // dead, not restarted yet: the shard loads at once, and needs no answer
            Err(MessagingErr::SendErr(ReaderMsg::Read(mut read))) => {
                read.answered = true;
                self.refuse("reader_down")
            }
            // the read was dropped, and answered from its `Drop`; that answer finds no
            // read pending and is ignored, as the shard loads at once
            Err(_) => self.refuse("reader_down"),
        }
    }

    fn refuse(&self, reason: &'static str) -> bool {
        self.refused.fetch_add(1, Ordering::Relaxed);
        metrics::cache_l2_read_refused(reason);
        false
    }

    /// Reads waiting for the reader now (in its mailbox or pending list).
    #[must_use]
    pub fn queued(&self) -> usize {
        self.max_queued.saturating_sub(self.queue.available_permits())
    }

    /// Misses this handle did not queue so far.
    #[must_use]
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// The L2 reader's configuration.
pub struct L2ReaderActor {
    pub tier: RedisTier,
    /// `MGET`s in flight at once (at least 1).
    pub max_in_flight: usize,
}

/// What the L2 reader is started with.
pub struct ReaderArgs {
    pub stats: Arc<ActorStats>,
}

/// The L2 reader's state.
pub struct ReaderState {
    /// Oldest first; bounded by the handle's queue permits.
    pending: VecDeque<Read>,
    /// Batches sent and not answered yet.
    in_flight: usize,
    /// The batches' tasks: dropped with the state, they are aborted and their reads
    /// answer from their `Drop`.
    batches: JoinSet<()>,
    /// A [`ReaderMsg::Dispatch`] is in the mailbox already.
    dispatch_queued: bool,
    stats: Arc<ActorStats>,
}

impl Actor for L2ReaderActor {
    type Msg = ReaderMsg;
    type State = ReaderState;
    type Arguments = ReaderArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ReaderMsg>,
        args: ReaderArgs,
    ) -> Result<ReaderState, ActorProcessingErr> {
        Ok(ReaderState {
            pending: VecDeque::new(),
            in_flight: 0,
            batches: JoinSet::new(),
            dispatch_queued: false,
            stats: args.stats,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ReaderMsg>,
        message: ReaderMsg,
        state: &mut ReaderState,
    ) -> Result<(), ActorProcessingErr> {
        state.stats.handled();
        match message {
            ReaderMsg::Read(read) => {
                state.pending.push_back(read);
                if !state.dispatch_queued {
                    state.dispatch_queued = myself.cast(ReaderMsg::Dispatch).is_ok();
                }
            }
            ReaderMsg::Dispatch => {
                state.dispatch_queued = false;
                self.dispatch(&myself, state);
            }
            ReaderMsg::BatchDone => {
                state.in_flight = state.in_flight.saturating_sub(1);
                // reap what has finished, so the set does not grow
                while state.batches.try_join_next().is_some() {}
                self.dispatch(&myself, state);
            }
            ReaderMsg::Panic => chaos_panic("cache-l2-reader"),
        }
        Ok(())
    }
}

impl L2ReaderActor {
    /// Answers the reads that waited too long, then sends batches while there is room.
    fn dispatch(&self, myself: &ActorRef<ReaderMsg>, state: &mut ReaderState) {
        // oldest first: those that waited too long for a batch go to the database
        let patience = self.tier.command_timeout();
        let now = Instant::now();
        let expired =
            state.pending.partition_point(|r| now.saturating_duration_since(r.queued_at) >= patience);
        if expired > 0 {
            let late: Vec<Read> = state.pending.drain(..expired).collect();
            answer(late.into_iter().map(|read| (read, Err(CacheRedisError::Timeout))));
        }
        while !state.pending.is_empty() && state.in_flight < self.max_in_flight.max(1) {
            let take = state.pending.len().min(MAX_BATCH);
            let batch: Vec<Read> = state
                .pending
                .drain(..take)
                .map(|mut read| {
                    // out of the queue: its place is free for the next miss
                    read.place = None;
                    read
                })
                .collect();
            state.in_flight += 1;
            let done = myself.clone();
            state.batches.spawn(read_batch(self.tier.clone(), batch).map(move |()| {
                let _ = done.cast(ReaderMsg::BatchDone);
            }));
        }
    }
}

/// One `MGET` for `batch`, each answer sent to its shard (one message per shard).
async fn read_batch(tier: RedisTier, batch: Vec<Read>) {
    let keys: Vec<&str> = batch.iter().map(|r| r.key.as_str()).collect();
    let started = Instant::now();
    let outcome = tier.get_many(&keys).await;
    let elapsed = started.elapsed();
    let answers: Vec<Result<Option<CachedValue>, CacheRedisError>> = match outcome {
        Ok(values) => values.into_iter().map(Ok).collect(),
        Err(error) => vec![Err(error); batch.len()],
    };
    let hits = answers.iter().filter(|a| matches!(a, Ok(Some(_)))).count();
    let latency = metrics::cache_tier_latency_histogram("l2");
    for _ in 0..hits {
        latency.record(elapsed.as_secs_f64());
    }
    // a read left without an answer (fewer values than keys) answers from its `Drop`
    answer(batch.into_iter().zip(answers));
}

/// Sends each read's answer to its shard, one message per shard.
fn answer(reads: impl Iterator<Item = (Read, Result<Option<CachedValue>, CacheRedisError>)>) {
    let mut per_shard: Vec<(ActorRef<ShardMsg>, Vec<L2Answer>)> = Vec::new();
    for (read, outcome) in reads {
        let (shard, answer) = read.answer(outcome);
        match per_shard.iter_mut().find(|(s, _)| s.get_id() == shard.get_id()) {
            Some((_, answers)) => answers.push(answer),
            None => per_shard.push((shard, vec![answer])),
        }
    }
    for (shard, answers) in per_shard {
        let _ = shard.cast(ShardMsg::L2Read(answers));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::sync::mpsc;

    use super::*;
    use crate::cache::redis::RedisSettings;
    use crate::cache::redis::tests::Cutter;
    use crate::supervision::breaker::BreakerConfig;

    const DEADLINE: Duration = Duration::from_secs(10);

    /// A reader over `tier` (not supervised), published in its handle's slot.
    async fn start(
        tier: RedisTier,
        max_in_flight: usize,
        max_queued: usize,
    ) -> (L2Reader, ActorRef<ReaderMsg>) {
        let reader = L2Reader::new(ActorSlot::new("cache-l2-reader"), max_queued);
        let args = ReaderArgs { stats: Arc::default() };
        let (actor, _handle) = Actor::spawn(None, L2ReaderActor { tier, max_in_flight }, args).await.unwrap();
        reader.slot().set(actor.clone());
        (reader, actor)
    }

    /// Stands in for a shard: forwards every `L2Read` it gets.
    struct Sink;

    impl Actor for Sink {
        type Msg = ShardMsg;
        type State = mpsc::UnboundedSender<Vec<L2Answer>>;
        type Arguments = mpsc::UnboundedSender<Vec<L2Answer>>;

        async fn pre_start(
            &self,
            _myself: ActorRef<ShardMsg>,
            tx: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(tx)
        }

        async fn handle(
            &self,
            _myself: ActorRef<ShardMsg>,
            message: ShardMsg,
            tx: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            if let ShardMsg::L2Read(answers) = message {
                let _ = tx.send(answers);
            }
            Ok(())
        }
    }

    async fn sink() -> (ActorRef<ShardMsg>, mpsc::UnboundedReceiver<Vec<L2Answer>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (actor, _handle) = Actor::spawn(None, Sink, tx).await.unwrap();
        (actor, rx)
    }

    async fn tier(url: &str) -> RedisTier {
        let settings = RedisSettings {
            url: url.to_owned(),
            key_prefix: crate::db::testing::redis_prefix(),
            pool_size: 1,
            command_timeout: Duration::from_secs(1),
            breaker: BreakerConfig::default(),
        };
        RedisTier::connect(settings).await.unwrap()
    }

    /// Messages until `count` answers have arrived, failing after [`DEADLINE`].
    async fn collect(rx: &mut mpsc::UnboundedReceiver<Vec<L2Answer>>, count: usize) -> Vec<Vec<L2Answer>> {
        let mut messages = Vec::new();
        while messages.iter().map(Vec::len).sum::<usize>() < count {
            let message = tokio::time::timeout(DEADLINE, rx.recv()).await.expect("no answer in time");
            messages.push(message.expect("the sink stopped"));
        }
        messages
    }

    fn value(body: &'static [u8]) -> CachedValue {
        CachedValue { body: Bytes::from_static(body), etag: None, not_found: false }
    }

    #[tokio::test]
    async fn queued_reads_go_out_in_batches_and_each_gets_its_own_answer() {
        let tier = tier(&crate::db::testing::redis_url()).await;
        assert!(tier.wait_connected(DEADLINE).await, "redis is not reachable");
        let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
        for key in keys.iter().filter(|k| !k.ends_with('0')) {
            tier.set(key, &value(b"{\"v\":1}"), Duration::from_secs(30), 1024).await.unwrap();
        }
        let (shard, mut rx) = sink().await;
        let (reader, _actor) = start(tier.clone(), 1, 1024).await;
        // queued without yielding: the reader sees all 100 at once
        for (ticket, key) in (0u64..).zip(&keys) {
            assert!(reader.read(key.clone(), ticket, shard.clone()));
        }
        let messages = collect(&mut rx, keys.len()).await;
        let _ = tier.del(&keys).await;
        assert_eq!(messages.iter().map(Vec::len).collect::<Vec<_>>(), [MAX_BATCH, keys.len() - MAX_BATCH]);
        for answer in messages.into_iter().flatten() {
            let ticket = usize::try_from(answer.ticket).unwrap();
            assert_eq!(answer.key, keys[ticket], "answers keep their ticket");
            let expected = if answer.key.ends_with('0') { None } else { Some(value(b"{\"v\":1}")) };
            assert_eq!(answer.outcome, Ok(expected), "{}", answer.key);
        }
        shard.stop(None);
    }

    #[tokio::test]
    async fn with_redis_down_every_read_is_answered_with_an_error() {
        // nothing listens on port 1: every call fails fast
        let tier = tier("redis://127.0.0.1:1").await;
        let (shard, mut rx) = sink().await;
        let (reader, _actor) = start(tier, 1, 1024).await;
        for ticket in 0..5 {
            assert!(reader.read(format!("k{ticket}"), ticket, shard.clone()));
        }
        let answers: Vec<L2Answer> = collect(&mut rx, 5).await.into_iter().flatten().collect();
        assert_eq!(answers.len(), 5);
        assert!(answers.iter().all(|a| a.outcome.is_err()), "a read was answered with a value");
        shard.stop(None);
    }

    #[tokio::test]
    async fn behind_a_stuck_redis_a_read_waits_at_most_one_batch_more() {
        let proxy = Cutter::start().await;
        let settings = RedisSettings {
            url: proxy.url(),
            key_prefix: crate::db::testing::redis_prefix(),
            pool_size: 1,
            command_timeout: Duration::from_millis(300),
            // never opens here: every call made is counted in its window
            breaker: BreakerConfig { window_size: 100, minimum_calls: 100, ..BreakerConfig::default() },
        };
        let tier = RedisTier::connect(settings).await.unwrap();
        assert!(tier.wait_connected(DEADLINE).await, "the pool did not connect");
        proxy.stalled.store(true, std::sync::atomic::Ordering::SeqCst);
        let (shard, mut rx) = sink().await;
        let (reader, _actor) = start(tier.clone(), 1, 1024).await;
        assert!(reader.read("first".to_owned(), 0, shard.clone()));
        // the first read goes out alone (it has left the queue); the rest queue behind it
        until_queued(&reader, 0).await;
        let queued = MAX_BATCH + 6;
        for ticket in 1..=u64::try_from(queued).unwrap() {
            assert!(reader.read(format!("k{ticket}"), ticket, shard.clone()));
        }
        let answers: Vec<L2Answer> = collect(&mut rx, queued + 1).await.into_iter().flatten().collect();
        proxy.stalled.store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(answers.iter().all(|a| a.outcome == Err(CacheRedisError::Timeout)), "every read times out");
        // the first read's MGET, then one of the 64 that waited behind it; the last 6
        // had waited a whole command timeout by then, so they were answered unsent
        assert_eq!(tier.breaker().snapshot().calls_in_window, 2);
        shard.stop(None);
    }

    #[tokio::test]
    async fn a_read_dropped_unanswered_answers_its_shard() {
        let (shard, mut rx) = sink().await;
        drop(Read::new("lost".to_owned(), 7, shard.clone()));
        let answers: Vec<L2Answer> = collect(&mut rx, 1).await.into_iter().flatten().collect();
        assert_eq!(answers.len(), 1);
        assert_eq!((answers[0].key.as_str(), answers[0].ticket), ("lost", 7));
        assert_eq!(answers[0].outcome, Err(CacheRedisError::Unavailable));
        shard.stop(None);
    }

    async fn stalled_tier(proxy: &Cutter) -> RedisTier {
        let settings = RedisSettings {
            url: proxy.url(),
            key_prefix: crate::db::testing::redis_prefix(),
            pool_size: 1,
            // far beyond the test's deadline: an answer can only come from elsewhere
            command_timeout: Duration::from_secs(600),
            breaker: BreakerConfig::default(),
        };
        let tier = RedisTier::connect(settings).await.unwrap();
        assert!(tier.wait_connected(DEADLINE).await, "the pool did not connect");
        proxy.stalled.store(true, std::sync::atomic::Ordering::SeqCst);
        tier
    }

    /// Waits (polling, up to [`DEADLINE`]) until `count` reads wait for the reader.
    async fn until_queued(reader: &L2Reader, count: usize) {
        let waited = tokio::time::timeout(DEADLINE, async {
            while reader.queued() != count {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "{} reads queued, not {count}", reader.queued());
    }

    #[tokio::test]
    async fn a_reader_killed_mid_batch_answers_every_read() {
        let proxy = Cutter::start().await;
        let tier = stalled_tier(&proxy).await;
        let (shard, mut rx) = sink().await;
        let (reader, actor) = start(tier, 1, 1024).await;
        assert!(reader.read("sent".to_owned(), 0, shard.clone()));
        // out in a batch, stuck behind the stalled Redis
        until_queued(&reader, 0).await;
        for ticket in 1..=10 {
            assert!(reader.read(format!("k{ticket}"), ticket, shard.clone()));
        }
        actor.kill();
        let answers: Vec<L2Answer> = collect(&mut rx, 11).await.into_iter().flatten().collect();
        proxy.stalled.store(false, std::sync::atomic::Ordering::SeqCst);
        let mut tickets: Vec<u64> = answers.iter().map(|a| a.ticket).collect();
        tickets.sort_unstable();
        assert_eq!(tickets, (0..=10).collect::<Vec<_>>(), "every read answered once");
        assert!(answers.iter().all(|a| a.outcome == Err(CacheRedisError::Unavailable)));
        // the places of the dropped reads are free again
        assert_eq!(reader.queued(), 0);
        // and with no reader running, a miss is not queued at all
        assert!(!reader.read("later".to_owned(), 11, shard.clone()));
        assert_eq!(reader.refused(), 1);
        shard.stop(None);
    }

    #[tokio::test]
    async fn past_its_bound_a_read_is_refused_at_once() {
        let proxy = Cutter::start().await;
        let tier = stalled_tier(&proxy).await;
        let (shard, mut rx) = sink().await;
        let (reader, actor) = start(tier, 1, 2).await;
        assert!(reader.read("sent".to_owned(), 0, shard.clone()));
        until_queued(&reader, 0).await;
        // two wait behind the stuck batch; the third finds no place
        assert!(reader.read("a".to_owned(), 1, shard.clone()));
        assert!(reader.read("b".to_owned(), 2, shard.clone()));
        assert!(!reader.read("c".to_owned(), 3, shard.clone()), "a third read was queued");
        assert_eq!((reader.queued(), reader.refused()), (2, 1));
        actor.kill();
        let answers: Vec<L2Answer> = collect(&mut rx, 3).await.into_iter().flatten().collect();
        proxy.stalled.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(answers.len(), 3, "the refused read was never queued");
        shard.stop(None);
    }
}
