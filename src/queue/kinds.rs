//! The job kinds a node registers at start ([`handlers`]).

pub mod noop;

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
}

/// Every kind this node runs (`noop_sleep` only with `queue.test_jobs`).
pub fn handlers(deps: &KindDeps) -> Handlers {
    let mut handlers = Handlers::default();
    if deps.settings.queue.test_jobs {
        handlers.register(noop::NoopSleep);
    }
    handlers
}
