//! Item writes (editor+): `POST /api/v1/items`, `PUT`/`PATCH`/`DELETE /api/v1/items/{id}`.
//! `PUT` and `PATCH` need `If-Match` with the version the client last saw (its
//! `ETag`); a stale one is 409 with the current version. `DELETE` takes it optionally.
//! A `PUT` or `PATCH` whose result equals the stored item changes nothing: 200 with
//! the current item and the same `ETag`, no new version, no outbox event.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use super::explore::etag;
use super::extract::{ApiJson, ApiPath, Editor};
use super::openapi::{
    BadIfMatchOrJson, DatabaseUnavailable, ErrorBody, Forbidden, Internal, InvalidItem, MalformedJson,
    PayloadTooLarge, PreconditionRequired, Unauthenticated, UnsupportedMediaType, VersionConflict,
};
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
        let location = format!(
            "/api/v1/explore/items/{}",
            url::form_urlencoded::byte_serialize(item.id.as_bytes()).collect::<String>()
        );
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
    }
    response
}

/// Creates an item.
#[utoipa::path(
    post,
    path = "/api/v1/items",
    operation_id = "createItem",
    tag = "items",
    request_body = ItemInput,
    responses(
        (status = 201, description = "Created.", body = Item,
            headers(
                ("ETag" = String, description = "The item's version as a strong entity tag: `\"1\"`."),
                ("Location" = String, description = "The item's URL under `/api/v1/explore/items/`, with the id \
                    percent-encoded."),
            )),
        (status = 400, response = MalformedJson),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 409, description = "An item with that id already exists (`conflict`).", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = InvalidItem),
        (status = 500, response = Internal),
        (status = 503, response = DatabaseUnavailable),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(editor = %caller.principal.username))]
pub async fn create(
    State(state): State<AppState>,
    caller: Editor,
    ApiJson(input): ApiJson<ItemInput>,
) -> Result<Response, ApiError> {
    let item = state.explore().service().create(input).await?;
    Ok(with_etag(StatusCode::CREATED, item))
}

/// Replaces an item.
#[utoipa::path(
    put,
    path = "/api/v1/items/{id}",
    operation_id = "replaceItem",
    tag = "items",
    params(
        ("id" = String, Path, description = "The item id. Ids may contain `/`, which must be percent-encoded \
            (`cond-mat%2F9909265`): the id is one path segment.", example = "2506.20941"),
        ("If-Match" = String, Header, description = "The `ETag` of the version the change is based on \
            (`\"3\"`; `W/\"3\"` is accepted too), or `*` to write whatever the current version is. \
            Left out: 428 (`precondition_required`).",
            example = "\"3\"", pattern = r#"^(\*|(W/)?"?[0-9]{1,18}"?)$"#),
    ),
    request_body = ItemInput,
    responses(
        (status = 200, description = "Replaced; or, when the content equals the stored item's, unchanged: \
            the current item with its version (no new version, no outbox event).", body = Item,
            headers(("ETag" = String, description = "The item's version as a strong entity tag, e.g. `\"4\"`: \
                the new one, or the current one when nothing changed."))),
        (status = 400, response = BadIfMatchOrJson),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 404, description = "No item with that id (`not_found`).", body = ErrorBody),
        (status = 409, response = VersionConflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = InvalidItem),
        (status = 428, response = PreconditionRequired),
        (status = 500, response = Internal),
        (status = 503, response = DatabaseUnavailable),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(editor = %caller.principal.username, item = %id))]
pub async fn replace(
    State(state): State<AppState>,
    caller: Editor,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<ItemInput>,
) -> Result<Response, ApiError> {
    let expected = required(&headers)?;
    if input.id.as_deref().is_some_and(|body_id| body_id != id) {
        let fields = [("id".to_owned(), "must match the id in the path (or be left out)".to_owned())].into();
        return Err(ApiError::Validation { message: "the item is invalid; see fields".to_owned(), fields });
    }
    let item = state.explore().service().replace(&id, expected, input).await?;
    Ok(with_etag(StatusCode::OK, item))
}

/// Updates some fields of an item.
#[utoipa::path(
    patch,
    path = "/api/v1/items/{id}",
    operation_id = "patchItem",
    tag = "items",
    params(
        ("id" = String, Path, description = "The item id. Ids may contain `/`, which must be percent-encoded \
            (`cond-mat%2F9909265`): the id is one path segment.", example = "2506.20941"),
        ("If-Match" = String, Header, description = "The `ETag` of the version the change is based on \
            (`\"3\"`; `W/\"3\"` is accepted too), or `*` to write whatever the current version is. \
            Left out: 428 (`precondition_required`).",
            example = "\"3\"", pattern = r#"^(\*|(W/)?"?[0-9]{1,18}"?)$"#),
    ),
    request_body(content = ItemPatch, description = "The fields to change; those left out keep their value. \
        `null` clears `body`, `tags` and `source_url`; on any other field it is refused (422, named in \
        `fields`). The merged item must be valid."),
    responses(
        (status = 200, description = "Updated; or, when the patch changes nothing (`{}`, or only the stored \
            values), unchanged: the current item with its version (no new version, no outbox event).",
            body = Item,
            headers(("ETag" = String, description = "The item's version as a strong entity tag, e.g. `\"4\"`: \
                the new one, or the current one when nothing changed."))),
        (status = 400, response = BadIfMatchOrJson),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 404, description = "No item with that id (`not_found`).", body = ErrorBody),
        (status = 409, response = VersionConflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = InvalidItem),
        (status = 428, response = PreconditionRequired),
        (status = 500, response = Internal),
        (status = 503, response = DatabaseUnavailable),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(editor = %caller.principal.username, item = %id))]
pub async fn patch(
    State(state): State<AppState>,
    caller: Editor,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(patch): ApiJson<ItemPatch>,
) -> Result<Response, ApiError> {
    let expected = required(&headers)?;
    let item = state.explore().service().patch(&id, expected, patch).await?;
    Ok(with_etag(StatusCode::OK, item))
}

/// Deletes an item.
#[utoipa::path(
    delete,
    path = "/api/v1/items/{id}",
    operation_id = "deleteItem",
    tag = "items",
    params(
        ("id" = String, Path, description = "The item id. Ids may contain `/`, which must be percent-encoded \
            (`cond-mat%2F9909265`): the id is one path segment.", example = "2506.20941"),
        ("If-Match" = Option<String>, Header, description = "Optional: the `ETag` of the version to delete \
            (`\"3\"`); a stale one is refused with 409. Left out or `*`, any version is deleted.",
            example = "\"3\"", nullable = false, pattern = r#"^(\*|(W/)?"?[0-9]{1,18}"?)$"#),
    ),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "`If-Match` is not an item `ETag` (`invalid_if_match`).", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 404, description = "No item with that id (`not_found`).", body = ErrorBody),
        (status = 409, response = VersionConflict),
        (status = 500, response = Internal),
        (status = 503, response = DatabaseUnavailable),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(editor = %caller.principal.username, item = %id))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Editor,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let expected = match precondition(&headers)? {
        Precondition::Version(v) => Some(v),
        Precondition::Absent | Precondition::Any => None,
    };
    state.explore().service().delete(&id, expected).await?;
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
