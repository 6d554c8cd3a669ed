//! Jobs: `POST /api/v1/jobs` (admin), `GET /api/v1/jobs`, `GET /api/v1/jobs/{id}`,
//! `GET /api/v1/jobs/{id}/events` (Server-Sent Events, see [`stream`]),
//! `POST /api/v1/jobs/{id}/cancel` and `/retry` (admin), `GET /api/v1/jobs/schedules` (admin).
//!
//! Any authenticated caller reads jobs, but a caller below admin sees only the jobs
//! it created: another user's job answers 404, exactly as a missing one, so its
//! existence does not leak. Creating and controlling jobs is for admins.

pub mod stream;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::de::{Deserializer, Error as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

pub use self::stream::{HEARTBEAT, MAX_STREAMS};
use super::AppState;
use super::error::ApiError;
use super::extract::{Admin, ApiJson, ApiPath, ApiQuery, Viewer, query_params};
use super::openapi::{
    DatabaseUnavailable, ErrorBody, Forbidden, Internal, Unauthenticated, UnsupportedMediaType,
};
use crate::auth::{Principal, Role};
use crate::db::entities::job;
use crate::queue::Queue;
use crate::queue::model::{JobState, JobView};
use crate::queue::schedule::{self, ScheduleView};
use crate::queue::store::{ListFilter, StoreError};

/// Jobs per page when `limit` is left out.
pub const DEFAULT_LIMIT: u64 = 20;
/// The largest `limit`.
pub const MAX_LIMIT: u64 = 100;
/// Longest `Idempotency-Key`, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// `POST /api/v1/jobs`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// A job kind this node runs.
    #[schema(example = "import_catalog")]
    pub kind: String,
    /// The kind's parameters, checked by the kind before the job is accepted; `{}` when left out.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object, example = json!({"steps": 20, "step_ms": 50}))]
    pub payload: Value,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// One page of jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    /// Pass it back as `after` for the next page; `null` on the last page.
    pub next: Option<String>,
}

/// `GET /api/v1/jobs`: filters and page.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobListParams {
    /// Only jobs of this kind.
    #[param(example = "import_catalog")]
    pub kind: Option<String>,
    /// Only jobs in this state.
    #[param(inline)]
    pub state: Option<JobState>,
    /// Page size; 20 when left out.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "limit")]
    pub limit: Option<u64>,
    /// The `next` of the previous page, with the same filters. Opaque.
    pub after: Option<String>,
}

query_params!(JobListParams);

fn limit<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let text = String::deserialize(deserializer)?;
    match text.parse::<u64>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(Some(n)),
        _ => Err(D::Error::custom(format_args!("must be an integer from 1 to {MAX_LIMIT}"))),
    }
}

/// The optional `Idempotency-Key`: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let bytes = value.as_bytes();
    if (1..=MAX_IDEMPOTENCY_KEY).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_graphic) {
        return Ok(Some(String::from_utf8_lossy(bytes).into_owned()));
    }
    Err(ApiError::bad_request(
        "invalid_idempotency_key",
        format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters, without spaces"
        ),
    ))
}

/// Most digits of a `Last-Event-ID` (any such number fits a `u64`).
const MAX_EVENT_ID_DIGITS: usize = 19;

/// The optional `Last-Event-ID` of a resumed event stream: 1 to 19 digits.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else { return Ok(None) };
    let bytes = value.as_bytes();
    if (1..=MAX_EVENT_ID_DIGITS).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_digit) {
        return Ok(String::from_utf8_lossy(bytes).parse().ok());
    }
    Err(ApiError::bad_request(
        "invalid_last_event_id",
        format!(
            "Last-Event-ID must be the id of an event this stream sent: 1 to {MAX_EVENT_ID_DIGITS} digits"
        ),
    ))
}

/// Whether `caller` may see `row`: an admin sees every job, anyone else its own.
fn visible(caller: &Principal, row: &job::Model) -> bool {
    caller.role.satisfies(Role::Admin) || row.created_by == caller.username
}

