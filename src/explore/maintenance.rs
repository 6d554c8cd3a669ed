//! Whole-catalogue maintenance, one batch at a time, for the jobs that run it
//! (`recompute_trending`, `rebuild_search_index`). Each function does one step
//! through the connection or transaction it is given, so that the caller decides
//! where a batch commits, checkpoints between batches and stops between them when
//! asked. Batches walk the catalogue by id ([`next_ids`]): items created or deleted
//! meanwhile do not shift the walk.

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};

use super::trend::NEVER_VIEWED;
use crate::db::entities::item;

/// Ids bound in one `IN (...)` list (SQLite allows 32,766 variables a statement).
const IDS: usize = 10_000;

/// Items in the catalogue.
pub async fn item_count<C: ConnectionTrait>(conn: &C) -> Result<u64, DbErr> {
    item::Entity::find().count(conn).await
}

/// The ids of the (at most) `limit` first items after `after`, in id order.
pub async fn next_ids<C: ConnectionTrait>(
    conn: &C,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<String>, DbErr> {
    let mut query = item::Entity::find()
        .select_only()
        .column(item::Column::Id)
        .order_by_asc(item::Column::Id)
        .limit(Ord::max(limit, 1));
    if let Some(after) = after {
        query = query.filter(item::Column::Id.gt(after));
    }
    query.into_tuple().all(conn).await
}

/// Adds `shift` ([`trend::rescale_shift`](super::trend::rescale_shift)) to the
/// trend score of each viewed item among `ids`; answers how many rows changed. The
/// score is moved in SQL (`trend = trend + shift`), so views the ViewCounter
/// flushes meanwhile are kept.
pub async fn shift_trends<C: ConnectionTrait>(conn: &C, ids: &[String], shift: f64) -> Result<u64, DbErr> {
    if shift == 0.0 || !shift.is_finite() {
        return Ok(0);
    }
    let mut changed = 0;
    for chunk in ids.chunks(IDS) {
        let updated = item::Entity::update_many()
            .col_expr(item::Column::Trend, Expr::col(item::Column::Trend).add(shift))
            .filter(item::Column::Id.is_in(chunk.iter().map(String::as_str)))
            .filter(item::Column::Views.gt(0))
            .filter(item::Column::Trend.gt(NEVER_VIEWED / 2.0))
            .exec(conn)
            .await?;
        changed += updated.rows_affected;
    }
    Ok(changed)
}

/// SQLite: rebuilds the FTS5 index `items_fts` from `items` (FTS5's `rebuild`
/// command: one statement, in one transaction, so searches see the old index until
/// the new one is whole); answers the items indexed.
pub async fn rebuild_fts_sqlite(db: &DatabaseConnection) -> Result<u64, DbErr> {
    let txn = db.begin().await?;
    txn.execute_unprepared("INSERT INTO items_fts(items_fts) VALUES('rebuild')").await?;
    let indexed = item_count(&txn).await?;
    txn.commit().await?;
    Ok(indexed)
}

/// PostgreSQL: recomputes the generated `search` tsvector of the items among `ids`
/// (rewriting a row recomputes its generated column; needed after the text search
/// configuration changed); answers the rows rewritten. Item versions, `updated_at`
/// and the outbox are untouched: the content did not change.
pub async fn recompute_search_pg<C: ConnectionTrait>(conn: &C, ids: &[String]) -> Result<u64, DbErr> {
    let mut rewritten = 0;
    for chunk in ids.chunks(IDS) {
        let updated = item::Entity::update_many()
            .col_expr(item::Column::Title, Expr::col(item::Column::Title))
            .filter(item::Column::Id.is_in(chunk.iter().map(String::as_str)))
            .exec(conn)
            .await?;
        rewritten += updated.rows_affected;
    }
    Ok(rewritten)
}

/// PostgreSQL: rebuilds the GIN index over `items.search` without blocking reads or
/// writes (`REINDEX ... CONCURRENTLY`, which cannot run inside a transaction).
pub async fn reindex_search_pg(db: &DatabaseConnection) -> Result<(), DbErr> {
    db.execute_unprepared("REINDEX INDEX CONCURRENTLY idx_items_search").await?;
    Ok(())
}
