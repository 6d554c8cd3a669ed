//! Failed-login slow-down: two governor token buckets, one keyed by lower-cased username and
//! one by client address. A username allows `auth.login_burst` failures and then
//! `auth.login_per_minute` more per minute; a client address [`CLIENT_FACTOR`] times as many,
//! since one address may be many people behind a NAT.
//!
//! Only failures consume. Once a failure empties a bucket its key is locked out until governor
//! would let the next cell through; [`LoginLimiter::check`] refuses locked-out keys before any
//! password work is done, without consuming anything itself. Existing and unknown usernames
//! are treated alike, so the limiter does not reveal which accounts exist.
//!
//! Memory stays bounded: every [`HOUSEKEEPING_EVERY`] failures (or when the lockout map grows
//! past [`MAX_LOCKOUTS`]) expired lockouts are dropped and governor forgets keys whose buckets
//! have refilled (`retain_recent`).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// Failures between two housekeeping passes.
pub const HOUSEKEEPING_EVERY: u64 = 256;
/// Lockout entries that trigger housekeeping early.
pub const MAX_LOCKOUTS: usize = 4096;
/// Usernames are keyed on at most this many characters (valid usernames are no longer), so a
/// huge username in a request cannot make a huge key.
const MAX_KEY_CHARS: usize = 64;

type KeyedLimiter<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LockKey {
    Username(String),
    Client(IpAddr),
}

/// Counts failed logins per username and per client address and locks out the noisy ones.
pub struct LoginLimiter {
    by_username: KeyedLimiter<String>,
    by_client: KeyedLimiter<IpAddr>,
    /// When each locked-out key may try again.
    lockouts: Mutex<HashMap<LockKey, Instant>>,
    failures: AtomicU64,
    /// Time for one cell to come back; the longest wait after a bucket empties.
    replenish: Duration,
}

impl std::fmt::Debug for LoginLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginLimiter").field("replenish", &self.replenish).finish_non_exhaustive()
    }
}

/// A client address gets this many times the per-username allowance.
pub const CLIENT_FACTOR: NonZeroU32 = match NonZeroU32::new(4) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};

impl LoginLimiter {
    /// A limiter allowing `burst` failures per key, refilled at `per_minute` per minute
    /// (both at least 1; configuration validation refuses 0).
    pub fn new(burst: u32, per_minute: u32) -> Self {
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(per_minute).allow_burst(burst);
        // one address may be many people (an office, a NAT): it gets a larger allowance
        let client_quota = Quota::per_minute(per_minute.saturating_mul(CLIENT_FACTOR))
            .allow_burst(burst.saturating_mul(CLIENT_FACTOR));
        Self {
            by_username: RateLimiter::dashmap(quota).with_middleware::<StateInformationMiddleware>(),
            by_client: RateLimiter::dashmap(client_quota).with_middleware::<StateInformationMiddleware>(),
            lockouts: Mutex::new(HashMap::new()),
            failures: AtomicU64::new(0),
            replenish: quota.replenish_interval(),
        }
    }

    /// Whether a login for `username` from `client` may be tried now; otherwise how long to wait.
    /// Consumes nothing.
    pub fn check(&self, username: &str, client: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let lockouts = self.lockouts();
        let wait = [LockKey::Username(username_key(username)), LockKey::Client(client)]
            .iter()
            .filter_map(|key| lockouts.get(key))
            .map(|until| until.saturating_duration_since(now))
            .max()
            .unwrap_or(Duration::ZERO);
        if wait.is_zero() { Ok(()) } else { Err(wait) }
    }

