//! `refresh_tokens`: one row per issued refresh token. Only the SHA-256 of the token is
//! stored; tokens rotated from one login share a `family_id`.

use sea_orm::entity::prelude::*;

/// An issued refresh token.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "refresh_tokens")]
pub struct Model {
    /// UUID v4, as text.
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub id: String,
    /// The owner; rows go when the user does.
    #[sea_orm(column_type = "Text", indexed)]
    pub user_id: String,
    /// Shared by every token rotated from the same login.
    #[sea_orm(column_type = "Text", indexed)]
    pub family_id: String,
    /// Lower-case hex SHA-256 of the token.
    #[sea_orm(column_type = "Text", unique)]
    pub token_hash: String,
    /// After this the token is refused.
    pub expires_at: DateTimeUtc,
    /// Set when the token was exchanged; a second exchange is reuse.
    pub used_at: Option<DateTimeUtc>,
    /// Set when the family was revoked (logout, reuse, password change).
    pub revoked_at: Option<DateTimeUtc>,
    /// When the token was issued.
    pub created_at: DateTimeUtc,
}

/// Relations of `refresh_tokens`.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The owner.
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::UserId",
        to = "super::user::Column::Id",
        on_delete = "Cascade"
    )]
    User,
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