/// The job `id` as `caller` may see it; 404 for a job it may not see.
async fn read(queue: &Queue, caller: &Principal, id: &str) -> Result<job::Model, ApiError> {
    match queue.store().get(id).await? {
        Some(row) if visible(caller, &row) => Ok(row),
        _ => Err(StoreError::NotFound(id.to_owned()).into()),
    }
}

fn created(view: JobView) -> Response {
    let mut response = (StatusCode::CREATED, Json(&view)).into_response();
    let location = format!(
        "/api/v1/jobs/{}",
        url::form_urlencoded::byte_serialize(view.id.as_bytes()).collect::<String>()
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Submits a job.
#[utoipa::path(
    post,
    path = "/api/v1/jobs",
    operation_id = "createJob",
    tag = "jobs",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the request safe to repeat: a \
            second request with the same key, kind and payload answers the first one's job (200) instead of \
            creating another; the same key with another kind or payload is 409 (`idempotency_conflict`). \
            1 to 255 visible ASCII characters.", nullable = false, min_length = 1, max_length = 255,
            pattern = r"^[\x21-\x7E]{1,255}$", example = "nightly-2025-06-01"),
    ),
    request_body = JobRequest,
    responses(
        (status = 200, description = "A repeat of an earlier request with the same `Idempotency-Key`: its job.",
            body = JobView),
        (status = 201, description = "Accepted and queued.", body = JobView,
            headers(("Location" = String, description = "The job's URL: `/api/v1/jobs/<id>`."))),
        (status = 400, description = "The body is not well-formed JSON (`malformed_json`), or the \
            `Idempotency-Key` is empty, too long or not visible ASCII (`invalid_idempotency_key`).",
            body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 409, description = "The `Idempotency-Key` was used for a different request \
            (`idempotency_conflict`).", body = ErrorBody),
        (status = 413, description = "The body is larger than `server.body_limit_bytes`, or the payload \
            larger than `queue.max_payload_bytes` (`payload_too_large`).", body = ErrorBody),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "An unknown kind (`fields.kind` lists the known ones), a payload the \
            kind refuses (`fields` names each bad field, e.g. `payload.steps`), or JSON of the wrong shape, \
            e.g. no `kind` (`validation_failed`, `fields` empty).", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, description = "`queue.max_pending_jobs` jobs are waiting or running (`queue_full`), or \
            the database is unavailable (`database_unavailable`).", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(admin = %caller.principal.username, kind = %body.kind))]
pub async fn create(
    State(state): State<AppState>,
    caller: Admin,
    headers: HeaderMap,
    ApiJson(body): ApiJson<JobRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let queue = &state.runtime().queue;
    let (view, new) = queue.submit(&body.kind, body.payload, &caller.principal.username, key).await?;
    if new {
        tracing::info!(job = %view.id, "job submitted");
        Ok(created(view))
    } else {
        Ok((StatusCode::OK, Json(view)).into_response())
    }
}

/// Jobs, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    operation_id = "listJobs",
    tag = "jobs",
    params(JobListParams),
    responses(
        (status = 200, description = "One page of jobs: every job for an admin, the caller's own for anyone \
            else.", body = JobList),
        (status = 400, description = "An unknown or repeated parameter, a `state` that is not a job state, a \
            `limit` outside 1–100 (`invalid_query`), or an `after` this API did not issue \
            (`invalid_cursor`).", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 500, response = Internal),
        (status = 503, response = DatabaseUnavailable),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(user = %caller.principal.username))]
pub async fn list(
    State(state): State<AppState>,
    caller: Viewer,
    ApiQuery(params): ApiQuery<JobListParams>,
) -> Result<Json<JobList>, ApiError> {
    let principal = &caller.principal;
    let filter = ListFilter {
        kind: params.kind,
        state: params.state,
        created_by: (!principal.role.satisfies(Role::Admin)).then(|| principal.username.clone()),
        after: params.after,
        limit: params.limit.unwrap_or(DEFAULT_LIMIT),
    };
    let page = state.runtime().queue.store().list(&filter).await?;
    Ok(Json(JobList { jobs: page.jobs, next: page.next }))
}

