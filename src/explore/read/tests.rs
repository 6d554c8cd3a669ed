//! The read side against real databases: every case runs on a fresh SQLite file and
//! on a fresh PostgreSQL database (`crate::db::testing`: `CASTWORK_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`), both migrated, with fixture rows
//! written through the entities as the write path does.

mod fixtures;

use std::collections::HashSet;

use sea_orm::ConnectionTrait;

use self::fixtures::*;
use super::*;
use crate::explore::model::MAX_QUERY_CHARS;

/// Every page of `q` (following cursors), as ids.
async fn walk(test: &TestDb, mut q: ListQuery) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..100 {
        let page = test.service.list(&q).await.unwrap();
        assert!(page.items.len() <= q.limit as usize);
        out.extend(page.items.into_iter().map(|i| i.id));
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return out,
        }
    }
    panic!("more than 100 pages");
}

/// The ids in `new` order: published_at desc, id desc.
const NEW_ORDER: [&str; 8] = ["a1", "a3", "a2", "a4", "a8", "a6", "a5", "a7"];

async fn filters(test: TestDb) {
    let q = |f: fn(&mut ListQuery)| {
        let mut q = query(50);
        f(&mut q);
        q
    };
    let all = list_ids(&test, query(50)).await;
    assert_eq!(all, NEW_ORDER);
    let by_category = list_ids(&test, q(|q| q.category = Some("cs.CV".into()))).await;
    assert_eq!(by_category, ["a1", "a6", "a7"]);
    let by_group = list_ids(&test, q(|q| q.group = Some("Physics".into()))).await;
    assert_eq!(by_group, ["a2", "a5"]);
    let by_tag = list_ids(&test, q(|q| q.tags = vec!["cs.LG".into()])).await;
    assert_eq!(by_tag, ["a1", "a3", "a4", "a8"]);
    let both_tags = list_ids(&test, q(|q| q.tags = vec!["cs.LG".into(), "cs.CV".into()])).await;
    assert_eq!(both_tags, ["a1"], "tags are ANDed");
    let no_match = list_ids(&test, q(|q| q.tags = vec!["cs.IR".into(), "cs.CV".into()])).await;
    assert!(no_match.is_empty());
    let tag_and_group = list_ids(
        &test,
        q(|q| {
            q.tags = vec!["q-fin.TR".into()];
            q.group = Some("Physics".into());
        }),
    )
    .await;
    assert_eq!(tag_and_group, ["a5"]);
    let from = list_ids(&test, q(|q| q.from = Some(at(2024, 1, 9, 0, 0, 0, 0)))).await;
    assert_eq!(from, ["a1", "a3", "a2"], "from is inclusive");
    let to = list_ids(&test, q(|q| q.to = Some(at(2024, 1, 9, 0, 0, 0, 0)))).await;
    assert_eq!(to, ["a4", "a8", "a6", "a5", "a7"], "to is exclusive");
    // Sub-second bounds against stored fractions of different lengths.
    let window = list_ids(
        &test,
        q(|q| {
            q.from = Some(at(2024, 1, 8, 12, 0, 0, 200_000_000));
            q.to = Some(at(2024, 1, 9, 0, 0, 0, 0));
        }),
    )
    .await;
    assert_eq!(window, ["a4"]);
    let window = list_ids(
        &test,
        q(|q| {
            q.from = Some(at(2024, 1, 8, 12, 0, 0, 0));
            q.to = Some(at(2024, 1, 8, 12, 0, 0, 123_456_001));
        }),
    )
    .await;
    assert_eq!(window, ["a8", "a6"]);
    let text = list_ids(&test, q(|q| q.q = Some("vision".into()))).await;
    assert_eq!(text, ["a1", "a6", "a7"]);
    let text_and_filter = list_ids(
        &test,
        q(|q| {
            q.q = Some("deep".into());
            q.group = Some("Physics".into());
        }),
    )
    .await;
    assert_eq!(text_and_filter, ["a2", "a5"]);
    // Blank q is no q.
    assert_eq!(list_ids(&test, q(|q| q.q = Some("   ".into()))).await, NEW_ORDER);
    // Scores only with q; summaries carry the excerpt and tags.
    let page = test.service.list(&query(50)).await.unwrap();
    assert!(page.items.iter().all(|i| i.score.is_none()));
    let a1 = &page.items[0];
    assert_eq!(a1.tags, ["cs.CV", "cs.LG"]);
    assert!(a1.excerpt.starts_with("Convolutional networks"));
    assert_eq!((a1.views, a1.version, a1.category.as_str()), (10, 1, "Name of cs.CV"));
    assert_eq!(a1.published_at, at(2024, 1, 10, 0, 0, 0, 0));
    let scored = test.service.list(&ListQuery { q: Some("deep".into()), ..query(50) }).await.unwrap();
    assert!(!scored.items.is_empty());
    assert!(scored.items.iter().all(|i| i.score.is_some_and(|s| s > 0.0)), "{:?}", scored.items);
}

