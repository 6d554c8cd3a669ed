//! [`CachedExplore`]: the Explore reads the HTTP layer serves, through the cache.
//! Each read has a key built from what it depends on; a miss runs the
//! [`ExploreService`] query and caches the serialized JSON. Writes go to the
//! service, which publishes each change on its [`ChangeBus`]; [`CacheSink`], an
//! inline subscriber, invalidates before the write returns.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use super::model::{ListQuery, Page, Sort};
use super::{ChangeBus, ExploreError, ExploreService, ItemChange};
use crate::cache::format::CachedValue;
use crate::cache::generations::Family;
use crate::cache::{Cache, CacheError, LoadError, Loader};
use crate::config::CacheSettings;

/// Time to live per kind of page.
#[derive(Debug, Clone, Copy)]
pub struct Ttls {
    pub item: Duration,
    pub list: Duration,
    pub search: Duration,
    pub categories: Duration,
    pub trending: Duration,
    pub summary: Duration,
}

impl Ttls {
    /// From the `[cache]` settings.
    pub fn from_settings(s: &CacheSettings) -> Self {
        Self {
            item: Duration::from_secs(s.item_ttl_secs),
            list: Duration::from_secs(s.list_ttl_secs),
            search: Duration::from_secs(s.search_ttl_secs),
            categories: Duration::from_secs(s.categories_ttl_secs),
            trending: Duration::from_secs(s.trending_ttl_secs),
            summary: Duration::from_secs(s.summary_ttl_secs),
        }
    }
}

/// Why a cached read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The query itself failed (bad input, database error); shared by all waiters.
    #[error(transparent)]
    Explore(Arc<ExploreError>),
    /// The cache did not answer in time.
    #[error("the cache did not answer in time")]
    Timeout,
    /// The load behind the read did not finish within `cache.load_timeout_ms`.
    #[error("loading the value took too long; try again shortly")]
    LoadTimeout,
    /// The shard could not answer and the bounded path to the database is full.
    #[error("too many reads are bypassing the cache; try again shortly")]
    Overloaded,
    /// Building the cached value failed (a bug, not the query).
    #[error("{0}")]
    Internal(String),
}

/// Explore reads through the cache (or straight to the service when the cache is off).
#[derive(Clone)]
pub struct CachedExplore {
    service: ExploreService,
    cache: Option<Cache>,
    ttls: Ttls,
}

fn digest(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        // length-prefixed, so no part (a query may hold any byte) can run into the next
        hasher.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex_prefix(hasher)
}

/// The first 16 bytes of the hash as 32 lowercase hex digits, in one allocation
/// (this runs on every cached read, hit or miss).
fn hex_prefix(hasher: Sha256) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(32);
    for byte in hasher.finalize().iter().take(16) {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    hex
}

/// The identity of a list query: SHA-256 over each field that is set, tagged
/// and length-prefixed so no two different queries can feed the same bytes.
fn list_identity(query: &ListQuery) -> String {
    let mut hasher = Sha256::new();
    let mut field = |tag: u8, value: &[u8]| {
        hasher.update([tag]);
        hasher.update(u64::try_from(value.len()).unwrap_or(u64::MAX).to_le_bytes());
        hasher.update(value);
    };
    let ListQuery { category, tags, group, q, from, to, sort, limit, cursor } = query;
    let instant = |at: &Option<chrono::DateTime<chrono::Utc>>| {
        at.map(|at| {
            let mut bytes = [0u8; 12];
            bytes[..8].copy_from_slice(&at.timestamp().to_le_bytes());
            bytes[8..].copy_from_slice(&at.timestamp_subsec_nanos().to_le_bytes());
            bytes
        })
    };
    if let Some(v) = category {
        field(b'c', v.as_bytes());
    }
    for tag in tags {
        field(b't', tag.as_bytes());
    }
    if let Some(v) = group {
        field(b'g', v.as_bytes());
    }
    if let Some(v) = q {
        field(b'q', v.as_bytes());
    }
    if let Some(v) = instant(from) {
        field(b'f', &v);
    }
    if let Some(v) = instant(to) {
        field(b'u', &v);
    }
    let sort: &[u8] = match sort {
        Sort::New => b"new",
        Sort::Trending => b"trending",
        Sort::Relevance => b"relevance",
    };
    field(b's', sort);
    field(b'l', &limit.to_le_bytes());
    if let Some(v) = cursor {
        field(b'k', v.as_bytes());
    }
    hex_prefix(hasher)
}

