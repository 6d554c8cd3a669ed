//! The writing half of a backup, on a blocking thread: rows arrive table by table
//! from the snapshot reader ([`super::create`]) and are staged as one gzip JSON
//! Lines file per table beside the archive (a tar entry's size must be known
//! before its bytes, and the manifest, which comes first, needs every table's
//! digest). Then the tar (manifest, then the table files) is streamed through the
//! optional [`SealWriter`] into a temporary file, which is synced and renamed into
//! place. Nothing holds more than a batch of rows or a chunk of the archive.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::crypt::SealWriter;
use super::manifest::{MANIFEST_PATH, Manifest, TableEntry, table_file};
use super::schema::Column;
use super::{BackupError, files};

/// What the snapshot reader sends.
pub enum Feed {
    /// The rows that follow belong to this table.
    Table { name: String, columns: Vec<Column> },
    /// Rows of the current table, each value in column order.
    Rows(Vec<Vec<Json>>),
    /// Every table was sent: write the archive.
    Done,
}

/// Where and how to write.
pub struct Plan {
    pub dir: PathBuf,
    /// The archive's final name, e.g. `castwork-20260101T030000.000Z.tar`.
    pub file_name: String,
    pub key: Option<String>,
    /// The manifest, less its table entries.
    pub manifest: Manifest,
    pub keep: usize,
}

/// What was written.
pub struct Written {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    pub manifest: Manifest,
    pub pruned: Vec<PathBuf>,
}

struct Staged {
    entry: TableEntry,
    path: PathBuf,
    out: GzEncoder<BufWriter<File>>,
    digest: Sha256,
}

