//! The binary's configuration handling, run as a process.

use std::process::Command;

fn castwork() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_castwork"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    for (key, _) in std::env::vars() {
        if key.starts_with("CASTWORK_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn bad_value_exits_non_zero_naming_the_key() {
    let output = castwork().arg("config").env("CASTWORK_SERVER__PORT", "not-a-port").output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("server.port"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn invalid_value_exits_non_zero_naming_the_key() {
    for (var, key) in [
        ("CASTWORK_AUTH__ACCESS_TTL_SECS", "auth.access_ttl_secs"),
        ("CASTWORK_CACHE__REDIS__READ_BATCHES_IN_FLIGHT", "cache.redis.read_batches_in_flight"),
    ] {
        let output = castwork().arg("config").env(var, "0").output().unwrap();
        assert!(!output.status.success(), "{var}=0 was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(key), "{key}: {stderr}");
    }
}

#[test]
fn production_refuses_to_start_without_a_secret() {
    let output = castwork().arg("config").env("CASTWORK_ENV", "production").output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("auth.jwt_secret"));
}

#[test]
fn config_prints_the_effective_configuration_with_secrets_redacted() {
    let output = castwork()
        .arg("config")
        .env("CASTWORK_SERVER__PORT", "9000")
        .env("CASTWORK_AUTH__JWT_SECRET", "super-secret-value-0123456789abcdef")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("port = 9000"), "{stdout}");
    assert!(stdout.contains("[redacted]"));
    assert!(!stdout.contains("super-secret-value"));
}

#[test]
fn unknown_key_is_refused() {
    let output = castwork().arg("config").env("CASTWORK_SERVER__PROT", "9000").output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("prot"));
}

#[test]
fn an_unknown_environment_name_is_refused_with_exit_code_2() {
    let output = castwork().arg("config").env("CASTWORK_ENV", "prod").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CASTWORK_ENV") && stderr.contains("development, test, production"), "{stderr}");
}

#[test]
fn environment_names_match_in_any_case() {
    // `Production` runs with the production rules: no secret, no start
    let output = castwork().arg("config").env("CASTWORK_ENV", "Production").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("auth.jwt_secret"));
    let output = castwork()
        .arg("config")
        .env("CASTWORK_ENV", "Production")
        .env("CASTWORK_AUTH__JWT_SECRET", "a".repeat(32))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("too predictable"));
    let output = castwork()
        .arg("config")
        .env("CASTWORK_ENV", "PRODUCTION")
        .env("CASTWORK_AUTH__JWT_SECRET", "q8Jm0nV3y+1cXo9rT2fLwZ5bE7dKhA4sG6uYiP0jN2eR8tW1vB3xC5zM7lQ9aF0o")
        .env("CASTWORK_BACKUP__ENCRYPTION_KEY", "a backup passphrase nobody guesses")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // the canonical name selects config/production.toml (json logs)
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("# environment: production"), "{stdout}");
    assert!(stdout.contains("format = \"json\""), "{stdout}");
}
