//! `item_embeddings`: an item's vector by the embedding model, kept until the
//! item's text changes (`text_hash`) or the configured model does. Semantic search
//! loads them into memory at start.

use sea_orm::entity::prelude::*;

/// A stored embedding.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "item_embeddings")]
pub struct Model {
    /// The item.
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub item_id: String,
    /// The public name of the model that computed it.
    #[sea_orm(column_type = "Text")]
    pub model: String,
    /// SHA-256 (hex) of the text the model read.
    #[sea_orm(column_type = "Text")]
    pub text_hash: String,
    /// Dimensions of `vector`.
    pub dim: i32,
    /// `dim` little-endian `f32`s.
    #[sea_orm(column_type = "Blob")]
    pub vector: Vec<u8>,
    pub updated_at: DateTimeUtc,
}

/// Relations of `item_embeddings`.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The item.
    #[sea_orm(
        belongs_to = "super::item::Entity",
        from = "Column::ItemId",
        to = "super::item::Column::Id",
        on_delete = "Cascade"
    )]
    Item,
}

impl Related<super::item::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Item.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
