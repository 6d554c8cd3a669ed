//! Issuing and verifying access tokens.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";
const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIAAfI8gDHyaKURqEJ5HSuWPztf0IbKmPy1hUA3cI/74q
-----END PRIVATE KEY-----
";
const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEACHDZpXqYxsu3BuU0f2PTK6ZOcnwMbb0Pl53beIFfAw8=
-----END PUBLIC KEY-----
";
/// The public half of another Ed25519 key pair.
const OTHER_ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAyYtw+GDjDq+4lNcNX0nGbpfdePh9aoVruYnpeCkgoME=
-----END PUBLIC KEY-----
";

fn settings(secret: &str) -> AuthSettings {
    AuthSettings { refresh_ttl_secs: 3600, revocation_max_entries: 1000, ..AuthSettings::for_tests(secret) }
}

fn keys() -> JwtKeys {
    JwtKeys::from_settings(&settings(SECRET)).unwrap().0
}

fn claims() -> Claims {
    let now = now_secs();
    Claims {
        sub: "user-1".to_owned(),
        name: "alice".to_owned(),
        role: Role::Editor,
        iss: "castwork".to_owned(),
        aud: "castwork-api".to_owned(),
        exp: now + 300,
        nbf: now,
        iat: now,
        jti: "jti-1".to_owned(),
        sid: "session-1".to_owned(),
    }
}

fn b64_json(value: &impl serde::Serialize) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("castwork-jwt-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn assert_invalid(result: Result<Claims, AuthError>) -> String {
    match result {
        Err(AuthError::InvalidToken(reason)) => reason,
        other => panic!("expected InvalidToken, got {other:?}"),
    }
}

#[test]
fn issued_token_round_trips() {
    let keys = keys();
    let (token, expires_in) = keys.issue("user-1", "alice", Role::Admin, "session-1").unwrap();
    assert_eq!(expires_in, 900);
    let claims = keys.verify(&token).unwrap();
    assert_eq!(claims.sub, "user-1");
    assert_eq!(claims.name, "alice");
    assert_eq!(claims.role, Role::Admin);
    assert_eq!(claims.iss, "castwork");
    assert_eq!(claims.aud, "castwork-api");
    assert_eq!(claims.exp - claims.iat, 900);
    assert_eq!(claims.nbf, claims.iat);
    assert!(uuid::Uuid::parse_str(&claims.jti).is_ok());
    assert_eq!(claims.sid, "session-1");
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::HS256);
}

#[test]
fn alg_none_is_refused() {
    let header = serde_json::json!({ "alg": "none", "typ": "JWT" });
    let token = format!("{}.{}.", b64_json(&header), b64_json(&claims()));
    assert_invalid(keys().verify(&token));
}

#[test]
fn other_secret_is_refused() {
    let other = JwtKeys::from_settings(&settings("another-secret-that-is-long-enough-000")).unwrap().0;
    let (token, _) = other.issue("user-1", "alice", Role::Admin, "session-1").unwrap();
    assert_eq!(assert_invalid(keys().verify(&token)), "bad signature");
}

#[test]
fn other_algorithm_with_the_right_secret_is_refused() {
    let token =
        encode(&Header::new(Algorithm::HS384), &claims(), &EncodingKey::from_secret(SECRET.as_bytes()))
            .unwrap();
    assert_eq!(assert_invalid(keys().verify(&token)), "algorithm not accepted");
}

#[test]
fn tampered_payload_is_refused() {
    let keys = keys();
    let (token, _) = keys.issue("user-1", "alice", Role::Viewer, "session-1").unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut forged = keys.verify(&token).unwrap();
    forged.role = Role::Admin;
    let tampered = format!("{}.{}.{}", parts[0], b64_json(&forged), parts[2]);
    assert_eq!(assert_invalid(keys.verify(&tampered)), "bad signature");
}

#[test]
fn expired_token_is_expired() {
    let keys = keys();
    let now = now_secs();
    let token = keys.sign(&Claims { exp: now - 60, nbf: now - 120, iat: now - 120, ..claims() }).unwrap();
    assert!(matches!(keys.verify(&token), Err(AuthError::Expired)));
}

#[test]
fn token_within_leeway_is_accepted() {
    let keys = keys();
    let now = now_secs();
    let token = keys.sign(&Claims { exp: now - 1, nbf: now + 2, ..claims() }).unwrap();
    assert!(keys.verify(&token).is_ok());
}

#[test]
fn future_nbf_is_refused() {
    let keys = keys();
    let token = keys.sign(&Claims { nbf: now_secs() + 120, ..claims() }).unwrap();
    assert_eq!(assert_invalid(keys.verify(&token)), "not valid yet");
}

#[test]
fn wrong_audience_is_refused() {
    let keys = keys();
    let token = keys.sign(&Claims { aud: "someone-else".to_owned(), ..claims() }).unwrap();
    assert_eq!(assert_invalid(keys.verify(&token)), "wrong audience");
}

#[test]
fn wrong_issuer_is_refused() {
    let keys = keys();
    let token = keys.sign(&Claims { iss: "evil".to_owned(), ..claims() }).unwrap();
    assert_eq!(assert_invalid(keys.verify(&token)), "wrong issuer");
}

