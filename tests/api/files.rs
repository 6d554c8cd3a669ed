//! Who may read what castwork writes under `data_dir`: the directory is 0700,
//! the SQLite database and its `-wal` / `-shm` files 0600.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::helpers::spawn_app;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

fn with_suffix(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_keeps_its_data_dir_and_database_files_private() {
    let app = spawn_app().await;
    let db = PathBuf::from(
        app.database_url.strip_prefix("sqlite://").and_then(|rest| rest.split('?').next()).unwrap(),
    );
    let dir = db.parent().unwrap();
    // the test harness created the directory with the process umask; the node tightened it
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    assert_eq!(mode(&db), 0o600, "{}", db.display());
    // migrations and the bootstrap admin wrote through the WAL, and the pool holds it open
    for suffix in ["-wal", "-shm"] {
        let companion = with_suffix(&db, suffix);
        assert_eq!(mode(&companion), 0o600, "{}", companion.display());
    }
}

#[test]
fn the_cli_creates_a_private_data_dir_and_tightens_an_open_one() {
    let root = std::env::temp_dir().join(format!("castwork-files-{}", uuid::Uuid::new_v4().simple()));
    let fresh = root.join("fresh");
    let open = root.join("open");
    std::fs::create_dir_all(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(open.join("castwork.db"), b"").unwrap();
    std::fs::set_permissions(open.join("castwork.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    for dir in [&fresh, &open] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_castwork"));
        for (key, _) in std::env::vars() {
            if key.starts_with("CASTWORK_") {
                cmd.env_remove(key);
            }
        }
        let output = cmd
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CASTWORK_DATA_DIR", dir)
            .env("CASTWORK_LOG__LEVEL", "warn")
            .arg("migrate")
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
        let db = dir.join("castwork.db");
        assert_eq!(mode(&db), 0o600, "{}", db.display());
        for suffix in ["-wal", "-shm"] {
            let companion = with_suffix(&db, suffix);
            if companion.exists() {
                assert_eq!(mode(&companion), 0o600, "{}", companion.display());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}
