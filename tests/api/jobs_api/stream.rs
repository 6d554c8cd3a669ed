//! `GET /api/v1/jobs/{id}/events`: Server-Sent Events, read with the CLI's parser.

use castwork::cli::jobs::sse::{SseEvent, SseParser};
use castwork::db::testing::Backend;
use castwork::startup::Hooks;
use futures::StreamExt;
use serde_json::{Value, json};

use super::{JOB_DEADLINE, control, create, wait_state};
use crate::helpers::{TestApp, poll_until, spawn_app, spawn_app_hooked};

/// Opens a job's event stream (with `Last-Event-ID` when given).
async fn open(app: &TestApp, token: &str, id: &str, last: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(app.url(&format!("/api/v1/jobs/{id}/events"))).bearer_auth(token);
    if let Some(last) = last {
        request = request.header("last-event-id", last);
    }
    request.send().await.unwrap()
}

/// Reads events until the stream ends, or until `enough` of them were read (the rest
/// is dropped with the connection).
async fn read(response: reqwest::Response, enough: Option<usize>) -> Vec<SseEvent> {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let reading = async {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            events.extend(parser.feed(&chunk.expect("the stream ends cleanly")));
            if enough.is_some_and(|n| events.len() >= n) {
                break;
            }
        }
        events
    };
    tokio::time::timeout(JOB_DEADLINE, reading).await.expect("the stream ended in time")
}

fn data(event: &SseEvent) -> Value {
    serde_json::from_str(&event.data).unwrap()
}

fn event_id(event: &SseEvent) -> u64 {
    event.id.as_deref().expect("every event has an id").parse().unwrap()
}

fn names(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.name.as_str()).collect()
}

/// Ids rise strictly; `progress` moves `processed` forward.
fn assert_monotonic(events: &[SseEvent]) {
    let ids: Vec<u64> = events.iter().map(event_id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids rise: {ids:?}");
    let processed: Vec<u64> = events
        .iter()
        .filter(|e| e.name == "progress")
        .map(|e| data(e)["processed"].as_u64().unwrap())
        .collect();
    assert!(processed.windows(2).all(|w| w[0] < w[1]), "processed rises: {processed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_shows_progress_until_the_job_is_over_then_ends() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let job = create(&app, &admin, json!({"steps": 20, "step_ms": 20})).await;
    let id = job["id"].as_str().unwrap();
    let events = read(open(&app, &admin, id, None).await, None).await;

    assert_eq!(events.first().map(|e| e.name.as_str()), Some("snapshot"), "{:?}", names(&events));
    assert_eq!(events.last().map(|e| e.name.as_str()), Some("finished"), "{:?}", names(&events));
    let middle = &events[1..events.len() - 1];
    assert!(middle.iter().all(|e| e.name == "progress"), "{:?}", names(&events));
    assert_monotonic(&events);
    let snapshot = data(&events[0]);
    assert_eq!(snapshot["id"], id);
    assert_eq!(event_id(&events[0]), snapshot["progress"]["processed"].as_u64().unwrap());
    if snapshot["progress"]["processed"].as_u64() < Some(20) {
        // every checkpoint's progress event precedes the job's finished event
        let last = data(&middle[middle.len() - 1]);
        assert_eq!((last["processed"].as_u64(), last["total"].as_u64()), (Some(20), Some(20)), "{last}");
        assert_eq!((last["state"].as_str(), last["attempt"].as_u64()), (Some("running"), Some(1)), "{last}");
    }
    let finished = data(&events[events.len() - 1]);
    assert_eq!(
        (finished["state"].as_str(), finished["progress"]["processed"].as_u64()),
        (Some("succeeded"), Some(20))
    );

    // once it is over, a new stream gets the snapshot and the end at once
    let late = read(open(&app, &admin, id, None).await, None).await;
    assert_eq!(names(&late), ["snapshot", "finished"]);
    assert_eq!((event_id(&late[0]), event_id(&late[1])), (20, 21));
    assert_eq!(data(&late[0])["state"], "succeeded");
    assert_eq!(data(&late[1]), finished);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_after_what_was_seen() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let job = create(&app, &admin, json!({"steps": 60, "step_ms": 20})).await;
    let id = job["id"].as_str().unwrap();
    wait_state(&app, &admin, id, "running").await;
    let seen = read(open(&app, &admin, id, None).await, Some(3)).await;
    let last = seen.last().unwrap().id.clone().unwrap();
    let resumed = read(open(&app, &admin, id, Some(&last)).await, None).await;
    let floor: u64 = last.parse().unwrap();
    assert!(resumed.iter().all(|e| event_id(e) > floor), "nothing at or below {floor} again: {resumed:?}");
    assert_monotonic(&resumed);
    assert_eq!(resumed.last().map(|e| e.name.as_str()), Some("finished"));

    // over: what the client saw is skipped, `finished` always comes
    let upto_snapshot = read(open(&app, &admin, id, Some("60")).await, None).await;
    assert_eq!(names(&upto_snapshot), ["finished"]);
    assert_eq!(event_id(&upto_snapshot[0]), 61);
    let before = read(open(&app, &admin, id, Some("59")).await, None).await;
    assert_eq!(names(&before), ["snapshot", "finished"]);
    let past_the_end = read(open(&app, &admin, id, Some("99")).await, None).await;
    assert_eq!(names(&past_the_end), ["finished"]);
    assert_eq!(event_id(&past_the_end[0]), 100);

    let refused = open(&app, &admin, id, Some("twelve")).await;
    assert_eq!(refused.status(), 400);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["error"]["code"], "invalid_last_event_id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_a_bounded_number_of_streams() {
    let hooks = Hooks { max_job_streams: Some(1), ..Hooks::default() };
    let app = spawn_app_hooked(Backend::Sqlite, hooks, |_| {}).await;
    let admin = app.admin_token().await;
    let job = create(&app, &admin, json!({"steps": 500, "step_ms": 20})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let first = open(&app, &admin, &id, None).await;
    assert_eq!(first.status(), 200);

    let refused = open(&app, &admin, &id, None).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().get("retry-after").is_some());
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["error"]["code"], "too_many_streams");

    // the job ends, so does the first stream, and its permit is free again
    let (status, body) = control(&app, &admin, &id, "cancel").await;
    assert_eq!(status, 202, "{body}");
    let events = read(first, None).await;
    assert_eq!(events.last().map(|e| e.name.as_str()), Some("finished"));
    assert_eq!(data(events.last().unwrap())["state"], "cancelled");
    let reopened = poll_until(JOB_DEADLINE, || async {
        let response = open(&app, &admin, &id, None).await;
        (response.status() == 200).then_some(response)
    })
    .await
    .expect("a stream opens once the first one is over");
    assert_eq!(names(&read(reopened, None).await), ["snapshot", "finished"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_when_the_node_shuts_down() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let job = create(&app, &admin, json!({"steps": 1000, "step_ms": 20})).await;
    let id = job["id"].as_str().unwrap();
    let stream = open(&app, &admin, id, None).await;
    let (events, ()) = tokio::join!(read(stream, None), app.shut_down());
    assert_eq!(events.first().map(|e| e.name.as_str()), Some("snapshot"));
    assert!(events.iter().all(|e| e.name != "finished"), "the job did not finish: {:?}", names(&events));
}