async fn new_keyset_walk(test: TestDb) {
    for limit in 1..=4 {
        assert_eq!(walk(&test, query(limit)).await, NEW_ORDER, "limit {limit}");
    }
    let cs = ListQuery { group: Some(CS.into()), ..query(2) };
    assert_eq!(walk(&test, cs).await, ["a1", "a3", "a4", "a8", "a6", "a7"]);
    // Each query counts one load.
    let before = test.service.loads();
    test.service.list(&query(3)).await.unwrap();
    assert_eq!(test.service.loads(), before + 1);
}

async fn walk_survives_inserts(test: TestDb) {
    let mut q = query(2);
    let mut seen = Vec::new();
    let mut inserted = 0u32;
    loop {
        let page = test.service.list(&q).await.unwrap();
        seen.extend(page.items.iter().map(|i| i.id.clone()));
        // Between pages: one item newer than everything (already passed), one that
        // ties the cursor's timestamp with a smaller id (still ahead), one older.
        if inserted < 3
            && let Some(last) = page.items.last()
        {
            let n = inserted;
            let newer =
                Fixture { id: leak(format!("n{n}")), published_at: at(2030, 1, 1, 0, 0, 0, 0), ..blank() };
            let tie =
                Fixture { id: leak(format!("0tie{}", 2 - n)), published_at: last.published_at, ..blank() };
            let older =
                Fixture { id: leak(format!("o{n}")), published_at: at(2000, 1, 1, 0, 0, n, 0), ..blank() };
            for f in [newer, tie, older] {
                insert(test.db(), &f).await;
            }
            inserted += 1;
        }
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates: {seen:?}");
    for id in NEW_ORDER.iter().copied().chain(["0tie0", "0tie1", "0tie2", "o0", "o1", "o2"]) {
        assert!(seen.iter().any(|s| s == id), "{id} missing from {seen:?}");
    }
    assert!(!seen.iter().any(|s| s.starts_with('n')), "newer rows are behind the cursor: {seen:?}");
}

async fn trending_order(test: TestDb) {
    let sorted = ListQuery { sort: Sort::Trending, ..query(50) };
    let order = ["a1", "a4", "a5", "a3", "a8", "a7", "a6", "a2"];
    assert_eq!(list_ids(&test, sorted.clone()).await, order);
    for limit in 1..=3 {
        assert_eq!(walk(&test, ListQuery { limit, ..sorted.clone() }).await, order, "limit {limit}");
    }
    let top = test.service.trending(10).await.unwrap();
    assert_eq!(ids(&top, |i| &i.id), ["a1", "a4", "a5", "a3"], "viewed only");
    assert_eq!(ids(&test.service.trending(2).await.unwrap(), |i| &i.id), ["a1", "a4"]);
}

async fn relevance_order(test: TestDb) {
    let rel = ListQuery { q: Some("learning".into()), sort: Sort::Relevance, ..query(50) };
    let page = test.service.list(&rel).await.unwrap();
    let got = ids(&page.items, |i| &i.id);
    assert_eq!(got.iter().cloned().collect::<HashSet<_>>(), set(&["a1", "a3"]));
    assert_eq!(got[0], "a3", "title and body hits rank first");
    let scores: Vec<f64> = page.items.iter().map(|i| i.score.unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    let rel = ListQuery { q: Some("deep".into()), sort: Sort::Relevance, ..query(50) };
    let full = list_ids(&test, rel.clone()).await;
    assert_eq!(full.len(), 3, "{full:?}");
    for limit in 1..=3 {
        assert_eq!(walk(&test, ListQuery { limit, ..rel.clone() }).await, full, "limit {limit}");
    }
}

async fn search_highlights(test: TestDb) {
    let page = test.service.search("convolutional", 10, None).await.unwrap();
    assert_eq!(ids(&page.items, |h| &h.item.id), ["a1"]);
    let hit = &page.items[0];
    assert!(hit.snippet.contains("<mark>Convolutional</mark>"), "{}", hit.snippet);
    assert!(hit.snippet.contains("&amp;") && hit.snippet.contains("&quot;"), "{}", hit.snippet);
    assert!(!hit.snippet.contains("<script"), "{}", hit.snippet);
    if test.backend == Backend::Sqlite {
        // PostgreSQL's parser drops HTML tags (and script bodies) from headlines;
        // SQLite keeps them, escaped.
        assert!(hit.snippet.contains("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"), "{}", hit.snippet);
    }
    assert_eq!(hit.title_highlight, "Deep learning for vision");
    assert!(hit.item.score.is_some());

    let page = test.service.search("vision", 10, None).await.unwrap();
    let a7 = page.items.iter().find(|h| h.item.id == "a7").unwrap();
    assert_eq!(a7.title_highlight, "Odd title <mark>vision</mark>");
    assert!(a7.snippet.contains("<mark>vision</mark>"), "{}", a7.snippet);
    assert!(!a7.snippet.contains(['\u{E000}', '\u{E001}']), "{:?}", a7.snippet);
    let a1 = page.items.iter().find(|h| h.item.id == "a1").unwrap();
    assert_eq!(a1.title_highlight, "Deep learning for <mark>vision</mark>");
    let a6 = page.items.iter().find(|h| h.item.id == "a6").unwrap();
    assert_eq!(a6.title_highlight, "<mark>Vision</mark> transformers");

    let page = test.service.search("bold", 10, None).await.unwrap();
    let a6 = &page.items[0];
    assert!(a6.snippet.contains("<mark>bold</mark>") && a6.snippet.contains("&amp;"), "{}", a6.snippet);
    if test.backend == Backend::Sqlite {
        assert!(a6.snippet.contains("&lt;b&gt;<mark>bold</mark>&lt;/b&gt;"), "{}", a6.snippet);
    }

    // Paging through search.
    let all = test.service.search("deep", 10, None).await.unwrap();
    let mut walked = Vec::new();
    let mut cursor = None;
    loop {
        let page = test.service.search("deep", 1, cursor.as_deref()).await.unwrap();
        walked.extend(page.items.iter().map(|h| h.item.id.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(walked, ids(&all.items, |h| &h.item.id));
}

async fn categories(test: TestDb) {
    let groups = test.service.categories().await.unwrap();
    let cat = |code: &str, count| CategoryCount { code: code.into(), name: format!("Name of {code}"), count };
    assert_eq!(
        groups,
        vec![
            GroupCount {
                group: CS.into(),
                count: 6,
                categories: vec![cat("cs.CV", 3), cat("cs.CL", 1), cat("cs.IR", 1), cat("cs.LG", 1)],
            },
            GroupCount {
                group: "Physics".into(),
                count: 2,
                categories: vec![cat("cond-mat.stat-mech", 1), cat("quant-ph", 1)],
            },
        ]
    );
}

async fn get_item(test: TestDb) {
    let a5 = test.service.get("a5").await.unwrap().unwrap();
    assert_eq!(a5.tags, ["cond-mat.stat-mech", "q-fin.TR"]);
    assert_eq!(a5.group, "Physics");
    assert_eq!(a5.source_url.as_deref(), Some("https://example.org/a5"));
    assert_eq!(a5.published_at, at(2023, 12, 31, 23, 59, 59, 0));
    assert_eq!(a5.body, "The minority game and deep markets.");
    let a4 = test.service.get("a4").await.unwrap().unwrap();
    assert_eq!(a4.published_at, at(2024, 1, 8, 12, 0, 0, 500_000_000));
    assert!(test.service.get("missing").await.unwrap().is_none());
    assert!(test.service.get("not an id!").await.unwrap().is_none());
}

fn is_bad(r: &Result<impl std::fmt::Debug, ExploreError>, fragment: &str) -> bool {
    matches!(r, Err(ExploreError::BadQuery(m)) if m.contains(fragment))
}

async fn bad_parameters(test: TestDb) {
    let s = &test.service;
    let cases: Vec<(ListQuery, &str)> = vec![
        (query(0), "between 1 and 100"),
        (query(101), "between 1 and 100"),
        (ListQuery { sort: Sort::Relevance, ..query(5) }, "relevance"),
        (ListQuery { sort: Sort::Relevance, q: Some("  ".into()), ..query(5) }, "relevance"),
        (ListQuery { q: Some("x".repeat(MAX_QUERY_CHARS + 1)), ..query(5) }, "at most"),
        (ListQuery { tags: (0..11).map(|i| format!("t{i}")).collect(), ..query(5) }, "at most 10 tags"),
        (ListQuery { tags: vec!["cs CV".into()], ..query(5) }, "not a valid tag"),
        (ListQuery { category: Some("1cs".into()), ..query(5) }, "not a valid category"),
        (ListQuery { group: Some("g".repeat(101)), ..query(5) }, "group"),
        (
            ListQuery {
                from: Some(at(2024, 1, 1, 0, 0, 0, 0)),
                to: Some(at(2024, 1, 1, 0, 0, 0, 0)),
                ..query(5)
            },
            "before",
        ),
        (ListQuery { q: Some("\"*:()-".into()), ..query(5) }, "no searchable words"),
        (ListQuery { q: Some("deep\0learning".into()), ..query(5) }, "NUL"),
        (ListQuery { group: Some("Phys\0ics".into()), ..query(5) }, "NUL"),
    ];
    for (q, fragment) in cases {
        let r = s.list(&q).await;
        assert!(is_bad(&r, fragment), "{q:?} → {r:?}");
    }
    assert!(is_bad(&s.search("  ", 5, None).await, "empty"));
    assert!(is_bad(&s.search("deep", 0, None).await, "between"));
    assert!(is_bad(&s.trending(0).await, "between"));
    assert!(is_bad(&s.trending(101).await, "between"));
    let garbage = ListQuery { cursor: Some("not-a-cursor".into()), ..query(5) };
    assert!(matches!(s.list(&garbage).await, Err(ExploreError::InvalidCursor)));
    assert!(matches!(s.search("deep", 5, Some("x.y")).await, Err(ExploreError::InvalidCursor)));
}

async fn cursor_misuse(test: TestDb) {
    let s = &test.service;
    let first = s.list(&query(2)).await.unwrap();
    let cursor = first.next_cursor.unwrap();
    assert!(s.list(&ListQuery { cursor: Some(cursor.clone()), ..query(2) }).await.is_ok());
    // Another limit is the same query.
    assert!(s.list(&ListQuery { cursor: Some(cursor.clone()), ..query(5) }).await.is_ok());
    let mut tampered = cursor.clone().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let other_filters = [
        ListQuery { cursor: Some(tampered), ..query(2) },
        ListQuery { cursor: Some(cursor.clone()), category: Some("cs.CV".into()), ..query(2) },
        ListQuery { cursor: Some(cursor.clone()), sort: Sort::Trending, ..query(2) },
        ListQuery { cursor: Some(cursor.clone()), q: Some("deep".into()), ..query(2) },
        ListQuery { cursor: Some(cursor.clone()), tags: vec!["cs.LG".into()], ..query(2) },
    ];
    for q in other_filters {
        assert!(matches!(s.list(&q).await, Err(ExploreError::InvalidCursor)), "{q:?}");
    }
    let other_key = ExploreService::new(s.db().clone(), b"another-secret");
    let r = other_key.list(&ListQuery { cursor: Some(cursor), ..query(2) }).await;
    assert!(matches!(r, Err(ExploreError::InvalidCursor)));
    let search = s.search("deep", 1, None).await.unwrap().next_cursor.unwrap();
    assert!(matches!(s.search("learning", 1, Some(&search)).await, Err(ExploreError::InvalidCursor)));
}

async fn query_syntax_is_inert(test: TestDb) {
    let inputs = [
        "\"deep",
        "deep\"",
        "\"deep learning\"",
        "deep*",
        "*",
        "NEAR(deep learning)",
        "NEAR(",
        "-deep",
        "deep -quantum",
        "title:deep",
        "body:",
        "deep OR vision",
        "AND",
        "NOT deep",
        "(deep",
        "^deep",
        "deep' OR 1=1 --",
        "ø\u{301}",
        "deep + vision",
        "{title body}: deep",
        ":",
    ];
    for q in inputs {
        for sort in [Sort::New, Sort::Relevance] {
            let r = test.service.list(&ListQuery { q: Some(q.into()), sort, ..query(10) }).await;
            assert!(r.is_ok() || is_bad(&r, "no searchable words"), "{q:?} → {r:?}");
        }
        let r = test.service.search(q, 10, None).await;
        assert!(r.is_ok() || is_bad(&r, "no searchable words"), "{q:?} → {r:?}");
    }
    // On SQLite operators are plain words: "deep AND vision" needs all three.
    let both = list_ids(&test, ListQuery { q: Some("deep AND vision".into()), ..query(10) }).await;
    if test.backend == Backend::Sqlite {
        assert!(both.is_empty(), "{both:?}");
    }
    // Only stop words: PostgreSQL's parser drops them all, which matches nothing.
    let stop = test.service.list(&ListQuery { q: Some("the of and".into()), ..query(10) }).await.unwrap();
    if test.backend == Backend::Postgres {
        assert!(stop.items.is_empty());
    }
}

async fn stored_timestamps_sort_as_text(test: TestDb) {
    if test.backend != Backend::Sqlite {
        return;
    }
    let row = test
        .db()
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Sqlite,
            "SELECT published_at, typeof(published_at) AS t FROM items WHERE id = 'a4'",
        ))
        .await
        .unwrap()
        .unwrap();
    let text: String = row.try_get("", "published_at").unwrap();
    let kind: String = row.try_get("", "t").unwrap();
    assert_eq!((text.as_str(), kind.as_str()), ("2024-01-08T12:00:00.500+00:00", "text"));
}

crate::on_both_backends!(
    setup =>
    filters,
    new_keyset_walk,
    walk_survives_inserts,
    trending_order,
    relevance_order,
    search_highlights,
    categories,
    get_item,
    bad_parameters,
    cursor_misuse,
    query_syntax_is_inert,
    stored_timestamps_sort_as_text,
);
