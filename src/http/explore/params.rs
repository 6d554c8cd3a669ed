//! The query strings of the Explore routes, as types: each field is one parameter,
//! described for the OpenAPI document by `IntoParams` and checked by `Deserialize`
//! (through [`super::super::extract::ApiQuery`], which names the parameter in every
//! 400 `invalid_query`).

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde::de::{Deserializer, Error as _};
use utoipa::{IntoParams, ToSchema};

use crate::explore::model::{DEFAULT_LIMIT, ListQuery, MAX_LIMIT, MAX_QUERY_CHARS, MAX_TAG_FILTERS, Sort};
use crate::explore::semantic::search::MAX_RELATED;
use crate::http::extract::query_params;

/// `GET /api/v1/explore/items`: filters (all that are given must match), order and page.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Primary category code.
    #[param(example = "cs.CV", max_length = 256)]
    #[serde(default, deserialize_with = "text")]
    pub category: Option<String>,
    /// A tag (category code) the item must carry; repeat the parameter for several (all must
    /// match), at most 10.
    #[param(style = Form, explode, example = json!(["cs.CV", "cs.LG"]), max_items = 10)]
    #[serde(default, deserialize_with = "tags")]
    pub tag: Vec<String>,
    /// Top-level group.
    #[param(example = "Computer Science", max_length = 256)]
    #[serde(default, deserialize_with = "text")]
    pub group: Option<String>,
    /// Full-text query; blank is ignored.
    #[param(max_length = 256)]
    #[serde(default, deserialize_with = "text")]
    pub q: Option<String>,
    /// Published at or after: an RFC 3339 date-time (`2025-06-01T00:00:00Z`) or a date
    /// (`2025-06-01`, meaning midnight UTC).
    #[param(value_type = Option<String>, example = "2025-06-01")]
    #[serde(default, deserialize_with = "date")]
    pub from: Option<DateTime<Utc>>,
    /// Published before; same format as `from`.
    #[param(value_type = Option<String>, example = "2025-07-01")]
    #[serde(default, deserialize_with = "date")]
    pub to: Option<DateTime<Utc>>,
    /// Order; `new` when left out. `relevance` ranks by the full-text match of `q`.
    #[serde(default)]
    pub sort: Option<Sort>,
    /// Page size; 20 when left out.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "limit")]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page, with the same filters and sort. Opaque: only a
    /// cursor this API issued for the same query is accepted.
    #[param(min_length = 24, max_length = 1024, pattern = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22}$")]
    pub cursor: Option<String>,
}

impl From<ListParams> for ListQuery {
    fn from(params: ListParams) -> Self {
        Self {
            category: params.category,
            tags: params.tag,
            group: params.group,
            q: params.q,
            from: params.from,
            to: params.to,
            sort: params.sort.unwrap_or_default(),
            limit: params.limit.unwrap_or(DEFAULT_LIMIT),
            cursor: params.cursor,
        }
    }
}

/// `GET /api/v1/explore/search`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Full-text query; required and not blank.
    #[param(required = true, value_type = String, max_length = 256,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]",
        example = "diffusion transformer")]
    #[serde(default, deserialize_with = "text")]
    pub q: Option<String>,
    /// How `q` is matched: `text` (the default) by its words, with highlights and a cursor;
    /// `semantic` by meaning (embedding similarity); `hybrid` both, fused by reciprocal rank.
    /// `semantic` and `hybrid` answer one page of `limit` hits (no cursor).
    #[param(inline, example = "text")]
    #[serde(default)]
    pub mode: Option<SearchMode>,
    /// Page size; 20 when left out.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "limit")]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page, with the same `q` (`mode=text` only). Opaque: only a
    /// cursor this API issued for the same query is accepted.
    #[param(min_length = 24, max_length = 1024, pattern = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22}$")]
    pub cursor: Option<String>,
}

/// How `q` is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Full-text search.
    #[default]
    Text,
    /// By meaning: cosine similarity of the embeddings of `q` and of each item.
    Semantic,
    /// Full-text and semantic rankings fused by reciprocal rank (k = 60).
    Hybrid,
}

/// `GET /api/v1/explore/items/{id}/related`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RelatedParams {
    /// How many items; 10 when left out.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 50)]
    #[serde(default, deserialize_with = "related_limit")]
    pub limit: Option<u32>,
}

/// `GET /api/v1/explore/items/{id}/summary` takes no parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SummaryParams {}

/// `GET /api/v1/explore/trending`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TrendingParams {
    /// How many items; 20 when left out.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "limit")]
    pub limit: Option<u32>,
}

/// `GET /api/v1/explore/categories` takes no parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CategoriesParams {}

query_params!(ListParams, SearchParams, TrendingParams, CategoriesParams, RelatedParams, SummaryParams);

/// How many related items are shown when `limit` is left out.
pub const DEFAULT_RELATED: u32 = 10;

/// A related-items count from 1 to [`MAX_RELATED`].
fn related_limit<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    let text = String::deserialize(deserializer)?;
    match text.parse::<u32>() {
        Ok(n) if (1..=MAX_RELATED).contains(&n) => Ok(Some(n)),
        _ => Err(D::Error::custom(format_args!("must be an integer from 1 to {MAX_RELATED}"))),
    }
}

/// A page size from 1 to [`MAX_LIMIT`].
fn limit<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    let text = String::deserialize(deserializer)?;
    match text.parse::<u32>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(Some(n)),
        _ => Err(D::Error::custom(format_args!("must be an integer from 1 to {MAX_LIMIT}"))),
    }
}

