//! SQL for the read side: a tiny statement builder that binds every value (`?` on
//! SQLite, `$n` on PostgreSQL) and the one place where the two engines differ.
//!
//! A page is always
//!
//! ```text
//! SELECT r.* FROM (SELECT <columns>, <score> AS score FROM items [+ full text] WHERE <filters>) AS r
//! WHERE <keyset after the cursor> ORDER BY <sort key>, r.id LIMIT <limit + 1>
//! ```
//!
//! and a search page wraps that to add highlights for the page's rows only.

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{DatabaseConnection, DbBackend, Statement, Value};

use super::super::model::Sort;
use super::Plan;
use super::text::{MARK_CLOSE, MARK_OPEN};

/// Which SQL the database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The dialect of `db`. Only SQLite and PostgreSQL are compiled in.
    pub(super) fn of(db: &DatabaseConnection) -> Self {
        match db.get_database_backend() {
            DbBackend::Postgres => Self::Postgres,
            _ => Self::Sqlite,
        }
    }

    fn backend(self) -> DbBackend {
        match self {
            Self::Sqlite => DbBackend::Sqlite,
            Self::Postgres => DbBackend::Postgres,
        }
    }

    /// `items.tags` as JSON text (jsonb on PostgreSQL, already text on SQLite).
    fn tags_text(self) -> &'static str {
        match self {
            Self::Sqlite => "items.tags",
            Self::Postgres => "items.tags::text",
        }
    }
}

/// SQL text plus the values bound to its placeholders, in order.
pub(super) struct Sql {
    dialect: Dialect,
    text: String,
    values: Vec<Value>,
}

impl Sql {
    pub(super) fn new(dialect: Dialect) -> Self {
        Self { dialect, text: String::with_capacity(512), values: Vec::new() }
    }

    /// Appends SQL text (never user input).
    pub(super) fn push(&mut self, sql: &str) -> &mut Self {
        self.text.push_str(sql);
        self
    }

    /// Appends a placeholder bound to `value`.
    pub(super) fn bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.values.push(value.into());
        match self.dialect {
            Dialect::Sqlite => self.text.push('?'),
            Dialect::Postgres => {
                self.text.push('$');
                self.text.push_str(&self.values.len().to_string());
            }
        }
        self
    }

    pub(super) fn into_statement(self) -> Statement {
        Statement::from_sql_and_values(self.dialect.backend(), self.text, self.values)
    }

    #[cfg(test)]
    pub(super) fn text(&self) -> &str {
        &self.text
    }
}

/// How many characters of the body a summary reads (the excerpt is cut from them).
pub(super) const BODY_HEAD_CHARS: usize = 281;

/// The summary columns of `items`, for an inner `SELECT`.
fn summary_columns(sql: &mut Sql) {
    let tags = sql.dialect.tags_text();
    sql.push("items.id, items.title, substr(items.body, 1, ")
        .push(&BODY_HEAD_CHARS.to_string())
        .push(") AS body_head, items.category, items.category_code, items.group_name, ")
        .push(tags)
        .push(" AS tags, items.published_at, items.views, items.trend, items.version");
}

/// One page of summaries (`limit + 1` rows) for `plan`.
pub(super) fn page(dialect: Dialect, plan: &Plan) -> Sql {
    let mut sql = Sql::new(dialect);
    push_page(&mut sql, plan);
    sql
}

fn push_page(sql: &mut Sql, plan: &Plan) {
    sql.push("SELECT r.* FROM (SELECT ");
    summary_columns(sql);
    match (&plan.fts, sql.dialect) {
        (None, _) => {
            sql.push(", CAST(NULL AS DOUBLE PRECISION) AS score FROM items WHERE 1 = 1");
        }
        (Some(fts), Dialect::Sqlite) => {
            // bm25 is lower-is-better; title hits weigh 10x body hits.
            sql.push(", -bm25(items_fts, 10.0, 1.0) AS score");
            if plan.highlight {
                sql.push(", items.rowid AS rid");
            }
            sql.push(" FROM items_fts JOIN items ON items.rowid = items_fts.rowid WHERE items_fts MATCH ")
                .bind(fts.sqlite_match.clone());
        }
        (Some(fts), Dialect::Postgres) => {
            sql.push(", ts_rank_cd(items.search, tsq.q)::float8 AS score FROM items CROSS JOIN ")
                .push("websearch_to_tsquery('english', ")
                .bind(fts.text.clone())
                .push(") AS tsq(q) WHERE items.search @@ tsq.q");
        }
    }
    push_filters(sql, plan);
    sql.push(") AS r");
    push_keyset(sql, plan);
    sql.push(match plan.sort {
        Sort::New => " ORDER BY r.published_at DESC, r.id DESC",
        Sort::Trending => " ORDER BY r.trend DESC, r.id DESC",
        Sort::Relevance => " ORDER BY r.score DESC, r.id ASC",
    });
    sql.push(" LIMIT ").bind(i64::from(plan.limit) + 1);
}

