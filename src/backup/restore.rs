//! [`super::restore`]: the inserting side. The archive is read and checked on a
//! blocking thread ([`super::unpack`]); the rows are inserted here, in batches, in
//! **one transaction for the whole restore**: a restore that fails halfway (a
//! table that does not match its digest, a constraint, a cancellation) rolls back
//! to the empty database it started from, ready to be run again, instead of
//! leaving some tables loaded. The price is one long write transaction, which
//! is fine for a database that must be empty and that nothing else writes to yet.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, SqliteTransactionMode, Statement,
    TransactionOptions, TransactionTrait, Value,
};
use serde_json::{Map, Value as Json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::create::{count, schema_version};
use super::manifest::Manifest;
use super::schema::{self, Kind, MIGRATIONS_TABLE, Schema, quote};
use super::unpack::{self, Unpacked};
use super::{BackupError, Progress, RestoreSummary, known_migrations, values};

/// Bound parameters per INSERT, below both engines' limits (SQLite 32766,
/// PostgreSQL 65535).
const MAX_PARAMETERS: usize = 30_000;

/// A manifest table, matched to the target's columns.
struct Target {
    name: String,
    /// The archive's columns, with the target column's kind.
    columns: Vec<(String, Kind)>,
    insert_head: String,
}

#[tracing::instrument(skip_all, fields(archive = %archive.display()))]
pub async fn run(
    db: &DatabaseConnection,
    archive: &Path,
    key: Option<&str>,
    progress: &mut (dyn FnMut(Progress) + Send),
    cancel: &CancellationToken,
) -> Result<RestoreSummary, BackupError> {
    if cancel.is_cancelled() {
        return Err(BackupError::Cancelled);
    }
    let backend = db.get_database_backend();
    let database_version = schema_version(db).await?;
    let schema = schema::discover(db).await?;
    let txn = match backend {
        // take the write lock now rather than at the first insert
        DbBackend::Sqlite => {
            let options = TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            };
            db.begin_with_options(options).await?
        }
        _ => db.begin().await?,
    };
    ensure_empty(&txn, &schema).await?;

    let (tx, mut rx) = mpsc::channel(4);
    let (path, key, known) = (archive.to_path_buf(), key.map(str::to_owned), known_migrations());
    // Joined below on every path, so the thread never outlives the restore.
    let reading = tokio::task::spawn_blocking(move || unpack::read(path, key, &known, &tx));
    let loaded = load(&txn, &schema, &database_version, &mut rx, progress, cancel).await;
    drop(rx);
    let (manifest, encrypted) = match (loaded, reading.await) {
        (Ok(loaded), Ok(Ok(()))) => loaded,
        (_, Ok(Err(error))) if !matches!(error, BackupError::Cancelled) => {
            let _ = txn.rollback().await;
            return Err(error);
        }
        (Err(error), _) => {
            let _ = txn.rollback().await;
            return Err(error);
        }
        (Ok(_), read) => {
            let _ = txn.rollback().await;
            let why = match read {
                Err(join) => format!("the archive reader stopped: {join}"),
                Ok(_) => "the archive reader stopped early".to_owned(),
            };
            return Err(BackupError::Internal(why));
        }
    };

    progress(Progress {
        processed: manifest.total_rows(),
        total: manifest.total_rows(),
        message: "indexing".to_owned(),
    });
    let step = Instant::now();
    finish(&txn, &schema, &manifest).await?;
    tracing::debug!(elapsed_ms = step.elapsed().as_millis(), "index rebuilt and sequences set");
    let step = Instant::now();
    txn.commit().await?;
    tracing::debug!(elapsed_ms = step.elapsed().as_millis(), "restore committed");
    if backend == DbBackend::Postgres {
        let step = Instant::now();
        for table in &manifest.tables {
            db.execute_unprepared(&format!("ANALYZE {}", quote(&table.name))).await?;
        }
        tracing::debug!(elapsed_ms = step.elapsed().as_millis(), "tables analyzed");
    }
    let mut tables = Vec::with_capacity(manifest.tables.len());
    for table in &manifest.tables {
        let found = count(db, &table.name).await?;
        if found != table.rows {
            return Err(BackupError::Verify { table: table.name.clone(), expected: table.rows, found });
        }
        tables.push((table.name.clone(), found));
    }
    tracing::info!(
        rows = manifest.total_rows(),
        tables = tables.len(),
        schema_version = %manifest.schema_version,
        source_engine = %manifest.engine,
        "backup restored"
    );
    Ok(RestoreSummary {
        tables,
        schema_version: manifest.schema_version,
        created_at: manifest.created_at,
        source_engine: manifest.engine,
        encrypted,
    })
}

