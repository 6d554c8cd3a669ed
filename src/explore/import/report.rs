//! What `castwork import` shows: a progress bar when stderr is a terminal,
//! periodic log lines otherwise, and a plain-text summary at the end.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sea_orm::DatabaseConnection;

use futures::future::BoxFuture;

use super::{BatchReport, ImportError, ImportObserver, ImportOptions, ImportSummary, import_path};
use crate::explore::ChangeBus;

/// Rejected lines listed in the summary text.
pub const LISTED_IN_SUMMARY: usize = 20;

/// Appended to the summary when the import changed items: running servers cannot
/// hear this process's changes.
pub const CACHE_HINT: &str = "note: running castwork servers show the import once their outbox relay has \
published its changes (within queue.outbox_poll_ms while RabbitMQ, or the node itself, takes them)\n";

/// How often [`LogProgress`] logs.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Imports the file at `path`, showing progress on stderr.
pub async fn import_path_with_progress(
    db: &DatabaseConnection,
    changes: &ChangeBus,
    path: &Path,
    options: &ImportOptions,
) -> Result<ImportSummary, ImportError> {
    let total_bytes = std::fs::metadata(path).ok().map(|m| m.len());
    if std::io::stderr().is_terminal() {
        let progress = BarProgress::new(total_bytes);
        let result = import_path(db, changes, path, options, &progress).await;
        progress.bar.finish_and_clear();
        result
    } else {
        import_path(db, changes, path, options, &LogProgress::new(total_bytes)).await
    }
}

/// A progress bar over the input's bytes, on stderr.
pub struct BarProgress {
    bar: ProgressBar,
}

impl BarProgress {
    /// A bar to `total_bytes`, or a spinner when the size is unknown.
    pub fn new(total_bytes: Option<u64>) -> Self {
        let bar = ProgressBar::with_draw_target(total_bytes, ProgressDrawTarget::stderr());
        let template = "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} (eta {eta}) {msg}";
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar }
    }
}

impl ImportObserver for BarProgress {
    fn committed<'a>(&'a self, batch: &'a BatchReport<'a>) -> BoxFuture<'a, Result<(), ImportError>> {
        self.bar.set_position(batch.bytes_read);
        self.bar.set_message(format!("{} lines", batch.lines_read));
        Box::pin(std::future::ready(Ok(())))
    }
}

/// An `info` log line at most every few seconds.
pub struct LogProgress {
    total_bytes: Option<u64>,
    last: Mutex<Instant>,
}

impl LogProgress {
    /// Logs progress against `total_bytes` when known.
    pub fn new(total_bytes: Option<u64>) -> Self {
        Self { total_bytes, last: Mutex::new(Instant::now()) }
    }
}

impl LogProgress {
    fn log(&self, lines_read: u64, bytes_read: u64) {
        let Ok(mut last) = self.last.lock() else { return };
        if last.elapsed() < LOG_EVERY {
            return;
        }
        *last = Instant::now();
        let percent = self.total_bytes.filter(|&t| t > 0).map(|t| (bytes_read * 100 / t).min(100));
        tracing::info!(lines = lines_read, bytes = bytes_read, percent, "import progress");
    }
}

impl ImportObserver for LogProgress {
    fn committed<'a>(&'a self, batch: &'a BatchReport<'a>) -> BoxFuture<'a, Result<(), ImportError>> {
        self.log(batch.lines_read, batch.bytes_read);
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The summary printed at the end of `castwork import`.
pub fn render_summary(source: &str, summary: &ImportSummary) -> String {
    let mut text = String::new();
    let seconds = summary.elapsed.as_secs_f64();
    let _ = writeln!(
        text,
        "imported {source}: {} lines in {seconds:.2} s ({:.0} items/s)",
        summary.lines,
        summary.items_per_second()
    );
    for (label, count) in [
        ("inserted", summary.inserted),
        ("updated", summary.updated),
        ("unchanged", summary.unchanged),
        ("rejected", summary.rejected_count),
    ] {
        let _ = writeln!(text, "  {label:<10} {count:>8}");
    }
    if !summary.rejected.is_empty() {
        let _ = writeln!(text, "rejected lines (first {}):", summary.rejected.len().min(LISTED_IN_SUMMARY));
        for rejected in summary.rejected.iter().take(LISTED_IN_SUMMARY) {
            let _ = writeln!(text, "  line {}: {}", rejected.line, rejected.reason);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explore::import::Rejected;

    #[test]
    fn summary_lists_counts_and_first_rejections() {
        let summary = ImportSummary {
            inserted: 3,
            updated: 1,
            unchanged: 0,
            rejected: (1..=25).map(|line| Rejected { line, reason: "bad".into() }).collect(),
            rejected_count: 25,
            lines: 29,
            elapsed: Duration::from_secs(2),
        };
        let text = render_summary("x.jsonl", &summary);
        assert!(text.starts_with("imported x.jsonl: 29 lines in 2.00 s (2 items/s)"), "{text}");
        assert!(text.contains("  rejected         25\n"), "{text}");
        assert!(text.contains("  line 20: bad\n") && !text.contains("line 21:"), "{text}");
    }
}