fn push_filters(sql: &mut Sql, plan: &Plan) {
    if let Some(code) = &plan.category {
        sql.push(" AND items.category_code = ").bind(code.clone());
    }
    if let Some(group) = &plan.group {
        sql.push(" AND items.group_name = ").bind(group.clone());
    }
    for tag in &plan.tags {
        sql.push(" AND EXISTS (SELECT 1 FROM item_tags t WHERE t.item_id = items.id AND t.tag = ")
            .bind(tag.clone())
            .push(")");
    }
    // PostgreSQL keeps microseconds; a finer bound is rounded up to the next one, which
    // selects the same stored rows for both `>=` and `<` (sqlx would truncate it).
    let dialect = sql.dialect;
    let bound = |t: DateTime<Utc>| match dialect {
        Dialect::Sqlite => t,
        Dialect::Postgres => ceil_to_micros(t),
    };
    if let Some(from) = plan.from.map(bound) {
        sql.push(" AND items.published_at >= ").bind(from);
    }
    if let Some(to) = plan.to.map(bound) {
        sql.push(" AND items.published_at < ").bind(to);
    }
    if plan.viewed_only {
        sql.push(" AND items.views > 0");
    }
}

/// The first whole microsecond at or after `t`.
fn ceil_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let rest = t.timestamp_subsec_nanos() % 1_000;
    if rest == 0 {
        return t;
    }
    t.checked_add_signed(TimeDelta::nanoseconds(i64::from(1_000 - rest))).unwrap_or(t)
}

fn push_keyset(sql: &mut Sql, plan: &Plan) {
    let Some(after) = &plan.after else { return };
    // Row-value comparisons where both keys run the same way (an index range on
    // both engines); relevance mixes directions, so it spells the OR out.
    match plan.sort {
        Sort::New => {
            if let Some(at) = after.published_at {
                sql.push(" WHERE (r.published_at, r.id) < (")
                    .bind(at)
                    .push(", ")
                    .bind(after.id.clone())
                    .push(")");
            }
        }
        Sort::Trending => {
            if let Some(trend) = after.trend {
                sql.push(" WHERE (r.trend, r.id) < (")
                    .bind(trend)
                    .push(", ")
                    .bind(after.id.clone())
                    .push(")");
            }
        }
        Sort::Relevance => {
            if let Some(score) = after.score {
                sql.push(" WHERE (r.score < ")
                    .bind(score)
                    .push(" OR (r.score = ")
                    .bind(score)
                    .push(" AND r.id > ")
                    .bind(after.id.clone())
                    .push("))");
            }
        }
    }
}

/// Options for PostgreSQL's `ts_headline` on the body.
fn pg_snippet_options() -> String {
    format!("StartSel={MARK_OPEN}, StopSel={MARK_CLOSE}, MaxWords=35, MinWords=15, MaxFragments=1")
}

/// Options for PostgreSQL's `ts_headline` on the title (all of it).
fn pg_title_options() -> String {
    format!("StartSel={MARK_OPEN}, StopSel={MARK_CLOSE}, HighlightAll=true")
}

/// A search page: [`page`] plus `title_hl` and `snippet_hl` with matches between the
/// private sentinels, computed for the page's rows only.
pub(super) fn search_page(dialect: Dialect, plan: &Plan) -> Option<Sql> {
    let fts = plan.fts.as_ref()?;
    let mut sql = Sql::new(dialect);
    match dialect {
        Dialect::Sqlite => {
            // The FTS5 auxiliary functions need the full-text cursor: re-enter it for
            // each page row by rowid (the highlight reads the stored row as is).
            sql.push(
                "SELECT p.*, highlight(items_fts, 0, char(57344), char(57345)) AS title_hl, \
                 snippet(items_fts, 1, char(57344), char(57345), '…', 24) AS snippet_hl FROM (",
            );
            push_page(&mut sql, plan);
            sql.push(") AS p JOIN items_fts ON items_fts.rowid = p.rid WHERE items_fts MATCH ")
                .bind(fts.sqlite_match.clone());
        }
        Dialect::Postgres => {
            // Sentinels already in the text are removed before the engine adds its own.
            sql.push(
                "SELECT p.*, ts_headline('english', \
                 replace(replace(p.title, chr(57344), ''), chr(57345), ''), tsq.q, ",
            )
            .bind(pg_title_options())
            .push(
                ") AS title_hl, ts_headline('english', \
                 replace(replace(i.body, chr(57344), ''), chr(57345), ''), tsq.q, ",
            )
            .bind(pg_snippet_options())
            .push(") AS snippet_hl FROM (");
            push_page(&mut sql, plan);
            sql.push(") AS p JOIN items AS i ON i.id = p.id CROSS JOIN websearch_to_tsquery('english', ")
                .bind(fts.text.clone())
                .push(") AS tsq(q)");
        }
    }
    sql.push(" ORDER BY p.score DESC, p.id ASC");
    Some(sql)
}

