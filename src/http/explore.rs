//! Explore (viewer+): `GET /api/v1/explore/items`, `/items/{id}`, `/categories`,
//! `/trending`, `/search`.

use std::borrow::Cow;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};

use super::AppState;
use super::error::ApiError;
use super::extract::{IfNoneMatch, Viewer};
use super::openapi::{DatabaseUnavailable, ErrorBody, Internal, Unauthenticated};
use crate::cache::format::CachedValue;
use crate::explore::model::{
    DEFAULT_LIMIT, GroupCount, Item, ItemSummary, ListQuery, MAX_LIMIT, MAX_QUERY_CHARS, MAX_TAG_FILTERS,
    Page, SearchHit, Sort,
};
use crate::explore::views::ViewMsg;

/// Parsed query-string pairs, refusing unknown or repeated (where not allowed) keys.
/// Pairs borrow from the query string unless they had to be decoded.
struct Params<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Params<'a> {
    fn parse(raw: Option<&'a str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let pairs: Vec<(Cow<'a, str>, Cow<'a, str>)> =
            url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()).collect();
        for (key, _) in &pairs {
            if !allowed.contains(&key.as_ref()) {
                return Err(bad(format!(
                    "unknown parameter '{key}'; expected one of: {}",
                    allowed.join(", ")
                )));
            }
        }
        Ok(Self { pairs })
    }

    fn one(&self, key: &str) -> Result<Option<&str>, ApiError> {
        let mut values = self.pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_ref());
        let first = values.next();
        if values.next().is_some() {
            return Err(bad(format!("parameter '{key}' may be given once")));
        }
        Ok(first)
    }

    fn all(&self, key: &str) -> Vec<String> {
        self.pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_ref().to_owned()).collect()
    }

    fn limit(&self) -> Result<u32, ApiError> {
        match self.one("limit")? {
            None => Ok(DEFAULT_LIMIT),
            Some(text) => match text.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(bad(format!("limit must be an integer from 1 to {MAX_LIMIT}"))),
            },
        }
    }

    fn date(&self, key: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        let Some(text) = self.one(key)? else { return Ok(None) };
        if let Ok(at) = DateTime::parse_from_rfc3339(text) {
            return Ok(Some(at.with_timezone(&Utc)));
        }
        if let Some(midnight) =
            NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0))
        {
            return Ok(Some(midnight.and_utc()));
        }
        Err(bad(format!("{key} must be an RFC 3339 date-time (2025-06-01T00:00:00Z) or a date (2025-06-01)")))
    }

    fn text(&self, key: &str) -> Result<Option<String>, ApiError> {
        let value = self.one(key)?.map(str::trim).filter(|v| !v.is_empty());
        if let Some(v) = value
            && v.chars().count() > MAX_QUERY_CHARS
        {
            return Err(bad(format!("{key} must be at most {MAX_QUERY_CHARS} characters")));
        }
        Ok(value.map(str::to_owned))
    }
}

fn bad(message: String) -> ApiError {
    ApiError::bad_request("invalid_query", message)
}

fn parse_sort(text: Option<&str>) -> Result<Sort, ApiError> {
    match text {
        None | Some("new") => Ok(Sort::New),
        Some("trending") => Ok(Sort::Trending),
        Some("relevance") => Ok(Sort::Relevance),
        Some(other) => Err(bad(format!("unknown sort '{other}'; expected new, trending or relevance"))),
    }
}

/// Builds a [`ListQuery`] from the query string.
pub(super) fn list_query(raw: Option<&str>) -> Result<ListQuery, ApiError> {
    let params =
        Params::parse(raw, &["category", "tag", "group", "q", "from", "to", "sort", "limit", "cursor"])?;
    let tags = params.all("tag");
    if tags.len() > MAX_TAG_FILTERS {
        return Err(bad(format!("at most {MAX_TAG_FILTERS} tag filters")));
    }
    Ok(ListQuery {
        category: params.text("category")?,
        tags,
        group: params.text("group")?,
        q: params.text("q")?,
        from: params.date("from")?,
        to: params.date("to")?,
        sort: parse_sort(params.one("sort")?)?,
        limit: params.limit()?,
        cursor: params.one("cursor")?.map(str::to_owned),
    })
}

