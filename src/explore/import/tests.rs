//! The import against a fresh SQLite file per test (and one PostgreSQL database).

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

use migration::MigratorTrait;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, Statement,
};

use super::*;
use crate::db::entities::{item_tag, outbox};
use crate::db::testing::{Backend, TempSqlite, TestDatabase};
use crate::explore::trend::NEVER_VIEWED;

/// A change bus nobody listens to.
fn bus() -> crate::explore::ChangeBus {
    crate::explore::change::change_bus()
}

/// The shared fixture, with the import helpers below.
struct TestDb(TempSqlite);

impl std::ops::Deref for TestDb {
    type Target = TempSqlite;
    fn deref(&self) -> &TempSqlite {
        &self.0
    }
}

impl TestDb {
    async fn new() -> Self {
        Self(TempSqlite::new().await)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    async fn import(&self, text: &str, batch_size: usize) -> ImportSummary {
        let options = ImportOptions { batch_size, ..ImportOptions::default() };
        import_reader(&self.db, &bus(), std::io::Cursor::new(text.to_owned().into_bytes()), &options, &())
            .await
            .unwrap()
    }

    async fn item(&self, id: &str) -> item::Model {
        item::Entity::find_by_id(id.to_owned()).one(&self.db).await.unwrap().unwrap()
    }

    async fn outbox(&self) -> Vec<outbox::Model> {
        outbox::Entity::find().order_by_asc(outbox::Column::Seq).all(&self.db).await.unwrap()
    }

    async fn tags_of(&self, id: &str) -> Vec<String> {
        let mut tags: Vec<String> = item_tag::Entity::find()
            .filter(item_tag::Column::ItemId.eq(id))
            .all(&self.db)
            .await
            .unwrap()
            .into_iter()
            .map(|row| row.tag)
            .collect();
        tags.sort();
        tags
    }

    async fn count(&self, sql: &str) -> i64 {
        let row = self.db.query_one_raw(Statement::from_string(self.db.get_database_backend(), sql)).await;
        row.unwrap().unwrap().try_get_by_index(0).unwrap()
    }
}

/// The first `n` lines of the embedded sample, as text.
fn sample_lines(n: usize) -> Vec<String> {
    let reader = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(SAMPLE_CATALOG));
    reader.lines().take(n).map(Result::unwrap).collect()
}

fn id_of(line: &str) -> String {
    serde_json::from_str::<serde_json::Value>(line).unwrap()["id"].as_str().unwrap().to_owned()
}

