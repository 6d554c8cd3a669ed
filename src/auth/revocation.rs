//! Revoked sessions: access tokens of a revoked session are refused before their `exp`.
//!
//! A session is a refresh-token family (the access tokens' `sid` claim). Logout, refresh-token
//! reuse, a password change and an admin's revoke put its id on the deny-list:
//!
//! - in memory ([`RevokedSessions`]), checked on every request with one hash probe (none while
//!   the list is empty), also for tokens [`super::verified::VerifiedTokens`] remembers;
//! - in the `revoked_sessions` table ([`store`]), so the list survives a restart (it is loaded
//!   before the node serves) and reaches every node sharing the database: each node polls the
//!   table every `auth.revocation_poll_ms`;
//! - on Redis, when `cache.redis.url` is set: published on `{key_prefix}:revoked` and applied
//!   by the other nodes as it arrives (see [`crate::auth::sync`]); polling still
//!   catches what a Redis outage made them miss.
//!
//! An entry lives until the last access token its session can have issued has expired: the
//! revocation time plus `auth.access_ttl_secs` plus the verification leeway. Expired entries
//! are pruned from memory and from the table.

pub mod list;
pub mod store;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};
use serde::{Deserialize, Serialize};

pub use self::list::{Inserted, Refusal, RevokedSessions};
use super::jwt::{LEEWAY_SECS, now_secs};
use crate::metrics;

/// Where a node tells the others of its revocations at once: Redis pub/sub on [`CHANNEL`]
/// when `cache.redis.url` is set (the runtime wires it; this concern knows no transport).
pub trait Announcer: Send + Sync {
    /// Publishes one announcement (JSON); the error says why it could not be sent.
    fn announce(&self, payload: String) -> futures::future::BoxFuture<'_, Result<(), String>>;
}

/// The Redis channel suffix revocations are published on: `{key_prefix}:revoked`.
pub const CHANNEL: &str = "revoked";
/// Ids re-read below the last one seen on each poll: a row whose id was allocated before
/// another's may commit after it, and re-reading a few is cheaper than missing one.
const POLL_OVERLAP: i64 = 64;

/// Why a session was revoked: the `reason` label of
/// [`metrics::AUTH_SESSIONS_REVOKED_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The user logged out.
    Logout,
    /// A refresh token of the session was used twice.
    Reuse,
    /// The user's password changed.
    PasswordChange,
    /// An admin revoked the user's sessions.
    Admin,
    /// The session's user no longer exists.
    UserGone,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::Reuse => "reuse",
            Self::PasswordChange => "password_change",
            Self::Admin => "admin",
            Self::UserGone => "user_gone",
        }
    }
}

/// What a node publishes for each revocation.
#[derive(Debug, Serialize, Deserialize)]
struct Announcement {
    sids: Vec<String>,
    /// Seconds since the Unix epoch after which every token of these sessions has expired.
    until: u64,
}

/// The deny-list with its persistence and propagation. Shared by the node's [`super::AuthService`].
pub struct Revocations {
    list: RevokedSessions,
    db: DatabaseConnection,
    announcer: OnceLock<Arc<dyn Announcer>>,
    /// How long an entry is held: access-token lifetime plus leeway, in seconds.
    hold_secs: u64,
    /// The highest `revoked_sessions.id` read so far.
    last_seen: AtomicI64,
}

impl Revocations {
    /// An empty deny-list of at most `capacity` sessions, each held `access_ttl_secs` plus the
    /// leeway, persisted in `db`.
    pub fn new(db: DatabaseConnection, access_ttl_secs: u64, capacity: usize) -> Self {
        Self {
            list: RevokedSessions::new(capacity),
            db,
            announcer: OnceLock::new(),
            hold_secs: access_ttl_secs.saturating_add(LEEWAY_SECS),
            last_seen: AtomicI64::new(0),
        }
    }

    /// The in-memory list.
    pub fn list(&self) -> &RevokedSessions {
        &self.list
    }

    /// Announces later revocations through `announcer` too (Redis pub/sub, when configured).
    /// Only the first call counts.
    pub fn set_announcer(&self, announcer: Arc<dyn Announcer>) {
        let _ = self.announcer.set(announcer);
    }

