//! An `import_catalog` handler run by hand, attempt by attempt, with a recording
//! reporter: stopped after its second batch, then resumed by the next attempt from
//! the checkpoint that batch committed, with the counts of an uninterrupted run.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use castwork::db::entities::item;
use castwork::db::testing::{Backend, TestDatabase};
use castwork::explore::ExploreService;
use castwork::explore::cached::{CachedExplore, Ttls};
use castwork::explore::import::{ImportOptions, import_reader};
use castwork::queue::handler::{JobContext, JobError, JobHandler, Reporter};
use castwork::queue::kinds::KindDeps;
use castwork::queue::kinds::import_catalog::ImportCatalog;
use castwork::queue::model::Progress;
use castwork::queue::store::{Claim, JobStore, NewJob};
use futures::future::BoxFuture;
use sea_orm::{DatabaseConnection, EntityTrait, PaginatorTrait};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{id_of, sample_lines, with_title};
use crate::both;
use crate::helpers::test_settings;

/// The lines of the file: 30 items and a bad line.
fn file_lines() -> Vec<String> {
    let mut lines = sample_lines(30);
    lines.insert(15, "{not json".to_owned());
    lines
}

/// A node's database with six of the items in it already: three of them with
/// another title (the import updates them), three as in the file (unchanged).
struct Node {
    db: DatabaseConnection,
    handler: ImportCatalog,
    store: JobStore,
    _database: TestDatabase,
}

const PAYLOAD: &str = r#"{"path": "catalog.jsonl", "batch_size": 4}"#;

async fn node(backend: Backend) -> Node {
    let (database, db) = TestDatabase::migrated(backend).await;
    let settings = test_settings(&database.dir, &database.url);
    let imports: PathBuf = database.dir.join("imports");
    std::fs::create_dir_all(&imports).unwrap();
    std::fs::write(imports.join("catalog.jsonl"), file_lines().join("\n")).unwrap();
    let explore = ExploreService::new(db.clone(), b"import-resume-test-cursor-secret");
    let cached = CachedExplore::new(explore.clone(), None, Ttls::from_settings(&settings.cache));
    let seed: Vec<String> = sample_lines(6)
        .iter()
        .enumerate()
        .map(|(i, line)| if i < 3 { with_title(line, "An older title") } else { line.clone() })
        .collect();
    let reader = std::io::Cursor::new(seed.join("\n").into_bytes());
    import_reader(&db, explore.changes(), reader, &ImportOptions::default(), &()).await.unwrap();
    let inference = castwork::inference::Inference::disabled(&settings.inference);
    let deps = KindDeps {
        settings: Arc::new(settings),
        db: db.clone(),
        semantic: castwork::explore::semantic::Semantic::detached(cached.clone(), inference.clone()),
        explore,
        cached,
        inference,
    };
    Node {
        handler: ImportCatalog::new(&deps),
        store: JobStore::new(db.clone(), 100),
        db,
        _database: database,
    }
}

impl Node {
    /// A job, claimed (its first attempt).
    async fn job(&self) -> String {
        let new = NewJob {
            kind: "import_catalog".into(),
            payload: serde_json::from_str(PAYLOAD).unwrap(),
            created_by: "test".into(),
            idempotency_key: None,
            max_attempts: 3,
        };
        let (job, _) = self.store.submit(new).await.unwrap();
        self.claim(&job.id, 1).await;
        job.id
    }

    /// Claims the job again (a redelivery after its worker died): the next attempt.
    async fn claim(&self, id: &str, attempt: i32) -> Option<Value> {
        let Claim::Claimed(row) = self.store.claim(id, "test-node", Duration::from_secs(60)).await.unwrap()
        else {
            panic!("job {id} could not be claimed")
        };
        assert_eq!(row.attempts, attempt);
        row.checkpoint
    }

    async fn attempt(
        &self,
        id: &str,
        attempt: u32,
        checkpoint: Option<Value>,
        reporter: &Arc<Recorder>,
    ) -> Result<Value, JobError> {
        let payload = serde_json::from_str(PAYLOAD).unwrap();
        let ctx = JobContext::new(
            id.to_owned(),
            attempt,
            payload,
            checkpoint,
            reporter.token.clone(),
            reporter.clone(),
            Duration::ZERO,
        );
        self.handler.run(ctx).await
    }

    async fn items(&self) -> u64 {
        item::Entity::find().count(&self.db).await.unwrap()
    }

    async fn title(&self, line: &str) -> Option<String> {
        item::Entity::find_by_id(id_of(line)).one(&self.db).await.unwrap().map(|row| row.title)
    }
}

/// Records every report; cancels the job once `cancel_at` lines are reported done.
struct Recorder {
    token: CancellationToken,
    cancel_at: Option<u64>,
    reports: Mutex<Vec<Progress>>,
}

