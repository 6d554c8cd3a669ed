//! Cache warming: the pages most visitors start from. Runs at start (when
//! `cache.warm_on_start`), on demand (`POST /api/v1/admin/cache/warm`), and can
//! run as a scheduled job.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::cached::CachedExplore;
use super::model::{DEFAULT_LIMIT, GroupCount, ItemSummary, ListQuery, Page};

/// What a warming run did.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct WarmReport {
    /// List, trending and categories pages loaded.
    pub pages: u64,
    /// Item details loaded.
    pub items: u64,
    /// Reads that failed (logged; warming goes on).
    pub errors: u64,
    /// How long the run took, in seconds.
    #[serde(serialize_with = "as_secs")]
    #[schema(value_type = f64, example = 0.42)]
    pub elapsed: Duration,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// How many of the most viewed items get their detail page warmed.
pub const WARM_TOP_ITEMS: u32 = 50;

/// Hears how far a warming run is: `done` of `total` reads (the total is known once
/// the categories are read, and settles once trending is).
pub trait WarmProgress: Send + Sync {
    fn on_step(&self, done: u64, total: u64);
}

/// Nothing to hear.
impl WarmProgress for () {
    fn on_step(&self, _done: u64, _total: u64) {}
}

/// Loads the first page of every group and category, categories, trending, and
/// the details of the most viewed items.
pub async fn warm(explore: &CachedExplore) -> WarmReport {
    warm_with_progress(explore, &()).await
}

/// [`warm`], telling `progress` after each read.
pub async fn warm_with_progress(explore: &CachedExplore, progress: &dyn WarmProgress) -> WarmReport {
    let started = Instant::now();
    let mut report = WarmReport::default();
    // categories, the lists, trending (twice) and the top items' details
    let mut total = 3 + u64::from(WARM_TOP_ITEMS);
    let count = |ok: bool, report: &mut WarmReport| {
        if ok {
            report.pages += 1;
        } else {
            report.errors += 1;
        }
    };
    let step = |report: &WarmReport, total: u64| {
        progress.on_step(report.pages + report.items + report.errors, total)
    };
    let groups: Vec<GroupCount> = match explore.categories().await {
        Ok(value) => {
            count(true, &mut report);
            serde_json::from_slice(&value.body).unwrap_or_default()
        }
        Err(err) => {
            tracing::warn!(error = %err, "warming: categories failed");
            count(false, &mut report);
            Vec::new()
        }
    };
    let base = ListQuery { limit: DEFAULT_LIMIT, ..ListQuery::default() };
    let mut queries = vec![base.clone()];
    for group in &groups {
        queries.push(ListQuery { group: Some(group.group.clone()), ..base.clone() });
        for category in &group.categories {
            queries.push(ListQuery { category: Some(category.code.clone()), ..base.clone() });
        }
    }
    total += queries.len() as u64;
    step(&report, total);
    for query in &queries {
        let ok = explore.list(query).await.is_ok();
        count(ok, &mut report);
        step(&report, total);
    }
    match explore.trending(WARM_TOP_ITEMS).await {
        Ok(value) => {
            count(true, &mut report);
            let page: Page<ItemSummary> =
                serde_json::from_slice(&value.body).unwrap_or(Page { items: Vec::new(), next_cursor: None });
            total -= u64::from(WARM_TOP_ITEMS).saturating_sub(page.items.len() as u64);
            step(&report, total);
            for item in page.items {
                match explore.item(&item.id).await {
                    Ok(_) => report.items += 1,
                    Err(_) => report.errors += 1,
                }
                step(&report, total);
            }
        }
        Err(_) => {
            count(false, &mut report);
            total -= u64::from(WARM_TOP_ITEMS);
        }
    }
    let _ = explore.trending(DEFAULT_LIMIT).await;
    progress.on_step(total, total);
    report.elapsed = started.elapsed();
    tracing::info!(
        pages = report.pages,
        items = report.items,
        errors = report.errors,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "cache warmed"
    );
    report
}
