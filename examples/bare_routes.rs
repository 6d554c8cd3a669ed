//! Bare axum routes for `scripts/bench/cache.sh`: the Explore bytes served with no
//! castwork middleware at all (no auth, request id, tracing, metrics, timeout),
//! so the benchmark can show what the middleware costs next to the cache.
//!
//! `GET /bare/hashmap/explore/items/{id}`, `/items`, `/search`: from a
//! `RwLock<HashMap>`; `GET /bare/fred/...`: a plain fred `GET`. Both read the
//! raw bytes castwork's own `/bench/fred/...` routes stored in Redis under
//! `{BARE_KEY_PREFIX}:bench:{item|list|search}:{id or raw query}` (run those
//! first); a key that is not there is a 404. The HashMap fills from Redis on a miss.
//!
//! Environment: `BARE_PORT` (8090), `BARE_REDIS_URL` (`redis://127.0.0.1:6379`),
//! `BARE_KEY_PREFIX` (`castwork`), `BARE_POOL_SIZE` (4).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use fred::clients::Pool;
use fred::interfaces::{ClientLike, KeysInterface};
use fred::types::config::{Config, ConnectionConfig, TcpConfig};

/// The same allocator as the castwork binary, so the comparison is of the routes.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Map = RwLock<HashMap<String, Bytes>>;

struct Bare {
    pool: Pool,
    prefix: String,
    items: Map,
    lists: Map,
    searches: Map,
}

#[derive(Clone, Copy)]
enum Kind {
    Item,
    List,
    Search,
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = env("BARE_PORT", "8090").parse()?;
    let config = Config::from_url(&env("BARE_REDIS_URL", "redis://127.0.0.1:6379"))?;
    let connection = ConnectionConfig {
        tcp: TcpConfig { nodelay: Some(true), ..TcpConfig::default() },
        ..ConnectionConfig::default()
    };
    let pool = Pool::new(config, None, Some(connection), None, env("BARE_POOL_SIZE", "4").parse()?)?;
    pool.init().await?;
    let prefix = env("BARE_KEY_PREFIX", "castwork");
    let bare = Arc::new(Bare {
        pool,
        prefix,
        items: Map::default(),
        lists: Map::default(),
        searches: Map::default(),
    });
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/bare/hashmap/explore/items", get(|s: S, RawQuery(q): RawQuery| hashmap(s, Kind::List, q)))
        .route(
            "/bare/hashmap/explore/items/{id}",
            get(|s: S, Path(id): Path<String>| hashmap(s, Kind::Item, Some(id))),
        )
        .route("/bare/hashmap/explore/search", get(|s: S, RawQuery(q): RawQuery| hashmap(s, Kind::Search, q)))
        .route("/bare/fred/explore/items", get(|s: S, RawQuery(q): RawQuery| fred(s, Kind::List, q)))
        .route(
            "/bare/fred/explore/items/{id}",
            get(|s: S, Path(id): Path<String>| fred(s, Kind::Item, Some(id))),
        )
        .route("/bare/fred/explore/search", get(|s: S, RawQuery(q): RawQuery| fred(s, Kind::Search, q)))
        .with_state(bare);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

fn json(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

type S = State<Arc<Bare>>;

fn redis_key(bare: &Bare, kind: Kind, key: &str) -> String {
    let kind = match kind {
        Kind::Item => "item",
        Kind::List => "list",
        Kind::Search => "search",
    };
    format!("{}:bench:{kind}:{key}", bare.prefix)
}

async fn get_raw(bare: &Bare, kind: Kind, key: &str) -> Result<Bytes, StatusCode> {
    match bare.pool.get::<Option<Bytes>, _>(redis_key(bare, kind, key)).await {
        Ok(Some(body)) => Ok(body),
        Ok(None) => Err(StatusCode::NOT_FOUND),
        Err(_) => Err(StatusCode::SERVICE_UNAVAILABLE),
    }
}

async fn hashmap(State(bare): S, kind: Kind, key: Option<String>) -> Response {
    let key = key.unwrap_or_default();
    let map = match kind {
        Kind::Item => &bare.items,
        Kind::List => &bare.lists,
        Kind::Search => &bare.searches,
    };
    let hit = map.read().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
    if let Some(body) = hit {
        return json(body);
    }
    match get_raw(&bare, kind, &key).await {
        Ok(body) => {
            map.write().unwrap_or_else(|e| e.into_inner()).insert(key, body.clone());
            json(body)
        }
        Err(status) => status.into_response(),
    }
}

async fn fred(State(bare): S, kind: Kind, key: Option<String>) -> Response {
    match get_raw(&bare, kind, &key.unwrap_or_default()).await {
        Ok(body) => json(body),
        Err(status) => status.into_response(),
    }
}
