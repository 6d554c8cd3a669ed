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
//!
//! An [`ImportObserver`] hears of every batch twice: inside its transaction, just
//! before the commit (what it writes there commits or rolls back with the batch: the
//! `import_catalog` job keeps its checkpoint there), and after the commit (the CLI's
//! progress bar, the job's progress and cancellation); either may stop the import.
//! [`ImportOptions::skip_lines`] resumes an import after the lines an earlier run
//! committed: they are read (to find the position) but not parsed, and batches after
//! them are cut exactly where the earlier run cut them.

mod parse;
pub mod report;
mod store;
#[cfg(test)]
mod tests;

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait, QuerySelect};
use serde::{Deserialize, Serialize, Serializer};
use tokio::sync::mpsc;

use super::ChangeBus;
use crate::db::entities::item;

/// The sample catalogue embedded in the binary: 2,000 arXiv papers across all 8
/// groups (`scripts/make-sample.py`; licence in `assets/sample/ATTRIBUTION.md`).
pub static SAMPLE_CATALOG: &[u8] = include_bytes!("../../assets/sample/catalog.jsonl.gz");

/// At most this many rejected lines are listed in [`ImportSummary::rejected`];
/// [`ImportSummary::rejected_count`] counts them all.
pub const MAX_LISTED_REJECTIONS: usize = 1000;

/// How an import runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// Lines per batch (one transaction each); 0 counts as 1.
    pub batch_size: usize,
    /// The first lines of the input an earlier run of the same import (with the same
    /// batch size) already committed, up to the end of one of its batches: they are
    /// read past, not imported. Line numbers and [`ImportSummary::lines`] still count
    /// them; the other counts of the summary do not.
    pub skip_lines: u64,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self { batch_size: 2000, skip_lines: 0 }
    }
}

/// A line that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// One batch of an import, as an [`ImportObserver`] hears of it.
#[derive(Debug, Clone, Copy)]
pub struct BatchReport<'a> {
    /// Lines read from the start of the input to the end of this batch (skipped ones
    /// included).
    pub lines_read: u64,
    /// Bytes of the input read so far (compressed bytes for gzip, so a file's size is
    /// the total).
    pub bytes_read: u64,
    /// What this batch did.
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// This batch's rejected lines.
    pub rejected: &'a [Rejected],
}

/// Hears of each batch of an import; both calls default to doing nothing.
pub trait ImportObserver: Send + Sync {
    /// Inside the batch's transaction, just before it commits: what is written
    /// through `txn` commits with the batch or not at all. An error rolls the batch
    /// back and stops the import with that error.
    fn before_commit<'a>(
        &'a self,
        _txn: &'a DatabaseTransaction,
        _batch: &'a BatchReport<'a>,
    ) -> BoxFuture<'a, Result<(), ImportError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// After the batch committed (and its changes were published). An error stops
    /// the import there (what was committed stays).
    fn committed<'a>(&'a self, _batch: &'a BatchReport<'a>) -> BoxFuture<'a, Result<(), ImportError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Nothing to hear.
