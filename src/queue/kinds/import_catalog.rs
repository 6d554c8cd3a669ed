//! `import_catalog`: the Explore import ([`crate::explore::import`], the same path as
//! `castwork import`) as a job.
//!
//! Payload, exactly one of `path` and `lines`:
//! - `{"path": "2026-01/catalog.jsonl.gz", "batch_size": 2000}`: a JSON Lines file
//!   (plain or gzip) under the import directory (`queue.import_dir`; empty:
//!   `<data_dir>/imports`). The path is relative, has no `..`, and must resolve
//!   (symbolic links followed) to a regular file inside that directory; this is
//!   checked when the job is submitted (422) and again when it runs (a fatal error:
//!   the node running it may not have the file).
//! - `{"lines": "<JSON Lines text>", "batch_size": 2000}`: the lines themselves,
//!   within `queue.max_payload_bytes`.
//!
//! `batch_size` (lines per transaction, 1 to 100,000) defaults to 2000.
//!
//! **Progress** counts lines (blank and rejected ones included): the total is the
//! input's line count, from a first pass over it (for gzip that pass decompresses:
//! about the cost of reading), kept in the checkpoint so that a later attempt does
//! not count again.
//!
//! **Checkpoint** after every batch, written in the batch's own transaction (fenced
//! by the attempt number, see [`save_checkpoint_in`]): the lines done and the counts
//! so far. A batch and its checkpoint commit together or not at all, so a
//! redelivered job skips exactly the committed lines and adds to exactly their
//! counts: its result equals an uninterrupted run's, each line counted once, in the
//! class it had when its batch committed (an item a lost attempt inserted counts as
//! `inserted`, not as `unchanged`). The input must stay the same between attempts.
//!
//! **Cancellation** is honoured between batches; the committed batches stay
//! (importing again completes the catalogue: their items count as `unchanged`).
//!
//! Result: `{"inserted", "updated", "unchanged", "rejected", "rejected_lines": [{"line",
//! "reason"}, ...] (the first 100), "lines", "resumed_from_line"}`.

use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use futures::future::BoxFuture;
use sea_orm::{DatabaseConnection, DatabaseTransaction};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::KindDeps;
use super::support::{
    CheckpointError, MAX_BATCH_SIZE, fatal_payload, finish, optional_str, optional_u64, save_checkpoint_in,
};
use crate::config::Settings;
use crate::explore::ChangeBus;
use crate::explore::import::{
    self, BatchReport, ImportError, ImportObserver, ImportOptions, Rejected, import_path, import_reader,
};
use crate::queue::handler::{FieldErrors, JobContext, JobError, JobHandler, field, only_fields};
use crate::queue::model::Progress;

/// Lines per batch when the payload names none.
pub const DEFAULT_BATCH_SIZE: u64 = 2000;
/// Rejected lines listed in the result (all are counted).
pub const LISTED_REJECTIONS: usize = 100;

/// The `import_catalog` kind.
#[derive(Clone)]
pub struct ImportCatalog {
    import_dir: PathBuf,
    db: DatabaseConnection,
    changes: ChangeBus,
}

/// The directory `import_catalog` reads files from.
pub fn import_dir(settings: &Settings) -> PathBuf {
    if settings.queue.import_dir.is_empty() {
        settings.data_dir.join("imports")
    } else {
        PathBuf::from(&settings.queue.import_dir)
    }
}

/// What to import.
enum Source<'a> {
    File(PathBuf),
    Lines(&'a str),
}

struct Request<'a> {
    source: Source<'a>,
    batch_size: u64,
}

/// The checkpoint, and the tally the result is made of.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct Tally {
    /// Lines of the input done (the import resumes after them).
    lines: u64,
    inserted: u64,
    updated: u64,
    unchanged: u64,
    rejected: u64,
    rejected_lines: Vec<Rejected>,
    /// Lines of the input in all.
    total: Option<u64>,
}

impl Tally {
    /// This tally with `batch` added.
    fn after(&self, batch: &BatchReport<'_>) -> Self {
        let mut next = self.clone();
        next.lines = batch.lines_read;
        next.inserted += batch.inserted;
        next.updated += batch.updated;
        next.unchanged += batch.unchanged;
        next.rejected += batch.rejected.len() as u64;
        let room = LISTED_REJECTIONS.saturating_sub(next.rejected_lines.len());
        next.rejected_lines.extend(batch.rejected.iter().take(room).cloned());
        next
    }
}

impl ImportCatalog {
    /// The kind over the node's database and Explore change bus.
    pub fn new(deps: &KindDeps) -> Self {
        Self {
            import_dir: import_dir(&deps.settings),
            db: deps.db.clone(),
            changes: deps.explore.changes().clone(),
        }
    }

