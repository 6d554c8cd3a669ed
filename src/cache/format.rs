//! Pure cache logic: the stored value format, TTL jitter and XFetch early refresh.
//!
//! # Stored value format (version 1)
//! | bytes | what |
//! |---|---|
//! | 0 | magic `b'C'` |
//! | 1 | format version, `1` |
//! | 2 | flags: bit 0 lz4-compressed, bit 1 negative (not-found) entry; other bits must be 0 |
//! | 3..11 | etag, `i64` little-endian, `0` for none |
//! | 11.. | payload: the body, or `lz4_flex::compress_prepend_size` of it |
//!
//! A value in another version is rejected as [`FormatError::UnsupportedVersion`]
//! (callers treat it as a miss), so a format change only needs a version bump.

use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use tokio::time::Instant;

/// First byte of every stored value.
pub const MAGIC: u8 = b'C';
/// The format version [`encode`] writes and [`decode`] reads.
pub const FORMAT_VERSION: u8 = 1;
/// Header length of a version-1 value: magic, version, flags, etag.
pub const HEADER_LEN: usize = 11;
/// Largest body [`decode`] will decompress, so a hostile or corrupt size
/// prefix cannot make it allocate without bound. [`encode`] stores larger
/// bodies uncompressed.
pub const MAX_DECOMPRESSED_LEN: usize = 16 * 1024 * 1024;
/// The shortest TTL [`jittered_ttl`] returns (Redis refuses `PX 0`).
pub const MIN_TTL: Duration = Duration::from_millis(1);

const FLAG_COMPRESSED: u8 = 0b01;
const FLAG_NOT_FOUND: u8 = 0b10;
const KNOWN_FLAGS: u8 = FLAG_COMPRESSED | FLAG_NOT_FOUND;

/// A cached response as stored in the L2 tier.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedValue {
    /// The serialized response body (empty for most negative entries).
    pub body: Bytes,
    /// The entity version the body was rendered from, if any. `Some(0)` is
    /// stored as "none" and reads back as `None`.
    pub etag: Option<i64>,
    /// A negative entry: the loader found nothing for this key.
    pub not_found: bool,
}

/// Why bytes read from the L2 tier are not a [`CachedValue`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Fewer bytes than the header needs.
    #[error("cached value is too short")]
    TooShort,
    /// The first byte is not [`MAGIC`].
    #[error("cached value has a bad magic byte")]
    BadMagic,
    /// Written by another format version.
    #[error("cached value has unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// Unknown flags, or a compressed payload that does not decompress to its stated size.
    #[error("cached value is corrupt")]
    Corrupt,
}

