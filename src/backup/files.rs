//! The archives' directory: owner-only files, names that sort by time, the
//! temporary files of a backup in progress, and retention.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};

use super::BackupError;

/// Every archive's name starts with this.
pub const PREFIX: &str = "castwork-";
/// An unencrypted archive's extension.
pub const PLAIN_SUFFIX: &str = ".tar";
/// An encrypted archive's extension.
pub const SEALED_SUFFIX: &str = ".tar.cwenc";

/// `castwork-<UTC time>.tar` or `.tar.cwenc`; the time (to the millisecond, fixed
/// width) makes names sort in the order they were taken.
pub fn archive_name(at: DateTime<Utc>, encrypted: bool) -> String {
    let suffix = if encrypted { SEALED_SUFFIX } else { PLAIN_SUFFIX };
    format!("{PREFIX}{}{suffix}", at.format("%Y%m%dT%H%M%S%.3fZ"))
}

/// Whether `name` is an archive written by [`archive_name`].
pub fn is_archive_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else { return false };
    let stamp = rest.strip_suffix(SEALED_SUFFIX).or_else(|| rest.strip_suffix(PLAIN_SUFFIX));
    stamp.is_some_and(|s| s.len() == 20 && NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%S%.3fZ").is_ok())
}

/// Creates `dir` and its parents; on Unix the directory is 0700 (archives hold
/// password hashes).
pub fn create_private_dir(dir: &Path) -> Result<(), BackupError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| BackupError::io("create", dir, source))
}

/// Creates a new file, 0600 on Unix; refuses to replace one.
pub fn create_private_file(path: &Path) -> Result<File, BackupError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(|source| BackupError::io("create", path, source))
}

/// Makes a rename in `dir` durable (Unix); best effort elsewhere.
pub fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(error) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), %error, "failed to sync the backup directory");
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Removes the paths it holds (files or directories) when dropped: the temporary
/// files of a backup that failed, was cancelled, or is done with them.
pub struct RemoveOnDrop(pub Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for path in &self.0 {
            let removed = if path.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
            if let Err(error) = removed
                && error.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), %error, "failed to remove a temporary backup file");
            }
        }
    }
}

/// The archives in `dir`, oldest first.
pub fn archives(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut names: Vec<String> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| is_archive_name(name))
        .collect();
    names.sort();
    Ok(names.into_iter().map(|name| dir.join(name)).collect())
}

/// Deletes the oldest archives beyond the newest `keep` (0: keeps all); returns
/// what it deleted. A failure is logged, not returned: the new archive is written.
pub fn prune(dir: &Path, keep: usize) -> Vec<PathBuf> {
    if keep == 0 {
        return Vec::new();
    }
    let all = match archives(dir) {
        Ok(all) => all,
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "failed to list backups for retention");
            return Vec::new();
        }
    };
    let excess = all.len().saturating_sub(keep);
    let mut pruned = Vec::new();
    for path in all.into_iter().take(excess) {
        match fs::remove_file(&path) {
            Ok(()) => pruned.push(path),
            Err(error) => tracing::warn!(path = %path.display(), %error, "failed to delete an old backup"),
        }
    }
    pruned
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn names_sort_by_time_and_are_recognised() {
        let at = |ms| Utc.timestamp_millis_opt(ms).single().unwrap();
        let a = archive_name(at(1_700_000_000_000), false);
        let b = archive_name(at(1_700_000_000_001), true);
        assert_eq!(a, "castwork-20231114T221320.000Z.tar");
        assert!(a < b);
        assert!(is_archive_name(&a) && is_archive_name(&b));
        for other in
            ["castwork-x.tar", ".castwork-20231114T221320.000Z.tar.partial", "notes.txt", "castwork-.tar"]
        {
            assert!(!is_archive_name(other), "{other}");
        }
    }

    #[test]
    fn retention_keeps_the_newest_and_ignores_other_files() {
        let dir = crate::db::testing::temp_dir();
        for ms in [3, 1, 2, 4] {
            let name =
                archive_name(Utc.timestamp_millis_opt(1_700_000_000_000 + ms).single().unwrap(), ms % 2 == 0);
            fs::write(dir.join(name), b"x").unwrap();
        }
        fs::write(dir.join("keep-me.txt"), b"x").unwrap();
        let pruned = prune(&dir, 2);
        assert_eq!(pruned.len(), 2);
        let left: Vec<String> = archives(&dir)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["castwork-20231114T221320.003Z.tar", "castwork-20231114T221320.004Z.tar.cwenc"]);
        assert!(dir.join("keep-me.txt").exists());
        assert!(prune(&dir, 0).is_empty(), "0 keeps all");
        fs::remove_dir_all(dir).unwrap();
    }
}
