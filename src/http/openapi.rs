//! `GET /api/openapi.json`: the OpenAPI 3.1 description of this API, generated
//! from the handlers' `#[utoipa::path]` attributes and the types' `ToSchema`
//! derives. Its paths come from the routes themselves: [`super::api`] registers
//! every handler with `utoipa_axum::routes!`, which adds its operation to the
//! document as it adds the route. This file holds what is not a route: the
//! info, tags, security scheme and shared components ([`ApiDoc`]), the reusable
//! error responses the handlers refer to, and documentation-only types for
//! bodies that the handlers build as ad-hoc JSON.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::Json;
use serde::Serialize;
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder, response::Response};
use utoipa::{Modify, OpenApi, PartialSchema, ToResponse, ToSchema};

use super::{admin, auth, cache, health, jobs};
use crate::auth::hashing::HashingReport;
use crate::auth::limiter::LimiterReport;
use crate::auth::{AuthReport, Principal, Role, TokenPair};
use crate::cache::bypass::BypassStats;
use crate::explore::model::{
    CategoryCount, GroupCount, Item, ItemInput, ItemPatch, ItemSummary, Page, SearchHit, Sort,
};
use crate::explore::semantic::GeneratedSummary;
use crate::explore::warm::WarmReport;
use crate::health::{ComponentHealth, ComponentStatus};
use crate::queue::model::{JobState, JobView, Progress};
use crate::queue::schedule::ScheduleView;
use crate::supervision::breaker::{BreakerSnapshot, BreakerState};
use crate::supervision::supervisor::ChaosAction;
use crate::supervision::tree::{ActorNode, Failure, FailureKind, NodeStatus};

/// The name of the bearer-token security scheme that operations refer to.
pub const BEARER: &str = "bearer";

const DESCRIPTION: &str = "\
castwork: a backend built as a tree of supervised actors, serving the Explore catalogue.

Every route needs `Authorization: Bearer <access token>` (from `POST /api/v1/auth/login`) \
except the health checks, `/metrics`, login, refresh and this document.

Every error has a JSON body `{\"error\": {\"code\": \"...\", \"message\": \"...\"}}` (see `ErrorBody`); \
`code` is stable, `message` says what to fix. Besides the statuses listed per operation, any route may \
answer 405 (`method_not_allowed`) for a method it does not serve (`HEAD` is served wherever `GET` is), 500 (`internal`) for a bug, and 503 \
(`unavailable`) when the request outlives `server.request_timeout_secs`. An unknown path answers 401 \
without a token and 404 (`not_found`) with one. Every response carries `x-request-id` (the caller's, or \
a generated UUID).";

/// What the document holds besides its paths: info, shared components, the
/// security scheme and the tags. The paths are added by [`super::api`].
#[derive(OpenApi)]
#[openapi(
    info(title = "castwork", version = env!("CARGO_PKG_VERSION"), description = DESCRIPTION),
    components(
        schemas(
            ErrorBody,
            ErrorDetail,
            LiveBody,
            ReadyBody,
            ReadyBlocker,
            health::HealthBody,
            health::Overall,
            ComponentHealth,
            ComponentStatus,
            BreakerSnapshot,
            BreakerState,
            TokenPair,
            Principal,
            Role,
            auth::LoginRequest,
            auth::RefreshRequest,
            Item,
            ItemSummary,
            Page<ItemSummary>,
            Page<SearchHit>,
            SearchHit,
            GeneratedSummary,
            CategoryCount,
            GroupCount,
            ItemInput,
            ItemPatch,
            Sort,
            admin::NewUser,
            CreatedUser,
            AuthReport,
            HashingReport,
            LimiterReport,
            admin::ChaosRequest,
            admin::ChaosApplied,
            ChaosAction,
            admin::TreeFormat,
            ActorNode,
            NodeStatus,
            Failure,
            FailureKind,
            cache::CacheReport,
            BypassStats,
            WarmReport,
            jobs::JobRequest,
            jobs::JobList,
            jobs::stream::JobProgress,
            JobView,
            JobState,
            Progress,
            ScheduleView,
        ),
        responses(
            TokenIssued,
            MalformedJson,
            BadIfMatchOrJson,
            Unauthenticated,
            Forbidden,
            VersionConflict,
            PayloadTooLarge,
            UnsupportedMediaType,
            InvalidBody,
            InvalidItem,
            PreconditionRequired,
            Internal,
            DatabaseUnavailable,
            InferenceBusy,
            InferenceUnavailable,
        ),
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "health", description = "Liveness, readiness and component health; public."),
        (name = "auth", description = "Login, token refresh and logout, and who the caller is."),
        (name = "explore", description = "Reading the catalogue (viewer or above): filtered lists with \
            keyset cursors, items with `ETag`s, categories, trending items, full-text, semantic and hybrid \
            search, and (through the configured models) item summaries and related items."),
        (name = "items", description = "Writing the catalogue (editor or above), with optimistic concurrency: \
            `PUT` and `PATCH` need `If-Match` with the item's `ETag`."),
        (name = "admin", description = "Users, login counters, the cache, the live actor tree and fault \
            injection (admin)."),
        (name = "jobs", description = "Background jobs: submitting (admin), reading (a caller below admin sees \
            only its own jobs), live progress as Server-Sent Events, cancelling and retrying (admin), and the \
            cron schedules (admin)."),
        (name = "inference", description = "OpenAI-compatible inference (viewer or above): chat completions \
            (whole or streamed), embeddings and the model list; errors in OpenAI's shape `{\"error\": {\"message\", \
            \"type\", \"param\", \"code\"}}`."),
        (name = "operations", description = "Prometheus metrics and this document; public."),
    ),
)]
pub struct ApiDoc;

