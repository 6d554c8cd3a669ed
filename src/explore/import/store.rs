//! The writing half of the import: one transaction per batch ([`begin`]) in which
//! [`write_batch`] classifies each item by its content hash and inserts, updates or
//! leaves it, keeping `item_tags` and the outbox in step, and returns the
//! [`ItemChange`]s it wrote (an update's `before` is the row it replaced) for the
//! caller to publish once it has committed.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, EntityTrait, QueryFilter, QuerySelect, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};
use serde_json::Value;

use super::parse::Parsed;
use crate::db::entities::{item, item_tag};
use crate::explore::trend::NEVER_VIEWED;
use crate::explore::write::tags_from_json;
use crate::explore::{Families, ItemChange};
use crate::outbox;

// Rows per multi-row statement, so that no statement binds more than SQLite's 32,766
// variables (PostgreSQL allows 65,535): items bind 15 values a row, item_tags 2,
// outbox 6, and an `IN (...)` list 1.
const ITEM_ROWS: usize = 1_000;
const TAG_ROWS: usize = 10_000;
const EVENT_ROWS: usize = 2_000;
const IDS: usize = 10_000;

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Outcome {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
}

/// What an existing row is, as far as the import cares.
struct Existing {
    hash: String,
    version: i64,
    families: Families,
}

/// A batch's transaction. SQLite: the write lock is taken up front, so the read in
/// [`write_batch`] cannot go stale before its writes.
pub(super) async fn begin(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let options = TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    };
    db.begin_with_options(options).await
}

/// Writes one batch (whose ids are distinct) in `txn`, which the caller commits;
/// returns what it did and the changes it wrote (none for unchanged items).
pub(super) async fn write_batch(
    txn: &DatabaseTransaction,
    items: Vec<Parsed>,
) -> Result<(Outcome, Vec<ItemChange>), DbErr> {
    if items.is_empty() {
        return Ok((Outcome::default(), Vec::new()));
    }
    let mut existing = current_rows(txn, &items).await?;

    let mut outcome = Outcome::default();
    let mut inserts = Vec::new();
    let mut updates = Vec::new();
    let mut changes = Vec::new();
    for item in items {
        let after = Some(Families {
            group: item.input.group.clone(),
            category_code: item.input.category_code.clone(),
            tags: item.input.tags.clone(),
        });
        match existing.remove(&item.id) {
            None => {
                changes.push(ItemChange { id: item.id.clone(), version: 1, before: None, after });
                inserts.push(item);
            }
            Some(row) if row.hash == item.hash => outcome.unchanged += 1,
            Some(row) => {
                let version = row.version + 1;
                changes.push(ItemChange { id: item.id.clone(), version, before: Some(row.families), after });
                updates.push(item);
            }
        }
    }
    outcome.inserted = inserts.len() as u64;
    outcome.updated = updates.len() as u64;
    if changes.is_empty() {
        return Ok((outcome, changes));
    }

    let now = Utc::now();
    let mut tags = Vec::new();
    for item in inserts.iter().chain(&updates) {
        let input = &item.input;
        tags.extend(
            input
                .tags
                .iter()
                .map(|tag| item_tag::ActiveModel { item_id: Set(item.id.clone()), tag: Set(tag.clone()) }),
        );
    }

    for chunk in updates.chunks(IDS) {
        let ids = chunk.iter().map(|item| item.id.as_str());
        item_tag::Entity::delete_many().filter(item_tag::Column::ItemId.is_in(ids)).exec(txn).await?;
    }
    for item in updates {
        update_item(txn, item, now).await?;
    }
    let mut rows = inserts.into_iter().map(|item| new_item(item, now)).peekable();
    while rows.peek().is_some() {
        item::Entity::insert_many(rows.by_ref().take(ITEM_ROWS)).exec_without_returning(txn).await?;
    }
    let mut tags = tags.into_iter().peekable();
    while tags.peek().is_some() {
        item_tag::Entity::insert_many(tags.by_ref().take(TAG_ROWS)).exec_without_returning(txn).await?;
    }
    for chunk in changes.chunks(EVENT_ROWS) {
        outbox::append(txn, chunk.iter().map(ItemChange::to_outbox_event).collect()).await?;
    }
    Ok((outcome, changes))
}

/// The batch's items that already exist, by id. On PostgreSQL the rows stay locked
/// until the batch commits, so a concurrent API write cannot slip between this read
/// and the update (and the `before` families read here are the ones replaced).
async fn current_rows(
    txn: &DatabaseTransaction,
    items: &[Parsed],
) -> Result<HashMap<String, Existing>, DbErr> {
    let lock = txn.get_database_backend() == DbBackend::Postgres;
    let mut found = HashMap::new();
    for chunk in items.chunks(IDS) {
        let mut query = item::Entity::find()
            .select_only()
            .column(item::Column::Id)
            .column(item::Column::ContentHash)
            .column(item::Column::Version)
            .column(item::Column::GroupName)
            .column(item::Column::CategoryCode)
            .column(item::Column::Tags)
            .filter(item::Column::Id.is_in(chunk.iter().map(|item| item.id.as_str())));
        if lock {
            query = query.lock_exclusive();
        }
        let rows: Vec<(String, String, i64, String, String, Value)> = query.into_tuple().all(txn).await?;
        found.extend(rows.into_iter().map(|(id, hash, version, group, category_code, tags)| {
            let families = Families { group, category_code, tags: tags_from_json(&tags) };
            (id, Existing { hash, version, families })
        }));
    }
    Ok(found)
}

fn tags_json(tags: Vec<String>) -> Value {
    Value::Array(tags.into_iter().map(Value::String).collect())
}

fn new_item(item: Parsed, now: DateTime<Utc>) -> item::ActiveModel {
    let input = item.input;
    item::ActiveModel {
        id: Set(item.id),
        title: Set(input.title),
        body: Set(input.body),
        category: Set(input.category),
        category_code: Set(input.category_code),
        group_name: Set(input.group),
        tags: Set(tags_json(input.tags)),
        source_url: Set(input.source_url),
        published_at: Set(input.published_at),
        views: Set(0),
        trend: Set(NEVER_VIEWED),
        version: Set(1),
        content_hash: Set(item.hash),
        created_at: Set(now),
        updated_at: Set(now),
    }
}

/// Replaces the content fields and bumps the version; views, trend and created_at stay.
async fn update_item(txn: &DatabaseTransaction, item: Parsed, now: DateTime<Utc>) -> Result<(), DbErr> {
    let input = item.input;
    item::Entity::update_many()
        .col_expr(item::Column::Title, Expr::value(input.title))
        .col_expr(item::Column::Body, Expr::value(input.body))
        .col_expr(item::Column::Category, Expr::value(input.category))
        .col_expr(item::Column::CategoryCode, Expr::value(input.category_code))
        .col_expr(item::Column::GroupName, Expr::value(input.group))
        .col_expr(item::Column::Tags, Expr::value(tags_json(input.tags)))
        .col_expr(item::Column::SourceUrl, Expr::value(input.source_url))
        .col_expr(item::Column::PublishedAt, Expr::value(input.published_at))
        .col_expr(item::Column::ContentHash, Expr::value(item.hash))
        .col_expr(item::Column::Version, Expr::col(item::Column::Version).add(1))
        .col_expr(item::Column::UpdatedAt, Expr::value(now))
        .filter(item::Column::Id.eq(item.id))
        .exec(txn)
        .await?;
    Ok(())
}
