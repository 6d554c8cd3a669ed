//! [`AuthService`] against a fresh SQLite file per test.

use std::net::{IpAddr, Ipv4Addr};

use sea_orm::IntoActiveModel;

use super::*;
use crate::auth::PolicyError;
use crate::db::testing::TempSqlite;

const PASSWORD: &str = "correct horse battery staple";

fn client() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

fn settings() -> AuthSettings {
    AuthSettings {
        refresh_ttl_secs: 3600,
        login_burst: 3,
        login_per_minute: 1,
        revocation_max_entries: 1000,
        ..AuthSettings::for_tests("0123456789abcdef0123456789abcdef-service-tests")
    }
}

struct TestDb {
    service: AuthService,
    _sqlite: TempSqlite,
}

async fn setup() -> TestDb {
    setup_with(settings()).await
}

async fn setup_with(settings: AuthSettings) -> TestDb {
    let sqlite = TempSqlite::new().await;
    let keys = Arc::new(JwtKeys::from_settings(&settings).unwrap().0);
    TestDb { service: AuthService::new(sqlite.db.clone(), keys, &settings), _sqlite: sqlite }
}

async fn with_alice() -> (TestDb, user::Model) {
    let test = setup().await;
    let alice = test.service.create_user("alice", PASSWORD, Role::Editor).await.unwrap();
    (test, alice)
}

async fn stored(service: &AuthService, token: &str) -> refresh_token::Model {
    refresh_token::Entity::find()
        .filter(refresh_token::Column::TokenHash.eq(hash_token(token)))
        .one(&service.db)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn creates_users_and_refuses_duplicates() {
    let (test, alice) = with_alice().await;
    let svc = &test.service;
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.role, "editor");
    assert!(uuid::Uuid::parse_str(&alice.id).is_ok());
    assert!(alice.password_hash.starts_with("$argon2id$"));
    assert!(matches!(
        svc.create_user("alice", PASSWORD, Role::Viewer).await,
        Err(AuthError::UserExists(name)) if name == "alice"
    ));
    assert!(matches!(svc.create_user("ALICE", PASSWORD, Role::Viewer).await, Err(AuthError::UserExists(_))));
    svc.create_user("bob.smith-2_x", PASSWORD, Role::Viewer).await.unwrap();
}

#[tokio::test]
async fn refuses_bad_usernames_and_passwords() {
    let test = setup().await;
    let svc = &test.service;
    for name in ["ab", "has space", "émile", "semi;colon", &"x".repeat(65)] {
        assert!(
            matches!(
                svc.create_user(name, PASSWORD, Role::Viewer).await,
                Err(AuthError::Policy(PolicyError::Username))
            ),
            "{name}"
        );
    }
    for password in ["short", &"p".repeat(1025)] {
        assert!(matches!(
            svc.create_user("carol", password, Role::Viewer).await,
            Err(AuthError::Policy(PolicyError::PasswordLength))
        ));
    }
}

