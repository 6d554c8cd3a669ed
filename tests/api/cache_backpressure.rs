//! The cache under pressure: every load stalled behind a closed [`LoadGate`], and
//! the L2 reader killed under load.

use std::time::Duration;

use castwork::cache::LoadGate;
use castwork::startup::Hooks;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, RedisKeys, TestApp, encode, find_node, poll_until, redis_prefix, redis_url, spawn_app_hooked,
    spawn_app_with,
};

const LOAD_TIMEOUT_MS: u64 = 800;
const ASK_TIMEOUT_MS: u64 = 3000;

fn item(id: &str) -> Value {
    json!({
        "id": id, "title": format!("Stalled {id}"), "body": "Body text.", "category": "Some Category",
        "category_code": "cs.CV", "group": "Computer Science", "tags": ["cs.CV"],
        "published_at": "2025-07-01T00:00:00Z"
    })
}

/// Status and error code of a GET of every path, all at once.
async fn read_all(app: &TestApp, token: &str, paths: &[String]) -> Vec<(u16, String, bool)> {
    let requests = paths.iter().map(|path| {
        let request = app.client.get(app.url(path)).bearer_auth(token).send();
        async move {
            let response = request.await.expect("request");
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
            (status, code, retry_after)
        }
    });
    futures::future::join_all(requests).await
}

async fn shard_sum(app: &TestApp, token: &str, field: &str) -> u64 {
    let (status, report) = app.get_json("/api/v1/admin/cache", Some(token)).await;
    assert_eq!(status, 200, "{report}");
    report["shards"].as_array().unwrap().iter().map(|s| s[field].as_u64().unwrap()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_load_stalled_reads_answer_503_then_200_when_the_database_is_back() {
    let gate = LoadGate::closed();
    let hooks = Hooks { load_gate: Some(gate.clone()), ..Hooks::default() };
    let app = spawn_app_hooked(Backend::Sqlite, hooks, |s| {
        s.cache.load_timeout_ms = LOAD_TIMEOUT_MS;
        s.supervision.ask_timeout_ms = ASK_TIMEOUT_MS;
    })
    .await;
    let admin = app.admin_token().await;
    for i in 0..10 {
        let response = app
            .client
            .post(app.url("/api/v1/items"))
            .bearer_auth(&admin)
            .json(&item(&format!("stall-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let paths: Vec<String> = (0..200)
        .map(|i| match i % 12 {
            10 => "/api/v1/explore/items?category=cs.CV".to_owned(),
            11 => "/api/v1/explore/categories".to_owned(),
            n => format!("/api/v1/explore/items/{}", encode(&format!("stall-{n}"))),
        })
        .collect();

    let stalled = read_all(&app, &admin, &paths).await;
    // every read answered, none with a 500: each with the load deadline's clear 503, which
    // comes before the ask deadline (a `cache_timeout` would mean the ask ran out first)
    let unexpected: Vec<_> = stalled
        .iter()
        .filter(|(status, code, _)| (*status, code.as_str()) != (503, "cache_load_timeout"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} reads answered otherwise: {:?}",
        unexpected.len(),
        &unexpected[..3.min(unexpected.len())]
    );
    assert!(stalled.iter().all(|(_, _, retry_after)| *retry_after), "every 503 says when to retry");
    // one load per key at a time, each given up at its deadline: no load is left holding its key
    assert!(shard_sum(&app, &admin, "load_timeouts").await >= 12);
    assert_eq!(shard_sum(&app, &admin, "in_flight").await, 0);
    assert_eq!(gate.held(), 0, "the stalled loads were dropped at their deadline");
    let (status, _) = app.get_json("/api/v1/admin/cache", Some(&admin)).await;
    assert_eq!(status, 200);

    // the database answers again: the same reads load, and answer 200
    gate.open();
    let back = read_all(&app, &admin, &paths).await;
    let failed: Vec<_> = back.iter().filter(|(status, _, _)| *status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} reads failed after the loads came back: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(gate.passed() >= 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_l2_reader_under_load_restarts_it_and_reads_still_answer() {
    let prefix = redis_prefix();
    let _keys = RedisKeys(prefix.clone());
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.explore.import_sample_on_start = true;
        s.cache.redis.url = castwork::config::Secret::new(redis_url());
        s.cache.redis.key_prefix = prefix.clone();
    })
    .await;
    let admin = app.admin_token().await;
    let tree = app.tree(&admin).await;
    for name in ["cache-l2-reader", "cache-resync", "cache-listener"] {
        let node = find_node(&tree, name).unwrap_or_else(|| panic!("{name} in the tree: {tree}"));
        assert_eq!(node["status"], "running", "{node}");
    }
    let (_, page) = app.get_json("/api/v1/explore/items?limit=50", Some(&admin)).await;
    let ids: Vec<String> =
        page["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect();
    let paths: Vec<String> =
        (0..200).map(|i| format!("/api/v1/explore/items/{}", encode(&ids[i % ids.len()]))).collect();
    let load = read_all(&app, &admin, &paths);
    let chaos = async {
        tokio::task::yield_now().await;
        let response = app.chaos(&admin, "cache-l2-reader", "kill").await;
        assert_eq!(response.status(), 202);
    };
    let (statuses, ()) = tokio::join!(load, chaos);
    let bad: Vec<_> = statuses.iter().filter(|(status, _, _)| *status != 200).collect();
    assert!(bad.is_empty(), "no failed read: {bad:?}");
    let restarted = poll_until(Duration::from_secs(10), || async {
        let tree = app.tree(&admin).await;
        let node = find_node(&tree, "cache-l2-reader")?.clone();
        (node["restarts"].as_u64()? >= 1 && node["status"] == "running").then_some(node)
    })
    .await;
    let Some(node) = restarted else { panic!("the reader did not restart: {}", app.tree(&admin).await) };
    assert_eq!(node["last_failure"]["kind"], "killed");
    // the new incarnation takes the misses: pages not read before go through it
    let handled = node["messages_handled"].as_u64().unwrap();
    let fresh: Vec<String> = (1..=10).map(|n| format!("/api/v1/explore/items?limit={n}")).collect();
    let after = read_all(&app, &admin, &fresh).await;
    assert!(after.iter().all(|(status, _, _)| *status == 200), "{after:?}");
    let served = poll_until(Duration::from_secs(5), || async {
        let tree = app.tree(&admin).await;
        (find_node(&tree, "cache-l2-reader")?["messages_handled"].as_u64()? > handled).then_some(())
    })
    .await;
    assert!(served.is_some(), "the restarted reader handled the new misses");

    // the post-outage catch-up is supervised the same way
    assert_eq!(app.chaos(&admin, "cache-resync", "kill").await.status(), 202);
    let resynced = poll_until(Duration::from_secs(10), || async {
        let tree = app.tree(&admin).await;
        let node = find_node(&tree, "cache-resync")?.clone();
        (node["restarts"].as_u64()? >= 1 && node["status"] == "running").then_some(())
    })
    .await;
    assert!(resynced.is_some(), "the resync restarted: {}", app.tree(&admin).await);
}
