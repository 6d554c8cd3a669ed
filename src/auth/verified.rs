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
//! - a remembered token whose session has been revoked since is refused as
//!   [`AuthError::SessionRevoked`] and forgotten: every hit is checked against the
//!   [`RevokedSessions`] deny-list, exactly as a fresh verification is;
//! - the memory is bounded by a number of tokens; the least useful are evicted first.
//!
//! So remembering a verified token changes no answer, only its cost.

use quick_cache::sync::Cache;

use super::AuthError;
use super::revocation::{Refusal, RevokedSessions};
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
    /// The token's `iat`, for the deny-list's overflow rule.
    issued_at: u64,
    /// Seconds since the Unix epoch after which the token is refused (`exp` + leeway).
    refuse_after: u64,
}

impl VerifiedTokens {
    /// Remembers at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        Self { tokens: Cache::new(capacity.max(1)) }
    }

    /// The caller of `token` if it verified before: `Some(Ok)` while it is valid at `now`,
    /// `Some(Err(Expired))` once it is past its expiry, `Some(Err(SessionRevoked))` once
    /// `revoked` refuses its session (it is forgotten in both cases), `None` when the token
    /// is not remembered and must be verified.
    pub fn get(
        &self,
        token: &str,
        now: u64,
        revoked: &RevokedSessions,
    ) -> Option<Result<Principal, AuthError>> {
        let remembered = self.tokens.get(token)?;
        if now > remembered.refuse_after {
            self.tokens.remove(token);
            return Some(Err(AuthError::Expired));
        }
        if let Err(refusal) = revoked.check(&remembered.principal.session_id, remembered.issued_at, now) {
            self.tokens.remove(token);
            return Some(Err(refused(refusal)));
        }
        Some(Ok(remembered.principal))
    }

    /// Remembers that `token`, issued at `issued_at`, verified as `principal` and is refused
    /// after `refuse_after`.
    pub fn insert(&self, token: &str, principal: Principal, issued_at: u64, refuse_after: u64) {
        self.tokens.insert(token.to_owned(), Remembered { principal, issued_at, refuse_after });
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

/// The error for a token the deny-list refuses, counted by reason.
pub(crate) fn refused(refusal: Refusal) -> AuthError {
    crate::metrics::auth_token_refused(refusal.as_str());
    AuthError::SessionRevoked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn principal(name: &str) -> Principal {
        Principal {
            user_id: format!("id-{name}"),
            username: name.to_owned(),
            role: Role::Viewer,
            session_id: format!("sid-{name}").into(),
        }
    }

    fn none() -> RevokedSessions {
        RevokedSessions::new(8)
    }

    #[test]
    fn remembers_a_token_until_it_expires_then_forgets_it() {
        let tokens = VerifiedTokens::new(8);
        assert!(tokens.get("a.b.c", 100, &none()).is_none());
        tokens.insert("a.b.c", principal("ada"), 100, 200);
        let hit = tokens.get("a.b.c", 150, &none()).expect("remembered").expect("valid");
        assert_eq!(hit.username, "ada");
        assert!(
            tokens.get("a.b.c", 200, &none()).expect("remembered").is_ok(),
            "valid up to and including the limit"
        );
        assert!(matches!(tokens.get("a.b.c", 201, &none()), Some(Err(AuthError::Expired))));
        assert!(tokens.get("a.b.c", 201, &none()).is_none(), "an expired token is forgotten");
        assert!(tokens.is_empty());
    }

    #[test]
    fn any_other_token_string_is_not_a_hit() {
        let tokens = VerifiedTokens::new(8);
        tokens.insert("header.payload.signature", principal("ada"), 100, 200);
        for other in ["header.payload.signaturf", "header.payload.signature ", "header.payload.", ""] {
            assert!(tokens.get(other, 100, &none()).is_none(), "{other:?}");
        }
    }

    #[test]
    fn a_remembered_token_of_a_revoked_session_is_refused_and_forgotten() {
        let tokens = VerifiedTokens::new(8);
        let revoked = RevokedSessions::new(8);
        tokens.insert("a.b.c", principal("ada"), 100, 200);
        tokens.insert("d.e.f", principal("bob"), 100, 200);
        assert!(tokens.get("a.b.c", 150, &revoked).expect("remembered").is_ok());
        revoked.insert("sid-ada", 300, 150);
        assert!(matches!(tokens.get("a.b.c", 151, &revoked), Some(Err(AuthError::SessionRevoked))));
        assert!(tokens.get("a.b.c", 151, &revoked).is_none(), "a refused token is forgotten");
        assert!(tokens.get("d.e.f", 151, &revoked).expect("remembered").is_ok(), "other sessions are not");
    }

    #[test]
    fn is_bounded_by_its_capacity() {
        let tokens = VerifiedTokens::new(64);
        for i in 0..1_000 {
            tokens.insert(&format!("token-{i}"), principal("ada"), 100, 200);
        }
        assert!(tokens.len() <= 64, "{} remembered", tokens.len());
        assert!(!tokens.is_empty());
    }
}
