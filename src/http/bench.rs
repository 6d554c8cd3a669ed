//! Benchmark-only routes (cargo feature `bench-routes`, off by default): the
//! same Explore bytes as `/api/v1/explore/...`, served through the same router,
//! middleware and auth, but without the cache. `scripts/bench/cache.sh`
//! measures them next to the cached routes, so the ratio isolates the cache path.
//!
//! | route | serves from |
//! |---|---|
//! | `GET /bench/hashmap/explore/items/{id}`, `/items`, `/search` | a `std::sync::RwLock<HashMap<String, Bytes>>` |
//! | `GET /bench/fred/explore/items/{id}`, `/items`, `/search` | a plain `fred` GET (no breaker, no value header) |
//!
//! Lists and searches are keyed by the raw query string. A miss calls the
//! [`crate::explore::ExploreService`] directly (`serde_json::to_vec`) and fills
//! the map, or `SET`s the raw bytes in Redis under `{key_prefix}:bench:...`.
//! The detail routes send the same view count as the real handler does.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use fred::clients::Pool;
use fred::interfaces::{ClientLike, KeysInterface};
use fred::types::Expiration;
use fred::types::config::{Config, ConnectionConfig, TcpConfig};
use tokio::sync::OnceCell;

use super::AppState;
use super::error::ApiError;
use super::explore::ListParams;
use super::extract::{ApiPath, Viewer, parse_query};
use crate::explore::views::ViewMsg;

/// How long the fred routes keep what they `SET`.
const FRED_TTL: Duration = Duration::from_secs(600);

type Map = RwLock<HashMap<String, Bytes>>;

#[derive(Default)]
struct Bench {
    items: Map,
    lists: Map,
    searches: Map,
    fred: OnceCell<Pool>,
}

/// Which page a bench route serves.
#[derive(Clone, Copy)]
enum Kind {
    Item,
    List,
    Search,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Item => "item",
            Self::List => "list",
            Self::Search => "search",
        }
    }
}

/// The bench routes, to be merged into the API router before its layers.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/bench/hashmap/explore/items", get(hashmap_list))
        .route("/bench/hashmap/explore/items/{id}", get(hashmap_item))
        .route("/bench/hashmap/explore/search", get(hashmap_search))
        .route("/bench/fred/explore/items", get(fred_list))
        .route("/bench/fred/explore/items/{id}", get(fred_item))
        .route("/bench/fred/explore/search", get(fred_search))
        .layer(Extension(Arc::new(Bench::default())))
}

fn read(map: &Map) -> RwLockReadGuard<'_, HashMap<String, Bytes>> {
    map.read().unwrap_or_else(|e| e.into_inner())
}

fn write(map: &Map) -> RwLockWriteGuard<'_, HashMap<String, Bytes>> {
    map.write().unwrap_or_else(|e| e.into_inner())
}

