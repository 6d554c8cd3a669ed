//! The local inference backend, side by side in one process (method in
//! docs/BENCHMARKS.md, "Inference: local models"):
//!
//! - load time and decoding speed of one request with SmolLM2's weights as
//!   shipped (Q4_1) and requantised to Q8_0: time to first token, tokens/s;
//! - aggregate tokens/s of 4 concurrent requests against 1, on one compute
//!   thread per core (`inference.local.threads = 0`);
//! - embeddings: 16 texts in one call (one forward pass) against 16 calls of one.
//!
//! `cargo run --release --example inference_local_bench [models-dir] [rounds]`
//! (default `./models`, 3 rounds; each figure is the median of the rounds).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use castwork::config::LocalSettings;
use castwork::inference::backend::{ChatMessage, ChatRequest, Delta, LlmBackend, Role, Sampling};
use castwork::inference::local::{CHAT_MODEL, ChatWeights, EMBEDDING_MODEL, LocalBackend};
use figment::Figment;
use figment::providers::{Format, Toml};
use futures::StreamExt;

/// Tokens each generation decodes: a fixed length (no stop, greedy).
const TOKENS: u32 = 128;
const CONCURRENT: usize = 4;
const TEXTS: usize = 16;

const PROMPTS: [&str; CONCURRENT] = [
    "Write a long story about a dragon who learns to bake bread.",
    "Explain how a steam engine works, step by step, in detail.",
    "Describe a walk through a busy market in a coastal town.",
    "List the planets of the solar system and say something about each.",
];

/// One generation: time to first token, then the decoding rate after it.
struct Run {
    first_token: Duration,
    tokens: u32,
    total: Duration,
}

impl Run {
    fn decode_rate(&self) -> f64 {
        let after_first = self.total.saturating_sub(self.first_token).as_secs_f64();
        f64::from(self.tokens.saturating_sub(1)) / after_first.max(1e-9)
    }
}

fn settings(models_dir: &Path, threads: usize) -> anyhow::Result<LocalSettings> {
    let mut settings: LocalSettings = Figment::new()
        .merge(Toml::string(include_str!("../config/default.toml")))
        .extract_inner("inference.local")
        .context("failed to read [inference.local] from config/default.toml")?;
    settings.models_dir = models_dir.to_path_buf();
    settings.threads = threads;
    Ok(settings)
}

fn request(prompt: &str) -> ChatRequest {
    // a stop sequence no answer contains keeps the path the same as a real request's
    let sampling = Sampling { stop: vec!["\u{0}".to_owned()], ..Sampling::greedy(TOKENS) };
    ChatRequest {
        model: CHAT_MODEL.to_owned(),
        messages: vec![ChatMessage::new(Role::User, prompt)],
        sampling,
    }
}

async fn generate(backend: &LocalBackend, prompt: &str) -> anyhow::Result<Run> {
    let started = Instant::now();
    let mut stream = backend.chat_stream(request(prompt)).await?;
    let mut first_token = None;
    while let Some(delta) = stream.next().await {
        match delta? {
            Delta::Text(_) => {
                first_token.get_or_insert_with(|| started.elapsed());
            }
            Delta::Done { usage, .. } => {
                let total = started.elapsed();
                return Ok(Run {
                    first_token: first_token.unwrap_or(total),
                    tokens: usage.completion_tokens,
                    total,
                });
            }
        }
    }
    bail!("the stream ended without its finish")
}

/// CPU time (user and system) this process has used, in seconds, from
/// /proc/self/stat (Linux; 10 ms ticks); `None` elsewhere. With it, a result
/// says how many cores it got, which the wall clock alone hides on a shared machine.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / 100.0)
}

/// Wall and CPU time from a start.
struct Clock {
    wall: Instant,
    cpu: Option<f64>,
}

impl Clock {
    fn start() -> Self {
        Self { wall: Instant::now(), cpu: cpu_seconds() }
    }

