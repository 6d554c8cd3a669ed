//! Explore: the catalogue. [`ExploreService`] answers typed queries
//! ([`model::ListQuery`], ...) and applies writes with optimistic concurrency,
//! each write appending its outbox event in the same transaction. Handlers call
//! the service; they contain no SQL. Every committed change is published as an
//! [`ItemChange`] on the service's [`ChangeBus`] before the write returns; the
//! same value is the outbox event's payload.
//!
//! | file | what |
//! |---|---|
//! | `model.rs` | typed queries, results and inputs |
//! | `validate.rs` | input rules (422 per field) and the content hash |
//! | `cursor.rs` | opaque, tamper-evident keyset cursors |
//! | `read.rs` | list, detail, categories, trending, search |
//! | `write.rs` | create, replace, patch, delete |
//! | `change.rs` | [`ItemChange`]: the change event, in-process and as the versioned outbox payload |
//! | `trend.rs` | the time-decayed view score |
//! | `view_dedup.rs` | which views count: one per user and item per window |
//! | `import.rs` | streaming JSON Lines import (plain or gzip) |
//! | `maintenance.rs` | whole-catalogue batches: trend rescaling, the full-text index rebuild |
//! | `warm.rs` | cache warming |
//! | `semantic.rs` | Explore on inference: summaries, embeddings, the semantic index, rank fusion |
//! | `views.rs` | the ViewCounter actor: batches view counts and trend updates |
//! | `tree.rs` | [`tree::child_spec`]: the ViewCounter under supervision |

pub mod cached;
pub mod change;
pub mod cursor;
pub mod import;
pub mod maintenance;
pub mod model;
pub mod read;
pub mod semantic;
pub mod tree;
pub mod trend;
pub mod validate;
pub mod view_dedup;
pub mod views;
pub mod warm;
pub mod write;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sea_orm::DatabaseConnection;

pub use self::change::{ChangeBus, Families, ItemChange};
use self::cursor::CursorCodec;
use self::model::FieldErrors;

/// Why an Explore request failed.
#[derive(Debug, thiserror::Error)]
pub enum ExploreError {
    /// No item with that id.
    #[error("no item with id '{0}'")]
    NotFound(String),
    /// The write named a version that is no longer current.
    #[error("item '{id}' is at version {current}, not {expected}")]
    VersionConflict { id: String, expected: i64, current: i64 },
    /// An item with that id already exists (create).
    #[error("an item with id '{0}' already exists")]
    AlreadyExists(String),
    /// A conditional write came without a version (`If-Match`).
    #[error("this write needs the item's current version in If-Match")]
    PreconditionRequired,
    /// Invalid item fields.
    #[error("the item is invalid")]
    Invalid(FieldErrors),
    /// A query parameter is out of range or malformed.
    #[error("{0}")]
    BadQuery(String),
    /// The cursor was not issued by this service for this query, or was altered.
    #[error("the cursor is invalid or does not belong to this query")]
    InvalidCursor,
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
}

/// The catalogue service. Cheap to clone.
#[derive(Clone)]
pub struct ExploreService {
    db: DatabaseConnection,
    cursors: Arc<CursorCodec>,
    loads: Arc<AtomicU64>,
    changes: ChangeBus,
}

impl ExploreService {
    /// A service over this database; cursors are signed with `cursor_secret`.
    pub fn new(db: DatabaseConnection, cursor_secret: &[u8]) -> Self {
        Self {
            db,
            cursors: Arc::new(CursorCodec::new(cursor_secret)),
            loads: Arc::default(),
            changes: change::change_bus(),
        }
    }

    /// The bus every committed item change is published on before the write
    /// returns (the import publishes one batch per transaction). Subscribe here.
    pub fn changes(&self) -> &ChangeBus {
        &self.changes
    }

    pub(crate) async fn notify(&self, change: ItemChange) {
        self.changes.publish(vec![change]).await;
    }

    /// The database pool.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// How many read queries reached the database (for cache tests and metrics).
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    pub(crate) fn count_load(&self) {
        self.loads.fetch_add(1, Ordering::Relaxed);
        crate::metrics::explore_db_load();
    }

    pub(crate) fn cursors(&self) -> &CursorCodec {
        &self.cursors
    }
}
