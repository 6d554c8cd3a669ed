//! Explore (viewer+): `GET /api/v1/explore/items`, `/items/{id}`,
//! `/items/{id}/summary`, `/items/{id}/related`, `/categories`, `/trending`,
//! `/search` (`mode=text|semantic|hybrid`).

mod params;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub use self::params::{
    CategoriesParams, DEFAULT_RELATED, ListParams, RelatedParams, SearchMode, SearchParams, SummaryParams,
    TrendingParams,
};
use super::AppState;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery, IfNoneMatch, Viewer};
use super::openapi::{
    DatabaseUnavailable, ErrorBody, InferenceBusy, InferenceUnavailable, Internal, Unauthenticated,
};
use crate::cache::format::CachedValue;
use crate::explore::model::{DEFAULT_LIMIT, GroupCount, Item, ItemSummary, Page, SearchHit};
use crate::explore::semantic::GeneratedSummary;
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
        (status = 200, description = "One page of hits, best match first. `mode=text`: `score` is the \
            full-text score, matches are marked, `next_cursor` leads on. `mode=semantic`: `score` is the cosine \
            similarity to `q`, `semantic_rank` the place by meaning, nothing is marked, one page only \
            (`next_cursor` is `null`). `mode=hybrid`: `score` is the fused score, `text_rank` and \
            `semantic_rank` say where each ranking placed the hit (absent: not among its first 50), hits that \
            matched the words are marked, one page only.", body = Page<SearchHit>),
        (status = 400, description = "`q` missing or blank, an unknown `mode`, a cursor with `mode=semantic` \
            or `mode=hybrid`, an unknown or repeated parameter, a value out of range (`invalid_query`), or a \
            bad cursor (`invalid_cursor`).", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 429, response = InferenceBusy),
        (status = 500, response = Internal),
        (status = 503, response = InferenceUnavailable),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(mode))]
pub async fn search(
    State(state): State<AppState>,
    _caller: Viewer,
    ApiQuery(params): ApiQuery<SearchParams>,
) -> Result<Response, ApiError> {
    let mode = params.mode.unwrap_or_default();
    tracing::Span::current().record("mode", tracing::field::debug(mode));
    let q = params.q.ok_or_else(|| ApiError::bad_request("invalid_query", "parameter 'q' is required"))?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if mode != SearchMode::Text && params.cursor.is_some() {
        let message =
            "mode=semantic and mode=hybrid answer one page: leave out 'cursor' (it is for mode=text)";
        return Err(ApiError::bad_request("invalid_query", message));
    }
    let semantic = &state.runtime().semantic;
    match mode {
        SearchMode::Text => {
            Ok(json_response(state.explore().search(&q, limit, params.cursor.as_deref()).await?))
        }
        SearchMode::Semantic => Ok(Json(semantic.semantic_search(&q, limit).await?).into_response()),
        SearchMode::Hybrid => Ok(Json(semantic.hybrid_search(&q, limit).await?).into_response()),
    }
}

/// The path parameter of the routes under an item.
const ITEM_ID: &str = "The item id, e.g. `2506.20941` or `cond-mat/9909265`, percent-encoded as one path segment \
    (`cond-mat%2F9909265`).";

/// Two sentences about an item by the configured chat model (`inference.chat_model`): generated at the
/// first request and stored; generated again when the item's title or body changes.
#[utoipa::path(
    get,
    path = "/api/v1/explore/items/{id}/summary",
    operation_id = "getItemSummary",
    tag = "explore",
    params(("id" = String, Path, description = ITEM_ID, example = "2506.20941"), SummaryParams),
    responses(
        (status = 200, description = "The summary; `cached` is false when this request waited for its \
            generation (concurrent requests share one).", body = GeneratedSummary),
        (status = 400, description = "Any query parameter (`invalid_query`): this route takes none; or an id \
            that is not valid percent-encoded UTF-8 (`invalid_path`).", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 404, description = "No item with that id (`not_found`).", body = ErrorBody),
        (status = 429, response = InferenceBusy),
        (status = 500, response = Internal),
        (status = 503, response = InferenceUnavailable),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(item = %id))]
pub async fn summary(
    State(state): State<AppState>,
    _caller: Viewer,
    ApiPath(id): ApiPath<String>,
    ApiQuery(_): ApiQuery<SummaryParams>,
) -> Result<Json<GeneratedSummary>, ApiError> {
    Ok(Json(state.runtime().semantic.summary(&id).await?))
}

/// The items nearest in meaning to an item (by the cosine similarity of their embeddings), itself left
/// out. An item with no embedding yet is embedded first.
#[utoipa::path(
    get,
    path = "/api/v1/explore/items/{id}/related",
    operation_id = "listRelatedItems",
    tag = "explore",
    params(("id" = String, Path, description = ITEM_ID, example = "2506.20941"), RelatedParams),
    responses(
        (status = 200, description = "The nearest items, best first, `score` the cosine similarity. One page \
            only: `next_cursor` is always `null`.", body = Page<ItemSummary>),
        (status = 400, description = "An unknown or repeated parameter, or `limit` out of range \
            (`invalid_query`); or an id that is not valid percent-encoded UTF-8 (`invalid_path`).",
            body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 404, description = "No item with that id (`not_found`).", body = ErrorBody),
        (status = 429, response = InferenceBusy),
        (status = 500, response = Internal),
        (status = 503, response = InferenceUnavailable),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all, fields(item = %id))]
pub async fn related(
    State(state): State<AppState>,
    _caller: Viewer,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<RelatedParams>,
) -> Result<Json<Page<ItemSummary>>, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_RELATED);
    let items = state.runtime().semantic.related(&id, limit).await?;
    Ok(Json(Page { items, next_cursor: None }))
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