fn json_response(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

fn internal(err: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(err.to_string())
}

/// The page straight from the service, serialized.
async fn load(state: &AppState, kind: Kind, key: &str) -> Result<Bytes, ApiError> {
    let service = state.explore().service();
    let body = match kind {
        Kind::Item => match service.get(key).await? {
            Some(item) => serde_json::to_vec(&item),
            None => return Err(ApiError::NotFound(format!("no item with id '{key}'"))),
        },
        Kind::List => {
            let query = parse_query::<ListParams>(Some(key))?.into();
            serde_json::to_vec(&service.list(&query).await?)
        }
        Kind::Search => {
            let (mut q, mut limit, mut cursor) = (String::new(), 20, None);
            for (name, value) in url::form_urlencoded::parse(key.as_bytes()) {
                match name.as_ref() {
                    "q" => q = value.trim().to_owned(),
                    "limit" => {
                        limit = value.parse().map_err(|_| ApiError::bad_request("invalid_query", "limit"))?;
                    }
                    "cursor" => cursor = Some(value.into_owned()),
                    _ => {}
                }
            }
            serde_json::to_vec(&service.search(&q, limit, cursor.as_deref()).await?)
        }
    };
    body.map(Bytes::from).map_err(internal)
}

async fn from_map(state: &AppState, bench: &Bench, kind: Kind, key: &str) -> Result<Bytes, ApiError> {
    let map = match kind {
        Kind::Item => &bench.items,
        Kind::List => &bench.lists,
        Kind::Search => &bench.searches,
    };
    if let Some(body) = read(map).get(key) {
        return Ok(body.clone());
    }
    let body = load(state, kind, key).await?;
    write(map).insert(key.to_owned(), body.clone());
    Ok(body)
}

async fn pool(state: &AppState, bench: &Bench) -> Result<Pool, ApiError> {
    let redis = &state.settings().cache.redis;
    let pool = bench
        .fred
        .get_or_try_init(|| async {
            let config = Config::from_url(redis.url.expose()).map_err(internal)?;
            let connection = ConnectionConfig {
                tcp: TcpConfig { nodelay: Some(true), ..TcpConfig::default() },
                ..ConnectionConfig::default()
            };
            let pool =
                Pool::new(config, None, Some(connection), None, redis.pool_size.max(1)).map_err(internal)?;
            pool.init().await.map_err(internal)?;
            Ok::<_, ApiError>(pool)
        })
        .await?;
    Ok(pool.clone())
}

async fn from_fred(state: &AppState, bench: &Bench, kind: Kind, key: &str) -> Result<Bytes, ApiError> {
    let pool = pool(state, bench).await?;
    let redis_key = format!("{}:bench:{}:{key}", state.settings().cache.redis.key_prefix, kind.name());
    if let Some(body) = pool.get::<Option<Bytes>, _>(redis_key.as_str()).await.map_err(internal)? {
        return Ok(body);
    }
    let body = load(state, kind, key).await?;
    let ttl = i64::try_from(FRED_TTL.as_millis()).unwrap_or(i64::MAX);
    pool.set::<(), _, _>(redis_key, body.clone(), Some(Expiration::PX(ttl)), None, false)
        .await
        .map_err(internal)?;
    Ok(body)
}

async fn hashmap_item(
    State(state): State<AppState>,
    caller: Viewer,
    Extension(bench): Extension<Arc<Bench>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let body = from_map(&state, &bench, Kind::Item, &id).await?;
    state.runtime().views.cast(ViewMsg::Viewed { item: id, user: caller.principal.user_id });
    Ok(json_response(body))
}

async fn hashmap_list(
    State(state): State<AppState>,
    _caller: Viewer,
    Extension(bench): Extension<Arc<Bench>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    Ok(json_response(from_map(&state, &bench, Kind::List, raw.as_deref().unwrap_or("")).await?))
}

async fn hashmap_search(
    State(state): State<AppState>,
    _caller: Viewer,
    Extension(bench): Extension<Arc<Bench>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    Ok(json_response(from_map(&state, &bench, Kind::Search, raw.as_deref().unwrap_or("")).await?))
}

async fn fred_item(
    State(state): State<AppState>,
    caller: Viewer,
    Extension(bench): Extension<Arc<Bench>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let body = from_fred(&state, &bench, Kind::Item, &id).await?;
    state.runtime().views.cast(ViewMsg::Viewed { item: id, user: caller.principal.user_id });
    Ok(json_response(body))
}

async fn fred_list(
    State(state): State<AppState>,
    _caller: Viewer,
    Extension(bench): Extension<Arc<Bench>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    Ok(json_response(from_fred(&state, &bench, Kind::List, raw.as_deref().unwrap_or("")).await?))
}

async fn fred_search(
    State(state): State<AppState>,
    _caller: Viewer,
    Extension(bench): Extension<Arc<Bench>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    Ok(json_response(from_fred(&state, &bench, Kind::Search, raw.as_deref().unwrap_or("")).await?))
}
