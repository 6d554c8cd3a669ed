//! `users`: accounts that can log in.

use sea_orm::entity::prelude::*;

/// A user account. `password_hash` is an argon2id PHC string.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    /// UUID v4, as text.
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub id: String,
    /// Unique login name (3–64 of `A-Z a-z 0-9 _ . -`).
    #[sea_orm(column_type = "Text", unique)]
    pub username: String,
    /// Argon2id PHC string; never leaves the server.
    #[sea_orm(column_type = "Text")]
    pub password_hash: String,
    /// `viewer`, `editor` or `admin`.
    #[sea_orm(column_type = "Text")]
    pub role: String,
    /// When the account was created.
    pub created_at: DateTimeUtc,
    /// When the account last changed (password, role).
    pub updated_at: DateTimeUtc,
}

/// Relations of `users`.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The user's refresh tokens.
    #[sea_orm(has_many = "super::refresh_token::Entity")]
    RefreshTokens,
}

impl Related<super::refresh_token::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::RefreshTokens.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
