//! The test kit shared by the unit tests and the integration tests (`tests/api/`):
//! a fresh database per test (a SQLite file in a temporary directory, or a
//! UUID-named PostgreSQL database), removed when the fixture is dropped; a Redis
//! key prefix per test; and [`on_both_backends!`](crate::on_both_backends), which
//! runs a test once per backend.
//!
//! The services come from the `CASTWORK_TEST_*` variables ([`crate::config::env`])
//! with the local defaults. Compiled for the crate's own unit tests and, through
//! the `testing` feature (enabled for the test targets by the crate's
//! dev-dependency on itself), for the integration tests; never in a release build.
#![allow(clippy::expect_used, clippy::panic, reason = "a test fixture fails by panicking")]

use std::path::PathBuf;

use migration::MigratorTrait;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

use crate::config::env;

/// PostgreSQL server the tests create their databases on, when `CASTWORK_TEST_PG_URL` is unset.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Redis the tests use, when `CASTWORK_TEST_REDIS_URL` is unset.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// RabbitMQ the tests use, when `CASTWORK_TEST_AMQP_URL` is unset.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server the tests create their databases on (`CASTWORK_TEST_PG_URL`).
pub fn pg_admin_url() -> String {
    std::env::var(env::TEST_PG_URL).unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

/// The Redis the tests share (`CASTWORK_TEST_REDIS_URL`); each test keeps to its own
/// [`redis_prefix`] and never flushes it.
pub fn redis_url() -> String {
    std::env::var(env::TEST_REDIS_URL).unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned())
}

/// `host:port` of [`redis_url`], for tests that put a proxy in front of it.
pub fn redis_address() -> String {
    let url = url::Url::parse(&redis_url()).expect("CASTWORK_TEST_REDIS_URL is a URL");
    let host = url.host_str().expect("CASTWORK_TEST_REDIS_URL names a host");
    format!("{host}:{}", url.port().unwrap_or(6379))
}

/// A key prefix of one test's own in the shared Redis.
pub fn redis_prefix() -> String {
    format!("castwork-test-{}", uuid::Uuid::new_v4().simple())
}

/// The RabbitMQ the tests share (`CASTWORK_TEST_AMQP_URL`); each test keeps to its own
/// [`amqp_prefix`] of exchange and queue names.
pub fn amqp_url() -> String {
    std::env::var(env::TEST_AMQP_URL).unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned())
}

/// `host:port` of [`amqp_url`], for tests that put a proxy in front of it.
pub fn amqp_address() -> String {
    let url = url::Url::parse(&amqp_url()).expect("CASTWORK_TEST_AMQP_URL is a URL");
    let host = url.host_str().expect("CASTWORK_TEST_AMQP_URL names a host");
    let default_port = if url.scheme() == "amqps" { 5671 } else { 5672 };
    format!("{host}:{}", url.port().unwrap_or(default_port))
}

/// A prefix of exchange and queue names of one test's own in the shared RabbitMQ.
pub fn amqp_prefix() -> String {
    format!("castwork-test-{}", uuid::Uuid::new_v4().simple())
}

