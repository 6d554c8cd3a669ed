//! `outbox`: events appended in the same transaction as the change they describe
//! (see [`crate::outbox`]); a relay publishes them in `seq` order and stamps
//! `published_at`.

use sea_orm::entity::prelude::*;

/// An outbox event.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    /// Append order.
    #[sea_orm(primary_key)]
    pub seq: i64,
    /// UUID v4, as text: the event's id for consumers' deduplication.
    #[sea_orm(column_type = "Text", unique)]
    pub id: String,
    /// E.g. `item.changed`.
    #[sea_orm(column_type = "Text")]
    pub event_type: String,
    /// Id of the thing that changed.
    #[sea_orm(column_type = "Text")]
    pub aggregate_id: String,
    /// Event body (JSON object).
    #[sea_orm(column_type = "JsonBinary")]
    pub payload: Json,
    pub created_at: DateTimeUtc,
    /// Set once the relay has published the event.
    pub published_at: Option<DateTimeUtc>,
}

/// `outbox` has no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