fn with_field(line: &str, field: &str, value: serde_json::Value) -> String {
    let mut json: serde_json::Value = serde_json::from_str(line).unwrap();
    json[field] = value;
    json.to_string()
}

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn a_good_file_imports_with_tags_and_events() {
    let test = TestDb::new().await;
    let lines = sample_lines(40);
    let summary = test.import(&lines.join("\n"), 7).await;
    assert_eq!((summary.inserted, summary.updated, summary.unchanged, summary.rejected_count), (40, 0, 0, 0));
    assert_eq!(summary.lines, 40);

    for line in &lines {
        let json: serde_json::Value = serde_json::from_str(line).unwrap();
        let row = test.item(json["id"].as_str().unwrap()).await;
        assert_eq!(row.title, json["title"].as_str().unwrap());
        assert_eq!(row.group_name, json["group"].as_str().unwrap());
        assert_eq!(row.tags, json["tags"], "tags are stored as a JSON array, primary first");
        assert_eq!((row.version, row.views, row.trend), (1, 0, NEVER_VIEWED));
        assert_eq!(row.created_at, row.updated_at);
        let mut expected: Vec<String> =
            json["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect();
        expected.sort();
        assert_eq!(test.tags_of(&row.id).await, expected);
    }
    let events = test.outbox().await;
    assert_eq!(events.len(), 40);
    assert!(events.iter().all(|e| e.event_type == crate::outbox::ITEM_CHANGED && e.published_at.is_none()));
    assert_eq!(events[0].aggregate_id, id_of(&lines[0]));
    let first = crate::explore::ItemChange::from_payload(&events[0].payload).unwrap();
    assert_eq!((first.version, first.before), (1, None), "an insert has no before");
    let after = first.after.unwrap();
    let json: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(after.category_code, json["category_code"].as_str().unwrap());
    assert_eq!(serde_json::json!(after.tags), json["tags"]);
}

#[tokio::test]
async fn each_committed_batch_is_published_with_before_and_after() {
    let test = TestDb::new().await;
    let lines = sample_lines(5);
    let bus = bus();
    let published = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = published.clone();
    bus.on_publish("test", move |batch| {
        sink.lock().unwrap().push(batch.as_ref().clone());
        Box::pin(async {})
    });
    let import = |text: String| {
        let (db, bus) = (test.db.clone(), bus.clone());
        async move {
            let options = ImportOptions { batch_size: 3, ..ImportOptions::default() };
            import_reader(&db, &bus, std::io::Cursor::new(text.into_bytes()), &options, &()).await.unwrap()
        }
    };
    import(lines.join("\n")).await;
    let batches = std::mem::take(&mut *published.lock().unwrap());
    assert_eq!(
        batches.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 2],
        "one publication per transaction"
    );
    assert!(batches.iter().flatten().all(|c| c.before.is_none() && c.after.is_some() && c.version == 1));

    // move the first item to another category; leave the rest unchanged
    let old: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let mut changed = lines.clone();
    changed[0] = with_field(&lines[0], "category_code", "zz.MOVED".into());
    import(changed.join("\n")).await;
    let batches = std::mem::take(&mut *published.lock().unwrap());
    assert_eq!(batches.len(), 1, "a batch with nothing changed publishes nothing");
    let [change] = batches[0].as_slice() else { panic!("one change: {batches:?}") };
    assert_eq!((change.id.as_str(), change.version), (id_of(&lines[0]).as_str(), 2));
    let before = change.before.as_ref().unwrap();
    assert_eq!(before.category_code, old["category_code"].as_str().unwrap(), "before is the replaced row");
    assert_eq!(before.group, old["group"].as_str().unwrap());
    assert_eq!(serde_json::json!(before.tags), old["tags"]);
    assert_eq!(change.after.as_ref().unwrap().category_code, "zz.MOVED");
    // the outbox holds the same change
    let last = test.outbox().await.pop().unwrap();
    assert_eq!(crate::explore::ItemChange::from_payload(&last.payload).unwrap(), *change);
}

#[tokio::test]
async fn a_reimport_changes_nothing() {
    let test = TestDb::new().await;
    let lines = sample_lines(30);
    let text = lines.join("\n");
    test.import(&text, 500).await;
    let before = test.item(&id_of(&lines[0])).await;
    let summary = test.import(&text, 4).await;
    assert_eq!((summary.inserted, summary.updated, summary.unchanged), (0, 0, 30));
    assert_eq!(test.outbox().await.len(), 30, "no new events");
    assert_eq!(test.item(&id_of(&lines[0])).await, before, "no write at all");
}

#[tokio::test]
async fn a_changed_line_updates_one_item() {
    let test = TestDb::new().await;
    let mut lines = sample_lines(20);
    test.import(&lines.join("\n"), 500).await;
    let id = id_of(&lines[5]);
    let original = test.item(&id).await;
    // Views and trend belong to the service, not the import: they must survive.
    let viewed =
        item::ActiveModel { views: Set(9), trend: Set(3.5), ..item::ActiveModel::from(original.clone()) };
    item::Entity::update(viewed).exec(&test.db).await.unwrap();

    lines[5] = with_field(&lines[5], "title", "A new title".into());
    lines[5] = with_field(&lines[5], "tags", serde_json::json!(["math.CO", "cs.DM"]));
    let summary = test.import(&lines.join("\n"), 500).await;
    assert_eq!((summary.inserted, summary.updated, summary.unchanged), (0, 1, 19));

    let row = test.item(&id).await;
    assert_eq!((row.title.as_str(), row.version, row.views, row.trend), ("A new title", 2, 9, 3.5));
    assert_eq!(row.created_at, original.created_at);
    assert!(row.updated_at > original.updated_at);
    assert_ne!(row.content_hash, original.content_hash);
    assert_eq!(test.tags_of(&id).await, ["cs.DM", "math.CO"]);
    let events = test.outbox().await;
    assert_eq!(events.len(), 21, "exactly one new event");
    let last = &events[20];
    assert_eq!((last.aggregate_id.as_str(), &last.payload["version"]), (id.as_str(), &serde_json::json!(2)));
    assert_eq!(last.payload["after"]["tags"], serde_json::json!(["math.CO", "cs.DM"]));
}

