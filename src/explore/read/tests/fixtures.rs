//! The fixture corpus over a fresh, migrated database per test (the shared
//! [`TestDatabase`]: a SQLite file or a PostgreSQL database, removed when the test ends).

use std::collections::HashSet;

use chrono::{DateTime, TimeZone, Utc};
use sea_orm::{ActiveValue::Set, DatabaseConnection, EntityTrait};

use crate::db::entities::{item, item_tag};
use crate::explore::ExploreService;
use crate::explore::model::ListQuery;

pub(super) use crate::db::testing::Backend;
use crate::db::testing::TestDatabase;

/// A service over a fresh database holding [`fixtures`].
pub(super) struct TestDb {
    pub(super) service: ExploreService,
    pub(super) backend: Backend,
    _database: TestDatabase,
}

pub(super) async fn setup(backend: Backend) -> TestDb {
    let (database, db) = TestDatabase::migrated(backend).await;
    let test =
        TestDb { service: ExploreService::new(db, b"read-tests-secret"), backend, _database: database };
    for fixture in fixtures() {
        insert(test.db(), &fixture).await;
    }
    test
}

impl TestDb {
    pub(super) fn db(&self) -> &DatabaseConnection {
        self.service.db()
    }
}

/// An item to insert (category name, source URL and timestamps are derived).
pub(super) struct Fixture {
    pub(super) id: &'static str,
    pub(super) title: &'static str,
    pub(super) body: &'static str,
    pub(super) category_code: &'static str,
    pub(super) group: &'static str,
    pub(super) tags: &'static [&'static str],
    pub(super) published_at: DateTime<Utc>,
    pub(super) views: i64,
    pub(super) trend: f64,
}

pub(super) fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, nanos: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap() + chrono::Duration::nanoseconds(i64::from(nanos))
}

pub(super) const NEVER: f64 = -1.0e9;
pub(super) const CS: &str = "Computer Science";

pub(super) fn fixtures() -> Vec<Fixture> {
    let f = |id, title, body, category_code, group, tags, published_at, views, trend| Fixture {
        id,
        title,
        body,
        category_code,
        group,
        tags,
        published_at,
        views,
        trend,
    };
    vec![
        f(
            "a1",
            "Deep learning for vision",
            "Convolutional networks learn visual features. <script>alert('x')</script> works & \"quotes\" \
             are fine in deep nets.",
            "cs.CV",
            CS,
            &["cs.CV", "cs.LG"],
            at(2024, 1, 10, 0, 0, 0, 0),
            10,
            5.0,
        ),
        f(
            "a2",
            "Quantum error correction",
            "Surface codes and deep quantum circuits.",
            "quant-ph",
            "Physics",
            &["quant-ph"],
            at(2024, 1, 9, 0, 0, 0, 0),
            0,
            NEVER,
        ),
        f(
            "a3",
            "Learning to rank",
            "Ranking with gradient boosted trees: learning and learning again.",
            "cs.IR",
            CS,
            &["cs.IR", "cs.LG"],
            at(2024, 1, 9, 0, 0, 0, 0),
            3,
            2.0,
        ),
        f(
            "a4",
            "Graph neural networks",
            "Message passing neural networks on graphs.",
            "cs.LG",
            CS,
            &["cs.LG"],
            at(2024, 1, 8, 12, 0, 0, 500_000_000),
            7,
            4.0,
        ),
        f(
            "a5",
            "Statistical mechanics of markets",
            "The minority game and deep markets.",
            "cond-mat.stat-mech",
            "Physics",
            &["cond-mat.stat-mech", "q-fin.TR"],
            at(2023, 12, 31, 23, 59, 59, 0),
            1,
            2.0,
        ),
        f(
            "a6",
            "Vision transformers",
            "Attention is all you need for image recognition & more <b>bold</b> claims.",
            "cs.CV",
            CS,
            &["cs.CV"],
            at(2024, 1, 8, 12, 0, 0, 0),
            0,
            NEVER,
        ),
        f(
            "a7",
            "Odd \u{E000}title\u{E001} vision",
            "Contains a \u{E001} stray sentinel about vision.",
            "cs.CV",
            CS,
            &["cs.CV"],
            at(2022, 6, 1, 0, 0, 0, 0),
            0,
            NEVER,
        ),
        f(
            "a8",
            "Sparse attention",
            "Efficient attention for long documents.",
            "cs.CL",
            CS,
            &["cs.CL", "cs.LG"],
            at(2024, 1, 8, 12, 0, 0, 123_456_000),
            0,
            NEVER,
        ),
    ]
}

pub(super) async fn insert(db: &DatabaseConnection, f: &Fixture) {
    let now = Utc::now();
    let tags: Vec<String> = f.tags.iter().map(|t| (*t).to_owned()).collect();
    item::Entity::insert(item::ActiveModel {
        id: Set(f.id.to_owned()),
        title: Set(f.title.to_owned()),
        body: Set(f.body.to_owned()),
        category: Set(format!("Name of {}", f.category_code)),
        category_code: Set(f.category_code.to_owned()),
        group_name: Set(f.group.to_owned()),
        tags: Set(serde_json::json!(tags)),
        source_url: Set(Some(format!("https://example.org/{}", f.id))),
        published_at: Set(f.published_at),
        views: Set(f.views),
        trend: Set(f.trend),
        version: Set(1),
        content_hash: Set(String::new()),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec_without_returning(db)
    .await
    .unwrap();
    for tag in tags {
        item_tag::Entity::insert(item_tag::ActiveModel { item_id: Set(f.id.to_owned()), tag: Set(tag) })
            .exec_without_returning(db)
            .await
            .unwrap();
    }
}

pub(super) fn query(limit: u32) -> ListQuery {
    ListQuery { limit, ..ListQuery::default() }
}

pub(super) fn ids<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|i| id(i).to_owned()).collect()
}

pub(super) async fn list_ids(test: &TestDb, q: ListQuery) -> Vec<String> {
    let page = test.service.list(&q).await.unwrap_or_else(|e| panic!("{q:?}: {e}"));
    assert!(page.next_cursor.is_none(), "{q:?} fits one page");
    ids(&page.items, |i| &i.id)
}

pub(super) fn set(ids: &[&str]) -> HashSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

pub(super) fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

pub(super) fn blank() -> Fixture {
    Fixture {
        id: "",
        title: "Filler",
        body: "Filler body.",
        category_code: "cs.DB",
        group: CS,
        tags: &["cs.DB"],
        published_at: at(2020, 1, 1, 0, 0, 0, 0),
        views: 0,
        trend: NEVER,
    }
}
