//! The whole reference catalogue through `castwork import`, as an operator runs it.

use std::path::PathBuf;
use std::process::Command;

fn catalogue() -> PathBuf {
    std::env::var_os("CASTWORK_TEST_CATALOG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/arxiv/catalog.jsonl.gz"))
}

fn count(summary: &str, label: &str) -> u64 {
    summary
        .lines()
        .find_map(|l| l.trim().strip_prefix(label).map(|rest| rest.trim().parse::<u64>()))
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no '{label}' count in:\n{summary}"))
}

fn import(data_dir: &std::path::Path) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_castwork"));
    for (key, _) in std::env::vars() {
        if key.starts_with("CASTWORK_") {
            cmd.env_remove(key);
        }
    }
    let output = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CASTWORK_DATA_DIR", data_dir)
        .env("CASTWORK_LOG__LEVEL", "warn")
        .arg("import")
        .arg(catalogue())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_whole_catalogue_imports_and_reimports_as_a_no_op() {
    let path = catalogue();
    assert!(path.exists(), "the reference catalogue is at {} (or set CASTWORK_TEST_CATALOG)", path.display());
    let dir = std::env::temp_dir().join(format!("castwork-import-{}", uuid::Uuid::new_v4().simple()));
    let first = import(&dir);
    assert_eq!(count(&first, "inserted"), 45_898, "{first}");
    assert_eq!(count(&first, "rejected"), 0, "{first}");
    assert!(
        first.contains("\nnote: running castwork servers show the import once their outbox relay"),
        "the cache hint: {first}"
    );
    let second = import(&dir);
    assert_eq!(count(&second, "inserted"), 0, "{second}");
    assert_eq!(count(&second, "updated"), 0, "{second}");
    assert_eq!(count(&second, "unchanged"), 45_898, "{second}");
    assert!(!second.contains("note:"), "nothing changed, no hint: {second}");
    let _ = std::fs::remove_dir_all(&dir);
}
