//! Login throttling under concurrency, bounded password hashing, password rules and the client
//! address behind trusted proxies.
//!
//! Counts come from the node's own `GET /api/v1/admin/auth` (counters its `AuthService` keeps),
//! never from `/metrics`: the metrics recorder is shared by every node of the test process.

use std::collections::BTreeMap;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::both;
use crate::helpers::{ADMIN_PASSWORD, Backend, TestApp, spawn_app_with};

async fn auth_report(app: &TestApp, admin: &str) -> Value {
    let (status, body) = app.get_json("/api/v1/admin/auth", Some(admin)).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn counter(report: &Value, pointer: &str) -> u64 {
    report.pointer(pointer).and_then(Value::as_u64).unwrap_or_else(|| panic!("{pointer} in {report}"))
}

async fn login_from(app: &TestApp, username: &str, password: &str, forwarded_for: &str) -> u16 {
    let response = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({ "username": username, "password": password }))
        .send()
        .await
        .expect("login request");
    response.status().as_u16()
}

async fn concurrent_wrong_logins_verify_at_most_the_burst(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.auth.login_burst = 5;
        // no unit comes back while the test runs
        s.auth.login_per_minute = 1;
        // the admitted attempts queue for hashing permits; none may be turned away as busy here
        s.auth.hashing_wait_ms = 20_000;
    })
    .await;
    let admin = app.admin_token().await;
    let before = auth_report(&app, &admin).await;

    let responses = join_all((0..200).map(|_| app.login("admin", "wrong-password"))).await;
    let mut statuses = BTreeMap::<u16, u64>::new();
    for response in responses {
        let status = response.status().as_u16();
        *statuses.entry(status).or_default() += 1;
        if status == 429 {
            let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(retry >= 1);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "rate_limited");
        }
    }

    let after = auth_report(&app, &admin).await;
    let verified =
        counter(&after, "/hashing/verified_mismatch") - counter(&before, "/hashing/verified_mismatch");
    let refused =
        counter(&after, "/limiter/refused_username") - counter(&before, "/limiter/refused_username");
    assert_eq!(verified, 5, "at most the burst is verified; statuses {statuses:?}");
    assert_eq!(statuses.get(&401), Some(&5), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&195), "every other attempt is refused: {statuses:?}");
    assert_eq!(refused, 195);
    // the right password waits like the others
    assert_eq!(app.login("admin", ADMIN_PASSWORD).await.status(), 429);
}
both!(concurrent_wrong_logins_verify_at_most_the_burst);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_hashing_answers_503_busy() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        // room in the limiter for every attempt; one permit, no waiting for it
        s.auth.login_burst = 100;
        s.auth.hashing_concurrency = 1;
        s.auth.hashing_wait_ms = 0;
    })
    .await;
    let admin = app.admin_token().await;
    let attempts = (0..30).map(|n| app.login_owned(format!("nobody{n}"), "wrong-password"));
    let responses = join_all(attempts).await;
    let mut busy = 0;
    for response in responses {
        match response.status().as_u16() {
            401 => {}
            503 => {
                busy += 1;
                assert_eq!(response.headers()["retry-after"], "1");
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "busy", "{body}");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(busy >= 1, "30 verifications at once on one permit, and none was turned away");
    let report = auth_report(&app, &admin).await;
    assert_eq!(counter(&report, "/hashing/busy"), busy);
    assert_eq!(counter(&report, "/hashing/permits"), 1);
}

async fn weak_passwords_are_refused(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let admin = app.admin_token().await;
    for (password, rule) in [
        ("12345678", "too easy to guess"),
        ("        ", "too easy to guess"),
        ("abc\u{0}defgh", "control characters"),
        ("carol12345", "too easy to guess"),
    ] {
        let response = app
            .client
            .post(app.url("/api/v1/admin/users"))
            .bearer_auth(&admin)
            .json(&json!({ "username": "carol", "password": password, "role": "viewer" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{password:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "validation_failed");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(rule), "{password:?}: {message}");
        assert!(body["error"]["fields"]["password"].is_string(), "{body}");
    }
    let response = app
        .client
        .post(app.url("/api/v1/admin/users"))
        .bearer_auth(&admin)
        .json(&json!({ "username": "carol", "password": "plum orchard telescope 42", "role": "viewer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}
both!(weak_passwords_are_refused);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        // a client address may fail 4 x login_burst times
        s.auth.login_burst = 1;
        s.auth.login_per_minute = 1;
    })
    .await;
    let admin = app.admin_token().await;
    for n in 0..4 {
        let status = login_from(&app, &format!("user{n}"), "wrong-password", &format!("203.0.113.{n}")).await;
        assert_eq!(status, 401);
    }
    // a new name from "another address": still the same peer, whose bucket is empty
    assert_eq!(login_from(&app, "user9", "wrong-password", "198.51.100.9").await, 429);
    assert_eq!(counter(&auth_report(&app, &admin).await, "/limiter/refused_client"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_a_trusted_peer_names_the_client() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.auth.login_burst = 1;
        s.auth.login_per_minute = 1;
        s.server.trusted_proxies = vec!["127.0.0.1/32".to_owned()];
    })
    .await;
    let admin = app.admin_token().await;
    // a client-written entry on the left is not believed: the proxy appended the real one
    for n in 0..4 {
        let status = login_from(&app, &format!("user{n}"), "wrong-password", "192.0.2.77, 203.0.113.5").await;
        assert_eq!(status, 401);
    }
    assert_eq!(login_from(&app, "user9", "wrong-password", "198.51.100.1, 203.0.113.5").await, 429);
    // other clients behind the same proxy are not slowed down by that one
    assert_eq!(login_from(&app, "user9", "wrong-password", "203.0.113.6").await, 401);
    assert_eq!(app.login("user8", "wrong-password").await.status(), 401, "the proxy itself");
    assert_eq!(counter(&auth_report(&app, &admin).await, "/limiter/refused_client"), 1);
}

impl TestApp {
    /// [`TestApp::login`] with an owned username, for futures that outlive the loop building them.
    async fn login_owned(&self, username: String, password: &str) -> reqwest::Response {
        self.login(&username, password).await
    }
}