/// Adds the `bearer` security scheme the operations refer to.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some("An access token from `POST /api/v1/auth/login` or `/refresh`."))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    }
}

static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(|| super::api().into_openapi());

/// The whole API description: [`ApiDoc`] with the operation of every route
/// [`super::api`] registers (benchmark-only routes are not among them).
pub fn document() -> &'static utoipa::openapi::OpenApi {
    &DOCUMENT
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API.", body = serde_json::Value)),
)]
#[tracing::instrument(skip_all)]
pub async fn openapi() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(document())
}

/// The body of every error response. Documentation only: it mirrors what
/// [`super::error::ApiError`] serializes (a unit test below keeps the two in step).
#[derive(Debug, Serialize, ToSchema)]
#[cfg_attr(test, derive(serde::Deserialize), serde(deny_unknown_fields))]
#[schema(example = json!({"error": {"code": "not_found", "message": "no item with id '2506.20941'"}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
#[cfg_attr(test, derive(serde::Deserialize), serde(deny_unknown_fields))]
pub struct ErrorDetail {
    /// Stable and machine-readable, e.g. `invalid_query`, `token_expired`, `version_conflict`.
    #[schema(example = "validation_failed")]
    pub code: String,
    /// For people: what to fix.
    pub message: String,
    /// Per-field messages; only with `validation_failed` (empty when the JSON had the wrong shape).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = json!({"category_code": "must look like a category code such as cs.CV"}))]
    pub fields: Option<BTreeMap<String, String>>,
    /// The item's current version; only with `version_conflict`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = 4)]
    pub current_version: Option<i64>,
}

/// `GET /health/live`.
#[derive(Serialize, ToSchema)]
pub struct LiveBody {
    /// Always `alive`.
    #[schema(example = "alive")]
    pub status: String,
}

/// `GET /health/ready`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"ready": false, "reason": "a critical component is not ok", "components": [
    {"component": "database", "status": "down", "reason": "connection refused"}
]}))]
pub struct ReadyBody {
    pub ready: bool,
    /// Why not ready (`shutting down`, or `a critical component is not ok`); absent when ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
    /// The critical components that block readiness; absent unless that is the reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub components: Option<Vec<ReadyBlocker>>,
}

/// A critical component that is down or not probed yet.
#[derive(Serialize, ToSchema)]
pub struct ReadyBlocker {
    #[schema(example = "database")]
    pub component: String,
    pub status: ComponentStatus,
    /// The last probe error, or `not probed yet`.
    pub reason: String,
}

/// `POST /api/v1/admin/users`.
#[derive(Serialize, ToSchema)]
pub struct CreatedUser {
    /// The new user's id (a UUID).
    #[schema(format = Uuid)]
    pub id: String,
    pub username: String,
    pub role: Role,
}

/// A response whose body is an [`ErrorBody`].
fn error_response(description: &str) -> ResponseBuilder {
    let body = Ref::from_schema_name(ErrorBody::name());
    ResponseBuilder::new().description(description).content("application/json", Content::new(Some(body)))
}

fn header<S: PartialSchema>(description: &str) -> Header {
    HeaderBuilder::new().schema(S::schema()).description(Some(description)).build()
}

fn retry_after() -> Header {
    header::<u64>("Seconds to wait before trying again.")
}

/// Declares unit types naming reusable responses (`components/responses/<Name>`).
macro_rules! reusable_responses {
    ($($(#[$doc:meta])* $name:ident => $response:expr;)+) => {$(
        $(#[$doc])*
        pub struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), RefOr::T($response))
            }
        }
    )+};
}

