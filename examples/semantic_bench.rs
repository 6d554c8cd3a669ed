//! The semantic index's costs, for docs/BENCHMARKS.md ("Inference: embedding the
//! catalogue").
//!
//! `semantic_bench synthetic [N] [DIM] [QUERIES]`: N random unit vectors of DIM
//! dimensions (46,000 × 384 by default, seeded) in a `VectorIndex`: the time to
//! insert them, their bytes, and the latency of a top-10 search (p50, p99, mean
//! over QUERIES queries, default 200), with and without an excluded id.
//!
//! `semantic_bench load DATABASE_URL [MODEL]`: `SharedIndex::load` from a
//! database's `item_embeddings` (the model defaults to all-minilm-l6-v2): the
//! load time and the vectors, then the latency of top-10 searches with stored
//! vectors as queries, as related items runs them.
//!
//! Prints one `RESULT` line per measurement. Build with `--release`.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use castwork::explore::semantic::SharedIndex;
use castwork::explore::semantic::index::VectorIndex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One line of results on stdout.
macro_rules! result {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

fn random_vector(rng: &mut StdRng, dim: usize) -> Vec<f32> {
    (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn summary(name: &str, mut took: Vec<Duration>) {
    took.sort_unstable();
    let at = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize];
    let mean = took.iter().sum::<Duration>() / took.len().max(1) as u32;
    result!(
        "RESULT {name} queries={} p50_ms={:.3} p99_ms={:.3} mean_ms={:.3}",
        took.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3
    );
}

fn synthetic(n: usize, dim: usize, queries: usize) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(7);
    let vectors: Vec<Vec<f32>> = (0..n).map(|_| random_vector(&mut rng, dim)).collect();
    let started = Instant::now();
    let mut index = VectorIndex::new();
    for (i, v) in vectors.iter().enumerate() {
        index.upsert(&format!("item-{i:06}"), v).context("failed to insert a vector")?;
    }
    result!(
        "RESULT synthetic_build items={n} dim={dim} ms={:.1} vector_bytes={}",
        started.elapsed().as_secs_f64() * 1e3,
        index.vector_bytes()
    );
    let mut plain = Vec::with_capacity(queries);
    let mut excluding = Vec::with_capacity(queries);
    for q in 0..queries {
        let query = random_vector(&mut rng, dim);
        let started = Instant::now();
        let found = index.top_k(&query, 10, None)?;
        plain.push(started.elapsed());
        let own = format!("item-{:06}", q % n);
        let started = Instant::now();
        let related = index.top_k(index.get(&own).context("a stored vector")?, 10, Some(&own))?;
        excluding.push(started.elapsed());
        if found.len() != 10 || related.iter().any(|r| r.id == own) {
            bail!("a search gave a wrong answer");
        }
    }
    summary("synthetic_top10", plain);
    summary("synthetic_top10_excluding", excluding);
    Ok(())
}

async fn load(url: &str, model: &str) -> anyhow::Result<()> {
    let db = sea_orm::Database::connect(url).await.context("failed to connect to the database")?;
    let index = SharedIndex::new(model);
    let started = Instant::now();
    let report = index.load(&db).await.context("failed to load the index")?;
    result!(
        "RESULT load items={} skipped={} ms={:.1} vector_bytes={}",
        report.loaded,
        report.skipped,
        started.elapsed().as_secs_f64() * 1e3,
        index.vector_bytes()
    );
    let ids: Vec<String> = castwork::explore::semantic::store::embeddings_page(&db, model, None, 200)
        .await?
        .into_iter()
        .map(|e| e.item_id)
        .collect();
    let mut took = Vec::with_capacity(ids.len());
    for id in &ids {
        let vector = index.vector(id).context("a loaded vector")?;
        let started = Instant::now();
        index.nearest(vector, 10, Some(id.clone())).await?;
        took.push(started.elapsed());
    }
    summary("loaded_related_top10", took);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: usize| -> anyhow::Result<usize> {
        args.get(i).map_or(Ok(default), |a| a.parse().context("a number"))
    };
    match args.first().map(String::as_str) {
        Some("synthetic") => synthetic(number(1, 46_000)?, number(2, 384)?, number(3, 200)?),
        Some("load") => {
            let url = args.get(1).context("load needs a DATABASE_URL")?;
            load(url, args.get(2).map_or("all-minilm-l6-v2", String::as_str)).await
        }
        _ => bail!("usage: semantic_bench synthetic [N] [DIM] [QUERIES] | load DATABASE_URL [MODEL]"),
    }
}
