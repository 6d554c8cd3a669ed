//! The Explore catalogue: `items`, their tags (`item_tags`), the transactional
//! `outbox`, and full-text search.
//!
//! Tables and indexes are built with sea-query so both backends take the same code;
//! full-text search is backend-specific raw SQL:
//! - SQLite: an FTS5 table `items_fts` over `items(title, body)` (external content,
//!   keyed by the implicit `rowid`), kept in sync by three triggers;
//! - PostgreSQL: a generated, stored `tsvector` column `items.search` (title weighted
//!   A, body B) with a GIN index.
//!
//! `items.tags` is the JSON array as written (primary first); `item_tags` holds one
//! row per tag so that tag filters use an index. Whoever writes items keeps both in step.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

/// Creates `items`, `item_tags`, `outbox` and the full-text index.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Items {
    Table,
    Id,
    Title,
    Body,
    Category,
    CategoryCode,
    GroupName,
    Tags,
    SourceUrl,
    PublishedAt,
    Views,
    Trend,
    Version,
    ContentHash,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ItemTags {
    Table,
    ItemId,
    Tag,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Seq,
    Id,
    EventType,
    AggregateId,
    Payload,
    CreatedAt,
    PublishedAt,
}

/// `trend` of an item that was never viewed (log2 scale, so far below any real score).
const NEVER_VIEWED_TREND: f64 = -1_000_000_000.0;

const SQLITE_FTS_UP: [&str; 4] = [
    "CREATE VIRTUAL TABLE items_fts USING fts5(title, body, content='items', content_rowid='rowid', \
     tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER items_fts_insert AFTER INSERT ON items BEGIN \
     INSERT INTO items_fts(rowid, title, body) VALUES (new.rowid, new.title, new.body); END",
    "CREATE TRIGGER items_fts_delete AFTER DELETE ON items BEGIN \
     INSERT INTO items_fts(items_fts, rowid, title, body) VALUES ('delete', old.rowid, old.title, old.body); END",
    "CREATE TRIGGER items_fts_update AFTER UPDATE OF title, body ON items BEGIN \
     INSERT INTO items_fts(items_fts, rowid, title, body) VALUES ('delete', old.rowid, old.title, old.body); \
     INSERT INTO items_fts(rowid, title, body) VALUES (new.rowid, new.title, new.body); END",
];

const SQLITE_FTS_DOWN: [&str; 4] = [
    "DROP TRIGGER IF EXISTS items_fts_update",
    "DROP TRIGGER IF EXISTS items_fts_delete",
    "DROP TRIGGER IF EXISTS items_fts_insert",
    "DROP TABLE IF EXISTS items_fts",
];

const POSTGRES_FTS_UP: [&str; 2] = [
    "ALTER TABLE items ADD COLUMN search tsvector GENERATED ALWAYS AS (\
     setweight(to_tsvector('english', coalesce(title, '')), 'A') || \
     setweight(to_tsvector('english', coalesce(body, '')), 'B')) STORED",
    "CREATE INDEX idx_items_search ON items USING GIN (search)",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_items(manager).await?;
        create_item_tags(manager).await?;
        create_outbox(manager).await?;
        let statements: &[&str] = match manager.get_database_backend() {
            DbBackend::Sqlite => &SQLITE_FTS_UP,
            DbBackend::Postgres => &POSTGRES_FTS_UP,
            _ => &[],
        };
        let conn = manager.get_connection();
        for sql in statements {
            conn.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Sqlite {
            let conn = manager.get_connection();
            for sql in SQLITE_FTS_DOWN {
                conn.execute_unprepared(sql).await?;
            }
        }
        // Dropping a table drops its indexes (and on PostgreSQL the `search` column).
        manager.drop_table(Table::drop().table(Outbox::Table).if_exists().to_owned()).await?;
        manager.drop_table(Table::drop().table(ItemTags::Table).if_exists().to_owned()).await?;
        manager.drop_table(Table::drop().table(Items::Table).if_exists().to_owned()).await
    }
}

async fn create_items(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(Items::Table)
                .col(ColumnDef::new(Items::Id).text().not_null().primary_key())
                .col(ColumnDef::new(Items::Title).text().not_null())
                .col(ColumnDef::new(Items::Body).text().not_null())
                .col(ColumnDef::new(Items::Category).text().not_null())
                .col(ColumnDef::new(Items::CategoryCode).text().not_null())
                .col(ColumnDef::new(Items::GroupName).text().not_null())
                .col(ColumnDef::new(Items::Tags).json_binary().not_null())
                .col(ColumnDef::new(Items::SourceUrl).text().null())
                .col(ColumnDef::new(Items::PublishedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(Items::Views).big_integer().not_null().default(0))
                .col(ColumnDef::new(Items::Trend).double().not_null().default(NEVER_VIEWED_TREND))
                .col(ColumnDef::new(Items::Version).big_integer().not_null().default(1))
                .col(ColumnDef::new(Items::ContentHash).text().not_null())
                .col(ColumnDef::new(Items::CreatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(Items::UpdatedAt).timestamp_with_time_zone().not_null())
                .to_owned(),
        )
        .await?;
    let indexes: [(&str, &[Items]); 4] = [
        ("idx_items_published_at_id", &[Items::PublishedAt, Items::Id]),
        ("idx_items_category_code_published_at_id", &[Items::CategoryCode, Items::PublishedAt, Items::Id]),
        ("idx_items_group_name_published_at_id", &[Items::GroupName, Items::PublishedAt, Items::Id]),
        ("idx_items_trend_id", &[Items::Trend, Items::Id]),
    ];
    for (name, columns) in indexes {
        let mut index = Index::create().name(name).table(Items::Table).to_owned();
        for column in columns {
            index.col(*column);
        }
        manager.create_index(index).await?;
    }
    Ok(())
}

async fn create_item_tags(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(ItemTags::Table)
                .col(ColumnDef::new(ItemTags::ItemId).text().not_null())
                .col(ColumnDef::new(ItemTags::Tag).text().not_null())
                .primary_key(Index::create().col(ItemTags::ItemId).col(ItemTags::Tag))
                // Declared inline: SQLite cannot add a foreign key to an existing table.
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_item_tags_item_id")
                        .from(ItemTags::Table, ItemTags::ItemId)
                        .to(Items::Table, Items::Id)
                        .on_delete(ForeignKeyAction::Cascade)
                        .on_update(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
    manager
        .create_index(
            Index::create()
                .name("idx_item_tags_tag_item_id")
                .table(ItemTags::Table)
                .col(ItemTags::Tag)
                .col(ItemTags::ItemId)
                .to_owned(),
        )
        .await
}

async fn create_outbox(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(Outbox::Table)
                // SQLite: INTEGER PRIMARY KEY AUTOINCREMENT; PostgreSQL: bigserial.
                .col(ColumnDef::new(Outbox::Seq).big_integer().not_null().auto_increment().primary_key())
                .col(ColumnDef::new(Outbox::Id).text().not_null().unique_key())
                .col(ColumnDef::new(Outbox::EventType).text().not_null())
                .col(ColumnDef::new(Outbox::AggregateId).text().not_null())
                .col(ColumnDef::new(Outbox::Payload).json_binary().not_null())
                .col(ColumnDef::new(Outbox::CreatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(Outbox::PublishedAt).timestamp_with_time_zone().null())
                .to_owned(),
        )
        .await?;
    manager
        .create_index(
            Index::create()
                .name("idx_outbox_published_at_seq")
                .table(Outbox::Table)
                .col(Outbox::PublishedAt)
                .col(Outbox::Seq)
                .to_owned(),
        )
        .await
}
