//! Jobs and events over the local RabbitMQ, each test under a name prefix of its
//! own (`AmqpScope` deletes what was declared under it); broker outages are made
//! by cutting a test proxy, never by touching the machine's broker.

use std::time::Duration;

use castwork::config::{Secret, Settings};
use castwork::db::testing::{amqp_address, amqp_url};
use castwork::queue::testing::AmqpScope;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, encode, poll_until, spawn_app_with, spawn_peer};
use crate::support::proxy::Proxy;

/// Settings of a node on RabbitMQ at `url` under `scope`'s prefix.
fn on_rabbitmq(scope: &AmqpScope, url: &str) -> impl FnOnce(&mut Settings) {
    let (prefix, url) = (scope.prefix.clone(), url.to_owned());
    move |s: &mut Settings| {
        s.queue.amqp_url = Secret::new(url);
        s.queue.prefix = prefix;
    }
}

fn scope() -> AmqpScope {
    AmqpScope::new(&[50, 100])
}

/// The URL of RabbitMQ through `proxy`.
fn through(proxy: &Proxy) -> String {
    let url = amqp_url();
    url.replacen(&amqp_address(), &proxy.addr().to_string(), 1)
}

async fn health(app: &TestApp) -> Value {
    app.client.get(app.url("/health")).send().await.unwrap().json().await.unwrap()
}

