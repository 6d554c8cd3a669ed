//! [`LoginLimiter`] on a clock the tests move by hand.

use std::net::Ipv4Addr;
use std::sync::Barrier;

use proptest::prelude::*;

use super::*;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

impl Reservation<'_> {
    fn refund_at(self, now: Instant) {
        self.limiter.refund_at(&self.username, self.client, now);
    }
}

/// `n` attempts for `username`, each from its own address, all failing.
fn fail(limiter: &LoginLimiter, username: &str, n: u8, now: Instant) {
    for attempt in 0..n {
        let reserved = limiter.reserve_at(username, ip(attempt), now);
        assert!(reserved.is_ok(), "attempt {attempt}: {reserved:?}");
    }
}

#[test]
fn burst_attempts_then_refused() {
    let limiter = LoginLimiter::new(3, 1);
    let now = Instant::now();
    fail(&limiter, "alice", 3, now);
    let refused = limiter.reserve_at("alice", ip(9), now).unwrap_err();
    assert_eq!(refused.bucket, Bucket::Username);
    assert_eq!(refused.retry_after, Duration::from_secs(60));
    assert_eq!(limiter.report().refused_username, 1);
}

#[test]
fn usernames_are_case_insensitive() {
    let limiter = LoginLimiter::new(2, 1);
    let now = Instant::now();
    drop(limiter.reserve_at("Alice", ip(1), now).unwrap());
    drop(limiter.reserve_at("ALICE", ip(2), now).unwrap());
    assert!(limiter.reserve_at("alice", ip(3), now).is_err());
}

#[test]
fn other_usernames_are_unaffected() {
    let limiter = LoginLimiter::new(2, 1);
    let now = Instant::now();
    fail(&limiter, "alice", 2, now);
    assert!(limiter.reserve_at("alice", ip(3), now).is_err());
    assert!(limiter.reserve_at("bob", ip(3), now).is_ok());
}

#[test]
fn one_client_trying_many_usernames_is_refused() {
    let limiter = LoginLimiter::new(3, 1);
    let now = Instant::now();
    let allowance = 3 * CLIENT_FACTOR;
    for n in 0..allowance {
        drop(limiter.reserve_at(&format!("user{n}"), ip(7), now).unwrap());
    }
    let refused = limiter.reserve_at("someone-new", ip(7), now).unwrap_err();
    assert_eq!(refused.bucket, Bucket::Client);
    assert!(limiter.reserve_at("someone-new", ip(8), now).is_ok());
}

#[test]
fn a_refused_attempt_takes_nothing() {
    let limiter = LoginLimiter::new(1, 1);
    let now = Instant::now();
    drop(limiter.reserve_at("alice", ip(1), now).unwrap());
    // alice's bucket refuses: ip(2)'s bucket must not be charged for it
    for _ in 0..100 {
        assert!(limiter.reserve_at("alice", ip(2), now).is_err());
    }
    for n in 0..CLIENT_FACTOR {
        assert!(limiter.reserve_at(&format!("user{n}"), ip(2), now).is_ok(), "unit {n} of ip(2)");
    }
}

#[test]
fn successes_give_their_units_back() {
    let limiter = LoginLimiter::new(3, 1);
    let now = Instant::now();
    fail(&limiter, "alice", 2, now);
    for _ in 0..20 {
        limiter.reserve_at("alice", ip(3), now).unwrap().refund_at(now);
    }
    // the two failures stay counted: one unit is left
    drop(limiter.reserve_at("alice", ip(3), now).unwrap());
    assert!(limiter.reserve_at("alice", ip(4), now).is_err());
}

#[test]
fn refunding_everything_forgets_the_keys() {
    let limiter = LoginLimiter::new(3, 1);
    let now = Instant::now();
    limiter.reserve_at("alice", ip(1), now).unwrap().refund_at(now);
    let report = limiter.report();
    assert_eq!((report.usernames, report.clients), (0, 0));
}

#[test]
fn refusal_ends_when_a_unit_is_back() {
    // 6000 per minute: one unit every 10 ms
    let limiter = LoginLimiter::new(1, 6000);
    let start = Instant::now();
    drop(limiter.reserve_at("alice", ip(1), start).unwrap());
    let wait = limiter.reserve_at("alice", ip(2), start).unwrap_err().retry_after;
    assert_eq!(wait, Duration::from_millis(10));
    assert!(limiter.reserve_at("alice", ip(2), start + Duration::from_millis(9)).is_err());
    assert!(limiter.reserve_at("alice", ip(2), start + wait).is_ok());
}

