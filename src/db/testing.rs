//! The unit tests' database: a migrated SQLite file in a temporary directory of its own,
//! removed when the fixture is dropped.

use std::path::PathBuf;

use migration::MigratorTrait;
use sea_orm::{Database, DatabaseConnection};

/// A fresh, migrated SQLite database.
pub struct TempSqlite {
    /// The connection.
    pub db: DatabaseConnection,
    /// The directory that holds the database file (tests may put files of their own there).
    pub dir: PathBuf,
}

impl TempSqlite {
    /// Creates the directory and the database and runs every migration.
    pub async fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("castwork-unit-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.join("x.db").display());
        let db = Database::connect(url).await.expect("sqlite connects");
        migration::Migrator::up(&db, None).await.expect("migrations run");
        Self { db, dir }
    }
}

impl Drop for TempSqlite {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