fn json<T: serde::Serialize>(value: &T) -> Result<CachedValue, LoadError> {
    let mut body = serde_json::to_vec(value).map_err(LoadError::new)?;
    // `to_vec` grows by doubling; L1 keeps this allocation for the entry's lifetime
    // and its weigher counts `len`, so give back the unused capacity (up to half)
    body.shrink_to_fit();
    Ok(CachedValue { body: Bytes::from(body), etag: None, not_found: false })
}

/// An [`ExploreError`] as a loader's error, for [`from_cache`] to give back.
pub(crate) fn to_load_error(err: ExploreError) -> LoadError {
    LoadError::new(SharedExploreError(Arc::new(err)))
}

/// An [`ExploreError`] that can travel inside a [`LoadError`] to every waiter.
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
struct SharedExploreError(Arc<ExploreError>);

/// A cache's answer as a [`ReadError`] (a loader's [`ExploreError`] comes back as itself).
pub(crate) fn from_cache(err: CacheError) -> ReadError {
    match err {
        CacheError::Timeout => ReadError::Timeout,
        CacheError::LoadTimeout => ReadError::LoadTimeout,
        CacheError::Overloaded => ReadError::Overloaded,
        CacheError::Load(load) => match load.downcast_ref::<SharedExploreError>() {
            Some(shared) => ReadError::Explore(shared.0.clone()),
            None => ReadError::Internal(load.to_string()),
        },
    }
}

impl CachedExplore {
    /// Reads through `cache` (`None`: every read goes to the database).
    pub fn new(service: ExploreService, cache: Option<Cache>, ttls: Ttls) -> Self {
        Self { service, cache, ttls }
    }

    /// The service (for writes and uncached reads).
    pub fn service(&self) -> &ExploreService {
        &self.service
    }

    /// The time to live of each kind of entry.
    pub fn ttls(&self) -> Ttls {
        self.ttls
    }

    /// The cache, when enabled.
    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    async fn read(
        &self,
        kind: &str,
        families: &[Family],
        identity: &str,
        ttl: Duration,
        loader: Loader,
    ) -> Result<CachedValue, ReadError> {
        let Some(cache) = &self.cache else {
            return loader().await.map_err(|e| from_cache(CacheError::Load(e)));
        };
        let key = cache.stamped_key(kind, families, identity).await;
        cache.get(key, ttl, loader).await.map_err(from_cache)
    }

    /// One item as JSON, with its version as `etag`; `not_found` when there is none.
    pub async fn item(&self, id: &str) -> Result<CachedValue, ReadError> {
        let service = self.service.clone();
        let owned = id.to_owned();
        let loader: Loader = Arc::new(move || {
            let service = service.clone();
            let id = owned.clone();
            Box::pin(async move {
                match service.get(&id).await.map_err(to_load_error)? {
                    Some(item) => {
                        let mut value = json(&item)?;
                        value.etag = Some(item.version);
                        Ok(value)
                    }
                    None => Ok(CachedValue { body: Bytes::new(), etag: None, not_found: true }),
                }
            }) as BoxFuture<'static, _>
        });
        self.read("item", &[], id, self.ttls.item, loader).await
    }

    /// A list page as JSON.
    pub async fn list(&self, query: &ListQuery) -> Result<CachedValue, ReadError> {
        let families = list_families(query);
        let identity = list_identity(query);
        let service = self.service.clone();
        let query = query.clone();
        let loader: Loader = Arc::new(move || {
            let service = service.clone();
            let query = query.clone();
            Box::pin(async move { json(&service.list(&query).await.map_err(to_load_error)?) })
                as BoxFuture<'static, _>
        });
        self.read("list", &families, &identity, self.ttls.list, loader).await
    }