#[test]
fn ipv6_clients_share_their_slash_64() {
    let limiter = LoginLimiter::new(1, 1);
    let now = Instant::now();
    let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
    let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    for n in 0..CLIENT_FACTOR {
        drop(limiter.reserve_at(&format!("user{n}"), if n % 2 == 0 { a } else { b }, now).unwrap());
    }
    assert!(limiter.reserve_at("new", b, now).is_err());
    assert!(limiter.reserve_at("new", other, now).is_ok());
    // an IPv4-mapped address is its IPv4 address
    let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
    assert_eq!(client_key(mapped), ip(1));
}

#[test]
fn long_usernames_make_bounded_keys() {
    let limiter = LoginLimiter::new(1, 1);
    let now = Instant::now();
    let long = "x".repeat(10_000);
    drop(limiter.reserve_at(&long, ip(1), now).unwrap());
    assert!(limiter.reserve_at(&long, ip(2), now).is_err());
    assert!(limiter.buckets().usernames.keys().all(|k| k.chars().count() <= MAX_KEY_CHARS));
}

#[test]
fn housekeeping_forgets_full_buckets() {
    let limiter = LoginLimiter::new(1, 6000);
    let start = Instant::now();
    for n in 0..50 {
        drop(limiter.reserve_at(&format!("user{n}"), ip(n), start).unwrap());
    }
    assert_eq!(limiter.report().usernames, 50);
    housekeeping(&mut limiter.buckets(), start);
    assert_eq!(limiter.report().usernames, 50, "nothing has refilled yet");
    // past the refill of every bucket, the next pass empties the maps
    housekeeping(&mut limiter.buckets(), start + Duration::from_millis(100));
    let report = limiter.report();
    assert_eq!((report.usernames, report.clients), (0, 0));
}

#[test]
fn housekeeping_runs_every_so_many_reservations() {
    let limiter = LoginLimiter::new(1, 6000);
    let start = Instant::now();
    let later = start + Duration::from_secs(1);
    let first = u32::try_from(HOUSEKEEPING_EVERY - 1).unwrap();
    for n in 0..first {
        drop(limiter.reserve_at(&format!("user{n}"), IpAddr::V4(Ipv4Addr::from(n)), start).unwrap());
    }
    assert_eq!(limiter.report().usernames, 255);
    // the next reservation, once they have all refilled, sweeps them
    drop(limiter.reserve_at("late", ip(1), later).unwrap());
    let report = limiter.report();
    assert_eq!((report.usernames, report.clients), (1, 1), "{report:?}");
}

#[test]
fn concurrent_attempts_pass_at_most_the_burst() {
    let limiter = LoginLimiter::new(5, 1);
    let threads = 64;
    let barrier = Barrier::new(threads);
    let passed: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    // failures: the reservation is dropped, its units stay spent
                    limiter.reserve("alice", ip(1)).map(drop).is_ok()
                })
            })
            .collect();
        handles.into_iter().map(|h| usize::from(h.join().unwrap())).sum()
    });
    assert_eq!(passed, 5);
    assert_eq!(limiter.report().refused_username, 59);
}

#[test]
fn concurrent_successes_keep_the_bucket_full() {
    let limiter = LoginLimiter::new(2, 1);
    let threads = 32;
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                barrier.wait();
                for _ in 0..50 {
                    // at most 2 hold a unit at once; the others are refused and retry
                    if let Ok(reservation) = limiter.reserve("alice", ip(1)) {
                        reservation.refund();
                    }
                }
            });
        }
    });
    // every unit came back: the whole burst is available
    let now = Instant::now();
    fail(&limiter, "alice", 2, now);
    assert!(limiter.reserve_at("alice", ip(3), now).is_err());
}

proptest! {
    /// With the clock stopped, an attempt passes exactly when fewer than `burst` units are out,
    /// whatever the order of failures and refunds.
    #[test]
    fn units_out_never_exceed_the_burst(burst in 1u32..8, ops in prop::collection::vec(any::<bool>(), 0..64)) {
        let limiter = LoginLimiter::new(burst, 1);
        let now = Instant::now();
        let mut out = 0u32;
        for succeed in ops {
            match limiter.reserve_at("alice", ip(1), now) {
                Ok(reservation) => {
                    prop_assert!(out < burst);
                    if succeed { reservation.refund_at(now) } else { out += 1; drop(reservation) }
                }
                Err(refused) => {
                    prop_assert_eq!(out, burst);
                    prop_assert!(refused.retry_after > Duration::ZERO);
                }
            }
        }
    }
}