async fn ensure_empty(txn: &DatabaseTransaction, schema: &Schema) -> Result<(), BackupError> {
    let mut held = Vec::new();
    for table in &schema.tables {
        let rows = count(txn, &table.name).await?;
        if rows > 0 {
            held.push(format!("{rows} {}", table.name));
        }
    }
    if held.is_empty() { Ok(()) } else { Err(BackupError::NotEmpty { counts: held.join(", ") }) }
}

/// Inserts what the reader sends; returns the manifest once every table is in.
async fn load(
    txn: &DatabaseTransaction,
    schema: &Schema,
    database_version: &str,
    rx: &mut mpsc::Receiver<Unpacked>,
    progress: &mut (dyn FnMut(Progress) + Send),
    cancel: &CancellationToken,
) -> Result<(Manifest, bool), BackupError> {
    let backend = txn.get_database_backend();
    let mut opened: Option<(Manifest, bool, Vec<Target>)> = None;
    let mut done = 0usize;
    let mut processed = 0u64;
    let mut started = Instant::now();
    while let Some(message) = rx.recv().await {
        match message {
            Unpacked::Manifest(manifest, encrypted) => {
                ensure_migrated(txn, &manifest, database_version).await?;
                let targets = match_tables(&manifest, schema)?;
                progress(Progress {
                    processed,
                    total: manifest.total_rows(),
                    message: "starting".to_owned(),
                });
                opened = Some((manifest, encrypted, targets));
            }
            Unpacked::Rows { table, rows } => {
                let Some((manifest, _, targets)) = &opened else {
                    return Err(BackupError::Internal("rows came before the manifest".to_owned()));
                };
                let target =
                    targets.get(table).ok_or_else(|| BackupError::Internal("unknown table".to_owned()))?;
                processed += rows.len() as u64;
                insert(txn, target, &rows, backend).await?;
                progress(Progress { processed, total: manifest.total_rows(), message: target.name.clone() });
                if cancel.is_cancelled() {
                    return Err(BackupError::Cancelled);
                }
            }
            Unpacked::TableDone { table } => {
                if table != done {
                    return Err(BackupError::Internal("tables finished out of order".to_owned()));
                }
                if let Some((manifest, _, _)) = &opened
                    && let Some(entry) = manifest.tables.get(table)
                {
                    let elapsed_ms = started.elapsed().as_millis();
                    tracing::debug!(table = %entry.name, rows = entry.rows, elapsed_ms, "table restored");
                }
                started = Instant::now();
                done += 1;
            }
        }
    }
    match opened {
        Some((manifest, encrypted, _)) if done == manifest.tables.len() => Ok((manifest, encrypted)),
        _ => Err(BackupError::Tampered("the archive ended early".to_owned())),
    }
}

/// The archive's schema version must be applied to the target (it may be further on).
async fn ensure_migrated(
    txn: &DatabaseTransaction,
    manifest: &Manifest,
    database_version: &str,
) -> Result<(), BackupError> {
    let sql = format!("SELECT version FROM {}", quote(MIGRATIONS_TABLE));
    let applied = txn.query_all_raw(Statement::from_string(txn.get_database_backend(), sql)).await?;
    let applied: BTreeSet<String> =
        applied.iter().filter_map(|r| r.try_get_by_index::<String>(0).ok()).collect();
    if applied.contains(&manifest.schema_version) {
        Ok(())
    } else {
        Err(BackupError::NotMigrated {
            archive: manifest.schema_version.clone(),
            database: database_version.to_owned(),
        })
    }
}

