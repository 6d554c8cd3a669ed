//! Authentication and authorisation.
//!
//! - [`password`]: argon2id hashing, plus a dummy verification for unknown users.
//! - [`hashing`]: runs that work on the blocking pool under one semaphore per node.
//! - [`policy`]: what usernames and passwords must be (length, characters, zxcvbn strength).
//! - [`jwt`]: short-lived access tokens ([`Claims`]), signed with the one algorithm the
//!   configuration pins (HS256, EdDSA or RS256).
//! - [`role`]: `viewer < editor < admin`.
//! - [`limiter`]: slows down failed logins per username and per client address, charging each
//!   attempt before its password is checked.
//! - [`report`]: this node's login and hashing counters, for the admin endpoint.
//! - [`service`]: [`AuthService`]: login, refresh-token rotation with reuse detection,
//!   logout, user management.
//! - [`verified`]: remembers tokens that verified, so a repeated token skips the signature check.
//! - [`revocation`]: the deny-list of revoked sessions, checked on every request, persisted and
//!   shared across nodes.
//! - [`sync`]: the RevocationSync actor that keeps the deny-list in step with other nodes, and
//!   its [`sync::child_spec`].
//!
//! Refresh tokens are opaque random values; only their SHA-256 is stored. Each login starts a
//! token family (a session, the access tokens' `sid`); using a refresh token a second time
//! revokes the whole family, and a revoked session's access tokens are refused at once.

pub mod hashing;
pub mod jwt;
pub mod limiter;
pub mod password;
pub mod policy;
pub mod report;
pub mod revocation;
pub mod role;
pub mod service;
pub mod sync;
pub mod verified;

pub use jwt::{Claims, JwtKeys};
pub use limiter::LoginLimiter;
pub use policy::PolicyError;
pub use report::AuthReport;
pub use role::Role;
pub use service::{AuthService, Principal, TokenPair};

/// Why authentication or a user operation failed. `crate::http::error` maps each variant to a
/// status and a stable code.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    MissingToken,
    /// Bad signature, algorithm, issuer, audience or `nbf`, or not a JWT at all.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The access token's session was revoked (logout, refresh-token reuse, password change,
    /// admin), or issued before the deny-list overflowed.
    #[error("the token was revoked; refresh it or log in again")]
    SessionRevoked,
    /// No user has this name.
    #[error("no user named '{0}'")]
    UnknownUser(String),
    /// The access token is past its `exp`.
    #[error("token expired")]
    Expired,
    /// Unknown user or wrong password; the two are deliberately indistinguishable.
    #[error("invalid username or password")]
    BadCredentials,
    /// Too many failed logins for this username or client address.
    #[error("too many failed login attempts; retry later")]
    RateLimited {
        /// How long until the next attempt is accepted.
        retry_after: std::time::Duration,
    },
    /// The refresh token is unknown, expired or revoked.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// A refresh token was used twice; its whole family has been revoked.
    #[error("refresh token reuse detected; the session was revoked")]
    RefreshReuse,
    /// The caller's role is below the one required.
    #[error("this action needs the {required} role")]
    Forbidden {
        /// The lowest role allowed.
        required: Role,
    },
    /// A user with this name already exists.
    #[error("user '{0}' already exists")]
    UserExists(String),
    /// A bad username, password or role; the message says what is expected.
    #[error("{0}")]
    InvalidInput(String),
    /// A new username or password breaks a rule; the message names it.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Every password-hashing permit stayed taken past `auth.hashing_wait_ms`.
    #[error("the server is busy checking passwords; retry later")]
    Busy {
        /// How long to wait before trying again.
        retry_after: std::time::Duration,
    },
    /// The signing keys could not be loaded or used.
    #[error("key configuration: {0}")]
    KeyConfig(String),
    /// The database failed.
    #[error("database error")]
    Database(#[from] sea_orm::DbErr),
    /// Hashing a password failed (or its worker thread was lost).
    #[error("password hashing failed")]
    Hashing,
}
