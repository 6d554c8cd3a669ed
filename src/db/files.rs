//! Who may read the embedded SQLite database: it holds password and
//! refresh-token hashes, so `data_dir` is kept 0700 and the database file 0600
//! on Unix. SQLite creates `-wal`, `-shm` and journal files with the database
//! file's own permission bits, so a 0600 database keeps them 0600 too, and no
//! process-wide umask is needed.

use std::path::{Path, PathBuf};

use super::DbError;

/// Mode of `data_dir` on Unix: the owner only.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the database file and its companions on Unix: owner read and write.
pub const FILE_MODE: u32 = 0o600;

/// Suffixes of the files SQLite keeps beside a database file.
const COMPANIONS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// The database file a SQLite URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteFile {
    /// The path, as the URL gives it.
    pub path: PathBuf,
    /// Whether the URL asks for the file to be created when missing (`mode=rwc`).
    pub create: bool,
}

/// The file a SQLite URL names, or `None` for an in-memory database or another backend.
pub fn sqlite_file(url: &str) -> Option<SqliteFile> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut params = query.split('&');
    let in_memory = path.is_empty() || path == ":memory:" || params.clone().any(|p| p == "mode=memory");
    let create = params.any(|p| p == "mode=rwc");
    (!in_memory).then(|| SqliteFile { path: PathBuf::from(path), create })
}

/// Creates `dir` owner-only, or tightens an existing one that others may enter.
#[tracing::instrument(skip_all, fields(path = %dir.display()))]
pub fn secure_dir(dir: &Path) -> Result<(), DbError> {
    let failed = |source| DbError::DataDir { path: dir.display().to_string(), source };
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        // only the directory castwork creates gets 0700; parents keep the umask's mode
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(failed)?;
        }
        match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(failed(e)),
        }
        let mode = std::fs::metadata(dir).map_err(failed)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700)).map_err(failed)?;
            tracing::warn!(
                was = format!("{mode:o}"),
                now = format!("{:o}", mode & 0o700),
                "data directory was open to other users; removed their access"
            );
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir).map_err(failed)
    }
}

/// Creates the database file owner-only when missing and `create` is set (so
/// SQLite's companions inherit 0600), and tightens the file and any companion
/// that others may read.
#[tracing::instrument(skip_all, fields(path = %file.display()))]
pub fn secure_file(file: &Path, create: bool) -> Result<(), DbError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let failed = |path: &Path, source| DbError::Permissions { path: path.display().to_string(), source };
        if create {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(FILE_MODE)
                .open(file)
                .map_err(|e| failed(file, e))?;
        }
        let companions = COMPANIONS.iter().map(|suffix| {
            let mut name = file.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        });
        for path in std::iter::once(file.to_path_buf()).chain(companions) {
            let mode = match std::fs::metadata(&path) {
                Ok(meta) => meta.permissions().mode() & 0o777,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(failed(&path, e)),
            };
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o600))
                    .map_err(|e| failed(&path, e))?;
                tracing::warn!(
                    file = %path.display(),
                    was = format!("{mode:o}"),
                    "database file was readable by other users; removed their access"
                );
            }
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        let _ = (file, create);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        let file = |path: &str, create| Some(SqliteFile { path: PathBuf::from(path), create });
        assert_eq!(sqlite_file("sqlite://data/castwork.db?mode=rwc"), file("data/castwork.db", true));
        assert_eq!(sqlite_file("sqlite:///var/lib/c.db"), file("/var/lib/c.db", false));
        assert_eq!(sqlite_file("sqlite:c.db?cache=shared&mode=rwc"), file("c.db", true));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://:memory:"), None);
        assert_eq!(sqlite_file("sqlite://x.db?mode=memory&cache=shared"), None);
        assert_eq!(sqlite_file("postgres://u@h/db"), None);
    }

    #[cfg(unix)]
    #[test]
    fn an_open_directory_and_readable_files_are_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = std::env::temp_dir().join(format!("castwork-files-{}", uuid::Uuid::new_v4().simple()));
        let nested = dir.join("data");
        secure_dir(&nested).unwrap();
        assert_eq!(mode(&nested), 0o700);
        std::fs::set_permissions(&nested, std::fs::Permissions::from_mode(0o755)).unwrap();
        secure_dir(&nested).unwrap();
        assert_eq!(mode(&nested), 0o700);

        let db = nested.join("castwork.db");
        secure_file(&db, false).unwrap();
        assert!(!db.exists());
        secure_file(&db, true).unwrap();
        assert_eq!(mode(&db), 0o600);
        let wal = nested.join("castwork.db-wal");
        std::fs::write(&wal, b"").unwrap();
        for path in [&db, &wal] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        secure_file(&db, false).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&wal), 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