    fn parse<'a>(&self, payload: &'a Value) -> Result<Request<'a>, FieldErrors> {
        only_fields(payload, &["path", "lines", "batch_size"])?;
        let mut errors = FieldErrors::new();
        let batch_size = optional_u64(payload, "batch_size", 1..=MAX_BATCH_SIZE, &mut errors)
            .unwrap_or(DEFAULT_BATCH_SIZE);
        let given =
            ["path", "lines"].iter().filter(|name| field(payload, name).is_some_and(|v| !v.is_null()));
        if given.count() != 1 {
            errors.insert(
                "payload".to_owned(),
                "give exactly one of path (a file under the import directory) and lines (JSON Lines text)"
                    .to_owned(),
            );
        }
        let mut source = None;
        if let Some(path) = optional_str(payload, "path", &mut errors) {
            match resolve(&self.import_dir, path) {
                Ok(file) => source = Some(Source::File(file)),
                Err(message) => {
                    errors.insert("payload.path".to_owned(), message);
                }
            }
        }
        if let Some(lines) = optional_str(payload, "lines", &mut errors) {
            if lines.trim().is_empty() {
                errors.insert("payload.lines".to_owned(), "must hold at least one line".to_owned());
            }
            source = Some(Source::Lines(lines));
        }
        finish(errors)?;
        let source = source
            .ok_or_else(|| FieldErrors::from([("payload".to_owned(), "nothing to import".to_owned())]))?;
        Ok(Request { source, batch_size })
    }

    async fn import(self, ctx: JobContext) -> Result<Value, JobError> {
        let request = self.parse(&ctx.payload).map_err(|errors| fatal_payload(&errors))?;
        let start: Tally = match &ctx.checkpoint {
            Some(checkpoint) => serde_json::from_value(checkpoint.clone())
                .map_err(|e| JobError::Fatal(format!("the job's checkpoint is unreadable: {e}")))?,
            None => Tally::default(),
        };
        let total = match start.total {
            Some(total) => total,
            None => {
                ctx.progress(0, None, Some("counting lines".to_owned())).await?;
                count_lines(&request.source).await?
            }
        };
        ctx.progress(start.lines, Some(total), Some("importing".to_owned())).await?;
        let resumed_from = start.lines;
        let observer =
            JobObserver { ctx: &ctx, total, tally: Mutex::new(Tally { total: Some(total), ..start }) };
        let options = ImportOptions {
            batch_size: usize::try_from(request.batch_size).unwrap_or(usize::MAX),
            skip_lines: resumed_from,
        };
        let imported = match &request.source {
            Source::File(path) => import_path(&self.db, &self.changes, path, &options, &observer).await,
            Source::Lines(text) => {
                let reader = std::io::Cursor::new(text.as_bytes().to_vec());
                import_reader(&self.db, &self.changes, reader, &options, &observer).await
            }
        };
        match imported {
            Ok(_) => {}
            Err(ImportError::Stopped(reason)) => {
                return Err(match reason.downcast::<JobError>() {
                    Ok(error) => *error,
                    Err(other) => JobError::Failed(other.to_string()),
                });
            }
            Err(error @ ImportError::Io { .. }) => return Err(JobError::Fatal(error.to_string())),
            Err(error @ ImportError::Database(_)) => return Err(JobError::Failed(error.to_string())),
        }
        let tally = observer.tally.into_inner().unwrap_or_else(|p| p.into_inner());
        Ok(json!({
            "inserted": tally.inserted,
            "updated": tally.updated,
            "unchanged": tally.unchanged,
            "rejected": tally.rejected,
            "rejected_lines": tally.rejected_lines,
            "lines": tally.lines,
            "resumed_from_line": resumed_from,
        }))
    }
}

impl JobHandler for ImportCatalog {
    fn kind(&self) -> &'static str {
        "import_catalog"
    }

    fn validate(&self, payload: &Value) -> Result<(), FieldErrors> {
        self.parse(payload).map(|_| ())
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<Value, JobError>> {
        Box::pin(self.clone().import(ctx))
    }
}

/// `relative` inside `dir`, or why not (in words for the submitter).
fn resolve(dir: &Path, relative: &str) -> Result<PathBuf, String> {
    if relative.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let path = Path::new(relative);
    if path.has_root() || path.components().any(|c| matches!(c, Component::Prefix(_) | Component::RootDir)) {
        return Err("must be relative to the import directory (queue.import_dir), not absolute".to_owned());
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err("must not contain '..'".to_owned());
    }
    let dir = dir.canonicalize().map_err(|_| {
        format!("the import directory {} does not exist on this node (queue.import_dir)", dir.display())
    })?;
    let file = dir.join(path).canonicalize().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no such file in the import directory".to_owned(),
        _ => format!("cannot be opened: {e}"),
    })?;
    if !file.starts_with(&dir) {
        return Err("leads outside the import directory (through a symbolic link)".to_owned());
    }
    match std::fs::metadata(&file) {
        Ok(meta) if meta.is_file() => Ok(file),
        Ok(_) => Err("is not a regular file".to_owned()),
        Err(e) => Err(format!("cannot be opened: {e}")),
    }
}

