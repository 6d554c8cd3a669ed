//! The `revoked_sessions` table: where revocations persist across restarts and reach nodes
//! that share the database.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder};

use crate::db::entities::revoked_session;

/// Most rows read by one poll; the rest come with the next.
pub const POLL_BATCH: usize = 10_000;

/// Records `sids` as revoked until `until`; sessions already recorded keep their row (a
/// revoked session issues no more tokens, so its first `until` stands).
pub async fn record<C: ConnectionTrait>(
    conn: &C,
    sids: &[String],
    until: DateTime<Utc>,
) -> Result<(), DbErr> {
    if sids.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    let rows = sids.iter().map(|sid| revoked_session::ActiveModel {
        sid: Set(sid.clone()),
        expires_at: Set(until),
        revoked_at: Set(now),
        ..Default::default()
    });
    revoked_session::Entity::insert_many(rows)
        .on_conflict(OnConflict::column(revoked_session::Column::Sid).do_nothing().to_owned())
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// Rows with an id above `after`, whose tokens may still be live at `now`, oldest first.
pub async fn since<C: ConnectionTrait>(
    conn: &C,
    after: i64,
    now: DateTime<Utc>,
) -> Result<Vec<revoked_session::Model>, DbErr> {
    use sea_orm::QuerySelect;
    revoked_session::Entity::find()
        .filter(revoked_session::Column::Id.gt(after))
        .filter(revoked_session::Column::ExpiresAt.gte(now))
        .order_by_asc(revoked_session::Column::Id)
        .limit(POLL_BATCH as u64)
        .all(conn)
        .await
}

/// Deletes the rows whose tokens have all expired by `now`; returns how many.
pub async fn prune<C: ConnectionTrait>(conn: &C, now: DateTime<Utc>) -> Result<u64, DbErr> {
    Ok(revoked_session::Entity::delete_many()
        .filter(revoked_session::Column::ExpiresAt.lt(now))
        .exec(conn)
        .await?
        .rows_affected)
}