/// A temporary directory of one test's own (not removed by itself: see [`TestDatabase`]).
pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("castwork-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

/// A fresh, empty database of one test: a SQLite file in [`TestDatabase::dir`], or a
/// UUID-named database on the [`pg_admin_url`] server. Dropping it removes the
/// directory and drops the PostgreSQL database.
pub struct TestDatabase {
    /// The backend it is on.
    pub backend: Backend,
    /// The URL to connect to it.
    pub url: String,
    /// A temporary directory of the test's own (holds the SQLite file; tests may put
    /// files of their own there, such as a node's `data_dir`).
    pub dir: PathBuf,
    pg_database: Option<String>,
}

impl TestDatabase {
    /// Creates the directory and, on PostgreSQL, the database; nothing is migrated.
    pub async fn create(backend: Backend) -> Self {
        let dir = temp_dir();
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}?mode=rwc", dir.join("castwork.db").display());
                Self { backend, url, dir, pg_database: None }
            }
            Backend::Postgres => {
                let name = format!("castwork_test_{}", uuid::Uuid::new_v4().simple());
                let admin_url = pg_admin_url();
                let Some((server, _)) = admin_url.rsplit_once('/') else {
                    panic!("CASTWORK_TEST_PG_URL must end in /<database>: {admin_url}");
                };
                let url = format!("{server}/{name}");
                // the fixture exists before the database does, so a failure below still cleans up
                let database = Self { backend, url, dir, pg_database: Some(name.clone()) };
                let admin = Database::connect(admin_url.as_str()).await.expect("PostgreSQL is reachable");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .expect("the test database is created");
                let _ = admin.close().await;
                database
            }
        }
    }

    /// Creates the database and runs every migration on it.
    pub async fn migrated(backend: Backend) -> (Self, DatabaseConnection) {
        let database = Self::create(backend).await;
        let db = database.connect().await;
        migration::Migrator::up(&db, None).await.expect("migrations run");
        (database, db)
    }

    /// A new connection pool to it.
    pub async fn connect(&self) -> DatabaseConnection {
        Database::connect(self.url.as_str()).await.expect("the test database accepts connections")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(name) = self.pg_database.take() {
            // on a thread of its own: Drop cannot await, and the test's runtime may be ending
            let _ = std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                    return;
                };
                runtime.block_on(async move {
                    if let Ok(admin) = Database::connect(pg_admin_url()).await {
                        let _ = admin
                            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .await;
                        let _ = admin.close().await;
                    }
                });
            })
            .join();
        }
    }
}

/// A fresh, migrated SQLite database: the unit tests' usual fixture.
pub struct TempSqlite {
    /// The connection.
    pub db: DatabaseConnection,
    /// The directory that holds the database file (tests may put files of their own there).
    pub dir: PathBuf,
    _database: TestDatabase,
}

impl TempSqlite {
    /// Creates the database and runs every migration.
    pub async fn new() -> Self {
        let (database, db) = TestDatabase::migrated(Backend::Sqlite).await;
        Self { db, dir: database.dir.clone(), _database: database }
    }
}

/// Runs async test functions once per backend, as `<name>::sqlite` and
/// `<name>::postgres`, on a two-worker runtime.
///
/// - `on_both_backends!(a, b)`: `async fn a(backend: Backend)` is called with each
///   [`Backend`].
/// - `on_both_backends!(setup => a, b)`: `a` is called with `setup(backend).await`
///   (a fixture built per backend).
///
/// The functions and `setup` are looked up in the module that invokes the macro.
#[macro_export]
macro_rules! on_both_backends {
    ($setup:ident => $($case:ident),+ $(,)?) => {
        $(
            mod $case {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$case(super::$setup($crate::db::testing::Backend::Sqlite).await).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$case(super::$setup($crate::db::testing::Backend::Postgres).await).await
                }
            }
        )+
    };
    ($($case:ident),+ $(,)?) => {
        $(
            mod $case {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$case($crate::db::testing::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$case($crate::db::testing::Backend::Postgres).await
                }
            }
        )+
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn tables(db: &DatabaseConnection) -> i64 {
        let sql = match db.get_database_backend() {
            sea_orm::DbBackend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'items'"
            }
            _ => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'items'",
        };
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(db.get_database_backend(), sql))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index(0).unwrap()
    }

    async fn a_migrated_database_is_removed_when_dropped(backend: Backend) {
        let (database, db) = TestDatabase::migrated(backend).await;
        assert_eq!(database.backend, backend);
        assert_eq!(tables(&db).await, 1, "migrated");
        let (url, dir) = (database.url.clone(), database.dir.clone());
        assert!(dir.is_dir());
        db.close().await.unwrap();
        drop(database);
        assert!(!dir.exists(), "the directory is removed");
        if backend == Backend::Postgres {
            let gone = Database::connect(url.as_str()).await;
            assert!(gone.is_err(), "the PostgreSQL database is dropped");
        }
    }

    crate::on_both_backends!(a_migrated_database_is_removed_when_dropped);

    #[test]
    fn redis_settings_come_from_the_environment_or_the_local_defaults() {
        if std::env::var_os(env::TEST_REDIS_URL).is_none() {
            assert_eq!(redis_url(), DEFAULT_REDIS_URL);
            assert_eq!(redis_address(), "127.0.0.1:6379");
        }
        assert_ne!(redis_prefix(), redis_prefix(), "a prefix per test");
    }
}
