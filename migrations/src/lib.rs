//! castwork's schema migrations, applied in order by [`Migrator`]. Each migration uses
//! sea-query's schema builder so the same code runs on SQLite and PostgreSQL; what has
//! no portable form (full-text search) branches on the backend.

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_create_users;
mod m20261125_000002_create_items;
mod m20261201_100000_create_revoked_sessions;
mod m20261201_200000_create_jobs;
mod m20261215_100000_create_item_inference;

/// Every migration, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_create_users::Migration),
            Box::new(m20261125_000002_create_items::Migration),
            Box::new(m20261201_100000_create_revoked_sessions::Migration),
            Box::new(m20261201_200000_create_jobs::Migration),
            Box::new(m20261215_100000_create_item_inference::Migration),
        ]
    }
}