impl Recorder {
    fn new(cancel_at: Option<u64>) -> Arc<Self> {
        Arc::new(Self { token: CancellationToken::new(), cancel_at, reports: Mutex::default() })
    }

    /// The lines reported done, once a total was known.
    fn processed(&self) -> Vec<u64> {
        self.reports.lock().unwrap().iter().filter(|p| p.total.is_some()).map(|p| p.processed).collect()
    }
}

impl Reporter for Recorder {
    fn report(
        &self,
        progress: Progress,
        _checkpoint: Option<Value>,
        _force: bool,
    ) -> BoxFuture<'_, Result<(), JobError>> {
        if self.cancel_at.is_some_and(|at| progress.processed >= at) {
            self.token.cancel();
        }
        self.reports.lock().unwrap().push(progress);
        Box::pin(std::future::ready(Ok(())))
    }
}

fn counts(result: &Value) -> Value {
    let mut counts = result.clone();
    counts.as_object_mut().unwrap().remove("resumed_from_line");
    counts
}

async fn an_import_resumes_after_its_last_committed_batch(backend: Backend) {
    // an uninterrupted run
    let fresh = node(backend).await;
    let id = fresh.job().await;
    let recorder = Recorder::new(None);
    let expected = fresh.attempt(&id, 1, None, &recorder).await.unwrap();
    assert_eq!(
        [
            &expected["inserted"],
            &expected["updated"],
            &expected["unchanged"],
            &expected["rejected"],
            &expected["lines"]
        ],
        [24, 3, 3, 1, 31],
        "{expected}"
    );
    assert_eq!(recorder.processed(), [0, 4, 8, 12, 16, 20, 24, 28, 31], "progress per batch");

    // the first attempt is cancelled after its second batch (lines 1-8)
    let node_b = node(backend).await;
    let id = node_b.job().await;
    let stopped = node_b.attempt(&id, 1, None, &Recorder::new(Some(8))).await;
    assert!(matches!(stopped, Err(JobError::Cancelled)), "{stopped:?}");
    assert_eq!(node_b.items().await, 8, "six seeded, two inserted by the two batches");
    // its worker is presumed dead: the job is taken over, from the checkpoint
    let checkpoint = node_b.claim(&id, 2).await.expect("a checkpoint");
    assert_eq!(checkpoint["lines"], 8, "{checkpoint}");
    assert_eq!(
        (&checkpoint["inserted"], &checkpoint["updated"], &checkpoint["unchanged"]),
        (&json!(2), &json!(3), &json!(3))
    );
    // the first attempt, still running somewhere, can no longer commit a batch
    let stale = node_b.attempt(&id, 1, Some(checkpoint.clone()), &Recorder::new(None)).await;
    assert!(matches!(stale, Err(JobError::LeaseLost)), "{stale:?}");
    assert_eq!(node_b.items().await, 8, "the stale attempt's batch was rolled back");
    let recorder = Recorder::new(None);
    let resumed = node_b.attempt(&id, 2, Some(checkpoint.clone()), &recorder).await.unwrap();
    assert_eq!(resumed["resumed_from_line"], 8);
    assert_eq!(counts(&resumed), counts(&expected), "the counts of an uninterrupted run");
    assert!(recorder.processed().iter().all(|&done| done >= 8), "{:?}", recorder.processed());

    // the same checkpoint on a node where those two batches never ran: they are not applied
    let node_c = node(backend).await;
    let id = node_c.job().await;
    let resumed = node_c.attempt(&id, 1, Some(checkpoint), &Recorder::new(None)).await.unwrap();
    assert_eq!(counts(&resumed), counts(&expected));
    let lines = file_lines();
    assert_eq!(node_c.title(&lines[0]).await.as_deref(), Some("An older title"), "line 1 was not imported");
    assert_eq!(node_c.title(&lines[7]).await, None, "line 8 was not imported");
    assert!(node_c.title(&lines[8]).await.is_some(), "line 9 was");
    assert_eq!(node_c.items().await, 6 + 22);
}
both!(an_import_resumes_after_its_last_committed_batch);

#[tokio::test]
async fn a_file_gone_by_run_time_fails_the_job_for_good() {
    let node = node(Backend::Sqlite).await;
    let id = node.job().await;
    let settings_dir = node._database.dir.join("imports");
    std::fs::remove_file(settings_dir.join("catalog.jsonl")).unwrap();
    let result = node.attempt(&id, 1, None, &Recorder::new(None)).await;
    match result {
        Err(JobError::Fatal(message)) => assert!(message.contains("payload.path: no such file"), "{message}"),
        other => panic!("expected a fatal error: {other:?}"),
    }
}
