//! Configuration loading and validation.

use super::*;
use figment::providers::Serialized;
use serde_json::json;

fn base() -> Figment {
    Figment::new().merge(Toml::string(DEFAULTS))
}

#[test]
fn embedded_defaults_are_valid() {
    let s = Settings::from_figment(base()).unwrap();
    assert_eq!(s.server.port, 8080);
    assert_eq!(s.server.host, "127.0.0.1");
    assert!(s.database_url().starts_with("sqlite://"));
}

#[test]
fn edge_limits_are_validated() {
    let s = Settings::from_figment(base()).unwrap();
    assert_eq!(s.server.header_read_timeout_secs, 10);
    assert_eq!(s.server.max_connections, 0);
    for (key, value) in [
        ("server.header_read_timeout_secs", 0),
        ("server.idle_timeout_secs", 0),
        ("server.write_timeout_secs", 0),
        ("server.max_connections", 2_000_000),
        ("server.max_uri_bytes", 70_000),
        ("server.max_header_bytes", 100),
        ("server.max_headers", 0),
    ] {
        let err = Settings::from_figment(base().merge(Serialized::default(key, value))).unwrap_err();
        assert!(err.to_string().contains(key), "{err}");
    }
}

#[test]
fn wrong_type_names_the_key() {
    let err = Settings::from_figment(base().merge(Serialized::default("server.port", "nope"))).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("server.port"), "{text}");
    assert!(!text.contains('\n'));
}

#[test]
fn unknown_key_is_refused() {
    let err = Settings::from_figment(base().merge(Serialized::default("server.prot", 1))).unwrap_err();
    assert!(err.to_string().contains("prot"), "{err}");
}

#[test]
fn short_secret_is_refused() {
    let err =
        Settings::from_figment(base().merge(Serialized::default("auth.jwt_secret", "short"))).unwrap_err();
    assert!(err.to_string().contains("auth.jwt_secret"), "{err}");
}

#[test]
fn bad_database_scheme_is_refused() {
    let err =
        Settings::from_figment(base().merge(Serialized::default("database.url", "mysql://x"))).unwrap_err();
    assert!(err.to_string().contains("database.url"), "{err}");
}

#[test]
fn explore_defaults_and_rules() {
    let s = Settings::from_figment(base()).unwrap();
    assert!(s.explore.import_sample_on_start);
    assert_eq!(s.explore.views_flush_ms, 2000);
    assert!((s.explore.trend_half_life_hours - 24.0).abs() < f64::EPSILON);
    let err =
        Settings::from_figment(base().merge(Serialized::default("explore.views_flush_ms", 5))).unwrap_err();
    assert!(err.to_string().contains("explore.views_flush_ms"), "{err}");
    let err = Settings::from_figment(base().merge(Serialized::default("explore.trend_half_life_hours", 0.0)))
        .unwrap_err();
    assert!(err.to_string().contains("explore.trend_half_life_hours"), "{err}");
    assert_eq!((s.explore.view_dedup_window_secs, s.explore.view_dedup_max_entries), (1800, 500_000));
    let err = Settings::from_figment(base().merge(Serialized::default("explore.view_dedup_max_entries", 1)))
        .unwrap_err();
    assert!(err.to_string().contains("explore.view_dedup_max_entries"), "{err}");
}

