//! The read side of [`ExploreService`]: lists, detail, categories, trending and
//! search, all with keyset pagination (never `OFFSET`).
//!
//! Each query is validated into a `Plan` and rendered to SQL by `sql.rs`, which
//! binds every value and hides the engines' differences:
//! - full text on SQLite is the FTS5 table `items_fts` (`bm25`, `snippet`,
//!   `highlight`), queried with the words of `q`, each quoted, all required;
//! - on PostgreSQL it is the generated `items.search` tsvector queried with
//!   `websearch_to_tsquery('english', q)` (`ts_rank_cd`, `ts_headline`); a `q` of stop
//!   words only matches nothing and yields an empty page.
//!
//! Pages sorted `new` or `trending` are stable under concurrent inserts: a cursor
//! holds the last row's key, and every later page starts strictly after it (an
//! item whose key changes meanwhile, e.g. its `trend` as views are flushed, may
//! move across the cursor). Relevance scores depend on corpus statistics (SQLite's
//! bm25), so relevance pages can skip or repeat rows when items change between
//! requests.
//!
//! On SQLite timestamps are text in sqlx's RFC 3339 form (`…T…+00:00`, 0/3/6/9
//! fraction digits), which sorts like time for the years items allow; comparisons
//! bind `DateTime<Utc>` so they are encoded the same way.

mod sql;
mod text;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, QueryResult};

use self::sql::Dialect;
use super::cursor::{Position, filter_fingerprint};
use super::model::{
    CategoryCount, GroupCount, Item, ItemSummary, ListQuery, MAX_LIMIT, MAX_QUERY_CHARS, MAX_TAG_FILTERS,
    Page, SearchHit, Sort,
};
use super::validate::{is_valid_code, is_valid_id};
use super::{ExploreError, ExploreService};

/// Ids bound in one `IN (...)` list.
const MAX_IDS_PER_QUERY: usize = 500;

/// Longest accepted `group` filter, in characters.
const MAX_GROUP_CHARS: usize = 100;

/// A full-text condition.
#[derive(Debug, Clone)]
struct FullText {
    /// `q`, trimmed (PostgreSQL parses it with `websearch_to_tsquery`).
    text: String,
    /// The FTS5 expression for SQLite.
    sqlite_match: String,
}

/// A validated query, ready to render as SQL.
#[derive(Debug, Clone)]
struct Plan {
    category: Option<String>,
    group: Option<String>,
    tags: Vec<String>,
    fts: Option<FullText>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    viewed_only: bool,
    sort: Sort,
    limit: u32,
    filter: u64,
    after: Option<Position>,
    highlight: bool,
}

fn bad(message: impl Into<String>) -> ExploreError {
    ExploreError::BadQuery(message.into())
}

/// `value` for an error message, cut to a readable length.
fn shown(value: &str) -> String {
    match value.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}

fn check_limit(limit: u32) -> Result<(), ExploreError> {
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(())
    } else {
        Err(bad(format!("limit must be between 1 and {MAX_LIMIT} (got {limit})")))
    }
}

/// A summary row as selected by `sql::page`.
struct SummaryRow {
    summary: ItemSummary,
    trend: f64,
}

fn decode_tags(id: &str, json: &str) -> Result<Vec<String>, DbErr> {
    serde_json::from_str(json).map_err(|e| DbErr::Type(format!("item '{id}' has malformed tags: {e}")))
}

fn summary_row(row: &QueryResult, with_score: bool) -> Result<SummaryRow, DbErr> {
    let id: String = row.try_get("", "id")?;
    let tags: String = row.try_get("", "tags")?;
    let body_head: String = row.try_get("", "body_head")?;
    let score: Option<f64> = row.try_get("", "score")?;
    Ok(SummaryRow {
        summary: ItemSummary {
            tags: decode_tags(&id, &tags)?,
            title: row.try_get("", "title")?,
            excerpt: text::excerpt(&body_head),
            category: row.try_get("", "category")?,
            category_code: row.try_get("", "category_code")?,
            group: row.try_get("", "group_name")?,
            published_at: row.try_get("", "published_at")?,
            views: row.try_get("", "views")?,
            version: row.try_get("", "version")?,
            score: if with_score { score } else { None },
            id,
        },
        trend: row.try_get("", "trend")?,
    })
}

