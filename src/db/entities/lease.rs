//! `leases`: a named lease held by one process until it expires (the SQLite
//! outbox relay's `outbox-relay`).

use sea_orm::entity::prelude::*;

/// A lease.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "leases")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub name: String,
    /// Who holds it (a per-process id).
    #[sea_orm(column_type = "Text")]
    pub holder: String,
    pub expires_at: DateTimeUtc,
}

/// `leases` has no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
