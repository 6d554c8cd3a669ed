//! The Explore cache: a [`Cache`] routes each key to one of N CacheActor shards
//! ([`shard`]) by a stable hash. Each shard owns an L1 (bounded
//! by bytes) for its slice of the key space and coalesces concurrent misses into
//! one load; behind it sits Redis as the shared L2 ([`redis::RedisTier`], guarded
//! by a circuit breaker), and behind that the loader (the database).
//!
//! Values are the serialized response bytes, so a hit does no serialization.
//! List and search keys embed generation counters ([`generations`]): an item
//! change bumps the counters of its families and every stale page becomes
//! unreachable at once.
//!
//! | file | what |
//! |---|---|
//! | `format.rs` | stored value format (header, lz4), TTL jitter, XFetch |
//! | `redis.rs` | the L2 tier over fred, breaker-guarded; pub/sub |
//! | `reader.rs` | the L2 reader: every shard's misses, batched into `MGET`s |
//! | `generations.rs` | family generation counters, mirrored per node |
//! | `handle.rs` | [`Cache`]: routing, asks with deadlines, fallbacks, invalidation |
//! | `bypass.rs` | the bounded path to the database while a shard is down |
//! | `shard.rs` | the CacheActor: one shard's L1, coalesced loads, L2 reads through the reader |
//! | `listener.rs` | the invalidation listener: other nodes' generation bumps and deletes |
//! | `tree.rs` | [`tree::child_spec`]: the cache supervisor over the shards and the listener |

pub mod bypass;
pub mod format;
pub mod generations;
pub mod handle;
pub mod listener;
pub mod reader;
pub mod redis;
pub mod shard;
pub mod tree;

pub use handle::{Cache, CacheError, LoadError, Loader};

/// A stable 64-bit FNV-1a hash: the same key maps to the same shard on every node and run.
pub fn stable_hash(key: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The shard that owns `key` among `shards`.
pub fn shard_of(key: &str, shards: usize) -> usize {
    let n = u64::try_from(shards.max(1)).unwrap_or(1);
    usize::try_from(stable_hash(key) % n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_is_stable_and_spreads() {
        assert_eq!(stable_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
        let mut counts = [0usize; 16];
        for i in 0..16_000 {
            counts[shard_of(&format!("item:{i}"), 16)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 700 && c < 1300), "{counts:?}");
    }
}
