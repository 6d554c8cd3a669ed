//! The Explore cache against the real Redis (a key prefix per test).

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    Backend, TestApp, encode, find_node, poll_until, redis_prefix, redis_url, spawn_app_with, spawn_peer,
};

fn with_redis(prefix: &str) -> impl FnOnce(&mut castwork::config::Settings) + '_ {
    move |s| {
        s.cache.redis.url = castwork::config::Secret::new(redis_url());
        s.cache.redis.key_prefix = prefix.to_owned();
    }
}

async fn report(app: &TestApp, token: &str) -> Value {
    let (status, body) = app.get_json("/api/v1/admin/cache", Some(token)).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn db_loads(app: &TestApp, token: &str) -> u64 {
    report(app, token).await["db_loads"].as_u64().unwrap()
}

fn item(id: &str, category: &str, title: &str) -> Value {
    json!({
        "id": id, "title": title, "body": "Body text.", "category": "Some Category",
        "category_code": category, "group": "Computer Science", "tags": [category],
        "published_at": "2025-07-01T00:00:00Z"
    })
}

async fn create(app: &TestApp, token: &str, body: &Value) {
    let response =
        app.client.post(app.url("/api/v1/items")).bearer_auth(token).json(body).send().await.unwrap();
    assert_eq!(response.status(), 201);
}

async fn put_title(app: &TestApp, token: &str, id: &str, version: i64, body: &Value) -> u16 {
    app.client
        .put(app.url(&format!("/api/v1/items/{}", encode(id))))
        .bearer_auth(token)
        .header("if-match", format!("\"{version}\""))
        .json(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn stampede(app: &TestApp) {
    let admin = app.admin_token().await;
    create(app, &admin, &item("stampede-1", "cs.CV", "Cold key")).await;
    let before = db_loads(app, &admin).await;
    let path = app.url("/api/v1/explore/items/stampede-1");
    let requests = (0..1000).map(|_| {
        let request = app.client.get(&path).bearer_auth(&admin).send();
        async move { request.await.map(|r| r.status().as_u16()) }
    });
    let statuses = futures::future::join_all(requests).await;
    let ok = statuses.iter().filter(|s| matches!(s, Ok(200))).count();
    assert_eq!(
        ok,
        1000,
        "every request answered 200: {:?}",
        statuses.iter().filter(|s| !matches!(s, Ok(200))).take(3).collect::<Vec<_>>()
    );
    assert_eq!(
        db_loads(app, &admin).await - before,
        1,
        "exactly one database load for 1,000 concurrent misses"
    );
    let shards = report(app, &admin).await["shards"].clone();
    let coalesced: u64 = shards.as_array().unwrap().iter().map(|s| s["coalesced"].as_u64().unwrap()).sum();
    let hits: u64 = shards.as_array().unwrap().iter().map(|s| s["hits_l1"].as_u64().unwrap()).sum();
    assert_eq!(coalesced + hits, 999, "the rest waited on the load or hit L1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_on_a_cold_key_loads_once_l1_only() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let admin = app.admin_token().await;
    assert_eq!(report(&app, &admin).await["l2"], false);
    stampede(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_on_a_cold_key_loads_once_with_redis() {
    let prefix = redis_prefix();
    let _keys = crate::helpers::RedisKeys(prefix.clone());
    let app = spawn_app_with(Backend::Sqlite, with_redis(&prefix)).await;
    let admin = app.admin_token().await;
    assert_eq!(report(&app, &admin).await["l2"], true);
    stampede(&app).await;
}

async fn invalidation_gives_read_your_writes(app: &TestApp) {
    let editor = app.user_token("cachewriter", "editor").await;
    let admin = app.admin_token().await;
    create(app, &editor, &item("inv-a", "cs.CV", "Version one")).await;
    create(app, &editor, &item("inv-b", "cs.LG", "Other category")).await;
    let detail = "/api/v1/explore/items/inv-a";
    let list_a = "/api/v1/explore/items?category=cs.CV";
    let list_b = "/api/v1/explore/items?category=cs.LG";
    for path in [detail, list_a, list_b] {
        let (status, _) = app.get_json(path, Some(&editor)).await;
        assert_eq!(status, 200);
    }
    // all three cached now
    let loads = db_loads(app, &admin).await;
    for path in [detail, list_a, list_b] {
        app.get_json(path, Some(&editor)).await;
    }
    assert_eq!(db_loads(app, &admin).await, loads, "hits do not reach the database");

    assert_eq!(put_title(app, &editor, "inv-a", 1, &item("inv-a", "cs.CV", "Version two")).await, 200);
    let (_, got) = app.get_json(detail, Some(&editor)).await;
    assert_eq!(
        (got["version"].as_i64(), got["title"].as_str()),
        (Some(2), Some("Version two")),
        "read your write"
    );
    let (_, page) = app.get_json(list_a, Some(&editor)).await;
    let listed = page["items"].as_array().unwrap().iter().find(|i| i["id"] == "inv-a").unwrap();
    assert_eq!(listed["title"], "Version two", "its category's pages reflect it");
    let loads = db_loads(app, &admin).await;
    app.get_json(list_b, Some(&editor)).await;
    assert_eq!(db_loads(app, &admin).await, loads, "another category's page stays cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_invalidate_l1_only() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    invalidation_gives_read_your_writes(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_invalidate_with_redis() {
    let prefix = redis_prefix();
    let _keys = crate::helpers::RedisKeys(prefix.clone());
    let app = spawn_app_with(Backend::Postgres, with_redis(&prefix)).await;
    invalidation_gives_read_your_writes(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_node_is_seen_on_the_other() {
    let prefix = redis_prefix();
    let _keys = crate::helpers::RedisKeys(prefix.clone());
    let a = spawn_app_with(Backend::Postgres, with_redis(&prefix)).await;
    let b = spawn_peer(&a, with_redis(&prefix)).await;
    let editor = a.user_token("crossnode", "editor").await;
    create(&a, &editor, &item("cross-1", "cs.CV", "Before")).await;
    let detail = "/api/v1/explore/items/cross-1";
    let list = "/api/v1/explore/items?category=cs.CV";
    // B caches both (L1 and L2)
    let (status, before) = b.get_json(detail, Some(&editor)).await;
    assert_eq!((status, before["title"].as_str()), (200, Some("Before")));
    b.get_json(list, Some(&editor)).await;
    assert_eq!(put_title(&a, &editor, "cross-1", 1, &item("cross-1", "cs.CV", "After")).await, 200);
    let seen = poll_until(Duration::from_secs(5), || async {
        let (_, got) = b.get_json(detail, Some(&editor)).await;
        let (_, page) = b.get_json(list, Some(&editor)).await;
        let listed = page["items"].as_array()?.iter().find(|i| i["id"] == "cross-1")?["title"].clone();
        (got["title"] == "After" && listed == "After").then_some(())
    })
    .await;
    assert!(seen.is_some(), "node B sees node A's write within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_shard_under_load_gives_no_500() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.explore.import_sample_on_start = true).await;
    let admin = app.admin_token().await;
    let (_, page) = app.get_json("/api/v1/explore/items?limit=50", Some(&admin)).await;
    let ids: Vec<String> =
        page["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect();
    let requests = (0..200).map(|i| {
        let path = app.url(&format!("/api/v1/explore/items/{}", encode(&ids[i % ids.len()])));
        let request = app.client.get(path).bearer_auth(&admin).send();
        async move { request.await.map(|r| r.status().as_u16()) }
    });
    let load = futures::future::join_all(requests);
    let chaos = async {
        tokio::task::yield_now().await;
        for shard in 0..4 {
            let response = app.chaos(&admin, &format!("cache-shard-{shard}"), "kill").await;
            assert_eq!(response.status(), 202);
        }
    };
    let (statuses, ()) = tokio::join!(load, chaos);
    let bad: Vec<_> = statuses.iter().filter(|s| !matches!(s, Ok(200))).collect();
    assert!(bad.is_empty(), "no failed request: {bad:?}");
    let restarted = poll_until(Duration::from_secs(10), || async {
        let tree = app.tree(&admin).await;
        let node = find_node(&tree, "cache-shard-0")?.clone();
        (node["restarts"].as_u64()? >= 1 && node["status"] == "running").then_some(())
    })
    .await;
    assert!(restarted.is_some(), "the tree shows the shard restarted: {}", app.tree(&admin).await);
    let tree = app.tree(&admin).await;
    let cache = find_node(&tree, "cache").unwrap();
    assert_eq!(cache["children"].as_array().unwrap().len(), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_and_warm() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.explore.import_sample_on_start = true).await;
    let admin = app.admin_token().await;
    let response =
        app.client.post(app.url("/api/v1/admin/cache/warm")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let warmed: Value = response.json().await.unwrap();
    assert!(warmed["pages"].as_u64().unwrap() > 50, "{warmed}");
    let entries: u64 = report(&app, &admin).await["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["entries"].as_u64().unwrap())
        .sum();
    assert!(entries > 50);
    let loads = db_loads(&app, &admin).await;
    app.get_json("/api/v1/explore/items?group=Physics", Some(&admin)).await;
    assert_eq!(db_loads(&app, &admin).await, loads, "a warmed page is a hit");
    let response =
        app.client.delete(app.url("/api/v1/admin/cache")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(response.status(), 204);
    let emptied = poll_until(Duration::from_secs(5), || async {
        let r = report(&app, &admin).await;
        let entries: u64 = r["shards"].as_array()?.iter().map(|s| s["entries"].as_u64().unwrap_or(0)).sum();
        (entries == 0).then_some(())
    })
    .await;
    assert!(emptied.is_some());
    let viewer = app.user_token("cacheviewer", "viewer").await;
    let (status, _) = app.get_json("/api/v1/admin/cache", Some(&viewer)).await;
    assert_eq!(status, 403);
}

async fn patch_category(app: &TestApp, token: &str, id: &str, version: i64, category: &str) -> u16 {
    app.client
        .patch(app.url(&format!("/api/v1/items/{}", encode(id))))
        .bearer_auth(token)
        .header("if-match", format!("\"{version}\""))
        .json(&json!({ "category_code": category, "tags": [category] }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_an_item_invalidates_the_category_it_left() {
    let prefix = redis_prefix();
    let _keys = crate::helpers::RedisKeys(prefix.clone());
    let app = spawn_app_with(Backend::Sqlite, with_redis(&prefix)).await;
    let editor = app.user_token("mover", "editor").await;
    let admin = app.admin_token().await;
    create(&app, &editor, &item("moving-1", "cs.CV", "Moves")).await;
    create(&app, &editor, &item("staying-1", "cs.CV", "Stays")).await;
    let old_category = "/api/v1/explore/items?category=cs.CV";
    let old_tag = "/api/v1/explore/items?tag=cs.CV";
    let new_category = "/api/v1/explore/items?category=math.CO";
    for path in [old_category, old_tag, new_category] {
        app.get_json(path, Some(&editor)).await;
    }
    let loads = db_loads(&app, &admin).await;
    let (_, page) = app.get_json(old_category, Some(&editor)).await;
    assert_eq!(db_loads(&app, &admin).await, loads, "the old category's page is cached");
    assert!(ids(&page).contains(&"moving-1".to_owned()));

    assert_eq!(patch_category(&app, &editor, "moving-1", 1, "math.CO").await, 200);
    // at once, not after the list TTL: the write returned after the invalidation
    let (_, page) = app.get_json(old_category, Some(&editor)).await;
    assert_eq!(ids(&page), ["staying-1"], "the item left the old category's page");
    let (_, page) = app.get_json(old_tag, Some(&editor)).await;
    assert_eq!(ids(&page), ["staying-1"], "and its old tag's page");
    let (_, page) = app.get_json(new_category, Some(&editor)).await;
    assert_eq!(ids(&page), ["moving-1"], "and appears on the new one");
}

/// Keys under `pattern` in the test Redis (through `redis-cli`, as `RedisKeys` does).
fn redis_keys(pattern: &str) -> Vec<String> {
    let listed = std::process::Command::new("redis-cli")
        .args(["-u", &redis_url(), "--scan", "--pattern", pattern])
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&listed.stdout).lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_import_invalidates_pages_cached_before_it() {
    let prefix = redis_prefix();
    let _keys = crate::helpers::RedisKeys(prefix.clone());
    let first = spawn_app_with(Backend::Sqlite, with_redis(&prefix)).await;
    let admin = first.admin_token().await;
    let list = "/api/v1/explore/items?category=cs.CV";
    let (status, page) = first.get_json(list, Some(&admin)).await;
    assert_eq!((status, ids(&page).len()), (200, 0), "an empty catalogue");
    // the empty page reaches Redis, where the next node to start would find it
    let pattern = format!("{prefix}:list:*");
    let stored =
        poll_until(Duration::from_secs(5), || async { (!redis_keys(&pattern).is_empty()).then_some(()) });
    assert!(stored.await.is_some(), "the list page is in Redis");
    first.shut_down().await;

    // a node on the same (still empty) database imports the sample as it starts
    let second = spawn_peer(&first, |s| {
        with_redis(&prefix)(s);
        s.explore.import_sample_on_start = true;
    })
    .await;
    let admin = second.admin_token().await;
    let (status, page) = second.get_json(list, Some(&admin)).await;
    assert_eq!(status, 200);
    assert!(!ids(&page).is_empty(), "the imported cs.CV items show at once, not after the list TTL");
}
