//! Explore's typed queries and results. Handlers build these from HTTP input;
//! [`super::ExploreService`] answers them. Nothing here knows SQL or HTTP.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Largest page.
pub const MAX_LIMIT: u32 = 100;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: u32 = 20;
/// Longest accepted full-text query, in characters.
pub const MAX_QUERY_CHARS: usize = 256;
/// Most tags one list query may filter on.
pub const MAX_TAG_FILTERS: usize = 10;

/// Order of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Item {
    #[schema(example = "2506.20941")]
    pub id: String,
    pub title: String,
    pub body: String,
    #[schema(example = "Computer Vision and Pattern Recognition")]
    pub category: String,
    #[schema(example = "cs.CV")]
    pub category_code: String,
    #[schema(example = "Computer Science")]
    pub group: String,
    #[schema(example = json!(["cs.CV", "cs.LG"]))]
    pub tags: Vec<String>,
    /// Always present; `null` when the item has no source.
    #[schema(required = true, format = "uri", example = "https://arxiv.org/abs/2506.20941")]
    pub source_url: Option<String>,
    pub published_at: DateTime<Utc>,
    /// Detail views counted so far, one per user within `explore.view_dedup_window_secs`
    /// (flushed in batches, so slightly behind).
    pub views: i64,
    /// Incremented by every write; the `ETag`.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An item in a list: the body is cut to an excerpt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ItemSummary {
    #[schema(example = "2506.20941")]
    pub id: String,
    pub title: String,
    pub excerpt: String,
    #[schema(example = "Computer Vision and Pattern Recognition")]
    pub category: String,
    #[schema(example = "cs.CV")]
    pub category_code: String,
    #[schema(example = "Computer Science")]
    pub group: String,
    #[schema(example = json!(["cs.CV", "cs.LG"]))]
    pub tags: Vec<String>,
    pub published_at: DateTime<Utc>,
    pub views: i64,
    pub version: i64,
    /// The ranking's score, higher is better, when the list is ranked: the full-text score
    /// when filtered by `q`; the cosine similarity (-1 to 1) for related items and
    /// `mode=semantic`; the reciprocal rank fusion score for `mode=hybrid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub score: Option<f64>,
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    #[schema(schema_with = array_of_refs::<T>)]
    pub items: Vec<T>,
    /// Pass back as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The schema of `items` in [`Page`]: an array of references to `T`'s schema.
/// utoipa 5 would inline `T`'s whole schema into every `Page_T` (juhaku/utoipa#1586).
fn array_of_refs<T: ToSchema>() -> utoipa::openapi::Array {
    utoipa::openapi::Array::new(utoipa::openapi::Ref::from_schema_name(T::name()))
}

/// A search result: the item, its score and highlighted fragments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SearchHit {
    #[serde(flatten)]
    pub item: ItemSummary,
    /// The title with matches wrapped in `<mark>…</mark>` (the rest HTML-escaped).
    pub title_highlight: String,
    /// A fragment of the body with matches wrapped in `<mark>…</mark>` (the rest HTML-escaped).
    pub snippet: String,
    /// Its rank (from 1) among the full-text matches; `mode=hybrid` only, when the words matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1)]
    pub text_rank: Option<u32>,
    /// Its rank (from 1) by meaning; `mode=hybrid` only, when it was among the nearest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1)]
    pub semantic_rank: Option<u32>,
}

/// A category and how many items it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CategoryCount {
    #[schema(example = "cs.CV")]
    pub code: String,
    #[schema(example = "Computer Vision and Pattern Recognition")]
    pub name: String,
    pub count: i64,
}

/// A group with its categories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GroupCount {
    #[schema(example = "Computer Science")]
    pub group: String,
    pub count: i64,
    pub categories: Vec<CategoryCount>,
}

// The `pattern`s below state in the OpenAPI document the rules that
// `super::validate` enforces. "Blank" is what `str::trim` removes (Unicode
// White_Space), spelt out rather than `\s`, whose meaning differs between regex
// dialects; U+E000 and U+E001 are reserved for search highlighting.

/// An item as written by a client (create and full replace).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemInput {
    /// Optional on create (a UUID is generated); on replace it must equal the id in the
    /// path, or be left out. 1–128 characters of letters, digits and `. _ - /`, starting
    /// with a letter or digit.
    #[serde(default)]
    #[schema(
        example = "2506.20941",
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._/-]*$"
    )]
    pub id: Option<String>,
    /// Not blank; at most 500 characters.
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\uE000\uE001]*[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\uE000\uE001][^\uE000\uE001]*$"
    )]
    pub title: String,
    /// At most 100 KiB.
    #[serde(default)]
    #[schema(pattern = r"^[^\uE000\uE001]*$")]
    pub body: String,
    /// The category's display name; not blank.
    #[schema(
        example = "Computer Vision and Pattern Recognition",
        min_length = 1,
        max_length = 200,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub category: String,
    /// Letters, digits, `.` and `-`, starting with a letter.
    #[schema(example = "cs.CV", min_length = 1, max_length = 64, pattern = r"^[A-Za-z][A-Za-z0-9.-]*$")]
    pub category_code: String,
    /// The top-level group; not blank.
    #[schema(
        example = "Computer Science",
        min_length = 1,
        max_length = 100,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub group: String,
    /// At most 20 distinct category codes.
    #[serde(default)]
    #[schema(schema_with = tag_list)]
    pub tags: Vec<String>,
    /// An `http://` or `https://` URL of at most 2048 characters.
    #[serde(default)]
    #[schema(
        format = "uri",
        example = "https://arxiv.org/abs/2506.20941",
        max_length = 2048,
        pattern = r"^https?://"
    )]
    pub source_url: Option<String>,
    /// A date-time in the years 1900–2200.
    #[schema(pattern = r"^(19[0-9]{2}|2[01][0-9]{2}|2200)-")]
    pub published_at: DateTime<Utc>,
}

