//! The store against real databases, on SQLite and on PostgreSQL.

use chrono::{TimeZone, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait};

use super::*;
use crate::db::testing::{Backend, TestDatabase};
use crate::explore::ExploreService;
use crate::explore::model::{ItemInput, ItemPatch, Patch};

struct Fixture {
    service: ExploreService,
    _database: TestDatabase,
}

impl Fixture {
    fn db(&self) -> &DatabaseConnection {
        self.service.db()
    }
}

async fn setup(backend: Backend) -> Fixture {
    let (database, db) = TestDatabase::migrated(backend).await;
    let service = ExploreService::new(db, b"semantic-store-tests");
    for (id, title) in [("a1", "Graph neural networks"), ("a2", "Diffusion models"), ("a3", "Quantum walks")]
    {
        service.create(input(id, title)).await.unwrap();
    }
    Fixture { service, _database: database }
}

fn input(id: &str, title: &str) -> ItemInput {
    ItemInput {
        id: Some(id.into()),
        title: title.into(),
        body: format!("An abstract about {title}."),
        category: "Machine Learning".into(),
        category_code: "cs.LG".into(),
        group: "Computer Science".into(),
        tags: vec!["cs.LG".into()],
        source_url: None,
        published_at: Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap(),
    }
}

fn vector(seed: f32) -> Vec<f32> {
    (0..384).map(|i| seed + i as f32 / 1000.0).collect()
}

async fn embed_row(f: &Fixture, id: &str, model: &str, seed: f32) -> StoredEmbedding {
    let text = item_text(f.db(), id).await.unwrap().unwrap();
    StoredEmbedding {
        item_id: id.into(),
        model: model.into(),
        text_hash: text.embedding_input().hash,
        vector: vector(seed),
    }
}

fn ids(pending: &[Pending]) -> Vec<&str> {
    pending.iter().map(|p| p.id.as_str()).collect()
}

async fn embeddings_round_trip_and_stale_ones_are_found(f: Fixture) {
    let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    let scan = scan_pending(f.db(), Derived::Embedding, "m", None, 10).await.unwrap();
    assert_eq!(
        (ids(&scan.pending), scan.last.as_deref(), scan.scanned),
        (vec!["a1", "a2", "a3"], Some("a3"), 3)
    );
    let rows = vec![embed_row(&f, "a1", "m", 0.5).await, embed_row(&f, "a2", "m", -0.25).await];
    assert_eq!(save_embeddings(f.db(), &rows, at).await.unwrap(), 2);
    let stored = embedding(f.db(), "a1").await.unwrap().unwrap();
    assert_eq!(stored, rows[0], "the vector round-trips bit for bit");
    // a2's text changes: its embedding is stale; a3 never had one
    f.service
        .patch(
            "a2",
            None,
            ItemPatch { body: Patch::Value("Now about score matching.".into()), ..Default::default() },
        )
        .await
        .unwrap();
    let scan = scan_pending(f.db(), Derived::Embedding, "m", None, 10).await.unwrap();
    assert_eq!(ids(&scan.pending), ["a2", "a3"]);
    assert!(scan.pending[0].input.text.contains("score matching"));
    // another model's vectors are not current either
    let scan = scan_pending(f.db(), Derived::Embedding, "other", None, 10).await.unwrap();
    assert_eq!(ids(&scan.pending), ["a1", "a2", "a3"]);
    // a walk in steps resumes after the last id read, and ends empty
    let first = scan_pending(f.db(), Derived::Embedding, "m", None, 1).await.unwrap();
    assert_eq!((ids(&first.pending), first.last.as_deref()), (vec![], Some("a1")));
    let second = scan_pending(f.db(), Derived::Embedding, "m", first.last.as_deref(), 2).await.unwrap();
    assert_eq!((ids(&second.pending), second.last.as_deref()), (vec!["a2", "a3"], Some("a3")));
    let end = scan_pending(f.db(), Derived::Embedding, "m", Some("a3"), 2).await.unwrap();
    assert_eq!(end, Scan::default());
    // by ids: unknown ones are skipped
    let among =
        pending_among(f.db(), Derived::Embedding, "m", &["zz".into(), "a3".into(), "a1".into()]).await;
    assert_eq!(ids(&among.unwrap()), ["a3"]);
    let some = embeddings_of(f.db(), "m", &["a2".into(), "a1".into(), "a3".into()]).await.unwrap();
    assert_eq!(some, vec![rows[0].clone(), rows[1].clone()]);
    // pages of one model, in id order
    let replaced = embed_row(&f, "a2", "m", 2.0).await;
    save_embeddings(f.db(), &[replaced.clone(), embed_row(&f, "a3", "other", 1.0).await], at).await.unwrap();
    let page = embeddings_page(f.db(), "m", None, 10).await.unwrap();
    assert_eq!(page, vec![rows[0].clone(), replaced]);
    assert_eq!(embeddings_page(f.db(), "m", Some("a1"), 10).await.unwrap().len(), 1);
    assert_eq!(embeddings_page(f.db(), "m", None, 1).await.unwrap().len(), 1);
    // by time written: a1 at `at`, a2 (replaced) later, then only what follows a mark
    let later = at + chrono::Duration::seconds(1);
    save_embeddings(f.db(), &[embed_row(&f, "a2", "m", 2.0).await], later).await.unwrap();
    let written = embeddings_updated_after(f.db(), "m", None, 10).await.unwrap();
    let order: Vec<(&str, DateTime<Utc>)> = written.iter().map(|(e, m)| (e.item_id.as_str(), m.at)).collect();
    assert_eq!(order, [("a1", at), ("a2", later)]);
    let first = &written[0].1;
    let rest = embeddings_updated_after(f.db(), "m", Some(first), 1).await.unwrap();
    assert_eq!(rest.iter().map(|(e, _)| e.item_id.as_str()).collect::<Vec<_>>(), ["a2"]);
    let same_instant = UpdateMark { at: later, item_id: "a1".into() };
    assert_eq!(embeddings_updated_after(f.db(), "m", Some(&same_instant), 5).await.unwrap().len(), 1);
    assert!(embeddings_updated_after(f.db(), "m", Some(&written[1].1), 5).await.unwrap().is_empty());
    // a malformed row is an error, not a garbage vector
    f.db().execute_unprepared("UPDATE item_embeddings SET dim = 3 WHERE item_id = 'a1'").await.unwrap();
    assert!(matches!(embedding(f.db(), "a1").await, Err(DbErr::Type(_))));
}