impl ExploreService {
    fn dialect(&self) -> Dialect {
        Dialect::of(self.db())
    }

    /// Validates `query` and decodes its cursor.
    fn plan(&self, query: &ListQuery) -> Result<Plan, ExploreError> {
        check_limit(query.limit)?;
        if let Some(q) = &query.q {
            let chars = q.chars().count();
            if chars > MAX_QUERY_CHARS {
                return Err(bad(format!("q must be at most {MAX_QUERY_CHARS} characters (got {chars})")));
            }
        }
        let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
        if query.sort == Sort::Relevance && q.is_none() {
            return Err(bad("sort=relevance needs a full-text query q"));
        }
        if query.tags.len() > MAX_TAG_FILTERS {
            return Err(bad(format!("at most {MAX_TAG_FILTERS} tags (got {})", query.tags.len())));
        }
        if let Some(tag) = query.tags.iter().find(|t| !is_valid_code(t)) {
            return Err(bad(format!(
                "'{}' is not a valid tag (letters, digits, . and -, e.g. cs.CV)",
                shown(tag)
            )));
        }
        if let Some(code) = query.category.as_deref().filter(|c| !is_valid_code(c)) {
            return Err(bad(format!(
                "'{}' is not a valid category code (letters, digits, . and -, e.g. cs.CV)",
                shown(code)
            )));
        }
        if query.group.as_deref().is_some_and(|g| g.chars().count() > MAX_GROUP_CHARS) {
            return Err(bad(format!("group must be at most {MAX_GROUP_CHARS} characters")));
        }
        // PostgreSQL text cannot hold NUL: refuse it here rather than fail in the database.
        if query.group.as_deref().is_some_and(|g| g.contains('\0')) {
            return Err(bad("group must not contain NUL characters"));
        }
        if q.is_some_and(|q| q.contains('\0')) {
            return Err(bad("q must not contain NUL characters"));
        }
        if let (Some(from), Some(to)) = (query.from, query.to)
            && from >= to
        {
            return Err(bad("from must be before to"));
        }
        let fts = match q {
            None => None,
            Some(q) => Some(FullText {
                text: q.to_owned(),
                sqlite_match: sql::sqlite_match(q).ok_or_else(|| bad("q has no searchable words"))?,
            }),
        };
        let filter = filter_fingerprint(query);
        let after = match &query.cursor {
            None => None,
            Some(token) => {
                let position = self.cursors().decode(token, filter)?;
                let has_key = match query.sort {
                    Sort::New => position.published_at.is_some(),
                    Sort::Trending => position.trend.is_some_and(f64::is_finite),
                    Sort::Relevance => position.score.is_some_and(f64::is_finite),
                };
                if position.sort != query.sort || !has_key {
                    return Err(ExploreError::InvalidCursor);
                }
                Some(position)
            }
        };
        let mut tags = query.tags.clone();
        tags.sort_unstable();
        tags.dedup();
        Ok(Plan {
            category: query.category.clone(),
            group: query.group.clone(),
            tags,
            fts,
            from: query.from,
            to: query.to,
            viewed_only: false,
            sort: query.sort,
            limit: query.limit,
            filter,
            after,
            highlight: false,
        })
    }

