//! Item writes (editor+): `POST /api/v1/items`, `PUT`/`PATCH`/`DELETE /api/v1/items/{id}`.
//! `PUT` and `PATCH` need `If-Match` with the version the client last saw (its
//! `ETag`); a stale one is 409 with the current version. `DELETE` takes it optionally.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use super::explore::etag;
use super::extract::{ApiJson, Editor};
use crate::explore::ExploreError;
use crate::explore::model::{Item, ItemInput, ItemPatch};

/// What `If-Match` asks for.
#[derive(Debug, PartialEq, Eq)]
enum Precondition {
    Absent,
    Any,
    Version(i64),
}

fn precondition(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(Precondition::Absent) };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(Precondition::Any);
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse::<i64>()
        .map(Precondition::Version)
        .map_err(|_| ApiError::bad_request("invalid_if_match", "If-Match must be an item ETag such as \"3\""))
}

fn required(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    match precondition(headers)? {
        Precondition::Absent => Err(ExploreError::PreconditionRequired.into()),
        Precondition::Any => Ok(None),
        Precondition::Version(v) => Ok(Some(v)),
    }
}

fn with_etag(status: StatusCode, item: Item) -> Response {
    let mut response = (status, [(header::ETAG, etag(item.version))], Json(&item)).into_response();
    if status == StatusCode::CREATED {
        let location = format!("/api/v1/explore/items/{}", url::form_urlencoded::byte_serialize(item.id.as_bytes()).collect::<String>());
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
    }
    response
}

/// Creates an item.
#[tracing::instrument(skip_all, fields(editor = %caller.principal.username))]
pub async fn create(
    State(state): State<AppState>,
    caller: Editor,
    ApiJson(input): ApiJson<ItemInput>,
) -> Result<Response, ApiError> {
    let item = state.explore().create(input).await?;
    Ok(with_etag(StatusCode::CREATED, item))
}

/// Replaces an item.
#[tracing::instrument(skip_all, fields(editor = %caller.principal.username, item = %id))]
pub async fn replace(
    State(state): State<AppState>,
    caller: Editor,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<ItemInput>,
) -> Result<Response, ApiError> {
    let expected = required(&headers)?;
    if input.id.as_deref().is_some_and(|body_id| body_id != id) {
        let fields = [("id".to_owned(), "must match the id in the path (or be left out)".to_owned())].into();
        return Err(ApiError::Validation { message: "the item is invalid; see fields".to_owned(), fields });
    }
    let item = state.explore().replace(&id, expected, input).await?;
    Ok(with_etag(StatusCode::OK, item))
}

/// Updates some fields of an item.
#[tracing::instrument(skip_all, fields(editor = %caller.principal.username, item = %id))]
pub async fn patch(
    State(state): State<AppState>,
    caller: Editor,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(patch): ApiJson<ItemPatch>,
) -> Result<Response, ApiError> {
    let expected = required(&headers)?;
    let item = state.explore().patch(&id, expected, patch).await?;
    Ok(with_etag(StatusCode::OK, item))
}

/// Deletes an item.
#[tracing::instrument(skip_all, fields(editor = %caller.principal.username, item = %id))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Editor,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let expected = match precondition(&headers)? {
        Precondition::Version(v) => Some(v),
        Precondition::Absent | Precondition::Any => None,
    };
    state.explore().delete(&id, expected).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::IF_MATCH, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn if_match_parsing() {
        assert_eq!(precondition(&HeaderMap::new()).unwrap(), Precondition::Absent);
        assert_eq!(precondition(&headers("*")).unwrap(), Precondition::Any);
        assert_eq!(precondition(&headers("\"4\"")).unwrap(), Precondition::Version(4));
        assert_eq!(precondition(&headers("W/\"4\"")).unwrap(), Precondition::Version(4));
        assert!(precondition(&headers("\"abc\"")).is_err());
        assert!(required(&HeaderMap::new()).is_err());
    }
}
