//! The one place where errors become HTTP: a status, a stable `code`, and a JSON
//! body `{"error":{"code","message"}}` (plus per-field `fields` for validation).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::AuthError;
use crate::explore::ExploreError;
use crate::explore::cached::ReadError;
use crate::explore::semantic::SemanticError;
use crate::inference::InferenceError;
use crate::queue::QueueError;
use crate::queue::store::StoreError;
use crate::supervision::slot::AskError;

/// Every error an HTTP handler can return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed input the client must fix (400).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// Missing or unusable credentials (401, with `WWW-Authenticate`).
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    /// Authenticated, but not allowed (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such resource or route (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// A conflict with a code of its own (409): `invalid_state`, `idempotency_conflict`.
    #[error("{message}")]
    ConflictWith { code: &'static str, message: String },
    /// A conditional write named a stale version (409, with the current one).
    #[error("{message}")]
    VersionConflict { message: String, current_version: i64 },
    /// A write that must be conditional came without `If-Match` (428).
    #[error("{0}")]
    PreconditionRequired(String),
    /// The body is larger than `server.body_limit_bytes` (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request target is longer than `server.max_uri_bytes` (414).
    #[error("{0}")]
    UriTooLong(String),
    /// The request headers are past `server.max_header_bytes` or `server.max_headers` (431).
    #[error("{0}")]
    HeadersTooLarge(String),
    /// The body is not JSON (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Well-formed but invalid values (422), per field.
    #[error("{message}")]
    Validation { message: String, fields: BTreeMap<String, String> },
    /// Slowed down (429, with `Retry-After`).
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: Duration },
    /// A dependency or actor cannot answer now (503, with `Retry-After`).
    #[error("{message}")]
    Unavailable { code: &'static str, message: String, retry_after: Duration },
    /// A bug or an unexpected dependency error (500); the detail is logged, not returned.
    #[error("internal error")]
    Internal(String),
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fields: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_version: Option<i64>,
}

impl ApiError {
    /// A 400 with the given stable code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest { code, message: message.into() }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) | Self::ConflictWith { .. } | Self::VersionConflict { .. } => {
                StatusCode::CONFLICT
            }
            Self::PreconditionRequired(_) => StatusCode::PRECONDITION_REQUIRED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. }
            | Self::Unauthorized { code, .. }
            | Self::ConflictWith { code, .. }
            | Self::Unavailable { code, .. } => code,
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::VersionConflict { .. } => "version_conflict",
            Self::PreconditionRequired(_) => "precondition_required",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UriTooLong(_) => "uri_too_long",
            Self::HeadersTooLarge(_) => "headers_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Validation { .. } => "validation_failed",
            Self::TooManyRequests { .. } => "rate_limited",
            Self::Internal(_) => "internal",
        }
    }

    /// The JSON body for an arbitrary status (used for responses that did not come from a handler).
    pub fn body_for(status: StatusCode, code: &str, message: String) -> Response {
        let body = Body { error: Inner { code, message, fields: None, current_version: None } };
        (status, Json(body)).into_response()
    }
}