/// A filtered, sorted page of items with a keyset cursor.
#[utoipa::path(
    get,
    path = "/api/v1/explore/items",
    operation_id = "listItems",
    tag = "explore",
    params(
        ("category" = Option<String>, Query, description = "Primary category code.", example = "cs.CV",
            max_length = 256),
        ("tag" = Option<Vec<String>>, Query, style = Form, explode, description = "A tag (category code) the \
            item must carry; repeat the parameter for several (all must match), at most 10.",
            example = json!(["cs.CV", "cs.LG"]), max_items = 10),
        ("group" = Option<String>, Query, description = "Top-level group.", example = "Computer Science",
            max_length = 256),
        ("q" = Option<String>, Query, description = "Full-text query; blank is ignored.", max_length = 256),
        ("from" = Option<String>, Query, description = "Published at or after: an RFC 3339 date-time \
            (`2025-06-01T00:00:00Z`) or a date (`2025-06-01`, meaning midnight UTC).", example = "2025-06-01"),
        ("to" = Option<String>, Query, description = "Published before; same format as `from`.",
            example = "2025-07-01"),
        ("sort" = Option<Sort>, Query, description = "Order; `new` when left out. `relevance` ranks by the \
            full-text match of `q`."),
        ("limit" = Option<u32>, Query, description = "Page size; 20 when left out.", minimum = 1, maximum = 100),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page, with the \
            same filters and sort. Opaque: only a cursor this API issued for the same query is \
            accepted.", min_length = 24, max_length = 1024, pattern = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22}$"),
    ),
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
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = list_query(raw.as_deref())?;
    Ok(json_response(state.explore().list(&query).await?))
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
    Path(id): Path<String>,
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
    responses(
        (status = 200, description = "Every group with its categories and their item counts.",
            body = Vec<GroupCount>),
        (status = 401, response = Unauthenticated),
        (status = 500, response = Internal),
        (status = 503, response = DatabaseUnavailable),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip_all)]
pub async fn categories(State(state): State<AppState>, _caller: Viewer) -> Result<Response, ApiError> {
    Ok(json_response(state.explore().categories().await?))
}

/// Top items by time-decayed views.
#[utoipa::path(
    get,
    path = "/api/v1/explore/trending",
    operation_id = "listTrending",
    tag = "explore",
    params(
        ("limit" = Option<u32>, Query, description = "How many items; 20 when left out.", minimum = 1,
            maximum = 100),
    ),
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
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref(), &["limit"])?;
    Ok(json_response(state.explore().trending(params.limit()?).await?))
}

/// Ranked full-text results with highlighted snippets.
#[utoipa::path(
    get,
    path = "/api/v1/explore/search",
    operation_id = "searchItems",
    tag = "explore",
    params(
        ("q" = String, Query, description = "Full-text query; required and not blank.", max_length = 256,
            pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]",
            example = "diffusion transformer"),
        ("mode" = Option<String>, Query, description = "Only `text` (the default) is available; `semantic` and \
            `hybrid` are refused with 400 for now.", example = "text"),
        ("limit" = Option<u32>, Query, description = "Page size; 20 when left out.", minimum = 1, maximum = 100),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page, with the \
            same `q`. Opaque: only a cursor this API issued for the same query is \
            accepted.", min_length = 24, max_length = 1024, pattern = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22}$"),
    ),
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
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref(), &["q", "mode", "limit", "cursor"])?;
    match params.one("mode")? {
        None | Some("text") => {}
        Some("semantic" | "hybrid") => {
            return Err(bad("semantic and hybrid search are not available yet; use mode=text".to_owned()));
        }
        Some(other) => return Err(bad(format!("unknown mode '{other}'; expected text"))),
    }
    let q = params.text("q")?.ok_or_else(|| bad("q is required".to_owned()))?;
    Ok(json_response(state.explore().search(&q, params.limit()?, params.one("cursor")?).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query_parsing() {
        let q = list_query(Some("tag=cs.AI&tag=cs.LG&sort=trending&limit=5&from=2025-06-01")).unwrap();
        assert_eq!(q.tags, vec!["cs.AI", "cs.LG"]);
        assert_eq!(q.sort, Sort::Trending);
        assert_eq!(q.limit, 5);
        assert_eq!(q.from.unwrap().to_rfc3339(), "2025-06-01T00:00:00+00:00");
        for bad in ["limit=0", "limit=1000", "limit=x", "sort=old", "from=yesterday", "nope=1", "q=a&q=b"] {
            assert!(list_query(Some(bad)).is_err(), "{bad}");
        }
        let long = format!("q={}", "a".repeat(MAX_QUERY_CHARS + 1));
        assert!(list_query(Some(&long)).is_err());
        assert_eq!(list_query(Some("q=%20%20")).unwrap().q, None);
    }

    #[test]
    fn etags() {
        assert!(matches_any("\"3\"", 3));
        assert!(matches_any("W/\"3\"", 3));
        assert!(matches_any("\"1\", \"3\"", 3));
        assert!(matches_any("*", 3));
        assert!(!matches_any("\"2\"", 3));
    }
}
