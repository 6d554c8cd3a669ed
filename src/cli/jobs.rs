//! `castwork jobs list|show|cancel|watch`: a client of a running node's jobs API
//! (`/api/v1/jobs`), over plain HTTP. The node is `--url` (or `CASTWORK_URL`,
//! default `http://127.0.0.1:8080`); the access token is `CASTWORK_TOKEN` (from
//! `castwork token --username ...` or a login). The process's own configuration
//! plays no part.

pub mod sse;

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::{Method, RequestBuilder, StatusCode, header};
use serde_json::Value;

use self::sse::{SseEvent, SseParser};
use crate::config::env;

/// The node when neither `--url` nor `CASTWORK_URL` is given.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Times `watch` reconnects (with `Last-Event-ID`) to a stream that ended before the job did.
const RECONNECTS: u32 = 5;
/// Pause before such a reconnection.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// `castwork jobs ...`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// The node's base URL (plain HTTP).
    #[arg(long, env = env::URL, default_value = DEFAULT_URL, global = true)]
    pub url: String,
    #[command(subcommand)]
    pub command: JobsCommand,
}

/// What to do with jobs.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first: id, kind, state, percent done, created at.
    List {
        /// Only jobs in this state (queued, running, retrying, succeeded, failed, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// Only jobs of this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Jobs per page.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100))]
        limit: u64,
        /// The cursor a previous page printed, for the next page.
        #[arg(long)]
        after: Option<String>,
    },
    /// Print a job as JSON.
    Show { id: String },
    /// Cancel a job (admin) and print the answer.
    Cancel { id: String },
    /// Follow a job's progress until it is over; exit 0 if it succeeded, 1 otherwise.
    Watch { id: String },
}

/// Runs a jobs command; `Ok(false)` when `watch` saw the job fail or be cancelled.
pub async fn run(args: JobsArgs) -> anyhow::Result<bool> {
    let client = Client::new(&args.url)?;
    match args.command {
        JobsCommand::List { state, kind, limit, after } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(state.map(|s| ("state", s)));
            query.extend(kind.map(|k| ("kind", k)));
            query.extend(after.map(|a| ("after", a)));
            let page = client.json(client.request(Method::GET, "/api/v1/jobs").query(&query)).await?;
            print(&render_table(&page))?;
            Ok(true)
        }
        JobsCommand::Show { id } => {
            let job = client.json(client.request(Method::GET, &job_path(&id, ""))).await?;
            print(&pretty(&job)?)?;
            Ok(true)
        }
        JobsCommand::Cancel { id } => {
            let job = client.json(client.request(Method::POST, &job_path(&id, "/cancel"))).await?;
            print(&pretty(&job)?)?;
            Ok(true)
        }
        JobsCommand::Watch { id } => watch(&client, &id).await,
    }
}

/// The node, and the token every request carries.
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(url: &str) -> anyhow::Result<Self> {
        let token = match std::env::var(env::TOKEN) {
            Ok(token) if !token.trim().is_empty() => token.trim().to_owned(),
            _ => bail!("set {} (castwork token --username ...)", env::TOKEN),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("failed to set up the HTTP client")?;
        Ok(Self { http, base: url.trim_end_matches('/').to_owned(), token })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token)
    }

    /// Sends `request`; a refusal becomes an error with the server's message.
    async fn send(&self, request: RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = request.send().await.map_err(|err| {
            if err.is_connect() || err.is_timeout() {
                anyhow!("cannot reach castwork at {} (is it running? set --url or {})", self.base, env::URL)
            } else {
                anyhow!(err).context(format!("request to castwork at {} failed", self.base))
            }
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Err(refusal(status, &body))
    }

    /// Sends `request` and reads a JSON answer.
    async fn json(&self, request: RequestBuilder) -> anyhow::Result<Value> {
        let response = self.send(request).await?;
        response.json().await.context("the node's answer is not JSON")
    }
}

/// The error for a non-2xx answer: the server's message and code.
fn refusal(status: StatusCode, body: &Value) -> anyhow::Error {
    let error = &body["error"];
    match (error["message"].as_str(), error["code"].as_str()) {
        (Some(message), Some(code)) => anyhow!("{message} ({} {code})", status.as_u16()),
        _ => anyhow!("castwork answered {status}"),
    }
}

/// `/api/v1/jobs/<id><tail>`, the id percent-encoded as one path segment.
fn job_path(id: &str, tail: &str) -> String {
    let mut encoded = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("/api/v1/jobs/{encoded}{tail}")
}

fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).context("failed to write to stdout")
}

fn pretty(value: &Value) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value).context("failed to encode JSON")? + "\n")
}

/// A page of jobs as a table, with the cursor of the next page if any.
fn render_table(page: &Value) -> String {
    let rows: Vec<[String; 5]> = page["jobs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|job| {
            let text = |field: &str| job[field].as_str().unwrap_or("-").to_owned();
            let percent = job["percent"].as_f64().map_or_else(|| "-".to_owned(), |p| format!("{p:.0}%"));
            [text("id"), text("kind"), text("state"), percent, text("created_at")]
        })
        .collect();
    let header = ["ID", "KIND", "STATE", "PERCENT", "CREATED_AT"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> =
            row.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    if let Some(next) = page["next"].as_str() {
        text.push_str(&format!("(more: castwork jobs list --after {next})\n"));
    }
    text
}

