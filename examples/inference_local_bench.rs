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
    writeln!(out, "\n| weights | load | first token | decoding, 1 request |")?;
    writeln!(out, "|---|---|---|---|")?;
    let mut single_q8 = 0.0;
    for weights in [ChatWeights::AsShipped, ChatWeights::Q8_0] {
        let started = Instant::now();
        let settings = settings(&models_dir, 1)?;
        let backend =
            tokio::task::spawn_blocking(move || LocalBackend::load_with(&settings, weights)).await??;
        let load = started.elapsed();
        generate(&backend, PROMPTS[0]).await?; // warm-up
        let mut firsts = Vec::new();
        let mut rates = Vec::new();
        for _ in 0..rounds {
            let run = generate(&backend, PROMPTS[0]).await?;
            firsts.push(run.first_token.as_secs_f64() * 1000.0);
            rates.push(run.decode_rate());
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
            "| {name} | {:.2} s | {:.0} ms | {rate:.1} tokens/s |",
            load.as_secs_f64(),
            median(firsts)
        )?;
    }

    // concurrency: one compute thread per core
    let settings = settings(&models_dir, 0)?;
    let backend = tokio::task::spawn_blocking(move || LocalBackend::load(&settings)).await??;
    let threads = backend.compute().threads();
    generate(&backend, PROMPTS[0]).await?; // warm-up
    let mut singles = Vec::new();
    let mut aggregates = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        let run = generate(&backend, PROMPTS[0]).await?;
        singles.push(f64::from(run.tokens) / started.elapsed().as_secs_f64());
        let started = Instant::now();
        let runs = futures::future::join_all(PROMPTS.iter().map(|p| generate(&backend, p))).await;
        let tokens: u32 = runs.into_iter().map(|r| r.map(|r| r.tokens)).sum::<anyhow::Result<u32>>()?;
        aggregates.push(f64::from(tokens) / started.elapsed().as_secs_f64());
    }
    let (single, aggregate) = (median(singles), median(aggregates));
    writeln!(out, "\n| Q8_0, {threads} compute threads | tokens/s (prompt included) | ratio |")?;
    writeln!(out, "|---|---|---|")?;
    writeln!(out, "| 1 request | {single:.1} | 1.00 |")?;
    writeln!(
        out,
        "| {CONCURRENT} concurrent requests, aggregate | {aggregate:.1} | {:.2} |",
        aggregate / single
    )?;

    // embeddings: one batch against single texts
    let texts: Vec<String> = (0..TEXTS)
        .map(|i| {
            format!("Sentence number {i} says something about {} in a few words.", PROMPTS[i % CONCURRENT])
        })
        .collect();
    backend.embed(EMBEDDING_MODEL, texts.clone()).await?; // warm-up
    let mut batched = Vec::new();
    let mut single_calls = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        backend.embed(EMBEDDING_MODEL, texts.clone()).await?;
        batched.push(TEXTS as f64 / started.elapsed().as_secs_f64());
        let started = Instant::now();
        for text in &texts {
            backend.embed(EMBEDDING_MODEL, vec![text.clone()]).await?;
        }
        single_calls.push(TEXTS as f64 / started.elapsed().as_secs_f64());
    }
    let (batched, single_calls) = (median(batched), median(single_calls));
    writeln!(out, "\n| embeddings, {TEXTS} texts | texts/s | ratio |")?;
    writeln!(out, "|---|---|---|")?;
    writeln!(out, "| {TEXTS} calls of 1 text | {single_calls:.1} | 1.00 |")?;
    writeln!(
        out,
        "| 1 call of {TEXTS} texts (one forward pass) | {batched:.1} | {:.2} |",
        batched / single_calls
    )?;
    writeln!(out, "\nRESULT decode_q8_0={single_q8:.1} aggregate_ratio={:.2}", aggregate / single)?;
    Ok(())
}
