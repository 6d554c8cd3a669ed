//! The SemanticIndexer through its messages, over a real database, with
//! inference turned off (`inference.enabled = false`, a node's real setting): it
//! loads the index, drops deleted items, indexes vectors other nodes stored, picks
//! up vectors written elsewhere at a sync, keeps the vector of an item whose text
//! changed when no model can embed it, and reloads after its queue overflowed.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use ractor::Actor;

use super::*;
use crate::config::{Environment, Settings};
use crate::db::testing::{Backend, TestDatabase};
use crate::explore::ExploreService;
use crate::explore::model::{ItemInput, ItemPatch, Patch};

const MODEL: &str = "m";

struct Fixture {
    service: ExploreService,
    index: SharedIndex,
    queue: Arc<ChangeQueue>,
    slot: ActorSlot<IndexerMsg>,
    actor: ActorRef<IndexerMsg>,
    _database: TestDatabase,
}

fn input(id: &str) -> ItemInput {
    ItemInput {
        id: Some(id.into()),
        title: format!("Paper {id}"),
        body: "An abstract.".into(),
        category: "Machine Learning".into(),
        category_code: "cs.LG".into(),
        group: "Computer Science".into(),
        tags: vec![],
        source_url: None,
        published_at: Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap(),
    }
}

/// Stores a current vector of item `id` (as another node would).
async fn store_vector(service: &ExploreService, id: &str, seed: f32) {
    let text = store::item_text(service.db(), id).await.unwrap().unwrap();
    let row = StoredEmbedding {
        item_id: id.into(),
        model: MODEL.into(),
        text_hash: text.embedding_input().hash,
        vector: vec![seed, 1.0, 0.5],
    };
    store::save_embeddings(service.db(), &[row], Utc::now()).await.unwrap();
}

/// Items a1..a3 with vectors stored for a1 and a2, and an indexer over them.
async fn setup(capacity: usize) -> Fixture {
    let (database, db) = TestDatabase::migrated(Backend::Sqlite).await;
    let service = ExploreService::new(db.clone(), b"indexer-tests");
    for id in ["a1", "a2", "a3"] {
        service.create(input(id)).await.unwrap();
    }
    store_vector(&service, "a1", 1.0).await;
    store_vector(&service, "a2", 2.0).await;
    let inference = disabled_inference();
    let index = SharedIndex::new(MODEL);
    let queue = Arc::new(ChangeQueue::new(capacity));
    let slot = ActorSlot::new("semantic-indexer");
    watch(&[service.changes()], &queue, &slot);
    let indexer = SemanticIndexer {
        batch_max: 8,
        // syncs are asked for by the test
        sync_every: Duration::from_secs(3600),
        retry: Backoff::default(),
    };
    let args = IndexerArgs {
        db,
        inference,
        index: index.clone(),
        queue: queue.clone(),
        stats: Arc::new(ActorStats::default()),
    };
    let (actor, _handle) = Actor::spawn(None, indexer, args).await.unwrap();
    slot.set(actor.clone());
    Fixture { service, index, queue, slot, actor, _database: database }
}

/// A node's inference handle with `inference.enabled = false`.
fn disabled_inference() -> Inference {
    let figment = Settings::figment(&Environment::Test, std::path::Path::new("config"));
    let settings = Settings::from_figment_in(figment, Environment::Test).unwrap();
    Inference::disabled(&settings.inference)
}

/// Waits (with a deadline) until `check` holds of the index.
async fn until(index: &SharedIndex, what: &str, check: impl Fn(&SharedIndex) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check(index) {
        assert!(tokio::time::Instant::now() < deadline, "the index never got {what}: {index:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn ids(index: &SharedIndex) -> Vec<String> {
    let mut ids: Vec<String> = ["a1", "a2", "a3", "a4", "a5"]
        .iter()
        .filter(|id| index.contains(id))
        .map(|id| (*id).to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_follows_item_changes_and_vectors_written_elsewhere() {
    let f = setup(100).await;
    until(&f.index, "its stored vectors", |i| ids(i) == ["a1", "a2"]).await;

    // a delete leaves the index
    f.service.delete("a1", None).await.unwrap();
    until(&f.index, "a1 gone", |i| !i.contains("a1")).await;

    // a change of a3 whose current vector another node stored: indexed from the store
    store_vector(&f.service, "a3", 3.0).await;
    let moved = ItemPatch { category_code: Patch::Value("cs.AI".into()), ..ItemPatch::default() };
    f.service.patch("a3", None, moved).await.unwrap();
    until(&f.index, "a3 from the store", |i| i.contains("a3")).await;

    // a new text with no model to embed it: the index keeps the vector it has
    let before = f.index.vector("a2");
    let edited = ItemPatch { body: Patch::Value("Another abstract.".into()), ..ItemPatch::default() };
    f.service.patch("a2", None, edited).await.unwrap();

    // a vector written elsewhere (a job, another node), with no change event: picked up at a sync
    let old = f.index.vector("a3");
    store_vector(&f.service, "a3", -3.0).await;
    assert_eq!(f.index.vector("a3"), old, "nothing told the indexer");
    f.actor.cast(IndexerMsg::Sync).unwrap();
    until(&f.index, "a3's new vector", |i| i.vector("a3") != old).await;
    // the sync ran after a2's change (one piece of work at a time, changes first)
    assert!(f.queue.is_empty());
    assert_eq!(f.index.vector("a2"), before);
    assert_eq!(ids(&f.index), ["a2", "a3"]);
    f.actor.stop(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_queue_reloads_the_index() {
    let f = setup(1).await;
    until(&f.index, "its stored vectors", |i| ids(i) == ["a1", "a2"]).await;
    // the indexer is away: changes pile up past the queue's capacity
    f.actor.stop_and_wait(None, None).await.unwrap();
    f.service.create(input("a4")).await.unwrap();
    store_vector(&f.service, "a4", 4.0).await;
    f.service.create(input("a5")).await.unwrap();
    store_vector(&f.service, "a5", 5.0).await;
    f.service.delete("a1", None).await.unwrap();
    assert_eq!(f.queue.len(), 1, "bounded");
    // a new incarnation reloads everything stored: a1 gone, a4 and a5 in
    let indexer =
        SemanticIndexer { batch_max: 8, sync_every: Duration::from_secs(3600), retry: Backoff::default() };
    let args = IndexerArgs {
        db: f.service.db().clone(),
        inference: disabled_inference(),
        index: f.index.clone(),
        queue: f.queue.clone(),
        stats: Arc::new(ActorStats::default()),
    };
    let (actor, _handle) = Actor::spawn(None, indexer, args).await.unwrap();
    f.slot.set(actor.clone());
    until(&f.index, "the reload", |i| ids(i) == ["a2", "a4", "a5"]).await;
    assert!(!f.queue.take_overflow(), "the overflow was handled");
    actor.stop(None);
}
