//! Events leaving a node through the outbox relay: what another process commits
//! reaches a serving node's cache.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use castwork::db::testing::temp_dir;

use crate::helpers::{poll_until, spawn_app};

fn ids(body: &Value) -> Vec<String> {
    body["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect()
}

/// `castwork import FILE` as another process on `database_url`.
fn import_elsewhere(database_url: &str, data_dir: &Path, file: &Path) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_castwork"));
    for (key, _) in std::env::vars() {
        if key.starts_with("CASTWORK_") {
            cmd.env_remove(key);
        }
    }
    let output = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CASTWORK_DATA_DIR", data_dir)
        .env("CASTWORK_DATABASE__URL", database_url)
        .env("CASTWORK_LOG__LEVEL", "warn")
        .arg("import")
        .arg(file)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test]
async fn an_import_by_another_process_changes_the_serving_nodes_cached_pages_within_the_poll_bound() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let page = "/api/v1/explore/items?category=cs.DM&limit=50";
    let (status, before) = app.get_json(page, Some(&token)).await;
    assert_eq!(status, 200, "{before}");
    assert!(ids(&before).is_empty(), "{before}");
    // cached now: list pages live cache.list_ttl_secs (60 s) unless invalidated
    let (_, again) = app.get_json(page, Some(&token)).await;
    assert_eq!(again, before);

    let dir = temp_dir();
    let file = dir.join("one.jsonl");
    let line = json!({
        "id": "elsewhere.0001", "title": "Imported by another process", "body": "Written beside a serving node.",
        "category": "Discrete Mathematics", "category_code": "cs.DM", "group": "Computer Science",
        "tags": ["cs.DM"], "published_at": "2024-01-02T03:04:05Z", "source_url": "https://example.org/x"
    });
    std::fs::write(&file, format!("{line}\n")).unwrap();
    import_elsewhere(&app.database_url, &dir, &file);

    // the relay polls every queue.outbox_poll_ms (100 ms in tests) and invalidates on its event
    let seen = poll_until(Duration::from_secs(5), || async {
        let (_, body) = app.get_json(page, Some(&token)).await;
        ids(&body).contains(&"elsewhere.0001".to_owned()).then_some(())
    })
    .await;
    assert!(seen.is_some(), "the cached page changed after the other process's import");
    let _ = std::fs::remove_dir_all(dir);
}