    /// Records a failed login: takes a cell from both buckets and locks out a key whose bucket
    /// is now empty.
    pub fn record_failure(&self, username: &str, client: IpAddr) {
        let username = username_key(username);
        let user_wait = self.consume(&self.by_username, &username);
        let client_wait = self.consume(&self.by_client, &client);
        let now = Instant::now();
        let mut lockouts = self.lockouts();
        for (key, wait) in [(LockKey::Username(username), user_wait), (LockKey::Client(client), client_wait)]
        {
            if let Some(wait) = wait {
                let until = now + wait;
                let entry = lockouts.entry(key).or_insert(until);
                *entry = (*entry).max(until);
            }
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures.is_multiple_of(HOUSEKEEPING_EVERY) || lockouts.len() > MAX_LOCKOUTS {
            self.housekeeping(&mut lockouts, now);
        }
    }

    /// Records a successful login. Governor cannot forget one key, so the username's bucket
    /// keeps refilling at the configured rate; this only clears a lockout that may have been
    /// set for it meanwhile.
    pub fn record_success(&self, username: &str) {
        self.lockouts().remove(&LockKey::Username(username_key(username)));
    }

    /// Takes one cell for `key`; returns how long the key must wait if its bucket is now empty.
    fn consume<K: Clone + Hash + Eq>(&self, limiter: &KeyedLimiter<K>, key: &K) -> Option<Duration> {
        match limiter.check_key(key) {
            // The last cell is gone: the next one is back within one replenish interval.
            Ok(state) if state.remaining_burst_capacity() == 0 => Some(self.replenish),
            Ok(_) => None,
            // Concurrent failures emptied the bucket first; governor knows the exact wait.
            Err(not_until) => Some(not_until.wait_time_from(limiter.clock().now())),
        }
    }

    fn housekeeping(&self, lockouts: &mut HashMap<LockKey, Instant>, now: Instant) {
        lockouts.retain(|_, until| *until > now);
        lockouts.shrink_to_fit();
        self.by_username.retain_recent();
        self.by_username.shrink_to_fit();
        self.by_client.retain_recent();
        self.by_client.shrink_to_fit();
        tracing::debug!(
            lockouts = lockouts.len(),
            usernames = self.by_username.len(),
            clients = self.by_client.len(),
            "login limiter housekeeping"
        );
    }

    fn lockouts(&self) -> MutexGuard<'_, HashMap<LockKey, Instant>> {
        // The map holds plain data; a panic elsewhere cannot leave it inconsistent.
        self.lockouts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn username_key(username: &str) -> String {
    username.chars().take(MAX_KEY_CHARS).flat_map(char::to_lowercase).collect()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn burst_failures_then_refused() {
        let limiter = LoginLimiter::new(3, 1);
        for attempt in 0..3 {
            assert!(limiter.check("alice", ip(attempt)).is_ok(), "attempt {attempt}");
            limiter.record_failure("alice", ip(attempt));
        }
        let retry_after = limiter.check("alice", ip(9)).unwrap_err();
        assert!(retry_after > Duration::ZERO);
        assert!(retry_after <= Duration::from_secs(60), "{retry_after:?}");
    }

    #[test]
    fn usernames_are_case_insensitive() {
        let limiter = LoginLimiter::new(2, 1);
        limiter.record_failure("Alice", ip(1));
        limiter.record_failure("ALICE", ip(2));
        assert!(limiter.check("alice", ip(3)).is_err());
    }

    #[test]
    fn other_usernames_are_unaffected() {
        let limiter = LoginLimiter::new(2, 1);
        limiter.record_failure("alice", ip(1));
        limiter.record_failure("alice", ip(2));
        assert!(limiter.check("alice", ip(3)).is_err());
        assert!(limiter.check("bob", ip(3)).is_ok());
    }

    #[test]
    fn one_client_trying_many_usernames_is_locked_out() {
        let limiter = LoginLimiter::new(3, 1);
        let allowance = 3 * CLIENT_FACTOR.get();
        for n in 0..allowance - 1 {
            limiter.record_failure(&format!("user{n}"), ip(7));
        }
        assert!(limiter.check("someone-new", ip(7)).is_ok(), "the address still has allowance");
        limiter.record_failure("last", ip(7));
        assert!(limiter.check("someone-new", ip(7)).is_err());
        assert!(limiter.check("someone-new", ip(8)).is_ok());
    }

    #[test]
    fn successes_do_not_consume() {
        let limiter = LoginLimiter::new(3, 1);
        limiter.record_failure("alice", ip(1));
        limiter.record_failure("alice", ip(2));
        for _ in 0..20 {
            assert!(limiter.check("alice", ip(3)).is_ok());
            limiter.record_success("alice");
        }
        assert!(limiter.check("alice", ip(3)).is_ok());
        limiter.record_failure("alice", ip(3));
        assert!(limiter.check("alice", ip(4)).is_err());
    }

    #[test]
    fn lockout_ends_when_a_cell_is_back() {
        // 6000 per minute: one cell every 10 ms.
        let limiter = LoginLimiter::new(1, 6000);
        limiter.record_failure("alice", ip(1));
        let wait = limiter.check("alice", ip(2)).unwrap_err();
        assert!(wait <= Duration::from_millis(10), "{wait:?}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while limiter.check("alice", ip(2)).is_err() {
            assert!(Instant::now() < deadline, "lockout did not end");
            std::thread::yield_now();
        }
    }

    #[test]
    fn long_usernames_make_bounded_keys() {
        let limiter = LoginLimiter::new(1, 1);
        let long = "x".repeat(10_000);
        limiter.record_failure(&long, ip(1));
        assert!(limiter.check(&long, ip(2)).is_err());
        assert!(limiter.lockouts().keys().all(|k| match k {
            LockKey::Username(name) => name.len() <= MAX_KEY_CHARS,
            LockKey::Client(_) => true,
        }));
    }

    #[test]
    fn housekeeping_forgets_expired_state() {
        let limiter = LoginLimiter::new(1, 6000);
        for n in 0..50 {
            limiter.record_failure(&format!("user{n}"), ip(n));
        }
        assert!(limiter.lockouts().len() >= 50);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = Instant::now();
            let mut lockouts = limiter.lockouts();
            limiter.housekeeping(&mut lockouts, now);
            if lockouts.is_empty() && limiter.by_username.is_empty() && limiter.by_client.is_empty() {
                break;
            }
            drop(lockouts);
            assert!(Instant::now() < deadline, "state was not forgotten");
            std::thread::yield_now();
        }
    }
}
