//! Online backups of the shared database and verified restores.
//!
//! [`create`] takes a consistent snapshot while the server keeps serving and writes
//! one archive; [`restore`] loads an archive into an empty, migrated database and
//! checks every row. Both report progress through a callback and stop at the next
//! batch when their [`CancellationToken`] fires, so a background job can run them.
//!
//! The archive is the same for both engines (a SQLite backup restores into
//! PostgreSQL and back): a tar of
//! - `manifest.json` ([`manifest::Manifest`]): format, time, source engine, the
//!   last applied migration, and per table its rows, columns and the SHA-256 of its
//!   file's uncompressed text;
//! - `tables/<name>.jsonl.gz`: one JSON object per row, column → value, in primary
//!   key order ([`schema::Kind`] says how each type is written).
//!
//! With `backup.encryption_key` set, the whole tar is sealed ([`crypt`]) and the
//! file is named `castwork-<UTC time>.tar.cwenc`, else `castwork-<UTC time>.tar`;
//! archives live in `<data_dir>/backups/`, owner-only, and the oldest beyond
//! `backup.keep` are deleted after each backup.
//!
//! Tables are discovered from the database's catalogue ([`schema`]), not listed by
//! hand; the migrator's table and full-text index tables are left out, and the
//! full-text index is rebuilt on restore.

mod create;
pub mod crypt;
pub mod files;
pub mod manifest;
mod pack;
pub mod report;
mod restore;
pub mod schema;
mod unpack;
mod values;

use std::path::{Path, PathBuf};

use sea_orm::{DatabaseConnection, DbErr};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Secret, Settings};

/// Where and how [`create`] writes.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// The archives' directory, `<data_dir>/backups`.
    pub dir: PathBuf,
    /// Passphrase that seals the archive; `None`: written unencrypted.
    pub key: Option<Secret>,
    /// Archives kept after a backup (0: all).
    pub keep: usize,
}

impl BackupOptions {
    /// From the `[backup]` settings and `data_dir`.
    pub fn from_settings(settings: &Settings) -> Self {
        let key = &settings.backup.encryption_key;
        Self {
            dir: settings.data_dir.join("backups"),
            key: (!key.is_empty()).then(|| key.clone()),
            keep: settings.backup.keep,
        }
    }
}

/// Progress of a backup or restore, told after each batch of rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Rows done so far, over every table.
    pub processed: u64,
    /// Rows in all (the snapshot's, or the archive's).
    pub total: u64,
    /// What is being done, e.g. `items`.
    pub message: String,
}

/// What [`create`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupSummary {
    /// The archive.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Rows per table, in archive order.
    pub tables: Vec<(String, u64)>,
    /// The last migration applied to the database.
    pub schema_version: String,
    /// Whether the archive is sealed.
    pub encrypted: bool,
    /// Lower-case hex SHA-256 of the archive file, to check copies of it.
    pub sha256: String,
    /// When the snapshot was taken (RFC 3339).
    pub created_at: String,
    /// Older archives deleted by retention.
    pub pruned: Vec<PathBuf>,
}

/// What [`restore`] loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreSummary {
    /// Rows per table, in archive order, as counted in the database afterwards.
    pub tables: Vec<(String, u64)>,
    /// The archive's schema version.
    pub schema_version: String,
    /// When the archive's snapshot was taken.
    pub created_at: String,
    /// The engine the archive came from.
    pub source_engine: String,
    /// Whether the archive was sealed.
    pub encrypted: bool,
}

