//! What inference derived from an item, kept so it is computed once:
//! - `item_summaries`: a short summary by the configured chat model;
//! - `item_embeddings`: the item's vector by the configured embedding model, as
//!   `dim` little-endian `f32`s (SQLite `BLOB`, PostgreSQL `bytea`).
//!
//! Each row records the model and `text_hash`, the SHA-256 (hex) of the exact text
//! the model read: a row whose hash differs from the item's current text, or whose
//! model is not the configured one, is stale and is computed again. Rows go when
//! their item does. Nodes find the vectors written since they last looked through
//! the index on `(model, updated_at, item_id)`.

use sea_orm_migration::prelude::*;

/// Creates `item_summaries` and `item_embeddings`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Items {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum ItemSummaries {
    Table,
    ItemId,
    TextHash,
    Model,
    Summary,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ItemEmbeddings {
    Table,
    ItemId,
    Model,
    TextHash,
    Dim,
    Vector,
    UpdatedAt,
}

const UPDATED_INDEX: &str = "idx_item_embeddings_model_updated_at";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ItemSummaries::Table)
                    .col(ColumnDef::new(ItemSummaries::ItemId).text().not_null().primary_key())
                    .col(ColumnDef::new(ItemSummaries::TextHash).text().not_null())
                    .col(ColumnDef::new(ItemSummaries::Model).text().not_null())
                    .col(ColumnDef::new(ItemSummaries::Summary).text().not_null())
                    .col(ColumnDef::new(ItemSummaries::CreatedAt).timestamp_with_time_zone().not_null())
                    // inline: SQLite cannot add a foreign key to an existing table
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_item_summaries_item_id")
                            .from(ItemSummaries::Table, ItemSummaries::ItemId)
                            .to(Items::Table, Items::Id)
                            .on_delete(ForeignKeyAction::Cascade)
                            .on_update(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ItemEmbeddings::Table)
                    .col(ColumnDef::new(ItemEmbeddings::ItemId).text().not_null().primary_key())
                    .col(ColumnDef::new(ItemEmbeddings::Model).text().not_null())
                    .col(ColumnDef::new(ItemEmbeddings::TextHash).text().not_null())
                    .col(ColumnDef::new(ItemEmbeddings::Dim).integer().not_null())
                    .col(ColumnDef::new(ItemEmbeddings::Vector).blob().not_null())
                    .col(ColumnDef::new(ItemEmbeddings::UpdatedAt).timestamp_with_time_zone().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_item_embeddings_item_id")
                            .from(ItemEmbeddings::Table, ItemEmbeddings::ItemId)
                            .to(Items::Table, Items::Id)
                            .on_delete(ForeignKeyAction::Cascade)
                            .on_update(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // nodes pick up vectors other nodes wrote by (model, updated_at)
        manager
            .create_index(
                Index::create()
                    .name(UPDATED_INDEX)
                    .table(ItemEmbeddings::Table)
                    .col(ItemEmbeddings::Model)
                    .col(ItemEmbeddings::UpdatedAt)
                    .col(ItemEmbeddings::ItemId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ItemEmbeddings::Table).if_exists().to_owned()).await?;
        manager.drop_table(Table::drop().table(ItemSummaries::Table).if_exists().to_owned()).await
    }
}
