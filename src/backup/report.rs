//! What `castwork backup` and `castwork restore` show: a progress bar on stderr
//! when it is a terminal, else an `info` log line at most every few seconds, and a
//! plain-text summary at the end.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{BackupSummary, Progress, RestoreSummary};

/// How often progress is logged when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Shows [`Progress`] on stderr.
pub struct ProgressReporter {
    bar: Option<ProgressBar>,
    last_log: Instant,
    operation: &'static str,
}

impl ProgressReporter {
    /// A bar when stderr is a terminal, log lines otherwise; `operation` names
    /// what runs (`backup`, `restore`) in the log lines.
    pub fn new(operation: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let template = "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} rows (eta {eta}) {msg}";
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self { bar, last_log: Instant::now(), operation }
    }

    /// Shows `progress`.
    pub fn update(&mut self, progress: &Progress) {
        if let Some(bar) = &self.bar {
            bar.set_length(progress.total);
            bar.set_position(progress.processed);
            bar.set_message(progress.message.clone());
        } else if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            let percent = (progress.total > 0).then(|| progress.processed * 100 / progress.total);
            tracing::info!(
                operation = self.operation,
                processed = progress.processed,
                total = progress.total,
                percent,
                step = %progress.message,
                "progress"
            );
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn rows_table(text: &mut String, tables: &[(String, u64)]) {
    let width = tables.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    for (name, rows) in tables {
        let _ = writeln!(text, "  {name:<width$}  {rows:>10}");
    }
}

/// The summary printed by `castwork backup`.
pub fn render_backup(summary: &BackupSummary, elapsed: Duration) -> String {
    let mut text = String::new();
    let rows: u64 = summary.tables.iter().map(|(_, n)| n).sum();
    let _ = writeln!(text, "backup written: {}", summary.path.display());
    let _ = writeln!(
        text,
        "  {} bytes, {rows} rows in {:.2} s, schema {}, {}",
        summary.bytes,
        elapsed.as_secs_f64(),
        summary.schema_version,
        if summary.encrypted { "encrypted" } else { "NOT encrypted (backup.encryption_key is empty)" }
    );
    let _ = writeln!(text, "  sha256 {}", summary.sha256);
    rows_table(&mut text, &summary.tables);
    for path in &summary.pruned {
        let _ = writeln!(text, "deleted old backup: {}", path.display());
    }
    text
}

/// The summary printed by `castwork restore`.
pub fn render_restore(archive: &Path, summary: &RestoreSummary, elapsed: Duration) -> String {
    let mut text = String::new();
    let rows: u64 = summary.tables.iter().map(|(_, n)| n).sum();
    let _ = writeln!(text, "restored {}", archive.display());
    let _ = writeln!(
        text,
        "  {rows} rows in {:.2} s; taken {} on {}, schema {}{}",
        elapsed.as_secs_f64(),
        summary.created_at,
        summary.source_engine,
        summary.schema_version,
        if summary.encrypted { ", encrypted" } else { "" }
    );
    rows_table(&mut text, &summary.tables);
    text
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn summaries_name_the_archive_and_every_table() {
        let summary = BackupSummary {
            path: PathBuf::from("/data/backups/castwork-20260101T000000.000Z.tar"),
            bytes: 1234,
            tables: vec![("items".to_owned(), 2000), ("users".to_owned(), 1)],
            schema_version: "m20261201_200000_create_jobs".to_owned(),
            encrypted: false,
            sha256: "ab".repeat(32),
            created_at: "2026-01-01T00:00:00.000Z".to_owned(),
            pruned: vec![PathBuf::from("/data/backups/old.tar")],
        };
        let text = render_backup(&summary, Duration::from_millis(1500));
        assert!(
            text.starts_with("backup written: /data/backups/castwork-20260101T000000.000Z.tar\n"),
            "{text}"
        );
        assert!(text.contains("2001 rows in 1.50 s") && text.contains("NOT encrypted"), "{text}");
        assert!(text.contains("  items        2000\n") && text.contains("deleted old backup"), "{text}");
        let restored = RestoreSummary {
            tables: summary.tables.clone(),
            schema_version: summary.schema_version.clone(),
            created_at: summary.created_at.clone(),
            source_engine: "sqlite".to_owned(),
            encrypted: true,
        };
        let text = render_restore(Path::new("a.tar.cwenc"), &restored, Duration::from_secs(2));
        assert!(
            text.contains("restored a.tar.cwenc\n  2001 rows in 2.00 s") && text.contains(", encrypted"),
            "{text}"
        );
    }
}