/// At most 20 distinct category codes (`tags` in [`ItemInput`] and, nullable, in [`ItemPatch`]).
fn tag_list() -> utoipa::openapi::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    let code = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(64))
        .pattern(Some(r"^[A-Za-z][A-Za-z0-9.-]*$"));
    ArrayBuilder::new()
        .items(code)
        .max_items(Some(crate::explore::validate::MAX_TAGS))
        .unique_items(true)
        .examples([serde_json::json!(["cs.CV", "cs.LG"])])
        .build()
}

fn nullable_tag_list() -> utoipa::openapi::Array {
    use utoipa::openapi::schema::{SchemaType, Type};
    let mut list = tag_list();
    list.schema_type = SchemaType::from_iter([Type::Array, Type::Null]);
    list
}

/// A partial update (JSON merge patch semantics): a field left out keeps its value, a
/// value replaces it, and `null` clears `body` (to empty), `tags` (to none) or
/// `source_url`. The other fields are required on every item, so `null` on them is
/// refused per field (422). A patch that changes nothing writes nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemPatch {
    /// Not blank; at most 500 characters. Not nullable.
    #[serde(default, skip_serializing_if = "Patch::is_absent")]
    #[schema(value_type = String, min_length = 1, max_length = 500, pattern = r"^[^\uE000\uE001]*[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\uE000\uE001][^\uE000\uE001]*$")]
    pub title: Patch<String>,
    /// At most 100 KiB; `null` empties it.
    #[serde(default, skip_serializing_if = "Patch::is_absent")]
    #[schema(value_type = Option<String>, pattern = r"^[^\uE000\uE001]*$")]
    pub body: Patch<String>,
    /// Not blank. Not nullable.
    #[serde(default, skip_serializing_if = "Patch::is_absent")]
    #[schema(
        value_type = String,
        example = "Computer Vision and Pattern Recognition",
        min_length = 1,
        max_length = 200,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub category: Patch<String>,
    /// Letters, digits, `.` and `-`, starting with a letter. Not nullable.
    #[serde(default, skip_serializing_if = "Patch::is_absent")]
    #[schema(value_type = String, example = "cs.CV", min_length = 1, max_length = 64, pattern = r"^[A-Za-z][A-Za-z0-9.-]*$")]
    pub category_code: Patch<String>,
    /// Not blank. Not nullable.
    #[serde(default, skip_serializing_if = "Patch::is_absent")]
    #[schema(
        value_type = String,
        example = "Computer Science",
        min_length = 1,
        max_length = 100,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub group: Patch<String>,
    /// Replaces the whole list (at most 20 distinct category codes); `null` removes every tag.
    #[serde(default, skip_serializing_if = "Patch::is_absent")]
    #[schema(schema_with = nullable_tag_list)]
    pub tags: Patch<Vec<String>>,
    /// An `http://` or `https://` URL of at most 2048 characters; `null` clears it.
    #[serde(default, skip_serializing_if = "Patch::is_absent")]
    #[schema(value_type = Option<String>, format = "uri", max_length = 2048, pattern = r"^https?://")]
    pub source_url: Patch<String>,
    /// A date-time in the years 1900–2200. Not nullable.
    #[serde(default, skip_serializing_if = "Patch::is_absent")]
    #[schema(value_type = String, format = DateTime, pattern = r"^(19[0-9]{2}|2[01][0-9]{2}|2200)-")]
    pub published_at: Patch<DateTime<Utc>>,
}

/// One field of a partial update, telling a field left out from an explicit `null`
/// (which `Option` alone cannot: serde reads both as `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Patch<T> {
    /// Left out: the field keeps its value.
    #[default]
    Absent,
    /// `null`: the field is cleared, where it may be empty.
    Null,
    /// A new value.
    Value(T),
}

impl<T> Patch<T> {
    /// Whether the field was left out.
    pub fn is_absent(&self) -> bool {
        matches!(self, Self::Absent)
    }

    /// Maps a present value, keeping `Absent` and `Null`.
    pub fn map_value<U>(self, f: impl FnOnce(T) -> U) -> Patch<U> {
        match self {
            Self::Absent => Patch::Absent,
            Self::Null => Patch::Null,
            Self::Value(value) => Patch::Value(f(value)),
        }
    }
}

impl<T> From<T> for Patch<T> {
    fn from(value: T) -> Self {
        Self::Value(value)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    /// Reached only for a field that is present (a missing one is `#[serde(default)]`).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Option::<T>::deserialize(d)?.map_or(Self::Null, Self::Value))
    }
}

impl<T: Serialize> Serialize for Patch<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Value(value) => s.serialize_some(value),
            Self::Absent | Self::Null => s.serialize_none(),
        }
    }
}

/// Per-field validation messages.
pub type FieldErrors = BTreeMap<String, String>;
