//! A circuit breaker in the spirit of resilience4j.
//!
//! Closed, it records the outcome of each call in a count-based sliding window
//! and opens once, after `minimum_calls`, the failure rate or slow-call rate
//! reaches its threshold. Open, it rejects calls for the current open duration;
//! the first call after that turns it half-open and becomes a probe. When
//! `half_open_permitted_calls` probes have reported, it closes if their rates
//! are below the thresholds, else reopens for twice as long (capped).
//!
//! Each state change starts a new *epoch*; results of permits from an older
//! epoch are ignored. Every method taking `now` has a variant that reads
//! [`Instant::now`] (tokio time, so paused test time works).

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics;

/// How long a caller turned away by a half-open breaker whose probe slots are
/// all taken should wait before trying again.
pub const HALF_OPEN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Tuning of a [`CircuitBreaker`].
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Size of the count-based sliding window: the last N recorded calls.
    pub window_size: u32,
    /// No decision is taken before this many calls are in the window.
    pub minimum_calls: u32,
    /// Failure rate, in percent `(0, 100]`, at or above which the breaker opens.
    pub failure_rate_threshold: f64,
    /// Slow-call rate, in percent `(0, 100]`, at or above which the breaker opens.
    pub slow_call_rate_threshold: f64,
    /// A call taking at least this long is slow.
    pub slow_call_duration: Duration,
    /// Probes allowed in one half-open period.
    pub half_open_permitted_calls: u32,
    /// The first open period.
    pub open_duration: Duration,
    /// Cap on the open period, which doubles each time a half-open trial fails.
    pub max_open_duration: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window_size: 20,
            minimum_calls: 10,
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration: Duration::from_secs(2),
            half_open_permitted_calls: 3,
            open_duration: Duration::from_secs(5),
            max_open_duration: Duration::from_secs(60),
        }
    }
}

impl BreakerConfig {
    /// Checks the configuration, naming the first bad field.
    ///
    /// # Errors
    /// A message such as `"failure_rate_threshold must be in (0, 100]"`.
    pub fn validate(&self) -> Result<(), String> {
        let percent = |v: f64| v > 0.0 && v <= 100.0;
        let error = if self.window_size == 0 {
            "window_size must be at least 1"
        } else if self.minimum_calls == 0 || self.minimum_calls > self.window_size {
            "minimum_calls must be in 1..=window_size"
        } else if !percent(self.failure_rate_threshold) {
            "failure_rate_threshold must be in (0, 100]"
        } else if !percent(self.slow_call_rate_threshold) {
            "slow_call_rate_threshold must be in (0, 100]"
        } else if self.half_open_permitted_calls == 0 {
            "half_open_permitted_calls must be at least 1"
        } else if self.open_duration.is_zero() {
            "open_duration must be greater than zero"
        } else if self.max_open_duration < self.open_duration {
            "max_open_duration must be at least open_duration"
        } else {
            return Ok(());
        };
        Err(error.to_owned())
    }
}

/// The state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls flow and are recorded.
    Closed,
    /// Calls are rejected until the open period ends.
    Open,
    /// A limited number of probe calls decide whether to close.
    HalfOpen,
    /// Calls are rejected until [`CircuitBreaker::reset`].
    ForcedOpen,
}

impl BreakerState {
    /// `closed`, `open`, `half_open` or `forced_open`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::ForcedOpen => "forced_open",
        }
    }

    /// The metric code: 0 closed, 1 half-open, 2 open, 3 forced open.
    #[must_use]
    pub fn code(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
            Self::ForcedOpen => 3.0,
        }
    }
}

/// A call turned away by a breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The breaker's name.
    pub breaker: Arc<str>,
    /// The state that rejected the call.
    pub state: BreakerState,
    /// A hint for when to try again.
    pub retry_after: Duration,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            BreakerState::HalfOpen => "half-open with no probe slot free",
            BreakerState::ForcedOpen => "forced open",
            _ => "open",
        };
        write!(f, "circuit breaker '{}' is {state}", self.breaker)
    }
}

impl std::error::Error for Rejected {}

/// A point-in-time view of a breaker, for status endpoints.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct BreakerSnapshot {
    /// The breaker's name.
    pub name: String,
    /// The stored state (an elapsed open period still reads `open`).
    pub state: BreakerState,
    /// Calls in the closed-state sliding window.
    pub calls_in_window: u32,
    /// Failure rate over the window, in percent (0 when empty).
    pub failure_rate: f64,
    /// Slow-call rate over the window, in percent (0 when empty).
    pub slow_call_rate: f64,
    /// The current open period in milliseconds.
    pub open_duration_ms: u64,
    /// While open or forced open, how long until a call may be tried; otherwise `null`.
    #[schema(required = true)]
    pub retry_after_ms: Option<u64>,
    /// State transitions since construction.
    pub transitions: u64,
}

