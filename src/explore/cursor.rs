//! Opaque, tamper-evident keyset cursors.
//!
//! A cursor is `base64url(JSON position) "." base64url(HMAC-SHA256 tag, first 16 bytes)`.
//! The position holds the sort key of the last row of a page plus a fingerprint of
//! the query's filters ([`filter_fingerprint`]), so a cursor cannot be altered, forged
//! without the key, or replayed against a different filter or sort.
//!
//! Floats (`trend`, `score`) are carried as their IEEE-754 bit patterns: the keyset
//! compares them for equality with the database's values, so they must survive the
//! round trip exactly (JSON's decimal text is not guaranteed to).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ExploreError;
use super::model::{ListQuery, Sort};

type HmacSha256 = Hmac<Sha256>;

/// Longest token [`CursorCodec::decode`] looks at, in bytes.
pub const MAX_TOKEN_BYTES: usize = 1024;
/// Bytes of the HMAC tag kept in a token.
const TAG_BYTES: usize = 16;
/// Domain separation for the key derivation: the same secret used elsewhere yields another key.
const KEY_CONTEXT: &[u8] = b"castwork/explore/cursor/v1\0";

/// Where a page ended: the sort key of its last row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// The sort the cursor was issued for.
    #[serde(rename = "s")]
    pub sort: Sort,
    /// [`filter_fingerprint`] of the query the cursor was issued for.
    #[serde(rename = "f")]
    pub filter: u64,
    /// Last row's `published_at` (sort `new`).
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<DateTime<Utc>>,
    /// Last row's `trend` (sort `trending`).
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none", with = "f64_bits")]
    pub trend: Option<f64>,
    /// Last row's full-text score (sort `relevance`).
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none", with = "f64_bits")]
    pub score: Option<f64>,
    /// Last row's id, the tie-breaker.
    #[serde(rename = "i")]
    pub id: String,
}

/// Signs and verifies cursors with a key derived from the configured secret.
pub struct CursorCodec {
    mac: HmacSha256,
}

impl std::fmt::Debug for CursorCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorCodec { .. }")
    }
}

impl CursorCodec {
    /// A codec keyed by SHA-256(context ‖ `secret`). An empty secret gets a random key,
    /// so cursors then only survive as long as this process.
    pub fn new(secret: &[u8]) -> Self {
        let key: [u8; 32] = if secret.is_empty() {
            let mut key = [0u8; 32];
            rand::rng().fill_bytes(&mut key);
            key
        } else {
            let mut hasher = Sha256::new();
            hasher.update(KEY_CONTEXT);
            hasher.update(secret);
            hasher.finalize().into()
        };
        // HMAC zero-pads keys shorter than the hash's block, so keying with the padded
        // block is HMAC keyed by `key` (the unit tests check it) without a fallible call.
        let mut block = hmac::digest::Key::<HmacSha256>::default();
        for (slot, byte) in block.iter_mut().zip(key) {
            *slot = byte;
        }
        Self { mac: <HmacSha256 as hmac::digest::KeyInit>::new(&block) }
    }

    fn tag(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(payload);
        mac
    }

    /// The token for `position`.
    pub fn encode(&self, position: &Position) -> String {
        // Serializing a struct of strings, numbers and a timestamp cannot fail; an empty
        // payload would only produce a token that `decode` rejects.
        let json = serde_json::to_vec(position).unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(&json);
        let tag = self.tag(payload.as_bytes()).finalize().into_bytes();
        let tag = URL_SAFE_NO_PAD.encode(tag.get(..TAG_BYTES).unwrap_or_default());
        format!("{payload}.{tag}")
    }

