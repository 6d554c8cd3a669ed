//! `items`: the Explore catalogue, one row per item. The full-text index is not an
//! entity column: on SQLite it is the `items_fts` table, on PostgreSQL the generated
//! `search` column (see the `create_items` migration).

use sea_orm::entity::prelude::*;

/// A catalogue item.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "items")]
pub struct Model {
    /// Stable id, e.g. an arXiv id (`2506.20941`, `cond-mat/9909265`).
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub id: String,
    #[sea_orm(column_type = "Text")]
    pub title: String,
    #[sea_orm(column_type = "Text")]
    pub body: String,
    /// Full name of the primary category.
    #[sea_orm(column_type = "Text")]
    pub category: String,
    /// Primary category code, e.g. `cs.CV`.
    #[sea_orm(column_type = "Text")]
    pub category_code: String,
    /// Top-level group, e.g. `Computer Science`.
    #[sea_orm(column_type = "Text")]
    pub group_name: String,
    /// JSON array of tag codes, primary first; mirrored row by row in `item_tags`.
    #[sea_orm(column_type = "JsonBinary")]
    pub tags: Json,
    #[sea_orm(column_type = "Text", nullable)]
    pub source_url: Option<String>,
    pub published_at: DateTimeUtc,
    /// Detail views counted so far.
    pub views: i64,
    /// log2 of the time-decayed view score; -1e9 when never viewed.
    pub trend: f64,
    /// Incremented by every content change; the `ETag`.
    pub version: i64,
    /// [`crate::explore::validate::content_hash`] of the content fields.
    #[sea_orm(column_type = "Text")]
    pub content_hash: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

/// Relations of `items`.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// One row per tag.
    #[sea_orm(has_many = "super::item_tag::Entity")]
    ItemTags,
}

impl Related<super::item_tag::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ItemTags.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