/// Outcome counts over a set of calls.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    calls: u32,
    failures: u32,
    slow: u32,
}

impl Tally {
    fn add(&mut self, call: Call) {
        self.calls = self.calls.saturating_add(1);
        self.failures = self.failures.saturating_add(u32::from(call.failed));
        self.slow = self.slow.saturating_add(u32::from(call.slow));
    }

    fn remove(&mut self, call: Call) {
        self.calls = self.calls.saturating_sub(1);
        self.failures = self.failures.saturating_sub(u32::from(call.failed));
        self.slow = self.slow.saturating_sub(u32::from(call.slow));
    }

    fn failure_rate(&self) -> f64 {
        percent(self.failures, self.calls)
    }

    fn slow_rate(&self) -> f64 {
        percent(self.slow, self.calls)
    }

    fn trips(&self, config: &BreakerConfig) -> bool {
        self.failure_rate() >= config.failure_rate_threshold
            || self.slow_rate() >= config.slow_call_rate_threshold
    }
}

fn percent(part: u32, whole: u32) -> f64 {
    if whole == 0 { 0.0 } else { f64::from(part) * 100.0 / f64::from(whole) }
}

#[derive(Debug, Clone, Copy)]
struct Call {
    failed: bool,
    slow: bool,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { since: Instant },
    HalfOpen { issued: u32, probes: Tally },
    ForcedOpen,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    epoch: u64,
    transitions: u64,
    open_duration: Duration,
    window: VecDeque<Call>,
    tally: Tally,
}

/// A thread-safe circuit breaker, shared as `Arc<CircuitBreaker>`.
#[derive(Debug)]
pub struct CircuitBreaker {
    name: Arc<str>,
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// A closed breaker. Call [`BreakerConfig::validate`] first; a zero window
    /// size or probe count is treated as 1 so that the breaker cannot wedge.
    #[must_use]
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Arc<Self> {
        let name: Arc<str> = Arc::from(name.into());
        metrics::breaker_state(&name, BreakerState::Closed.code());
        let inner = Inner {
            phase: Phase::Closed,
            epoch: 0,
            transitions: 0,
            open_duration: config.open_duration,
            window: VecDeque::new(),
            tally: Tally::default(),
        };
        Arc::new(Self { name, config, inner: Mutex::new(inner) })
    }

    /// The breaker's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The breaker's configuration.
    #[must_use]
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Asks to make a call at `now`.
    ///
    /// # Errors
    /// [`Rejected`] while open (`retry_after` = rest of the open period), while
    /// forced open (`retry_after` = `open_duration`), or while half-open with
    /// every probe slot taken (`retry_after` = [`HALF_OPEN_RETRY_AFTER`]).
    pub fn try_acquire_at(self: &Arc<Self>, now: Instant) -> Result<Permit, Rejected> {
        let mut inner = self.lock();
        let rejected = match inner.phase {
            Phase::Closed => None,
            Phase::Open { since } => {
                let open_for = now.saturating_duration_since(since);
                if open_for >= inner.open_duration {
                    let probes = Tally::default();
                    self.transition(&mut inner, Phase::HalfOpen { issued: 1, probes });
                    None
                } else {
                    Some((BreakerState::Open, inner.open_duration.saturating_sub(open_for)))
                }
            }
            Phase::HalfOpen { ref mut issued, .. } => {
                if *issued < self.config.half_open_permitted_calls.max(1) {
                    *issued += 1;
                    None
                } else {
                    Some((BreakerState::HalfOpen, HALF_OPEN_RETRY_AFTER))
                }
            }
            Phase::ForcedOpen => Some((BreakerState::ForcedOpen, self.config.open_duration)),
        };
        let epoch = inner.epoch;
        drop(inner);
        match rejected {
            None => Ok(Permit { breaker: Arc::clone(self), epoch, done: false }),
            Some((state, retry_after)) => {
                metrics::breaker_rejected(&self.name);
                Err(Rejected { breaker: Arc::clone(&self.name), state, retry_after })
            }
        }
    }

