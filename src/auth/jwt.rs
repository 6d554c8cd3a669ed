//! Access tokens: short-lived JWTs signed with the one algorithm configuration pins
//! (`auth.algorithm`). Verification checks the signature, `exp`, `nbf`, `iss` and `aud`
//! (all required) with a few seconds of leeway for clock skew, and refuses any other
//! algorithm, `alg: none` included.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::{Error as JwtError, ErrorKind};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use rand::RngCore;

use super::{AuthError, Role};
use crate::config::{AuthSettings, JwtAlgorithm};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub(crate) const LEEWAY_SECS: u64 = 5;
/// Length of the HS256 secret generated when none is configured.
const GENERATED_SECRET_LEN: usize = 64;
/// Shortest HS256 secret accepted (configuration validation says the same).
const MIN_SECRET_LEN: usize = 32;

/// The claims of a castwork access token.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The username, for display and logs.
    pub name: String,
    /// The user's role when the token was issued.
    pub role: Role,
    /// Issuer (`auth.issuer`).
    pub iss: String,
    /// Audience (`auth.audience`).
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    pub nbf: u64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Unique token id.
    pub jti: String,
}

/// Signing and verification keys, with the algorithm, issuer, audience and lifetime pinned
/// from configuration.
pub struct JwtKeys {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    access_ttl_secs: u64,
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeys")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("access_ttl_secs", &self.access_ttl_secs)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    /// Builds the keys `auth` describes.
    ///
    /// HS256 uses `auth.jwt_secret`; when it is empty (configuration validation already refused
    /// that in production) a random 64-byte secret is generated and the second value is `true`,
    /// so the caller can warn loudly that tokens will not survive a restart. EdDSA and RS256 read
    /// PKCS#8 (or, for RSA, PKCS#1) PEM files from `auth.private_key_path` and
    /// `auth.public_key_path`. The pair is checked by signing and verifying a probe token.
    pub fn from_settings(settings: &AuthSettings) -> Result<(JwtKeys, bool), AuthError> {
        let (algorithm, encoding, decoding, generated) = match settings.algorithm {
            JwtAlgorithm::HS256 => {
                let configured = settings.jwt_secret.expose().as_bytes();
                let (secret, generated) = if configured.is_empty() {
                    let mut secret = vec![0u8; GENERATED_SECRET_LEN];
                    rand::rng().fill_bytes(&mut secret);
                    (secret, true)
                } else if configured.len() < MIN_SECRET_LEN {
                    return Err(AuthError::KeyConfig(format!(
                        "auth.jwt_secret must be at least {MIN_SECRET_LEN} bytes"
                    )));
                } else {
                    (configured.to_vec(), false)
                };
                (
                    Algorithm::HS256,
                    EncodingKey::from_secret(&secret),
                    DecodingKey::from_secret(&secret),
                    generated,
                )
            }
            JwtAlgorithm::EdDSA => {
                let private = read_pem("auth.private_key_path", &settings.private_key_path)?;
                let public = read_pem("auth.public_key_path", &settings.public_key_path)?;
                let encoding = EncodingKey::from_ed_pem(&private)
                    .map_err(|e| bad_key(&settings.private_key_path, "an Ed25519 private key", &e))?;
                let decoding = DecodingKey::from_ed_pem(&public)
                    .map_err(|e| bad_key(&settings.public_key_path, "an Ed25519 public key", &e))?;
                (Algorithm::EdDSA, encoding, decoding, false)
            }
            JwtAlgorithm::RS256 => {
                let private = read_pem("auth.private_key_path", &settings.private_key_path)?;
                let public = read_pem("auth.public_key_path", &settings.public_key_path)?;
                let encoding = EncodingKey::from_rsa_pem(&private)
                    .map_err(|e| bad_key(&settings.private_key_path, "an RSA private key", &e))?;
                let decoding = DecodingKey::from_rsa_pem(&public)
                    .map_err(|e| bad_key(&settings.public_key_path, "an RSA public key", &e))?;
                (Algorithm::RS256, encoding, decoding, false)
            }
        };

        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);

