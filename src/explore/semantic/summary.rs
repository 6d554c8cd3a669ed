//! An item's summary: two sentences by the configured chat model, generated once
//! and stored in `item_summaries`, generated again only when the item's text
//! changes (its `text_hash`) or another chat model is configured.
//!
//! A request reads the item (through the Explore cache), then the stored summary
//! through the cache under a key holding the text's hash and the model, so an
//! edit leads to a new key and never to a stale summary. When none is stored the
//! summary is generated: concurrent requests for one item share one generation
//! ([`super::flights::Flights`]), on every node whatever the cache's settings.
//! The generation is not a cache load itself, because a load is given up after
//! `cache.load_timeout_ms` and a small model on a busy CPU may take longer; once
//! stored, the cache's negative entry for the key is evicted (on every node).

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::service::{Semantic, SemanticError};
use super::store;
use super::text::{ItemText, ModelInput, text_hash};
use crate::cache::format::CachedValue;
use crate::cache::{LoadError, Loader};
use crate::db::entities::item_summary;
use crate::explore::ExploreError;
use crate::explore::cached::{ReadError, from_cache, to_load_error};
use crate::inference::{CachePolicy, ChatCall, ChatMessage, Role, Sampling};
use crate::metrics;

/// Most tokens a summary is given.
pub const SUMMARY_MAX_TOKENS: u32 = 96;

const SYSTEM_PROMPT: &str = "You summarise scientific papers for a catalogue. Answer with the summary only.";
const USER_PROMPT: &str = "Summarise this paper in two sentences.";

/// An item's summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GeneratedSummary {
    #[schema(example = "2506.20941")]
    pub item_id: String,
    /// Two sentences (the model's words, whitespace tidied).
    pub summary: String,
    /// The model that wrote it.
    #[schema(example = "smollm2-135m-instruct")]
    pub model: String,
    /// When it was generated.
    pub generated_at: DateTime<Utc>,
    /// True when it was generated before this request (stored); false when this
    /// request waited for its generation.
    pub cached: bool,
}

impl GeneratedSummary {
    fn of(row: item_summary::Model) -> Self {
        Self {
            item_id: row.item_id,
            summary: row.summary,
            model: row.model,
            generated_at: row.created_at,
            cached: true,
        }
    }

    /// As served to a request that arrived at `asked_at`.
    fn served(mut self, asked_at: DateTime<Utc>) -> Self {
        self.cached = self.generated_at < asked_at;
        self
    }
}

/// The chat request that summarises `input`.
pub fn summary_call(model: &str, input: &ModelInput) -> ChatCall {
    ChatCall {
        model: model.to_owned(),
        messages: vec![
            ChatMessage::new(Role::System, SYSTEM_PROMPT),
            ChatMessage::new(Role::User, format!("{USER_PROMPT}\n\n{}", input.text)),
        ],
        sampling: Sampling::greedy(SUMMARY_MAX_TOKENS),
        cache: CachePolicy::Use,
    }
}

/// What a summary depends on, the item, its text and the model, as a cache key's
/// identity (a hash: ids may hold any character an id allows).
fn summary_identity(id: &str, hash: &str, model: &str) -> String {
    text_hash(&format!("{id}\n{hash}\n{model}"))
}

/// The model's answer as a summary: whitespace runs made one space; an answer cut
/// by the token limit is cut back to its last whole sentence when it has one.
pub fn tidy(answer: &str, cut_short: bool) -> String {
    let text = answer.split_whitespace().collect::<Vec<_>>().join(" ");
    if !cut_short {
        return text;
    }
    match text.rfind(['.', '!', '?']) {
        Some(end) if end > 0 => text[..=end].to_owned(),
        _ => text,
    }
}

impl Semantic {
    /// The summary of item `id`: stored, or generated now.
    #[tracing::instrument(skip_all, fields(item = %id))]
    pub async fn summary(&self, id: &str) -> Result<GeneratedSummary, SemanticError> {
        let asked_at = Utc::now();
        let item = self.item(id).await?;
        let input = ItemText { id: item.id, title: item.title, body: item.body }.summary_input();
        let model = self.inference.chat_model().to_owned();
        let identity = summary_identity(id, &input.hash, &model);
        if let Some(stored) = self.stored_summary(id, &input.hash, &model, &identity).await? {
            metrics::explore_summary("stored");
            return Ok(stored.served(asked_at));
        }
        Ok(self.ensure_summary(id.to_owned(), input).await?.served(asked_at))
    }

