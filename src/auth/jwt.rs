//! Access tokens: short-lived JWTs signed with the one algorithm configuration pins
//! (`auth.algorithm`). Verification checks the signature, `exp`, `nbf`, `iss` and `aud`
//! (all required) with a few seconds of leeway for clock skew, and refuses any other
//! algorithm, `alg: none` included. A token whose header names critical extensions (`crit`,
//! RFC 7515 §4.1.11) is refused: castwork understands none. Every token names its session
//! (`sid`, the refresh-token family of the login), so revoking a session refuses its tokens.

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
    /// The session (refresh-token family) the token belongs to. Tokens without one are refused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sid: String,
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

    /// The access-token lifetime, in seconds.
    pub fn access_ttl_secs(&self) -> u64 {
        self.access_ttl_secs
    }

    /// Issues an access token of session `session_id`; returns it with its lifetime in seconds.
    pub fn issue(
        &self,
        user_id: &str,
        username: &str,
        role: Role,
        session_id: &str,
    ) -> Result<(String, u64), AuthError> {
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
            sid: session_id.to_owned(),
        };
        Ok((self.sign(&claims)?, self.access_ttl_secs))
    }

    /// Verifies an access token and returns its claims.
    ///
    /// An expired token gives [`AuthError::Expired`]; a bad signature, another algorithm,
    /// a wrong issuer or audience, a future `nbf`, a missing claim or a malformed token give
    /// [`AuthError::InvalidToken`], and so do a `crit` header member and a missing `sid`.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let data = decode::<Claims>(token, &self.decoding, &self.validation).map_err(verify_error)?;
        if data.header.crit.is_some() {
            return Err(AuthError::InvalidToken("critical header extensions are not supported".to_owned()));
        }
        if data.claims.sid.is_empty() {
            return Err(AuthError::InvalidToken("missing claim sid".to_owned()));
        }
        Ok(data.claims)
    }

    /// Signs arbitrary claims with the pinned algorithm.
    fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        encode(&Header::new(self.algorithm), claims, &self.encoding)
            .map_err(|e| AuthError::KeyConfig(format!("cannot sign a token: {e}")))
    }

    /// Signs and verifies a probe token, so a private key that does not match the public key
    /// is found at start rather than at the first login.
    fn self_test(&self) -> Result<(), AuthError> {
        let (token, _) = self.issue("self-test", "self-test", Role::Viewer, "self-test")?;
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
mod tests;