    /// The cursor for the page that follows `last`.
    fn next_cursor(&self, plan: &Plan, last: &SummaryRow) -> String {
        let s = &last.summary;
        let position = Position {
            sort: plan.sort,
            filter: plan.filter,
            published_at: (plan.sort == Sort::New).then_some(s.published_at),
            trend: (plan.sort == Sort::Trending).then_some(last.trend),
            score: if plan.sort == Sort::Relevance { s.score } else { None },
            id: s.id.clone(),
        };
        self.cursors().encode(&position)
    }

    /// Runs a page query; returns its rows (at most `limit`) and the next cursor.
    async fn page_rows(
        &self,
        plan: &Plan,
        statement: sea_orm::Statement,
    ) -> Result<(Vec<(SummaryRow, QueryResult)>, Option<String>), ExploreError> {
        self.count_load();
        let rows = self.db().query_all_raw(statement).await?;
        let limit = usize::try_from(plan.limit).unwrap_or(usize::MAX);
        let more = rows.len() > limit;
        let mut out = Vec::with_capacity(rows.len().min(limit));
        for row in rows.into_iter().take(limit) {
            out.push((summary_row(&row, plan.fts.is_some())?, row));
        }
        let next = match out.last() {
            Some((last, _)) if more => Some(self.next_cursor(plan, last)),
            _ => None,
        };
        Ok((out, next))
    }

    /// A page of item summaries matching every filter of `query`, in its sort order.
    /// Pass the returned `next_cursor` back (with the same filters) for the next page.
    #[tracing::instrument(skip_all, fields(sort = ?query.sort, limit = query.limit, q = query.q.is_some()))]
    pub async fn list(&self, query: &ListQuery) -> Result<Page<ItemSummary>, ExploreError> {
        let plan = self.plan(query)?;
        let statement = sql::page(self.dialect(), &plan).into_statement();
        let (rows, next_cursor) = self.page_rows(&plan, statement).await?;
        Ok(Page { items: rows.into_iter().map(|(r, _)| r.summary).collect(), next_cursor })
    }

    /// One item, or `None` when no item has that id.
    #[tracing::instrument(skip_all)]
    pub async fn get(&self, id: &str) -> Result<Option<Item>, ExploreError> {
        if !is_valid_id(id) {
            return Ok(None);
        }
        self.count_load();
        let statement = sql::item(self.dialect(), id).into_statement();
        let Some(row) = self.db().query_one_raw(statement).await? else {
            return Ok(None);
        };
        let tags: String = row.try_get("", "tags")?;
        Ok(Some(Item {
            tags: decode_tags(id, &tags)?,
            id: row.try_get("", "id")?,
            title: row.try_get("", "title")?,
            body: row.try_get("", "body")?,
            category: row.try_get("", "category")?,
            category_code: row.try_get("", "category_code")?,
            group: row.try_get("", "group_name")?,
            source_url: row.try_get("", "source_url")?,
            published_at: row.try_get("", "published_at")?,
            views: row.try_get("", "views")?,
            version: row.try_get("", "version")?,
            created_at: row.try_get("", "created_at")?,
            updated_at: row.try_get("", "updated_at")?,
        }))
    }