/// Trimmed text of at most [`MAX_QUERY_CHARS`] characters; blank is the same as left out.
fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(deserializer)?;
    let trimmed = text.trim();
    if trimmed.chars().count() > MAX_QUERY_CHARS {
        return Err(D::Error::custom(format_args!("must be at most {MAX_QUERY_CHARS} characters")));
    }
    Ok((!trimmed.is_empty()).then(|| trimmed.to_owned()))
}

/// An RFC 3339 date-time, or a date meaning its midnight UTC.
fn date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if let Ok(at) = DateTime::parse_from_rfc3339(&text) {
        return Ok(Some(at.with_timezone(&Utc)));
    }
    NaiveDate::parse_from_str(&text, "%Y-%m-%d")
        .ok()
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .map(|midnight| Some(midnight.and_utc()))
        .ok_or_else(|| {
            D::Error::custom("must be an RFC 3339 date-time (2025-06-01T00:00:00Z) or a date (2025-06-01)")
        })
}

/// The repeated `tag` values, at most [`MAX_TAG_FILTERS`].
fn tags<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let tags = Vec::<String>::deserialize(deserializer)?;
    if tags.len() > MAX_TAG_FILTERS {
        return Err(D::Error::custom(format_args!("at most {MAX_TAG_FILTERS} tag filters")));
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::ApiError;
    use crate::http::extract::parse_query;

    fn list(raw: &str) -> Result<ListQuery, ApiError> {
        parse_query::<ListParams>(Some(raw)).map(ListQuery::from)
    }

    /// The message of a 400 `invalid_query`.
    fn refusal<T: std::fmt::Debug>(result: Result<T, ApiError>) -> String {
        match result {
            Err(ApiError::BadRequest { code: "invalid_query", message }) => message,
            other => panic!("expected invalid_query, got {other:?}"),
        }
    }

    #[test]
    fn a_list_query_is_parsed() {
        let q = list("tag=cs.AI&tag=cs.LG&sort=trending&limit=5&from=2025-06-01&q=%20graph%20").unwrap();
        assert_eq!(q.tags, vec!["cs.AI", "cs.LG"]);
        assert_eq!(q.sort, Sort::Trending);
        assert_eq!(q.limit, 5);
        assert_eq!(q.from.unwrap().to_rfc3339(), "2025-06-01T00:00:00+00:00");
        assert_eq!(q.q.as_deref(), Some("graph"));
        let single = list("tag=cs.AI&to=2025-07-08T00:00:00Z").unwrap();
        assert_eq!(
            (single.tags, single.to.unwrap().to_rfc3339()),
            (vec!["cs.AI".to_owned()], "2025-07-08T00:00:00+00:00".to_owned())
        );
        let empty = list("").unwrap();
        assert_eq!((empty.limit, empty.sort, empty.q, empty.cursor), (DEFAULT_LIMIT, Sort::New, None, None));
        assert_eq!(list("q=%20%20&category=").unwrap().q, None);
        assert_eq!(list("cursor=").unwrap().cursor.as_deref(), Some(""), "an empty cursor reaches the codec");
    }

    #[test]
    fn every_refusal_names_the_parameter() {
        let long = format!("q={}", "a".repeat(MAX_QUERY_CHARS + 1));
        let eleven = ["tag=x"; MAX_TAG_FILTERS + 1].join("&");
        for (raw, names) in [
            ("limit=0", "'limit'"),
            ("limit=1000", "'limit'"),
            ("limit=x", "'limit'"),
            ("limit=", "'limit'"),
            ("sort=old", "'sort'"),
            ("from=yesterday", "'from'"),
            ("to=2025-13-45", "'to'"),
            ("nope=1", "'nope'"),
            ("q=a&q=b", "'q'"),
            ("limit=5&limit=5", "'limit'"),
            (long.as_str(), "'q'"),
            (eleven.as_str(), "'tag'"),
        ] {
            let message = refusal(list(raw));
            assert!(message.contains(names), "{raw}: {message}");
        }
        assert!(refusal(list("limit=0")).contains("from 1 to 100"));
        assert!(refusal(list("nope=1")).contains("expected one of: category, tag, group"));
        assert!(refusal(list("q=a&q=b")).contains("may be given once"));
    }

    #[test]
    fn search_trending_and_categories_take_only_their_parameters() {
        let search = parse_query::<SearchParams>(Some("q=graph&mode=text&limit=3&cursor=abc")).unwrap();
        assert_eq!(
            (search.q.as_deref(), search.mode, search.limit, search.cursor.as_deref()),
            (Some("graph"), Some(SearchMode::Text), Some(3), Some("abc"))
        );
        assert_eq!(
            parse_query::<SearchParams>(Some("mode=semantic")).unwrap().mode,
            Some(SearchMode::Semantic)
        );
        assert!(refusal(parse_query::<SearchParams>(Some("q=x&mode=fuzzy"))).contains("'mode'"));
        assert!(refusal(parse_query::<SearchParams>(Some("q=x&sort=new"))).contains("'sort'"));
        assert_eq!(parse_query::<TrendingParams>(Some("limit=7")).unwrap().limit, Some(7));
        assert!(refusal(parse_query::<TrendingParams>(Some("limit=0"))).contains("'limit'"));
        assert!(refusal(parse_query::<TrendingParams>(Some("q=x"))).contains("'q'"));
        assert!(parse_query::<CategoriesParams>(None).is_ok());
        assert!(refusal(parse_query::<CategoriesParams>(Some("limit=1"))).contains("takes none"));
        assert_eq!(parse_query::<RelatedParams>(Some("limit=50")).unwrap().limit, Some(50));
        assert!(refusal(parse_query::<RelatedParams>(Some("limit=51"))).contains("from 1 to 50"));
        assert!(refusal(parse_query::<SummaryParams>(Some("x=1"))).contains("'x'"));
    }
}