    /// The summary of item `id` whose summary text is `input`: the one stored for
    /// this text and the configured chat model, else generated now (joining a
    /// generation already under way for it) and stored.
    pub async fn ensure_summary(
        &self,
        id: String,
        input: ModelInput,
    ) -> Result<GeneratedSummary, SemanticError> {
        let model = self.inference.chat_model().to_owned();
        let identity = summary_identity(&id, &input.hash, &model);
        let semantic = self.clone();
        let generated =
            self.summaries.run(&identity, move || Box::pin(semantic.generate(id, input, model))).await;
        if let Some(cache) = self.explore.cache() {
            // a read before the summary was stored cached a miss (briefly): evict it, on every node
            let key = cache.stamped_key("summary", &[], &identity).await;
            cache.invalidate(&[], vec![key]).await;
        }
        generated
    }

    /// The stored summary when current, through the cache when there is one.
    async fn stored_summary(
        &self,
        id: &str,
        hash: &str,
        model: &str,
        identity: &str,
    ) -> Result<Option<GeneratedSummary>, SemanticError> {
        let db = self.service().db().clone();
        let (id, hash, model) = (id.to_owned(), hash.to_owned(), model.to_owned());
        let read = move || {
            let (db, id, hash, model) = (db.clone(), id.clone(), hash.clone(), model.clone());
            async move {
                let row = store::summary(&db, &id).await?;
                Ok::<_, sea_orm::DbErr>(row.filter(|r| r.text_hash == hash && r.model == model))
            }
        };
        let Some(cache) = self.explore.cache() else {
            return Ok(read().await?.map(GeneratedSummary::of));
        };
        let loader: Loader = Arc::new(move || {
            let read = read.clone();
            Box::pin(async move {
                match read().await.map_err(|e| to_load_error(ExploreError::Database(e)))? {
                    Some(row) => {
                        let body = serde_json::to_vec(&GeneratedSummary::of(row)).map_err(LoadError::new)?;
                        Ok(CachedValue { body: Bytes::from(body), etag: None, not_found: false })
                    }
                    None => Ok(CachedValue { body: Bytes::new(), etag: None, not_found: true }),
                }
            }) as BoxFuture<'static, _>
        });
        let key = cache.stamped_key("summary", &[], identity).await;
        let value = cache.get(key, self.summary_ttl, loader).await.map_err(from_cache)?;
        if value.not_found {
            return Ok(None);
        }
        let summary = serde_json::from_slice(&value.body).map_err(|e| {
            SemanticError::Read(Arc::new(ReadError::Internal(format!("a cached summary: {e}"))))
        })?;
        Ok(Some(summary))
    }

    /// Generates and stores the summary of `id`, unless one for this text and
    /// model was stored meanwhile (by another node).
    async fn generate(
        self,
        id: String,
        input: ModelInput,
        model: String,
    ) -> Result<GeneratedSummary, SemanticError> {
        let db = self.service().db();
        if let Some(row) =
            store::summary(db, &id).await?.filter(|r| r.text_hash == input.hash && r.model == model)
        {
            return Ok(GeneratedSummary::of(row));
        }
        let answer = match self.inference.chat(summary_call(&model, &input)).await {
            Ok(answer) => answer,
            Err(err) => {
                metrics::explore_summary("error");
                return Err(err.into());
            }
        };
        let cut_short = answer.response.finish == crate::inference::backend::FinishReason::Length;
        let summary = tidy(&answer.response.text, cut_short);
        if summary.is_empty() {
            metrics::explore_summary("error");
            return Err(SemanticError::BadAnswer("the summary is empty".to_owned()));
        }
        let row = item_summary::Model {
            item_id: id.clone(),
            text_hash: input.hash,
            model,
            summary,
            created_at: Utc::now(),
        };
        if !store::save_summary(db, &row).await? {
            return Err(SemanticError::NotFound(id));
        }
        metrics::explore_summary("generated");
        tracing::info!(item = %id, model = %row.model, "summary generated");
        Ok(GeneratedSummary { cached: false, ..GeneratedSummary::of(row) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_cut_short_ends_at_its_last_sentence() {
        assert_eq!(tidy("  One.\n Two  three. ", false), "One. Two three.");
        assert_eq!(tidy("One. Two is cut", true), "One.");
        assert_eq!(tidy("No sentence end", true), "No sentence end");
        assert_eq!(tidy("Done? Yes! And", true), "Done? Yes!");
    }

    #[test]
    fn the_prompt_holds_the_item_text_and_decodes_greedily() {
        let input = ItemText { id: "a".into(), title: "Graph nets".into(), body: "We study graphs.".into() }
            .summary_input();
        let call = summary_call("chat", &input);
        assert_eq!(call.model, "chat");
        assert!(call.messages[1].content.ends_with("Graph nets\n\nWe study graphs."));
        assert!(call.sampling.is_deterministic());
        assert_eq!(call.sampling.max_tokens, SUMMARY_MAX_TOKENS);
    }
}