    /// Item counts by group (largest first, then by name), each with its categories
    /// (largest first, then by code).
    #[tracing::instrument(skip_all)]
    pub async fn categories(&self) -> Result<Vec<GroupCount>, ExploreError> {
        self.count_load();
        let rows = self.db().query_all_raw(sql::category_counts(self.dialect()).into_statement()).await?;
        let mut groups: BTreeMap<String, Vec<CategoryCount>> = BTreeMap::new();
        for row in rows {
            let group: String = row.try_get("", "group_name")?;
            groups.entry(group).or_default().push(CategoryCount {
                code: row.try_get("", "category_code")?,
                name: row.try_get("", "category")?,
                count: row.try_get("", "n")?,
            });
        }
        let mut out: Vec<GroupCount> = groups
            .into_iter()
            .map(|(group, mut categories)| {
                categories.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.code.cmp(&b.code)));
                GroupCount { count: categories.iter().map(|c| c.count).sum(), group, categories }
            })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.group.cmp(&b.group)));
        Ok(out)
    }

    /// The `limit` most trending items among those viewed at least once.
    #[tracing::instrument(skip_all, fields(limit))]
    pub async fn trending(&self, limit: u32) -> Result<Vec<ItemSummary>, ExploreError> {
        let query = ListQuery { sort: Sort::Trending, limit, ..ListQuery::default() };
        let mut plan = self.plan(&query)?;
        plan.viewed_only = true;
        let statement = sql::page(self.dialect(), &plan).into_statement();
        let (rows, _) = self.page_rows(&plan, statement).await?;
        Ok(rows.into_iter().map(|(r, _)| r.summary).collect())
    }

    /// The summaries of the items among `ids`, in the order of `ids` (ids that
    /// are not items are left out), for rankings computed elsewhere (semantic
    /// search, related items).
    #[tracing::instrument(skip_all, fields(ids = ids.len()))]
    pub async fn summaries_of(&self, ids: &[String]) -> Result<Vec<ItemSummary>, ExploreError> {
        let mut found: std::collections::HashMap<String, ItemSummary> = std::collections::HashMap::new();
        for chunk in ids.chunks(MAX_IDS_PER_QUERY) {
            self.count_load();
            let statement = sql::summaries_by_ids(self.dialect(), chunk).into_statement();
            for row in self.db().query_all_raw(statement).await? {
                let summary = summary_row(&row, false)?.summary;
                found.insert(summary.id.clone(), summary);
            }
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// [`Self::summaries_of`] as search hits without marked matches: the title
    /// and the excerpt, HTML-escaped (what a hit found by meaning rather than by
    /// words shows).
    pub async fn unmarked_hits(&self, ids: &[String]) -> Result<Vec<SearchHit>, ExploreError> {
        let summaries = self.summaries_of(ids).await?;
        Ok(summaries
            .into_iter()
            .map(|item| SearchHit {
                title_highlight: text::render_plain(&item.title),
                snippet: text::render_plain(&item.excerpt),
                item,
                text_rank: None,
                semantic_rank: None,
            })
            .collect())
    }

    /// Items matching the full-text query `q`, best first, with the matches in the
    /// title and a body fragment marked up as `<mark>…</mark>` (all else HTML-escaped).
    #[tracing::instrument(skip_all, fields(limit, cursor = cursor.is_some()))]
    pub async fn search(
        &self,
        q: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<SearchHit>, ExploreError> {
        if q.trim().is_empty() {
            return Err(bad("q must not be empty"));
        }
        let query = ListQuery {
            q: Some(q.to_owned()),
            sort: Sort::Relevance,
            limit,
            cursor: cursor.map(str::to_owned),
            ..ListQuery::default()
        };
        let mut plan = self.plan(&query)?;
        plan.highlight = true;
        let dialect = self.dialect();
        let statement = sql::search_page(dialect, &plan).ok_or_else(|| bad("q must not be empty"))?;
        let (rows, next_cursor) = self.page_rows(&plan, statement.into_statement()).await?;
        let mut items = Vec::with_capacity(rows.len());
        for (summary, row) in rows {
            let title_hl: String = row.try_get("", "title_hl")?;
            let snippet_hl: String = row.try_get("", "snippet_hl")?;
            // PostgreSQL strips source sentinels in SQL; SQLite's highlight reads the
            // stored title, so drop them here by aligning with the raw title.
            let title_hl = match dialect {
                Dialect::Sqlite => text::drop_source_sentinels(&summary.summary.title, &title_hl),
                Dialect::Postgres => title_hl,
            };
            items.push(SearchHit {
                item: summary.summary,
                title_highlight: text::render_highlight(&title_hl),
                snippet: text::render_highlight(&snippet_hl),
                text_rank: None,
                semantic_rank: None,
            });
        }
        Ok(Page { items, next_cursor })
    }
}
