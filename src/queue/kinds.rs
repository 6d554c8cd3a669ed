//! The job kinds a node registers at start ([`handlers`]).
//!
//! | kind | file | what |
//! |---|---|---|
//! | `import_catalog` | `import_catalog.rs` | the Explore import, from a file under `queue.import_dir` or uploaded lines |
//! | `warm_cache` | `warm_cache.rs` | the cache warm-up |
//! | `recompute_trending` | `recompute_trending.rs` | trending scores re-encoded under the configured half-life |
//! | `rebuild_search_index` | `rebuild_search_index.rs` | the full-text index rebuilt |
//! | `backup` | `backup.rs` | a consistent snapshot of the database to `<data_dir>/backups/` |
//! | `embed_items` | `embed_items.rs` | embeddings of the items that lack a current one (`derive.rs`: the walk) |
//! | `summarize_items` | `summarize_items.rs` | summaries of the items that lack a current one |
//! | `noop_sleep` | `noop.rs` | a controllable job for tests |

pub mod backup;
pub mod derive;
pub mod embed_items;
pub mod import_catalog;
pub mod noop;
pub mod rebuild_search_index;
pub mod recompute_trending;
pub mod summarize_items;
pub mod support;
pub mod warm_cache;

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use super::handler::Handlers;
use crate::config::Settings;
use crate::explore::ExploreService;
use crate::explore::cached::CachedExplore;

/// What the job kinds work with.
#[derive(Clone)]
pub struct KindDeps {
    pub settings: Arc<Settings>,
    pub db: DatabaseConnection,
    pub explore: ExploreService,
    pub cached: CachedExplore,
    /// Generation and embeddings (the summarize and embed kinds).
    pub inference: crate::inference::Inference,
    /// Explore's reads on inference and the node's semantic index.
    pub semantic: crate::explore::semantic::Semantic,
}

/// Every kind this node runs (`noop_sleep` only with `queue.test_jobs`).
pub fn handlers(deps: &KindDeps) -> Handlers {
    let mut handlers = Handlers::default();
    handlers.register(import_catalog::ImportCatalog::new(deps));
    handlers.register(warm_cache::WarmCache::new(deps.cached.clone()));
    handlers.register(recompute_trending::RecomputeTrending::new(
        deps.db.clone(),
        deps.settings.explore.trend_half_life_hours,
    ));
    handlers.register(rebuild_search_index::RebuildSearchIndex::new(deps.db.clone()));
    handlers.register(backup::Backup { settings: deps.settings.clone(), db: deps.db.clone() });
    handlers.register(embed_items::EmbedItems::new(deps.semantic.clone()));
    handlers.register(summarize_items::SummarizeItems::new(deps.semantic.clone()));
    if deps.settings.queue.test_jobs {
        handlers.register(noop::NoopSleep);
    }
    handlers
}
