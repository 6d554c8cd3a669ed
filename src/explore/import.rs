//! Streaming import of the catalogue from JSON Lines, plain or gzip (recognised by
//! its magic bytes, not the file name): one item per line, in the format of the
//! arXiv catalogue (`id, title, body, category, category_code, group, tags,
//! published_at, source_url`; other fields such as `score` are ignored).
//!
//! Memory stays constant: a blocking thread (`import/parse.rs`) reads line by line, parses
//! and validates, and sends batches through a channel of capacity 2 to the async
//! writer (`import/store.rs`), which applies each batch in one transaction. Each item is
//! classified by its [`content_hash`](crate::explore::validate::content_hash):
//! new items are inserted, changed ones updated (version + 1, views and trend kept),
//! identical ones left alone, so a re-import writes nothing. Every insert and
//! update appends an `item.changed` outbox event in the same transaction, and
//! after each commit the batch's [`ItemChange`](super::ItemChange)s (an update's
//! `before` is the row it replaced) are published on the [`ChangeBus`] given, so
//! an import inside a server invalidates that node's cache. An import in another
//! process publishes to a bus nobody in the server listens to: the server sees
//! those changes through the outbox relay (not yet built) or when its cached
//! pages expire.
//!
//! A bad line (invalid JSON, a missing or invalid field, no id) is reported as
//! [`Rejected`] with its line number and skipped; blank lines are skipped silently.
//! When an id appears on several lines the later line is applied after the earlier
//! one, whatever the batch size.

mod parse;
pub mod report;
mod store;
#[cfg(test)]
mod tests;

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use sea_orm::{DatabaseConnection, DbErr, EntityTrait, QuerySelect};
use serde::{Serialize, Serializer};
use tokio::sync::mpsc;

use super::ChangeBus;
use crate::db::entities::item;

/// The sample catalogue embedded in the binary: 2,000 arXiv papers across all 8
/// groups (`scripts/make-sample.py`; licence in `data/ATTRIBUTION.md`).
pub static SAMPLE_CATALOG: &[u8] = include_bytes!("../../data/sample-catalog.jsonl.gz");

/// At most this many rejected lines are listed in [`ImportSummary::rejected`];
/// [`ImportSummary::rejected_count`] counts them all.
pub const MAX_LISTED_REJECTIONS: usize = 1000;

/// How an import runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// Lines per batch (one transaction each); 0 counts as 1.
    pub batch_size: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self { batch_size: 2000 }
    }
}

/// A line that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// 1-based line number in the (decompressed) input.
    pub line: u64,
    /// What is wrong with it, e.g. `tags: at most 20 tags (got 21)`.
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImportSummary {
    /// New items.
    pub inserted: u64,
    /// Existing items whose content changed (version bumped).
    pub updated: u64,
    /// Existing items with identical content (nothing written).
    pub unchanged: u64,
    /// The first [`MAX_LISTED_REJECTIONS`] rejected lines, in input order.
    pub rejected: Vec<Rejected>,
    /// Every rejected line.
    pub rejected_count: u64,
    /// Lines read, blank ones included.
    pub lines: u64,
    /// Wall-clock time (serialized as seconds).
    #[serde(serialize_with = "as_seconds")]
    pub elapsed: Duration,
}

fn as_seconds<S: Serializer>(elapsed: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(elapsed.as_secs_f64())
}

impl ImportSummary {
    /// Items processed (inserted, updated or unchanged) per second.
    pub fn items_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 { (self.inserted + self.updated + self.unchanged) as f64 / seconds } else { 0.0 }
    }
}

/// Told after each committed batch, e.g. to move a progress bar.
pub trait ImportProgress: Send + Sync {
    /// `lines_read` lines and `bytes_read` bytes of the input (compressed bytes for
    /// gzip, so a file's size is the total) are done.
    fn on_batch(&self, lines_read: u64, bytes_read: u64);
}

/// No progress reporting.
impl ImportProgress for () {
    fn on_batch(&self, _lines_read: u64, _bytes_read: u64) {}
}

/// Why an import stopped. Batches committed before the failure stay; running the
/// import again finishes the job (unchanged items are skipped).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input could not be opened or read (or is a corrupt gzip stream).
    #[error("failed to read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// The database failed.
    #[error("database error during import: {0}")]
    Database(#[from] DbErr),
}

