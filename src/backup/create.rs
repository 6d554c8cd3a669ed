//! [`super::create`]: the snapshot reader. It reads every table in one read-only
//! transaction and streams the rows, in batches, to the writing thread
//! ([`super::pack`]).
//!
//! Consistency, online:
//! - PostgreSQL: one `REPEATABLE READ, READ ONLY` transaction, so every table is
//!   read from the same snapshot while writers go on. This logical export needs no
//!   `pg_dump` on the node, nor one whose version matches the server's, and gives
//!   the same archive format as SQLite.
//! - SQLite: one read transaction too, rather than `VACUUM INTO` a copy. In WAL
//!   mode (castwork's) the transaction sees the database as of its first read while
//!   writers go on, so it is as consistent as the copy, without writing a second
//!   whole database file (the full-text index included) to disk first, and with the
//!   same code as PostgreSQL. Its cost: the WAL cannot be checkpointed past the
//!   snapshot until the backup ends, so it grows by the writes made meanwhile.

use chrono::{SecondsFormat, Utc};
use futures::StreamExt;
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, IsolationLevel,
    Statement, StreamTrait, TransactionTrait,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::manifest::{FORMAT, Manifest};
use super::pack::{self, Feed, Plan};
use super::schema::{self, MIGRATIONS_TABLE, Schema, quote};
use super::{BackupError, BackupOptions, BackupSummary, Progress, files, values};

/// Rows per batch: progress and cancellation are checked this often.
const BATCH_ROWS: usize = 1000;

#[tracing::instrument(skip_all, fields(dir = %options.dir.display(), encrypted = options.key.is_some()))]
pub async fn run(
    db: &DatabaseConnection,
    options: &BackupOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
    cancel: &CancellationToken,
) -> Result<BackupSummary, BackupError> {
    if cancel.is_cancelled() {
        return Err(BackupError::Cancelled);
    }
    files::create_private_dir(&options.dir)?;
    let backend = ConnectionTrait::get_database_backend(db);
    let snapshot = match backend {
        DbBackend::Postgres => {
            db.begin_with_config(Some(IsolationLevel::RepeatableRead), Some(AccessMode::ReadOnly)).await?
        }
        _ => db.begin().await?,
    };
    let now = Utc::now();
    let schema = schema::discover(&snapshot).await?;
    let schema_version = schema_version(&snapshot).await?;
    let mut counts = Vec::with_capacity(schema.tables.len());
    for table in &schema.tables {
        counts.push(count(&snapshot, &table.name).await?);
    }
    let total: u64 = counts.iter().sum();

    let encrypted = options.key.is_some();
    let plan = Plan {
        dir: options.dir.clone(),
        file_name: files::archive_name(now, encrypted),
        key: options.key.as_ref().map(|k| k.expose().to_owned()),
        manifest: Manifest {
            format: FORMAT,
            created_at: now.to_rfc3339_opts(SecondsFormat::Millis, true),
            engine: crate::db::backend_name(db).to_owned(),
            castwork_version: env!("CARGO_PKG_VERSION").to_owned(),
            schema_version: schema_version.clone(),
            tables: Vec::new(),
        },
        keep: options.keep,
    };
    let (tx, rx) = mpsc::channel(4);
    let writer_cancel = cancel.clone();
    // Joined below on every path, so the thread never outlives the backup.
    let writing = tokio::task::spawn_blocking(move || pack::write(plan, rx, &writer_cancel));

    let read = read_tables(&snapshot, &schema, total, &tx, progress, cancel).await;
    // A read-only snapshot: nothing to commit.
    let _ = snapshot.rollback().await;
    if read.is_ok() {
        progress(Progress { processed: total, total, message: "writing the archive".to_owned() });
        // the writer may have failed already; its own error says why
        let _ = tx.send(Feed::Done).await;
    }
    drop(tx);
    let written = match (read, writing.await) {
        (Ok(()), Ok(Ok(written))) => written,
        // the writer failed first, and the reader stopped because it was gone
        (Err(BackupError::Cancelled), Ok(Err(error))) if !cancel.is_cancelled() => return Err(error),
        (Err(error), _) | (Ok(()), Ok(Err(error))) => return Err(error),
        (Ok(()), Err(join)) => {
            return Err(BackupError::Internal(format!("the archive writer stopped: {join}")));
        }
    };
    tracing::info!(
        path = %written.path.display(),
        bytes = written.bytes,
        rows = total,
        pruned = written.pruned.len(),
        "backup written"
    );
    Ok(BackupSummary {
        path: written.path,
        bytes: written.bytes,
        tables: written.manifest.tables.iter().map(|t| (t.name.clone(), t.rows)).collect(),
        schema_version,
        encrypted,
        sha256: written.sha256,
        created_at: written.manifest.created_at,
        pruned: written.pruned,
    })
}

async fn read_tables(
    snapshot: &DatabaseTransaction,
    schema: &Schema,
    total: u64,
    out: &mpsc::Sender<Feed>,
    progress: &mut (dyn FnMut(Progress) + Send),
    cancel: &CancellationToken,
) -> Result<(), BackupError> {
    let backend = ConnectionTrait::get_database_backend(snapshot);
    let mut processed = 0u64;
    progress(Progress { processed, total, message: "starting".to_owned() });
    for table in &schema.tables {
        let feed = Feed::Table { name: table.name.clone(), columns: table.columns.clone() };
        out.send(feed).await.map_err(|_| BackupError::Cancelled)?;
        let mut rows = snapshot.stream_raw(Statement::from_string(backend, table.select_sql())).await?;
        let mut batch = Vec::with_capacity(BATCH_ROWS);
        loop {
            let row = rows.next().await.transpose()?;
            if let Some(row) = &row {
                let mut values = Vec::with_capacity(table.columns.len());
                for (index, column) in table.columns.iter().enumerate() {
                    let value = values::read(row, index, column.kind, backend).map_err(|detail| {
                        BackupError::Unsupported(format!(
                            "a value of {}.{}: {detail}",
                            table.name, column.name
                        ))
                    })?;
                    values.push(value);
                }
                batch.push(values);
            }
            if batch.len() == BATCH_ROWS || (row.is_none() && !batch.is_empty()) {
                processed += batch.len() as u64;
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS));
                // the writer is gone only when it failed: its error is reported instead
                out.send(Feed::Rows(full)).await.map_err(|_| BackupError::Cancelled)?;
                progress(Progress { processed, total, message: table.name.clone() });
                if cancel.is_cancelled() {
                    return Err(BackupError::Cancelled);
                }
            }
            if row.is_none() {
                break;
            }
        }
    }
    Ok(())
}

/// The last migration applied (names sort in the order they are applied).
pub async fn schema_version<C: ConnectionTrait>(db: &C) -> Result<String, BackupError> {
    let sql = format!("SELECT MAX(version) FROM {}", quote(MIGRATIONS_TABLE));
    let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await?;
    row.and_then(|r| r.try_get_by_index::<Option<String>>(0).ok().flatten()).ok_or_else(|| {
        BackupError::Incompatible(
            "the database has no migrations applied: run `castwork migrate` first".to_owned(),
        )
    })
}

/// `SELECT COUNT(*)` of `table`.
pub async fn count<C: ConnectionTrait>(db: &C, table: &str) -> Result<u64, BackupError> {
    let sql = format!("SELECT COUNT(*) FROM {}", quote(table));
    let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await?;
    let n: i64 = match row {
        Some(row) => row.try_get_by_index(0)?,
        None => 0,
    };
    Ok(u64::try_from(n).unwrap_or(0))
}
