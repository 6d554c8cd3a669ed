//! `POST /api/v1/auth/login`, `/refresh`, `/logout` and `GET /api/v1/auth/me`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::AppState;
use super::client_addr::ClientAddr;
use super::error::ApiError;
use super::extract::{ApiJson, Viewer};
use super::openapi::{
    DatabaseUnavailable, ErrorBody, Internal, InvalidBody, MalformedJson, PayloadTooLarge, TokenIssued,
    Unauthenticated, UnsupportedMediaType,
};
use crate::auth::{AuthError, Principal, TokenPair};
use crate::metrics;

/// Login body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Not empty.
    #[schema(example = "admin", min_length = 1)]
    pub username: String,
    /// Not empty.
    #[schema(format = Password, min_length = 1)]
    pub password: String,
}

/// Refresh and logout body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The `refresh_token` of the last token response.
    pub refresh_token: String,
}

fn token_response(pair: TokenPair) -> Response {
    // RFC 6749 §5.1: token responses must not be cached
    ([(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")], Json(pair)).into_response()
}

/// Exchanges a username and password for an access token and a refresh token.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    operation_id = "login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, response = TokenIssued),
        (status = 400, description = "Malformed JSON (`malformed_json`), or an empty username or password \
            (`missing_credentials`).", body = ErrorBody),
        (status = 401, description = "Unknown user or wrong password (`invalid_credentials`).", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"castwork\"`"))),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = InvalidBody),
        (status = 429, description = "Too many failed logins for this username or client address \
            (`rate_limited`): each attempt is counted before the password is checked, a successful one \
            is given back.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 500, response = Internal),
        (status = 503, description = "The database is unavailable (`database_unavailable`), or every \
            password-checking slot stayed busy for `auth.hashing_wait_ms` (`busy`).", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
    ),
)]
#[tracing::instrument(skip_all, fields(username = %body.username))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    if body.username.is_empty() || body.password.is_empty() {
        return Err(ApiError::bad_request("missing_credentials", "username and password are required"));
    }
    match state.auth().login(&body.username, &body.password, client).await {
        Ok(pair) => Ok(token_response(pair)),
        Err(err) => {
            let reason = match err {
                AuthError::RateLimited { .. } => "rate_limited",
                AuthError::BadCredentials => "bad_credentials",
                AuthError::Busy { .. } => "busy",
                _ => "error",
            };
            metrics::login_failure(reason);
            tracing::info!(reason, "login refused");
            Err(err.into())
        }
    }
}

/// Rotates a refresh token: the old one is spent, a new pair is returned.
#[utoipa::path(
    post,
    path = "/api/v1/auth/refresh",
    operation_id = "refresh",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, response = TokenIssued),
        (status = 400, response = MalformedJson),
        (status = 401, description = "The refresh token is unknown, revoked or expired \
            (`invalid_refresh_token`), or was already used (`refresh_token_reused`; its whole session \
            is revoked).", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"castwork\"`"))),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = InvalidBody),
        (status = 500, response = Internal),
        (status = 503, response = DatabaseUnavailable),
    ),
)]
#[tracing::instrument(skip_all)]
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    let pair = state.auth().refresh(&body.refresh_token).await?;
    Ok(token_response(pair))
}

/// Ends the caller's session and the one the refresh token belongs to, if it is the caller's.
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    operation_id = "logout",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "The caller's current session is revoked (its access tokens are \
            refused from now on), and so is the refresh token's session when it belongs to the caller. A \
            refresh token that is unknown, or belongs to another user, is ignored with the same answer: \
            logout is idempotent and tells nothing about other users' tokens."),
        (status = 400, response = MalformedJson),
        (status = 401, response = Unauthenticated),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = InvalidBody),
        (status = 500, response = Internal),
        (status = 503, response = DatabaseUnavailable),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(username = %caller.principal.username))]
pub async fn logout(
    State(state): State<AppState>,
    caller: Viewer,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    state.auth().logout(&caller.principal, &body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who the bearer token says the caller is.
#[utoipa::path(
    get,
    path = "/api/v1/auth/me",
    operation_id = "me",
    tag = "auth",
    responses(
        (status = 200, description = "The caller, as the access token describes them.", body = Principal),
        (status = 401, response = Unauthenticated),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all)]
pub async fn me(caller: Viewer) -> Json<Principal> {
    Json(caller.principal)
}