/// Imports JSON Lines (plain or gzip) from `reader`. The reader is moved to a
/// blocking thread, hence `'static`.
pub async fn import_reader<R>(
    db: &DatabaseConnection,
    changes: &ChangeBus,
    reader: R,
    options: &ImportOptions,
    progress: &dyn ImportProgress,
) -> Result<ImportSummary, ImportError>
where
    R: BufRead + Send + 'static,
{
    run(db, changes, reader, options, progress, "input").await
}

/// Imports the JSON Lines file (plain or gzip) at `path`.
pub async fn import_path(
    db: &DatabaseConnection,
    changes: &ChangeBus,
    path: &Path,
    options: &ImportOptions,
    progress: &dyn ImportProgress,
) -> Result<ImportSummary, ImportError> {
    let label = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| ImportError::Io { path: label.clone(), source })?;
    let reader = std::io::BufReader::with_capacity(256 * 1024, file);
    run(db, changes, reader, options, progress, &label).await
}

/// When `items` is empty, imports the embedded [`SAMPLE_CATALOG`] and returns what
/// it did; otherwise does nothing and returns `None`.
pub async fn import_sample_if_empty(
    db: &DatabaseConnection,
    changes: &ChangeBus,
) -> Result<Option<ImportSummary>, ImportError> {
    let any: Option<String> =
        item::Entity::find().select_only().column(item::Column::Id).limit(1).into_tuple().one(db).await?;
    if any.is_some() {
        return Ok(None);
    }
    let summary = run(db, changes, SAMPLE_CATALOG, &ImportOptions::default(), &(), "embedded sample").await?;
    Ok(Some(summary))
}

#[tracing::instrument(skip_all, fields(source = %label, batch_size = options.batch_size))]
async fn run<R>(
    db: &DatabaseConnection,
    changes: &ChangeBus,
    reader: R,
    options: &ImportOptions,
    progress: &dyn ImportProgress,
    label: &str,
) -> Result<ImportSummary, ImportError>
where
    R: BufRead + Send + 'static,
{
    let started = Instant::now();
    let batch_size = options.batch_size.max(1);
    let (tx, mut rx) = mpsc::channel(2);
    // Joined below on every path, so the thread never outlives the import.
    let reading = tokio::task::spawn_blocking(move || parse::read_batches(reader, batch_size, &tx));

    let mut summary = ImportSummary::default();
    let mut failure = None;
    while let Some(batch) = rx.recv().await {
        let parse::Batch { items, rejected, lines_read, bytes_read } = batch;
        let outcome = match store::write_batch(db, items).await {
            Ok((outcome, committed)) => {
                if !committed.is_empty() {
                    changes.publish(committed).await;
                }
                outcome
            }
            Err(error) => {
                failure = Some(error);
                break;
            }
        };
        crate::metrics::import_items("inserted", outcome.inserted);
        crate::metrics::import_items("updated", outcome.updated);
        crate::metrics::import_items("unchanged", outcome.unchanged);
        crate::metrics::import_items("rejected", rejected.len() as u64);
        summary.inserted += outcome.inserted;
        summary.updated += outcome.updated;
        summary.unchanged += outcome.unchanged;
        summary.rejected_count += rejected.len() as u64;
        for line in rejected {
            tracing::debug!(line = line.line, reason = %line.reason, "line rejected");
            if summary.rejected.len() < MAX_LISTED_REJECTIONS {
                summary.rejected.push(line);
            }
        }
        summary.lines = lines_read;
        progress.on_batch(lines_read, bytes_read);
    }
    // Closing the channel stops the reader if the writer gave up first.
    drop(rx);
    let read = reading.await;
    if let Some(error) = failure {
        return Err(ImportError::Database(error));
    }
    let io_error = match read {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error),
        Err(join) => Some(std::io::Error::other(format!("the reader thread failed: {join}"))),
    };
    if let Some(source) = io_error {
        return Err(ImportError::Io { path: label.to_owned(), source });
    }
    summary.elapsed = started.elapsed();
    tracing::info!(
        inserted = summary.inserted,
        updated = summary.updated,
        unchanged = summary.unchanged,
        rejected = summary.rejected_count,
        lines = summary.lines,
        elapsed_ms = summary.elapsed.as_millis() as u64,
        "import finished"
    );
    Ok(summary)
}
