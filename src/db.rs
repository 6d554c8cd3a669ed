//! The shared database: connection (embedded SQLite by default, PostgreSQL when
//! `database.url` says so), migrations, and the sea-orm entities.

pub mod entities;
pub mod files;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;
pub mod unavailable;

use std::time::Duration;

use migration::MigratorTrait;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr};

use crate::config::Settings;

/// Why the database could not be reached or prepared.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The data directory for the embedded SQLite file could not be created.
    #[error("failed to create data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    /// The database file's permissions could not be set.
    #[error("failed to restrict access to {path}: {source}")]
    Permissions { path: String, source: std::io::Error },
    /// The connection could not be opened.
    #[error("failed to connect to the database ({backend}): {source}")]
    Connect { backend: &'static str, source: DbErr },
    /// A migration failed.
    #[error("failed to run migrations: {0}")]
    Migrate(DbErr),
}

/// Opens the connection pool described by the settings. For a SQLite file,
/// turns on WAL and keeps the file owner-only (0600 on Unix); when it lies in
/// `data_dir`, creates that directory owner-only (0700) or tightens it
/// ([`files`]).
pub async fn connect(settings: &Settings) -> Result<DatabaseConnection, DbError> {
    let url = settings.database_url();
    let backend = if url.starts_with("sqlite:") { "sqlite" } else { "postgres" };
    if let Some(file) = files::sqlite_file(&url) {
        if settings.database.url.is_empty() || file.path.starts_with(&settings.data_dir) {
            files::secure_dir(&settings.data_dir)?;
        }
        files::secure_file(&file.path, file.create)?;
    }
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(settings.database.max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(settings.database.connect_timeout_secs))
        .acquire_timeout(Duration::from_secs(settings.database.connect_timeout_secs))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
        });
    let db = Database::connect(options).await.map_err(|source| DbError::Connect { backend, source })?;
    Ok(db)
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbError> {
    migration::Migrator::up(db, None).await.map_err(DbError::Migrate)
}

/// Pool size and idle connections, for the pool gauges.
pub fn pool_stats(db: &DatabaseConnection) -> (u32, u32) {
    match db.get_database_backend() {
        DbBackend::Sqlite => {
            let pool = db.get_sqlite_connection_pool();
            (pool.size(), u32::try_from(pool.num_idle()).unwrap_or(u32::MAX))
        }
        DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            (pool.size(), u32::try_from(pool.num_idle()).unwrap_or(u32::MAX))
        }
        _ => (0, 0),
    }
}

/// The backend's name, for health and logs.
pub fn backend_name(db: &DatabaseConnection) -> &'static str {
    match db.get_database_backend() {
        DbBackend::Sqlite => "sqlite",
        DbBackend::Postgres => "postgres",
        _ => "other",
    }
}
