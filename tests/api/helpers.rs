//! `spawn_app`: a node on port 0 with its own database.

use std::path::{Path, PathBuf};
use std::time::Duration;

use castwork::config::{Environment, Secret, Settings};
use castwork::startup::{Application, Hooks};
use figment::providers::Serialized;
use sea_orm::Database;
use serde_json::Value;
use tokio::time::Instant;

pub use castwork::db::testing::{Backend, pg_admin_url, redis_address, redis_prefix, redis_url};
use castwork::db::testing::{TestDatabase, temp_dir};

pub const ADMIN_PASSWORD: &str = "bootstrap-admin-password";

/// The password [`TestApp::user_token`] gives a user: strong enough for
/// `auth.password_min_score` (a `{username}-password` is not: the username counts against it).
pub fn user_password(username: &str) -> String {
    format!("{username}-castwork-test-secret")
}
pub const JWT_SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";

/// A running node and what a test needs to talk to it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    /// The node's database, for assertions the API cannot make (outbox rows).
    pub database_url: String,
    /// The node's job queue (submit, read), for tests that run jobs without the HTTP API.
    pub queue: castwork::queue::Queue,
    /// The node's inference handle, for its own counters (cancelled generations).
    pub inference: castwork::inference::Inference,
    /// The node's data directory.
    pub data_dir: PathBuf,
    /// Fires the node's shutdown signal (as SIGTERM would).
    stop: std::sync::Arc<tokio::sync::Notify>,
    serving: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    _database: Option<TestDatabase>,
    _dir: Option<TempDir>,
}

/// Removes a node's own directory when dropped (a peer's: the first node's
/// [`TestDatabase`] removes its own).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Settings for tests: the embedded defaults, `config/test.toml`, port 0, a temp data dir.
pub fn test_settings(temp_dir: &Path, database_url: &str) -> Settings {
    let config_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let figment = Settings::figment(&Environment::Test, &config_dir)
        .merge(Serialized::default("server.port", 0))
        .merge(Serialized::default("data_dir", temp_dir.display().to_string()))
        .merge(Serialized::default("database.url", database_url))
        .merge(Serialized::default("database.max_connections", 5))
        .merge(Serialized::default("auth.jwt_secret", JWT_SECRET));
    let mut settings =
        Settings::from_figment_in(figment, Environment::Test).expect("test settings are valid");
    settings.bootstrap_admin_password = Secret::new(ADMIN_PASSWORD);
    settings
}

/// A node on SQLite with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Backend::Sqlite, |_| {}).await
}

/// A node on `backend`, with `tweak` applied to its settings before it starts.
pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let database = TestDatabase::create(backend).await;
    let (url, dir) = (database.url.clone(), database.dir.clone());
    start_node(url, dir, Some(database), None, Hooks::default(), tweak).await
}

/// [`spawn_app_with`], with `hooks` handed to the node.
pub async fn spawn_app_hooked(backend: Backend, hooks: Hooks, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let database = TestDatabase::create(backend).await;
    let (url, dir) = (database.url.clone(), database.dir.clone());
    start_node(url, dir, Some(database), None, hooks, tweak).await
}

/// A second node on `first`'s database (a cluster of two sharing one database).
pub async fn spawn_peer(first: &TestApp, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = temp_dir();
    start_node(first.database_url.clone(), dir.clone(), None, Some(TempDir(dir)), Hooks::default(), tweak)
        .await
}

async fn start_node(
    url: String,
    data_dir: PathBuf,
    database: Option<TestDatabase>,
    dir: Option<TempDir>,
    hooks: Hooks,
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    let database_url = url.clone();
    let mut settings = test_settings(&data_dir, &url);
    tweak(&mut settings);
    let app = Application::build_with(settings, hooks).await.expect("app builds");
    let queue = app.runtime().queue.clone();
    let inference = app.runtime().inference.clone();
    let address = format!("http://127.0.0.1:{}", app.port());
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let signal = std::sync::Arc::clone(&stop);
    let serving = tokio::spawn(async move {
        app.run_until(async move { signal.notified().await }).await.expect("the node stops cleanly");
    });
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let serving = std::sync::Mutex::new(Some(serving));
    let test_app = TestApp {
        address,
        client,
        database_url,
        queue,
        inference,
        data_dir,
        stop,
        serving,
        _database: database,
        _dir: dir,
    };
    test_app.wait_ready().await;
    test_app
}