fn retry_after(seconds: Duration) -> HeaderValue {
    HeaderValue::from(seconds.as_secs().max(1))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code();
        if let Self::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error");
        }
        let fields = match &self {
            Self::Validation { fields, .. } => Some(fields),
            _ => None,
        };
        let current_version = match &self {
            Self::VersionConflict { current_version, .. } => Some(*current_version),
            _ => None,
        };
        let body = Body { error: Inner { code, message: self.to_string(), fields, current_version } };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            Self::Unauthorized { code, .. } => {
                let value = match *code {
                    "invalid_token" | "token_expired" => "Bearer realm=\"castwork\", error=\"invalid_token\"",
                    _ => "Bearer realm=\"castwork\"",
                };
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
            }
            Self::TooManyRequests { retry_after: after, .. }
            | Self::Unavailable { retry_after: after, .. } => {
                headers.insert(header::RETRY_AFTER, retry_after(*after));
            }
            _ => {}
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        let unauthorized = |code, message: String| Self::Unauthorized { code, message };
        match err {
            AuthError::MissingToken => unauthorized("missing_token", err.to_string()),
            AuthError::InvalidToken(_) => unauthorized("invalid_token", err.to_string()),
            AuthError::Expired => unauthorized("token_expired", err.to_string()),
            AuthError::SessionRevoked => unauthorized("invalid_token", err.to_string()),
            AuthError::UnknownUser(_) => Self::NotFound(err.to_string()),
            AuthError::BadCredentials => unauthorized("invalid_credentials", err.to_string()),
            AuthError::InvalidRefreshToken => unauthorized("invalid_refresh_token", err.to_string()),
            AuthError::RefreshReuse => unauthorized("refresh_token_reused", err.to_string()),
            AuthError::RateLimited { retry_after } => {
                Self::TooManyRequests { message: err.to_string(), retry_after }
            }
            AuthError::Forbidden { .. } => Self::Forbidden(err.to_string()),
            AuthError::UserExists(_) => Self::Conflict(err.to_string()),
            AuthError::InvalidInput(message) => Self::Validation { message, fields: BTreeMap::new() },
            AuthError::Policy(rule) => {
                let message = rule.to_string();
                let fields = BTreeMap::from([(rule.field().to_owned(), message.clone())]);
                Self::Validation { message, fields }
            }
            AuthError::Busy { retry_after } => {
                Self::Unavailable { code: "busy", message: err.to_string(), retry_after }
            }
            AuthError::Database(db) => Self::from(db),
            AuthError::KeyConfig(_) | AuthError::Hashing => Self::Internal(format!("auth: {err:?}")),
        }
    }
}

impl From<ExploreError> for ApiError {
    fn from(err: ExploreError) -> Self {
        Self::from(&err)
    }
}