/// Encodes `value`, compressing the body with lz4 when it is at least
/// `compress_threshold` bytes long (and at most [`MAX_DECOMPRESSED_LEN`]) and
/// compression actually makes it smaller.
#[must_use]
pub fn encode(value: &CachedValue, compress_threshold: usize) -> Vec<u8> {
    let body = value.body.as_ref();
    let compressed = (body.len() >= compress_threshold && body.len() <= MAX_DECOMPRESSED_LEN)
        .then(|| lz4_flex::compress_prepend_size(body))
        .filter(|c| c.len() < body.len());
    let mut flags = 0;
    if compressed.is_some() {
        flags |= FLAG_COMPRESSED;
    }
    if value.not_found {
        flags |= FLAG_NOT_FOUND;
    }
    let payload = compressed.as_deref().unwrap_or(body);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&[MAGIC, FORMAT_VERSION, flags]);
    out.extend_from_slice(&value.etag.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Decodes a stored value, copying its body. Never panics, whatever the input.
///
/// # Errors
/// A [`FormatError`] naming the first thing wrong.
pub fn decode(bytes: &[u8]) -> Result<CachedValue, FormatError> {
    decode_bytes(Bytes::copy_from_slice(bytes))
}

/// [`decode`] without copying an uncompressed body: it is a slice of `bytes`.
///
/// # Errors
/// As [`decode`].
pub fn decode_bytes(bytes: Bytes) -> Result<CachedValue, FormatError> {
    match bytes.first() {
        None => return Err(FormatError::TooShort),
        Some(&magic) if magic != MAGIC => return Err(FormatError::BadMagic),
        Some(_) => {}
    }
    match bytes.get(1) {
        None => return Err(FormatError::TooShort),
        Some(&version) if version != FORMAT_VERSION => {
            return Err(FormatError::UnsupportedVersion(version));
        }
        Some(_) => {}
    }
    let (Some(&flags), Some(etag)) = (bytes.get(2), bytes.get(3..HEADER_LEN)) else {
        return Err(FormatError::TooShort);
    };
    if flags & !KNOWN_FLAGS != 0 {
        return Err(FormatError::Corrupt);
    }
    let etag = i64::from_le_bytes(etag.try_into().map_err(|_| FormatError::TooShort)?);
    let payload = bytes.slice(HEADER_LEN..);
    let body = if flags & FLAG_COMPRESSED != 0 { decompress(&payload)? } else { payload };
    Ok(CachedValue { body, etag: (etag != 0).then_some(etag), not_found: flags & FLAG_NOT_FOUND != 0 })
}

/// Decompresses a `compress_prepend_size` payload into a buffer of exactly the
/// stated size, refusing sizes over [`MAX_DECOMPRESSED_LEN`].
fn decompress(payload: &[u8]) -> Result<Bytes, FormatError> {
    let (Some(size), Some(block)) = (payload.get(..4), payload.get(4..)) else {
        return Err(FormatError::Corrupt);
    };
    let size = u32::from_le_bytes(size.try_into().map_err(|_| FormatError::Corrupt)?);
    let size = usize::try_from(size).map_err(|_| FormatError::Corrupt)?;
    if size > MAX_DECOMPRESSED_LEN {
        return Err(FormatError::Corrupt);
    }
    let mut out = vec![0; size];
    match lz4_flex::block::decompress_into(block, &mut out) {
        Ok(written) if written == size => Ok(Bytes::from(out)),
        _ => Err(FormatError::Corrupt),
    }
}

/// A TTL drawn uniformly from `[base·(1−jitter), base·(1+jitter)]`, so entries
/// written together do not all expire together. `jitter` is clamped to
/// `[0, 1]` (NaN counts as 0); the result is never below [`MIN_TTL`].
pub fn jittered_ttl(base: Duration, jitter: f64, rng: &mut impl Rng) -> Duration {
    let jitter = if jitter.is_nan() { 0.0 } else { jitter.clamp(0.0, 1.0) };
    let base_nanos = base.as_nanos();
    // Float to int `as` saturates; the spread only needs to be approximately `base·jitter`.
    let spread = (base_nanos as f64 * jitter) as u128;
    let low = base_nanos.saturating_sub(spread);
    let high = base_nanos.saturating_add(spread);
    let nanos = if low < high { rng.random_range(low..=high) } else { base_nanos };
    from_nanos(nanos).max(MIN_TTL)
}

fn from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    let sub = u32::try_from(nanos % NANOS_PER_SEC).unwrap_or(0);
    Duration::new(secs, sub)
}

/// The largest `−ln(r)` for an `r` drawn as `1 − random::<f64>()`: `53·ln 2`.
const MAX_NEG_LN: f64 = 53.0 * std::f64::consts::LN_2;

