//! Item writes: create, replace, patch, delete (each with its outbox event in the
//! same transaction, each conditional on the version the client last saw, each
//! publishing its [`ItemChange`] on the change bus after the commit), and
//! the batched view counts behind trending.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect, SqlErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

use super::model::{Item, ItemInput, ItemPatch};
use super::trend;
use super::validate::{content_hash, merge_patch, same_content, validate_input};
use super::{ExploreError, ExploreService, Families, ItemChange};
use crate::db::entities::{item, item_tag};
use crate::outbox;

/// Converts a stored row into the API's item.
pub fn item_from_model(model: item::Model) -> Item {
    Item {
        tags: tags_from_json(&model.tags),
        id: model.id,
        title: model.title,
        body: model.body,
        category: model.category,
        category_code: model.category_code,
        group: model.group_name,
        source_url: model.source_url,
        published_at: model.published_at,
        views: model.views,
        version: model.version,
        created_at: model.created_at,
        updated_at: model.updated_at,
    }
}

/// Tags are a JSON array (jsonb on PostgreSQL; text on SQLite, which may arrive as a string).
pub fn tags_from_json(value: &serde_json::Value) -> Vec<String> {
    match value {
        serde_json::Value::Array(items) => {
            items.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect()
        }
        serde_json::Value::String(text) => serde_json::from_str(text).unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn families_of(item: &Item) -> Families {
    Families { group: item.group.clone(), category_code: item.category_code.clone(), tags: item.tags.clone() }
}

fn input_of(item: &Item) -> ItemInput {
    ItemInput {
        id: Some(item.id.clone()),
        title: item.title.clone(),
        body: item.body.clone(),
        category: item.category.clone(),
        category_code: item.category_code.clone(),
        group: item.group.clone(),
        tags: item.tags.clone(),
        source_url: item.source_url.clone(),
        published_at: item.published_at,
    }
}

async fn replace_tags(txn: &DatabaseTransaction, id: &str, tags: &[String]) -> Result<(), sea_orm::DbErr> {
    item_tag::Entity::delete_many().filter(item_tag::Column::ItemId.eq(id)).exec(txn).await?;
    if !tags.is_empty() {
        let rows =
            tags.iter().map(|t| item_tag::ActiveModel { item_id: Set(id.to_owned()), tag: Set(t.clone()) });
        item_tag::Entity::insert_many(rows).exec_without_returning(txn).await?;
    }
    Ok(())
}

async fn current(txn: &DatabaseTransaction, id: &str) -> Result<Option<item::Model>, sea_orm::DbErr> {
    item::Entity::find_by_id(id.to_owned()).one(txn).await
}

impl ExploreService {
    /// A write transaction. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`),
    /// so concurrent writers queue instead of failing with "database is locked" when they
    /// upgrade from reading; PostgreSQL ignores the option and relies on row locks.
    async fn begin_write(&self) -> Result<DatabaseTransaction, sea_orm::DbErr> {
        self.db()
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await
    }

    /// Creates an item (id from the input, or a new UUID).
    #[tracing::instrument(skip_all, fields(item = tracing::field::Empty))]
    pub async fn create(&self, mut input: ItemInput) -> Result<Item, ExploreError> {
        validate_input(&input).map_err(ExploreError::Invalid)?;
        let id = input.id.take().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        tracing::Span::current().record("item", id.as_str());
        let now = Utc::now();
        let hash = content_hash(&input);
        let row = item::ActiveModel {
            id: Set(id.clone()),
            title: Set(input.title.clone()),
            body: Set(input.body.clone()),
            category: Set(input.category.clone()),
            category_code: Set(input.category_code.clone()),
            group_name: Set(input.group.clone()),
            tags: Set(serde_json::json!(input.tags)),
            source_url: Set(input.source_url.clone()),
            published_at: Set(input.published_at),
            views: Set(0),
            trend: Set(trend::NEVER_VIEWED),
            version: Set(1),
            content_hash: Set(hash),
            created_at: Set(now),
            updated_at: Set(now),
        };
        let txn = self.begin_write().await?;
        if let Err(err) = item::Entity::insert(row).exec_without_returning(&txn).await {
            return Err(match err.sql_err() {
                Some(SqlErr::UniqueConstraintViolation(_)) => ExploreError::AlreadyExists(id),
                _ => err.into(),
            });
        }
        replace_tags(&txn, &id, &input.tags).await?;
        let created = current(&txn, &id).await?.ok_or_else(|| ExploreError::NotFound(id.clone()))?;
        let item = item_from_model(created);
        let change = ItemChange {
            id: id.clone(),
            version: item.version,
            before: None,
            after: Some(families_of(&item)),
        };
        outbox::append(&txn, vec![change.to_outbox_event()]).await?;
        txn.commit().await?;
        self.notify(change).await;
        Ok(item)
    }

    /// Replaces an item's content if it is still at `expected_version` (`None`: unconditionally).
    #[tracing::instrument(skip_all, fields(item = %id))]
    pub async fn replace(
        &self,
        id: &str,
        expected_version: Option<i64>,
        input: ItemInput,
    ) -> Result<Item, ExploreError> {
        validate_input(&ItemInput { id: None, ..input.clone() }).map_err(ExploreError::Invalid)?;
        self.write(id, expected_version, move |_| Ok(input)).await
    }

    /// Applies a partial update if the item is still at `expected_version` (`None`: unconditionally).
    #[tracing::instrument(skip_all, fields(item = %id))]
    pub async fn patch(
        &self,
        id: &str,
        expected_version: Option<i64>,
        patch: ItemPatch,
    ) -> Result<Item, ExploreError> {
        self.write(id, expected_version, move |old| {
            merge_patch(input_of(old), patch).map_err(ExploreError::Invalid)
        })
        .await
    }

    /// The common path of replace and patch. Content identical to the stored item is a
    /// no-op: the current item comes back with its version, and nothing is written,
    /// published or invalidated.
    async fn write(
        &self,
        id: &str,
        expected_version: Option<i64>,
        build: impl FnOnce(&Item) -> Result<ItemInput, ExploreError>,
    ) -> Result<Item, ExploreError> {
        let txn = self.begin_write().await?;
        let old = current(&txn, id).await?.ok_or_else(|| ExploreError::NotFound(id.to_owned()))?;
        let expected = expected_version.unwrap_or(old.version);
        if old.version != expected {
            return Err(ExploreError::VersionConflict { id: id.to_owned(), expected, current: old.version });
        }
        let before = item_from_model(old.clone());
        let input = build(&before)?;
        if same_content(&input, &input_of(&before)) {
            tracing::debug!(version = old.version, "write changes nothing; version kept");
            txn.rollback().await?;
            return Ok(before);
        }
        let version = old.version + 1;
        // conditional on the version: a concurrent writer that got here first makes this a no-op
        let updated = item::Entity::update_many()
            .col_expr(item::Column::Title, Expr::value(input.title.clone()))
            .col_expr(item::Column::Body, Expr::value(input.body.clone()))
            .col_expr(item::Column::Category, Expr::value(input.category.clone()))
            .col_expr(item::Column::CategoryCode, Expr::value(input.category_code.clone()))
            .col_expr(item::Column::GroupName, Expr::value(input.group.clone()))
            .col_expr(item::Column::Tags, Expr::value(serde_json::json!(input.tags)))
            .col_expr(item::Column::SourceUrl, Expr::value(input.source_url.clone()))
            .col_expr(item::Column::PublishedAt, Expr::value(input.published_at))
            .col_expr(item::Column::ContentHash, Expr::value(content_hash(&input)))
            .col_expr(item::Column::Version, Expr::value(version))
            .col_expr(item::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(item::Column::Id.eq(id))
            .filter(item::Column::Version.eq(old.version))
            .exec(&txn)
            .await?;
        if updated.rows_affected == 0 {
            let now_at = current(&txn, id).await?.map(|m| m.version);
            return Err(match now_at {
                Some(current) => ExploreError::VersionConflict { id: id.to_owned(), expected, current },
                None => ExploreError::NotFound(id.to_owned()),
            });
        }
        replace_tags(&txn, id, &input.tags).await?;
        let fresh = current(&txn, id).await?.ok_or_else(|| ExploreError::NotFound(id.to_owned()))?;
        let item = item_from_model(fresh);
        // `before` is the row this transaction read; the version filter made it the one replaced
        let change = ItemChange {
            id: id.to_owned(),
            version,
            before: Some(families_of(&before)),
            after: Some(families_of(&item)),
        };
        outbox::append(&txn, vec![change.to_outbox_event()]).await?;
        txn.commit().await?;
        self.notify(change).await;
        Ok(item)
    }

    /// Deletes an item if it is still at `expected_version` (`None`: unconditionally).
    #[tracing::instrument(skip_all, fields(item = %id))]
    pub async fn delete(&self, id: &str, expected_version: Option<i64>) -> Result<(), ExploreError> {
        let txn = self.begin_write().await?;
        let old = current(&txn, id).await?.ok_or_else(|| ExploreError::NotFound(id.to_owned()))?;
        let expected = expected_version.unwrap_or(old.version);
        let deleted = item::Entity::delete_many()
            .filter(item::Column::Id.eq(id))
            .filter(item::Column::Version.eq(expected))
            .exec(&txn)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(ExploreError::VersionConflict { id: id.to_owned(), expected, current: old.version });
        }
        // item_tags go with the item (ON DELETE CASCADE); delete explicitly too, for SQLite
        // connections opened without foreign keys
        item_tag::Entity::delete_many().filter(item_tag::Column::ItemId.eq(id)).exec(&txn).await?;
        let before = Families {
            tags: tags_from_json(&old.tags),
            group: old.group_name,
            category_code: old.category_code,
        };
        let change =
            ItemChange { id: id.to_owned(), version: old.version, before: Some(before), after: None };
        outbox::append(&txn, vec![change.to_outbox_event()]).await?;
        txn.commit().await?;
        self.notify(change).await;
        Ok(())
    }

    /// Adds counted detail views (one batch per call) and moves each item's trend score.
    #[tracing::instrument(skip_all, fields(items = views.len()))]
    pub async fn record_views(
        &self,
        views: &HashMap<String, u64>,
        half_life: Duration,
    ) -> Result<(), ExploreError> {
        if views.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let txn = self.begin_write().await?;
        let ids: Vec<String> = views.keys().cloned().collect();
        for chunk in ids.chunks(500) {
            let rows: Vec<(String, f64)> = item::Entity::find()
                .select_only()
                .column(item::Column::Id)
                .column(item::Column::Trend)
                .filter(item::Column::Id.is_in(chunk.iter().cloned()))
                .into_tuple()
                .all(&txn)
                .await?;
            for (id, old_trend) in rows {
                let count = views.get(&id).copied().unwrap_or(0);
                let new_trend = trend::add_views(old_trend, count, now, half_life);
                let delta = i64::try_from(count).unwrap_or(i64::MAX);
                item::Entity::update_many()
                    .col_expr(item::Column::Views, Expr::col(item::Column::Views).add(delta))
                    .col_expr(item::Column::Trend, Expr::value(new_trend))
                    .filter(item::Column::Id.eq(id))
                    .exec(&txn)
                    .await?;
            }
        }
        txn.commit().await?;
        Ok(())
    }
}