    /// The position in `token`, if this codec issued it for a query whose
    /// [`filter_fingerprint`] is `expected_filter`.
    pub fn decode(&self, token: &str, expected_filter: u64) -> Result<Position, ExploreError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ExploreError::InvalidCursor);
        }
        let (payload, tag) = token.split_once('.').ok_or(ExploreError::InvalidCursor)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| ExploreError::InvalidCursor)?;
        // `verify_truncated_left` accepts any non-empty prefix; insist on the full length.
        if tag.len() != TAG_BYTES {
            return Err(ExploreError::InvalidCursor);
        }
        self.tag(payload.as_bytes()).verify_truncated_left(&tag).map_err(|_| ExploreError::InvalidCursor)?;
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| ExploreError::InvalidCursor)?;
        let position: Position = serde_json::from_slice(&json).map_err(|_| ExploreError::InvalidCursor)?;
        if position.filter != expected_filter {
            return Err(ExploreError::InvalidCursor);
        }
        Ok(position)
    }
}

/// A stable fingerprint of a query's filters and sort (not its limit or cursor).
///
/// Filters are normalized first, so equivalent queries agree: `q` is trimmed (blank
/// means none) and tags are sorted and deduplicated.
pub fn filter_fingerprint(query: &ListQuery) -> u64 {
    fn field(hasher: &mut Sha256, name: &str, value: Option<&str>) {
        hasher.update(name.as_bytes());
        match value {
            Some(v) => {
                hasher.update([1u8]);
                hasher.update((v.len() as u64).to_be_bytes());
                hasher.update(v.as_bytes());
            }
            None => hasher.update([0u8]),
        }
    }
    let mut hasher = Sha256::new();
    hasher.update(b"castwork/explore/filter/v1");
    let sort = match query.sort {
        Sort::New => "new",
        Sort::Trending => "trending",
        Sort::Relevance => "relevance",
    };
    field(&mut hasher, "sort", Some(sort));
    field(&mut hasher, "category", query.category.as_deref());
    field(&mut hasher, "group", query.group.as_deref());
    field(&mut hasher, "q", query.q.as_deref().map(str::trim).filter(|q| !q.is_empty()));
    let mut tags: Vec<&str> = query.tags.iter().map(String::as_str).collect();
    tags.sort_unstable();
    tags.dedup();
    hasher.update((tags.len() as u64).to_be_bytes());
    for tag in tags {
        field(&mut hasher, "tag", Some(tag));
    }
    let from = query.from.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
    let to = query.to.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
    field(&mut hasher, "from", from.as_deref());
    field(&mut hasher, "to", to.as_deref());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    for (slot, byte) in first.iter_mut().zip(digest.iter()) {
        *slot = *byte;
    }
    u64::from_be_bytes(first)
}

