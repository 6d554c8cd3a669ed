//! A bounded memory of access tokens that already passed verification.
//!
//! Clients send the same access token on every request until it expires, so the signature
//! check (an HMAC, or an Ed25519 or RSA verification, plus decoding the header and claims)
//! would otherwise be repeated for identical input on every call. [`VerifiedTokens`]
//! remembers the caller of each token that verified, keyed by the whole token string, until
//! the token's own `exp` (with the same leeway verification allows). So:
//!
//! - a token that did not verify is never remembered, and any change to a remembered token
//!   (payload or signature) is a different key, verified from scratch;
//! - a remembered token past its expiry is refused as [`AuthError::Expired`] and forgotten,
//!   exactly as verification would refuse it;
//! - the memory is bounded by a number of tokens; the least useful are evicted first.
//!
//! Access tokens are not revocable before `exp` (logout revokes the refresh token), so
//! remembering a verified token changes no answer, only its cost.

use quick_cache::sync::Cache;

use super::AuthError;
use super::service::Principal;

/// How many verified tokens are remembered by default.
pub const DEFAULT_CAPACITY: usize = 16_384;

/// Callers of recently verified access tokens, each until its token expires.
pub struct VerifiedTokens {
    tokens: Cache<String, Remembered>,
}

#[derive(Clone)]
struct Remembered {
    principal: Principal,
    /// Seconds since the Unix epoch after which the token is refused (`exp` + leeway).
    refuse_after: u64,
}

impl VerifiedTokens {
    /// Remembers at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        Self { tokens: Cache::new(capacity.max(1)) }
    }

    /// The caller of `token` if it verified before: `Some(Ok)` while it is valid at `now`,
    /// `Some(Err(Expired))` once it is past its expiry (it is forgotten then), `None` when
    /// the token is not remembered and must be verified.
    pub fn get(&self, token: &str, now: u64) -> Option<Result<Principal, AuthError>> {
        let remembered = self.tokens.get(token)?;
        if now > remembered.refuse_after {
            self.tokens.remove(token);
            return Some(Err(AuthError::Expired));
        }
        Some(Ok(remembered.principal))
    }

    /// Remembers that `token` verified as `principal` and is refused after `refuse_after`.
    pub fn insert(&self, token: &str, principal: Principal, refuse_after: u64) {
        self.tokens.insert(token.to_owned(), Remembered { principal, refuse_after });
    }

    /// How many tokens are remembered.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token is remembered.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn principal(name: &str) -> Principal {
        Principal { user_id: format!("id-{name}"), username: name.to_owned(), role: Role::Viewer }
    }

    #[test]
    fn remembers_a_token_until_it_expires_then_forgets_it() {
        let tokens = VerifiedTokens::new(8);
        assert!(tokens.get("a.b.c", 100).is_none());
        tokens.insert("a.b.c", principal("ada"), 200);
        let hit = tokens.get("a.b.c", 150).expect("remembered").expect("valid");
        assert_eq!(hit.username, "ada");
        assert!(tokens.get("a.b.c", 200).expect("remembered").is_ok(), "valid up to and including the limit");
        assert!(matches!(tokens.get("a.b.c", 201), Some(Err(AuthError::Expired))));
        assert!(tokens.get("a.b.c", 201).is_none(), "an expired token is forgotten");
        assert!(tokens.is_empty());
    }

    #[test]
    fn any_other_token_string_is_not_a_hit() {
        let tokens = VerifiedTokens::new(8);
        tokens.insert("header.payload.signature", principal("ada"), 200);
        for other in ["header.payload.signaturf", "header.payload.signature ", "header.payload.", ""] {
            assert!(tokens.get(other, 100).is_none(), "{other:?}");
        }
    }

    #[test]
    fn is_bounded_by_its_capacity() {
        let tokens = VerifiedTokens::new(64);
        for i in 0..1_000 {
            tokens.insert(&format!("token-{i}"), principal("ada"), 200);
        }
        assert!(tokens.len() <= 64, "{} remembered", tokens.len());
        assert!(!tokens.is_empty());
    }
}
