//! Sessions: logout revokes only the caller's own sessions, a revoked session's access tokens
//! are refused at once (also when remembered as verified), admins revoke a user's sessions,
//! and tokens with a `crit` header are refused.

use serde_json::{Value, json};

use crate::both;
use crate::helpers::{ADMIN_PASSWORD, Backend, JWT_SECRET, TestApp, spawn_app_with};

/// Status of `GET /api/v1/auth/me` with `token`, and the error code if any.
pub async fn me(app: &TestApp, token: &str) -> (u16, Value) {
    app.get_json("/api/v1/auth/me", Some(token)).await
}

async fn create_user(app: &TestApp, username: &str, role: &str) -> String {
    let admin = app.admin_token().await;
    let password = format!("{username}-password");
    let response = app
        .client
        .post(app.url("/api/v1/admin/users"))
        .bearer_auth(&admin)
        .json(&json!({ "username": username, "password": password, "role": role }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    password
}

async fn logout_with_another_users_refresh_token_revokes_nothing_of_theirs(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let password = create_user(&app, "mallory", "viewer").await;
    let (victim_access, victim_refresh) = app.login_pair("admin", ADMIN_PASSWORD).await;
    let (mallory_access, _) = app.login_pair("mallory", &password).await;

    // answered like an unknown token: nothing tells the caller whether it was valid
    assert_eq!(app.logout(&mallory_access, &victim_refresh).await, 204);

    // the victim's session is untouched: its access token works and its refresh token rotates
    assert_eq!(me(&app, &victim_access).await.0, 200);
    let (status, body) = app.refresh(&victim_refresh).await;
    assert_eq!(status, 200, "{body}");
    // the caller's own session ended all the same
    assert_eq!(me(&app, &mallory_access).await.0, 401);
}
both!(logout_with_another_users_refresh_token_revokes_nothing_of_theirs);

async fn access_token_is_refused_at_once_after_logout(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let (access, refresh_token) = app.login_pair("admin", ADMIN_PASSWORD).await;
    // verified, so remembered: the next use would skip the signature check
    assert_eq!(me(&app, &access).await.0, 200);
    assert_eq!(me(&app, &access).await.0, 200);
    assert_eq!(app.logout(&access, &refresh_token).await, 204);
    let (status, body) = me(&app, &access).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_token")), "{body}");
    // another session of the same user is not affected
    let (other, _) = app.login_pair("admin", ADMIN_PASSWORD).await;
    assert_eq!(me(&app, &other).await.0, 200);
}
both!(access_token_is_refused_at_once_after_logout);

async fn refresh_token_reuse_refuses_the_familys_access_tokens(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let (first_access, r1) = app.login_pair("admin", ADMIN_PASSWORD).await;
    let (status, second) = app.refresh(&r1).await;
    assert_eq!(status, 200, "{second}");
    let second_access = second["access_token"].as_str().unwrap().to_owned();
    assert_eq!(me(&app, &first_access).await.0, 200);
    assert_eq!(me(&app, &second_access).await.0, 200);

    let (status, body) = app.refresh(&r1).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("refresh_token_reused")), "{body}");
    for token in [&first_access, &second_access] {
        let (status, body) = me(&app, token).await;
        assert_eq!(status, 401, "{body}");
    }
}
both!(refresh_token_reuse_refuses_the_familys_access_tokens);

async fn jwt_with_a_crit_header_is_refused(backend: Backend) {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let app = spawn_app_with(backend, |_| {}).await;
    let (access, _) = app.login_pair("admin", ADMIN_PASSWORD).await;
    let parts: Vec<&str> = access.split('.').collect();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[1]).unwrap(),
    )
    .unwrap();
    let key = EncodingKey::from_secret(JWT_SECRET.as_bytes());
    let mut header = Header::new(Algorithm::HS256);
    header.crit = Some(vec!["exp".to_owned()]);
    let crit = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let (status, body) = me(&app, &crit).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_token")), "{body}");
    // the same claims signed without `crit` are accepted
    let plain = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
    assert_eq!(me(&app, &plain).await.0, 200);
}
both!(jwt_with_a_crit_header_is_refused);

async fn admin_revokes_a_users_sessions(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let password = create_user(&app, "victor", "editor").await;
    let (access, refresh_token) = app.login_pair("victor", &password).await;
    let (other_access, _) = app.login_pair("victor", &password).await;
    assert_eq!(me(&app, &access).await.0, 200);
    let admin = app.admin_token().await;
    let revoke = |token: String, username: &'static str| {
        let request = app.client.post(app.url(&format!("/api/v1/admin/users/{username}/revoke-sessions")));
        async move { request.bearer_auth(token).send().await.unwrap().status().as_u16() }
    };

    // only admins may
    assert_eq!(revoke(access.clone(), "victor").await, 403);
    assert_eq!(me(&app, &access).await.0, 200);

    assert_eq!(revoke(admin.clone(), "victor").await, 204);
    assert_eq!(me(&app, &access).await.0, 401);
    assert_eq!(me(&app, &other_access).await.0, 401);
    assert_eq!(app.refresh(&refresh_token).await.0, 401);
    // the user can log in again
    let (fresh, _) = app.login_pair("victor", &password).await;
    assert_eq!(me(&app, &fresh).await.0, 200);
    // the admin's own session is untouched
    assert_eq!(me(&app, &admin).await.0, 200);

    let response = app
        .client
        .post(app.url("/api/v1/admin/users/nobody-by-that-name/revoke-sessions"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found", "{body}");
}
both!(admin_revokes_a_users_sessions);