impl From<&ExploreError> for ApiError {
    fn from(err: &ExploreError) -> Self {
        match err {
            ExploreError::NotFound(_) => Self::NotFound(err.to_string()),
            ExploreError::VersionConflict { current, .. } => {
                Self::VersionConflict { message: err.to_string(), current_version: *current }
            }
            ExploreError::AlreadyExists(_) => Self::Conflict(err.to_string()),
            ExploreError::PreconditionRequired => Self::PreconditionRequired(err.to_string()),
            ExploreError::Invalid(fields) => Self::Validation {
                message: "the item is invalid; see fields".to_owned(),
                fields: fields.clone(),
            },
            ExploreError::BadQuery(message) => Self::bad_request("invalid_query", message.clone()),
            ExploreError::InvalidCursor => Self::bad_request("invalid_cursor", err.to_string()),
            ExploreError::Database(db) => Self::from(db),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> Self {
        match err {
            QueueError::UnknownKind { .. } => {
                let message = err.to_string();
                Self::Validation { fields: BTreeMap::from([("kind".to_owned(), message.clone())]), message }
            }
            QueueError::Invalid(fields) => {
                Self::Validation { message: "the job payload is invalid; see fields".to_owned(), fields }
            }
            QueueError::PayloadTooLarge { .. } => Self::PayloadTooLarge(err.to_string()),
            QueueError::Store(store) => Self::from(store),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(_) => Self::NotFound(err.to_string()),
            StoreError::WrongState { .. } => {
                Self::ConflictWith { code: "invalid_state", message: err.to_string() }
            }
            StoreError::IdempotencyConflict(_) => {
                Self::ConflictWith { code: "idempotency_conflict", message: err.to_string() }
            }
            StoreError::QueueFull(_) => Self::Unavailable {
                code: "queue_full",
                message: err.to_string(),
                retry_after: Duration::from_secs(5),
            },
            StoreError::BadCursor => Self::bad_request(
                "invalid_cursor",
                "the cursor is not one this API issued; pass back `next` from the previous page",
            ),
            StoreError::Database(db) => Self::from(&db),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(err: ReadError) -> Self {
        Self::from(&err)
    }
}

impl From<&ReadError> for ApiError {
    fn from(err: &ReadError) -> Self {
        match err {
            ReadError::Explore(inner) => Self::from(inner.as_ref()),
            ReadError::Internal(detail) => Self::Internal(format!("cached read: {detail}")),
            ReadError::Timeout => Self::Unavailable {
                code: "cache_timeout",
                message: err.to_string(),
                retry_after: Duration::from_secs(1),
            },
            ReadError::LoadTimeout => Self::Unavailable {
                code: "cache_load_timeout",
                message: err.to_string(),
                retry_after: Duration::from_secs(1),
            },
            ReadError::Overloaded => Self::Unavailable {
                code: "overloaded",
                message: err.to_string(),
                retry_after: Duration::from_secs(1),
            },
        }
    }
}

/// Explore's reads on inference: a model that cannot answer now is 503
/// `inference_unavailable` (429 `rate_limited` when it sheds load), both with
/// `Retry-After`; a model that refuses the request is a misconfiguration (500).
impl From<&InferenceError> for ApiError {
    fn from(err: &InferenceError) -> Self {
        let unavailable = |retry_after| Self::Unavailable {
            code: "inference_unavailable",
            message: err.to_string(),
            retry_after,
        };
        match err {
            InferenceError::Shed { retry_after } => {
                Self::TooManyRequests { message: err.to_string(), retry_after: *retry_after }
            }
            InferenceError::Unavailable { retry_after, .. } => unavailable(*retry_after),
            InferenceError::Disabled | InferenceError::Timeout(_) | InferenceError::Failed(_) => {
                unavailable(Duration::from_secs(1))
            }
            InferenceError::Rejected(_)
            | InferenceError::UnknownModel(_)
            | InferenceError::WrongKind { .. } => Self::Internal(format!("inference: {err}")),
        }
    }
}

impl From<InferenceError> for ApiError {
    fn from(err: InferenceError) -> Self {
        Self::from(&err)
    }
}

impl From<SemanticError> for ApiError {
    fn from(err: SemanticError) -> Self {
        match &err {
            SemanticError::NotFound(_) => Self::NotFound(err.to_string()),
            SemanticError::BadQuery(message) => Self::bad_request("invalid_query", message.clone()),
            SemanticError::Inference(inner) => Self::from(inner),
            SemanticError::BadAnswer(_) | SemanticError::Index(_) => {
                Self::Internal(format!("semantic: {err}"))
            }
            SemanticError::Read(inner) => Self::from(inner.as_ref()),
            SemanticError::Database(inner) => Self::from(inner.as_ref()),
        }
    }
}

impl From<AskError> for ApiError {
    fn from(err: AskError) -> Self {
        let code = match err {
            AskError::Unavailable(_) => "actor_unavailable",
            AskError::Timeout(_) => "actor_timeout",
            AskError::Down(_) => "actor_down",
            AskError::Lost(_) => "actor_lost",
        };
        Self::Unavailable { code, message: err.to_string(), retry_after: Duration::from_secs(1) }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let message = rejection.body_text();
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge(message),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType(
                "expected a request body with content-type application/json".to_owned(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY => Self::Validation { message, fields: BTreeMap::new() },
            _ => Self::bad_request("malformed_json", message),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request("invalid_path", rejection.body_text())
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(err: sea_orm::DbErr) -> Self {
        Self::from(&err)
    }
}

/// Every database error becomes HTTP here: connection-level failures (see
/// [`crate::db::unavailable`]) are 503 `database_unavailable`, the rest 500.
impl From<&sea_orm::DbErr> for ApiError {
    fn from(err: &sea_orm::DbErr) -> Self {
        if crate::db::unavailable::is_unavailable(err) {
            tracing::debug!(error = %err, "database unavailable");
            Self::Unavailable {
                code: "database_unavailable",
                message: "the database is unavailable".to_owned(),
                retry_after: Duration::from_secs(2),
            }
        } else {
            Self::Internal(format!("database: {err}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes() {
        assert_eq!(ApiError::from(AuthError::Expired).status(), StatusCode::UNAUTHORIZED);
        assert_eq!(ApiError::from(AuthError::Expired).code(), "token_expired");
        let lost = ApiError::from(AskError::Lost("views".into()));
        assert_eq!((lost.status(), lost.code()), (StatusCode::SERVICE_UNAVAILABLE, "actor_lost"));
        let e = ApiError::from(AskError::Timeout("health".into()));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        let r = e.into_response();
        assert_eq!(r.headers().get(header::RETRY_AFTER).unwrap(), "1");
        let r = ApiError::from(AuthError::MissingToken).into_response();
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_some());
        let busy = ApiError::from(AuthError::Busy { retry_after: Duration::from_secs(1) });
        assert_eq!((busy.status(), busy.code()), (StatusCode::SERVICE_UNAVAILABLE, "busy"));
        assert_eq!(busy.into_response().headers().get(header::RETRY_AFTER).unwrap(), "1");
        let stalled = ApiError::from(ReadError::LoadTimeout);
        assert_eq!(
            (stalled.status(), stalled.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "cache_load_timeout")
        );
        assert_eq!(stalled.into_response().headers().get(header::RETRY_AFTER).unwrap(), "1");
        let weak = ApiError::from(AuthError::Policy(crate::auth::PolicyError::ControlCharacter));
        assert_eq!((weak.status(), weak.code()), (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"));
        assert!(matches!(&weak, ApiError::Validation { fields, .. } if fields.contains_key("password")));
        let unknown =
            ApiError::from(QueueError::UnknownKind { kind: "x".into(), known: "noop_sleep".into() });
        assert!(matches!(&unknown, ApiError::Validation { fields, .. } if fields.contains_key("kind")));
        let finished =
            ApiError::from(StoreError::WrongState { id: "j".into(), state: "succeeded", reason: "no" });
        assert_eq!((finished.status(), finished.code()), (StatusCode::CONFLICT, "invalid_state"));
        let full = ApiError::from(QueueError::Store(StoreError::QueueFull(3)));
        assert_eq!((full.status(), full.code()), (StatusCode::SERVICE_UNAVAILABLE, "queue_full"));
        assert!(full.into_response().headers().get(header::RETRY_AFTER).is_some());
        let large = ApiError::from(QueueError::PayloadTooLarge { size: 9, max: 1 });
        assert_eq!(large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn a_model_that_cannot_answer_is_503_with_retry_after() {
        let down = InferenceError::Unavailable {
            model: "m".into(),
            reason: "breaker open".into(),
            retry_after: Duration::from_secs(7),
        };
        let e = ApiError::from(SemanticError::Inference(down));
        assert_eq!((e.status(), e.code()), (StatusCode::SERVICE_UNAVAILABLE, "inference_unavailable"));
        assert_eq!(e.into_response().headers().get(header::RETRY_AFTER).unwrap(), "7");
        let off = ApiError::from(InferenceError::Disabled);
        assert_eq!((off.status(), off.code()), (StatusCode::SERVICE_UNAVAILABLE, "inference_unavailable"));
        assert!(off.into_response().headers().get(header::RETRY_AFTER).is_some());
        let shed = ApiError::from(InferenceError::Shed { retry_after: Duration::from_secs(2) });
        assert_eq!((shed.status(), shed.code()), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"));
        let misconfigured = ApiError::from(InferenceError::UnknownModel("x".into()));
        assert_eq!(misconfigured.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let gone = ApiError::from(SemanticError::NotFound("a".into()));
        assert_eq!((gone.status(), gone.code()), (StatusCode::NOT_FOUND, "not_found"));
    }
}
