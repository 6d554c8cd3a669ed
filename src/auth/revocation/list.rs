//! [`RevokedSessions`]: the in-memory deny-list every request is checked against.
//!
//! One hash probe per request, skipped while the list is empty. The list is bounded: an entry
//! lives until the last access token of its session has expired (`until`), and past
//! `capacity` live entries a new revocation is not forgotten but widened: every access token
//! issued up to that moment is refused until the revocation would have expired (see
//! [`RevokedSessions::insert`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};

/// Why [`RevokedSessions::check`] refused a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its session is on the list.
    Revoked,
    /// The list overflowed after the token was issued: its session may have been revoked.
    Overflow,
}

impl Refusal {
    /// The `reason` label of [`crate::metrics::AUTH_TOKENS_REFUSED_TOTAL`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Overflow => "overflow",
        }
    }
}

/// What [`RevokedSessions::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The session was added.
    New,
    /// The session was already on the list.
    Known,
    /// The list was full: the revocation widened to every token issued until now.
    Overflowed,
}

/// Revoked sessions, each until its last access token has expired. Cheap to share.
pub struct RevokedSessions {
    /// Session id to `until` (seconds since the Unix epoch).
    entries: RwLock<HashMap<Box<str>, u64>>,
    /// `entries.len()`, readable without the lock: zero means nothing to check.
    len: AtomicUsize,
    capacity: usize,
    /// While the list is overflowed: tokens issued at or before `overflow_issued_by` are
    /// refused until `overflow_until`. Both 0 when it never overflowed.
    overflow_issued_by: AtomicU64,
    overflow_until: AtomicU64,
}

impl RevokedSessions {
    /// An empty list holding at most `capacity` live sessions.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            len: AtomicUsize::new(0),
            capacity: capacity.max(1),
            overflow_issued_by: AtomicU64::new(0),
            overflow_until: AtomicU64::new(0),
        }
    }

    /// Whether a token of session `sid`, issued at `iat`, may be used at `now`.
    pub fn check(&self, sid: &str, iat: u64, now: u64) -> Result<(), Refusal> {
        let overflow_until = self.overflow_until.load(Ordering::Acquire);
        if overflow_until != 0
            && now <= overflow_until
            && iat <= self.overflow_issued_by.load(Ordering::Acquire)
        {
            return Err(Refusal::Overflow);
        }
        if self.len.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        if entries.contains_key(sid) { Err(Refusal::Revoked) } else { Ok(()) }
    }

    /// Adds session `sid`, revoked until `until`. When `capacity` live sessions are already
    /// held, the expired ones are dropped first; if none is, the list overflows: every token
    /// issued up to `now` is refused until `until` (a client then refreshes, and refresh checks
    /// the database), so no revocation is ever forgotten while its tokens live.
    pub fn insert(&self, sid: &str, until: u64, now: u64) -> Inserted {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.contains_key(sid) {
            return Inserted::Known;
        }
        if entries.len() >= self.capacity {
            entries.retain(|_, expires| *expires >= now);
        }
        let inserted = if entries.len() >= self.capacity {
            self.overflow_issued_by.fetch_max(now, Ordering::AcqRel);
            self.overflow_until.fetch_max(until, Ordering::AcqRel);
            Inserted::Overflowed
        } else {
            entries.insert(sid.into(), until);
            Inserted::New
        };
        self.len.store(entries.len(), Ordering::Release);
        inserted
    }

    /// Drops the sessions whose tokens have all expired by `now`; returns how many.
    pub fn prune(&self, now: u64) -> usize {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let before = entries.len();
        entries.retain(|_, until| *until >= now);
        self.len.store(entries.len(), Ordering::Release);
        before - entries.len()
    }

    /// How many sessions are held.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `sid` is held.
    pub fn contains(&self, sid: &str) -> bool {
        self.entries.read().unwrap_or_else(PoisonError::into_inner).contains_key(sid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_list_refuses_nothing() {
        let list = RevokedSessions::new(4);
        assert_eq!(list.check("s1", 100, 100), Ok(()));
        assert!(list.is_empty());
    }

    #[test]
    fn revoked_session_is_refused_others_are_not() {
        let list = RevokedSessions::new(4);
        assert_eq!(list.insert("s1", 1_000, 100), Inserted::New);
        assert_eq!(list.insert("s1", 2_000, 100), Inserted::Known);
        assert_eq!(list.check("s1", 90, 100), Err(Refusal::Revoked));
        assert_eq!(list.check("s2", 90, 100), Ok(()));
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn expired_entries_are_pruned() {
        let list = RevokedSessions::new(4);
        list.insert("old", 150, 100);
        list.insert("new", 500, 100);
        assert_eq!(list.prune(150), 0, "kept up to and including its limit");
        assert_eq!(list.prune(151), 1);
        assert!(!list.contains("old"));
        assert!(list.contains("new"));
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn a_full_list_makes_room_by_dropping_expired_entries() {
        let list = RevokedSessions::new(2);
        list.insert("a", 110, 100);
        list.insert("b", 500, 100);
        assert_eq!(list.insert("c", 700, 200), Inserted::New);
        assert!(!list.contains("a"));
        assert!(list.contains("b") && list.contains("c"));
    }

    #[test]
    fn overflow_refuses_every_older_token_until_the_revocation_expires() {
        let list = RevokedSessions::new(2);
        list.insert("a", 1_000, 100);
        list.insert("b", 1_000, 100);
        // full of live entries: "c" cannot be held, so nothing issued up to now is trusted
        assert_eq!(list.insert("c", 1_200, 300), Inserted::Overflowed);
        assert!(!list.contains("c"));
        assert_eq!(list.check("c", 250, 301), Err(Refusal::Overflow));
        assert_eq!(list.check("unrelated", 300, 301), Err(Refusal::Overflow));
        // a token issued after the overflow (a refresh) is accepted
        assert_eq!(list.check("unrelated", 301, 302), Ok(()));
        // once every token of "c" has expired, older tokens are judged by the list again
        assert_eq!(list.check("unrelated", 250, 1_201), Ok(()));
        assert_eq!(list.check("a", 250, 1_000), Err(Refusal::Overflow));
    }
}
