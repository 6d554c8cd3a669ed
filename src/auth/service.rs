//! [`AuthService`]: logins, refresh-token rotation, logout and user management over the
//! shared database.
//!
//! Refresh tokens are 32 random bytes, base64url without padding; only the hex SHA-256 is
//! stored. A login starts a token family; each refresh marks the presented token used and
//! issues its successor in the same family, in one transaction. Presenting a used token again
//! means it leaked (or a client raced itself): the whole family is revoked and the caller gets
//! [`AuthError::RefreshReuse`]. Refresh lifetimes slide: each successor lives
//! `auth.refresh_ttl_secs` from its issue.
//!
//! The family id is the session id: every access token carries it as `sid`. Revoking a family
//! (logout, reuse, password change, an admin's revoke) also puts it on the
//! [`Revocations`] deny-list, so the session's access tokens are refused at once.
//! A caller's logout revokes only its own sessions; see [`AuthService::logout`].

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use rand::RngCore;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use sha2::{Digest, Sha256};
use tracing::field::Empty;

use super::hashing::{Hashing, Verification};
use super::jwt::{LEEWAY_SECS, now_secs};
use super::policy::{self, USERNAME_MAX};
use super::revocation::{Reason, Revocations};
use super::verified::{self, VerifiedTokens};
use super::{AuthError, AuthReport, Claims, JwtKeys, LoginLimiter, Role};
use crate::config::AuthSettings;
use crate::db::entities::{refresh_token, user};
use crate::metrics;

/// Name of the user [`AuthService::ensure_bootstrap_admin`] creates.
pub const BOOTSTRAP_ADMIN: &str = "admin";
const REFRESH_TOKEN_BYTES: usize = 32;
/// Ours are 43 characters; anything much longer is refused without a lookup.
const REFRESH_TOKEN_MAX_LEN: usize = 128;

/// What a successful login or refresh returns.
#[derive(Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    /// The JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Always `"Bearer"`.
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Lifetime of the access token, in seconds.
    #[schema(example = 900)]
    pub expires_in: u64,
    /// Opaque token for `POST /auth/refresh`; usable once.
    pub refresh_token: String,
}

impl fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenPair")
            .field("access_token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &"[redacted]")
            .finish()
    }
}

/// The authenticated caller, from a verified access token.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Principal {
    /// The user id (`sub`).
    pub user_id: String,
    /// The username.
    pub username: String,
    /// The role the token carries.
    pub role: Role,
    /// The session (`sid`) the token belongs to; not part of the API's answers.
    #[serde(skip)]
    pub session_id: Arc<str>,
}

impl Principal {
    /// Refuses with [`AuthError::Forbidden`] unless the caller's role is at least `required`.
    pub fn require(&self, required: Role) -> Result<(), AuthError> {
        self.role.require(required)
    }
}

impl From<Claims> for Principal {
    fn from(claims: Claims) -> Self {
        Self { user_id: claims.sub, username: claims.name, role: claims.role, session_id: claims.sid.into() }
    }
}

/// Authentication over the shared database. Cheap to clone.
#[derive(Clone)]
pub struct AuthService {
    db: DatabaseConnection,
    keys: Arc<JwtKeys>,
    verified: Arc<VerifiedTokens>,
    revocations: Arc<Revocations>,
    limiter: Arc<LoginLimiter>,
    hashing: Arc<Hashing>,
    password_min_score: u8,
    refresh_ttl: TimeDelta,
}

impl fmt::Debug for AuthService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthService")
            .field("keys", &self.keys)
            .field("refresh_ttl", &self.refresh_ttl)
            .finish()
    }
}

impl AuthService {
    /// A service using `db` (migrated), the signing keys, and the limits in `settings`.
    pub fn new(db: DatabaseConnection, keys: Arc<JwtKeys>, settings: &AuthSettings) -> Self {
        let refresh_ttl = i64::try_from(settings.refresh_ttl_secs)
            .ok()
            .and_then(TimeDelta::try_seconds)
            .unwrap_or(TimeDelta::MAX);
        let limiter = Arc::new(LoginLimiter::new(settings.login_burst, settings.login_per_minute));
        let hashing =
            Hashing::new(settings.hashing_concurrency, Duration::from_millis(settings.hashing_wait_ms));
        let revocations =
            Arc::new(Revocations::new(db.clone(), settings.access_ttl_secs, settings.revocation_max_entries));
        Self {
            db,
            keys,
            verified: Arc::new(VerifiedTokens::new(verified::DEFAULT_CAPACITY)),
            revocations,
            limiter,
            hashing: Arc::new(hashing),
            password_min_score: settings.password_min_score,
            refresh_ttl,
        }
    }

    /// This node's login and password-hashing counters.
    pub fn report(&self) -> AuthReport {
        AuthReport { hashing: self.hashing.report(), limiter: self.limiter.report() }
    }

    /// The signing keys.
    pub fn keys(&self) -> &JwtKeys {
        &self.keys
    }

