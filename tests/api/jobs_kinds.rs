//! The job kinds (`import_catalog`, `warm_cache`, `recompute_trending`,
//! `rebuild_search_index`) run by a node's workers, submitted through its queue;
//! and (`resume`) an import handler run by hand from a checkpoint.

mod resume;

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::Duration;

use castwork::explore::ExploreService;
use castwork::explore::import::SAMPLE_CATALOG;
use castwork::explore::trend;
use castwork::queue::QueueError;
use castwork::queue::model::{JobState, JobView};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};

use crate::both;
use crate::helpers::{Backend, TestApp, encode, poll_until, spawn_app, spawn_app_with};

/// The first `n` lines of the embedded sample catalogue.
pub fn sample_lines(n: usize) -> Vec<String> {
    let reader = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(SAMPLE_CATALOG));
    reader.lines().take(n).map(Result::unwrap).collect()
}

pub fn id_of(line: &str) -> String {
    serde_json::from_str::<Value>(line).unwrap()["id"].as_str().unwrap().to_owned()
}

pub fn with_title(line: &str, title: &str) -> String {
    let mut json: Value = serde_json::from_str(line).unwrap();
    json["title"] = json!(title);
    json.to_string()
}

pub fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

impl TestApp {
    /// Submits a job as the admin and waits for it to end.
    pub async fn run_job(&self, kind: &str, payload: Value) -> JobView {
        let (job, created) = self.queue.submit(kind, payload, "admin", None).await.unwrap();
        assert!(created);
        self.wait_job(&job.id).await
    }

    /// Polls the job until it is over.
    pub async fn wait_job(&self, id: &str) -> JobView {
        let view = poll_until(Duration::from_secs(60), || async {
            let row = self.queue.store().get(id).await.unwrap()?;
            let view = JobView::from_model(row, chrono::Utc::now());
            view.state.is_terminal().then_some(view)
        })
        .await;
        view.unwrap_or_else(|| panic!("job {id} did not end in time"))
    }

