//! The open-file limit: raised to its hard ceiling at start, and the source of
//! the default connection cap, so that connections alone cannot use up the
//! descriptors the database pool, Redis and the process itself need.

use crate::config::Settings;

/// Descriptors kept out of the connection cap beyond the database pool and the
/// Redis connections: listeners, log files, the SQLite file and its WAL, DNS, ...
pub const RESERVED_DESCRIPTORS: u64 = 128;

/// Used when the configured cap is 0 and the process has no open-file limit.
const UNLIMITED_DEFAULT: usize = 65_536;

/// The open-file limit, soft and hard (`None`: unlimited or unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    /// The limit in force.
    pub soft: Option<u64>,
    /// The ceiling the soft limit may be raised to.
    pub hard: Option<u64>,
}

/// The current open-file limit.
#[cfg(unix)]
pub fn file_limit() -> FileLimit {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    FileLimit { soft: limit.current, hard: limit.maximum }
}

/// The current open-file limit (unknown off Unix).
#[cfg(not(unix))]
pub fn file_limit() -> FileLimit {
    FileLimit { soft: None, hard: None }
}

/// Raises the soft open-file limit to the hard one and logs both. Called by
/// `castwork serve` before the node is built; failing only logs a warning.
#[cfg(unix)]
pub fn raise_file_limit() -> FileLimit {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    // Linux refuses an unlimited soft limit for descriptors; 2^20 is its usual ceiling
    let target = before.maximum.unwrap_or(1 << 20);
    if before.current.is_some_and(|soft| soft < target) {
        let raised = Rlimit { current: Some(target), maximum: before.maximum };
        if let Err(err) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(
                error = %err,
                soft = %shown(before.current),
                hard = %shown(before.maximum),
                "could not raise the open-file limit"
            );
        }
    }
    let now = file_limit();
    tracing::info!(
        soft_before = %shown(before.current),
        soft = %shown(now.soft),
        hard = %shown(now.hard),
        "open-file limit"
    );
    now
}

/// A limit for the logs: the number, or `unlimited`.
#[cfg(unix)]
fn shown(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".to_owned(), |n| n.to_string())
}

/// Raises the soft open-file limit (nothing to do off Unix).
#[cfg(not(unix))]
pub fn raise_file_limit() -> FileLimit {
    file_limit()
}

/// Descriptors the rest of the node may hold: [`RESERVED_DESCRIPTORS`], the
/// database pool and the Redis connections (pool + subscription).
pub fn reserved_descriptors(settings: &Settings) -> u64 {
    let redis = if settings.cache.redis.url.is_empty() { 0 } else { settings.cache.redis.pool_size + 1 };
    RESERVED_DESCRIPTORS
        .saturating_add(u64::from(settings.database.max_connections))
        .saturating_add(u64::try_from(redis).unwrap_or(u64::MAX))
}

/// The connection cap in effect: `configured` (0: as many as the limit allows),
/// never above the soft open-file limit less `reserved`, and at least 1.
pub fn connection_cap(configured: usize, soft_limit: Option<u64>, reserved: u64) -> usize {
    let ceiling = soft_limit.map(|soft| usize::try_from(soft.saturating_sub(reserved)).unwrap_or(usize::MAX));
    let cap = match (configured, ceiling) {
        (0, Some(ceiling)) => ceiling,
        (0, None) => UNLIMITED_DEFAULT,
        (configured, Some(ceiling)) => configured.min(ceiling),
        (configured, None) => configured,
    };
    cap.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_descriptor_limit() {
        assert_eq!(connection_cap(0, Some(1024), 142), 882);
        assert_eq!(connection_cap(500, Some(1024), 142), 500);
        assert_eq!(connection_cap(5000, Some(1024), 142), 882);
        assert_eq!(connection_cap(0, None, 142), UNLIMITED_DEFAULT);
        assert_eq!(connection_cap(0, Some(100), 142), 1);
        assert_eq!(connection_cap(7, None, 142), 7);
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let before = file_limit();
        let after = raise_file_limit();
        assert!(after.soft >= before.soft || after.soft.is_none());
        assert_eq!(after.hard, before.hard);
    }
}
