//! Login slow-down: token buckets keyed by lower-cased username and by client address. A
//! username allows `auth.login_burst` failed logins and then `auth.login_per_minute` more per
//! minute; a client address [`CLIENT_FACTOR`] times as many, since one address may be many
//! people behind a NAT. IPv6 clients are keyed by their /64, the block one subscriber usually
//! holds, so rotating addresses within it does not buy more attempts.
//!
//! Every attempt takes one unit from both of its buckets *before* its password is checked
//! ([`LoginLimiter::reserve`]), under one lock: either both buckets have a unit and both give
//! one, or the attempt is refused with the time until both have one again, and nothing is
//! taken. A successful login gives its units back ([`Reservation::refund`]); so does an attempt
//! that was never checked. Only failures keep them spent. So concurrent attempts cannot all pass
//! a check made before any of them is charged: at most the burst gets through at once.
//! Existing and unknown usernames are treated alike, so the limiter does not reveal which
//! accounts exist.
//!
//! Buckets are kept as the instant at which they will be full again (GCRA): taking a unit
//! pushes it one interval later, refunding pulls it one interval back, and a bucket whose
//! instant has passed is full and forgotten. Memory stays bounded: every [`HOUSEKEEPING_EVERY`]
//! reservations full buckets are dropped, so a map holds the keys charged within the time an
//! empty bucket takes to fill (30 s with the defaults) plus at most that many; usernames are
//! keyed on at most [`MAX_KEY_CHARS`] characters.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Reservations between two housekeeping passes.
pub const HOUSEKEEPING_EVERY: u64 = 256;
/// Usernames are keyed on at most this many characters (valid usernames are no longer), so a
/// huge username in a request cannot make a huge key.
pub const MAX_KEY_CHARS: usize = 64;

/// A client address gets this many times the per-username allowance.
pub const CLIENT_FACTOR: u32 = 4;

/// Which bucket refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// The username's.
    Username,
    /// The client address's.
    Client,
}

impl Bucket {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Username => "username",
            Self::Client => "client",
        }
    }
}

/// Why an attempt was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// How long until both buckets have a unit again.
    pub retry_after: Duration,
    /// The bucket that refused (the username's when both did).
    pub bucket: Bucket,
}

/// One bucket's capacity and refill interval.
#[derive(Debug, Clone, Copy)]
struct Quota {
    /// Time for one unit to come back.
    interval: Duration,
    /// Time for an empty bucket to fill: capacity × interval.
    span: Duration,
}

impl Quota {
    fn new(burst: u32, per_minute: u32) -> Self {
        let interval = Duration::from_secs(60) / per_minute.max(1);
        Self { interval, span: interval.saturating_mul(burst.max(1)) }
    }

    /// The bucket's full-again instant after taking a unit at `now`, or how long to wait.
    fn take(&self, full_at: Option<Instant>, now: Instant) -> Result<Instant, Duration> {
        let base = full_at.map_or(now, |at| at.max(now));
        let next = base + self.interval;
        let debt = next - now;
        if debt <= self.span { Ok(next) } else { Err(debt - self.span) }
    }
}

#[derive(Debug, Default)]
struct Buckets {
    /// When each username's bucket is full again.
    usernames: HashMap<String, Instant>,
    /// When each client's bucket is full again.
    clients: HashMap<IpAddr, Instant>,
    reservations: u64,
}

/// Counts login attempts per username and per client address and refuses the noisy ones.
#[derive(Debug)]
pub struct LoginLimiter {
    buckets: Mutex<Buckets>,
    username_quota: Quota,
    client_quota: Quota,
    refused_username: AtomicU64,
    refused_client: AtomicU64,
}

/// What the limiter holds, for the admin report.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub struct LimiterReport {
    /// Attempts refused by a username's bucket since start.
    pub refused_username: u64,
    /// Attempts refused by a client address's bucket since start.
    pub refused_client: u64,
    /// Usernames with a bucket that is not full (as of the last housekeeping pass).
    pub usernames: usize,
    /// Client addresses with a bucket that is not full (as of the last housekeeping pass).
    pub clients: usize,
}

/// The units one attempt took. Dropping it keeps them spent (a failed or abandoned attempt);
/// [`Reservation::refund`] gives them back.
#[must_use = "dropping a reservation keeps its units spent; refund it when the login succeeded"]
#[derive(Debug)]
pub struct Reservation<'a> {
    limiter: &'a LoginLimiter,
    username: String,
    client: IpAddr,
}

impl Reservation<'_> {
    /// Gives the units back: a successful login, or an attempt whose password was never checked.
    pub fn refund(self) {
        self.limiter.refund_at(&self.username, self.client, Instant::now());
    }
}