    /// [`try_acquire_at`](Self::try_acquire_at) at the current time.
    ///
    /// # Errors
    /// As [`try_acquire_at`](Self::try_acquire_at).
    pub fn try_acquire(self: &Arc<Self>) -> Result<Permit, Rejected> {
        self.try_acquire_at(Instant::now())
    }

    /// Rejects every call until [`reset`](Self::reset).
    pub fn force_open(&self) {
        let mut inner = self.lock();
        self.transition(&mut inner, Phase::ForcedOpen);
    }

    /// Closes the breaker, clearing the window and the open-period backoff.
    pub fn reset(&self) {
        let mut inner = self.lock();
        self.transition(&mut inner, Phase::Closed);
    }

    /// The stored state. An open breaker whose period has elapsed still reads
    /// [`BreakerState::Open`] until the next acquire turns it half-open.
    #[must_use]
    pub fn state(&self) -> BreakerState {
        state_of(&self.lock().phase)
    }

    /// A view of the breaker at `now` (which only affects `retry_after_ms`).
    #[must_use]
    pub fn snapshot_at(&self, now: Instant) -> BreakerSnapshot {
        let inner = self.lock();
        let retry_after = match inner.phase {
            Phase::Open { since } => {
                Some(inner.open_duration.saturating_sub(now.saturating_duration_since(since)))
            }
            Phase::ForcedOpen => Some(self.config.open_duration),
            Phase::Closed | Phase::HalfOpen { .. } => None,
        };
        BreakerSnapshot {
            name: self.name.to_string(),
            state: state_of(&inner.phase),
            calls_in_window: inner.tally.calls,
            failure_rate: inner.tally.failure_rate(),
            slow_call_rate: inner.tally.slow_rate(),
            open_duration_ms: millis(inner.open_duration),
            retry_after_ms: retry_after.map(millis),
            transitions: inner.transitions,
        }
    }