impl TestApp {
    /// Sends the node its shutdown signal and waits until it has stopped.
    pub async fn shut_down(&self) {
        self.stop.notify_one();
        let serving = self.serving.lock().unwrap().take();
        if let Some(serving) = serving {
            serving.await.expect("the node's task ends without panicking");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Polls `/health/ready` until 200 (the first database probe has landed).
    pub async fn wait_ready(&self) {
        let ok = poll_until(Duration::from_secs(10), || async {
            let r = self.client.get(self.url("/health/ready")).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
        assert!(ok.is_some(), "node did not become ready");
    }

    /// Logs in; returns the whole token response.
    pub async fn login(&self, username: &str, password: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/auth/login"))
            .json(&serde_json::json!({ "username": username, "password": password }))
            .send()
            .await
            .expect("login request")
    }

    /// Logs in; returns the access and refresh tokens (the login must succeed).
    pub async fn login_pair(&self, username: &str, password: &str) -> (String, String) {
        let response = self.login(username, password).await;
        assert_eq!(response.status(), 200, "login as {username}");
        let pair: Value = response.json().await.expect("token json");
        let token = |name: &str| pair[name].as_str().expect("a token").to_owned();
        (token("access_token"), token("refresh_token"))
    }

    /// `POST /api/v1/auth/refresh`: the status and the JSON body (`null` when there is none).
    pub async fn refresh(&self, refresh_token: &str) -> (u16, Value) {
        let response = self
            .client
            .post(self.url("/api/v1/auth/refresh"))
            .json(&serde_json::json!({ "refresh_token": refresh_token }))
            .send()
            .await
            .expect("refresh request");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    /// `POST /api/v1/auth/logout` with `access` as the bearer: the status.
    pub async fn logout(&self, access: &str, refresh_token: &str) -> u16 {
        self.client
            .post(self.url("/api/v1/auth/logout"))
            .bearer_auth(access)
            .json(&serde_json::json!({ "refresh_token": refresh_token }))
            .send()
            .await
            .expect("logout request")
            .status()
            .as_u16()
    }

    /// An access token for the bootstrap admin.
    pub async fn admin_token(&self) -> String {
        self.token_for("admin", ADMIN_PASSWORD).await
    }

    /// An access token for a user.
    pub async fn token_for(&self, username: &str, password: &str) -> String {
        let response = self.login(username, password).await;
        assert_eq!(response.status(), 200, "login as {username}");
        let body: Value = response.json().await.expect("token json");
        body["access_token"].as_str().expect("access_token").to_owned()
    }

    /// Creates a user through the admin API and returns an access token for it.
    pub async fn user_token(&self, username: &str, role: &str) -> String {
        let admin = self.admin_token().await;
        let password = user_password(username);
        let response = self
            .client
            .post(self.url("/api/v1/admin/users"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({ "username": username, "password": password, "role": role }))
            .send()
            .await
            .expect("create user");
        assert_eq!(response.status(), 201, "create user {username}");
        self.token_for(username, &password).await
    }

    pub async fn get_json(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// The actor tree as JSON.
    pub async fn tree(&self, token: &str) -> Value {
        let (status, body) = self.get_json("/api/v1/admin/actors", Some(token)).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn chaos(&self, token: &str, actor: &str, action: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/admin/chaos"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "actor": actor, "action": action }))
            .send()
            .await
            .expect("chaos request")
    }
}

/// Finds a node by name in a JSON actor tree.
pub fn find_node<'a>(tree: &'a Value, name: &str) -> Option<&'a Value> {
    if tree["name"] == name {
        return Some(tree);
    }
    tree["children"].as_array()?.iter().find_map(|c| find_node(c, name))
}

/// Retries `check` until it yields a value or the deadline passes.
pub async fn poll_until<T, F, Fut>(deadline: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestApp {
    /// Counts rows of a simple `SELECT COUNT(*) FROM <table> WHERE <column> = <value>` query.
    pub async fn count_rows(&self, table: &str, column: &str, value: &str) -> i64 {
        use sea_orm::{ConnectionTrait, Statement};
        let db = Database::connect(&self.database_url).await.expect("connect to the test database");
        let backend = db.get_database_backend();
        let placeholder = if backend == sea_orm::DbBackend::Postgres { "$1" } else { "?" };
        let sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE {column} = {placeholder}");
        let row = db
            .query_one_raw(Statement::from_sql_and_values(backend, sql, [value.into()]))
            .await
            .expect("count query")
            .expect("a row");
        let n: i64 = row.try_get("", "n").expect("count column");
        db.close().await.ok();
        n
    }

    /// Outbox rows the relay has not published yet.
    pub async fn unpublished_outbox_rows(&self) -> i64 {
        use sea_orm::{ConnectionTrait, Statement};
        let db = Database::connect(&self.database_url).await.expect("connect to the test database");
        let sql = "SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL";
        let row = db
            .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
            .await
            .expect("count query")
            .expect("a row");
        let n: i64 = row.try_get("", "n").expect("count column");
        db.close().await.ok();
        n
    }
}

/// The repository's model files (`scripts/fetch-models.sh` fills it).
pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// A node serving the local models (which must have been fetched).
pub async fn spawn_inference_app(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let missing = castwork::inference::local::missing_files(&models_dir());
    assert!(
        missing.is_empty(),
        "model files missing: {missing:?}; run scripts/fetch-models.sh (make test does)"
    );
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.inference.local.enabled = true;
        s.inference.local.models_dir = models_dir();
        tweak(s);
    })
    .await;
    app.wait_inference().await;
    app
}

impl TestApp {
    /// Waits until the node's local models are loaded (`inference` up in `/health`).
    pub async fn wait_inference(&self) {
        let ready = poll_until(Duration::from_secs(120), || async {
            let (_, body) = self.get_json("/health", None).await;
            (body["components"]["inference-local"]["status"] == "ok").then_some(())
        })
        .await;
        assert!(ready.is_some(), "the local models did not load: {}", self.get_json("/health", None).await.1);
    }
}

/// A node with the embedded sample catalogue imported.
pub async fn spawn_app_with_sample(backend: Backend) -> TestApp {
    spawn_app_with(backend, |s| s.explore.import_sample_on_start = true).await
}

/// Percent-encodes a path segment (item ids may contain `/`).
pub fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

/// Deletes a test's Redis keys (`{prefix}:*`) when dropped. Uses `redis-cli`,
/// which ships with Redis; without it the keys are left to their TTLs.
pub struct RedisKeys(pub String);

impl Drop for RedisKeys {
    fn drop(&mut self) {
        let url = redis_url();
        let pattern = format!("{}:*", self.0);
        let Ok(listed) = std::process::Command::new("redis-cli")
            .args(["-u", &url, "--scan", "--pattern", &pattern])
            .output()
        else {
            return;
        };
        let keys: Vec<String> = String::from_utf8_lossy(&listed.stdout).lines().map(str::to_owned).collect();
        for chunk in keys.chunks(500) {
            let _ = std::process::Command::new("redis-cli").args(["-u", &url, "del"]).args(chunk).output();
        }
    }
}