    /// Revokes `sids` now: held in memory at once, then written to the table within `conn`
    /// (the caller's transaction, if any). Call [`announce`](Self::announce) after it commits.
    pub async fn record<C: ConnectionTrait>(
        &self,
        conn: &C,
        sids: &[String],
        reason: Reason,
    ) -> Result<u64, DbErr> {
        let now = now_secs();
        let until = now.saturating_add(self.hold_secs);
        for sid in sids {
            self.apply_one(sid, until, now, "local");
        }
        metrics::auth_sessions_revoked(reason.as_str(), sids.len() as u64);
        store::record(conn, sids, to_datetime(until)).await?;
        Ok(until)
    }

    /// Tells the other nodes at once through Redis, when configured. A failure is logged and
    /// counted; they still read the revocation from the table on their next poll.
    pub async fn announce(&self, sids: &[String], until: u64) {
        let Some(announcer) = self.announcer.get() else { return };
        if sids.is_empty() {
            return;
        }
        let announcement = Announcement { sids: sids.to_vec(), until };
        let Ok(payload) = serde_json::to_string(&announcement) else { return };
        if let Err(error) = announcer.announce(payload).await {
            metrics::auth_revocation_error("publish");
            tracing::warn!(%error, "could not publish a revocation; other nodes will read it from the database");
        }
    }

    /// Revokes `sids` (not in a transaction) and announces it.
    pub async fn revoke(&self, sids: &[String], reason: Reason) -> Result<(), DbErr> {
        let until = self.record(&self.db, sids, reason).await?;
        self.announce(sids, until).await;
        Ok(())
    }

    /// Applies another node's announcement.
    pub fn apply_remote(&self, payload: &str) {
        let Ok(announcement) = serde_json::from_str::<Announcement>(payload) else {
            tracing::warn!("ignoring a malformed revocation announcement");
            return;
        };
        let now = now_secs();
        for sid in &announcement.sids {
            self.apply_one(sid, announcement.until, now, "redis");
        }
    }

    /// Loads every live revocation from the table; for a node about to serve.
    pub async fn load(&self) -> Result<usize, DbErr> {
        let applied = self.read_since(0, "startup").await?;
        tracing::info!(applied, "revoked sessions loaded");
        Ok(applied)
    }

    /// Reads the revocations recorded since the last poll (by any node); returns how many
    /// were new here.
    pub async fn poll(&self) -> Result<usize, DbErr> {
        let after = self.last_seen.load(Ordering::Acquire).saturating_sub(POLL_OVERLAP).max(0);
        self.read_since(after, "poll").await
    }

    /// Drops expired revocations from memory and from the table.
    pub async fn prune(&self) -> Result<u64, DbErr> {
        let now = now_secs();
        let dropped = self.list.prune(now);
        metrics::auth_revoked_sessions(self.list.len());
        // a row is kept a little past its limit, so a lagging node still reads it
        let pruned = store::prune(&self.db, to_datetime(now.saturating_sub(LEEWAY_SECS))).await?;
        if dropped > 0 || pruned > 0 {
            tracing::debug!(dropped, pruned, "expired revocations pruned");
        }
        Ok(pruned)
    }

    async fn read_since(&self, after: i64, source: &'static str) -> Result<usize, DbErr> {
        let now = now_secs();
        let mut after = after;
        let mut applied = 0;
        loop {
            let rows = store::since(&self.db, after, to_datetime(now)).await?;
            let Some(last) = rows.last().map(|row| row.id) else { break };
            let more = rows.len() >= store::POLL_BATCH;
            for row in &rows {
                let until = u64::try_from(row.expires_at.timestamp()).unwrap_or(0);
                if self.apply_one(&row.sid, until, now, source) {
                    applied += 1;
                }
            }
            self.last_seen.fetch_max(last, Ordering::AcqRel);
            if !more {
                break;
            }
            after = last;
        }
        Ok(applied)
    }

    /// Holds one revocation in memory; true if it was not held yet.
    fn apply_one(&self, sid: &str, until: u64, now: u64, source: &'static str) -> bool {
        let inserted = self.list.insert(sid, until, now);
        match inserted {
            Inserted::Known => return false,
            Inserted::New => {}
            Inserted::Overflowed => {
                tracing::warn!(
                    held = self.list.len(),
                    "revoked-session list is full; refusing every access token issued until now"
                );
            }
        }
        metrics::auth_revocation_applied(source);
        metrics::auth_revoked_sessions(self.list.len());
        true
    }
}

fn to_datetime(secs: u64) -> DateTime<Utc> {
    i64::try_from(secs).ok().and_then(|s| DateTime::from_timestamp(s, 0)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests;