/// Follows the job's event stream, drawing a progress bar on stderr, until `finished`.
async fn watch(client: &Client, id: &str) -> anyhow::Result<bool> {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
    {
        bar.set_style(style);
    }
    let mut last_id: Option<String> = None;
    let mut reconnects = 0;
    loop {
        let mut request =
            client.request(Method::GET, &job_path(id, "/events")).header(header::ACCEPT, "text/event-stream");
        if let Some(last) = &last_id {
            request = request.header("last-event-id", last.as_str());
        }
        let response = client.send(request).await?;
        let mut parser = SseParser::default();
        let mut body = response.bytes_stream();
        while let Some(Ok(chunk)) = body.next().await {
            for event in parser.feed(&chunk) {
                if let Some(event_id) = &event.id {
                    last_id = Some(event_id.clone());
                }
                if let Some(succeeded) = show(&bar, &event)? {
                    return Ok(succeeded);
                }
            }
        }
        // the node ended the stream (shutting down) or the connection broke: resume
        reconnects += 1;
        if reconnects > RECONNECTS {
            bar.abandon();
            bail!("the event stream of job {id} kept ending before the job finished");
        }
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

/// Draws one event; `Some(succeeded)` once the job is over (its summary printed).
fn show(bar: &ProgressBar, event: &SseEvent) -> anyhow::Result<Option<bool>> {
    let data = || serde_json::from_str::<Value>(&event.data).context("an event's data is not JSON");
    match event.name.as_str() {
        "snapshot" => {
            let job = data()?;
            draw(bar, &job["progress"], &job["state"]);
        }
        "progress" => {
            let progress = data()?;
            draw(bar, &progress, &progress["state"]);
        }
        "finished" => {
            let job = data()?;
            bar.finish_and_clear();
            print(&summary(&job))?;
            return Ok(Some(job["state"] == "succeeded"));
        }
        _ => {}
    }
    Ok(None)
}

fn draw(bar: &ProgressBar, progress: &Value, state: &Value) {
    if let Some(total) = progress["total"].as_u64() {
        bar.set_length(total);
    }
    if let Some(processed) = progress["processed"].as_u64() {
        bar.set_position(processed);
    }
    bar.set_message(state.as_str().unwrap_or("").to_owned());
}

/// One line: the job, its final state, how far it got, and its error if any.
fn summary(job: &Value) -> String {
    let id = job["id"].as_str().unwrap_or("?");
    let state = job["state"].as_str().unwrap_or("?");
    let progress = &job["progress"];
    let processed = progress["processed"].as_u64().unwrap_or(0);
    let done = match progress["total"].as_u64() {
        Some(total) => format!("{processed}/{total}"),
        None => processed.to_string(),
    };
    let attempts = job["attempts"].as_u64().unwrap_or(0);
    let mut line = format!("job {id} {state}: {done} done in {attempts} attempt(s)");
    if state != "succeeded"
        && let Some(error) = job["error"].as_str()
    {
        line.push_str(&format!("; last error: {error}"));
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ids_are_one_path_segment() {
        assert_eq!(job_path("0b6f-8e8a", ""), "/api/v1/jobs/0b6f-8e8a");
        assert_eq!(job_path("a/b c", "/events"), "/api/v1/jobs/a%2Fb%20c/events");
    }

    #[test]
    fn refusals_carry_the_servers_message() {
        let body = json!({"error": {"code": "not_found", "message": "no job x"}});
        assert_eq!(refusal(StatusCode::NOT_FOUND, &body).to_string(), "no job x (404 not_found)");
        assert_eq!(
            refusal(StatusCode::BAD_GATEWAY, &Value::Null).to_string(),
            "castwork answered 502 Bad Gateway"
        );
    }

    #[test]
    fn the_table_aligns_its_columns() {
        let page = json!({"jobs": [
            {"id": "a1", "kind": "noop_sleep", "state": "running", "percent": 42.4, "created_at": "2025-06-01T00:00:00Z"},
            {"id": "b2", "kind": "backup", "state": "queued", "percent": null, "created_at": "2025-06-01T00:00:01Z"},
        ], "next": "CUR"});
        let text = render_table(&page);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ID  KIND        STATE    PERCENT  CREATED_AT");
        assert_eq!(lines[1], "a1  noop_sleep  running  42%      2025-06-01T00:00:00Z");
        assert_eq!(lines[2], "b2  backup      queued   -        2025-06-01T00:00:01Z");
        assert_eq!(lines[3], "(more: castwork jobs list --after CUR)");
    }

    #[test]
    fn the_summary_names_the_outcome_and_the_error() {
        let ok = json!({"id": "j", "state": "succeeded", "attempts": 1, "progress": {"processed": 20, "total": 20}});
        assert_eq!(summary(&ok), "job j succeeded: 20/20 done in 1 attempt(s)\n");
        let failed = json!({"id": "j", "state": "failed", "attempts": 2, "error": "boom", "progress": {"processed": 3}});
        assert_eq!(summary(&failed), "job j failed: 3 done in 2 attempt(s); last error: boom\n");
    }
}