impl LoginLimiter {
    /// A limiter allowing `burst` attempts per key, refilled at `per_minute` per minute
    /// (both at least 1; configuration validation refuses 0).
    pub fn new(burst: u32, per_minute: u32) -> Self {
        Self {
            buckets: Mutex::new(Buckets::default()),
            username_quota: Quota::new(burst, per_minute),
            // one address may be many people (an office, a NAT): it gets a larger allowance
            client_quota: Quota::new(
                burst.max(1).saturating_mul(CLIENT_FACTOR),
                per_minute.max(1).saturating_mul(CLIENT_FACTOR),
            ),
            refused_username: AtomicU64::new(0),
            refused_client: AtomicU64::new(0),
        }
    }

    /// Takes a unit from the username's and the client's buckets for one login attempt, or
    /// refuses it, taking nothing, with the time until both have a unit again.
    pub fn reserve(&self, username: &str, client: IpAddr) -> Result<Reservation<'_>, Refused> {
        self.reserve_at(username, client, Instant::now())
    }

    /// What the limiter holds now.
    pub fn report(&self) -> LimiterReport {
        let buckets = self.buckets();
        LimiterReport {
            refused_username: self.refused_username.load(Ordering::Relaxed),
            refused_client: self.refused_client.load(Ordering::Relaxed),
            usernames: buckets.usernames.len(),
            clients: buckets.clients.len(),
        }
    }

    fn reserve_at(&self, username: &str, client: IpAddr, now: Instant) -> Result<Reservation<'_>, Refused> {
        let username = username_key(username);
        let client = client_key(client);
        let mut buckets = self.buckets();
        let by_user = self.username_quota.take(buckets.usernames.get(&username).copied(), now);
        let by_client = self.client_quota.take(buckets.clients.get(&client).copied(), now);
        let (user_full_at, client_full_at) = match (by_user, by_client) {
            (Ok(user), Ok(client)) => (user, client),
            (user, client) => {
                let bucket = if user.is_err() { Bucket::Username } else { Bucket::Client };
                let retry_after = [user.err(), client.err()].into_iter().flatten().max().unwrap_or_default();
                drop(buckets);
                match bucket {
                    Bucket::Username => self.refused_username.fetch_add(1, Ordering::Relaxed),
                    Bucket::Client => self.refused_client.fetch_add(1, Ordering::Relaxed),
                };
                return Err(Refused { retry_after, bucket });
            }
        };
        buckets.usernames.insert(username.clone(), user_full_at);
        buckets.clients.insert(client, client_full_at);
        buckets.reservations += 1;
        if buckets.reservations.is_multiple_of(HOUSEKEEPING_EVERY) {
            housekeeping(&mut buckets, now);
        }
        Ok(Reservation { limiter: self, username, client })
    }

    fn refund_at(&self, username: &str, client: IpAddr, now: Instant) {
        let mut buckets = self.buckets();
        give_back(&mut buckets.usernames, username, self.username_quota.interval, now);
        give_back(&mut buckets.clients, &client, self.client_quota.interval, now);
    }

    fn buckets(&self) -> MutexGuard<'_, Buckets> {
        // The maps hold plain data; a panic elsewhere cannot leave them inconsistent.
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Pulls a bucket's full-again instant one interval back; a bucket that is then full is forgotten.
fn give_back<K, Q>(map: &mut HashMap<K, Instant>, key: &Q, interval: Duration, now: Instant)
where
    K: std::borrow::Borrow<Q> + Hash + Eq,
    Q: Hash + Eq + ?Sized,
{
    if let Some(full_at) = map.get_mut(key) {
        match full_at.checked_sub(interval).filter(|at| *at > now) {
            Some(earlier) => *full_at = earlier,
            None => {
                map.remove(key);
            }
        }
    }
}

/// Drops full buckets.
fn housekeeping(buckets: &mut Buckets, now: Instant) {
    buckets.usernames.retain(|_, full_at| *full_at > now);
    buckets.clients.retain(|_, full_at| *full_at > now);
    buckets.usernames.shrink_to_fit();
    buckets.clients.shrink_to_fit();
    tracing::debug!(
        usernames = buckets.usernames.len(),
        clients = buckets.clients.len(),
        "login limiter housekeeping"
    );
}

fn username_key(username: &str) -> String {
    username.chars().take(MAX_KEY_CHARS).flat_map(char::to_lowercase).collect()
}

/// IPv4 addresses as they are (IPv4-mapped IPv6 ones included); IPv6 ones by their /64.
fn client_key(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests;
