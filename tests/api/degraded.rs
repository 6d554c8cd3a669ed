//! Degraded dependencies: cache shards (and other actors) marked down are bypassed
//! at once; connection-level database failures are 503, never 500.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::future::join_all;
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;

use crate::helpers::{Backend, TestApp, encode, find_node, pg_admin_url, poll_until, spawn_app_with};

const SHARDS: usize = 4;
/// Long, so that waiting for a down shard would be obvious.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Every Explore read of `paths`, concurrently: (status, body) per path, without
/// view counts (the detail reads themselves change them).
async fn read_all(app: &TestApp, token: &str, paths: &[String]) -> Vec<(u16, Value)> {
    let mut answers = join_all(paths.iter().map(|path| app.get_json(path, Some(token)))).await;
    for (_, body) in &mut answers {
        without_views(body);
    }
    answers
}

fn without_views(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("views");
            map.values_mut().for_each(without_views);
        }
        Value::Array(items) => items.iter_mut().for_each(without_views),
        _ => {}
    }
}

/// `first` (a list page), `others`, and the detail page of every item on the first page.
async fn read_paths(app: &TestApp, token: &str, first: &str, others: &[&str]) -> Vec<String> {
    let (status, page) = app.get_json(first, Some(token)).await;
    assert_eq!(status, 200, "{page}");
    let mut paths: Vec<String> =
        std::iter::once(first).chain(others.iter().copied()).map(str::to_owned).collect();
    for item in page["items"].as_array().unwrap() {
        paths.push(format!("/api/v1/explore/items/{}", encode(item["id"].as_str().unwrap())));
    }
    paths
}

/// A node with the sample catalogue and its cache shards marked down at their
/// first failure (no restart, no retry for an hour).
async fn spawn_fragile_cache() -> TestApp {
    spawn_app_with(Backend::Sqlite, |s| {
        s.explore.import_sample_on_start = true;
        s.cache.shards = SHARDS;
        s.supervision.max_restarts = 0;
        s.supervision.down_retry_secs = 3600;
        s.supervision.ask_timeout_ms = u64::try_from(ASK_TIMEOUT.as_millis()).unwrap();
    })
    .await
}