    /// The deny-list of revoked sessions.
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// Verifies an access token (without the `Bearer ` prefix) and returns its caller. A token
    /// that verified before is answered from [`VerifiedTokens`] until it expires; either way a
    /// token of a revoked session is refused (one in-memory lookup, no I/O).
    pub fn authenticate(&self, bearer_token: &str) -> Result<Principal, AuthError> {
        let token = bearer_token.trim();
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        let now = now_secs();
        let revoked = self.revocations.list();
        if let Some(known) = self.verified.get(token, now, revoked) {
            return known;
        }
        let claims = self.keys.verify(token)?;
        revoked.check(&claims.sid, claims.iat, now).map_err(verified::refused)?;
        let (issued_at, refuse_after) = (claims.iat, claims.exp.saturating_add(LEEWAY_SECS));
        let principal = Principal::from(claims);
        self.verified.insert(token, principal.clone(), issued_at, refuse_after);
        Ok(principal)
    }

    /// Checks a username and password and starts a session.
    ///
    /// The attempt is charged to the [`LoginLimiter`] before the password is checked, and
    /// given back when it succeeds (or was never checked: [`AuthError::Busy`]). Unknown users
    /// and wrong passwords get the same [`AuthError::BadCredentials`] after the same amount of
    /// hashing work.
    #[tracing::instrument(skip_all, fields(username = ?loggable(username), %client, user_id = Empty))]
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<TokenPair, AuthError> {
        let reservation = match self.limiter.reserve(username, client) {
            Ok(reservation) => reservation,
            Err(refused) => {
                metrics::login_limited(refused.bucket.as_str());
                tracing::warn!(
                    bucket = refused.bucket.as_str(),
                    retry_after_secs = refused.retry_after.as_secs(),
                    "login refused: too many failures"
                );
                return Err(AuthError::RateLimited { retry_after: refused.retry_after });
            }
        };
        // From here on an error keeps the attempt charged, except when no password was checked.
        let found = if username.len() <= USERNAME_MAX { self.find_user(username).await? } else { None };
        let phc = found.as_ref().map(|user| user.password_hash.clone());
        let verification = match self.hashing.verify(password.to_owned(), phc).await {
            Ok(verification) => verification,
            Err(err @ AuthError::Busy { .. }) => {
                reservation.refund();
                return Err(err);
            }
            Err(err) => return Err(err),
        };
        let Some(user) = found.filter(|_| verification == Verification::Match) else {
            drop(reservation);
            tracing::info!("login failed");
            return Err(AuthError::BadCredentials);
        };
        reservation.refund();
        tracing::Span::current().record("user_id", user.id.as_str());
        let role = stored_role(&user)?;
        let pair = self.issue_pair(&self.db, &user, role, new_id()).await?;
        tracing::info!(%role, "login succeeded");
        Ok(pair)
    }

    /// Exchanges a refresh token for a new pair, rotating it. See the module docs for the rules.
    #[tracing::instrument(skip_all, fields(user_id = Empty, family_id = Empty))]
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, AuthError> {
        let Some(token) = self.find_refresh_token(refresh_token).await? else {
            tracing::info!("refresh with an unknown token");
            return Err(AuthError::InvalidRefreshToken);
        };
        let span = tracing::Span::current();
        span.record("user_id", token.user_id.as_str());
        span.record("family_id", token.family_id.as_str());

        if token.revoked_at.is_some() {
            tracing::info!("refresh with a revoked token");
            return Err(AuthError::InvalidRefreshToken);
        }
        if token.used_at.is_some() {
            let revoked = self.revoke_families(vec![token.family_id.clone()], Reason::Reuse).await?;
            tracing::warn!(revoked, "refresh token reuse detected; family revoked");
            return Err(AuthError::RefreshReuse);
        }
        let now = Utc::now();
        if token.expires_at <= now {
            tracing::info!("refresh with an expired token");
            return Err(AuthError::InvalidRefreshToken);
        }
        let Some(user) = user::Entity::find_by_id(token.user_id.clone()).one(&self.db).await? else {
            self.revoke_families(vec![token.family_id.clone()], Reason::UserGone).await?;
            tracing::info!("refresh for a user that no longer exists");
            return Err(AuthError::InvalidRefreshToken);
        };
        let role = stored_role(&user)?;

        // IMMEDIATE takes SQLite's write lock up front, so concurrent refreshes queue instead
        // of failing; PostgreSQL ignores it and re-checks the WHERE after the row lock.
        let txn = self
            .db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await?;
        let marked = refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::UsedAt, Expr::value(now))
            .filter(refresh_token::Column::Id.eq(token.id.as_str()))
            .filter(refresh_token::Column::UsedAt.is_null())
            .filter(refresh_token::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?
            .rows_affected;
        if marked == 0 {
            txn.rollback().await?;
            let revoked = self.revoke_families(vec![token.family_id.clone()], Reason::Reuse).await?;
            tracing::warn!(revoked, "concurrent refresh token reuse detected; family revoked");
            return Err(AuthError::RefreshReuse);
        }
        let pair = self.issue_pair(&txn, &user, role, token.family_id.clone()).await?;
        txn.commit().await?;
        tracing::info!(%role, "refresh token rotated");
        Ok(pair)
    }

