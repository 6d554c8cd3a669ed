//! Explore (viewer+): `GET /api/v1/explore/items`, `/items/{id}`, `/categories`,
//! `/trending`, `/search`.

mod params;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub use self::params::{CategoriesParams, ListParams, SearchMode, SearchParams, TrendingParams};
use super::AppState;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery, IfNoneMatch, Viewer};
use super::openapi::{DatabaseUnavailable, ErrorBody, Internal, Unauthenticated};
use crate::cache::format::CachedValue;
use crate::explore::model::{DEFAULT_LIMIT, GroupCount, Item, ItemSummary, Page, SearchHit};
use crate::explore::views::ViewMsg;

/// A filtered, sorted page of items with a keyset cursor.
#[utoipa::path(
    get,
    path = "/api/v1/explore/items",
    operation_id = "listItems",
    tag = "explore",
    params(ListParams),
    responses(
        (status = 200, description = "One page of items.", body = Page<ItemSummary>),
        (status = 400, description = "An unknown or repeated parameter, a malformed or out-of-range value, \
            `sort=relevance` without `q` (`invalid_query`), or a cursor that was altered or belongs to another \
            query (`invalid_cursor`).", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 500, response = Internal),
        (status = 503, response = DatabaseUnavailable),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all)]
pub async fn list(
    State(state): State<AppState>,
    _caller: Viewer,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    Ok(json_response(state.explore().list(&params.into()).await?))
}

/// Serialized JSON straight from the cache: no re-serialization on a hit.
fn json_response(value: CachedValue) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], value.body).into_response()
}

/// The strong `ETag` of an item version.
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

fn matches_any(header_value: &str, version: i64) -> bool {
    header_value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == version.to_string())
}

/// One item; `If-None-Match` with its current `ETag` gives 304.
#[utoipa::path(
    get,
    path = "/api/v1/explore/items/{id}",
    operation_id = "getItem",
    tag = "explore",
    params(
        ("id" = String, Path, description = "The item id, e.g. `2506.20941` or `cond-mat/9909265`. Ids may \
            contain `/`, which must be percent-encoded (`cond-mat%2F9909265`): the id is one path segment.",
            example = "2506.20941"),
        ("If-None-Match" = Option<String>, Header, description = "`ETag`s the client holds (`\"3\"`, \
            `W/\"3\"`, a comma-separated list, or `*`); if one is current the answer is 304 without a body."),
    ),
    responses(
        (status = 200, description = "The item.", body = Item,
            headers(("ETag" = String, description = "The item's version as a strong entity tag, e.g. `\"3\"`."))),
        (status = 304, description = "The client's copy is current.",
            headers(("ETag" = String, description = "The item's current version."))),
        (status = 400, description = "The id is not valid percent-encoded UTF-8 (`invalid_path`).",
            body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 404, description = "No item with that id (`not_found`).", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, response = DatabaseUnavailable),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(item = %id))]
pub async fn item(
    State(state): State<AppState>,
    caller: Viewer,
    ApiPath(id): ApiPath<String>,
    IfNoneMatch(if_none_match): IfNoneMatch,
) -> Result<Response, ApiError> {
    let cached = state.explore().item(&id).await?;
    if cached.not_found {
        return Err(ApiError::NotFound(format!("no item with id '{id}'")));
    }
    state.runtime().views.cast(ViewMsg::Viewed { item: id, user: caller.principal.user_id });
    let version = cached.etag.unwrap_or_default();
    let tag = etag(version);
    let fresh = if_none_match.as_ref().and_then(|v| v.to_str().ok()).is_some_and(|v| matches_any(v, version));
    if fresh {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
    }
    let mut response = json_response(cached);
    response.headers_mut().insert(header::ETAG, tag);
    Ok(response)
}

/// Groups → categories → item counts.
#[utoipa::path(
    get,
    path = "/api/v1/explore/categories",
    operation_id = "listCategories",
    tag = "explore",
    params(CategoriesParams),
    responses(
        (status = 200, description = "Every group with its categories and their item counts.",
            body = Vec<GroupCount>),
        (status = 400, description = "Any query parameter (`invalid_query`): this route takes none.",
            body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 500, response = Internal),
        (status = 503, response = DatabaseUnavailable),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all)]
pub async fn categories(
    State(state): State<AppState>,
    _caller: Viewer,
    ApiQuery(_): ApiQuery<CategoriesParams>,
) -> Result<Response, ApiError> {
    Ok(json_response(state.explore().categories().await?))
}

/// Top items by time-decayed views.
#[utoipa::path(
    get,
    path = "/api/v1/explore/trending",
    operation_id = "listTrending",
    tag = "explore",
    params(TrendingParams),
    responses(
        (status = 200, description = "The top items, best first. One page only: `next_cursor` is always `null`.",
            body = Page<ItemSummary>),
        (status = 400, description = "An unknown or repeated parameter, or `limit` out of range \
            (`invalid_query`).", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 500, response = Internal),
        (status = 503, response = DatabaseUnavailable),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all)]
pub async fn trending(
    State(state): State<AppState>,
    _caller: Viewer,
    ApiQuery(params): ApiQuery<TrendingParams>,
) -> Result<Response, ApiError> {
    Ok(json_response(state.explore().trending(params.limit.unwrap_or(DEFAULT_LIMIT)).await?))
}

/// Ranked full-text results with highlighted snippets.
#[utoipa::path(
    get,
    path = "/api/v1/explore/search",
    operation_id = "searchItems",
    tag = "explore",
    params(SearchParams),
    responses(
        (status = 200, description = "One page of hits, best match first.", body = Page<SearchHit>),
        (status = 400, description = "`q` missing or blank, an unknown or unavailable `mode`, an unknown or \
            repeated parameter, a value out of range (`invalid_query`), or a bad cursor (`invalid_cursor`).",
            body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 500, response = Internal),
        (status = 503, response = DatabaseUnavailable),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all)]
pub async fn search(
    State(state): State<AppState>,
    _caller: Viewer,
    ApiQuery(params): ApiQuery<SearchParams>,
) -> Result<Response, ApiError> {
    match params.mode.unwrap_or_default() {
        SearchMode::Text => {}
        SearchMode::Semantic | SearchMode::Hybrid => {
            let message = "semantic and hybrid search are not available yet; use mode=text";
            return Err(ApiError::bad_request("invalid_query", message));
        }
    }
    let q = params.q.ok_or_else(|| ApiError::bad_request("invalid_query", "parameter 'q' is required"))?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    Ok(json_response(state.explore().search(&q, limit, params.cursor.as_deref()).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags() {
        assert!(matches_any("\"3\"", 3));
        assert!(matches_any("W/\"3\"", 3));
        assert!(matches_any("\"1\", \"3\"", 3));
        assert!(matches_any("*", 3));
        assert!(!matches_any("\"2\"", 3));
    }
}