/// The lines of `source`, as the import numbers them.
async fn count_lines(source: &Source<'_>) -> Result<u64, JobError> {
    match source {
        Source::Lines(text) => import::count_lines(text.as_bytes())
            .map_err(|e| JobError::Fatal(format!("the lines cannot be read: {e}"))),
        Source::File(path) => {
            let path = path.clone();
            let counted = tokio::task::spawn_blocking(move || {
                let file = std::fs::File::open(&path)?;
                import::count_lines(std::io::BufReader::with_capacity(256 * 1024, file))
            })
            .await
            .map_err(|e| JobError::Failed(format!("counting the lines failed: {e}")))?;
            counted.map_err(|e| JobError::Fatal(format!("the file cannot be read: {e}")))
        }
    }
}

/// Keeps the job's checkpoint in each batch's transaction, and reports and stops
/// after each commit.
struct JobObserver<'c> {
    ctx: &'c JobContext,
    total: u64,
    /// What the committed batches (and the earlier attempts) did.
    tally: Mutex<Tally>,
}

impl JobObserver<'_> {
    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ImportObserver for JobObserver<'_> {
    fn before_commit<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        batch: &'a BatchReport<'a>,
    ) -> BoxFuture<'a, Result<(), ImportError>> {
        let next = self.tally().after(batch);
        Box::pin(async move {
            let progress = Progress { processed: next.lines, total: Some(self.total), message: None };
            let checkpoint = serde_json::to_value(&next).unwrap_or(Value::Null);
            save_checkpoint_in(txn, &self.ctx.job_id, self.ctx.attempt, &progress, &checkpoint).await.map_err(
                |error| match error {
                    CheckpointError::Database(err) => ImportError::Database(err),
                    superseded => ImportError::Stopped(Box::new(JobError::from(superseded))),
                },
            )
        })
    }

    fn committed<'a>(&'a self, batch: &'a BatchReport<'a>) -> BoxFuture<'a, Result<(), ImportError>> {
        {
            let mut tally = self.tally();
            *tally = tally.after(batch);
        }
        Box::pin(async move {
            self.ctx
                .progress(batch.lines_read, Some(self.total), None)
                .await
                .map_err(|error| ImportError::Stopped(Box::new(error)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_import_directory() {
        let dir = crate::db::testing::temp_dir();
        std::fs::create_dir_all(dir.join("imports/sub")).unwrap();
        std::fs::write(dir.join("imports/sub/a.jsonl"), "{}\n").unwrap();
        std::fs::write(dir.join("secret.jsonl"), "{}\n").unwrap();
        let imports = dir.join("imports");
        assert!(resolve(&imports, "sub/a.jsonl").unwrap().ends_with("sub/a.jsonl"));
        assert!(resolve(&imports, "./sub/a.jsonl").is_ok());
        assert!(resolve(&imports, "../secret.jsonl").unwrap_err().contains(".."));
        assert!(resolve(&imports, "sub/../../secret.jsonl").unwrap_err().contains(".."));
        let absolute = dir.join("secret.jsonl").display().to_string();
        assert!(resolve(&imports, &absolute).unwrap_err().contains("not absolute"));
        assert!(resolve(&imports, "missing.jsonl").unwrap_err().contains("no such file"));
        assert!(resolve(&imports, "sub").unwrap_err().contains("not a regular file"));
        assert!(resolve(&imports, "").is_err());
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.join("secret.jsonl"), imports.join("link.jsonl")).unwrap();
            assert!(resolve(&imports, "link.jsonl").unwrap_err().contains("outside the import directory"));
            std::os::unix::fs::symlink(imports.join("sub/a.jsonl"), imports.join("inside.jsonl")).unwrap();
            assert!(resolve(&imports, "inside.jsonl").is_ok());
        }
        assert!(resolve(&dir.join("nowhere"), "a.jsonl").unwrap_err().contains("does not exist"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_tally_adds_batches_and_lists_the_first_rejections() {
        let rejected: Vec<Rejected> =
            (1..=150).map(|line| Rejected { line, reason: "bad".to_owned() }).collect();
        let batch = BatchReport {
            lines_read: 200,
            bytes_read: 0,
            inserted: 30,
            updated: 10,
            unchanged: 10,
            rejected: &rejected,
        };
        let tally = Tally::default().after(&batch).after(&BatchReport { lines_read: 400, ..batch });
        assert_eq!((tally.lines, tally.inserted, tally.updated, tally.unchanged), (400, 60, 20, 20));
        assert_eq!(tally.rejected, 300);
        assert_eq!(tally.rejected_lines.len(), LISTED_REJECTIONS);
        let round: Tally = serde_json::from_value(serde_json::to_value(&tally).unwrap()).unwrap();
        assert_eq!(round.rejected, 300);
    }
}
