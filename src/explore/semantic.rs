//! Explore on inference: what the models derive from items (summaries,
//! embeddings), where it is stored, and the in-memory index that semantic search
//! and related items read.
//!
//! | file | what |
//! |---|---|
//! | `text.rs` | what a model reads of an item, and its `text_hash` |
//! | `store.rs` | `item_summaries` and `item_embeddings`: reads, writes, walks over items needing work |
//! | `index.rs` | [`index::VectorIndex`]: normalised vectors by item id, exact top-k |
//! | `fusion.rs` | reciprocal rank fusion of the full-text and semantic rankings |
//! | `changes.rs` | the bounded queue of item changes the indexer applies |
//! | `flights.rs` | single flight: concurrent requests for one summary share its generation |
//! | `service.rs` | [`Semantic`]: the reads on inference, their errors |
//! | `summary.rs` | an item's summary: stored, or generated once |
//! | `search.rs` | related items, semantic and hybrid search |
//! | `indexer.rs` | the SemanticIndexer actor: keeps the index in step with item changes |

pub mod changes;
pub mod flights;
pub mod fusion;
pub mod index;
pub mod indexer;
pub mod search;
pub mod service;
pub mod store;
pub mod summary;
pub mod text;

use std::sync::{Arc, RwLock};

use sea_orm::{DatabaseConnection, DbErr};

use self::index::{IndexError, Neighbour, VectorIndex};
pub use self::service::{Semantic, SemanticError};
pub use self::summary::GeneratedSummary;

/// Embeddings read per page when the index is loaded.
pub const LOAD_PAGE: u64 = 1_000;

/// What loading the index found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadReport {
    /// Vectors now in the index.
    pub loaded: usize,
    /// Stored vectors left out (another dimension than the first, or no direction).
    pub skipped: usize,
}

/// The node's semantic index: the embeddings of one model, shared by the handlers
/// (searches) and the indexer that keeps it current. Cheap to clone.
#[derive(Clone)]
pub struct SharedIndex {
    model: Arc<str>,
    inner: Arc<RwLock<VectorIndex>>,
}

impl std::fmt::Debug for SharedIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedIndex").field("model", &self.model).field("len", &self.len()).finish()
    }
}

impl SharedIndex {
    /// An empty index of `model`'s embeddings.
    pub fn new(model: &str) -> Self {
        Self { model: Arc::from(model), inner: Arc::default() }
    }

    /// The embedding model whose vectors it holds.
    pub fn model(&self) -> &str {
        &self.model
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, VectorIndex> {
        // a panic while holding the lock cannot leave the index half-written
        // (every write is one call that either completes or fails before changing it)
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, VectorIndex> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Vectors held.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Bytes its vectors hold.
    pub fn vector_bytes(&self) -> usize {
        self.read().vector_bytes()
    }

    /// Whether `id` has a vector.
    pub fn contains(&self, id: &str) -> bool {
        self.read().contains(id)
    }

    /// The normalised vector of `id`.
    pub fn vector(&self, id: &str) -> Option<Vec<f32>> {
        self.read().get(id).map(<[f32]>::to_vec)
    }

    /// Sets the vector of `id`.
    pub fn upsert(&self, id: &str, vector: &[f32]) -> Result<(), IndexError> {
        self.write().upsert(id, vector)
    }

    /// Drops the vector of `id`; false when it had none.
    pub fn remove(&self, id: &str) -> bool {
        self.write().remove(id)
    }

    /// The `k` items nearest to `query`, best first, without `exclude`: the scan runs
    /// on the blocking pool (milliseconds at the catalogue's size, too long for a
    /// runtime worker).
    pub async fn nearest(
        &self,
        query: Vec<f32>,
        k: usize,
        exclude: Option<String>,
    ) -> Result<Vec<Neighbour>, IndexError> {
        let inner = self.inner.clone();
        let scan = move || {
            let index = inner.read().unwrap_or_else(|p| p.into_inner());
            index.top_k(&query, k, exclude.as_deref())
        };
        match tokio::task::spawn_blocking(scan).await {
            Ok(found) => found,
            // the runtime is shutting down: nothing can be searched
            Err(_) => Ok(Vec::new()),
        }
    }

    /// Replaces the whole index with the stored embeddings of its model, read page
    /// by page in id order (the previous vectors serve searches until the new ones
    /// are all read).
    pub async fn load(&self, db: &DatabaseConnection) -> Result<LoadReport, DbErr> {
        self.load_in_pages(db, LOAD_PAGE).await
    }

    /// [`Self::load`], `page` rows per query.
    pub async fn load_in_pages(&self, db: &DatabaseConnection, page: u64) -> Result<LoadReport, DbErr> {
        let mut fresh = VectorIndex::new();
        let mut skipped = 0;
        let mut after: Option<String> = None;
        loop {
            let rows = store::embeddings_page(db, &self.model, after.as_deref(), page).await?;
            let Some(last) = rows.last() else {
                break;
            };
            after = Some(last.item_id.clone());
            for row in &rows {
                if let Err(err) = fresh.upsert(&row.item_id, &row.vector) {
                    skipped += 1;
                    tracing::warn!(item = %row.item_id, error = %err, "stored embedding left out of the index");
                }
            }
        }
        let loaded = fresh.len();
        *self.write() = fresh;
        Ok(LoadReport { loaded, skipped })
    }
}