    /// A search page as JSON.
    pub async fn search(&self, q: &str, limit: u32, cursor: Option<&str>) -> Result<CachedValue, ReadError> {
        // an empty cursor (refused) must not share the first page's key
        let cursor_part = cursor.map(|c| format!("k{c}"));
        let identity = digest(&[q, &limit.to_string(), cursor_part.as_deref().unwrap_or("")]);
        let service = self.service.clone();
        let (q, cursor) = (q.to_owned(), cursor.map(str::to_owned));
        let loader: Loader = Arc::new(move || {
            let service = service.clone();
            let (q, cursor) = (q.clone(), cursor.clone());
            Box::pin(async move {
                json(&service.search(&q, limit, cursor.as_deref()).await.map_err(to_load_error)?)
            }) as BoxFuture<'static, _>
        });
        self.read("search", &[Family::All], &identity, self.ttls.search, loader).await
    }

    /// Groups → categories → counts as JSON.
    pub async fn categories(&self) -> Result<CachedValue, ReadError> {
        let service = self.service.clone();
        let loader: Loader = Arc::new(move || {
            let service = service.clone();
            Box::pin(async move { json(&service.categories().await.map_err(to_load_error)?) })
                as BoxFuture<'static, _>
        });
        self.read("categories", &[Family::All], "all", self.ttls.categories, loader).await
    }

    /// Trending as a JSON page.
    pub async fn trending(&self, limit: u32) -> Result<CachedValue, ReadError> {
        let service = self.service.clone();
        let loader: Loader = Arc::new(move || {
            let service = service.clone();
            Box::pin(async move {
                let items = service.trending(limit).await.map_err(to_load_error)?;
                json(&Page { items, next_cursor: None })
            }) as BoxFuture<'static, _>
        });
        self.read("trending", &[Family::All], &limit.to_string(), self.ttls.trending, loader).await
    }
}

/// The families a list page depends on: its filters, or all lists when unfiltered.
pub fn list_families(query: &ListQuery) -> Vec<Family> {
    let mut families = Vec::new();
    if let Some(group) = &query.group {
        families.push(Family::Group(group.clone()));
    }
    if let Some(category) = &query.category {
        families.push(Family::Category(category.clone()));
    }
    for tag in &query.tags {
        families.push(Family::Tag(tag.clone()));
    }
    if families.is_empty() {
        families.push(Family::All);
    }
    families
}

/// Invalidates the cache for committed item changes: an inline subscriber of the
/// [`ChangeBus`], so a write returns only after its pages are invalidated.
#[derive(Clone)]
pub struct CacheSink {
    pub cache: Cache,
}

impl CacheSink {
    /// Subscribes to `bus`.
    pub fn subscribe(self, bus: &ChangeBus) {
        bus.on_publish("cache", move |changes| {
            let sink = self.clone();
            Box::pin(async move { sink.invalidate(&changes).await })
        });
    }

    /// Bumps every family a change touched, before or after it, and evicts each
    /// changed item's own page: one invalidation for the whole batch.
    pub async fn invalidate(&self, changes: &[ItemChange]) {
        if changes.is_empty() {
            return;
        }
        let mut item_keys = Vec::with_capacity(changes.len());
        for change in changes {
            item_keys.push(self.cache.stamped_key("item", &[], &change.id).await);
        }
        self.cache.invalidate(&touched_families(changes), item_keys).await;
    }
}

