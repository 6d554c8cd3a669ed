//! `castwork jobs ...` against a running node: the binary, with `CASTWORK_URL` and
//! `CASTWORK_TOKEN`.

use std::process::{Command, Output};

use serde_json::{Value, json};

use super::{create, wait_state};
use crate::helpers::{TestApp, spawn_app};

/// Runs `castwork <args>` with the node's URL and `token` (none: `CASTWORK_TOKEN` unset),
/// off the test's runtime (the node runs on it).
async fn castwork(app: &TestApp, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_castwork"));
    command.args(args).env("CASTWORK_URL", &app.address).env_remove("CASTWORK_TOKEN");
    if let Some(token) = token {
        command.env("CASTWORK_TOKEN", token);
    }
    tokio::task::spawn_blocking(move || command.output().expect("castwork runs")).await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn castwork_jobs_watch_follows_a_job_to_its_end() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let job = create(&app, &admin, json!({"steps": 20, "step_ms": 20})).await;
    let id = job["id"].as_str().unwrap();
    let watched = castwork(&app, Some(&admin), &["jobs", "watch", id]).await;
    let stdout = text(&watched.stdout);
    assert!(watched.status.success(), "{stdout}\n{}", text(&watched.stderr));
    assert_eq!(stdout.lines().count(), 1, "one summary line: {stdout}");
    assert!(stdout.contains(id) && stdout.contains("succeeded") && stdout.contains("20/20"), "{stdout}");

    let shown = castwork(&app, Some(&admin), &["jobs", "show", id]).await;
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!((shown["id"].as_str(), shown["state"].as_str()), (Some(id), Some("succeeded")));

    let listed = castwork(&app, Some(&admin), &["jobs", "list", "--state", "succeeded"]).await;
    let table = text(&listed.stdout);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table
            .lines()
            .any(|line| line.starts_with(id) && line.contains("noop_sleep") && line.contains("100%")),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn castwork_jobs_watch_exits_1_for_a_job_that_did_not_succeed() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let job = create(&app, &admin, json!({"steps": 1000, "step_ms": 20})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    wait_state(&app, &admin, &id, "running").await;
    let cancelled = castwork(&app, Some(&admin), &["jobs", "cancel", &id]).await;
    assert!(cancelled.status.success(), "{}", text(&cancelled.stderr));
    let answer: Value = serde_json::from_slice(&cancelled.stdout).unwrap();
    assert_eq!(answer["id"], id.as_str());
    let watched = castwork(&app, Some(&admin), &["jobs", "watch", &id]).await;
    assert_eq!(watched.status.code(), Some(1), "{}", text(&watched.stderr));
    assert!(text(&watched.stdout).contains("cancelled"), "{}", text(&watched.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn castwork_jobs_says_what_is_wrong() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let viewer = app.user_token("vera", "viewer").await;

    let no_token = castwork(&app, None, &["jobs", "list"]).await;
    assert_eq!(no_token.status.code(), Some(1));
    assert!(
        text(&no_token.stderr).contains("set CASTWORK_TOKEN (castwork token --username"),
        "{}",
        text(&no_token.stderr)
    );

    let missing = castwork(&app, Some(&admin), &["jobs", "show", "no-such-job"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("no job no-such-job (404 not_found)"),
        "{}",
        text(&missing.stderr)
    );

    let job = create(&app, &admin, json!({"steps": 1})).await;
    let forbidden = castwork(&app, Some(&viewer), &["jobs", "cancel", job["id"].as_str().unwrap()]).await;
    assert_eq!(forbidden.status.code(), Some(1));
    assert!(text(&forbidden.stderr).contains("(403 forbidden)"), "{}", text(&forbidden.stderr));

    let expired = castwork(&app, Some("not-a-token"), &["jobs", "list"]).await;
    assert!(text(&expired.stderr).contains("(401 invalid_token)"), "{}", text(&expired.stderr));

    let unreachable = castwork(&app, Some(&admin), &["jobs", "list", "--url", "http://127.0.0.1:9"]).await;
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(
        text(&unreachable.stderr).contains("cannot reach castwork at http://127.0.0.1:9"),
        "{}",
        text(&unreachable.stderr)
    );
}