/// XFetch ("optimal probabilistic cache stampede prevention", Vattani et al.):
/// whether to recompute an entry expiring at `expires_at` now, ahead of expiry.
///
/// True when `now − δ·β·ln(r) ≥ expires_at` with `r` uniform in `(0, 1]`, where
/// `δ` (`delta`) is how long a recomputation takes and `β` (`beta`, usually 1)
/// scales the eagerness. At a gap `g` before expiry this happens with
/// probability `exp(−g / (δ·β))`. Always true at or after expiry; with `β ≤ 0`
/// (or NaN) or `δ = 0`, only then.
pub fn should_refresh_early(
    now: Instant,
    expires_at: Instant,
    delta: Duration,
    beta: f64,
    rng: &mut impl Rng,
) -> bool {
    let gap = expires_at.saturating_duration_since(now);
    if gap.is_zero() {
        return true;
    }
    if beta.is_nan() || beta <= 0.0 || delta.is_zero() {
        return false;
    }
    let scale = delta.as_secs_f64() * beta;
    // `random` is in [0, 1) in steps of 2⁻⁵³, so 1 − it is in [2⁻⁵³, 1] and −ln of
    // it at most 53·ln 2: a gap beyond that many δ·β cannot be reached, and most
    // hits (far from expiry) skip the draw and the logarithm.
    if gap.as_secs_f64() > scale * MAX_NEG_LN {
        return false;
    }
    let r = 1.0 - rng.random::<f64>();
    scale * -r.ln() >= gap.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn value(body: &[u8], etag: Option<i64>, not_found: bool) -> CachedValue {
        CachedValue { body: Bytes::copy_from_slice(body), etag, not_found }
    }

    #[test]
    fn round_trips_without_compression() {
        for v in [
            value(b"{\"id\":1}", Some(42), false),
            value(b"", None, true),
            value(b"x", Some(-7), true),
            value(b"", Some(i64::MAX), false),
        ] {
            let encoded = encode(&v, usize::MAX);
            assert_eq!(encoded[..3], [MAGIC, FORMAT_VERSION, u8::from(v.not_found) << 1]);
            assert_eq!(encoded.len(), HEADER_LEN + v.body.len());
            assert_eq!(decode(&encoded), Ok(v.clone()));
            assert_eq!(decode_bytes(Bytes::from(encoded)), Ok(v));
        }
    }

    #[test]
    fn round_trips_with_compression() {
        let body = "{\"title\":\"a repetitive catalogue entry\"}".repeat(200);
        let v = value(body.as_bytes(), Some(3), false);
        let encoded = encode(&v, 64);
        assert_eq!(encoded[2] & FLAG_COMPRESSED, FLAG_COMPRESSED);
        assert!(encoded.len() < body.len() / 4, "{} bytes", encoded.len());
        assert_eq!(decode(&encoded), Ok(v));
    }

    #[test]
    fn compresses_only_at_or_above_threshold_and_only_when_smaller() {
        let body = vec![b'a'; 1000];
        let v = value(&body, None, false);
        assert_eq!(encode(&v, 1001)[2] & FLAG_COMPRESSED, 0, "below threshold");
        assert_eq!(encode(&v, 1000)[2] & FLAG_COMPRESSED, FLAG_COMPRESSED, "at threshold");
        // Incompressible bytes stay raw even above the threshold.
        let mut rng = StdRng::seed_from_u64(7);
        let noise: Vec<u8> = (0..1000).map(|_| rng.random()).collect();
        let encoded = encode(&value(&noise, None, false), 0);
        assert_eq!(encoded[2] & FLAG_COMPRESSED, 0);
        assert_eq!(encoded.len(), HEADER_LEN + noise.len());
    }

    #[test]
    fn etag_zero_reads_back_as_none() {
        let encoded = encode(&value(b"b", Some(0), false), usize::MAX);
        assert_eq!(decode(&encoded).map(|v| v.etag), Ok(None));
    }

    #[test]
    fn rejects_bad_headers() {
        let good = encode(&value(b"body", Some(1), false), usize::MAX);
        assert_eq!(decode(&[]), Err(FormatError::TooShort));
        assert_eq!(decode(b"C"), Err(FormatError::TooShort));
        assert_eq!(decode(&good[..HEADER_LEN - 1]), Err(FormatError::TooShort));
        assert_eq!(decode(b"X\x01\x00"), Err(FormatError::BadMagic));
        let mut bumped = good.clone();
        bumped[1] = 2;
        assert_eq!(decode(&bumped), Err(FormatError::UnsupportedVersion(2)));
        assert_eq!(decode(b"C\x00"), Err(FormatError::UnsupportedVersion(0)));
        let mut unknown_flag = good;
        unknown_flag[2] = 0b100;
        assert_eq!(decode(&unknown_flag), Err(FormatError::Corrupt));
    }

    #[test]
    fn rejects_corrupt_and_oversized_compressed_payloads() {
        let header = |flags: u8| {
            let mut h = vec![MAGIC, FORMAT_VERSION, flags];
            h.extend_from_slice(&0i64.to_le_bytes());
            h
        };
        // No size prefix.
        assert_eq!(decode(&[header(FLAG_COMPRESSED), vec![1, 0]].concat()), Err(FormatError::Corrupt));
        // A size prefix claiming 4 GiB: refused before allocating.
        let bomb = [header(FLAG_COMPRESSED), u32::MAX.to_le_bytes().to_vec(), vec![0x1f, 0]].concat();
        assert_eq!(decode(&bomb), Err(FormatError::Corrupt));
        // A stated size that does not match what the block decompresses to.
        let mut lying = encode(&value(&[b'z'; 500], None, false), 0);
        lying[HEADER_LEN] = lying[HEADER_LEN].wrapping_add(1);
        assert_eq!(decode(&lying), Err(FormatError::Corrupt));
        // Truncated block.
        let whole = encode(&value(&[b'z'; 500], None, false), 0);
        assert_eq!(decode(&whole[..whole.len() - 1]), Err(FormatError::Corrupt));
    }

    #[test]
    fn ttl_jitter_edges() {
        let mut rng = StdRng::seed_from_u64(1);
        let base = Duration::from_secs(60);
        assert_eq!(jittered_ttl(base, 0.0, &mut rng), base);
        assert_eq!(jittered_ttl(base, f64::NAN, &mut rng), base);
        assert_eq!(jittered_ttl(Duration::ZERO, 0.5, &mut rng), MIN_TTL);
        assert!(jittered_ttl(Duration::MAX, 1.0, &mut rng) >= Duration::from_secs(1));
        // jitter above 1 is clamped: never zero, never above twice the base.
        for _ in 0..1000 {
            let ttl = jittered_ttl(base, 5.0, &mut rng);
            assert!(ttl >= MIN_TTL && ttl <= base * 2, "{ttl:?}");
        }
    }

    #[test]
    fn ttl_jitter_spreads() {
        let mut rng = StdRng::seed_from_u64(2);
        let base = Duration::from_secs(100);
        let draws: Vec<Duration> = (0..2000).map(|_| jittered_ttl(base, 0.1, &mut rng)).collect();
        let below = draws.iter().filter(|d| **d < base).count();
        assert!((800..1200).contains(&below), "{below} of 2000 below the base");
        assert!(draws.iter().any(|d| *d < Duration::from_secs(91)));
        assert!(draws.iter().any(|d| *d > Duration::from_secs(109)));
    }

    /// Fraction of `n` seeded draws that refresh at `gap` before expiry.
    fn refresh_rate(gap: Duration, delta: Duration, beta: f64, n: u32, seed: u64) -> f64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let now = Instant::now();
        let hits = (0..n).filter(|_| should_refresh_early(now, now + gap, delta, beta, &mut rng)).count();
        f64::from(u32::try_from(hits).unwrap()) / f64::from(n)
    }

    #[test]
    fn xfetch_probability_rises_towards_expiry_and_matches_theory() {
        let delta = Duration::from_millis(100);
        let beta = 1.0;
        let mut last = -1.0;
        for gap_ms in [1000u64, 400, 200, 100, 50, 10, 1] {
            let rate = refresh_rate(Duration::from_millis(gap_ms), delta, beta, 10_000, gap_ms);
            let expected = (-(gap_ms as f64) / 100.0).exp();
            assert!((rate - expected).abs() < 0.02, "gap {gap_ms} ms: rate {rate}, expected {expected}");
            assert!(rate >= last, "gap {gap_ms} ms: {rate} < {last}");
            last = rate;
        }
    }

    #[test]
    fn xfetch_far_from_expiry_never_refreshes_and_draws_nothing() {
        let now = Instant::now();
        let delta = Duration::from_millis(10);
        let mut rng = StdRng::seed_from_u64(7);
        let mut untouched = rng.clone();
        // beyond 53·ln 2 ≈ 36.7 δ·β no draw can reach expiry
        assert!(!should_refresh_early(now, now + delta * 40, delta, 1.0, &mut rng));
        assert_eq!(rng.random::<u64>(), untouched.random::<u64>(), "no random draw was made");
        // just inside the bound a draw is made (and can, rarely, say yes)
        let mut rng = StdRng::seed_from_u64(7);
        let _ = should_refresh_early(now, now + delta * 30, delta, 1.0, &mut rng);
        let mut fresh = StdRng::seed_from_u64(7);
        assert_ne!(rng.random::<u64>(), fresh.random::<u64>(), "a draw was made");
    }

    #[test]
    fn xfetch_always_refreshes_at_or_after_expiry() {
        let mut rng = StdRng::seed_from_u64(3);
        let now = Instant::now();
        for beta in [0.0, 1.0, f64::NAN] {
            assert!(should_refresh_early(now, now, Duration::from_secs(1), beta, &mut rng));
            let past = now.checked_sub(Duration::from_secs(1)).unwrap();
            assert!(should_refresh_early(now, past, Duration::ZERO, beta, &mut rng));
        }
    }

    #[test]
    fn xfetch_with_beta_zero_waits_for_expiry() {
        for beta in [0.0, -1.0, f64::NAN] {
            assert_eq!(refresh_rate(Duration::from_nanos(1), Duration::from_secs(10), beta, 10_000, 4), 0.0);
        }
        assert_eq!(refresh_rate(Duration::from_nanos(1), Duration::ZERO, 1.0, 10_000, 5), 0.0);
    }

    #[test]
    fn xfetch_larger_beta_refreshes_earlier() {
        let gap = Duration::from_millis(200);
        let delta = Duration::from_millis(100);
        let calm = refresh_rate(gap, delta, 0.5, 10_000, 6);
        let eager = refresh_rate(gap, delta, 2.0, 10_000, 6);
        assert!(eager > calm, "{eager} <= {calm}");
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_compressed_headers(
            size in any::<u32>(),
            block in proptest::collection::vec(any::<u8>(), 0..256),
            flags in 0u8..4,
        ) {
            let mut bytes = vec![MAGIC, FORMAT_VERSION, flags];
            bytes.extend_from_slice(&1i64.to_le_bytes());
            bytes.extend_from_slice(&(size % (2 * 1024 * 1024)).to_le_bytes());
            bytes.extend_from_slice(&block);
            let _ = decode(&bytes);
        }

        #[test]
        fn round_trip(
            body in proptest::collection::vec(prop_oneof![Just(b'a'), any::<u8>()], 0..4096),
            etag in proptest::option::of(any::<i64>().prop_filter("0 means none", |e| *e != 0)),
            not_found in any::<bool>(),
            threshold in prop_oneof![Just(0usize), Just(usize::MAX), 0usize..5000],
        ) {
            let v = value(&body, etag, not_found);
            let encoded = encode(&v, threshold);
            prop_assert!(encoded.len() <= HEADER_LEN + body.len());
            if body.len() < threshold {
                prop_assert_eq!(encoded[2] & FLAG_COMPRESSED, 0);
            }
            prop_assert_eq!(decode(&encoded), Ok(v));
        }

        #[test]
        fn jittered_ttl_stays_in_bounds(
            base_ms in 0u64..10_000_000,
            jitter in 0.0f64..=1.0,
            seed in any::<u64>(),
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let base = Duration::from_millis(base_ms);
            let ttl = jittered_ttl(base, jitter, &mut rng);
            let slack = Duration::from_micros(1);
            let low = base.mul_f64(1.0 - jitter).saturating_sub(slack).max(MIN_TTL);
            let high = base.mul_f64(1.0 + jitter) + slack;
            prop_assert!(ttl >= low, "{:?} < {:?}", ttl, low);
            prop_assert!(ttl <= high.max(MIN_TTL), "{:?} > {:?}", ttl, high);
            prop_assert!(!ttl.is_zero());
        }
    }
}
