//! Gateway overhead of castwork's `/v1/chat/completions`, side by side with calling
//! the backend directly, for `scripts/bench/gateway.sh` (method in docs/BENCHMARKS.md).
//!
//! The backend is castwork's fault-injecting OpenAI-compatible test server
//! answering every request after a fixed latency. A node on SQLite (no local
//! models) routes the model `fast` to it. Each measurement alternates direct and
//! through-castwork runs of the same request (sampled, so never from the response
//! cache):
//!
//! - `latency RATE SECS`: an open loop at RATE requests/s for SECS seconds; p50 and
//!   p99 of each, and what castwork added;
//! - `throughput CONCURRENCY SECS`: a closed loop of CONCURRENCY clients; requests/s
//!   of each and their ratio.
//!
//! The load generator runs in the same process: it costs both sides the same.
//! Prints one `RESULT` line per measurement.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use castwork::config::{BackendSettings, Environment, Secret, Settings};
use castwork::inference::testing::{Behaviour, FakeOpenAi};
use castwork::startup::{Application, Hooks};
use figment::providers::Serialized;
use serde_json::{Value, json};

const ADMIN_PASSWORD: &str = "gateway-bench-admin-password-7d41";

struct Target {
    url: String,
    token: Option<String>,
}

fn body() -> Value {
    json!({"model": "fast", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 16, "temperature": 0.7})
}

async fn call(client: &reqwest::Client, target: &Target, body: &Value) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut request = client.post(&target.url).json(body);
    if let Some(token) = &target.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    let _ = response.bytes().await?;
    if !status.is_success() {
        bail!("{} answered {status}", target.url);
    }
    Ok(started.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Open loop: one request every 1/rate s, each on its own task.
async fn open_loop(
    client: &reqwest::Client,
    target: &Arc<Target>,
    rate: u64,
    secs: u64,
) -> anyhow::Result<Vec<Duration>> {
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let body = Arc::new(body());
    let mut tasks = Vec::with_capacity((rate * secs) as usize);
    for _ in 0..rate * secs {
        tick.tick().await;
        let (client, target, body) = (client.clone(), target.clone(), body.clone());
        tasks.push(tokio::spawn(async move { call(&client, &target, &body).await }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        latencies.push(task.await??);
    }
    latencies.sort();
    Ok(latencies)
}

/// Closed loop: `concurrency` clients back to back for `secs`; requests per second.
async fn closed_loop(
    client: &reqwest::Client,
    target: &Arc<Target>,
    concurrency: usize,
    secs: u64,
) -> anyhow::Result<f64> {
    let until = Instant::now() + Duration::from_secs(secs);
    let body = Arc::new(body());
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, target, body) = (client.clone(), target.clone(), body.clone());
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < until {
                    call(&client, &target, &body).await?;
                    done += 1;
                }
                anyhow::Ok(done)
            })
        })
        .collect();
    let started = Instant::now();
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map(String::as_str).unwrap_or("latency");
    let a: u64 = args.get(2).map(|s| s.parse()).transpose().context("a number")?.unwrap_or(500);
    let secs: u64 = args.get(3).map(|s| s.parse()).transpose().context("a number")?.unwrap_or(10);
    let latency_ms: u64 = std::env::var("BENCH_BACKEND_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);

    let fake =
        FakeOpenAi::start(Behaviour::Ok { text: "pong".into(), latency: Duration::from_millis(latency_ms) })
            .await;
    let dir = std::env::temp_dir().join(format!("castwork-gateway-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let settings = node_settings(&dir, &fake)?;
    let app = Application::build_with(settings, Hooks::default()).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = Arc::new(tokio::sync::Notify::new());
    let signal = stop.clone();
    let serving = tokio::spawn(async move { app.run_until(async move { signal.notified().await }).await });
    let client = reqwest::Client::builder().pool_max_idle_per_host(1024).build()?;
    let token = login(&client, &base).await?;

    let direct = Arc::new(Target { url: format!("{}/chat/completions", fake.base_url()), token: None });
    let gateway = Arc::new(Target { url: format!("{base}/v1/chat/completions"), token: Some(token) });
    // warm both paths (connections, caches)
    let _ = open_loop(&client, &direct, 100, 1).await?;
    let _ = open_loop(&client, &gateway, 100, 1).await?;
    let mut out = std::io::stdout();
    match what {
        "latency" => {
            for round in 1..=2 {
                let d = open_loop(&client, &direct, a, secs).await?;
                let g = open_loop(&client, &gateway, a, secs).await?;
                let (d50, d99, g50, g99) =
                    (percentile(&d, 50.0), percentile(&d, 99.0), percentile(&g, 50.0), percentile(&g, 99.0));
                writeln!(
                    out,
                    "RESULT latency round={round} rate={a}/s secs={secs} backend_ms={latency_ms} direct_p50_ms={:.3} direct_p99_ms={:.3} castwork_p50_ms={:.3} castwork_p99_ms={:.3} added_p50_ms={:.3} added_p99_ms={:.3}",
                    ms(d50),
                    ms(d99),
                    ms(g50),
                    ms(g99),
                    ms(g50) - ms(d50),
                    ms(g99) - ms(d99)
                )?;
            }
        }
        "throughput" => {
            for round in 1..=2 {
                let d = closed_loop(&client, &direct, a as usize, secs).await?;
                let g = closed_loop(&client, &gateway, a as usize, secs).await?;
                writeln!(
                    out,
                    "RESULT throughput round={round} concurrency={a} secs={secs} backend_ms={latency_ms} direct_rps={d:.0} castwork_rps={g:.0} ratio={:.2}",
                    g / d
                )?;
            }
        }
        other => bail!("unknown measurement {other:?}: latency or throughput"),
    }
    stop.notify_one();
    let _ = serving.await;
    fake.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn node_settings(dir: &std::path::Path, fake: &FakeOpenAi) -> anyhow::Result<Settings> {
    let config_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let backend = BackendSettings {
        name: "fast".into(),
        base_url: fake.base_url(),
        api_key: Secret::default(),
        models: [("fast".to_owned(), "fast".to_owned())].into(),
        embedding_models: Vec::new(),
        workers: 512,
        queue_capacity: 4096,
        connect_timeout_ms: 1000,
        breaker: None,
    };
    let figment = Settings::figment(&Environment::Development, &config_dir)
        .merge(Serialized::default("server.port", 0))
        .merge(Serialized::default("data_dir", dir.display().to_string()))
        .merge(Serialized::default("log.level", "error"))
        .merge(Serialized::default("explore.import_sample_on_start", false))
        .merge(Serialized::default("cache.warm_on_start", false))
        .merge(Serialized::default("inference.local.enabled", false))
        .merge(Serialized::default("auth.jwt_secret", "gateway-bench-secret-0123456789abcdef0123456789"));
    let mut settings = Settings::from_figment_in(figment, Environment::Development)?;
    settings.inference.backends = vec![backend];
    settings.bootstrap_admin_password = Secret::new(ADMIN_PASSWORD);
    Ok(settings)
}

async fn login(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let response = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await?;
    let body: Value = response.json().await?;
    body["access_token"].as_str().map(str::to_owned).context("no access token")
}