    /// The import directory (`<data_dir>/imports`), created.
    pub fn import_dir(&self) -> std::path::PathBuf {
        let dir = self.data_dir.join("imports");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The field errors a submission is refused with.
    pub async fn refused(&self, kind: &str, payload: Value) -> Vec<String> {
        match self.queue.submit(kind, payload.clone(), "admin", None).await {
            Err(QueueError::Invalid(fields)) => fields.into_keys().collect(),
            other => panic!("{kind} {payload} was not refused as invalid: {:?}", other.map(|(v, _)| v.state)),
        }
    }
}

fn succeeded(job: &JobView) -> &Value {
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    job.result.as_ref().unwrap()
}

fn counts(result: &Value) -> [u64; 5] {
    ["inserted", "updated", "unchanged", "rejected", "lines"].map(|k| result[k].as_u64().unwrap())
}

#[tokio::test]
async fn import_catalog_from_a_file_counts_exactly_and_a_second_run_is_unchanged() {
    let app = spawn_app().await;
    let mut lines = sample_lines(25);
    lines.insert(10, "{not json".to_owned());
    lines.insert(20, String::new());
    std::fs::create_dir_all(app.import_dir().join("2026")).unwrap();
    std::fs::write(app.import_dir().join("2026/catalog.jsonl.gz"), gzip(&lines.join("\n"))).unwrap();
    let payload = json!({ "path": "2026/catalog.jsonl.gz", "batch_size": 7 });

    let first = app.run_job("import_catalog", payload.clone()).await;
    let result = succeeded(&first);
    assert_eq!(counts(result), [25, 0, 0, 1, 27], "{result}");
    let rejected = result["rejected_lines"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{result}");
    assert_eq!(rejected[0]["line"], 11);
    assert!(rejected[0]["reason"].as_str().unwrap().starts_with("invalid JSON"), "{result}");
    assert_eq!((first.progress.processed, first.progress.total), (27, Some(27)), "progress counts lines");
    assert_eq!(app.count_rows("items", "id", &id_of(&lines[0])).await, 1);

    let second = app.run_job("import_catalog", payload).await;
    assert_eq!(counts(succeeded(&second)), [0, 0, 25, 1, 27]);
}

#[tokio::test]
async fn import_catalog_takes_uploaded_lines() {
    let app = spawn_app().await;
    let lines = sample_lines(5);
    let mut changed = lines.clone();
    changed[0] = with_title(&lines[0], "A retitled paper");
    let first = app.run_job("import_catalog", json!({ "lines": lines.join("\n") })).await;
    assert_eq!(counts(succeeded(&first)), [5, 0, 0, 0, 5]);
    let token = app.user_token("reader", "viewer").await;
    let path = format!("/api/v1/explore/items/{}", encode(&id_of(&lines[0])));
    let (status, item) = app.get_json(&path, Some(&token)).await;
    assert_eq!(status, 200, "{item}");

    let second = app.run_job("import_catalog", json!({ "lines": changed.join("\n"), "batch_size": 2 })).await;
    assert_eq!(counts(succeeded(&second)), [0, 1, 4, 0, 5]);
    let (_, item) = app.get_json(&path, Some(&token)).await;
    assert_eq!(item["title"], "A retitled paper", "the node's cache heard the job's change");
}

#[tokio::test]
async fn import_catalog_refuses_paths_outside_the_import_dir() {
    let app = spawn_app().await;
    let dir = app.import_dir();
    std::fs::write(dir.join("ok.jsonl"), sample_lines(1).join("\n")).unwrap();
    let outside = app.data_dir.join("outside.jsonl");
    std::fs::write(&outside, sample_lines(1).join("\n")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&outside, dir.join("escape.jsonl")).unwrap();
    let path_refused = ["../outside.jsonl", "sub/../../outside.jsonl", "missing.jsonl", "", "."];
    for path in path_refused {
        assert_eq!(
            app.refused("import_catalog", json!({ "path": path })).await,
            ["payload.path"],
            "{path:?}"
        );
    }
    let absolute = outside.display().to_string();
    assert_eq!(app.refused("import_catalog", json!({ "path": absolute })).await, ["payload.path"]);
    #[cfg(unix)]
    assert_eq!(app.refused("import_catalog", json!({ "path": "escape.jsonl" })).await, ["payload.path"]);
    let both = json!({ "path": "ok.jsonl", "lines": "{}" });
    assert_eq!(app.refused("import_catalog", both).await, ["payload"]);
    assert_eq!(app.refused("import_catalog", json!({})).await, ["payload"]);
    assert_eq!(
        app.refused("import_catalog", json!({ "path": "ok.jsonl", "from": 1 })).await,
        ["payload.from"]
    );
    let big = json!({ "path": "ok.jsonl", "batch_size": 0 });
    assert_eq!(app.refused("import_catalog", big).await, ["payload.batch_size"]);
    assert_eq!(app.refused("import_catalog", json!({ "lines": 3 })).await, ["payload.lines"]);
    assert_eq!(app.refused("import_catalog", json!({ "lines": " \n" })).await, ["payload.lines"]);
    // the file that is there is accepted
    let job = app.run_job("import_catalog", json!({ "path": "ok.jsonl" })).await;
    assert_eq!(counts(succeeded(&job)), [1, 0, 0, 0, 1]);
}

#[tokio::test]
async fn the_other_kinds_refuse_unknown_and_bad_fields() {
    let app = spawn_app().await;
    assert_eq!(app.refused("warm_cache", json!({ "pages": 3 })).await, ["payload.pages"]);
    assert_eq!(app.refused("recompute_trending", json!({ "batch_size": 0 })).await, ["payload.batch_size"]);
    let negative = json!({ "previous_half_life_hours": -1 });
    assert_eq!(app.refused("recompute_trending", negative).await, ["payload.previous_half_life_hours"]);
    assert_eq!(
        app.refused("rebuild_search_index", json!({ "batch_size": "x" })).await,
        ["payload.batch_size"]
    );
    assert_eq!(app.refused("rebuild_search_index", json!([])).await, ["payload"]);
}

async fn rebuild_search_index_then_search_finds_items(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let mut lines = sample_lines(12);
    lines[4] = with_title(&lines[4], "Zyxwvut networks for sparse graphs");
    let imported = app.run_job("import_catalog", json!({ "lines": lines.join("\n") })).await;
    assert_eq!(counts(succeeded(&imported))[0], 12);
    if backend == Backend::Sqlite {
        // empty the index: only a rebuild brings the items back into search
        let db = Database::connect(&app.database_url).await.unwrap();
        db.execute_unprepared("INSERT INTO items_fts(items_fts) VALUES('delete-all')").await.unwrap();
        let sql = "SELECT COUNT(*) FROM items_fts WHERE items_fts MATCH 'zyxwvut'";
        let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await.unwrap();
        assert_eq!(row.unwrap().try_get_by_index::<i64>(0).unwrap(), 0);
        db.close().await.unwrap();
    }
    let job = app.run_job("rebuild_search_index", json!({ "batch_size": 5 })).await;
    let result = succeeded(&job);
    assert_eq!(result["items_indexed"], 12, "{result}");
    assert_eq!(job.progress.processed, 12);
    let token = app.user_token("reader", "viewer").await;
    let (status, body) = app.get_json("/api/v1/explore/search?q=zyxwvut", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let hits: Vec<&str> =
        body["items"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert_eq!(hits, [id_of(&lines[4])], "{body}");
}
both!(rebuild_search_index_then_search_finds_items);

#[tokio::test]
async fn recompute_trending_rescales_the_viewed_items() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.explore.trend_half_life_hours = 24.0).await;
    let lines = sample_lines(9);
    app.run_job("import_catalog", json!({ "lines": lines.join("\n") })).await;
    // three items viewed while the half-life was 12 hours
    let twelve_hours = Duration::from_secs(12 * 3600);
    let db = Database::connect(&app.database_url).await.unwrap();
    let service = ExploreService::new(db.clone(), b"recompute-trending-test-secret");
    let viewed: HashMap<String, u64> = [(0, 40), (3, 10), (7, 1)].map(|(i, n)| (id_of(&lines[i]), n)).into();
    service.record_views(&viewed, twelve_hours).await.unwrap();
    let scores = || async {
        let sql = "SELECT id, trend FROM items WHERE views > 0";
        let rows = db.query_all_raw(Statement::from_string(db.get_database_backend(), sql)).await.unwrap();
        rows.iter()
            .map(|r| (r.try_get::<String>("", "id").unwrap(), r.try_get::<f64>("", "trend").unwrap()))
            .collect::<HashMap<_, _>>()
    };
    let before = scores().await;

    let unchanged = app.run_job("recompute_trending", json!({})).await;
    assert_eq!(succeeded(&unchanged)["rows_updated"], 0, "the same half-life changes nothing");
    assert_eq!(scores().await, before);

    let payload = json!({ "previous_half_life_hours": 12, "batch_size": 2 });
    let job = app.run_job("recompute_trending", payload).await;
    let result = succeeded(&job);
    assert_eq!(
        (result["rows_scanned"].as_u64(), result["rows_updated"].as_u64()),
        (Some(9), Some(3)),
        "{result}"
    );
    let day = Duration::from_secs(24 * 3600);
    let now = chrono::Utc::now();
    for (id, after) in scores().await {
        let was = trend::decayed_views(before[&id], now, twelve_hours);
        let is = trend::decayed_views(after, now, day);
        assert!((was - is).abs() <= was * 1e-3, "{id}: {was} decayed views became {is}");
    }
    db.close().await.unwrap();
}

#[tokio::test]
async fn warm_cache_succeeds_and_says_what_it_warmed() {
    let app = spawn_app().await;
    app.run_job("import_catalog", json!({ "lines": sample_lines(30).join("\n") })).await;
    let job = app.run_job("warm_cache", json!({})).await;
    let result = succeeded(&job);
    assert!(result["pages"].as_u64().unwrap() >= 3, "categories, lists, trending: {result}");
    assert_eq!(result["errors"], 0, "{result}");
    assert_eq!(result["cache_enabled"], true);
    assert!(job.progress.total.is_some_and(|total| total >= job.progress.processed), "{job:?}");
}
