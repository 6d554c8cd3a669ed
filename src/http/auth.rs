//! `POST /api/v1/auth/login`, `/refresh`, `/logout` and `GET /api/v1/auth/me`.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, Viewer};
use crate::auth::{AuthError, Principal, TokenPair};
use crate::metrics;

/// Login body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// Refresh and logout body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

fn token_response(pair: TokenPair) -> Response {
    // RFC 6749 §5.1: token responses must not be cached
    ([(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")], Json(pair)).into_response()
}

/// Exchanges a username and password for an access token and a refresh token.
#[tracing::instrument(skip_all, fields(username = %body.username))]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    if body.username.is_empty() || body.password.is_empty() {
        return Err(ApiError::bad_request("missing_credentials", "username and password are required"));
    }
    match state.auth().login(&body.username, &body.password, client.ip()).await {
        Ok(pair) => Ok(token_response(pair)),
        Err(err) => {
            let reason = match err {
                AuthError::RateLimited { .. } => "rate_limited",
                AuthError::BadCredentials => "bad_credentials",
                _ => "error",
            };
            metrics::login_failure(reason);
            tracing::info!(reason, "login refused");
            Err(err.into())
        }
    }
}

/// Rotates a refresh token: the old one is spent, a new pair is returned.
#[tracing::instrument(skip_all)]
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    let pair = state.auth().refresh(&body.refresh_token).await?;
    Ok(token_response(pair))
}

/// Revokes the session (the refresh token's whole family).
#[tracing::instrument(skip_all, fields(username = %caller.principal.username))]
pub async fn logout(
    State(state): State<AppState>,
    caller: Viewer,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    state.auth().logout(&body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who the bearer token says the caller is.
#[tracing::instrument(skip_all)]
pub async fn me(caller: Viewer) -> Json<Principal> {
    Json(caller.principal)
}