/// The rules `castwork user add`, the admin API and the bootstrap admin share.
#[tokio::test]
async fn refuses_weak_passwords_and_control_characters_everywhere() {
    let (test, _) = with_alice().await;
    let svc = &test.service;
    for (password, expected) in [
        ("12345678", "too easy to guess"),
        ("        ", "too easy to guess"),
        ("abc\0defgh", "control characters"),
        ("carol12345", "too easy to guess"),
    ] {
        let created = svc.create_user("carol", password, Role::Viewer).await;
        assert!(
            matches!(&created, Err(AuthError::Policy(e)) if e.to_string().contains(expected)),
            "{created:?}"
        );
        let changed = svc.set_password("alice", password).await;
        assert!(matches!(&changed, Err(AuthError::Policy(_))), "{changed:?}");
        let fresh = setup().await;
        let bootstrap = fresh.service.ensure_bootstrap_admin(password).await;
        assert!(matches!(&bootstrap, Err(AuthError::Policy(_))), "{bootstrap:?}");
    }
    assert_eq!(svc.report().hashing.hashed, 1, "only alice's password was hashed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_logins_verify_at_most_the_burst() {
    let (test, _) = with_alice().await;
    let svc = &test.service;
    let attempts = (0..50).map(|_| svc.login("alice", "not the password", client()));
    let outcomes = futures::future::join_all(attempts).await;
    let bad = outcomes.iter().filter(|o| matches!(o, Err(AuthError::BadCredentials))).count();
    let limited = outcomes.iter().filter(|o| matches!(o, Err(AuthError::RateLimited { .. }))).count();
    assert_eq!((bad, limited), (3, 47));
    let report = svc.report();
    assert_eq!(report.hashing.verified_mismatch, 3);
    assert_eq!(report.limiter.refused_username, 47);
}

#[tokio::test]
async fn attempts_turned_away_as_busy_are_given_back() {
    let test = setup_with(AuthSettings { hashing_wait_ms: 1, ..settings() }).await;
    let svc = &test.service;
    svc.create_user("alice", PASSWORD, Role::Editor).await.unwrap();
    let occupied = svc.hashing.occupy().await;
    for _ in 0..10 {
        // nothing is checked: busy once auth.hashing_wait_ms has passed
        assert!(matches!(svc.login("alice", PASSWORD, client()).await, Err(AuthError::Busy { .. })));
    }
    drop(occupied);
    assert_eq!(svc.report().hashing.busy, 10);
    // the whole burst is still there
    for _ in 0..3 {
        assert!(matches!(
            svc.login("alice", "wrong password", client()).await,
            Err(AuthError::BadCredentials)
        ));
    }
    assert!(matches!(svc.login("alice", PASSWORD, client()).await, Err(AuthError::RateLimited { .. })));
}

#[tokio::test]
async fn successful_logins_give_their_unit_back() {
    let (test, _) = with_alice().await;
    let svc = &test.service;
    for _ in 0..2 {
        assert!(matches!(
            svc.login("alice", "wrong password", client()).await,
            Err(AuthError::BadCredentials)
        ));
    }
    for _ in 0..5 {
        svc.login("alice", PASSWORD, client()).await.unwrap();
    }
    // two failures are still counted: the third one empties the bucket
    assert!(matches!(svc.login("alice", "wrong password", client()).await, Err(AuthError::BadCredentials)));
    assert!(matches!(svc.login("alice", PASSWORD, client()).await, Err(AuthError::RateLimited { .. })));
}

#[tokio::test]
async fn login_issues_a_working_pair() {
    let (test, alice) = with_alice().await;
    let svc = &test.service;
    let pair = svc.login("alice", PASSWORD, client()).await.unwrap();
    assert_eq!(pair.token_type, "Bearer");
    assert_eq!(pair.expires_in, 900);
    assert_eq!(URL_SAFE_NO_PAD.decode(&pair.refresh_token).unwrap().len(), 32);
    let principal = svc.authenticate(&pair.access_token).unwrap();
    assert_eq!(principal.user_id, alice.id);
    assert_eq!(principal.username, "alice");
    assert_eq!(principal.role, Role::Editor);
    assert!(principal.require(Role::Editor).is_ok());
    assert!(matches!(principal.require(Role::Admin), Err(AuthError::Forbidden { required: Role::Admin })));

    let row = stored(svc, &pair.refresh_token).await;
    assert_eq!(row.user_id, alice.id);
    assert_ne!(row.token_hash, pair.refresh_token);
    assert_eq!(row.token_hash.len(), 64);
    assert!(row.used_at.is_none() && row.revoked_at.is_none());
    assert!(!format!("{pair:?}").contains(&pair.refresh_token));

    let second = svc.login("alice", PASSWORD, client()).await.unwrap();
    assert_ne!(stored(svc, &second.refresh_token).await.family_id, row.family_id);
}

#[tokio::test]
async fn authenticate_needs_a_valid_token() {
    let test = setup().await;
    assert!(matches!(test.service.authenticate(""), Err(AuthError::MissingToken)));
    assert!(matches!(test.service.authenticate("   "), Err(AuthError::MissingToken)));
    assert!(matches!(test.service.authenticate("not.a.jwt"), Err(AuthError::InvalidToken(_))));
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    let (test, _) = with_alice().await;
    let svc = &test.service;
    let wrong = svc.login("alice", "not the password", client()).await.unwrap_err();
    let unknown = svc.login("mallory", PASSWORD, client()).await.unwrap_err();
    assert!(matches!(wrong, AuthError::BadCredentials));
    assert!(matches!(unknown, AuthError::BadCredentials));
    assert_eq!(wrong.to_string(), unknown.to_string());
}

#[tokio::test]
async fn repeated_failures_are_rate_limited() {
    let (test, _) = with_alice().await;
    let svc = &test.service;
    for _ in 0..3 {
        assert!(matches!(
            svc.login("alice", "wrong password", client()).await,
            Err(AuthError::BadCredentials)
        ));
    }
    // Even the right password is refused while locked out.
    match svc.login("alice", PASSWORD, client()).await {
        Err(AuthError::RateLimited { retry_after }) => assert!(retry_after > std::time::Duration::ZERO),
        other => panic!("expected RateLimited, got {other:?}"),
    }
    // Unknown users are limited the same way.
    let elsewhere = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
    for n in 0..3u8 {
        let from = IpAddr::V4(Ipv4Addr::new(10, 9, 9, n));
        assert!(matches!(svc.login("ghost", "whatever1", from).await, Err(AuthError::BadCredentials)));
    }
    assert!(matches!(svc.login("ghost", "whatever1", elsewhere).await, Err(AuthError::RateLimited { .. })));
}

#[tokio::test]
async fn refresh_rotates_and_detects_reuse() {
    let (test, alice) = with_alice().await;
    let svc = &test.service;
    let first = svc.login("alice", PASSWORD, client()).await.unwrap();
    let second = svc.refresh(&first.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(svc.authenticate(&second.access_token).unwrap().user_id, alice.id);
    let (old, new) = (stored(svc, &first.refresh_token).await, stored(svc, &second.refresh_token).await);
    assert!(old.used_at.is_some());
    assert_eq!(old.family_id, new.family_id);

    let third = svc.refresh(&second.refresh_token).await.unwrap();
    // Replaying the first token revokes the family, the newest token included.
    assert!(matches!(svc.refresh(&first.refresh_token).await, Err(AuthError::RefreshReuse)));
    assert!(stored(svc, &third.refresh_token).await.revoked_at.is_some());
    assert!(matches!(svc.refresh(&third.refresh_token).await, Err(AuthError::InvalidRefreshToken)));
    // Other sessions are untouched.
    let other = svc.login("alice", PASSWORD, client()).await.unwrap();
    assert!(svc.refresh(&other.refresh_token).await.is_ok());
}

#[tokio::test]
async fn concurrent_refreshes_let_one_through_and_revoke_the_family() {
    let (test, _) = with_alice().await;
    let svc = &test.service;
    let pair = svc.login("alice", PASSWORD, client()).await.unwrap();
    let (a, b) = tokio::join!(svc.refresh(&pair.refresh_token), svc.refresh(&pair.refresh_token));
    let (winner, loser) = match (a, b) {
        (Ok(winner), Err(loser)) | (Err(loser), Ok(winner)) => (winner, loser),
        other => panic!("expected one success and one failure, got {other:?}"),
    };
    assert!(matches!(loser, AuthError::RefreshReuse), "{loser:?}");
    assert!(matches!(svc.refresh(&winner.refresh_token).await, Err(AuthError::InvalidRefreshToken)));
}

#[tokio::test]
async fn refresh_uses_the_current_role_and_user() {
    let (test, alice) = with_alice().await;
    let svc = &test.service;
    let pair = svc.login("alice", PASSWORD, client()).await.unwrap();
    let mut active = alice.clone().into_active_model();
    active.role = Set("admin".to_owned());
    active.update(&svc.db).await.unwrap();
    let next = svc.refresh(&pair.refresh_token).await.unwrap();
    assert_eq!(svc.authenticate(&next.access_token).unwrap().role, Role::Admin);

    user::Entity::delete_by_id(alice.id.clone()).exec(&svc.db).await.unwrap();
    assert!(matches!(svc.refresh(&next.refresh_token).await, Err(AuthError::InvalidRefreshToken)));
}

#[tokio::test]
async fn logout_revokes_the_family_and_is_idempotent() {
    let (test, _) = with_alice().await;
    let svc = &test.service;
    let first = svc.login("alice", PASSWORD, client()).await.unwrap();
    let second = svc.refresh(&first.refresh_token).await.unwrap();
    let caller = svc.authenticate(&second.access_token).unwrap();
    svc.logout(&caller, &second.refresh_token).await.unwrap();
    assert!(matches!(svc.refresh(&second.refresh_token).await, Err(AuthError::InvalidRefreshToken)));
    assert!(matches!(svc.authenticate(&second.access_token), Err(AuthError::SessionRevoked)));
    assert!(matches!(svc.authenticate(&first.access_token), Err(AuthError::SessionRevoked)));
    svc.logout(&caller, &second.refresh_token).await.unwrap();
    svc.logout(&caller, "never-issued").await.unwrap();
    svc.logout(&caller, "").await.unwrap();
}

#[tokio::test]
async fn logout_revokes_only_the_callers_own_sessions() {
    let (test, _) = with_alice().await;
    let svc = &test.service;
    svc.create_user("mallory", PASSWORD, Role::Viewer).await.unwrap();
    let alices = svc.login("alice", PASSWORD, client()).await.unwrap();
    let alices_other = svc.login("alice", PASSWORD, client()).await.unwrap();
    let mallorys = svc.login("mallory", PASSWORD, client()).await.unwrap();
    let mallory = svc.authenticate(&mallorys.access_token).unwrap();

    svc.logout(&mallory, &alices.refresh_token).await.unwrap();
    assert!(stored(svc, &alices.refresh_token).await.revoked_at.is_none());
    assert!(svc.authenticate(&alices.access_token).is_ok());
    assert!(matches!(svc.authenticate(&mallorys.access_token), Err(AuthError::SessionRevoked)));

    // a caller may end another session of its own with its refresh token
    let alice = svc.authenticate(&alices.access_token).unwrap();
    svc.logout(&alice, &alices_other.refresh_token).await.unwrap();
    assert!(matches!(svc.authenticate(&alices_other.access_token), Err(AuthError::SessionRevoked)));
    assert!(matches!(svc.authenticate(&alices.access_token), Err(AuthError::SessionRevoked)));
}

#[tokio::test]
async fn admin_revoke_ends_every_session_of_the_user() {
    let (test, _) = with_alice().await;
    let svc = &test.service;
    let one = svc.login("alice", PASSWORD, client()).await.unwrap();
    let two = svc.login("alice", PASSWORD, client()).await.unwrap();
    svc.create_user("root-user", PASSWORD, Role::Admin).await.unwrap();
    let theirs = svc.login("root-user", PASSWORD, client()).await.unwrap();
    assert_eq!(svc.revoke_user_sessions("alice").await.unwrap(), 2);
    for pair in [&one, &two] {
        assert!(matches!(svc.authenticate(&pair.access_token), Err(AuthError::SessionRevoked)));
        assert!(matches!(svc.refresh(&pair.refresh_token).await, Err(AuthError::InvalidRefreshToken)));
    }
    assert!(svc.authenticate(&theirs.access_token).is_ok());
    assert!(matches!(svc.revoke_user_sessions("nobody").await, Err(AuthError::UnknownUser(_))));
}

#[tokio::test]
async fn unknown_and_expired_refresh_tokens_are_invalid() {
    let (test, _) = with_alice().await;
    let svc = &test.service;
    for token in ["", "never-issued", &"x".repeat(10_000)] {
        assert!(matches!(svc.refresh(token).await, Err(AuthError::InvalidRefreshToken)));
    }
    let pair = svc.login("alice", PASSWORD, client()).await.unwrap();
    refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::ExpiresAt, Expr::value(Utc::now() - TimeDelta::seconds(1)))
        .filter(refresh_token::Column::TokenHash.eq(hash_token(&pair.refresh_token)))
        .exec(&svc.db)
        .await
        .unwrap();
    assert!(matches!(svc.refresh(&pair.refresh_token).await, Err(AuthError::InvalidRefreshToken)));
}

#[tokio::test]
async fn set_password_replaces_it_and_ends_sessions() {
    let (test, _) = with_alice().await;
    let svc = &test.service;
    let pair = svc.login("alice", PASSWORD, client()).await.unwrap();
    assert!(svc.authenticate(&pair.access_token).is_ok());
    svc.set_password("alice", "a brand new password").await.unwrap();
    assert!(matches!(svc.authenticate(&pair.access_token), Err(AuthError::SessionRevoked)));
    assert!(matches!(svc.login("alice", PASSWORD, client()).await, Err(AuthError::BadCredentials)));
    assert!(svc.login("alice", "a brand new password", client()).await.is_ok());
    assert!(matches!(svc.refresh(&pair.refresh_token).await, Err(AuthError::InvalidRefreshToken)));
    assert!(matches!(
        svc.set_password("nobody", "a brand new password").await,
        Err(AuthError::InvalidInput(_))
    ));
    assert!(matches!(
        svc.set_password("alice", "short").await,
        Err(AuthError::Policy(PolicyError::PasswordLength))
    ));
}

#[tokio::test]
async fn bootstrap_admin_is_created_once() {
    let test = setup().await;
    let svc = &test.service;
    assert!(svc.ensure_bootstrap_admin(PASSWORD).await.unwrap());
    assert!(!svc.ensure_bootstrap_admin("some other password").await.unwrap());
    let pair = svc.login(BOOTSTRAP_ADMIN, PASSWORD, client()).await.unwrap();
    assert_eq!(svc.authenticate(&pair.access_token).unwrap().role, Role::Admin);
}

#[tokio::test]
async fn mint_issues_a_pair_without_a_password() {
    let (test, alice) = with_alice().await;
    let svc = &test.service;
    let pair = svc.mint("alice").await.unwrap();
    let principal = svc.authenticate(&pair.access_token).unwrap();
    assert_eq!((principal.user_id.as_str(), principal.role), (alice.id.as_str(), Role::Editor));
    assert!(svc.refresh(&pair.refresh_token).await.is_ok());
    assert!(matches!(svc.mint("nobody").await, Err(AuthError::InvalidInput(_))));
}

#[test]
fn token_hash_is_hex_sha256() {
    assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

#[test]
fn loggable_truncates_long_usernames() {
    assert_eq!(loggable("alice"), "alice");
    assert_eq!(loggable(&"é".repeat(100)).chars().count(), 64);
}
