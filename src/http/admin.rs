//! Operations (admin): `GET /api/v1/admin/actors`, `POST /api/v1/admin/chaos`,
//! `POST /api/v1/admin/users`, `POST /api/v1/admin/users/{username}/revoke-sessions`,
//! `GET /api/v1/admin/auth`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::ApiError;
use super::extract::{Admin, ApiJson, ApiPath, ApiQuery, query_params};
use super::openapi::{
    CreatedUser, DatabaseUnavailable, ErrorBody, Forbidden, Internal, InvalidBody, MalformedJson,
    PayloadTooLarge, Unauthenticated, UnsupportedMediaType,
};
use crate::auth::{AuthReport, Role};
use crate::supervision::supervisor::{ChaosAction, ChaosError};
use crate::supervision::tree::ActorNode;

/// `?format=json|text`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TreeQuery {
    /// `json` (the default) or `text`, an indented plain-text rendering for terminals.
    #[serde(default)]
    pub format: TreeFormat,
}

query_params!(TreeQuery);

/// Output format of the actor tree.
#[derive(Deserialize, Default, Clone, Copy, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TreeFormat {
    #[default]
    Json,
    Text,
}

/// The live actor tree from the root down.
#[utoipa::path(
    get,
    path = "/api/v1/admin/actors",
    operation_id = "getActorTree",
    tag = "admin",
    params(TreeQuery),
    responses(
        (status = 200, description = "The actor tree: JSON, or plain text with `format=text`.", content(
            (ActorNode = "application/json"),
            (String = "text/plain; charset=utf-8"),
        )),
        (status = 400, description = "An unknown parameter or `format` value (`invalid_query`).", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(admin = %caller.principal.username))]
pub async fn actors(
    State(state): State<AppState>,
    caller: Admin,
    ApiQuery(query): ApiQuery<TreeQuery>,
) -> Response {
    let tree = state.runtime().tree().await;
    match query.format {
        TreeFormat::Json => Json(tree).into_response(),
        TreeFormat::Text => {
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], tree.render_text()).into_response()
        }
    }
}

/// Chaos request body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChaosRequest {
    /// An actor name from `GET /api/v1/admin/actors`; not `root`.
    #[schema(example = "health")]
    pub actor: String,
    pub action: ChaosAction,
}

/// What a chaos request did.
#[derive(Serialize, ToSchema)]
pub struct ChaosApplied {
    actor: String,
    action: ChaosAction,
    /// Always `true`.
    applied: bool,
}

/// Kills, panics or stops a named actor. 404 unless `chaos.enabled`.
#[utoipa::path(
    post,
    path = "/api/v1/admin/chaos",
    operation_id = "injectChaos",
    tag = "admin",
    request_body = ChaosRequest,
    responses(
        (status = 202, description = "The action was sent to the actor; its supervisor handles the outcome.",
            body = ChaosApplied),
        (status = 400, response = MalformedJson),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 404, description = "Chaos is disabled (`chaos.enabled = false`: the route then answers as if \
            it did not exist), or no actor has that name (`not_found`).", body = ErrorBody),
        (status = 409, description = "The actor is `root`, which has no supervisor, or is not running \
            (`conflict`).", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = InvalidBody),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(admin = %caller.principal.username, actor = %body.actor))]
pub async fn chaos(
    State(state): State<AppState>,
    caller: Admin,
    ApiJson(body): ApiJson<ChaosRequest>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    if !state.settings().chaos.enabled {
        return Err(ApiError::NotFound("no such route".to_owned()));
    }
    if body.actor == "root" {
        return Err(ApiError::Conflict(
            "the root supervisor cannot be targeted; it has no supervisor".to_owned(),
        ));
    }
    match state.runtime().chaos(&body.actor, body.action).await {
        Ok(()) => {
            let applied = ChaosApplied { actor: body.actor, action: body.action, applied: true };
            Ok((StatusCode::ACCEPTED, Json(serde_json::json!(applied))))
        }
        Err(ChaosError::NotFound(name)) => Err(ApiError::NotFound(format!("no actor named '{name}'"))),
        Err(err @ ChaosError::NotRunning(_)) => Err(ApiError::Conflict(err.to_string())),
    }
}

/// New user body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// 3–64 characters of `A-Z a-z 0-9 _ . -`, unique ignoring case.
    #[schema(example = "ada", min_length = 3, max_length = 64, pattern = "^[A-Za-z0-9_.-]+$")]
    pub username: String,
    /// 8–1024 characters, no control characters, and at least `auth.password_min_score` (3) on
    /// zxcvbn's 0–4 strength scale, the username counting as a known word.
    #[schema(format = Password, min_length = 8, max_length = 1024)]
    pub password: String,
    pub role: Role,
}

/// Creates a user.
#[utoipa::path(
    post,
    path = "/api/v1/admin/users",
    operation_id = "createUser",
    tag = "admin",
    request_body = NewUser,
    responses(
        (status = 201, description = "Created.", body = CreatedUser),
        (status = 400, response = MalformedJson),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 409, description = "A user with that name (ignoring case) exists (`conflict`).",
            body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "An invalid username or password, or JSON of the wrong shape \
            (`validation_failed`); `fields` names the field and the message the rule (length, control \
            characters, strength).", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, description = "The database is unavailable (`database_unavailable`), or every \
            password-hashing slot stayed busy for `auth.hashing_wait_ms` (`busy`).", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(admin = %caller.principal.username, username = %body.username))]
pub async fn create_user(
    State(state): State<AppState>,
    caller: Admin,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let user = state.auth().create_user(&body.username, &body.password, body.role).await?;
    let created = serde_json::json!({ "id": user.id, "username": user.username, "role": body.role });
    Ok((StatusCode::CREATED, Json(created)))
}

/// This node's login and password-hashing counters.
#[utoipa::path(
    get,
    path = "/api/v1/admin/auth",
    operation_id = "authReport",
    tag = "admin",
    responses(
        (status = 200, description = "Counters since this node started: password verifications by outcome, \
            hashes, hashing permits and refusals (`busy`), and login attempts the limiter refused.",
            body = AuthReport),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(admin = %caller.principal.username))]
pub async fn auth_report(State(state): State<AppState>, caller: Admin) -> Json<AuthReport> {
    Json(state.auth().report())
}

/// Ends every session of a user: their refresh tokens stop working and their access tokens are
/// refused at once, on every node.
#[utoipa::path(
    post,
    path = "/api/v1/admin/users/{username}/revoke-sessions",
    operation_id = "revokeUserSessions",
    tag = "admin",
    params(("username" = String, Path, description = "The user whose sessions end.", example = "ada")),
    responses(
        (status = 204, description = "Every session of the user is revoked (also when they had none). \
            They can log in again."),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 404, description = "No user has that name (`not_found`).", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, response = DatabaseUnavailable),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(admin = %caller.principal.username))]
pub async fn revoke_sessions(
    State(state): State<AppState>,
    caller: Admin,
    ApiPath(username): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.auth().revoke_user_sessions(&username).await?;
    Ok(StatusCode::NO_CONTENT)
}
