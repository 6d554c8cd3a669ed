//! `jobs`: one background job, its state, progress, checkpoint and outcome (see
//! [`crate::queue`]).

use sea_orm::entity::prelude::*;

/// A job row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    /// UUID v4, as text.
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub id: String,
    #[sea_orm(column_type = "Text")]
    pub kind: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub payload: Json,
    /// `queued`, `running`, `retrying`, `succeeded`, `failed` or `cancelled`.
    #[sea_orm(column_type = "Text")]
    pub state: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub processed: i64,
    pub total: Option<i64>,
    #[sea_orm(column_type = "Text", nullable)]
    pub message: Option<String>,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub checkpoint: Option<Json>,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub result: Option<Json>,
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    #[sea_orm(column_type = "Text")]
    pub created_by: String,
    #[sea_orm(column_type = "Text", nullable, unique)]
    pub idempotency_key: Option<String>,
    pub cancel_requested: bool,
    /// The worker (node and slot) running it now.
    #[sea_orm(column_type = "Text", nullable)]
    pub locked_by: Option<String>,
    /// Its lease: past this, another worker may take the job over.
    pub locked_until: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    /// A retrying job's next attempt is due then.
    pub run_after: Option<DateTimeUtc>,
}

/// `jobs` has no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
