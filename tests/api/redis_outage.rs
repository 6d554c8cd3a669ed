//! Redis cut, delayed and reset through a TCP proxy the test controls; the
//! machine's Redis itself is never touched.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{
    Backend, TestApp, poll_until, redis_address, redis_prefix, redis_url, spawn_app_with, spawn_peer,
};
use crate::support::proxy::Proxy;

async fn statuses(app: &TestApp, token: &str, paths: &[String]) -> Vec<u16> {
    let mut out = Vec::new();
    for path in paths {
        let response = app.client.get(app.url(path)).bearer_auth(token).send().await.unwrap();
        out.push(response.status().as_u16());
    }
    out
}

async fn health(app: &TestApp) -> Value {
    app.get_json("/health", None).await.1
}

async fn hits_l2(app: &TestApp, token: &str) -> u64 {
    let (_, report) = app.get_json("/api/v1/admin/cache", Some(token)).await;
    report["shards"].as_array().unwrap().iter().map(|s| s["hits_l2"].as_u64().unwrap()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explore_survives_a_redis_outage_and_uses_l2_again_after() {
    let proxy =
        Proxy::start(redis_address().parse().expect("CASTWORK_TEST_REDIS_URL names an IP address")).await;
    let prefix = redis_prefix();
    let _keys = crate::helpers::RedisKeys(prefix.clone());
    let url = format!("redis://{}", proxy.addr());
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.explore.import_sample_on_start = true;
        s.cache.redis.url = castwork::config::Secret::new(url);
        s.cache.redis.key_prefix = prefix.clone();
        s.cache.redis.breaker.minimum_calls = 4;
        s.cache.redis.breaker.window_size = 8;
        s.cache.redis.breaker.open_ms = 300;
        s.cache.redis.breaker.max_open_ms = 1000;
        s.health.probe_timeout_ms = 300;
    })
    .await;
    let admin = app.admin_token().await;
    let (_, page) = app.get_json("/api/v1/explore/items?limit=30", Some(&admin)).await;
    let paths: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| format!("/api/v1/explore/items/{}", crate::helpers::encode(i["id"].as_str().unwrap())))
        .chain([
            "/api/v1/explore/items?group=Physics".to_owned(),
            "/api/v1/explore/search?q=graph".to_owned(),
        ])
        .collect();
    assert!(statuses(&app, &admin, &paths).await.iter().all(|s| *s == 200));
    let ok = poll_until(Duration::from_secs(5), || async {
        (health(&app).await["components"]["redis"]["status"] == "ok").then_some(())
    })
    .await;
    assert!(ok.is_some(), "redis probed ok: {}", health(&app).await);

    // cut: everything still answers, from L1 or the database; health says degraded
    proxy.cut();
    for round in 0..3 {
        let got = statuses(&app, &admin, &paths).await;
        assert!(got.iter().all(|s| *s == 200), "round {round}: {got:?}");
        // a cut also means L1 was flushed and misses go to the database: still no 5xx
        let (status, _) = app.get_json("/api/v1/explore/items?group=Mathematics&limit=3", Some(&admin)).await;
        assert_eq!(status, 200);
    }
    let degraded = poll_until(Duration::from_secs(10), || async {
        let h = health(&app).await;
        (h["status"] == "degraded" && h["components"]["redis"]["status"] == "down").then_some(())
    })
    .await;
    assert!(degraded.is_some(), "health reports degraded: {}", health(&app).await);
    let (_, report) = app.get_json("/api/v1/admin/cache", Some(&admin)).await;
    assert_ne!(report["breaker"]["state"], "closed", "the breaker opened: {}", report["breaker"]);

    // restore: the breaker closes again and L2 serves hits
    proxy.restore();
    let recovered = poll_until(Duration::from_secs(15), || async {
        let _ = statuses(&app, &admin, &paths).await;
        let (_, report) = app.get_json("/api/v1/admin/cache", Some(&admin)).await;
        let h = health(&app).await;
        (report["breaker"]["state"] == "closed" && h["status"] == "ok").then_some(())
    })
    .await;
    assert!(recovered.is_some(), "recovered: {}", health(&app).await);
    // L2 is written again: items this node reads now are served to a second node
    // (talking to Redis directly) from L2, not from the database
    let (_, more) = app.get_json("/api/v1/explore/items?limit=20&group=Mathematics", Some(&admin)).await;
    let fresh: Vec<String> = more["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| format!("/api/v1/explore/items/{}", crate::helpers::encode(i["id"].as_str().unwrap())))
        .collect();
    assert!(statuses(&app, &admin, &fresh).await.iter().all(|s| *s == 200));
    let direct = redis_url();
    let peer = spawn_peer(&app, |s| {
        s.cache.redis.url = castwork::config::Secret::new(direct);
        s.cache.redis.key_prefix = prefix.clone();
    })
    .await;
    let peer_admin = peer.admin_token().await;
    let served = poll_until(Duration::from_secs(10), || async {
        assert!(statuses(&peer, &peer_admin, &fresh).await.iter().all(|s| *s == 200));
        (hits_l2(&peer, &peer_admin).await >= fresh.len() as u64).then_some(())
    })
    .await;
    assert!(served.is_some(), "the peer read from L2 what this node wrote after recovery");

    // delay and reset: slow or dropped connections are never a 5xx
    proxy.set_delay(Duration::from_millis(400));
    assert!(statuses(&app, &admin, &paths).await.iter().all(|s| *s == 200));
    proxy.set_delay(Duration::ZERO);
    assert!(statuses(&app, &admin, &paths).await.iter().all(|s| *s == 200));
}
