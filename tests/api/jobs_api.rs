//! The jobs API: submitting, reading, listing, cancelling and retrying jobs of the
//! test kind `noop_sleep` (`queue.test_jobs`) on a node in embedded mode (no
//! `queue.amqp_url`); the event streams are in [`stream`], the CLI in [`cli`].

mod cli;
mod stream;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::both;
use crate::helpers::{Backend, TestApp, poll_until, spawn_app, spawn_app_with};

/// How long a job may take to reach a state in these tests.
pub const JOB_DEADLINE: Duration = Duration::from_secs(30);

/// `POST /api/v1/jobs` with `body` (and an `Idempotency-Key` when given).
pub async fn submit(app: &TestApp, token: &str, body: &Value, key: Option<&str>) -> reqwest::Response {
    let mut request = app.client.post(app.url("/api/v1/jobs")).bearer_auth(token).json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.unwrap()
}

/// Submits a `noop_sleep` job with `payload`; answers its view (the submission must be accepted).
pub async fn create(app: &TestApp, token: &str, payload: Value) -> Value {
    let response = submit(app, token, &json!({ "kind": "noop_sleep", "payload": payload }), None).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body
}

/// `POST /api/v1/jobs/{id}/<action>`: the status and body.
pub async fn control(app: &TestApp, token: &str, id: &str, action: &str) -> (u16, Value) {
    let response = app
        .client
        .post(app.url(&format!("/api/v1/jobs/{id}/{action}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

/// Polls the job until `done` holds for it; answers that view.
pub async fn wait_for(app: &TestApp, token: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/api/v1/jobs/{id}");
    let last = std::sync::Mutex::new(Value::Null);
    let found = poll_until(JOB_DEADLINE, || async {
        let (status, job) = app.get_json(&path, Some(token)).await;
        assert_eq!(status, 200, "{job}");
        let matched = done(&job);
        *last.lock().unwrap() = job.clone();
        matched.then_some(job)
    })
    .await;
    found.unwrap_or_else(|| panic!("job {id} never got there; last seen: {}", last.lock().unwrap()))
}

/// Polls the job until it is in `state`.
pub async fn wait_state(app: &TestApp, token: &str, id: &str, state: &str) -> Value {
    wait_for(app, token, id, |job| job["state"] == state).await
}

fn id(job: &Value) -> String {
    job["id"].as_str().unwrap().to_owned()
}

/// Writes `created_by` of a job in the database, as no API call can: only admins create jobs.
async fn set_creator(app: &TestApp, id: &str, username: &str) {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let db = Database::connect(&app.database_url).await.unwrap();
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => "UPDATE jobs SET created_by = $1 WHERE id = $2",
        _ => "UPDATE jobs SET created_by = ? WHERE id = ?",
    };
    let done =
        db.execute_raw(Statement::from_sql_and_values(backend, sql, [username.into(), id.into()])).await;
    assert_eq!(done.unwrap().rows_affected(), 1);
    db.close().await.ok();
}

both!(
    a_job_runs_to_success_and_is_listed_and_filtered,
    pages_walk_three_jobs_two_at_a_time,
    an_idempotency_key_makes_a_submission_safe_to_repeat
);

async fn a_job_runs_to_success_and_is_listed_and_filtered(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let admin = app.admin_token().await;
    let response =
        submit(&app, &admin, &json!({"kind": "noop_sleep", "payload": {"steps": 3, "step_ms": 10}}), None)
            .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let job: Value = response.json().await.unwrap();
    let job_id = id(&job);
    assert_eq!(location, format!("/api/v1/jobs/{job_id}"));
    assert_eq!((job["state"].as_str(), job["created_by"].as_str()), (Some("queued"), Some("admin")), "{job}");

    let done = wait_state(&app, &admin, &job_id, "succeeded").await;
    assert_eq!(done["result"], json!({"steps": 3, "resumed_from": 0, "attempt": 1}), "{done}");
    assert_eq!((done["progress"]["processed"].as_u64(), done["percent"].as_f64()), (Some(3), Some(100.0)));
    assert_eq!(done["attempts"], 1);
    assert!(done["finished_at"].is_string(), "{done}");

    let ids = |page: &Value| -> Vec<String> { page["jobs"].as_array().unwrap().iter().map(id).collect() };
    let (status, page) = app.get_json("/api/v1/jobs", Some(&admin)).await;
    assert_eq!((status, ids(&page)), (200, vec![job_id.clone()]), "{page}");
    assert_eq!(page["next"], Value::Null);
    for (query, listed) in [
        ("state=succeeded", true),
        ("state=running", false),
        ("kind=noop_sleep", true),
        ("kind=backup", false),
        ("kind=noop_sleep&state=succeeded&limit=1", true),
    ] {
        let (status, page) = app.get_json(&format!("/api/v1/jobs?{query}"), Some(&admin)).await;
        assert_eq!(status, 200, "{query}: {page}");
        assert_eq!(ids(&page).contains(&job_id), listed, "{query}: {page}");
    }
    for (query, code) in [
        ("state=done", "invalid_query"),
        ("limit=0", "invalid_query"),
        ("after=bm90LWEtY3Vyc29y", "invalid_cursor"),
    ] {
        let (status, body) = app.get_json(&format!("/api/v1/jobs?{query}"), Some(&admin)).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some(code)), "{query}: {body}");
    }
    let (status, body) = app.get_json("/api/v1/jobs/no-such-job", Some(&admin)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
}

async fn pages_walk_three_jobs_two_at_a_time(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let admin = app.admin_token().await;
    let mut created = Vec::new();
    for _ in 0..3 {
        created.push(id(&create(&app, &admin, json!({"steps": 1})).await));
    }
    let (status, first) = app.get_json("/api/v1/jobs?limit=2", Some(&admin)).await;
    assert_eq!(status, 200, "{first}");
    let next = first["next"].as_str().expect("a second page").to_owned();
    let (status, second) = app.get_json(&format!("/api/v1/jobs?limit=2&after={next}"), Some(&admin)).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["next"], Value::Null, "{second}");
    let listed: Vec<Value> =
        [&first, &second].iter().flat_map(|page| page["jobs"].as_array().unwrap().clone()).collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    let mut listed_ids: Vec<String> = listed.iter().map(id).collect();
    let stamps: Vec<&str> = listed.iter().map(|job| job["created_at"].as_str().unwrap()).collect();
    let mut newest_first = stamps.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(stamps, newest_first, "newest first");
    listed_ids.sort();
    created.sort();
    assert_eq!(listed_ids, created, "every job once");
}

async fn an_idempotency_key_makes_a_submission_safe_to_repeat(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let admin = app.admin_token().await;
    let body = json!({"kind": "noop_sleep", "payload": {"steps": 2}});
    let first = submit(&app, &admin, &body, Some("import-2025-06-01")).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = submit(&app, &admin, &body, Some("import-2025-06-01")).await;
    assert_eq!(again.status(), 200);
    assert!(again.headers().get("location").is_none());
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    let other = json!({"kind": "noop_sleep", "payload": {"steps": 3}});
    let conflict = submit(&app, &admin, &other, Some("import-2025-06-01")).await;
    assert_eq!(conflict.status(), 409);
    let conflict: Value = conflict.json().await.unwrap();
    assert_eq!(conflict["error"]["code"], "idempotency_conflict", "{conflict}");
    let (_, page) = app.get_json("/api/v1/jobs", Some(&admin)).await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1, "one job: {page}");
    for bad in ["k".repeat(256), "with space".to_owned()] {
        let refused = submit(&app, &admin, &body, Some(&bad)).await;
        assert_eq!(refused.status(), 400, "{bad}");
        let refused: Value = refused.json().await.unwrap();
        assert_eq!(refused["error"]["code"], "invalid_idempotency_key");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    for (body, field) in [
        (json!({"kind": "noop_sleep", "payload": {"steps": 0}}), Some("payload.steps")),
        (json!({"kind": "noop_sleep", "payload": {"step_ms": 600_000}}), Some("payload.step_ms")),
        (json!({"kind": "noop_sleep", "payload": {"stepz": 1}}), Some("payload.stepz")),
        (json!({"kind": "noop_sleep", "payload": {"steps": "ten"}}), Some("payload")),
        (json!({"kind": "launch_rockets"}), Some("kind")),
        (json!({"payload": {"steps": 1}}), None),
        (json!({"kind": "noop_sleep", "surprise": true}), None),
    ] {
        let response = submit(&app, &admin, &body, None).await;
        assert_eq!(response.status(), 422, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "validation_failed", "{body}: {error}");
        if let Some(field) = field {
            assert!(error["error"]["fields"][field].is_string(), "{body}: {error}");
        }
    }
    let unknown: Value =
        submit(&app, &admin, &json!({"kind": "launch_rockets"}), None).await.json().await.unwrap();
    assert!(unknown["error"]["fields"]["kind"].as_str().unwrap().contains("noop_sleep"), "{unknown}");

    let padding = "x".repeat(70_000);
    let response =
        submit(&app, &admin, &json!({"kind": "noop_sleep", "payload": {"pad": padding}}), None).await;
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "payload_too_large", "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("queue.max_payload_bytes"), "{error}");

    let response = app
        .client
        .post(app.url("/api/v1/jobs"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let (_, page) = app.get_json("/api/v1/jobs", Some(&admin)).await;
    assert_eq!(page["jobs"], json!([]), "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_submit_and_control_jobs_and_others_see_only_their_own() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let viewer = app.user_token("vera", "viewer").await;
    let editor = app.user_token("eddie", "editor").await;
    let body = json!({"kind": "noop_sleep", "payload": {"steps": 1}});
    for token in [&viewer, &editor] {
        let refused = submit(&app, token, &body, None).await;
        assert_eq!(refused.status(), 403);
        let refused: Value = refused.json().await.unwrap();
        assert_eq!(refused["error"]["code"], "forbidden");
    }
    let job = create(&app, &admin, json!({"steps": 1})).await;
    let job_id = id(&job);
    wait_state(&app, &admin, &job_id, "succeeded").await;
    for action in ["cancel", "retry"] {
        let (status, body) = control(&app, &viewer, &job_id, action).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{action}: {body}");
    }
    let (status, _) = app.get_json("/api/v1/jobs/schedules", Some(&editor)).await;
    assert_eq!(status, 403);

    // another user's job is hidden exactly as a missing one
    for path in [format!("/api/v1/jobs/{job_id}"), format!("/api/v1/jobs/{job_id}/events")] {
        let (status, body) = app.get_json(&path, Some(&viewer)).await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{path}: {body}");
        let (_, missing) = app.get_json(&path.replace(&job_id, "no-such-job"), Some(&viewer)).await;
        assert_eq!(
            body["error"]["message"].as_str().unwrap().replace(&job_id, "no-such-job"),
            missing["error"]["message"].as_str().unwrap(),
            "the same answer as for a job that does not exist"
        );
    }
    let (_, page) = app.get_json("/api/v1/jobs", Some(&viewer)).await;
    assert_eq!(page["jobs"], json!([]), "{page}");

    // the creator reads its own job whatever its role (written directly: no viewer can submit one)
    set_creator(&app, &job_id, "vera").await;
    let (status, own) = app.get_json(&format!("/api/v1/jobs/{job_id}"), Some(&viewer)).await;
    assert_eq!((status, own["created_by"].as_str()), (200, Some("vera")), "{own}");
    let (_, page) = app.get_json("/api/v1/jobs", Some(&viewer)).await;
    assert_eq!(page["jobs"].as_array().unwrap().iter().map(id).collect::<Vec<_>>(), vec![job_id.clone()]);
    let (_, page) = app.get_json("/api/v1/jobs", Some(&editor)).await;
    assert_eq!(page["jobs"], json!([]), "not the editor's: {page}");
    let (status, _) = app.get_json(&format!("/api/v1/jobs/{job_id}"), Some(&admin)).await;
    assert_eq!(status, 200, "an admin reads every job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_is_cancelled_and_a_finished_one_cannot_be() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let job = create(&app, &admin, json!({"steps": 200, "step_ms": 20})).await;
    let job_id = id(&job);
    wait_for(&app, &admin, &job_id, |job| {
        job["state"] == "running" && job["progress"]["processed"].as_u64() > Some(0)
    })
    .await;
    let (status, answer) = control(&app, &admin, &job_id, "cancel").await;
    assert_eq!(status, 202, "{answer}");
    assert!(answer["state"] == "cancelled" || answer["cancel_requested"] == true, "{answer}");
    let cancelled = wait_state(&app, &admin, &job_id, "cancelled").await;
    assert!(cancelled["progress"]["processed"].as_u64().unwrap() < 200, "it stopped early: {cancelled}");
    assert_eq!(cancelled["cancel_requested"], false);

    let (status, body) = control(&app, &admin, &job_id, "cancel").await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("invalid_state")), "{body}");
    let (status, body) = control(&app, &admin, &job_id, "retry").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("invalid_state")),
        "only a failed job: {body}"
    );
    let (status, body) = control(&app, &admin, "no-such-job", "cancel").await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_is_retried_and_the_next_one_succeeds() {
    // a long first retry delay, so that `retrying` is seen by polling
    let app = spawn_app_with(Backend::Sqlite, |s| s.queue.retry_delays_ms = vec![1_000]).await;
    let admin = app.admin_token().await;
    let job = create(&app, &admin, json!({"steps": 2, "step_ms": 5, "fail_attempts": 1})).await;
    let job_id = id(&job);
    let retrying = wait_state(&app, &admin, &job_id, "retrying").await;
    assert_eq!(retrying["attempts"], 1);
    assert!(retrying["error"].as_str().unwrap().contains("failing attempt 1"), "{retrying}");
    let done = wait_state(&app, &admin, &job_id, "succeeded").await;
    assert_eq!((done["attempts"].as_u64(), done["result"]["attempt"].as_u64()), (Some(2), Some(2)), "{done}");
    assert_eq!(done["result"]["resumed_from"], 2, "attempt 2 resumed from attempt 1's checkpoint: {done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_out_of_attempts_fails_and_a_retry_runs_it_again() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.queue.max_attempts = 2).await;
    let admin = app.admin_token().await;
    let job = create(&app, &admin, json!({"steps": 1, "fail_attempts": 99})).await;
    let job_id = id(&job);
    let failed = wait_state(&app, &admin, &job_id, "failed").await;
    assert_eq!(
        (failed["attempts"].as_u64(), failed["max_attempts"].as_u64()),
        (Some(2), Some(2)),
        "{failed}"
    );
    assert!(failed["error"].as_str().unwrap().contains("failing attempt 2"), "{failed}");
    let finished_at =
        |job: &Value| job["finished_at"].as_str().and_then(|at| at.parse::<DateTime<Utc>>().ok());
    let first_end = finished_at(&failed).unwrap();

    let (status, queued) = control(&app, &admin, &job_id, "retry").await;
    assert_eq!(
        (status, queued["state"].as_str(), queued["attempts"].as_u64()),
        (202, Some("queued"), Some(0)),
        "{queued}"
    );
    let again = wait_for(&app, &admin, &job_id, |job| {
        job["state"] == "failed" && finished_at(job).is_some_and(|end| end > first_end)
    })
    .await;
    assert_eq!(again["attempts"], 2, "two fresh attempts: {again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_listed_for_admins() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.queue.schedules = vec![castwork::config::ScheduleSettings {
            name: "tick".to_owned(),
            cron: "0 0 * * *".to_owned(),
            kind: "noop_sleep".to_owned(),
            payload: json!({"steps": 1}),
        }];
    })
    .await;
    let admin = app.admin_token().await;
    // the latest tick that has passed is started once, at start
    let last = std::sync::Mutex::new(Value::Null);
    let found = poll_until(JOB_DEADLINE, || async {
        let (status, schedules) = app.get_json("/api/v1/jobs/schedules", Some(&admin)).await;
        assert_eq!(status, 200, "{schedules}");
        *last.lock().unwrap() = schedules.clone();
        schedules[0]["last_job_id"].is_string().then_some(schedules)
    })
    .await
    .unwrap_or_else(|| panic!("the schedule's job was never started: {}", last.lock().unwrap()));
    let schedule = &found[0];
    assert_eq!((schedule["name"].as_str(), schedule["cron"].as_str()), (Some("tick"), Some("0 0 * * *")));
    assert!(schedule["last_tick"].as_str().unwrap().ends_with("T00:00:00Z"), "{schedule}");
    assert!(schedule["next_tick"].as_str().unwrap().ends_with("T00:00:00Z"), "{schedule}");
    let job_id = schedule["last_job_id"].as_str().unwrap();
    let (status, job) = app.get_json(&format!("/api/v1/jobs/{job_id}"), Some(&admin)).await;
    assert_eq!((status, job["created_by"].as_str()), (200, Some("schedule:tick")), "{job}");
}
