//! Related items, semantic and hybrid search.
//!
//! - Related: the nearest neighbours of the item's own vector (itself left out).
//! - Semantic: the query is embedded by the index's model and ranked against the
//!   index.
//! - Hybrid: the first [`HYBRID_DEPTH`] full-text matches (the `mode=text` ranking,
//!   through the cache) and the first [`HYBRID_DEPTH`] by meaning, fused by
//!   reciprocal rank ([`super::fusion`]). A query with no searchable words (stop
//!   words only) still ranks by meaning.
//!
//! Semantic and hybrid answers are one page (`limit` results, no cursor): beyond
//! the first few dozen, ranks by meaning say little.

use std::collections::HashMap;

use super::fusion::{RRF_K, reciprocal_rank_fusion};
use super::index::Neighbour;
use super::service::{Semantic, SemanticError};
use crate::explore::model::{ItemSummary, MAX_LIMIT, Page, SearchHit};
use crate::metrics;

/// Candidates each ranking contributes to a hybrid search.
pub const HYBRID_DEPTH: u32 = 50;
/// Largest `limit` of related items.
pub const MAX_RELATED: u32 = 50;

impl Semantic {
    /// The `limit` items nearest in meaning to item `id`, best first, each with its
    /// cosine similarity as `score`.
    #[tracing::instrument(skip_all, fields(item = %id, limit))]
    pub async fn related(&self, id: &str, limit: u32) -> Result<Vec<ItemSummary>, SemanticError> {
        if !(1..=MAX_RELATED).contains(&limit) {
            return Err(SemanticError::BadQuery(format!(
                "limit must be between 1 and {MAX_RELATED} (got {limit})"
            )));
        }
        let vector = self.item_vector(id).await?;
        let found = self.index.nearest(vector, limit as usize, Some(id.to_owned())).await?;
        let scores: HashMap<String, f32> = found.iter().map(|n| (n.id.clone(), n.score)).collect();
        let ids: Vec<String> = found.into_iter().map(|n| n.id).collect();
        let mut items = self.service().summaries_of(&ids).await?;
        for item in &mut items {
            item.score = scores.get(&item.id).map(|s| f64::from(*s));
        }
        Ok(items)
    }

    /// The `limit` items nearest in meaning to `q`.
    async fn nearest_to_text(&self, q: &str, limit: u32) -> Result<Vec<Neighbour>, SemanticError> {
        let vector = self.embed_one(q.to_owned()).await?;
        Ok(self.index.nearest(vector, limit as usize, None).await?)
    }

    /// Items ranked by meaning: `score` is the cosine similarity to `q`.
    #[tracing::instrument(skip_all, fields(limit))]
    pub async fn semantic_search(&self, q: &str, limit: u32) -> Result<Page<SearchHit>, SemanticError> {
        check(q, limit)?;
        let found = self.nearest_to_text(q, limit).await?;
        let ids: Vec<String> = found.iter().map(|n| n.id.clone()).collect();
        let mut hits = self.service().unmarked_hits(&ids).await?;
        let ranks: HashMap<&str, (usize, f32)> =
            found.iter().enumerate().map(|(i, n)| (n.id.as_str(), (i + 1, n.score))).collect();
        for hit in &mut hits {
            if let Some((rank, score)) = ranks.get(hit.item.id.as_str()) {
                hit.item.score = Some(f64::from(*score));
                hit.semantic_rank = u32::try_from(*rank).ok();
            }
        }
        metrics::explore_semantic_search("semantic");
        Ok(Page { items: hits, next_cursor: None })
    }

    /// Full-text and semantic rankings fused by reciprocal rank: `score` is the
    /// fused score; `text_rank` and `semantic_rank` say where each ranking placed
    /// the item. Hits that matched the words keep their highlights.
    #[tracing::instrument(skip_all, fields(limit))]
    pub async fn hybrid_search(&self, q: &str, limit: u32) -> Result<Page<SearchHit>, SemanticError> {
        check(q, limit)?;
        let depth = HYBRID_DEPTH.max(limit).min(MAX_LIMIT);
        let (text, semantic) = tokio::join!(self.text_hits(q, depth), self.nearest_to_text(q, depth));
        let (text, semantic) = (text?, semantic?);
        let text_ids: Vec<&str> = text.iter().map(|h| h.item.id.as_str()).collect();
        let semantic_ids: Vec<&str> = semantic.iter().map(|n| n.id.as_str()).collect();
        let fused = reciprocal_rank_fusion(&[text_ids, semantic_ids], RRF_K);
        let fused: Vec<_> = fused.into_iter().take(limit as usize).collect();
        // hits the words found already have their highlights; the others are read now
        let mut by_id: HashMap<String, SearchHit> =
            text.into_iter().map(|h| (h.item.id.clone(), h)).collect();
        let missing: Vec<String> =
            fused.iter().filter(|f| !by_id.contains_key(&f.id)).map(|f| f.id.clone()).collect();
        for hit in self.service().unmarked_hits(&missing).await? {
            by_id.insert(hit.item.id.clone(), hit);
        }
        let rank = |r: Option<usize>| r.and_then(|r| u32::try_from(r).ok());
        let items = fused
            .into_iter()
            .filter_map(|f| {
                let mut hit = by_id.remove(&f.id)?;
                hit.item.score = Some(f.score);
                hit.text_rank = rank(f.ranks[0]);
                hit.semantic_rank = rank(f.ranks[1]);
                Some(hit)
            })
            .collect();
        metrics::explore_semantic_search("hybrid");
        Ok(Page { items, next_cursor: None })
    }

    /// The first `depth` full-text hits of `q` (none when `q` has no searchable words).
    async fn text_hits(&self, q: &str, depth: u32) -> Result<Vec<SearchHit>, SemanticError> {
        match self.explore.search(q, depth, None).await {
            Ok(cached) => {
                let page: Page<SearchHit> = serde_json::from_slice(&cached.body).map_err(|e| {
                    SemanticError::BadAnswer(format!("a cached search page does not parse: {e}"))
                })?;
                Ok(page.items)
            }
            Err(err) => match SemanticError::from(err) {
                SemanticError::BadQuery(_) => Ok(Vec::new()),
                other => Err(other),
            },
        }
    }
}

fn check(q: &str, limit: u32) -> Result<(), SemanticError> {
    if q.trim().is_empty() {
        return Err(SemanticError::BadQuery("q must not be empty".to_owned()));
    }
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(SemanticError::BadQuery(format!(
            "limit must be between 1 and {MAX_LIMIT} (got {limit})"
        )));
    }
    Ok(())
}