#[tokio::test]
async fn bad_lines_are_reported_and_skipped() {
    let test = TestDb::new().await;
    let good = sample_lines(6);
    let too_many: Vec<String> = (0..21).map(|i| format!("cs.T{i}")).collect();
    let text = [
        good[0].clone(),
        "{\"id\": \"x\", \"title\": ".to_owned(),
        good[1].replace("\"title\":", "\"heading\":"),
        with_field(&good[2], "published_at", "26/06/2025".into()),
        String::new(),
        with_field(&good[3], "tags", serde_json::json!(too_many)),
        good[4].replace("\"id\":", "\"ident\":"),
        "   ".to_owned(),
        good[5].clone(),
    ]
    .join("\n");
    let summary = test.import(&text, 2).await;
    assert_eq!((summary.inserted, summary.rejected_count, summary.lines), (2, 5, 9));
    let by_line: Vec<(u64, &str)> = summary.rejected.iter().map(|r| (r.line, r.reason.as_str())).collect();
    assert_eq!(by_line.iter().map(|(line, _)| *line).collect::<Vec<_>>(), [2, 3, 4, 6, 7]);
    assert!(by_line[0].1.starts_with("invalid JSON"), "{by_line:?}");
    assert!(by_line[1].1.contains("missing field `title`"), "{by_line:?}");
    assert!(by_line[2].1.starts_with("published_at:"), "{by_line:?}");
    assert_eq!(by_line[3].1, "tags: at most 20 tags (got 21)");
    assert_eq!(by_line[4].1, "id: required for import");
    assert_eq!(item::Entity::find().count(&test.db).await.unwrap(), 2);
    test.item(&id_of(&good[5])).await;
}

#[tokio::test]
async fn gzip_and_plain_files_import_alike() {
    let lines = sample_lines(25);
    let text = lines.join("\n") + "\n";
    let plain = TestDb::new().await;
    let path = plain.file("catalog.jsonl", text.as_bytes());
    let from_plain = import_path(&plain.db, &bus(), &path, &ImportOptions::default(), &()).await.unwrap();
    let zipped = TestDb::new().await;
    // A misleading name: gzip is recognised by its magic bytes.
    let path = zipped.file("catalog.jsonl", &gzip(&text));
    let from_gzip = import_path(&zipped.db, &bus(), &path, &ImportOptions::default(), &()).await.unwrap();
    assert_eq!((from_plain.inserted, from_plain.lines), (25, 25));
    assert_eq!((from_gzip.inserted, from_gzip.lines), (25, 25));
    for line in &lines {
        let (a, b) = (plain.item(&id_of(line)).await, zipped.item(&id_of(line)).await);
        assert_eq!((a.title, a.tags, a.content_hash), (b.title, b.tags, b.content_hash));
    }
}

#[tokio::test]
async fn a_repeated_id_is_applied_in_order_whatever_the_batch_size() {
    for batch_size in [1, 3, 500] {
        let test = TestDb::new().await;
        let lines = sample_lines(3);
        let changed = with_field(&lines[1], "body", "Rewritten.".into());
        let text =
            [lines[0].clone(), lines[1].clone(), lines[2].clone(), changed, lines[0].clone()].join("\n");
        let summary = test.import(&text, batch_size).await;
        assert_eq!((summary.inserted, summary.updated, summary.unchanged), (3, 1, 1), "batch {batch_size}");
        let row = test.item(&id_of(&lines[1])).await;
        assert_eq!((row.body.as_str(), row.version), ("Rewritten.", 2), "batch {batch_size}");
        assert_eq!(test.outbox().await.len(), 4, "batch {batch_size}");
    }
}

