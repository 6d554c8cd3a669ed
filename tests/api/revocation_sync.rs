//! Revoked sessions across nodes: persisted (a node started later refuses them), polled from
//! the database without Redis, and spread through Redis at once when it is configured.

use std::time::Duration;

use castwork::config::{Secret, Settings};

use crate::both;
use crate::helpers::{
    ADMIN_PASSWORD, Backend, RedisKeys, TestApp, poll_until, redis_prefix, redis_url, spawn_app_with,
    spawn_peer,
};
use crate::sessions::me;

/// Polling so slow that only the start-up load or Redis can explain a refusal within a test.
const NEVER_MS: u64 = 60_000;

/// Waits until `app` refuses `token`; panics after a generous deadline.
async fn refused_within(app: &TestApp, token: &str, deadline: Duration, what: &str) {
    let refused = poll_until(deadline, || async { (me(app, token).await.0 == 401).then_some(()) }).await;
    assert!(refused.is_some(), "{what}: the token was still accepted after {deadline:?}");
}

async fn a_node_started_later_refuses_revoked_sessions(backend: Backend) {
    let a = spawn_app_with(backend, |s| s.auth.revocation_poll_ms = NEVER_MS).await;
    let (access, refresh) = a.login_pair("admin", ADMIN_PASSWORD).await;
    let (other, _) = a.login_pair("admin", ADMIN_PASSWORD).await;
    assert_eq!(a.logout(&access, &refresh).await, 204);
    // a node starting now (or this one restarting) loads the deny-list before it serves
    let b = spawn_peer(&a, |s| s.auth.revocation_poll_ms = NEVER_MS).await;
    assert_eq!(me(&b, &access).await.0, 401);
    assert_eq!(me(&b, &other).await.0, 200);
}
both!(a_node_started_later_refuses_revoked_sessions);

async fn without_redis_other_nodes_poll_revocations(backend: Backend) {
    let fast = |s: &mut Settings| s.auth.revocation_poll_ms = 50;
    let a = spawn_app_with(backend, fast).await;
    let b = spawn_peer(&a, fast).await;
    let (access, refresh) = a.login_pair("admin", ADMIN_PASSWORD).await;
    // verified and remembered on both nodes
    assert_eq!(me(&a, &access).await.0, 200);
    assert_eq!(me(&b, &access).await.0, 200);
    assert_eq!(a.logout(&access, &refresh).await, 204);
    assert_eq!(me(&a, &access).await.0, 401, "the revoking node refuses at once");
    refused_within(&b, &access, Duration::from_secs(10), "the other node, by polling").await;
}
both!(without_redis_other_nodes_poll_revocations);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_other_nodes_refuse_revoked_sessions_at_once() {
    let prefix = redis_prefix();
    let _keys = RedisKeys(prefix.clone());
    let with_redis = |s: &mut Settings| {
        s.cache.redis.url = Secret::new(redis_url());
        s.cache.redis.key_prefix = prefix.clone();
        s.auth.revocation_poll_ms = NEVER_MS;
    };
    let a = spawn_app_with(Backend::Postgres, with_redis).await;
    let b = spawn_peer(&a, with_redis).await;
    let (access, refresh) = a.login_pair("admin", ADMIN_PASSWORD).await;
    assert_eq!(me(&b, &access).await.0, 200);
    assert_eq!(me(&b, &access).await.0, 200);
    assert_eq!(a.logout(&access, &refresh).await, 204);
    // no poll is due for a minute: the refusal can only come through Redis
    refused_within(&b, &access, Duration::from_secs(5), "the other node, through Redis").await;

    // an admin's revoke on the other node spreads the same way
    let (again, _) = a.login_pair("admin", ADMIN_PASSWORD).await;
    assert_eq!(me(&a, &again).await.0, 200);
    let admin_on_b = b.admin_token().await;
    let response = b
        .client
        .post(b.url("/api/v1/admin/users/admin/revoke-sessions"))
        .bearer_auth(&admin_on_b)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    refused_within(&a, &again, Duration::from_secs(5), "the first node, through Redis").await;
}