reusable_responses! {
    /// 200 with a token pair.
    TokenIssued => ResponseBuilder::new()
        .description("A new access token and refresh token; never cached.")
        .content("application/json", Content::new(Some(Ref::from_schema_name(TokenPair::name()))))
        .header("Cache-Control", header::<String>("`no-store`"))
        .header("Pragma", header::<String>("`no-cache`"))
        .build();
    /// 400 for a body that is not JSON.
    MalformedJson => error_response("The body is not well-formed JSON (`malformed_json`).").build();
    /// 400 for a bad `If-Match` or body.
    BadIfMatchOrJson => error_response(
        "`If-Match` is not an item `ETag` (`invalid_if_match`), the body is not well-formed JSON \
         (`malformed_json`), or the id is not valid percent-encoded UTF-8 (`invalid_path`).",
    )
    .build();
    /// 401 from the authentication middleware.
    Unauthenticated => error_response(
        "No bearer token (`missing_token`), or one that is malformed or badly signed (`invalid_token`) \
         or expired (`token_expired`).",
    )
    .header("WWW-Authenticate", header::<String>("`Bearer realm=\"castwork\"`, with `error=\"invalid_token\"` \
        for a bad or expired token."))
    .build();
    /// 403 from a role guard.
    Forbidden => error_response("The caller's role is too low for this route (`forbidden`).").build();
    /// 409 for a stale `If-Match`.
    VersionConflict => error_response(
        "`If-Match` names a version that is no longer current (`version_conflict`); `current_version` \
         says which is.",
    )
    .build();
    /// 413 from the body limit.
    PayloadTooLarge => error_response("The body is larger than `server.body_limit_bytes` (`payload_too_large`).")
        .build();
    /// 415 for a body that is not declared JSON.
    UnsupportedMediaType => error_response(
        "The body's `Content-Type` is not `application/json` (`unsupported_media_type`).",
    )
    .build();
    /// 422 for JSON of the wrong shape.
    InvalidBody => error_response(
        "The JSON has the wrong shape: a missing or unknown field, or a value of the wrong type or not one of \
         the allowed values (`validation_failed`).",
    )
    .build();
    /// 422 for an invalid item.
    InvalidItem => error_response(
        "The item is invalid: `fields` has a message per bad field (`validation_failed`); or the JSON has the \
         wrong shape (`validation_failed`, `fields` empty). On `PUT`, an `id` in the body must match the path; on \
         `PATCH`, `null` on a field other than `body`, `tags` or `source_url` is named in `fields`.",
    )
    .build();
    /// 428 for a write without `If-Match`.
    PreconditionRequired => error_response(
        "The write needs `If-Match` with the item's current `ETag` (or `*`) (`precondition_required`).",
    )
    .build();
    /// 500.
    Internal => error_response("An unexpected error; the detail is logged, not returned (`internal`).").build();
    /// 503 when the database cannot be reached.
    DatabaseUnavailable => error_response("The database is unavailable (`database_unavailable`).")
        .header("Retry-After", retry_after())
        .build();
    /// 429 when the models shed load.
    InferenceBusy => error_response("Every inference backend's queue is full (`rate_limited`).")
        .header("Retry-After", retry_after())
        .build();
    /// 503 from a route that needs a model (or the database).
    InferenceUnavailable => error_response(
        "No model can answer now: inference is disabled, its backends are down or their breakers open, or \
         it timed out (`inference_unavailable`); or the database is unavailable (`database_unavailable`), or \
         the cache did not answer in time (`cache_timeout`, `cache_load_timeout`, `overloaded`).",
    )
    .header("Retry-After", retry_after())
    .build();
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use axum::response::IntoResponse;

    use super::*;
    use crate::explore::model::{MAX_LIMIT, MAX_QUERY_CHARS, MAX_TAG_FILTERS};
    use crate::http::error::ApiError;

    #[tokio::test]
    async fn error_body_mirrors_api_error() {
        let errors = [
            ApiError::NotFound("no item".to_owned()),
            ApiError::VersionConflict { message: "stale".to_owned(), current_version: 4 },
            ApiError::Validation {
                message: "bad".to_owned(),
                fields: [("title".to_owned(), "must not be empty".to_owned())].into(),
            },
            ApiError::bad_request("invalid_query", "bad"),
        ];
        for error in errors {
            let body = to_bytes(error.into_response().into_body(), 64 * 1024).await.unwrap();
            let parsed: Result<ErrorBody, _> = serde_json::from_slice(&body);
            assert!(
                parsed.is_ok(),
                "{} does not match ErrorBody: {parsed:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn document_is_openapi_3_1_with_the_bearer_scheme() {
        let doc = serde_json::to_value(document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(doc["components"]["securitySchemes"][BEARER]["scheme"], "bearer");
    }

    #[test]
    fn limits_match_the_handlers() {
        let doc = serde_json::to_value(document()).unwrap();
        for path in ["/api/v1/explore/items", "/api/v1/explore/trending", "/api/v1/explore/search"] {
            let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
            let limit = params.iter().find(|p| p["name"] == "limit").unwrap();
            assert_eq!(limit["schema"]["maximum"], MAX_LIMIT, "{path}");
            let q = params.iter().find(|p| p["name"] == "q");
            if let Some(q) = q {
                assert_eq!(q["schema"]["maxLength"], MAX_QUERY_CHARS, "{path}");
            }
        }
        let list = doc["paths"]["/api/v1/explore/items"]["get"]["parameters"].as_array().unwrap();
        let tag = list.iter().find(|p| p["name"] == "tag").unwrap();
        assert_eq!(tag["schema"]["maxItems"], MAX_TAG_FILTERS);
    }
}
