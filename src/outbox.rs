//! The transactional outbox: every item change appends an event in the same
//! transaction as the change itself, so no change is ever committed without its
//! event. Nothing relays the table to a broker yet; in-process, the same facts
//! reach the cache through `explore::ChangeSink` before the write returns.

use chrono::Utc;
use sea_orm::{ActiveValue::NotSet, ConnectionTrait, DbErr, EntityTrait, Set};
use serde_json::{Value, json};

use crate::db::entities::outbox;

/// An item was created or changed.
pub const ITEM_CHANGED: &str = "item.changed";
/// An item was deleted.
pub const ITEM_DELETED: &str = "item.deleted";

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    pub event_type: &'static str,
    pub aggregate_id: String,
    pub payload: Value,
}

impl OutboxEvent {
    /// `item.changed` for an item now at `version`, with what invalidation needs to know.
    pub fn item_changed(id: &str, version: i64, category_code: &str, group: &str, tags: &[String]) -> Self {
        Self {
            event_type: ITEM_CHANGED,
            aggregate_id: id.to_owned(),
            payload: json!({ "id": id, "version": version, "category_code": category_code, "group": group, "tags": tags }),
        }
    }

    /// `item.deleted`, with the item's last known families.
    pub fn item_deleted(id: &str, version: i64, category_code: &str, group: &str, tags: &[String]) -> Self {
        Self {
            event_type: ITEM_DELETED,
            aggregate_id: id.to_owned(),
            payload: json!({ "id": id, "version": version, "category_code": category_code, "group": group, "tags": tags }),
        }
    }
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
