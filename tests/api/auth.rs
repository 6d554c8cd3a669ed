use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::both;
use crate::helpers::{ADMIN_PASSWORD, Backend, JWT_SECRET, TestApp, spawn_app_with};

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn claims(overrides: Value) -> Value {
    let mut c = json!({
        "sub": "x", "name": "admin", "role": "admin", "iss": "castwork", "aud": "castwork-api",
        "exp": now() + 600, "nbf": now() - 10, "iat": now() - 10, "jti": "j", "sid": "s"
    });
    for (k, v) in overrides.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn sign(alg: Algorithm, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap()
}

async fn me(app: &TestApp, token: &str) -> (u16, Value, Option<String>) {
    let response = app.client.get(app.url("/api/v1/auth/me")).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    let www = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
    (status, response.json().await.unwrap_or(Value::Null), www)
}

async fn login_and_token_use(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let response = app.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert!(body["refresh_token"].as_str().unwrap().len() >= 32);
    let (status, who, _) = me(&app, body["access_token"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(who["username"], "admin");
    assert_eq!(who["role"], "admin");
}
both!(login_and_token_use);

async fn bad_credentials_do_not_reveal_users(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let wrong = app.login("admin", "wrong-password").await;
    let unknown = app.login("nobody-here", "wrong-password").await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(unknown.status(), 401);
    let a: Value = wrong.json().await.unwrap();
    let b: Value = unknown.json().await.unwrap();
    assert_eq!(a, b, "same answer for a wrong password and an unknown user");
    assert_eq!(a["error"]["code"], "invalid_credentials");
}
both!(bad_credentials_do_not_reveal_users);

async fn bad_tokens_are_401_with_www_authenticate(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let good = app.admin_token().await;

    // no token at all
    let response = app.client.get(app.url("/api/v1/auth/me")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_token");

    // alg: none
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims(json!({})).to_string());
    let none = format!("{header}.{payload}.");
    // the right secret, the wrong algorithm
    let hs384 = sign(Algorithm::HS384, &claims(json!({})));
    // payload tampered: a viewer token edited to say admin
    let parts: Vec<&str> = good.split('.').collect();
    let mut payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["name"] = json!("someone-else");
    let tampered = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(payload.to_string()), parts[2]);
    let wrong_aud = sign(Algorithm::HS256, &claims(json!({ "aud": "someone-else" })));
    let wrong_iss = sign(Algorithm::HS256, &claims(json!({ "iss": "someone-else" })));
    let other_key = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({})),
        &EncodingKey::from_secret(b"another-secret-another-secret-another-secret"),
    )
    .unwrap();

    for (what, token) in [
        ("alg none", none.as_str()),
        ("wrong algorithm", hs384.as_str()),
        ("tampered payload", tampered.as_str()),
        ("wrong audience", wrong_aud.as_str()),
        ("wrong issuer", wrong_iss.as_str()),
        ("other key", other_key.as_str()),
        ("garbage", "not-a-jwt"),
    ] {
        let (status, body, www) = me(&app, token).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["error"]["code"], "invalid_token", "{what}: {body}");
        assert!(www.unwrap_or_default().contains("invalid_token"), "{what}");
    }

    let expired = sign(
        Algorithm::HS256,
        &claims(json!({ "exp": now() - 3600, "iat": now() - 7200, "nbf": now() - 7200 })),
    );
    let (status, body, _) = me(&app, &expired).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("token_expired")), "{body}");

    // a correctly signed, valid token is accepted (the forged ones above failed for their flaw alone)
    let (status, _, _) = me(&app, &sign(Algorithm::HS256, &claims(json!({})))).await;
    assert_eq!(status, 200);
}
both!(bad_tokens_are_401_with_www_authenticate);

async fn roles_are_enforced(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let viewer = app.user_token("vera", "viewer").await;
    let editor = app.user_token("eddie", "editor").await;
    let admin = app.admin_token().await;
    for token in [&viewer, &editor] {
        let (status, body) = app.get_json("/api/v1/admin/actors", Some(token)).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let (status, _) = app.get_json("/api/v1/admin/actors", Some(&admin)).await;
    assert_eq!(status, 200);
    let (status, who) = app.get_json("/api/v1/auth/me", Some(&viewer)).await;
    assert_eq!((status, who["role"].as_str()), (200, Some("viewer")));
    // duplicate users conflict
    let response = app
        .client
        .post(app.url("/api/v1/admin/users"))
        .bearer_auth(&admin)
        .json(&json!({ "username": "vera", "password": "another castwork test secret", "role": "viewer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
}
both!(roles_are_enforced);

async fn refresh_tokens_rotate_and_reuse_revokes_the_family(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let first: Value = app.login("admin", ADMIN_PASSWORD).await.json().await.unwrap();
    let r1 = first["refresh_token"].as_str().unwrap().to_owned();

    let (status, second) = app.refresh(&r1).await;
    assert_eq!(status, 200, "{second}");
    let r2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    let (status, _, _) = me(&app, second["access_token"].as_str().unwrap()).await;
    assert_eq!(status, 200);

    // r1 was spent: using it again is reuse, which revokes the whole family (r2 too)
    let (status, body) = app.refresh(&r1).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("refresh_token_reused")), "{body}");
    let (status, body) = app.refresh(&r2).await;
    assert_eq!(status, 401, "{body}");

    // an unknown token
    let (status, body) = app.refresh("made-up").await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_refresh_token")));
}
both!(refresh_tokens_rotate_and_reuse_revokes_the_family);

async fn logout_revokes_the_session(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let (access, refresh) = app.login_pair("admin", ADMIN_PASSWORD).await;
    assert_eq!(app.logout(&access, &refresh).await, 204);
    let (status, _) = app.refresh(&refresh).await;
    assert_eq!(status, 401);
    // logout needs authentication
    let response = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .json(&json!({ "refresh_token": refresh }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}
both!(logout_revokes_the_session);

async fn repeated_failed_logins_are_slowed_down(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.auth.login_burst = 3;
        s.auth.login_per_minute = 1;
    })
    .await;
    for name in ["admin", "ghost-user"] {
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(app.login(name, "wrong-password").await.status().as_u16());
        }
        assert_eq!(&statuses[..3], &[401, 401, 401], "{name}");
        let response = app.login(name, "wrong-password").await;
        assert_eq!(response.status(), 429, "{name}");
        let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(retry >= 1);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limited");
        // the right password does not get through while locked out
        if name == "admin" {
            assert_eq!(app.login("admin", ADMIN_PASSWORD).await.status(), 429);
        }
    }
}
both!(repeated_failed_logins_are_slowed_down);