#[tokio::test]
async fn the_sample_is_imported_only_into_an_empty_catalogue() {
    let test = TestDb::new().await;
    let summary = import_sample_if_empty(&test.db, &bus()).await.unwrap().unwrap();
    assert_eq!((summary.inserted, summary.rejected_count, summary.lines), (2000, 0, 2000));
    assert_eq!(test.count("SELECT COUNT(DISTINCT group_name) FROM items").await, 8);
    assert!(import_sample_if_empty(&test.db, &bus()).await.unwrap().is_none());
    assert_eq!(test.outbox().await.len(), 2000);
}

#[tokio::test]
async fn sqlite_full_text_follows_inserts_updates_and_deletes() {
    let test = TestDb::new().await;
    let lines = sample_lines(10);
    test.import(&lines.join("\n"), 500).await;
    let fts = "SELECT COUNT(*) FROM items_fts WHERE items_fts MATCH";
    assert_eq!(test.count(&format!("{fts} 'zyxwvut'")).await, 0);
    let changed = with_field(&lines[3], "title", "Zyxwvut networks".into());
    test.import(&changed, 500).await;
    assert_eq!(test.count(&format!("{fts} 'zyxwvut'")).await, 1);
    // Porter stemming: "network" finds "networks".
    assert!(test.count(&format!("{fts} 'zyxwvut AND network'")).await == 1);
    item::Entity::delete_by_id(id_of(&lines[3])).exec(&test.db).await.unwrap();
    assert_eq!(test.count(&format!("{fts} 'zyxwvut'")).await, 0);
    assert_eq!(
        test.count("SELECT COUNT(*) FROM item_tags WHERE item_id NOT IN (SELECT id FROM items)").await,
        0
    );
    test.db.execute_unprepared("INSERT INTO items_fts(items_fts) VALUES ('integrity-check')").await.unwrap();
}

#[tokio::test]
async fn the_migration_goes_down_and_up_again() {
    let test = TestDb::new().await;
    let outbox_sql = test
        .db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT sql FROM sqlite_master WHERE name = 'outbox'",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<String>(0)
        .unwrap();
    assert!(outbox_sql.contains("integer NOT NULL PRIMARY KEY AUTOINCREMENT"), "{outbox_sql}");
    // undo the items migration and every later one
    let later = migration::Migrator::migrations()
        .iter()
        .rev()
        .take_while(|m| m.name() != "m20261125_000002_create_items")
        .count();
    migration::Migrator::down(&test.db, Some(u32::try_from(later + 1).unwrap())).await.unwrap();
    let left = "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'item%' OR name LIKE '%outbox%'";
    assert_eq!(test.count(left).await, 0);
    migration::Migrator::up(&test.db, None).await.unwrap();
    test.import(&sample_lines(3).join("\n"), 500).await;
}

#[tokio::test]
async fn read_failures_are_io_errors() {
    let test = TestDb::new().await;
    let missing = test.dir.join("missing.jsonl");
    let err = import_path(&test.db, &bus(), &missing, &ImportOptions::default(), &()).await.unwrap_err();
    assert!(matches!(&err, ImportError::Io { path, .. } if path.ends_with("missing.jsonl")), "{err}");
    // A gzip stream cut short fails after the batches before the cut are committed.
    let text = sample_lines(60).join("\n");
    let zipped = gzip(&text);
    let path = test.file("cut.jsonl.gz", &zipped[..zipped.len() / 2]);
    let err = import_path(
        &test.db,
        &bus(),
        &path,
        &ImportOptions { batch_size: 5, ..ImportOptions::default() },
        &(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ImportError::Io { .. }), "{err}");
    assert!(item::Entity::find().count(&test.db).await.unwrap() > 0);
    let mut rest = String::new();
    flate2::read::MultiGzDecoder::new(zipped.as_slice()).read_to_string(&mut rest).unwrap();
    let summary = test.import(&rest, 500).await;
    assert_eq!(summary.inserted + summary.unchanged, 60, "a rerun finishes the job");
}

