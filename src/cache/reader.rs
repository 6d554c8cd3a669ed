//! The L2 reader: one task per node that reads Redis for the misses of every
//! shard, many keys to an `MGET`.
//!
//! A shard that misses in L1 hands the key to the reader ([`L2Reader::read`])
//! and goes on with its mailbox; the reader answers with
//! [`ShardMsg::L2Read`], one message per shard per batch. While a batch is in
//! flight, the keys that arrive wait and go out together in the next one
//! (at most [`MAX_BATCH`] keys, at most `max_in_flight` batches at once), so a
//! busy node sends far fewer commands to Redis than it serves misses, and a
//! quiet one sends each key at once: nothing waits for a timer. A read that has
//! waited a whole Redis command timeout for its turn (Redis is slow, every
//! batch in flight is stuck) is not sent: it answers
//! [`CacheRedisError::Timeout`], so a miss waits at most about two command
//! timeouts before its shard goes to the database.
//!
//! Nothing is lost: a read that is dropped unanswered (the reader stopped, or
//! its batch was dropped by a panic) answers its shard as a Redis failure on
//! the way out, and the shard loads the key from the database instead. A panic
//! inside the reader restarts its loop in place.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use ractor::ActorRef;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::format::CachedValue;
use super::redis::{CacheRedisError, RedisTier};
use super::shard::ShardMsg;
use crate::metrics;

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
}

impl Read {
    /// `key` for the load `ticket` of `shard`.
    #[must_use]
    pub fn new(key: String, ticket: u64, shard: ActorRef<ShardMsg>) -> Self {
        Self { key, ticket, shard, queued_at: Instant::now(), answered: false }
    }

    /// Takes the answer out, leaving nothing for `Drop` to send.
    fn answer(
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

/// The handle shards send reads through. Cheap to clone; the task ends when
/// the last clone is dropped.
#[derive(Clone)]
pub struct L2Reader {
    tx: mpsc::UnboundedSender<Read>,
}

impl L2Reader {
    /// Starts the reader over `tier`, with at most `max_in_flight` (at least 1)
    /// batches in flight. Must be called within a Tokio runtime.
    #[must_use]
    pub fn start(tier: RedisTier, max_in_flight: usize) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let max_in_flight = max_in_flight.max(1);
        tokio::spawn(async move {
            loop {
                let run = AssertUnwindSafe(run(&tier, &mut rx, max_in_flight)).catch_unwind().await;
                if run.is_ok() {
                    return;
                }
                // the batches in flight were dropped, and with them their reads, which
                // answered their shards as failures
                tracing::error!("the L2 reader panicked; restarting it");
            }
        });
        Self { tx }
    }

    /// Queues `read`. If the reader is gone, the read answers its shard at once
    /// as a Redis failure (when it is dropped here).
    pub fn read(&self, read: Read) {
        let _ = self.tx.send(read);
    }
}

/// The reader's loop: until every handle is dropped and the last batch answered.
async fn run(tier: &RedisTier, rx: &mut mpsc::UnboundedReceiver<Read>, max_in_flight: usize) {
    let patience = tier.command_timeout();
    let mut pending: Vec<Read> = Vec::new();
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            read = rx.recv(), if open => match read {
                Some(read) => pending.push(read),
                None => open = false,
            },
            else => return,
        }
        while let Ok(read) = rx.try_recv() {
            pending.push(read);
        }
        // oldest first: those that waited too long for a batch go to the database
        let now = Instant::now();
        let expired = pending.partition_point(|r| now.saturating_duration_since(r.queued_at) >= patience);
        if expired > 0 {
            let late: Vec<Read> = pending.drain(..expired).collect();
            answer(late.into_iter().map(|read| (read, Err(CacheRedisError::Timeout))));
        }
        while !pending.is_empty() && in_flight.len() < max_in_flight {
            let rest = pending.split_off(pending.len().min(MAX_BATCH));
            let batch = std::mem::replace(&mut pending, rest);
            in_flight.push(read_batch(tier.clone(), batch));
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
    use ractor::{Actor, ActorProcessingErr};

    use super::*;
    use crate::cache::redis::RedisSettings;
    use crate::cache::redis::tests::Cutter;
    use crate::supervision::breaker::BreakerConfig;

    const DEADLINE: Duration = Duration::from_secs(10);

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
            key_prefix: format!("castwork-test-{}", uuid::Uuid::new_v4().simple()),
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
        let tier = tier("redis://127.0.0.1:6379").await;
        assert!(tier.wait_connected(DEADLINE).await, "redis is not reachable");
        let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
        for key in keys.iter().filter(|k| !k.ends_with('0')) {
            tier.set(key, &value(b"{\"v\":1}"), Duration::from_secs(30), 1024).await.unwrap();
        }
        let (shard, mut rx) = sink().await;
        let reader = L2Reader::start(tier.clone(), 1);
        // queued without yielding: the reader sees all 100 at once
        for (ticket, key) in (0u64..).zip(&keys) {
            reader.read(Read::new(key.clone(), ticket, shard.clone()));
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
        let reader = L2Reader::start(tier, 1);
        for ticket in 0..5 {
            reader.read(Read::new(format!("k{ticket}"), ticket, shard.clone()));
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
            key_prefix: format!("castwork-test-{}", uuid::Uuid::new_v4().simple()),
            pool_size: 1,
            command_timeout: Duration::from_millis(300),
            // never opens here: every call made is counted in its window
            breaker: BreakerConfig { window_size: 100, minimum_calls: 100, ..BreakerConfig::default() },
        };
        let tier = RedisTier::connect(settings).await.unwrap();
        assert!(tier.wait_connected(DEADLINE).await, "the pool did not connect");
        proxy.stalled.store(true, std::sync::atomic::Ordering::SeqCst);
        let (shard, mut rx) = sink().await;
        let reader = L2Reader::start(tier.clone(), 1);
        reader.read(Read::new("first".to_owned(), 0, shard.clone()));
        // let the first read go out alone; the rest queue behind it
        tokio::time::sleep(Duration::from_millis(50)).await;
        let queued = MAX_BATCH + 6;
        for ticket in 1..=u64::try_from(queued).unwrap() {
            reader.read(Read::new(format!("k{ticket}"), ticket, shard.clone()));
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
}