async fn summaries_are_replaced_and_go_with_their_item(f: Fixture) {
    let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    let text = item_text(f.db(), "a1").await.unwrap().unwrap();
    let row = item_summary::Model {
        item_id: "a1".into(),
        text_hash: text.summary_input().hash,
        model: "chat".into(),
        summary: "Two sentences.".into(),
        created_at: at,
    };
    assert!(save_summary(f.db(), &row).await.unwrap());
    assert_eq!(summary(f.db(), "a1").await.unwrap(), Some(row.clone()));
    let scan = scan_pending(f.db(), Derived::Summary, "chat", None, 10).await.unwrap();
    assert_eq!(ids(&scan.pending), ["a2", "a3"]);
    let newer = item_summary::Model { summary: "Another.".into(), ..row.clone() };
    assert!(save_summary(f.db(), &newer).await.unwrap());
    assert_eq!(summary(f.db(), "a1").await.unwrap().unwrap().summary, "Another.");
    // an item that is gone takes no summary or embedding, and takes its rows with it
    let gone = item_summary::Model { item_id: "nope".into(), ..row };
    assert!(!save_summary(f.db(), &gone).await.unwrap());
    let stray = StoredEmbedding { item_id: "nope".into(), ..embed_row(&f, "a1", "m", 1.0).await };
    assert_eq!(save_embeddings(f.db(), &[stray, embed_row(&f, "a1", "m", 1.0).await], at).await.unwrap(), 1);
    f.service.delete("a1", None).await.unwrap();
    assert_eq!(summary(f.db(), "a1").await.unwrap(), None);
    assert_eq!(embedding(f.db(), "a1").await.unwrap(), None);
    assert_eq!(item_summary::Entity::find().count(f.db()).await.unwrap(), 0);
    assert_eq!(item_embedding::Entity::find().count(f.db()).await.unwrap(), 0);
}

async fn the_index_loads_one_models_vectors_page_by_page(f: Fixture) {
    let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    let rows = [embed_row(&f, "a1", "m", 1.0).await, embed_row(&f, "a2", "m", -1.0).await];
    save_embeddings(f.db(), &rows, at).await.unwrap();
    // a3's vector is another model's: left out
    save_embeddings(f.db(), &[embed_row(&f, "a3", "other", 1.0).await], at).await.unwrap();
    let index = crate::explore::semantic::SharedIndex::new("m");
    index.upsert("stale", &vector(3.0)).unwrap();
    let report = index.load_in_pages(f.db(), 1).await.unwrap();
    assert_eq!((report.loaded, report.skipped), (2, 0));
    assert!(index.contains("a1") && index.contains("a2") && !index.contains("a3"));
    assert!(!index.contains("stale"), "a load replaces what the index held");
    let found = index.nearest(vector(1.0), 1, None).await.unwrap();
    assert_eq!(found[0].id, "a1");
    let found = index.nearest(vector(1.0), 5, Some("a1".into())).await.unwrap();
    assert_eq!(found.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["a2"]);
    // a stored vector of another dimension is skipped, not fatal
    let short = StoredEmbedding { vector: vec![1.0; 8], ..embed_row(&f, "a3", "m", 0.0).await };
    save_embeddings(f.db(), &[short], at).await.unwrap();
    let report = index.load(f.db()).await.unwrap();
    assert_eq!((report.loaded, report.skipped), (2, 1));
}

crate::on_both_backends!(
    setup => embeddings_round_trip_and_stale_ones_are_found,
    summaries_are_replaced_and_go_with_their_item,
    the_index_loads_one_models_vectors_page_by_page,
);

#[test]
fn vectors_encode_as_little_endian_f32() {
    let bytes = encode_vector(&[1.0, -2.5]);
    assert_eq!(bytes, [0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc0]);
    assert_eq!(decode_vector(&bytes, 2), Some(vec![1.0, -2.5]));
    assert_eq!(decode_vector(&bytes, 3), None);
    assert_eq!(decode_vector(&bytes[..7], 2), None);
}