fn match_tables(manifest: &Manifest, schema: &Schema) -> Result<Vec<Target>, BackupError> {
    let mut targets = Vec::with_capacity(manifest.tables.len());
    for entry in &manifest.tables {
        let table = schema.table(&entry.name).ok_or_else(|| {
            BackupError::Incompatible(format!("the archive's table {} is not in this database", entry.name))
        })?;
        let mut columns = Vec::with_capacity(entry.columns.len());
        for column in &entry.columns {
            let target = table.column(&column.name).ok_or_else(|| {
                BackupError::Incompatible(format!(
                    "the archive's column {}.{} is not in this database",
                    entry.name, column.name
                ))
            })?;
            columns.push((column.name.clone(), target.kind));
        }
        let names: Vec<String> = columns.iter().map(|(name, _)| quote(name)).collect();
        // PostgreSQL identity columns that are GENERATED ALWAYS would need OVERRIDING
        // SYSTEM VALUE; castwork's are BY DEFAULT, which take explicit ids.
        let insert_head = format!("INSERT INTO {} ({}) VALUES ", quote(&entry.name), names.join(", "));
        targets.push(Target { name: entry.name.clone(), columns, insert_head });
    }
    Ok(targets)
}

async fn insert(
    txn: &DatabaseTransaction,
    target: &Target,
    rows: &[Map<String, Json>],
    backend: DbBackend,
) -> Result<(), BackupError> {
    let width = target.columns.len().max(1);
    let per_statement = (MAX_PARAMETERS / width).max(1);
    for chunk in rows.chunks(per_statement) {
        let mut sql = String::with_capacity(target.insert_head.len() + chunk.len() * width * 5);
        sql.push_str(&target.insert_head);
        let mut params: Vec<Value> = Vec::with_capacity(chunk.len() * width);
        for (r, row) in chunk.iter().enumerate() {
            sql.push_str(if r == 0 { "(" } else { ", (" });
            for (c, (name, kind)) in target.columns.iter().enumerate() {
                let value = row.get(name).ok_or_else(|| BackupError::Mismatch {
                    table: target.name.clone(),
                    detail: format!("a row has no {name} column"),
                })?;
                let value = values::write(value, *kind).map_err(|detail| BackupError::Mismatch {
                    table: target.name.clone(),
                    detail: format!("column {name}: {detail}"),
                })?;
                params.push(value);
                if c > 0 {
                    sql.push_str(", ");
                }
                match backend {
                    DbBackend::Postgres => {
                        sql.push('$');
                        sql.push_str(&params.len().to_string());
                    }
                    _ => sql.push('?'),
                }
            }
            sql.push(')');
        }
        txn.execute_raw(Statement::from_sql_and_values(backend, sql, params)).await?;
    }
    Ok(())
}

/// After the rows: rebuild SQLite's full-text index (PostgreSQL's is a generated
/// column, filled as the rows went in) and move PostgreSQL's sequences past the
/// restored ids (SQLite's AUTOINCREMENT follows explicit ids by itself).
async fn finish(txn: &DatabaseTransaction, schema: &Schema, manifest: &Manifest) -> Result<(), BackupError> {
    let backend = txn.get_database_backend();
    match backend {
        DbBackend::Sqlite => {
            for fts in &schema.fts_tables {
                let sql = format!("INSERT INTO {0}({0}) VALUES ('rebuild')", quote(fts));
                txn.execute_unprepared(&sql).await?;
            }
        }
        DbBackend::Postgres => {
            for entry in &manifest.tables {
                let Some(table) = schema.table(&entry.name) else { continue };
                for column in table.columns.iter().filter(|c| matches!(c.kind, Kind::Int32 | Kind::Int64)) {
                    let found = txn
                        .query_one_raw(Statement::from_sql_and_values(
                            backend,
                            "SELECT pg_get_serial_sequence($1, $2)",
                            [Value::from(quote(&table.name)), Value::from(column.name.clone())],
                        ))
                        .await?;
                    let sequence = found.and_then(|r| r.try_get_by_index::<Option<String>>(0).ok().flatten());
                    if let Some(sequence) = sequence {
                        let max =
                            format!("(SELECT MAX({}) FROM {})", quote(&column.name), quote(&table.name));
                        let sql =
                            format!("SELECT setval($1::regclass, COALESCE({max}, 1), {max} IS NOT NULL)");
                        txn.execute_raw(Statement::from_sql_and_values(
                            backend,
                            sql,
                            [Value::from(sequence)],
                        ))
                        .await?;
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}