async fn wait_amqp(app: &TestApp, status: &str) {
    let ok = poll_until(Duration::from_secs(15), || async {
        (health(app).await["components"]["amqp"]["status"] == status).then_some(())
    })
    .await;
    assert!(ok.is_some(), "amqp never became {status}: {}", health(app).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_change_on_one_node_reaches_the_other_nodes_cache_through_the_events_exchange() {
    let scope = scope();
    // no Redis: the events exchange is the only way between the two nodes' caches
    let a = spawn_app_with(Backend::Sqlite, on_rabbitmq(&scope, &amqp_url())).await;
    let b = spawn_peer(&a, on_rabbitmq(&scope, &amqp_url())).await;
    assert!(b.get_json("/health", None).await.1["components"].get("redis").is_none());
    wait_amqp(&a, "ok").await;
    wait_amqp(&b, "ok").await;
    assert_eq!(health(&a).await["queue"]["mode"], "amqp");
    let editor = a.user_token("editor1", "editor").await;
    let id = "amqp.0001";
    let item = json!({
        "id": id, "title": "Before", "body": "An item both nodes serve.",
        "category": "Discrete Mathematics", "category_code": "cs.DM", "group": "Computer Science",
        "tags": ["cs.DM"], "published_at": "2024-01-02T03:04:05Z", "source_url": "https://example.org/a"
    });
    let response =
        a.client.post(a.url("/api/v1/items")).bearer_auth(&editor).json(&item).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let detail = format!("/api/v1/explore/items/{}", encode(id));
    // b caches the item (item pages live cache.item_ttl_secs, 300 s, unless invalidated)
    let (status, before) = b.get_json(&detail, Some(&editor)).await;
    assert_eq!((status, before["title"].as_str()), (200, Some("Before")));
    let response = a
        .client
        .patch(a.url(&format!("/api/v1/items/{}", encode(id))))
        .bearer_auth(&editor)
        .header("if-match", "\"1\"")
        .json(&json!({ "title": "After" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = poll_until(Duration::from_secs(5), || async {
        let (_, body) = b.get_json(&detail, Some(&editor)).await;
        (body["title"] == "After").then_some(())
    })
    .await;
    assert!(seen.is_some(), "node b's cached page changed through the events exchange");
    a.shut_down().await;
    b.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_a_broker_outage_are_answered_and_published_once_it_is_back() {
    let scope = scope();
    let proxy = Proxy::start(amqp_address().parse().unwrap()).await;
    let app = spawn_app_with(Backend::Sqlite, on_rabbitmq(&scope, &through(&proxy))).await;
    wait_amqp(&app, "ok").await;
    let editor = app.user_token("editor1", "editor").await;
    proxy.cut();
    wait_amqp(&app, "down").await;
    for i in 0..5 {
        let item = json!({
            "id": format!("cut.{i}"), "title": "Written while RabbitMQ is away", "body": "b",
            "category": "Discrete Mathematics", "category_code": "cs.DM", "group": "Computer Science",
            "tags": ["cs.DM"], "published_at": "2024-01-02T03:04:05Z", "source_url": "https://example.org/a"
        });
        let response =
            app.client.post(app.url("/api/v1/items")).bearer_auth(&editor).json(&item).send().await.unwrap();
        assert_eq!(response.status(), 201, "writes do not need the broker");
    }
    // jobs too are accepted while RabbitMQ is away
    let admin = app.admin_token().await;
    let mut jobs = Vec::new();
    for _ in 0..4 {
        let response = app
            .client
            .post(app.url("/api/v1/jobs"))
            .bearer_auth(&admin)
            .json(&json!({ "kind": "noop_sleep", "payload": { "steps": 2, "step_ms": 5 } }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "jobs do not need the broker to be accepted");
        let job: Value = response.json().await.unwrap();
        jobs.push(job["id"].as_str().unwrap().to_owned());
    }
    assert!(app.unpublished_outbox_rows().await >= 9, "the rows wait in the outbox");
    for id in &jobs {
        let (_, job) = app.get_json(&format!("/api/v1/jobs/{id}"), Some(&admin)).await;
        assert_eq!(job["state"], "queued", "nothing runs a job before its message is published: {job}");
    }
    proxy.restore();
    wait_amqp(&app, "ok").await;
    // every row is stamped published once the relay catches up
    let published = poll_until(Duration::from_secs(15), || async {
        (app.unpublished_outbox_rows().await == 0).then_some(())
    })
    .await;
    assert!(published.is_some(), "the outbox drained after the outage");
    for id in &jobs {
        let done = poll_until(Duration::from_secs(20), || async {
            let (_, job) = app.get_json(&format!("/api/v1/jobs/{id}"), Some(&admin)).await;
            (job["state"] == "succeeded").then_some(job)
        })
        .await
        .unwrap_or_else(|| panic!("job {id} did not succeed after the outage"));
        assert_eq!(done["attempts"], 1, "each job ran once: {done}");
    }
    app.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_import_survives_a_worker_kill_and_a_broker_cut_with_exact_counts() {
    use castwork::queue::model::JobState;

    use crate::jobs_kinds::sample_lines;

    let scope = scope();
    let proxy = Proxy::start(amqp_address().parse().unwrap()).await;
    let url = through(&proxy);
    let app = spawn_app_with(Backend::Sqlite, |s| {
        on_rabbitmq(&scope, &url)(s);
        s.queue.workers = 1;
    })
    .await;
    wait_amqp(&app, "ok").await;
    let admin = app.admin_token().await;
    let lines = sample_lines(2000);
    std::fs::write(app.import_dir().join("catalog.jsonl"), lines.join("\n") + "\n").unwrap();
    let (job, _) = app
        .queue
        .submit("import_catalog", json!({ "path": "catalog.jsonl", "batch_size": 25 }), "admin", None)
        .await
        .unwrap();
    let row = |app: &TestApp| {
        let (queue, id) = (app.queue.clone(), job.id.clone());
        async move { queue.store().get(&id).await.unwrap().unwrap() }
    };
    let progressed = poll_until(Duration::from_secs(20), || async {
        let r = row(&app).await;
        (r.processed >= 250).then_some(r.processed)
    })
    .await
    .expect("the import makes progress");
    // the worker dies mid-import
    let response = app.chaos(&admin, "job-worker-0", "kill").await;
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap_or_default());
    let resumed = poll_until(Duration::from_secs(30), || async {
        let r = row(&app).await;
        (r.attempts == 2 && r.processed > progressed).then_some(r.processed)
    })
    .await
    .expect("a second attempt carries on from the checkpoint");
    assert!(resumed > progressed);
    // then the broker goes away for a while and comes back
    proxy.cut();
    wait_amqp(&app, "down").await;
    proxy.restore();
    wait_amqp(&app, "ok").await;
    let done = poll_until(Duration::from_secs(120), || async {
        let r = row(&app).await;
        JobState::parse(&r.state).is_some_and(JobState::is_terminal).then_some(r)
    })
    .await
    .unwrap_or_else(|| panic!("the import did not end: {:?}", futures::executor::block_on(row(&app))));
    assert_eq!(done.state, "succeeded", "{done:?}");
    let result = done.result.unwrap();
    assert_eq!(result["lines"], json!(2000), "{result}");
    assert_eq!(
        result["inserted"].as_u64().unwrap() + result["rejected"].as_u64().unwrap(),
        2000,
        "every line counted once: {result}"
    );
    assert!(result["resumed_from_line"].as_u64().unwrap() > 0, "{result}");
    let (_, categories) = app.get_json("/api/v1/explore/categories", Some(&admin)).await;
    let items: i64 = categories.as_array().unwrap().iter().map(|g| g["count"].as_i64().unwrap()).sum();
    assert_eq!(
        items as u64,
        result["inserted"].as_u64().unwrap(),
        "the table holds exactly what was counted"
    );
    app.shut_down().await;
}