        let keys = JwtKeys {
            algorithm,
            encoding,
            decoding,
            validation,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            access_ttl_secs: settings.access_ttl_secs,
        };
        keys.self_test()?;
        Ok((keys, generated))
    }

    /// The pinned signing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Issues an access token; returns it with its lifetime in seconds.
    pub fn issue(&self, user_id: &str, username: &str, role: Role) -> Result<(String, u64), AuthError> {
        let now = now_secs();
        let claims = Claims {
            sub: user_id.to_owned(),
            name: username.to_owned(),
            role,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now.saturating_add(self.access_ttl_secs),
            nbf: now,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        Ok((self.sign(&claims)?, self.access_ttl_secs))
    }

    /// Verifies an access token and returns its claims.
    ///
    /// An expired token gives [`AuthError::Expired`]; a bad signature, another algorithm,
    /// a wrong issuer or audience, a future `nbf`, a missing claim or a malformed token give
    /// [`AuthError::InvalidToken`].
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(verify_error)
    }

    /// Signs arbitrary claims with the pinned algorithm.
    fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        encode(&Header::new(self.algorithm), claims, &self.encoding)
            .map_err(|e| AuthError::KeyConfig(format!("cannot sign a token: {e}")))
    }

    /// Signs and verifies a probe token, so a private key that does not match the public key
    /// is found at start rather than at the first login.
    fn self_test(&self) -> Result<(), AuthError> {
        let (token, _) = self.issue("self-test", "self-test", Role::Viewer)?;
        self.verify(&token).map(|_| ()).map_err(|e| {
            AuthError::KeyConfig(format!("the private and public keys do not form a pair ({e})"))
        })
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn read_pem(key: &str, path: &str) -> Result<Vec<u8>, AuthError> {
    if path.is_empty() {
        return Err(AuthError::KeyConfig(format!("{key} is required for this algorithm")));
    }
    std::fs::read(path).map_err(|e| AuthError::KeyConfig(format!("cannot read {key} {path}: {e}")))
}

fn bad_key(path: &str, expected: &str, error: &JwtError) -> AuthError {
    AuthError::KeyConfig(format!("{path} is not {expected} in PEM form: {error}"))
}

/// Maps a jsonwebtoken error to the reason given to the client; no token content is echoed.
fn verify_error(error: JwtError) -> AuthError {
    let reason = match error.kind() {
        ErrorKind::ExpiredSignature => return AuthError::Expired,
        ErrorKind::InvalidSignature => "bad signature".to_owned(),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => "algorithm not accepted".to_owned(),
        ErrorKind::InvalidIssuer => "wrong issuer".to_owned(),
        ErrorKind::InvalidAudience => "wrong audience".to_owned(),
        ErrorKind::ImmatureSignature => "not valid yet".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("missing claim {claim}"),
        ErrorKind::InvalidClaimFormat(claim) => format!("malformed claim {claim}"),
        _ => "malformed token".to_owned(),
    };
    AuthError::InvalidToken(reason)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::config::Secret;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";
    const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIAAfI8gDHyaKURqEJ5HSuWPztf0IbKmPy1hUA3cI/74q
-----END PRIVATE KEY-----
";
    const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEACHDZpXqYxsu3BuU0f2PTK6ZOcnwMbb0Pl53beIFfAw8=
-----END PUBLIC KEY-----
";
    /// The public half of another Ed25519 key pair.
    const OTHER_ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAyYtw+GDjDq+4lNcNX0nGbpfdePh9aoVruYnpeCkgoME=
-----END PUBLIC KEY-----
";

    fn settings(secret: &str) -> AuthSettings {
        AuthSettings {
            jwt_secret: Secret::new(secret),
            algorithm: JwtAlgorithm::HS256,
            private_key_path: String::new(),
            public_key_path: String::new(),
            issuer: "castwork".to_owned(),
            audience: "castwork-api".to_owned(),
            access_ttl_secs: 900,
            refresh_ttl_secs: 3600,
            login_burst: 5,
            login_per_minute: 10,
            hashing_concurrency: 0,
            hashing_wait_ms: 2000,
            password_min_score: 3,
        }
    }

    fn keys() -> JwtKeys {
        JwtKeys::from_settings(&settings(SECRET)).unwrap().0
    }

    fn claims() -> Claims {
        let now = now_secs();
        Claims {
            sub: "user-1".to_owned(),
            name: "alice".to_owned(),
            role: Role::Editor,
            iss: "castwork".to_owned(),
            aud: "castwork-api".to_owned(),
            exp: now + 300,
            nbf: now,
            iat: now,
            jti: "jti-1".to_owned(),
        }
    }

    fn b64_json(value: &impl serde::Serialize) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    }

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("castwork-jwt-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn assert_invalid(result: Result<Claims, AuthError>) -> String {
        match result {
            Err(AuthError::InvalidToken(reason)) => reason,
            other => panic!("expected InvalidToken, got {other:?}"),
        }
    }

    #[test]
    fn issued_token_round_trips() {
        let keys = keys();
        let (token, expires_in) = keys.issue("user-1", "alice", Role::Admin).unwrap();
        assert_eq!(expires_in, 900);
        let claims = keys.verify(&token).unwrap();
        assert_eq!(claims.sub, "user-1");
        assert_eq!(claims.name, "alice");
        assert_eq!(claims.role, Role::Admin);
        assert_eq!(claims.iss, "castwork");
        assert_eq!(claims.aud, "castwork-api");
        assert_eq!(claims.exp - claims.iat, 900);
        assert_eq!(claims.nbf, claims.iat);
        assert!(uuid::Uuid::parse_str(&claims.jti).is_ok());
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
    }

    #[test]
    fn alg_none_is_refused() {
        let header = serde_json::json!({ "alg": "none", "typ": "JWT" });
        let token = format!("{}.{}.", b64_json(&header), b64_json(&claims()));
        assert_invalid(keys().verify(&token));
    }

    #[test]
    fn other_secret_is_refused() {
        let other = JwtKeys::from_settings(&settings("another-secret-that-is-long-enough-000")).unwrap().0;
        let (token, _) = other.issue("user-1", "alice", Role::Admin).unwrap();
        assert_eq!(assert_invalid(keys().verify(&token)), "bad signature");
    }

    #[test]
    fn other_algorithm_with_the_right_secret_is_refused() {
        let token =
            encode(&Header::new(Algorithm::HS384), &claims(), &EncodingKey::from_secret(SECRET.as_bytes()))
                .unwrap();
        assert_eq!(assert_invalid(keys().verify(&token)), "algorithm not accepted");
    }

    #[test]
    fn tampered_payload_is_refused() {
        let keys = keys();
        let (token, _) = keys.issue("user-1", "alice", Role::Viewer).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = keys.verify(&token).unwrap();
        forged.role = Role::Admin;
        let tampered = format!("{}.{}.{}", parts[0], b64_json(&forged), parts[2]);
        assert_eq!(assert_invalid(keys.verify(&tampered)), "bad signature");
    }

    #[test]
    fn expired_token_is_expired() {
        let keys = keys();
        let now = now_secs();
        let token = keys.sign(&Claims { exp: now - 60, nbf: now - 120, iat: now - 120, ..claims() }).unwrap();
        assert!(matches!(keys.verify(&token), Err(AuthError::Expired)));
    }

    #[test]
    fn token_within_leeway_is_accepted() {
        let keys = keys();
        let now = now_secs();
        let token = keys.sign(&Claims { exp: now - 1, nbf: now + 2, ..claims() }).unwrap();
        assert!(keys.verify(&token).is_ok());
    }

    #[test]
    fn future_nbf_is_refused() {
        let keys = keys();
        let token = keys.sign(&Claims { nbf: now_secs() + 120, ..claims() }).unwrap();
        assert_eq!(assert_invalid(keys.verify(&token)), "not valid yet");
    }

    #[test]
    fn wrong_audience_is_refused() {
        let keys = keys();
        let token = keys.sign(&Claims { aud: "someone-else".to_owned(), ..claims() }).unwrap();
        assert_eq!(assert_invalid(keys.verify(&token)), "wrong audience");
    }

    #[test]
    fn wrong_issuer_is_refused() {
        let keys = keys();
        let token = keys.sign(&Claims { iss: "evil".to_owned(), ..claims() }).unwrap();
        assert_eq!(assert_invalid(keys.verify(&token)), "wrong issuer");
    }

    #[test]
    fn missing_claim_is_refused() {
        let mut value = serde_json::to_value(claims()).unwrap();
        value.as_object_mut().unwrap().remove("nbf");
        let token =
            encode(&Header::new(Algorithm::HS256), &value, &EncodingKey::from_secret(SECRET.as_bytes()))
                .unwrap();
        // The claims fail to deserialize before validation runs, so the reason is generic.
        assert_invalid(keys().verify(&token));
    }

    #[test]
    fn garbage_is_refused() {
        for token in ["", "abc", "a.b.c", "a.b", "...."] {
            assert_invalid(keys().verify(token));
        }
    }

    #[test]
    fn empty_secret_generates_a_random_one() {
        let (first, generated) = JwtKeys::from_settings(&settings("")).unwrap();
        assert!(generated);
        let (second, _) = JwtKeys::from_settings(&settings("")).unwrap();
        let (token, _) = first.issue("user-1", "alice", Role::Viewer).unwrap();
        assert!(first.verify(&token).is_ok());
        assert_invalid(second.verify(&token));
        assert!(!JwtKeys::from_settings(&settings(SECRET)).unwrap().1);
    }

    #[test]
    fn short_secret_is_a_key_error() {
        assert!(matches!(JwtKeys::from_settings(&settings("short")), Err(AuthError::KeyConfig(_))));
    }

    fn ed_settings(private: &str, public: &str) -> AuthSettings {
        let dir = temp_dir();
        let (private_path, public_path) = (dir.join("private.pem"), dir.join("public.pem"));
        std::fs::write(&private_path, private).unwrap();
        std::fs::write(&public_path, public).unwrap();
        AuthSettings {
            algorithm: JwtAlgorithm::EdDSA,
            private_key_path: private_path.display().to_string(),
            public_key_path: public_path.display().to_string(),
            ..settings("")
        }
    }

    #[test]
    fn eddsa_round_trips() {
        let (keys, generated) = JwtKeys::from_settings(&ed_settings(ED_PRIVATE, ED_PUBLIC)).unwrap();
        assert!(!generated);
        assert_eq!(keys.algorithm(), Algorithm::EdDSA);
        let (token, _) = keys.issue("user-2", "bob", Role::Viewer).unwrap();
        let claims = keys.verify(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role), ("user-2", Role::Viewer));
        assert_eq!(jsonwebtoken::decode_header(&token).unwrap().alg, Algorithm::EdDSA);
    }

    #[test]
    fn eddsa_refuses_hs256_signed_with_the_public_key() {
        let (keys, _) = JwtKeys::from_settings(&ed_settings(ED_PRIVATE, ED_PUBLIC)).unwrap();
        let token = encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(ED_PUBLIC.as_bytes()),
        )
        .unwrap();
        assert_eq!(assert_invalid(keys.verify(&token)), "algorithm not accepted");
        assert_invalid(keys.verify(&format!(
            "{}.{}.",
            b64_json(&serde_json::json!({ "alg": "none" })),
            b64_json(&claims())
        )));
    }

    #[test]
    fn mismatched_key_pair_is_a_key_error() {
        let err = JwtKeys::from_settings(&ed_settings(ED_PRIVATE, OTHER_ED_PUBLIC)).unwrap_err();
        assert!(matches!(&err, AuthError::KeyConfig(m) if m.contains("pair")), "{err:?}");
    }

    #[test]
    fn unreadable_or_wrong_key_files_name_the_path() {
        let missing = AuthSettings {
            algorithm: JwtAlgorithm::EdDSA,
            private_key_path: "/nonexistent/castwork/private.pem".to_owned(),
            public_key_path: "/nonexistent/castwork/public.pem".to_owned(),
            ..settings("")
        };
        let err = JwtKeys::from_settings(&missing).unwrap_err();
        assert!(matches!(&err, AuthError::KeyConfig(m) if m.contains("/nonexistent/castwork/private.pem")));

        let swapped = ed_settings(ED_PUBLIC, ED_PRIVATE);
        let err = JwtKeys::from_settings(&swapped).unwrap_err();
        assert!(matches!(&err, AuthError::KeyConfig(m) if m.contains(&swapped.private_key_path)), "{err:?}");

        let rsa = AuthSettings { algorithm: JwtAlgorithm::RS256, ..ed_settings(ED_PRIVATE, ED_PUBLIC) };
        assert!(matches!(JwtKeys::from_settings(&rsa), Err(AuthError::KeyConfig(_))));
    }

    #[test]
    fn debug_does_not_print_keys() {
        let text = format!("{:?}", keys());
        assert!(!text.contains(SECRET));
        assert!(text.contains("HS256"));
    }
}
