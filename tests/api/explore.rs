use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::both;
use crate::helpers::{Backend, TestApp, encode, poll_until, spawn_app_with_sample};
use crate::views::stored_views;

async fn page(app: &TestApp, token: &str, query: &str) -> (u16, Value) {
    app.get_json(&format!("/api/v1/explore/items?{query}"), Some(token)).await
}

fn ids(body: &Value) -> Vec<String> {
    body["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect()
}

async fn new_item(app: &TestApp, token: &str, id: &str, published_at: &str) {
    let response = app
        .client
        .post(app.url("/api/v1/items"))
        .bearer_auth(token)
        .json(&json!({
            "id": id, "title": format!("Inserted while paging {id}"), "body": "A new item.",
            "category": "Algebraic Geometry", "category_code": "math.AG", "group": "Mathematics",
            "tags": ["math.AG"], "published_at": published_at
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

async fn the_sample_is_served(backend: Backend) {
    let app = spawn_app_with_sample(backend).await;
    let token = app.user_token("reader", "viewer").await;
    let (status, body) = page(&app, &token, "").await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 20);
    let dates: Vec<&str> = items.iter().map(|i| i["published_at"].as_str().unwrap()).collect();
    let mut sorted = dates.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(dates, sorted, "newest first");
    assert!(body["next_cursor"].is_string());

    let (status, groups) = app.get_json("/api/v1/explore/categories", Some(&token)).await;
    assert_eq!(status, 200);
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 8, "every group is in the sample");
    for g in groups {
        let sum: i64 = g["categories"].as_array().unwrap().iter().map(|c| c["count"].as_i64().unwrap()).sum();
        assert_eq!(sum, g["count"].as_i64().unwrap(), "{g}");
    }
}
both!(the_sample_is_served);

async fn paging_returns_every_item_once_even_while_items_arrive(backend: Backend) {
    let app = spawn_app_with_sample(backend).await;
    let editor = app.user_token("pager", "editor").await;
    let (_, groups) = app.get_json("/api/v1/explore/categories", Some(&editor)).await;
    let maths = groups.as_array().unwrap().iter().find(|g| g["group"] == "Mathematics").unwrap()["count"]
        .as_i64()
        .unwrap() as usize;
    assert!(maths > 20, "enough items to page through: {maths}");

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut round = 0;
    loop {
        let mut query = "group=Mathematics&limit=7".to_owned();
        if let Some(c) = &cursor {
            query.push_str(&format!("&cursor={}", encode(c)));
        }
        let (status, body) = page(&app, &editor, &query).await;
        assert_eq!(status, 200, "{body}");
        seen.extend(ids(&body));
        // new items arrive between pages: one newer than everything, one in the middle of the past
        round += 1;
        new_item(&app, &editor, &format!("new-{round}"), "2030-01-01T00:00:00Z").await;
        new_item(&app, &editor, &format!("old-{round}"), "2025-06-15T12:00:00Z").await;
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no item twice");
    let original: Vec<&String> =
        seen.iter().filter(|id| !id.starts_with("new-") && !id.starts_with("old-")).collect();
    assert_eq!(original.len(), maths, "every original item exactly once");
    assert!(
        !seen.iter().any(|id| id.starts_with("new-")),
        "items newer than the first page are not mixed in"
    );
}
both!(paging_returns_every_item_once_even_while_items_arrive);

async fn filters_apply(backend: Backend) {
    let app = spawn_app_with_sample(backend).await;
    let token = app.user_token("filterer", "viewer").await;
    let (status, body) = page(&app, &token, "category=cs.CV&limit=50").await;
    assert_eq!(status, 200);
    assert!(!ids(&body).is_empty());
    assert!(body["items"].as_array().unwrap().iter().all(|i| i["category_code"] == "cs.CV"));

    let (_, body) = page(&app, &token, "tag=cs.AI&tag=cs.LG&limit=50").await;
    assert!(!ids(&body).is_empty());
    for item in body["items"].as_array().unwrap() {
        let tags: Vec<&str> = item["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        assert!(tags.contains(&"cs.AI") && tags.contains(&"cs.LG"), "{tags:?}");
    }

    let (_, body) = page(&app, &token, "from=2025-07-01&to=2025-07-08T00:00:00Z&limit=100").await;
    assert!(!ids(&body).is_empty());
    for item in body["items"].as_array().unwrap() {
        let at = item["published_at"].as_str().unwrap();
        assert!(("2025-07-01".."2025-07-08").contains(&at), "{at}");
    }
}
both!(filters_apply);

async fn bad_parameters_are_4xx(backend: Backend) {
    let app = spawn_app_with_sample(backend).await;
    let token = app.user_token("badparams", "viewer").await;
    let long_q = format!("q={}", "a".repeat(300));
    for query in [
        "limit=0",
        "limit=1000",
        "limit=ten",
        "from=yesterday",
        "to=2025-13-45",
        "sort=oldest",
        "sort=relevance",
        long_q.as_str(),
        "cursor=not-a-cursor",
        "unknown=1",
        "from=2025-08-01&to=2025-07-01",
        "tag=bad%20tag",
    ] {
        let (status, body) = page(&app, &token, query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{query}: {body}");
    }
    // a cursor altered by one character, and a cursor replayed on another filter
    let (_, first) = page(&app, &token, "limit=5").await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let mut tampered = cursor.clone().into_bytes();
    let mid = tampered.len() / 3;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let (status, body) = page(&app, &token, &format!("limit=5&cursor={}", encode(&tampered))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_cursor")), "{body}");
    let (status, _) = page(&app, &token, &format!("limit=5&group=Physics&cursor={}", encode(&cursor))).await;
    assert_eq!(status, 400);
    let (status, _) = page(&app, &token, &format!("limit=5&cursor={}", encode(&cursor))).await;
    assert_eq!(status, 200);
    for path in [
        "/api/v1/explore/search",
        "/api/v1/explore/search?q=x&mode=bogus",
        "/api/v1/explore/trending?limit=0",
    ] {
        let (status, body) = app.get_json(path, Some(&token)).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
}
both!(bad_parameters_are_4xx);

async fn search_ranks_and_highlights(backend: Backend) {
    let app = spawn_app_with_sample(backend).await;
    let token = app.user_token("searcher", "viewer").await;
    for (q, stems) in [
        ("neural network", vec!["neural", "network"]),
        ("quantum", vec!["quantum"]),
        ("graph", vec!["graph"]),
        ("reinforcement learning", vec!["reinforc", "learn"]),
    ] {
        let (status, body) =
            app.get_json(&format!("/api/v1/explore/search?q={}&limit=10", encode(q)), Some(&token)).await;
        assert_eq!(status, 200, "{q}: {body}");
        let hits = body["items"].as_array().unwrap();
        assert!(!hits.is_empty(), "{q}");
        for hit in hits.iter().take(5) {
            let text = format!("{} {}", hit["title"], hit["snippet"]).to_lowercase();
            assert!(stems.iter().any(|s| text.contains(s)), "{q}: {hit}");
            assert!(
                hit["snippet"].as_str().unwrap().contains("<mark>")
                    || hit["title_highlight"].as_str().unwrap().contains("<mark>"),
                "{hit}"
            );
        }
        let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{q}: scores descend: {scores:?}");
        // the list endpoint with sort=relevance agrees on the order
        let (_, listed) = page(&app, &token, &format!("q={}&sort=relevance&limit=10", encode(q))).await;
        assert_eq!(ids(&listed), ids(&body), "{q}");
    }
}
both!(search_ranks_and_highlights);

async fn item_detail_with_etag_and_trending(backend: Backend) {
    let app = spawn_app_with_sample(backend).await;
    let token = app.user_token("viewer9", "viewer").await;
    let (_, listing) = page(&app, &token, "limit=2").await;
    let first = ids(&listing)[0].clone();
    let second = ids(&listing)[1].clone();
    let response = app
        .client
        .get(app.url(&format!("/api/v1/explore/items/{}", encode(&first))))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let item: Value = response.json().await.unwrap();
    assert_eq!(item["id"], first.as_str());
    assert_eq!(etag, format!("\"{}\"", item["version"]));
    let response = app
        .client
        .get(app.url(&format!("/api/v1/explore/items/{}", encode(&first))))
        .bearer_auth(&token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 304);
    let (status, body) = app.get_json("/api/v1/explore/items/no-such-item", Some(&token)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));

    // `first` has 2 views by one user now, which count once; give `second` views by 3 users
    // (one of them 4 times): it must lead trending with 3 once the views are flushed
    let mut others = Vec::new();
    for other in ["viewer10", "viewer11"] {
        others.push(app.user_token(other, "viewer").await);
    }
    for viewer in [&token, &token, &token, &token, &others[0], &others[1]] {
        app.get_json(&format!("/api/v1/explore/items/{}", encode(&second)), Some(viewer)).await;
    }
    // wait for the flush in the database: trending pages are cached, and one read too early
    // would show the views as they were for `cache.trending_ttl_secs`
    let stored = poll_until(Duration::from_secs(10), || async {
        let views = stored_views(&app, &second).await;
        (views >= 3).then_some(views)
    })
    .await;
    assert_eq!(stored, Some(3), "one view per user");
    let (_, body) = app.get_json("/api/v1/explore/trending?limit=5", Some(&token)).await;
    let top = ids(&body);
    assert_eq!((top.first(), top.contains(&first)), (Some(&second), true), "trending reflects views: {body}");
    assert_eq!(body["items"][0]["views"], 3);
}
both!(item_detail_with_etag_and_trending);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_search_cursor_is_refused_even_when_the_first_page_is_cached() {
    let app = crate::helpers::spawn_app().await;
    let token = app.admin_token().await;
    for _ in 0..2 {
        let (status, body) = app.get_json("/api/v1/explore/search?q=diffusion", Some(&token)).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = app.get_json("/api/v1/explore/search?q=diffusion&cursor=", Some(&token)).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_cursor", "{body}");
    }
}
