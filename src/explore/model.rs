//! Explore's typed queries and results. Handlers build these from HTTP input;
//! [`super::ExploreService`] answers them. Nothing here knows SQL or HTTP.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Largest page.
pub const MAX_LIMIT: u32 = 100;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: u32 = 20;
/// Longest accepted full-text query, in characters.
pub const MAX_QUERY_CHARS: usize = 256;
/// Most tags one list query may filter on.
pub const MAX_TAG_FILTERS: usize = 10;

/// Order of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Sort {
    /// Newest first: `published_at` desc, then `id` desc.
    #[default]
    New,
    /// Highest time-decayed views first (see [`super::trend`]), then `id` desc.
    Trending,
    /// Best full-text match first (needs `q`), then `id` asc.
    Relevance,
}

/// A catalogue list request: every filter is optional and all that are given must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    /// Primary category code, e.g. `cs.CV`.
    pub category: Option<String>,
    /// Tags (category codes) the item must all carry.
    pub tags: Vec<String>,
    /// Top-level group, e.g. `Computer Science`.
    pub group: Option<String>,
    /// Full-text query.
    pub q: Option<String>,
    /// Published at or after.
    pub from: Option<DateTime<Utc>>,
    /// Published before.
    pub to: Option<DateTime<Utc>>,
    pub sort: Sort,
    /// 1..=[`MAX_LIMIT`].
    pub limit: u32,
    /// Opaque `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A full item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub title: String,
    pub body: String,
    pub category: String,
    pub category_code: String,
    pub group: String,
    pub tags: Vec<String>,
    pub source_url: Option<String>,
    pub published_at: DateTime<Utc>,
    /// Detail views counted so far (flushed in batches, so slightly behind).
    pub views: i64,
    /// Incremented by every write; the `ETag`.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An item in a list: the body is cut to an excerpt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemSummary {
    pub id: String,
    pub title: String,
    pub excerpt: String,
    pub category: String,
    pub category_code: String,
    pub group: String,
    pub tags: Vec<String>,
    pub published_at: DateTime<Utc>,
    pub views: i64,
    pub version: i64,
    /// Full-text score (higher is better), when the list was filtered by `q`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A search result: the item, its score and highlighted fragments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    #[serde(flatten)]
    pub item: ItemSummary,
    /// The title with matches wrapped in `<mark>…</mark>` (the rest HTML-escaped).
    pub title_highlight: String,
    /// A fragment of the body with matches wrapped in `<mark>…</mark>` (the rest HTML-escaped).
    pub snippet: String,
}

/// A category and how many items it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryCount {
    pub code: String,
    pub name: String,
    pub count: i64,
}

/// A group with its categories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupCount {
    pub group: String,
    pub count: i64,
    pub categories: Vec<CategoryCount>,
}

/// An item as written by a client (create and full replace).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemInput {
    /// Optional on create (a UUID is generated); ignored on replace (the path wins).
    #[serde(default)]
    pub id: Option<String>,
    pub title: String,
    #[serde(default)]
    pub body: String,
    pub category: String,
    pub category_code: String,
    pub group: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub source_url: Option<String>,
    pub published_at: DateTime<Utc>,
}

/// A partial update (JSON merge patch semantics for the fields present).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemPatch {
    pub title: Option<String>,
    pub body: Option<String>,
    pub category: Option<String>,
    pub category_code: Option<String>,
    pub group: Option<String>,
    pub tags: Option<Vec<String>>,
    /// `Some(None)` clears it.
    #[serde(default, with = "double_option")]
    pub source_url: Option<Option<String>>,
    pub published_at: Option<DateTime<Utc>>,
}

/// Per-field validation messages.
pub type FieldErrors = BTreeMap<String, String>;

mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Option<String>>, s: S) -> Result<S::Ok, S::Error> {
        value.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}
