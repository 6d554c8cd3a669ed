//! The reading half of a restore, on a blocking thread: opens the archive
//! (authenticating it chunk by chunk when it is encrypted), reads and checks the
//! manifest, then streams each table's rows, in batches, to the inserting side
//! ([`super::restore`]), checking each table's row count and SHA-256 against the
//! manifest at the end of its file. A mismatch names the table; the inserting
//! side then rolls back.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::BackupError;
use super::crypt::{AuthFailure, MAGIC, OpenReader};
use super::manifest::{MANIFEST_PATH, MAX_MANIFEST_BYTES, Manifest};
use super::pack::hex;

/// Rows per batch sent to the inserting side.
pub const BATCH_ROWS: usize = 500;
/// Longest row line read (a forged line cannot make a restore allocate more).
const MAX_LINE_BYTES: u64 = 64 * 1024 * 1024;

/// What the reader sends.
pub enum Unpacked {
    /// The archive's manifest, checked; always first.
    Manifest(Manifest, bool),
    /// Rows of the manifest's table at `table`.
    Rows { table: usize, rows: Vec<Map<String, Json>> },
    /// The table at `table` was read whole and matches the manifest.
    TableDone { table: usize },
}

/// Whether the file at `path` is an encrypted archive (by its first bytes).
pub fn is_encrypted(path: &Path) -> Result<bool, BackupError> {
    let mut head = [0u8; 4];
    let mut file = File::open(path).map_err(|source| BackupError::io("open", path, source))?;
    let mut read = 0;
    while read < head.len() {
        match file.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(BackupError::io("read", path, source)),
        }
    }
    Ok(read == head.len() && &head == MAGIC)
}

/// Reads the archive at `path`, sending what it finds to `out`. Stops quietly
/// (with [`BackupError::Cancelled`]) when the receiver goes away.
pub fn read(
    path: PathBuf,
    key: Option<String>,
    known_migrations: &[String],
    out: &mpsc::Sender<Unpacked>,
) -> Result<(), BackupError> {
    let encrypted = is_encrypted(&path)?;
    let file = File::open(&path).map_err(|source| BackupError::io("open", &path, source))?;
    let file = BufReader::with_capacity(256 * 1024, file);
    let (source, auth): (Box<dyn Read>, AuthFailure) = if encrypted {
        let Some(key) = key else { return Err(BackupError::KeyRequired) };
        let reader = OpenReader::new(file, &key)?;
        let auth = reader.auth_failure();
        (Box::new(reader), auth)
    } else {
        (Box::new(file), AuthFailure::default())
    };
    let damaged = |what: String, source: io::Error| {
        auth.error().unwrap_or_else(|| BackupError::Tampered(format!("{what}: {source}")))
    };

    let mut archive = tar::Archive::new(source);
    let mut entries = archive.entries().map_err(|e| damaged("not a tar archive".to_owned(), e))?;
    let mut next_entry = |expected: &str| match entries.next() {
        None => Err(BackupError::Tampered(format!("the archive ends before {expected}"))),
        Some(Err(e)) => Err(damaged(format!("reading the entry for {expected}"), e)),
        Some(Ok(entry)) => Ok(entry),
    };

    let mut first = next_entry(MANIFEST_PATH)?;
    let first_path = entry_path(&first);
    if first_path != MANIFEST_PATH {
        return Err(BackupError::Tampered(format!("the first entry is {first_path:?}, not {MANIFEST_PATH}")));
    }
    let mut text = Vec::new();
    (&mut first)
        .take(MAX_MANIFEST_BYTES)
        .read_to_end(&mut text)
        .map_err(|e| damaged(format!("reading {MANIFEST_PATH}"), e))?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| BackupError::Tampered(format!("{MANIFEST_PATH} is not a valid manifest: {e}")))?;
    manifest.check(known_migrations)?;
    let tables = manifest.tables.clone();
    if out.blocking_send(Unpacked::Manifest(manifest, encrypted)).is_err() {
        return Err(BackupError::Cancelled);
    }

    for (index, table) in tables.iter().enumerate() {
        let entry = next_entry(&table.file)?;
        let found = entry_path(&entry);
        if found != table.file {
            return Err(BackupError::Tampered(format!("expected {} next, found {found:?}", table.file)));
        }
        let mut lines = BufReader::with_capacity(256 * 1024, GzDecoder::new(entry));
        let mut digest = Sha256::new();
        let mut rows: u64 = 0;
        let mut batch = Vec::with_capacity(BATCH_ROWS);
        let mut line = Vec::with_capacity(4096);
        loop {
            line.clear();
            let read = (&mut lines)
                .take(MAX_LINE_BYTES)
                .read_until(b'\n', &mut line)
                .map_err(|e| damaged(format!("reading {}", table.file), e))?;
            if read == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                return Err(BackupError::Mismatch {
                    table: table.name.clone(),
                    detail: format!("line {} is cut short or too long", rows + 1),
                });
            }
            digest.update(&line);
            rows += 1;
            let row: Map<String, Json> =
                serde_json::from_slice(&line).map_err(|e| BackupError::Mismatch {
                    table: table.name.clone(),
                    detail: format!("line {rows} is not a JSON object: {e}"),
                })?;
            batch.push(row);
            if batch.len() == BATCH_ROWS {
                let rows = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS));
                if out.blocking_send(Unpacked::Rows { table: index, rows }).is_err() {
                    return Err(BackupError::Cancelled);
                }
            }
        }
        if rows != table.rows {
            return Err(BackupError::Mismatch {
                table: table.name.clone(),
                detail: format!("{rows} rows in the file, {} in the manifest", table.rows),
            });
        }
        let sha256 = hex(&digest.finalize());
        if sha256 != table.sha256 {
            return Err(BackupError::Mismatch {
                table: table.name.clone(),
                detail: format!("sha256 {sha256}, the manifest says {}", table.sha256),
            });
        }
        if !batch.is_empty() && out.blocking_send(Unpacked::Rows { table: index, rows: batch }).is_err() {
            return Err(BackupError::Cancelled);
        }
        if out.blocking_send(Unpacked::TableDone { table: index }).is_err() {
            return Err(BackupError::Cancelled);
        }
    }
    if let Some(extra) = entries.next() {
        let name = extra.map(|e| entry_path(&e)).unwrap_or_default();
        return Err(BackupError::Tampered(format!("unexpected entry {name:?} after the last table")));
    }
    // Read to the end, so that the last sealed chunk (past the tar's end marker) is
    // authenticated too: a cut or extended file is refused.
    io::copy(&mut archive.into_inner(), &mut io::sink())
        .map_err(|e| damaged("reading the end".to_owned(), e))?;
    Ok(())
}

fn entry_path<R: Read>(entry: &tar::Entry<'_, R>) -> String {
    entry.path().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()
}
