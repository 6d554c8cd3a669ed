//! `item_tags`: one row per tag of an item, so tag filters use an index. Written in
//! the same transaction as the item's `tags` column; rows go when the item does.

use sea_orm::entity::prelude::*;

/// A tag of an item.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "item_tags")]
pub struct Model {
    /// The item.
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub item_id: String,
    /// A tag code, e.g. `cs.CV`.
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub tag: String,
}

/// Relations of `item_tags`.
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