    /// Ends the caller's current session (the `sid` of its access token) and the session the
    /// refresh token belongs to, revoking both families and refusing their access tokens.
    ///
    /// A caller revokes only its own sessions: a refresh token of another user is treated like
    /// an unknown one (nothing of theirs is revoked, and the answer is the same, so it tells
    /// the caller nothing about the token). An unknown token is not an error, so logout is
    /// idempotent.
    #[tracing::instrument(skip_all, fields(user_id = %caller.user_id, family_id = Empty))]
    pub async fn logout(&self, caller: &Principal, refresh_token: &str) -> Result<(), AuthError> {
        let mut families = vec![caller.session_id.to_string()];
        match self.find_refresh_token(refresh_token).await? {
            None => tracing::debug!("logout with an unknown refresh token"),
            Some(token) if token.user_id != caller.user_id => {
                tracing::warn!("logout with another user's refresh token; ignored");
            }
            Some(token) => {
                tracing::Span::current().record("family_id", token.family_id.as_str());
                if token.family_id != *caller.session_id {
                    families.push(token.family_id);
                }
            }
        }
        let revoked = self.revoke_families(families, Reason::Logout).await?;
        tracing::info!(revoked, "logged out");
        Ok(())
    }

    /// Applies the password rules on the blocking pool (the strength estimate takes milliseconds).
    async fn check_password(&self, password: &str, username: &str) -> Result<(), AuthError> {
        let (password, username, min_score) =
            (password.to_owned(), username.to_owned(), self.password_min_score);
        tokio::task::spawn_blocking(move || policy::check_password(&password, &username, min_score))
            .await
            .map_err(|_| AuthError::Hashing)??;
        Ok(())
    }

    async fn find_user(&self, username: &str) -> Result<Option<user::Model>, AuthError> {
        Ok(user::Entity::find().filter(user::Column::Username.eq(username)).one(&self.db).await?)
    }

    async fn find_refresh_token(&self, token: &str) -> Result<Option<refresh_token::Model>, AuthError> {
        if token.is_empty() || token.len() > REFRESH_TOKEN_MAX_LEN {
            return Ok(None);
        }
        Ok(refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(hash_token(token)))
            .one(&self.db)
            .await?)
    }

    /// Revokes `families` (refresh tokens and access tokens) in one transaction, then tells
    /// the other nodes. Returns how many refresh tokens were revoked.
    async fn revoke_families(&self, families: Vec<String>, reason: Reason) -> Result<u64, AuthError> {
        let txn = self.db.begin().await?;
        let revoked = revoke_refresh_tokens(&txn, &families).await?;
        let until = self.revocations.record(&txn, &families, reason).await?;
        txn.commit().await?;
        self.revocations.announce(&families, until).await;
        Ok(revoked)
    }

    /// Issues an access token and stores a fresh refresh token in `family_id`.
    async fn issue_pair<C: ConnectionTrait>(
        &self,
        conn: &C,
        user: &user::Model,
        role: Role,
        family_id: String,
    ) -> Result<TokenPair, AuthError> {
        let (access_token, expires_in) = self.keys.issue(&user.id, &user.username, role, &family_id)?;
        let refresh_token = new_refresh_token();
        let now = Utc::now();
        refresh_token::ActiveModel {
            id: Set(new_id()),
            user_id: Set(user.id.clone()),
            family_id: Set(family_id),
            token_hash: Set(hash_token(&refresh_token)),
            expires_at: Set(now.checked_add_signed(self.refresh_ttl).unwrap_or(DateTime::<Utc>::MAX_UTC)),
            used_at: Set(None),
            revoked_at: Set(None),
            created_at: Set(now),
        }
        .insert(conn)
        .await?;
        Ok(TokenPair { access_token, token_type: "Bearer", expires_in, refresh_token })
    }
}

/// Revokes every live refresh token of `families`; returns how many.
async fn revoke_refresh_tokens<C: ConnectionTrait>(conn: &C, families: &[String]) -> Result<u64, DbErr> {
    Ok(refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(refresh_token::Column::FamilyId.is_in(families.iter().map(String::as_str)))
        .filter(refresh_token::Column::RevokedAt.is_null())
        .exec(conn)
        .await?
        .rows_affected)
}

fn stored_role(user: &user::Model) -> Result<Role, AuthError> {
    user.role.parse().map_err(|_| {
        tracing::error!(user_id = %user.id, "stored role is not a known role");
        AuthError::Database(DbErr::Custom(format!("user {} has an unknown role", user.id)))
    })
}

/// A username as it may appear in logs and messages: at most 64 characters.
fn loggable(username: &str) -> &str {
    username.char_indices().nth(USERNAME_MAX).map_or(username, |(end, _)| &username[..end])
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn new_refresh_token() -> String {
    let mut bytes = [0u8; REFRESH_TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Lower-case hex SHA-256, as stored in `refresh_tokens.token_hash`.
fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().fold(String::with_capacity(64), |mut hex, byte| {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
        hex
    })
}

const HEX: &[u8; 16] = b"0123456789abcdef";

mod users;

#[cfg(test)]
mod tests;