    /// (wall seconds, CPU seconds).
    fn read(&self) -> (f64, f64) {
        let cpu = self.cpu.zip(cpu_seconds()).map_or(f64::NAN, |(from, to)| to - from);
        (self.wall.elapsed().as_secs_f64(), cpu)
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let models_dir = PathBuf::from(args.get(1).map_or("models", String::as_str));
    let rounds: usize =
        args.get(2).map(|s| s.parse()).transpose().context("rounds must be a number")?.unwrap_or(3);
    let mut out = std::io::stdout().lock();
    let kernel_threads = ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"]
        .iter()
        .map(|v| format!("{v}={}", std::env::var(v).unwrap_or_else(|_| "unset".to_owned())))
        .collect::<Vec<_>>()
        .join(" ");
    writeln!(out, "models in {}, {rounds} round(s), {kernel_threads}", models_dir.display())?;

    // one request, weights as shipped against requantised, one compute thread
    writeln!(out, "\n| weights | load | first token | decoding, 1 request | tokens per CPU-second |")?;
    writeln!(out, "|---|---|---|---|---|")?;
    let mut single_q8 = 0.0;
    for weights in [ChatWeights::AsShipped, ChatWeights::Q8_0] {
        let started = Instant::now();
        let settings = settings(&models_dir, 1)?;
        let backend =
            tokio::task::spawn_blocking(move || LocalBackend::load_with(&settings, weights)).await??;
        let load = started.elapsed();
        generate(&backend, PROMPTS[0]).await?; // warm-up
        let (mut firsts, mut rates, mut per_cpu) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let clock = Clock::start();
            let run = generate(&backend, PROMPTS[0]).await?;
            let (_, cpu) = clock.read();
            firsts.push(run.first_token.as_secs_f64() * 1000.0);
            rates.push(run.decode_rate());
            per_cpu.push(f64::from(run.tokens) / cpu);
        }
        let rate = median(rates);
        if weights == ChatWeights::Q8_0 {
            single_q8 = rate;
        }
        let name = match weights {
            ChatWeights::AsShipped => "Q4_1 (as shipped)",
            ChatWeights::Q8_0 => "Q8_0 (requantised at load)",
        };
        writeln!(
            out,
            "| {name} | {:.2} s | {:.0} ms | {rate:.1} tokens/s | {:.1} |",
            load.as_secs_f64(),
            median(firsts),
            median(per_cpu)
        )?;
    }

    // concurrency: one compute thread per core
    let settings = settings(&models_dir, 0)?;
    let backend = tokio::task::spawn_blocking(move || LocalBackend::load(&settings)).await??;
    let threads = backend.compute().threads();
    generate(&backend, PROMPTS[0]).await?; // warm-up
    let (mut singles, mut aggregates) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let clock = Clock::start();
        let run = generate(&backend, PROMPTS[0]).await?;
        singles.push((f64::from(run.tokens), clock.read()));
        let clock = Clock::start();
        let runs = futures::future::join_all(PROMPTS.iter().map(|p| generate(&backend, p))).await;
        let tokens: u32 = runs.into_iter().map(|r| r.map(|r| r.tokens)).sum::<anyhow::Result<u32>>()?;
        aggregates.push((f64::from(tokens), clock.read()));
    }
    let summary = |runs: &[(f64, (f64, f64))]| {
        (
            median(runs.iter().map(|(tokens, (wall, _))| tokens / wall).collect()),
            median(runs.iter().map(|(_, (wall, cpu))| cpu / wall).collect()),
            median(runs.iter().map(|(tokens, (_, cpu))| tokens / cpu).collect()),
        )
    };
    let (single, single_cores, single_cpu) = summary(&singles);
    let (aggregate, aggregate_cores, aggregate_cpu) = summary(&aggregates);
    writeln!(
        out,
        "\n| Q8_0, {threads} compute threads | tokens/s (prompt included) | ratio | cores used | tokens per CPU-second |"
    )?;
    writeln!(out, "|---|---|---|---|---|")?;
    writeln!(out, "| 1 request | {single:.1} | 1.00 | {single_cores:.2} | {single_cpu:.1} |")?;
    writeln!(
        out,
        "| {CONCURRENT} concurrent requests, aggregate | {aggregate:.1} | {:.2} | {aggregate_cores:.2} | {aggregate_cpu:.1} |",
        aggregate / single
    )?;

    // embeddings: one batch against single texts
    let texts: Vec<String> = (0..TEXTS)
        .map(|i| {
            format!("Sentence number {i} says something about {} in a few words.", PROMPTS[i % CONCURRENT])
        })
        .collect();
    backend.embed(EMBEDDING_MODEL, texts.clone()).await?; // warm-up
    let (mut batched, mut single_calls) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let clock = Clock::start();
        backend.embed(EMBEDDING_MODEL, texts.clone()).await?;
        batched.push((TEXTS as f64, clock.read()));
        let clock = Clock::start();
        for text in &texts {
            backend.embed(EMBEDDING_MODEL, vec![text.clone()]).await?;
        }
        single_calls.push((TEXTS as f64, clock.read()));
    }
    let (batched, _, batched_cpu) = summary(&batched);
    let (single_calls, _, single_calls_cpu) = summary(&single_calls);
    writeln!(out, "\n| embeddings, {TEXTS} texts | texts/s | ratio | texts per CPU-second |")?;
    writeln!(out, "|---|---|---|---|")?;
    writeln!(out, "| {TEXTS} calls of 1 text | {single_calls:.1} | 1.00 | {single_calls_cpu:.1} |")?;
    writeln!(
        out,
        "| 1 call of {TEXTS} texts (one forward pass) | {batched:.1} | {:.2} | {batched_cpu:.1} |",
        batched / single_calls
    )?;
    writeln!(out, "\nRESULT decode_q8_0={single_q8:.1} aggregate_ratio={:.2}", aggregate / single)?;
    Ok(())
}