/// `Option<f64>` as the bit pattern of the float, so it round-trips exactly.
mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.serialize_some(&v.to_bits()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(f64::from_bits))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    fn position(filter: u64) -> Position {
        Position {
            sort: Sort::Trending,
            filter,
            published_at: Some(Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap()),
            trend: Some(0.1 + 0.2),
            score: Some(-1.0e-300),
            id: "cond-mat/9909265".into(),
        }
    }

    fn invalid(r: Result<Position, ExploreError>) -> bool {
        matches!(r, Err(ExploreError::InvalidCursor))
    }

    #[test]
    fn round_trips_exactly() {
        let codec = CursorCodec::new(b"secret");
        let p = position(42);
        let token = codec.encode(&p);
        assert!(token.len() < 200, "{token}");
        let back = codec.decode(&token, 42).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.trend.unwrap().to_bits(), (0.1f64 + 0.2).to_bits());
        let bare = Position { sort: Sort::New, published_at: None, trend: None, score: None, ..p };
        assert_eq!(codec.decode(&codec.encode(&bare), 42).unwrap(), bare);
    }

    #[test]
    fn any_altered_byte_is_rejected() {
        let codec = CursorCodec::new(b"secret");
        let token = codec.encode(&position(7));
        for i in 0..token.len() {
            for replacement in [b'A', b'_', b'.', b'z'] {
                let mut bytes = token.clone().into_bytes();
                if bytes[i] == replacement {
                    continue;
                }
                bytes[i] = replacement;
                let altered = String::from_utf8(bytes).unwrap();
                assert!(invalid(codec.decode(&altered, 7)), "{altered}");
            }
        }
        assert!(invalid(codec.decode(&token[..token.len() - 1], 7)));
        assert!(invalid(codec.decode(&format!("{token}A"), 7)));
        // A tag cut short is not accepted even though it is a true prefix.
        let (payload, tag) = token.split_once('.').unwrap();
        assert!(invalid(codec.decode(&format!("{payload}.{}", &tag[..2]), 7)));
    }

    #[test]
    fn another_key_another_filter_or_oversized_is_rejected() {
        let codec = CursorCodec::new(b"secret");
        let token = codec.encode(&position(7));
        assert!(invalid(CursorCodec::new(b"other").decode(&token, 7)));
        assert!(invalid(CursorCodec::new(b"").decode(&token, 7)));
        assert!(invalid(codec.decode(&token, 8)));
        assert!(invalid(codec.decode(&"a".repeat(MAX_TOKEN_BYTES + 1), 7)));
        let long = Position { id: "x".repeat(900), ..position(7) };
        assert!(invalid(codec.decode(&codec.encode(&long), 7)));
        // Empty secrets get distinct random keys.
        let random = CursorCodec::new(b"");
        assert!(invalid(CursorCodec::new(b"").decode(&random.encode(&position(7)), 7)));
        assert!(random.decode(&random.encode(&position(7)), 7).is_ok());
    }

    #[test]
    fn padded_block_key_is_the_derived_key() {
        let mut hasher = Sha256::new();
        hasher.update(KEY_CONTEXT);
        hasher.update(b"secret");
        let key: [u8; 32] = hasher.finalize().into();
        let mut reference = HmacSha256::new_from_slice(&key).unwrap();
        reference.update(b"payload");
        let ours = CursorCodec::new(b"secret").tag(b"payload");
        assert_eq!(ours.finalize().into_bytes(), reference.finalize().into_bytes());
    }

    #[test]
    fn fingerprint_covers_filters_and_sort_not_paging() {
        let base = ListQuery { category: Some("cs.CV".into()), limit: 10, ..Default::default() };
        let fp = filter_fingerprint(&base);
        let same = ListQuery { limit: 99, cursor: Some("x".into()), ..base.clone() };
        assert_eq!(filter_fingerprint(&same), fp);
        let variants = [
            ListQuery { category: Some("cs.AI".into()), ..base.clone() },
            ListQuery { category: None, group: Some("cs.CV".into()), ..base.clone() },
            ListQuery { tags: vec!["cs.CV".into()], ..base.clone() },
            ListQuery { q: Some("vision".into()), ..base.clone() },
            ListQuery { from: Some(Utc.timestamp_opt(0, 0).unwrap()), ..base.clone() },
            ListQuery { to: Some(Utc.timestamp_opt(0, 0).unwrap()), ..base.clone() },
            ListQuery { sort: Sort::Trending, ..base.clone() },
        ];
        for v in &variants {
            assert_ne!(filter_fingerprint(v), fp, "{v:?}");
        }
        let tags_a = ListQuery { tags: vec!["b".into(), "a".into(), "a".into()], ..base.clone() };
        let tags_b = ListQuery { tags: vec!["a".into(), "b".into()], ..base.clone() };
        assert_eq!(filter_fingerprint(&tags_a), filter_fingerprint(&tags_b));
        let blank_q = ListQuery { q: Some("   ".into()), ..base.clone() };
        assert_eq!(filter_fingerprint(&blank_q), fp);
        let padded_q = ListQuery { q: Some(" vision ".into()), ..base.clone() };
        assert_eq!(filter_fingerprint(&padded_q), filter_fingerprint(&variants[3]));
    }

    proptest! {
        #[test]
        fn decode_never_panics(token in ".{0,1100}", filter in any::<u64>()) {
            let codec = CursorCodec::new(b"secret");
            let _ = codec.decode(&token, filter);
        }

        #[test]
        fn decode_never_panics_on_near_tokens(payload in "[A-Za-z0-9_-]{0,80}", tag in "[A-Za-z0-9_.-]{0,30}") {
            let codec = CursorCodec::new(b"secret");
            let token = format!("{payload}.{tag}");
            prop_assert!(codec.decode(&token, 1).is_err());
        }
    }
}
