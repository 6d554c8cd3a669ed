//! `revoked_sessions`: sessions (refresh-token families) whose access tokens are refused
//! before their `exp`; see [`crate::auth::revocation`].

use sea_orm::entity::prelude::*;

/// A revoked session.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "revoked_sessions")]
pub struct Model {
    /// Append order; other nodes poll for rows past the last one they saw.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The session id (`sid` claim, the refresh-token family id).
    #[sea_orm(column_type = "Text", unique)]
    pub sid: String,
    /// When every access token of the session has expired; the row is pruned after it.
    #[sea_orm(indexed)]
    pub expires_at: DateTimeUtc,
    /// When the session was revoked.
    pub revoked_at: DateTimeUtc,
}

/// `revoked_sessions` has no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