/// `All`, and the group, category and tags of every change's both sides, once each.
pub fn touched_families(changes: &[ItemChange]) -> Vec<Family> {
    let mut families = vec![Family::All];
    for side in changes.iter().flat_map(|c| [&c.before, &c.after]).flatten() {
        families.push(Family::Group(side.group.clone()));
        families.push(Family::Category(side.category_code.clone()));
        families.extend(side.tags.iter().cloned().map(Family::Tag));
    }
    families.sort();
    families.dedup();
    families
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_32_lowercase_hex_digits_of_sha256() {
        // the key format must not change with the implementation
        let d = digest(&["a", "b"]);
        assert_eq!(d.len(), 32);
        assert!(d.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{d}");
        let mut hasher = Sha256::new();
        hasher.update(b"\x01\0\0\0\0\0\0\0a\x01\0\0\0\0\0\0\0b");
        let expected: String = hasher.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
        assert_eq!(d, expected);
    }

    #[test]
    fn digest_parts_cannot_run_into_each_other() {
        let nul_then_20 = format!("\0{}", 20);
        assert_ne!(digest(&["a\0", "20", ""]), digest(&["a", &nul_then_20, ""]));
        assert_ne!(digest(&["ab", "c"]), digest(&["a", "bc"]));
        assert_ne!(digest(&["q", "20", ""]), digest(&["q", "20", "k"]));
    }

    #[test]
    fn list_identity_tells_every_field_apart() {
        let base = ListQuery { limit: 20, ..Default::default() };
        let at = chrono::DateTime::parse_from_rfc3339("2025-06-01T00:00:00Z").unwrap().to_utc();
        let variants = [
            base.clone(),
            ListQuery { category: Some("cs.CV".into()), ..base.clone() },
            ListQuery { group: Some("cs.CV".into()), ..base.clone() },
            ListQuery { q: Some("cs.CV".into()), ..base.clone() },
            ListQuery { cursor: Some("cs.CV".into()), ..base.clone() },
            ListQuery { tags: vec!["cs.CV".into()], ..base.clone() },
            ListQuery { tags: vec!["cs.CV".into(), "cs.AI".into()], ..base.clone() },
            ListQuery { tags: vec!["cs.CVcs.AI".into()], ..base.clone() },
            ListQuery { from: Some(at), ..base.clone() },
            ListQuery { to: Some(at), ..base.clone() },
            ListQuery { to: Some(at + chrono::Duration::nanoseconds(1)), ..base.clone() },
            ListQuery { sort: Sort::Trending, ..base.clone() },
            ListQuery { sort: Sort::Relevance, ..base.clone() },
            ListQuery { limit: 21, ..base.clone() },
        ];
        let ids: Vec<String> = variants.iter().map(list_identity).collect();
        for (i, a) in ids.iter().enumerate() {
            assert_eq!(a.len(), 32);
            for (j, b) in ids.iter().enumerate().skip(i + 1) {
                assert_ne!(a, b, "queries {i} and {j} share an identity");
            }
        }
        // the bytes are part of the key format: an unfiltered page hashes only sort and limit
        let mut hasher = Sha256::new();
        hasher.update(b"s\x03\0\0\0\0\0\0\0new");
        hasher.update(b"l\x04\0\0\0\0\0\0\0\x14\0\0\0");
        let expected: String = hasher.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
        assert_eq!(ids[0], expected);
    }

    #[test]
    fn families_follow_filters() {
        let q = ListQuery::default();
        assert_eq!(list_families(&q), vec![Family::All]);
        let q =
            ListQuery { category: Some("cs.CV".into()), tags: vec!["cs.AI".into()], ..Default::default() };
        assert_eq!(list_families(&q), vec![Family::Category("cs.CV".into()), Family::Tag("cs.AI".into())]);
    }

    #[test]
    fn a_move_touches_the_families_it_left_and_entered() {
        use crate::explore::Families;
        let side = |group: &str, category: &str, tag: &str| Families {
            group: group.into(),
            category_code: category.into(),
            tags: vec![tag.into()],
        };
        let moved = ItemChange {
            id: "a".into(),
            version: 2,
            before: Some(side("cs", "cs.CV", "t1")),
            after: Some(side("math", "math.CO", "t1")),
        };
        let created =
            ItemChange { id: "b".into(), version: 1, before: None, after: Some(side("cs", "cs.CV", "t2")) };
        assert_eq!(
            touched_families(&[moved, created]),
            vec![
                Family::All,
                Family::Group("cs".into()),
                Family::Group("math".into()),
                Family::Category("cs.CV".into()),
                Family::Category("math.CO".into()),
                Family::Tag("t1".into()),
                Family::Tag("t2".into()),
            ]
        );
    }
}