impl Staged {
    fn finish(self) -> Result<(TableEntry, PathBuf), BackupError> {
        let Self { mut entry, path, out, digest } = self;
        let file = out.finish().and_then(|w| w.into_inner().map_err(io::IntoInnerError::into_error));
        file.map_err(|source| BackupError::io("write", &path, source))?;
        entry.sha256 = hex(&digest.finalize());
        Ok((entry, path))
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Receives the rows, writes the archive. Runs on a blocking thread.
pub fn write(
    plan: Plan,
    mut feed: mpsc::Receiver<Feed>,
    cancel: &CancellationToken,
) -> Result<Written, BackupError> {
    let Plan { dir, file_name, key, mut manifest, keep } = plan;
    let staging = dir.join(format!(".{file_name}.staging"));
    let partial = dir.join(format!(".{file_name}.partial"));
    let _cleanup = files::RemoveOnDrop(vec![staging.clone(), partial.clone()]);
    files::create_private_dir(&staging)?;

    let mut current: Option<Staged> = None;
    let mut staged = Vec::new();
    let mut line = Vec::with_capacity(4096);
    loop {
        match feed.blocking_recv() {
            // the reader stopped without `Done`: it failed or was cancelled, and says why
            None => return Err(BackupError::Cancelled),
            Some(Feed::Done) => break,
            Some(Feed::Table { name, columns }) => {
                if let Some(table) = current.take() {
                    staged.push(table.finish()?);
                }
                let path = staging.join(format!("{name}.jsonl.gz"));
                let file = files::create_private_file(&path)?;
                let out = GzEncoder::new(BufWriter::with_capacity(256 * 1024, file), Compression::fast());
                let file = table_file(&name);
                let entry = TableEntry { name, rows: 0, sha256: String::new(), file, columns };
                current = Some(Staged { entry, path, out, digest: Sha256::new() });
            }
            Some(Feed::Rows(rows)) => {
                let Some(table) = current.as_mut() else {
                    return Err(BackupError::Internal("rows came before their table".to_owned()));
                };
                for row in rows {
                    encode_row(&table.entry.columns, &row, &mut line)?;
                    table.digest.update(&line);
                    table
                        .out
                        .write_all(&line)
                        .map_err(|source| BackupError::io("write", &table.path, source))?;
                    table.entry.rows += 1;
                }
            }
        }
    }
    if let Some(table) = current.take() {
        staged.push(table.finish()?);
    }
    manifest.tables = staged.iter().map(|(entry, _)| entry.clone()).collect();

    let file = files::create_private_file(&partial)?;
    let counted = Counted { inner: file, digest: Sha256::new(), bytes: 0 };
    let counted = match key {
        Some(key) => {
            let sealed = SealWriter::new(BufWriter::with_capacity(256 * 1024, counted), &key)?;
            let mut tar = tar::Builder::new(sealed);
            append_all(&mut tar, &manifest, &staged, cancel).map_err(|e| e.at(&partial))?;
            let sealed = tar.into_inner().map_err(|source| BackupError::io("write", &partial, source))?;
            let buffered = sealed.finish().map_err(|source| BackupError::io("write", &partial, source))?;
            buffered.into_inner().map_err(|e| BackupError::io("write", &partial, e.into_error()))?
        }
        None => {
            let mut tar = tar::Builder::new(BufWriter::with_capacity(256 * 1024, counted));
            append_all(&mut tar, &manifest, &staged, cancel).map_err(|e| e.at(&partial))?;
            let buffered = tar.into_inner().map_err(|source| BackupError::io("write", &partial, source))?;
            buffered.into_inner().map_err(|e| BackupError::io("write", &partial, e.into_error()))?
        }
    };
    let Counted { inner: file, digest, bytes } = counted;
    file.sync_all().map_err(|source| BackupError::io("sync", &partial, source))?;
    drop(file);
    let path = dir.join(&file_name);
    if path.exists() {
        return Err(BackupError::io("create", &path, io::Error::from(io::ErrorKind::AlreadyExists)));
    }
    fs::rename(&partial, &path).map_err(|source| BackupError::io("rename", &partial, source))?;
    files::sync_dir(&dir);
    let pruned = files::prune(&dir, keep);
    Ok(Written { path, bytes, sha256: hex(&digest.finalize()), manifest, pruned })
}

/// One row as a JSON object, column → value, and a newline.
fn encode_row(columns: &[Column], row: &[Json], line: &mut Vec<u8>) -> Result<(), BackupError> {
    if row.len() != columns.len() {
        return Err(BackupError::Internal("a row does not match its table's columns".to_owned()));
    }
    line.clear();
    line.push(b'{');
    for (i, (column, value)) in columns.iter().zip(row).enumerate() {
        if i > 0 {
            line.push(b',');
        }
        let encoded = serde_json::to_writer(&mut *line, &column.name).and_then(|()| {
            line.push(b':');
            serde_json::to_writer(&mut *line, value)
        });
        encoded.map_err(|e| BackupError::Internal(format!("a value could not be encoded: {e}")))?;
    }
    line.extend_from_slice(b"}\n");
    Ok(())
}

/// A failure while appending, before the archive's path is known to the message.
enum AppendError {
    Io(io::Error),
    Cancelled,
    Backup(BackupError),
}

impl AppendError {
    fn at(self, path: &Path) -> BackupError {
        match self {
            Self::Io(source) => BackupError::io("write", path, source),
            Self::Cancelled => BackupError::Cancelled,
            Self::Backup(e) => e,
        }
    }
}

impl From<io::Error> for AppendError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

fn append_all<W: Write>(
    tar: &mut tar::Builder<W>,
    manifest: &Manifest,
    staged: &[(TableEntry, PathBuf)],
    cancel: &CancellationToken,
) -> Result<(), AppendError> {
    let mtime = chrono::DateTime::parse_from_rfc3339(&manifest.created_at)
        .ok()
        .and_then(|t| u64::try_from(t.timestamp()).ok())
        .unwrap_or(0);
    let text = serde_json::to_vec_pretty(manifest).map_err(|e| {
        AppendError::Backup(BackupError::Internal(format!("the manifest could not be encoded: {e}")))
    })?;
    append(tar, MANIFEST_PATH, text.len() as u64, mtime, text.as_slice())?;
    for (entry, path) in staged {
        if cancel.is_cancelled() {
            return Err(AppendError::Cancelled);
        }
        let file = File::open(path).map_err(|e| AppendError::Backup(BackupError::io("read", path, e)))?;
        let size = file.metadata().map_err(|e| AppendError::Backup(BackupError::io("read", path, e)))?.len();
        append(tar, &entry.file, size, mtime, file.take(size))?;
    }
    tar.finish()?;
    Ok(())
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    mtime: u64,
    data: impl Read,
) -> Result<(), AppendError> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(mtime);
    tar.append_data(&mut header, path, data)?;
    Ok(())
}

/// Counts and hashes what goes to the file.
struct Counted {
    inner: File,
    digest: Sha256,
    bytes: u64,
}

impl Write for Counted {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.digest.update(&data[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