impl ImportObserver for () {}

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
    /// An [`ImportObserver`] stopped the import (e.g. a job was cancelled).
    #[error("the import was stopped: {0}")]
    Stopped(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Imports JSON Lines (plain or gzip) from `reader`. The reader is moved to a
/// blocking thread, hence `'static`.
pub async fn import_reader<R>(
    db: &DatabaseConnection,
    changes: &ChangeBus,
    reader: R,
    options: &ImportOptions,
    observer: &dyn ImportObserver,
) -> Result<ImportSummary, ImportError>
where
    R: BufRead + Send + 'static,
{
    run(db, changes, reader, options, observer, "input").await
}

/// Imports the JSON Lines file (plain or gzip) at `path`.
pub async fn import_path(
    db: &DatabaseConnection,
    changes: &ChangeBus,
    path: &Path,
    options: &ImportOptions,
    observer: &dyn ImportObserver,
) -> Result<ImportSummary, ImportError> {
    let label = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| ImportError::Io { path: label.clone(), source })?;
    let reader = std::io::BufReader::with_capacity(256 * 1024, file);
    run(db, changes, reader, options, observer, &label).await
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

#[tracing::instrument(skip_all, fields(source = %label, batch_size = options.batch_size, skip_lines = options.skip_lines))]
async fn run<R>(
    db: &DatabaseConnection,
    changes: &ChangeBus,
    reader: R,
    options: &ImportOptions,
    observer: &dyn ImportObserver,
    label: &str,
) -> Result<ImportSummary, ImportError>
where
    R: BufRead + Send + 'static,
{
    let started = Instant::now();
    let batch_size = options.batch_size.max(1);
    let skip_lines = options.skip_lines;
    let (tx, mut rx) = mpsc::channel(2);
    // Joined below on every path, so the thread never outlives the import.
    let reading =
        tokio::task::spawn_blocking(move || parse::read_batches(reader, batch_size, skip_lines, &tx));

    let mut summary = ImportSummary { lines: skip_lines, ..ImportSummary::default() };
    let mut failure = None;
    while let Some(batch) = rx.recv().await {
        let parse::Batch { items, rejected, lines_read, bytes_read } = batch;
        let (outcome, committed) =
            match write_batch(db, items, &rejected, lines_read, bytes_read, observer).await {
                Ok(written) => written,
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            };
        if !committed.is_empty() {
            changes.publish(committed).await;
        }
        crate::metrics::import_items("inserted", outcome.inserted);
        crate::metrics::import_items("updated", outcome.updated);
        crate::metrics::import_items("unchanged", outcome.unchanged);
        crate::metrics::import_items("rejected", rejected.len() as u64);
        summary.inserted += outcome.inserted;
        summary.updated += outcome.updated;
        summary.unchanged += outcome.unchanged;
        summary.rejected_count += rejected.len() as u64;
        summary.lines = lines_read;
        let report = batch_report(&outcome, &rejected, lines_read, bytes_read);
        let heard = observer.committed(&report).await;
        for line in rejected {
            tracing::debug!(line = line.line, reason = %line.reason, "line rejected");
            if summary.rejected.len() < MAX_LISTED_REJECTIONS {
                summary.rejected.push(line);
            }
        }
        if let Err(error) = heard {
            failure = Some(error);
            break;
        }
    }
    // Closing the channel stops the reader if the writer gave up first.
    drop(rx);
    let read = reading.await;
    if let Some(error) = failure {
        return Err(error);
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

fn batch_report<'a>(
    outcome: &store::Outcome,
    rejected: &'a [Rejected],
    lines_read: u64,
    bytes_read: u64,
) -> BatchReport<'a> {
    BatchReport {
        lines_read,
        bytes_read,
        inserted: outcome.inserted,
        updated: outcome.updated,
        unchanged: outcome.unchanged,
        rejected,
    }
}

/// Writes one batch, lets `observer` write in its transaction, and commits.
async fn write_batch(
    db: &DatabaseConnection,
    items: Vec<parse::Parsed>,
    rejected: &[Rejected],
    lines_read: u64,
    bytes_read: u64,
    observer: &dyn ImportObserver,
) -> Result<(store::Outcome, Vec<super::ItemChange>), ImportError> {
    let txn = store::begin(db).await?;
    let (outcome, committed) = store::write_batch(&txn, items).await?;
    observer.before_commit(&txn, &batch_report(&outcome, rejected, lines_read, bytes_read)).await?;
    txn.commit().await?;
    Ok((outcome, committed))
}

/// Counts the lines of a JSON Lines input (plain or gzip) as an import numbers them:
/// blank lines included, a last line without a newline included. Blocking.
pub fn count_lines<R: BufRead>(input: R) -> std::io::Result<u64> {
    parse::count_lines(input)
}
