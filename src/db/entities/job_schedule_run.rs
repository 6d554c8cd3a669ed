//! `job_schedule_runs`: a schedule tick that was started; its primary key
//! (schedule, tick) starts each tick once across all nodes.

use sea_orm::entity::prelude::*;

/// A started tick.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "job_schedule_runs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub schedule: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub tick: DateTimeUtc,
    #[sea_orm(column_type = "Text")]
    pub job_id: String,
    pub created_at: DateTimeUtc,
}

/// `job_schedule_runs` has no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
