//! The transactional outbox: every item change appends an event in the same
//! transaction as the change itself, so no change is ever committed without its
//! event. Item events carry an [`ItemChange`](crate::explore::ItemChange) as
//! their payload (versioned: `"v": 1`), the same value Explore publishes on its
//! in-process change bus before the write returns; a reader turns a row back into
//! one with [`ItemChange::from_payload`](crate::explore::ItemChange::from_payload).
//! Nothing relays the table to a broker yet.

use chrono::Utc;
use sea_orm::{ActiveValue::NotSet, ConnectionTrait, DbErr, EntityTrait, Set};
use serde_json::Value;

use crate::db::entities::outbox;

/// An item was created or changed (payload: an `ItemChange` with `after` set).
pub const ITEM_CHANGED: &str = "item.changed";
/// An item was deleted (payload: an `ItemChange` with `after` null).
pub const ITEM_DELETED: &str = "item.deleted";

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    pub event_type: &'static str,
    pub aggregate_id: String,
    pub payload: Value,
}

/// Appends events on `conn` (call it with the write's transaction).
pub async fn append<C: ConnectionTrait>(conn: &C, events: Vec<OutboxEvent>) -> Result<(), DbErr> {
    if events.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    let rows = events.into_iter().map(|e| outbox::ActiveModel {
        seq: NotSet,
        id: Set(uuid::Uuid::new_v4().to_string()),
        event_type: Set(e.event_type.to_owned()),
        aggregate_id: Set(e.aggregate_id),
        payload: Set(e.payload),
        created_at: Set(now),
        published_at: Set(None),
    });
    outbox::Entity::insert_many(rows).exec_without_returning(conn).await?;
    Ok(())
}
