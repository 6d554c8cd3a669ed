//! [`Semantic`]: the Explore reads that need a model (an item's summary, related
//! items, semantic and hybrid search), over the catalogue, the inference handle
//! and the node's [`SharedIndex`]. Handlers call it; it holds no SQL of its own
//! (that is `store.rs`).

use std::sync::Arc;
use std::time::Duration;

use sea_orm::DbErr;

use super::SharedIndex;
use super::flights::Flights;
use super::index::IndexError;
use super::store::{self, StoredEmbedding};
use super::summary::GeneratedSummary;
use super::text::ItemText;
use crate::explore::cached::{CachedExplore, ReadError};
use crate::explore::model::Item;
use crate::explore::{ExploreError, ExploreService};
use crate::inference::{Inference, InferenceError};

/// Why a semantic read failed. Cheap to clone: one summary's generation answers
/// every request that joined it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SemanticError {
    /// No item with that id.
    #[error("no item with id '{0}'")]
    NotFound(String),
    /// A parameter is out of range or malformed.
    #[error("{0}")]
    BadQuery(String),
    /// The model could not answer.
    #[error(transparent)]
    Inference(#[from] InferenceError),
    /// The model answered, but not with what was asked (no text, a vector too few).
    #[error("the model's answer is unusable: {0}")]
    BadAnswer(String),
    /// A vector does not fit the index (the embedding model changed its dimension).
    #[error("the semantic index refused a vector: {0}")]
    Index(#[from] IndexError),
    /// A read through the Explore cache failed.
    #[error(transparent)]
    Read(Arc<ReadError>),
    /// The database failed.
    #[error("database error: {0}")]
    Database(Arc<DbErr>),
}

impl From<DbErr> for SemanticError {
    fn from(err: DbErr) -> Self {
        Self::Database(Arc::new(err))
    }
}

impl From<ReadError> for SemanticError {
    fn from(err: ReadError) -> Self {
        match err {
            ReadError::Explore(inner) => match inner.as_ref() {
                ExploreError::NotFound(id) => Self::NotFound(id.clone()),
                ExploreError::BadQuery(message) => Self::BadQuery(message.clone()),
                _ => Self::Read(Arc::new(ReadError::Explore(inner))),
            },
            other => Self::Read(Arc::new(other)),
        }
    }
}

impl From<ExploreError> for SemanticError {
    fn from(err: ExploreError) -> Self {
        Self::from(ReadError::Explore(Arc::new(err)))
    }
}

/// Explore's reads on inference. Cheap to clone.
#[derive(Clone)]
pub struct Semantic {
    pub(super) explore: CachedExplore,
    pub(super) inference: Inference,
    pub(super) index: SharedIndex,
    pub(super) summaries: Arc<Flights<Result<GeneratedSummary, SemanticError>>>,
    pub(super) summary_ttl: Duration,
}

impl Semantic {
    /// The reads over `explore`, `inference` and `index`; stored summaries stay in
    /// the Explore cache for `summary_ttl`.
    pub fn new(
        explore: CachedExplore,
        inference: Inference,
        index: SharedIndex,
        summary_ttl: Duration,
    ) -> Self {
        Self { explore, inference, index, summaries: Arc::default(), summary_ttl }
    }

    /// Reads over `explore` and `inference` with an index of their own, for
    /// what runs outside a node (tests, benchmarks).
    pub fn detached(explore: CachedExplore, inference: Inference) -> Self {
        let index = SharedIndex::new(inference.embedding_model());
        let ttl = explore.ttls().summary;
        Self::new(explore, inference, index, ttl)
    }

    /// The database pool.
    pub fn db(&self) -> &sea_orm::DatabaseConnection {
        self.explore.service().db()
    }

    /// The semantic index.
    pub fn index(&self) -> &SharedIndex {
        &self.index
    }

    /// The inference handle.
    pub fn inference(&self) -> &Inference {
        &self.inference
    }

    pub(super) fn service(&self) -> &ExploreService {
        self.explore.service()
    }

    /// The item `id` through the Explore cache; [`SemanticError::NotFound`] when there is none.
    pub(super) async fn item(&self, id: &str) -> Result<Item, SemanticError> {
        let cached = self.explore.item(id).await?;
        if cached.not_found {
            return Err(SemanticError::NotFound(id.to_owned()));
        }
        serde_json::from_slice(&cached.body)
            .map_err(|e| SemanticError::Read(Arc::new(ReadError::Internal(format!("a cached item: {e}")))))
    }

    /// The normalised vector of item `id`: from the index, else its stored
    /// embedding when current, else computed now (and stored, and indexed).
    pub(super) async fn item_vector(&self, id: &str) -> Result<Vec<f32>, SemanticError> {
        if let Some(vector) = self.index.vector(id) {
            return Ok(vector);
        }
        let item = self.item(id).await?;
        let input = ItemText { id: item.id, title: item.title, body: item.body }.embedding_input();
        let model = self.index.model().to_owned();
        let stored = store::embedding(self.service().db(), id).await?;
        let vector = match stored {
            Some(row) if row.model == model && row.text_hash == input.hash => row.vector,
            _ => {
                let vector = self.embed_one(input.text).await?;
                let row = StoredEmbedding {
                    item_id: id.to_owned(),
                    model,
                    text_hash: input.hash,
                    vector: vector.clone(),
                };
                store::save_embeddings(self.service().db(), &[row], chrono::Utc::now()).await?;
                crate::metrics::explore_embeddings("request", 1);
                vector
            }
        };
        self.index.upsert(id, &vector)?;
        self.index.vector(id).ok_or_else(|| SemanticError::NotFound(id.to_owned()))
    }

    /// The embedding of one text by the index's model.
    pub(super) async fn embed_one(&self, text: String) -> Result<Vec<f32>, SemanticError> {
        let mut vectors = self.inference.embed(self.index.model(), vec![text]).await?.vectors;
        match (vectors.pop(), vectors.is_empty()) {
            (Some(vector), true) => Ok(vector),
            _ => Err(SemanticError::BadAnswer("not exactly one vector for one text".to_owned())),
        }
    }
}