/// Why a backup or restore failed. A failed or cancelled backup leaves no file
/// behind; a failed or cancelled restore leaves the database as empty as it was.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file could not be created, written or read.
    #[error("failed to {action} {path}: {source}")]
    Io { action: &'static str, path: String, source: std::io::Error },
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] DbErr),
    /// The cancellation token fired.
    #[error("cancelled")]
    Cancelled,
    /// The restore target holds rows.
    #[error("the database is not empty: {counts}; restore into an empty database")]
    NotEmpty { counts: String },
    /// The archive was made at a schema this build does not know.
    #[error(
        "the archive's schema version {archive} is newer than this build knows (its latest is {latest}): \
         restore it with the castwork release that wrote it, or a later one"
    )]
    NewerSchema { archive: String, latest: String },
    /// The target database lacks the archive's schema.
    #[error(
        "the database is not migrated to the archive's schema version {archive} (it is at {database}): \
         run `castwork migrate` first"
    )]
    NotMigrated { archive: String, database: String },
    /// The archive does not fit the target database's tables.
    #[error("the archive does not fit this database: {0}")]
    Incompatible(String),
    /// The archive is encrypted and no key was given.
    #[error(
        "the archive is encrypted: give its key (backup.encryption_key, or `castwork restore --key-env VAR`)"
    )]
    KeyRequired,
    /// The first sealed chunk did not authenticate.
    #[error("wrong backup key or corrupted archive")]
    WrongKey,
    /// The archive is damaged or was altered.
    #[error("the archive is damaged or was altered: {0}")]
    Tampered(String),
    /// A table's rows do not match the manifest.
    #[error(
        "table {table} does not match the archive's manifest: {detail}; the archive was altered or damaged"
    )]
    Mismatch { table: String, detail: String },
    /// The archive's format or encryption is not one this build reads.
    #[error("unsupported archive: {0}")]
    UnsupportedFormat(String),
    /// The database holds something backups cannot carry.
    #[error("column {table}.{column} has type {declared:?}, which backups do not support")]
    UnsupportedColumn { table: String, column: String, declared: String },
    /// Something else backups cannot carry.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The key could not be derived.
    #[error("backup key: {0}")]
    Key(String),
    /// Counted after the restore, a table does not hold what the archive did.
    #[error("after the restore, table {table} holds {found} rows where the archive has {expected}")]
    Verify { table: String, expected: u64, found: u64 },
    /// A bug: an invariant of this module did not hold.
    #[error("internal backup error: {0}")]
    Internal(String),
}

impl BackupError {
    fn io(action: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Self::Io { action, path: path.as_ref().display().to_string(), source }
    }
}

/// Writes a consistent snapshot of every application table to a new archive in
/// `options.dir`, then applies retention. The server may keep serving meanwhile.
///
/// `progress` is told after each batch of rows (rows done over all rows of the
/// snapshot); `cancel` is checked between batches and stops the backup with
/// [`BackupError::Cancelled`], removing its temporary files.
pub async fn create(
    db: &DatabaseConnection,
    options: &BackupOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
    cancel: &CancellationToken,
) -> Result<BackupSummary, BackupError> {
    create::run(db, options, progress, cancel).await
}

/// Loads the archive at `archive` into `db`, which must be migrated (to the
/// archive's schema version or later) and hold no application rows. Every table
/// is inserted in one transaction, checked against the manifest (row count and
/// SHA-256) and counted again after the commit; the full-text index is rebuilt
/// and PostgreSQL's sequences are moved past the restored ids.
///
/// `key` opens an encrypted archive. `progress` and `cancel` work as for [`create`];
/// a cancelled or failed restore rolls back and leaves the database empty.
pub async fn restore(
    db: &DatabaseConnection,
    archive: &Path,
    key: Option<&str>,
    progress: &mut (dyn FnMut(Progress) + Send),
    cancel: &CancellationToken,
) -> Result<RestoreSummary, BackupError> {
    restore::run(db, archive, key, progress, cancel).await
}

/// This build's migrations, oldest first.
pub fn known_migrations() -> Vec<String> {
    use migration::MigratorTrait;
    migration::Migrator::migrations().iter().map(|m| m.name().to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A background job spawns these futures on the runtime: they must be `Send`.
    #[allow(dead_code, reason = "checked by the compiler, never run")]
    fn the_futures_are_send(
        db: &DatabaseConnection,
        options: &BackupOptions,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &CancellationToken,
    ) {
        fn send<T: Send>(_: T) {}
        send(create(db, options, progress, cancel));
        send(restore(db, Path::new("a.tar"), None, progress, cancel));
    }
}