/// The same import on PostgreSQL (a fresh database, dropped afterwards).
#[tokio::test]
async fn postgres_imports_and_searches() {
    let (database, db) = TestDatabase::migrated(Backend::Postgres).await;
    let lines = sample_lines(50);
    let text = lines.join("\n");
    let options = ImportOptions { batch_size: 20, ..ImportOptions::default() };
    let first = import_reader(&db, &bus(), std::io::Cursor::new(text.clone()), &options, &()).await.unwrap();
    assert_eq!(first.inserted, 50);
    let again = import_reader(&db, &bus(), std::io::Cursor::new(text), &options, &()).await.unwrap();
    assert_eq!((again.unchanged, again.updated), (50, 0));
    let changed = with_field(&lines[0], "title", "Zyxwvut networks".into());
    let third = import_reader(&db, &bus(), std::io::Cursor::new(changed), &options, &()).await.unwrap();
    assert_eq!(third.updated, 1);
    let row = item::Entity::find_by_id(id_of(&lines[0])).one(&db).await.unwrap().unwrap();
    assert_eq!((row.version, row.tags.is_array()), (2, true));
    let sql = "SELECT COUNT(*) FROM items WHERE search @@ to_tsquery('english', 'zyxwvut & network')";
    let hits: i64 = db
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap();
    assert_eq!(hits, 1);
    assert_eq!(outbox::Entity::find().count(&db).await.unwrap(), 51);
    migration::Migrator::down(&db, Some(1)).await.unwrap();
    db.close().await.unwrap();
    drop(database);
}

#[tokio::test]
async fn a_resumed_import_skips_the_lines_already_done() {
    let test = TestDb::new().await;
    let lines = sample_lines(10);
    let options = ImportOptions { batch_size: 4, skip_lines: 4 };
    let reader = std::io::Cursor::new(lines.join("\n").into_bytes());
    let summary = import_reader(&test.db, &bus(), reader, &options, &()).await.unwrap();
    assert_eq!((summary.inserted, summary.unchanged, summary.lines), (6, 0, 10));
    assert_eq!(item::Entity::find().count(&test.db).await.unwrap(), 6);
    let first = item::Entity::find_by_id(id_of(&lines[3])).one(&test.db).await.unwrap();
    assert!(first.is_none(), "line 4 was skipped");
    test.item(&id_of(&lines[4])).await;
}

/// Writes `views = batch number` on the batch's first item inside its transaction,
/// and refuses the transaction of batch `fail_at`.
struct MarkAndFail {
    batches: std::sync::atomic::AtomicU64,
    fail_at: u64,
    first_ids: Vec<String>,
}

impl ImportObserver for MarkAndFail {
    fn before_commit<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        _batch: &'a BatchReport<'a>,
    ) -> futures::future::BoxFuture<'a, Result<(), ImportError>> {
        let n = self.batches.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        Box::pin(async move {
            let id = &self.first_ids[n as usize - 1];
            item::Entity::update_many()
                .col_expr(item::Column::Views, sea_orm::sea_query::Expr::value(n as i64))
                .filter(item::Column::Id.eq(id.as_str()))
                .exec(txn)
                .await?;
            if n == self.fail_at { Err(ImportError::Stopped("refused on purpose".into())) } else { Ok(()) }
        })
    }
}

#[tokio::test]
async fn what_an_observer_writes_commits_with_its_batch() {
    let test = TestDb::new().await;
    let lines = sample_lines(9);
    let first_ids = vec![id_of(&lines[0]), id_of(&lines[3]), id_of(&lines[6])];
    let observer = MarkAndFail { batches: Default::default(), fail_at: 2, first_ids };
    let options = ImportOptions { batch_size: 3, ..ImportOptions::default() };
    let reader = std::io::Cursor::new(lines.join("\n").into_bytes());
    let err = import_reader(&test.db, &bus(), reader, &options, &observer).await.unwrap_err();
    assert!(
        matches!(&err, ImportError::Stopped(reason) if reason.to_string() == "refused on purpose"),
        "{err}"
    );
    assert_eq!(test.item(&id_of(&lines[0])).await.views, 1, "batch 1 and its mark committed");
    assert_eq!(
        item::Entity::find().count(&test.db).await.unwrap(),
        3,
        "batch 2 rolled back, batch 3 never read"
    );
    assert_eq!(test.outbox().await.len(), 3);
}
