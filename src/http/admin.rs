//! Operations (admin): `GET /api/v1/admin/actors`, `POST /api/v1/admin/chaos`,
//! `POST /api/v1/admin/users`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::extract::{Admin, ApiJson, ApiQuery};
use crate::auth::Role;
use crate::supervision::supervisor::{ChaosAction, ChaosError};

/// `?format=json|text`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeQuery {
    #[serde(default)]
    pub format: TreeFormat,
}

/// Output format of the actor tree.
#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum TreeFormat {
    #[default]
    Json,
    Text,
}

/// The live actor tree from the root down.
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
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosRequest {
    pub actor: String,
    pub action: ChaosAction,
}

#[derive(Serialize)]
struct ChaosApplied {
    actor: String,
    action: ChaosAction,
    applied: bool,
}

/// Kills, panics or stops a named actor. 404 unless `chaos.enabled`.
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
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub role: Role,
}

/// Creates a user.
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