/// The summaries of the items among `ids` (no score, no order).
pub(super) fn summaries_by_ids(dialect: Dialect, ids: &[String]) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("SELECT ");
    summary_columns(&mut sql);
    sql.push(", CAST(NULL AS DOUBLE PRECISION) AS score FROM items WHERE items.id IN (");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(id.clone());
    }
    sql.push(")");
    sql
}

/// The full row of one item.
pub(super) fn item(dialect: Dialect, id: &str) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push(
        "SELECT items.id, items.title, items.body, items.category, items.category_code, items.group_name, ",
    )
    .push(dialect.tags_text())
    .push(
        " AS tags, items.source_url, items.published_at, items.views, items.version, \
             items.created_at, items.updated_at FROM items WHERE items.id = ",
    )
    .bind(id.to_owned());
    sql
}

/// Item counts per (group, category code); the category's name is any one of its rows'.
pub(super) fn category_counts(dialect: Dialect) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push(
        "SELECT group_name, category_code, MAX(category) AS category, COUNT(*) AS n \
         FROM items GROUP BY group_name, category_code",
    );
    sql
}

/// The FTS5 query for `q`: its words, each quoted as an FTS5 string (so nothing in
/// it is syntax), all required. `None` when `q` has no words.
pub(super) fn sqlite_match(q: &str) -> Option<String> {
    let words = words(q);
    if words.is_empty() {
        return None;
    }
    let quoted: Vec<String> = words.iter().map(|w| format!("\"{}\"", w.replace('"', "\"\""))).collect();
    Some(quoted.join(" "))
}

/// Most words of `q` a full-text query uses; the rest are ignored.
pub(super) const MAX_QUERY_WORDS: usize = 32;

/// The word tokens of `q`: maximal runs of Unicode letters and digits.
pub(super) fn words(q: &str) -> Vec<&str> {
    q.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).take(MAX_QUERY_WORDS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_dialect() {
        let mut s = Sql::new(Dialect::Sqlite);
        s.push("a = ").bind(1i64).push(" AND b = ").bind("x");
        assert_eq!(s.text(), "a = ? AND b = ?");
        let mut p = Sql::new(Dialect::Postgres);
        p.push("a = ").bind(1i64).push(" AND b = ").bind("x");
        assert_eq!(p.text(), "a = $1 AND b = $2");
        assert_eq!(p.into_statement().values.map(|v| v.0.len()), Some(2));
    }

    #[test]
    fn bounds_round_up_to_microseconds() {
        use chrono::TimeZone;
        let t = Utc.with_ymd_and_hms(2024, 1, 8, 12, 0, 0).unwrap();
        assert_eq!(ceil_to_micros(t), t);
        let micro = t + TimeDelta::microseconds(123_456);
        assert_eq!(ceil_to_micros(micro), micro);
        assert_eq!(ceil_to_micros(micro + TimeDelta::nanoseconds(1)), micro + TimeDelta::microseconds(1));
        let before_1970 = Utc.with_ymd_and_hms(1960, 1, 1, 0, 0, 0).unwrap() - TimeDelta::nanoseconds(1);
        assert_eq!(ceil_to_micros(before_1970), Utc.with_ymd_and_hms(1960, 1, 1, 0, 0, 0).unwrap());
    }

    #[test]
    fn match_expressions_are_quoted_words() {
        assert_eq!(sqlite_match("deep  learning").as_deref(), Some("\"deep\" \"learning\""));
        assert_eq!(
            sqlite_match("\"a\" OR b* NEAR(c d) -e f:g").as_deref(),
            Some("\"a\" \"OR\" \"b\" \"NEAR\" \"c\" \"d\" \"e\" \"f\" \"g\"")
        );
        assert_eq!(sqlite_match("Schrödinger's 2π").as_deref(), Some("\"Schrödinger\" \"s\" \"2π\""));
        assert_eq!(sqlite_match(" -*:\"() "), None);
        assert_eq!(words(&"w ".repeat(40)).len(), MAX_QUERY_WORDS);
    }
}