#[test]
fn login_hardening_keys_are_validated() {
    let s = Settings::from_figment(base()).unwrap();
    assert!(s.server.trusted_proxies.is_empty());
    assert_eq!(s.server.client_ip_header, ClientIpHeader::XForwardedFor);
    assert_eq!((s.auth.hashing_concurrency, s.auth.hashing_wait_ms, s.auth.password_min_score), (0, 2000, 3));
    let proxies = vec!["10.0.0.0/8", " 192.168.1.7 ", "fd00::/8", "10.1.2.3/16"];
    let s =
        Settings::from_figment(base().merge(Serialized::default("server.trusted_proxies", proxies))).unwrap();
    let nets: Vec<String> =
        s.server.trusted_proxy_networks().unwrap().iter().map(ToString::to_string).collect();
    assert_eq!(nets, ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8", "10.1.0.0/16"]);
    for (key, value) in [
        ("server.trusted_proxies", figment::value::Value::from(vec!["10.0.0.0/33"])),
        ("server.trusted_proxies", figment::value::Value::from(vec!["proxy.internal"])),
        ("server.client_ip_header", figment::value::Value::from("x-real-ip")),
        ("auth.password_min_score", figment::value::Value::from(5)),
        ("auth.hashing_concurrency", figment::value::Value::from(100_000)),
        ("auth.hashing_wait_ms", figment::value::Value::from(30_000)),
    ] {
        let err = Settings::from_figment(base().merge(Serialized::default(key, value))).unwrap_err();
        assert!(err.to_string().contains(key), "{key}: {err}");
    }
}

#[test]
fn production_refuses_a_low_entropy_secret() {
    for secret in ["a".repeat(32), "0123456789abcdef".repeat(2), "ab".repeat(40)] {
        let figment = base().merge(Serialized::default("auth.jwt_secret", &secret));
        let err = Settings::from_figment_in(figment, Environment::Production).unwrap_err().to_string();
        assert!(err.contains("auth.jwt_secret"), "{err}");
        assert!(err.contains("openssl rand -base64 48"), "{err}");
        // the same secret is fine outside production
        let figment = base().merge(Serialized::default("auth.jwt_secret", &secret));
        assert!(Settings::from_figment_in(figment, Environment::Development).is_ok());
    }
}

#[test]
fn production_accepts_a_generated_secret() {
    let secret = "q8Jm0nV3y+1cXo9rT2fLwZ5bE7dKhA4sG6uYiP0jN2eR8tW1vB3xC5zM7lQ9aF0o";
    let figment = base()
        .merge(Serialized::default("auth.jwt_secret", secret))
        .merge(Serialized::default("backup.encryption_key", "a long backup passphrase nobody guesses"));
    let s = Settings::from_figment_in(figment, Environment::Production).unwrap();
    assert_eq!(s.environment, Environment::Production);
}

#[test]
fn production_refuses_unencrypted_backups_and_test_jobs() {
    let secret = "q8Jm0nV3y+1cXo9rT2fLwZ5bE7dKhA4sG6uYiP0jN2eR8tW1vB3xC5zM7lQ9aF0o";
    let figment = base().merge(Serialized::default("auth.jwt_secret", secret));
    let err = Settings::from_figment_in(figment.clone(), Environment::Production).unwrap_err();
    assert!(err.to_string().contains("backup.encryption_key"), "{err}");
    let figment = figment
        .merge(Serialized::default("backup.encryption_key", "a long backup passphrase nobody guesses"))
        .merge(Serialized::default("queue.test_jobs", true));
    let err = Settings::from_figment_in(figment, Environment::Production).unwrap_err();
    assert!(err.to_string().contains("queue.test_jobs"), "{err}");
}

#[test]
fn queue_settings_are_checked_by_name() {
    for (key, value, expected) in [
        ("queue.amqp_url", json!("http://rabbit"), "queue.amqp_url"),
        ("queue.prefix", json!("no spaces"), "queue.prefix"),
        ("queue.workers", json!(0), "queue.workers"),
        ("queue.retry_delays_ms", json!([]), "queue.retry_delays_ms"),
        ("queue.outbox_retention", json!("7 weeks"), "queue.outbox_retention"),
        ("queue.job_retention", json!("d"), "queue.job_retention"),
        ("queue.max_attempts", json!(0), "queue.max_attempts"),
    ] {
        let err = Settings::from_figment(base().merge(Serialized::default(key, value))).unwrap_err();
        assert!(err.to_string().contains(expected), "{key}: {err}");
    }
    let schedule = json!([{ "name": "x", "cron": "not cron", "kind": "backup" }]);
    let err =
        Settings::from_figment(base().merge(Serialized::default("queue.schedules", schedule))).unwrap_err();
    assert!(err.to_string().contains("queue.schedules") && err.to_string().contains("x"), "{err}");
    assert_eq!(parse_span("7d"), Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(parse_span("90m"), Some(Duration::from_secs(5_400)));
    assert_eq!(parse_span("12"), None);
    assert_eq!(parse_span("-1h"), None);
}

#[test]
fn secrets_never_print() {
    let s = Settings::from_figment(
        base().merge(Serialized::default("auth.jwt_secret", "0123456789abcdef0123456789abcdef-secret")),
    )
    .unwrap();
    let toml = s.to_redacted_toml().unwrap();
    assert!(!toml.contains("-secret"));
    assert!(toml.contains("[redacted]"));
    assert!(!format!("{s:?}").contains("-secret"));
}