const ID_DESCRIPTION: &str = "The job id (a UUID).";

/// One job.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    operation_id = "getJob",
    tag = "jobs",
    params(("id" = String, Path, description = ID_DESCRIPTION, example = "0b6f8e8a-4c1e-4a59-9a43-3c1f1e0f2a77")),
    responses(
        (status = 200, description = "The job, with its progress, rate and ETA.", body = JobView),
        (status = 400, description = "The id is not valid percent-encoded UTF-8 (`invalid_path`).",
            body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 404, description = "No such job, or one the caller did not create and is not admin \
            (`not_found`).", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, response = DatabaseUnavailable),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(user = %caller.principal.username, job = %id))]
pub async fn get(
    State(state): State<AppState>,
    caller: Viewer,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    let row = read(&state.runtime().queue, &caller.principal, &id).await?;
    Ok(Json(JobView::from_model(row, Utc::now())))
}

/// The job's progress, live, as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/events",
    operation_id = "jobEvents",
    tag = "jobs",
    params(
        ("id" = String, Path, description = ID_DESCRIPTION, example = "0b6f8e8a-4c1e-4a59-9a43-3c1f1e0f2a77"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resumes a stream: events whose id is at \
            most this are not sent again (see the event ids in the description).", nullable = false,
            pattern = "^[0-9]{1,19}$", example = "12"),
    ),
    responses(
        (status = 200, description = "A `text/event-stream`. First `snapshot` (data: the `JobView`, id: its \
            `processed`); then `progress` events (data: `JobProgress`, id: its `processed`), each moving \
            `processed` forward; when the job is over, `finished` (data: the final `JobView`, id: one more \
            than any id before it, `Last-Event-ID` included) and the stream ends. A job already over gets \
            `snapshot` and `finished` at once. Event ids rise strictly within a stream and, being the job's \
            processed count, across reconnections: with `Last-Event-ID` every event at or below it is \
            skipped (`snapshot` too), `finished` never. A `:keepalive` comment comes every 15 s. The stream \
            also ends, without `finished`, when the node shuts down: reconnect with `Last-Event-ID`.",
            content_type = "text/event-stream", body = String),
        (status = 400, description = "The id is not valid percent-encoded UTF-8 (`invalid_path`), or \
            `Last-Event-ID` is not an integer (`invalid_last_event_id`).", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 404, description = "No such job, or one the caller did not create and is not admin \
            (`not_found`).", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, description = "The node has as many event streams open as it serves \
            (`too_many_streams`), or the database is unavailable (`database_unavailable`).", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(user = %caller.principal.username, job = %id))]
pub async fn events(
    State(state): State<AppState>,
    caller: Viewer,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let resume = last_event_id(&headers)?;
    let permit = state.job_streams().clone().try_acquire_owned().map_err(|_| stream::too_many_streams())?;
    let queue = &state.runtime().queue;
    // subscribed before the job is read: nothing that happens after the read is missed
    let events = queue.events().subscribe("job-stream");
    let row = read(queue, &caller.principal, &id).await?;
    let watch = stream::JobStream::new(queue.clone(), row, events, resume, permit, state.stopping().clone());
    let sse =
        Sse::new(watch.into_stream()).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("keepalive"));
    let mut response = sse.into_response();
    // a buffering proxy would hold the events back
    response.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Cancels a job: at once when it waits, by asking its worker when it runs.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/cancel",
    operation_id = "cancelJob",
    tag = "jobs",
    params(("id" = String, Path, description = ID_DESCRIPTION, example = "0b6f8e8a-4c1e-4a59-9a43-3c1f1e0f2a77")),
    responses(
        (status = 202, description = "The job: `cancelled` when it was waiting; still `running` with \
            `cancel_requested` when its worker was asked to stop (it stops at its next step).", body = JobView),
        (status = 400, description = "The id is not valid percent-encoded UTF-8 (`invalid_path`).",
            body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 404, description = "No such job (`not_found`).", body = ErrorBody),
        (status = 409, description = "The job is already over (`invalid_state`).", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, response = DatabaseUnavailable),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(admin = %caller.principal.username, job = %id))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let view = state.runtime().queue.cancel(&id).await?;
    tracing::info!(state = view.state.as_str(), "job cancellation requested");
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// Queues a failed job again, with a fresh set of attempts.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/retry",
    operation_id = "retryJob",
    tag = "jobs",
    params(("id" = String, Path, description = ID_DESCRIPTION, example = "0b6f8e8a-4c1e-4a59-9a43-3c1f1e0f2a77")),
    responses(
        (status = 202, description = "The job, `queued` again; it resumes from its last checkpoint.",
            body = JobView),
        (status = 400, description = "The id is not valid percent-encoded UTF-8 (`invalid_path`).",
            body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 404, description = "No such job (`not_found`).", body = ErrorBody),
        (status = 409, description = "The job is not `failed` (`invalid_state`).", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, response = DatabaseUnavailable),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(admin = %caller.principal.username, job = %id))]
