//! [`Probe`]: how a concern tells the HealthActor about a dependency it needs, and
//! [`DatabaseProbe`], the shared database's. Every concern implements it for its
//! own dependencies (the cache for Redis; the queue and inference next).

use futures::future::BoxFuture;
use sea_orm::DatabaseConnection;

/// A dependency check.
pub trait Probe: Send + Sync + 'static {
    /// Component name in `/health`.
    fn component(&self) -> &str;
    /// Whether the node cannot serve without it (a critical component down makes the node `down`).
    fn critical(&self) -> bool;
    /// One check; `Err` carries a short description of what failed.
    fn check(&self) -> BoxFuture<'static, Result<(), String>>;
}

/// Pings the shared database.
pub struct DatabaseProbe {
    db: DatabaseConnection,
}

impl DatabaseProbe {
    /// A probe of this connection pool.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

impl Probe for DatabaseProbe {
    fn component(&self) -> &str {
        "database"
    }
    fn critical(&self) -> bool {
        true
    }
    fn check(&self) -> BoxFuture<'static, Result<(), String>> {
        let db = self.db.clone();
        Box::pin(async move { db.ping().await.map_err(|e| e.to_string()) })
    }
}
