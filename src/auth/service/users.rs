//! User management over the same service: creating users, replacing passwords, the bootstrap
//! admin, operator-minted tokens, and an admin's revoke of a user's sessions.

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel,
    QueryFilter, QuerySelect, SqlErr, TransactionTrait,
};
use tracing::field::Empty;

use super::{AuthService, BOOTSTRAP_ADMIN, TokenPair, loggable, new_id, stored_role};
use crate::auth::jwt::LEEWAY_SECS;
use crate::auth::policy;
use crate::auth::revocation::Reason;
use crate::auth::{AuthError, Role};
use crate::db::entities::{refresh_token, user};

impl AuthService {
    /// Revokes every session of `username` (an admin's action): their refresh tokens stop
    /// working and their access tokens are refused at once. Returns how many sessions had
    /// access tokens that could still be live (those went on the deny-list).
    #[tracing::instrument(skip_all, fields(username = ?loggable(username), user_id = Empty))]
    pub async fn revoke_user_sessions(&self, username: &str) -> Result<usize, AuthError> {
        let user = self
            .find_user(username)
            .await?
            .ok_or_else(|| AuthError::UnknownUser(loggable(username).to_owned()))?;
        tracing::Span::current().record("user_id", user.id.as_str());
        let txn = self.db.begin().await?;
        let (families, until) = self.revoke_user_in(&txn, &user.id, Reason::Admin).await?;
        txn.commit().await?;
        self.revocations.announce(&families, until).await;
        tracing::info!(sessions = families.len(), "sessions revoked by an admin");
        Ok(families.len())
    }

    /// Creates a user. Usernames are 3–64 characters of `A-Z a-z 0-9 _ . -` and unique ignoring
    /// case; passwords follow [`policy::check_password`].
    #[tracing::instrument(skip_all, fields(username = ?loggable(username), %role, user_id = Empty))]
    pub async fn create_user(
        &self,
        username: &str,
        password: &str,
        role: Role,
    ) -> Result<user::Model, AuthError> {
        policy::check_username(username)?;
        self.check_password(password, username).await?;
        let lower = username.to_ascii_lowercase();
        let existing = user::Entity::find()
            .filter(ExprTrait::eq(Func::lower(Expr::col(user::Column::Username)), lower))
            .one(&self.db)
            .await?;
        if existing.is_some() {
            return Err(AuthError::UserExists(username.to_owned()));
        }
        let password_hash = self.hashing.hash(password.to_owned()).await?;
        let now = Utc::now();
        let created = user::ActiveModel {
            id: Set(new_id()),
            username: Set(username.to_owned()),
            password_hash: Set(password_hash),
            role: Set(role.as_str().to_owned()),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&self.db)
        .await
        .map_err(|e| match e.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => AuthError::UserExists(username.to_owned()),
            _ => AuthError::Database(e),
        })?;
        tracing::Span::current().record("user_id", created.id.as_str());
        tracing::info!("user created");
        Ok(created)
    }

    /// Replaces a user's password and revokes all of their sessions.
    #[tracing::instrument(skip_all, fields(username = ?loggable(username), user_id = Empty))]
    pub async fn set_password(&self, username: &str, password: &str) -> Result<(), AuthError> {
        self.check_password(password, username).await?;
        let user = self.find_user(username).await?.ok_or_else(|| no_such_user(username))?;
        tracing::Span::current().record("user_id", user.id.as_str());
        let password_hash = self.hashing.hash(password.to_owned()).await?;
        let user_id = user.id.clone();
        let now = Utc::now();
        let txn = self.db.begin().await?;
        let mut active = user.into_active_model();
        active.password_hash = Set(password_hash);
        active.updated_at = Set(now);
        active.update(&txn).await?;
        let (families, until) = self.revoke_user_in(&txn, &user_id, Reason::PasswordChange).await?;
        txn.commit().await?;
        self.revocations.announce(&families, until).await;
        tracing::info!(sessions = families.len(), "password changed; sessions revoked");
        Ok(())
    }

    /// Creates the `admin` user with the admin role unless a user of that name exists.
    /// Returns whether it was created.
    pub async fn ensure_bootstrap_admin(&self, password: &str) -> Result<bool, AuthError> {
        if self.find_user(BOOTSTRAP_ADMIN).await?.is_some() {
            return Ok(false);
        }
        match self.create_user(BOOTSTRAP_ADMIN, password, Role::Admin).await {
            Ok(_) => {
                tracing::info!(username = BOOTSTRAP_ADMIN, "bootstrap admin created");
                Ok(true)
            }
            Err(AuthError::UserExists(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Issues a token pair for `username` without a password, starting a new family.
    /// For operators (`castwork token`), never for the HTTP API.
    #[tracing::instrument(skip_all, fields(username = ?loggable(username), user_id = Empty))]
    pub async fn mint(&self, username: &str) -> Result<TokenPair, AuthError> {
        let user = self.find_user(username).await?.ok_or_else(|| no_such_user(username))?;
        tracing::Span::current().record("user_id", user.id.as_str());
        let role = stored_role(&user)?;
        let pair = self.issue_pair(&self.db, &user, role, new_id()).await?;
        tracing::info!(%role, "token pair minted without a password");
        Ok(pair)
    }

    /// Within `conn`, revokes every refresh token of `user_id` and puts on the deny-list every
    /// session of theirs that may have a live access token (one issued within the access-token
    /// lifetime). Returns those sessions and until when they are held; the caller announces
    /// them once its transaction commits.
    async fn revoke_user_in<C: ConnectionTrait>(
        &self,
        conn: &C,
        user_id: &str,
        reason: Reason,
    ) -> Result<(Vec<String>, u64), AuthError> {
        refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::RevokedAt, Expr::value(Utc::now()))
            .filter(refresh_token::Column::UserId.eq(user_id))
            .filter(refresh_token::Column::RevokedAt.is_null())
            .exec(conn)
            .await?;
        let live_for = self.keys.access_ttl_secs().saturating_add(LEEWAY_SECS);
        let since = i64::try_from(live_for)
            .ok()
            .and_then(TimeDelta::try_seconds)
            .and_then(|window| Utc::now().checked_sub_signed(window))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let families: Vec<String> = refresh_token::Entity::find()
            .select_only()
            .column(refresh_token::Column::FamilyId)
            .distinct()
            .filter(refresh_token::Column::UserId.eq(user_id))
            .filter(refresh_token::Column::CreatedAt.gte(since))
            .into_tuple()
            .all(conn)
            .await?;
        let until = self.revocations.record(conn, &families, reason).await?;
        Ok((families, until))
    }
}

fn no_such_user(username: &str) -> AuthError {
    AuthError::InvalidInput(format!("no user named '{}'", loggable(username)))
}