#[test]
fn missing_claim_is_refused() {
    let mut value = serde_json::to_value(claims()).unwrap();
    value.as_object_mut().unwrap().remove("nbf");
    let token =
        encode(&Header::new(Algorithm::HS256), &value, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap();
    // The claims fail to deserialize before validation runs, so the reason is generic.
    assert_invalid(keys().verify(&token));
}

#[test]
fn crit_header_is_refused() {
    let keys = keys();
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    for crit in [vec!["exp".to_owned()], vec!["b64".to_owned()], Vec::new()] {
        let header = Header { crit: Some(crit.clone()), ..Header::new(Algorithm::HS256) };
        let token = encode(&header, &claims(), &key).unwrap();
        let reason = assert_invalid(keys.verify(&token));
        assert!(reason.contains("critical"), "{crit:?}: {reason}");
    }
    assert!(keys.verify(&encode(&Header::new(Algorithm::HS256), &claims(), &key).unwrap()).is_ok());
}

#[test]
fn token_without_a_session_is_refused() {
    let keys = keys();
    let token = keys.sign(&Claims { sid: String::new(), ..claims() }).unwrap();
    assert_eq!(assert_invalid(keys.verify(&token)), "missing claim sid");
}

#[test]
fn garbage_is_refused() {
    for token in ["", "abc", "a.b.c", "a.b", "...."] {
        assert_invalid(keys().verify(token));
    }
}

#[test]
fn empty_secret_generates_a_random_one() {
    let (first, generated) = JwtKeys::from_settings(&settings("")).unwrap();
    assert!(generated);
    let (second, _) = JwtKeys::from_settings(&settings("")).unwrap();
    let (token, _) = first.issue("user-1", "alice", Role::Viewer, "session-1").unwrap();
    assert!(first.verify(&token).is_ok());
    assert_invalid(second.verify(&token));
    assert!(!JwtKeys::from_settings(&settings(SECRET)).unwrap().1);
}

#[test]
fn short_secret_is_a_key_error() {
    assert!(matches!(JwtKeys::from_settings(&settings("short")), Err(AuthError::KeyConfig(_))));
}

fn ed_settings(private: &str, public: &str) -> AuthSettings {
    let dir = temp_dir();
    let (private_path, public_path) = (dir.join("private.pem"), dir.join("public.pem"));
    std::fs::write(&private_path, private).unwrap();
    std::fs::write(&public_path, public).unwrap();
    AuthSettings {
        algorithm: JwtAlgorithm::EdDSA,
        private_key_path: private_path.display().to_string(),
        public_key_path: public_path.display().to_string(),
        ..settings("")
    }
}

#[test]
fn eddsa_round_trips() {
    let (keys, generated) = JwtKeys::from_settings(&ed_settings(ED_PRIVATE, ED_PUBLIC)).unwrap();
    assert!(!generated);
    assert_eq!(keys.algorithm(), Algorithm::EdDSA);
    let (token, _) = keys.issue("user-2", "bob", Role::Viewer, "session-1").unwrap();
    let claims = keys.verify(&token).unwrap();
    assert_eq!((claims.sub.as_str(), claims.role), ("user-2", Role::Viewer));
    assert_eq!(jsonwebtoken::decode_header(&token).unwrap().alg, Algorithm::EdDSA);
}

#[test]
fn eddsa_refuses_hs256_signed_with_the_public_key() {
    let (keys, _) = JwtKeys::from_settings(&ed_settings(ED_PRIVATE, ED_PUBLIC)).unwrap();
    let token =
        encode(&Header::new(Algorithm::HS256), &claims(), &EncodingKey::from_secret(ED_PUBLIC.as_bytes()))
            .unwrap();
    assert_eq!(assert_invalid(keys.verify(&token)), "algorithm not accepted");
    assert_invalid(keys.verify(&format!(
        "{}.{}.",
        b64_json(&serde_json::json!({ "alg": "none" })),
        b64_json(&claims())
    )));
}

#[test]
fn mismatched_key_pair_is_a_key_error() {
    let err = JwtKeys::from_settings(&ed_settings(ED_PRIVATE, OTHER_ED_PUBLIC)).unwrap_err();
    assert!(matches!(&err, AuthError::KeyConfig(m) if m.contains("pair")), "{err:?}");
}

#[test]
fn unreadable_or_wrong_key_files_name_the_path() {
    let missing = AuthSettings {
        algorithm: JwtAlgorithm::EdDSA,
        private_key_path: "/nonexistent/castwork/private.pem".to_owned(),
        public_key_path: "/nonexistent/castwork/public.pem".to_owned(),
        ..settings("")
    };
    let err = JwtKeys::from_settings(&missing).unwrap_err();
    assert!(matches!(&err, AuthError::KeyConfig(m) if m.contains("/nonexistent/castwork/private.pem")));

    let swapped = ed_settings(ED_PUBLIC, ED_PRIVATE);
    let err = JwtKeys::from_settings(&swapped).unwrap_err();
    assert!(matches!(&err, AuthError::KeyConfig(m) if m.contains(&swapped.private_key_path)), "{err:?}");

    let rsa = AuthSettings { algorithm: JwtAlgorithm::RS256, ..ed_settings(ED_PRIVATE, ED_PUBLIC) };
    assert!(matches!(JwtKeys::from_settings(&rsa), Err(AuthError::KeyConfig(_))));
}

#[test]
fn debug_does_not_print_keys() {
    let text = format!("{:?}", keys());
    assert!(!text.contains(SECRET));
    assert!(text.contains("HS256"));
}