    /// [`snapshot_at`](Self::snapshot_at) the current time.
    #[must_use]
    pub fn snapshot(&self) -> BreakerSnapshot {
        self.snapshot_at(Instant::now())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the result of a permit issued in `epoch`, unless stale.
    fn record(&self, epoch: u64, call: Call, now: Instant) {
        let mut inner = self.lock();
        if inner.epoch != epoch {
            return;
        }
        match inner.phase {
            Phase::Closed => {
                inner.window.push_back(call);
                inner.tally.add(call);
                let size = usize::try_from(self.config.window_size.max(1)).unwrap_or(usize::MAX);
                if inner.window.len() > size
                    && let Some(old) = inner.window.pop_front()
                {
                    inner.tally.remove(old);
                }
                if inner.tally.calls >= self.config.minimum_calls && inner.tally.trips(&self.config) {
                    self.transition(&mut inner, Phase::Open { since: now });
                }
            }
            Phase::HalfOpen { ref mut probes, .. } => {
                probes.add(call);
                let probes = *probes;
                if probes.calls >= self.config.half_open_permitted_calls.max(1) {
                    if probes.trips(&self.config) {
                        let doubled = inner.open_duration.saturating_mul(2);
                        inner.open_duration = doubled.min(self.config.max_open_duration);
                        self.transition(&mut inner, Phase::Open { since: now });
                    } else {
                        self.transition(&mut inner, Phase::Closed);
                    }
                }
            }
            Phase::Open { .. } | Phase::ForcedOpen => {}
        }
    }

    /// Frees the half-open slot of a permit dropped without a result.
    fn release(&self, epoch: u64) {
        let mut inner = self.lock();
        if inner.epoch != epoch {
            return;
        }
        if let Phase::HalfOpen { ref mut issued, .. } = inner.phase {
            *issued = issued.saturating_sub(1);
        }
    }

    /// Enters `to`, starting a new epoch. Entering closed clears the window
    /// and resets the open period. Metrics are emitted under the lock so the
    /// state gauge cannot be left stale by racing transitions.
    fn transition(&self, inner: &mut Inner, to: Phase) {
        let from = state_of(&inner.phase);
        let to_state = state_of(&to);
        if matches!(to, Phase::Closed) {
            inner.window.clear();
            inner.tally = Tally::default();
            inner.open_duration = self.config.open_duration;
        }
        inner.phase = to;
        inner.epoch += 1;
        if from != to_state {
            inner.transitions += 1;
            metrics::breaker_transition(&self.name, from.as_str(), to_state.as_str());
            metrics::breaker_state(&self.name, to_state.code());
        }
    }
}

fn state_of(phase: &Phase) -> BreakerState {
    match phase {
        Phase::Closed => BreakerState::Closed,
        Phase::Open { .. } => BreakerState::Open,
        Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        Phase::ForcedOpen => BreakerState::ForcedOpen,
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Leave to make one call through a breaker. Report how it went with
/// [`success`](Self::success) or [`failure`](Self::failure); dropping it
/// without a result frees its half-open probe slot and records nothing.
#[must_use = "report the call's outcome, or drop the permit to give its slot back"]
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<CircuitBreaker>,
    epoch: u64,
    done: bool,
}

impl Permit {
    /// Records a successful call that took `elapsed`, finishing at `now`.
    pub fn success_at(self, elapsed: Duration, now: Instant) {
        self.finish(false, elapsed, now);
    }

    /// Records a failed call that took `elapsed`, finishing at `now`.
    pub fn failure_at(self, elapsed: Duration, now: Instant) {
        self.finish(true, elapsed, now);
    }

    /// Records a successful call that took `elapsed`, finishing now.
    pub fn success(self, elapsed: Duration) {
        self.success_at(elapsed, Instant::now());
    }

    /// Records a failed call that took `elapsed`, finishing now.
    pub fn failure(self, elapsed: Duration) {
        self.failure_at(elapsed, Instant::now());
    }

    fn finish(mut self, failed: bool, elapsed: Duration, now: Instant) {
        self.done = true;
        let slow = elapsed >= self.breaker.config.slow_call_duration;
        self.breaker.record(self.epoch, Call { failed, slow }, now);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.release(self.epoch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Window 4, minimum 2 calls, 50 % failures, all slow, 2 probes, open 5 s..20 s.
    fn config() -> BreakerConfig {
        BreakerConfig {
            window_size: 4,
            minimum_calls: 2,
            half_open_permitted_calls: 2,
            max_open_duration: secs(20),
            ..BreakerConfig::default()
        }
    }

    fn call(b: &Arc<CircuitBreaker>, now: Instant, failed: bool) {
        let permit = b.try_acquire_at(now).unwrap();
        if failed {
            permit.failure_at(Duration::ZERO, now);
        } else {
            permit.success_at(Duration::ZERO, now);
        }
    }

    /// Fails calls at `now` until the closed breaker opens.
    fn trip(b: &Arc<CircuitBreaker>, now: Instant) {
        while b.state() == BreakerState::Closed {
            call(b, now, true);
        }
    }

    #[test]
    fn validate_names_the_bad_field() {
        assert_eq!(BreakerConfig::default().validate(), Ok(()));
        type Breakage = fn(&mut BreakerConfig);
        let cases: [(Breakage, &str); 8] = [
            (|c| c.window_size = 0, "window_size"),
            (|c| c.minimum_calls = 0, "minimum_calls"),
            (|c| c.minimum_calls = 21, "minimum_calls"),
            (|c| c.failure_rate_threshold = f64::NAN, "failure_rate_threshold"),
            (|c| c.slow_call_rate_threshold = 100.5, "slow_call_rate_threshold"),
            (|c| c.half_open_permitted_calls = 0, "half_open_permitted_calls"),
            (|c| c.open_duration = Duration::ZERO, "open_duration"),
            (|c| c.max_open_duration = secs(1), "max_open_duration"),
        ];
        for (break_it, field) in cases {
            let mut c = BreakerConfig::default();
            break_it(&mut c);
            assert!(c.validate().unwrap_err().starts_with(field), "{field}");
        }
    }

    #[test]
    fn opens_after_minimum_calls_and_slow_calls_open_too() {
        let now = Instant::now();
        let b = CircuitBreaker::new("b", config());
        call(&b, now, true);
        assert_eq!(b.state(), BreakerState::Closed);
        call(&b, now, true);
        assert_eq!(b.state(), BreakerState::Open);

        let slow = CircuitBreaker::new("slow", config());
        for _ in 0..2 {
            slow.try_acquire_at(now).unwrap().success_at(secs(2), now);
        }
        let snap = slow.snapshot_at(now);
        assert_eq!((snap.state, snap.slow_call_rate), (BreakerState::Open, 100.0));
        assert_eq!((snap.failure_rate, snap.retry_after_ms), (0.0, Some(5000)));
    }

    #[test]
    fn open_then_half_open_probes_close_it() {
        let t0 = Instant::now();
        let b = CircuitBreaker::new("b", config());
        trip(&b, t0);
        let early = b.try_acquire_at(t0 + Duration::from_millis(4900)).unwrap_err();
        assert_eq!(early.state, BreakerState::Open);
        assert_eq!(early.retry_after, Duration::from_millis(100));
        assert_eq!(b.state(), BreakerState::Open);

        let t1 = t0 + secs(5);
        let (p1, p2) = (b.try_acquire_at(t1).unwrap(), b.try_acquire_at(t1).unwrap());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let full = b.try_acquire_at(t1).unwrap_err();
        assert_eq!((full.state, full.retry_after), (BreakerState::HalfOpen, HALF_OPEN_RETRY_AFTER));
        p1.success_at(Duration::ZERO, t1);
        assert!(b.try_acquire_at(t1).is_err(), "a recorded probe keeps its slot");
        p2.success_at(Duration::ZERO, t1);

        let snap = b.snapshot_at(t1);
        assert_eq!((snap.state, snap.calls_in_window), (BreakerState::Closed, 0));
        assert_eq!((snap.open_duration_ms, snap.transitions), (5000, 3));
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json["state"], "closed");
    }

    #[test]
    fn failed_trials_double_the_open_period_up_to_max() {
        let b = CircuitBreaker::new("b", config());
        let mut now = Instant::now();
        trip(&b, now);
        for expected in [10, 20, 20] {
            now += b.config().max_open_duration;
            call(&b, now, true);
            call(&b, now, false);
            let snap = b.snapshot_at(now);
            assert_eq!(snap.state, BreakerState::Open);
            assert_eq!(snap.open_duration_ms, expected * 1000);
        }
        b.reset();
        assert_eq!(b.snapshot_at(now).open_duration_ms, 5000);
    }

    #[test]
    fn stale_results_are_ignored() {
        let now = Instant::now();
        let b = CircuitBreaker::new("b", config());
        let old = b.try_acquire_at(now).unwrap();
        b.force_open();
        b.reset();
        old.failure_at(Duration::ZERO, now);
        assert_eq!(b.snapshot_at(now).calls_in_window, 0);
    }

    #[test]
    fn force_open_rejects_until_reset() {
        let now = Instant::now();
        let b = CircuitBreaker::new("svc", config());
        b.force_open();
        let r = b.try_acquire_at(now + secs(3600)).unwrap_err();
        assert_eq!((r.state, r.retry_after), (BreakerState::ForcedOpen, secs(5)));
        assert_eq!(r.to_string(), "circuit breaker 'svc' is forced open");
        assert_eq!(b.snapshot_at(now).retry_after_ms, Some(5000));
        b.reset();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.try_acquire_at(now).is_ok());
        assert_eq!(b.snapshot_at(now).transitions, 2);
    }

    #[test]
    fn dropped_permit_releases_its_slot() {
        let t0 = Instant::now();
        let b = CircuitBreaker::new("b", config());
        trip(&b, t0);
        let t1 = t0 + secs(5);
        let kept = b.try_acquire_at(t1).unwrap();
        drop(b.try_acquire_at(t1).unwrap());
        let again = b.try_acquire_at(t1).unwrap();
        assert!(b.try_acquire_at(t1).is_err());
        kept.success_at(Duration::ZERO, t1);
        again.success_at(Duration::ZERO, t1);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn convenience_api_follows_tokio_time() {
        let b = CircuitBreaker::new("paused", config());
        for _ in 0..2 {
            b.try_acquire().unwrap().failure(Duration::ZERO);
        }
        assert_eq!(b.try_acquire().unwrap_err().retry_after, secs(5));
        tokio::time::advance(secs(4)).await;
        assert_eq!(b.snapshot().retry_after_ms, Some(1000));
        assert!(b.try_acquire().is_err());
        tokio::time::advance(secs(1)).await;
        let probes = [b.try_acquire().unwrap(), b.try_acquire().unwrap()];
        assert_eq!(b.state(), BreakerState::HalfOpen);
        for p in probes {
            p.success(Duration::ZERO);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    fn percent_of(hits: usize, all: usize) -> f64 {
        hits as f64 * 100.0 / all as f64
    }

    /// Permits of half-open period `period` that are live or have reported.
    fn in_use(live: &[(Permit, u64)], recorded: &HashMap<u64, u32>, period: u64) -> u32 {
        let live = live.iter().filter(|l| l.1 == period).count();
        u32::try_from(live).unwrap() + recorded.get(&period).copied().unwrap_or(0)
    }

    /// Whole percentages (so exact rates hit them) or arbitrary ones.
    fn thresholds() -> impl Strategy<Value = f64> {
        prop_oneof![(1u32..=100).prop_map(f64::from), 0.01f64..=100.0]
    }

    proptest! {
        #[test]
        fn closed_state_matches_reference_model(
            window in 1u32..10,
            min_seed in any::<u32>(),
            failure_threshold in thresholds(),
            slow_threshold in thresholds(),
            calls in prop::collection::vec((any::<bool>(), any::<bool>()), 0..60),
        ) {
            let minimum_calls = 1 + min_seed % window;
            let cfg = BreakerConfig {
                window_size: window,
                minimum_calls,
                failure_rate_threshold: failure_threshold,
                slow_call_rate_threshold: slow_threshold,
                slow_call_duration: secs(1),
                ..BreakerConfig::default()
            };
            prop_assert_eq!(cfg.validate(), Ok(()));
            let b = CircuitBreaker::new("model", cfg);
            let now = Instant::now();
            let mut model = VecDeque::new();
            for (failed, slow) in calls {
                let permit = b.try_acquire_at(now).unwrap();
                let elapsed = if slow { secs(1) } else { Duration::ZERO };
                if failed { permit.failure_at(elapsed, now) } else { permit.success_at(elapsed, now) }
                model.push_back((failed, slow));
                if model.len() > window as usize {
                    model.pop_front();
                }
                let failures = model.iter().filter(|c| c.0).count();
                let slows = model.iter().filter(|c| c.1).count();
                let opens = model.len() >= minimum_calls as usize
                    && (percent_of(failures, model.len()) >= failure_threshold
                        || percent_of(slows, model.len()) >= slow_threshold);
                let expected = if opens { BreakerState::Open } else { BreakerState::Closed };
                prop_assert_eq!(b.state(), expected);
                if opens {
                    break;
                }
            }
        }

        #[test]
        fn half_open_never_hands_out_too_many(
            permitted in 1u32..5,
            ops in prop::collection::vec((0u8..6, any::<usize>()), 0..80),
        ) {
            let cfg = BreakerConfig {
                window_size: 1,
                minimum_calls: 1,
                half_open_permitted_calls: permitted,
                open_duration: secs(1),
                max_open_duration: secs(4),
                ..BreakerConfig::default()
            };
            let b = CircuitBreaker::new("probes", cfg);
            let mut now = Instant::now();
            // Live permits with the half-open period (transition count) they came from.
            let mut live: Vec<(Permit, u64)> = Vec::new();
            let mut recorded: HashMap<u64, u32> = HashMap::new();
            let period = |b: &CircuitBreaker| b.snapshot().transitions;
            for (op, pick) in ops {
                let half_open = b.state() == BreakerState::HalfOpen;
                let current = period(&b);
                let used = in_use(&live, &recorded, current);
                match op {
                    0 | 1 => match b.try_acquire_at(now) {
                        Ok(permit) => {
                            prop_assert!(!half_open || used < permitted);
                            live.push((permit, period(&b)));
                        }
                        Err(r) => prop_assert!(r.state != BreakerState::HalfOpen || used == permitted),
                    },
                    2 | 3 if !live.is_empty() => {
                        let (permit, from) = live.swap_remove(pick % live.len());
                        if half_open && from == current {
                            *recorded.entry(from).or_default() += 1;
                        }
                        if op == 2 {
                            permit.success_at(Duration::ZERO, now);
                        } else {
                            permit.failure_at(Duration::ZERO, now);
                        }
                    }
                    4 => now += secs(5),
                    5 if !live.is_empty() => drop(live.swap_remove(pick % live.len())),
                    _ => {}
                }
                if b.state() == BreakerState::HalfOpen {
                    let current = period(&b);
                    let used = in_use(&live, &recorded, current);
                    prop_assert!(used <= permitted);
                }
            }
        }

        #[test]
        fn open_duration_stays_within_bounds(
            steps in prop::collection::vec((0u64..30_000, any::<bool>()), 0..100),
        ) {
            let b = CircuitBreaker::new("bounded", config());
            let mut now = Instant::now();
            for (advance_ms, failed) in steps {
                now += Duration::from_millis(advance_ms);
                if let Ok(permit) = b.try_acquire_at(now) {
                    if failed {
                        permit.failure_at(Duration::ZERO, now);
                    } else {
                        permit.success_at(Duration::ZERO, now);
                    }
                }
                let open_ms = b.snapshot_at(now).open_duration_ms;
                prop_assert!((5_000..=20_000).contains(&open_ms));
            }
        }
    }
}
