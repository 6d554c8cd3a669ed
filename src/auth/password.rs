//! Password hashing: argon2id with the crate's default parameters, stored as PHC strings
//! (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`), so the parameters travel with each hash
//! and can be raised later without invalidating old ones.
//!
//! Hashing is deliberately slow (tens of milliseconds): async callers run these functions
//! on the blocking pool.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;

use super::AuthError;

/// Hashes a password with argon2id and a fresh 16-byte random salt.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|_| AuthError::Hashing)?;
    let hash = Argon2::default().hash_password(password.as_bytes(), &salt).map_err(|_| AuthError::Hashing)?;
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string. A malformed PHC string never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A hash of a throwaway password, computed once, so [`verify_dummy`] does the same work as a
/// real verification.
static DUMMY_HASH: LazyLock<Option<String>> =
    LazyLock::new(|| hash_password("castwork-dummy-password-for-unknown-users").ok());

/// Burns the time of a real verification, for logins naming an unknown user, so response
/// times do not reveal which usernames exist. The first call also computes the dummy hash;
/// [`warm_up`] does that ahead of time.
pub fn verify_dummy(password: &str) {
    if let Some(phc) = DUMMY_HASH.as_deref() {
        let _ = verify_password(password, phc);
    }
}

/// Computes the dummy hash now, so the first unknown-user login is not slower than the others.
pub fn warm_up() {
    LazyLock::force(&DUMMY_HASH);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let phc = hash_password("correct horse battery staple").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify_password("correct horse battery staple", &phc));
    }

    #[test]
    fn wrong_password_does_not_verify() {
        let phc = hash_password("correct horse battery staple").unwrap();
        assert!(!verify_password("correct horse battery stapler", &phc));
        assert!(!verify_password("", &phc));
    }

    #[test]
    fn salts_differ() {
        assert_ne!(hash_password("same password").unwrap(), hash_password("same password").unwrap());
    }

    #[test]
    fn garbage_phc_does_not_verify() {
        for phc in
            ["", "not a hash", "$argon2id$v=19$m=19456,t=2,p=1$garbage", "$2b$12$abcdefghijklmnopqrstuv"]
        {
            assert!(!verify_password("password", phc), "{phc}");
        }
    }

    #[test]
    fn dummy_verification_runs() {
        warm_up();
        assert!(DUMMY_HASH.is_some());
        verify_dummy("anything");
    }
}