pub async fn retry(
    State(state): State<AppState>,
    caller: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let view = state.runtime().queue.retry(&id).await?;
    tracing::info!("job queued again");
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// The configured schedules (`queue.schedules`), with their last and next tick.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/schedules",
    operation_id = "listJobSchedules",
    tag = "jobs",
    responses(
        (status = 200, description = "Every schedule: its cron expression (UTC), kind and payload, the last \
            tick started by any node and its job, and the next tick.", body = Vec<ScheduleView>),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
        (status = 503, response = DatabaseUnavailable),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(admin = %caller.principal.username))]
pub async fn schedules(
    State(state): State<AppState>,
    caller: Admin,
) -> Result<Json<Vec<ScheduleView>>, ApiError> {
    let queue = &state.runtime().queue;
    Ok(Json(schedule::views(queue, queue.schedules()).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::extract::parse_query;

    fn with(name: &'static str, value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_bytes(value).unwrap());
        headers
    }

    #[test]
    fn idempotency_keys_are_short_visible_ascii() {
        assert_eq!(idempotency_key(&HeaderMap::new()).unwrap(), None);
        assert_eq!(idempotency_key(&with("idempotency-key", b"abc-1")).unwrap().as_deref(), Some("abc-1"));
        let longest = vec![b'k'; MAX_IDEMPOTENCY_KEY];
        assert!(idempotency_key(&with("idempotency-key", &longest)).is_ok());
        for bad in [&b""[..], b"a b", b"caf\xc3\xa9", &vec![b'k'; MAX_IDEMPOTENCY_KEY + 1]] {
            let refused = idempotency_key(&with("idempotency-key", bad)).unwrap_err();
            assert_eq!(refused.code(), "invalid_idempotency_key", "{bad:?}");
        }
    }

    #[test]
    fn last_event_ids_are_integers() {
        assert_eq!(last_event_id(&HeaderMap::new()).unwrap(), None);
        assert_eq!(last_event_id(&with("last-event-id", b"12")).unwrap(), Some(12));
        assert_eq!(
            last_event_id(&with("last-event-id", b"9999999999999999999")).unwrap(),
            Some(9_999_999_999_999_999_999)
        );
        for bad in [&b""[..], b"x", b"-1", b"1.5", b"12345678901234567890"] {
            assert_eq!(
                last_event_id(&with("last-event-id", bad)).unwrap_err().code(),
                "invalid_last_event_id"
            );
        }
    }

    #[test]
    fn list_parameters_are_checked_by_name() {
        let params = parse_query::<JobListParams>(Some("state=running&kind=noop_sleep&limit=2")).unwrap();
        assert_eq!(
            (params.state, params.kind.as_deref(), params.limit),
            (Some(JobState::Running), Some("noop_sleep"), Some(2))
        );
        for (raw, name) in
            [("state=done", "'state'"), ("limit=0", "'limit'"), ("limit=101", "'limit'"), ("x=1", "'x'")]
        {
            let refused = parse_query::<JobListParams>(Some(raw)).unwrap_err();
            assert!(refused.to_string().contains(name), "{raw}: {refused}");
        }
    }
}
