//! `item_summaries`: an item's summary by the chat model, computed once and kept
//! until the item's text changes (`text_hash`) or the configured model does.

use sea_orm::entity::prelude::*;

/// A stored summary.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "item_summaries")]
pub struct Model {
    /// The item.
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub item_id: String,
    /// SHA-256 (hex) of the text the model summarised.
    #[sea_orm(column_type = "Text")]
    pub text_hash: String,
    /// The public name of the model that wrote it.
    #[sea_orm(column_type = "Text")]
    pub model: String,
    #[sea_orm(column_type = "Text")]
    pub summary: String,
    pub created_at: DateTimeUtc,
}

/// Relations of `item_summaries`.
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