async fn status_of(app: &TestApp, token: &str, actor: &str) -> String {
    let tree = app.tree(token).await;
    find_node(&tree, actor).and_then(|n| n["status"].as_str()).unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_bypass_down_cache_shards_at_once() {
    let app = spawn_fragile_cache().await;
    let token = app.admin_token().await;

    // the answers with every shard up
    let paths = read_paths(
        &app,
        &token,
        "/api/v1/explore/items?limit=20",
        &[
            "/api/v1/explore/items?group=Computer%20Science&limit=5",
            "/api/v1/explore/search?q=neural%20network&limit=10",
        ],
    )
    .await;
    let expected = read_all(&app, &token, &paths).await;
    assert!(expected.iter().all(|(status, _)| *status == 200), "{expected:?}");

    // every shard past its restart intensity (0), and the ViewCounter and HealthActor with them
    let mut actors: Vec<String> = (0..SHARDS).map(|i| format!("cache-shard-{i}")).collect();
    actors.extend(["views".to_owned(), "health".to_owned()]);
    for actor in &actors {
        assert_eq!(app.chaos(&token, actor, "kill").await.status(), 202, "kill {actor}");
    }
    for actor in &actors {
        let down = poll_until(Duration::from_secs(10), || async {
            (status_of(&app, &token, actor).await == "down").then_some(())
        })
        .await;
        assert!(down.is_some(), "{actor} is not down: {}", app.tree(&token).await);
    }

    // the reads answer, with the same data, without waiting for any ask deadline
    let (_, before) = app.get_json("/api/v1/admin/cache", Some(&token)).await;
    let reads = tokio::time::timeout(ASK_TIMEOUT / 2, async {
        let mut all = Vec::new();
        for _ in 0..3 {
            all.push(read_all(&app, &token, &paths).await);
        }
        all
    })
    .await
    .expect("reads of down shards waited for the ask deadline");
    for round in reads {
        for ((path, (status, body)), (_, want)) in paths.iter().zip(round).zip(&expected) {
            assert_eq!(status, 200, "{path}: {body}");
            assert_eq!(&body, want, "{path}");
        }
    }

    // counted on this node
    let (status, report) = app.get_json("/api/v1/admin/cache", Some(&token)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["shards_down"], SHARDS, "{report}");
    let bypassed = |r: &Value| r["bypass"]["loaded"].as_u64().unwrap();
    assert!(bypassed(&report) >= bypassed(&before) + 3 * paths.len() as u64, "{before} then {report}");
    assert_eq!(report["bypass"]["rejected"], 0, "{report}");
    assert!(report["shards"].as_array().unwrap().iter().all(|s| s["available"] == false), "{report}");

    // /health says what is degraded, promptly; the node is still ready
    let health = tokio::time::timeout(ASK_TIMEOUT / 2, app.get_json("/health", None)).await;
    let (status, body) = health.expect("/health waited for a down actor");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["components"]["cache"]["status"], "degraded", "{body}");
    let why = body["components"]["cache"]["last_error"].as_str().unwrap_or("");
    assert!(why.starts_with(&format!("{SHARDS} of {SHARDS} cache shards are down")), "{body}");
    let down: Vec<&str> = body["actors_down"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for actor in &actors {
        assert!(down.contains(&actor.as_str()), "{actor} not in {body}");
    }
    let (status, body) = app.get_json("/health/ready", None).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_cache_supervisor_marks_its_shards_down() {
    let app = spawn_fragile_cache().await;
    let token = app.admin_token().await;
    let paths = vec!["/api/v1/explore/items?limit=20".to_owned(), "/api/v1/explore/categories".to_owned()];
    let expected = read_all(&app, &token, &paths).await;
    assert!(expected.iter().all(|(status, _)| *status == 200), "{expected:?}");

    assert_eq!(app.chaos(&token, "cache", "kill").await.status(), 202);
    let down = poll_until(Duration::from_secs(10), || async {
        (status_of(&app, &token, "cache").await == "down").then_some(())
    })
    .await;
    assert!(down.is_some(), "{}", app.tree(&token).await);

    let reads = tokio::time::timeout(ASK_TIMEOUT / 2, read_all(&app, &token, &paths))
        .await
        .expect("reads waited for the ask deadline");
    assert_eq!(reads, expected);
    let (_, body) = app.get_json("/health", None).await;
    assert_eq!(body["components"]["cache"]["status"], "degraded", "{body}");
    let why = body["components"]["cache"]["last_error"].as_str().unwrap_or("");
    assert!(why.starts_with(&format!("{SHARDS} of {SHARDS} cache shards are down")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_shard_up_the_cache_component_is_ok() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.cache.shards = SHARDS).await;
    let (status, body) = app.get_json("/health", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["components"]["cache"]["status"], "ok", "{body}");
    assert_eq!(body["components"]["cache"]["critical"], false, "{body}");
}

/// Terminates every backend of `database` but the caller's, from its own connection.
async fn terminate_backends(database: &str) -> u64 {
    let admin = Database::connect(pg_admin_url()).await.expect("PostgreSQL is reachable");
    let sql = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    );
    let rows = admin.query_all_raw(sea_orm::Statement::from_string(admin.get_database_backend(), sql)).await;
    admin.close().await.ok();
    rows.map(|r| r.len() as u64).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_database_connections_are_503_never_500() {
    let app = spawn_app_with(Backend::Postgres, |s| {
        s.explore.import_sample_on_start = true;
        // every read reaches the database
        s.cache.enabled = false;
    })
    .await;
    let database = app.database_url.rsplit('/').next().unwrap().to_owned();
    let token = app.admin_token().await;
    let paths = Arc::new(
        read_paths(
            &app,
            &token,
            "/api/v1/explore/items?limit=50",
            &["/api/v1/explore/search?q=quantum&limit=20", "/api/v1/explore/categories"],
        )
        .await,
    );

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let (client, base, token) = (app.client.clone(), app.address.clone(), token.clone());
            let (paths, stop, served) = (paths.clone(), stop.clone(), served.clone());
            tokio::spawn(async move {
                let mut seen: BTreeMap<u16, u64> = BTreeMap::new();
                let mut bad = Vec::new();
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    let path = &paths[i % paths.len()];
                    i += 1;
                    let response =
                        client.get(format!("{base}{path}")).bearer_auth(&token).send().await.unwrap();
                    let status = response.status().as_u16();
                    *seen.entry(status).or_default() += 1;
                    let retry_after = response.headers().contains_key("retry-after");
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    let fine = match status {
                        200 => true,
                        503 => retry_after && body["error"]["code"] == "database_unavailable",
                        _ => false,
                    };
                    if !fine {
                        bad.push(format!("{path}: {status} {body}"));
                    }
                    served.fetch_add(1, Ordering::Relaxed);
                }
                (seen, bad)
            })
        })
        .collect();

    // terminate the node's connections again and again while the reads run
    let mut terminated = 0;
    for round in 1..=25u64 {
        let reached = poll_until(Duration::from_secs(30), || async {
            (served.load(Ordering::Relaxed) >= round * 40).then_some(())
        })
        .await;
        assert!(reached.is_some(), "the load stalled at {} requests", served.load(Ordering::Relaxed));
        terminated += terminate_backends(&database).await;
    }
    stop.store(true, Ordering::Relaxed);

    let mut seen: BTreeMap<u16, u64> = BTreeMap::new();
    let mut bad = Vec::new();
    for worker in workers {
        let (s, b) = worker.await.unwrap();
        for (status, n) in s {
            *seen.entry(status).or_default() += n;
        }
        bad.extend(b);
    }
    eprintln!("terminated {terminated} backends; statuses {seen:?}");
    assert!(terminated > 0, "no backend was terminated");
    assert!(bad.is_empty(), "{} bad answers of {seen:?}, e.g. {:?}", bad.len(), &bad[..bad.len().min(5)]);

    // and the node recovers: reads succeed again
    let recovered = poll_until(Duration::from_secs(10), || async {
        let (status, _) = app.get_json("/api/v1/explore/items?limit=5", Some(&token)).await;
        (status == 200).then_some(())
    })
    .await;
    assert!(recovered.is_some());
}
