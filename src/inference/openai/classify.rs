//! What went wrong, as a [`BackendError`]: HTTP statuses, `Retry-After`,
//! OpenAI's error objects (in a body or in a stream), and transport errors.
//!
//! | what | class |
//! |---|---|
//! | connection refused or reset, a 5xx, 408, a redirect, a malformed answer | `Retryable` |
//! | 429 | `RateLimited`, with `retry-after-ms` or `Retry-After` (seconds or an HTTP date) |
//! | a timeout of the transport (connecting) | `Timeout` |
//! | any other 4xx | `Fatal`, with the server's message when it sent OpenAI's error JSON |
//! | an error event in a stream | by its `code` / `type`, else `Retryable` |

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Deserialize;

use crate::inference::backend::BackendError;

/// Longest server text an error message quotes.
pub const EXCERPT_BYTES: usize = 512;

/// OpenAI's error object: `{"error": {"message", "type", "code", ...}}`. vLLM's
/// older answers put the fields at the top level (`{"object": "error", ...}`).
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub error: Option<ErrorObject>,
    #[serde(default)]
    pub object: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: Option<serde_json::Value>,
}

/// The inside of [`ErrorBody`]; some servers send only a message string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ErrorObject {
    Full {
        #[serde(default)]
        message: Option<String>,
        #[serde(default, rename = "type")]
        kind: Option<String>,
        #[serde(default)]
        code: Option<serde_json::Value>,
    },
    Text(String),
}

/// An error the server described: its message, type and code.
#[derive(Debug, Default, PartialEq)]
pub struct ServerError {
    pub message: Option<String>,
    pub kind: Option<String>,
    pub code: Option<String>,
}

impl ErrorBody {
    /// The error this body describes, if it is one.
    pub fn into_error(self) -> Option<ServerError> {
        match self.error {
            Some(ErrorObject::Full { message, kind, code }) => {
                Some(ServerError { message, kind, code: code.as_ref().and_then(code_text) })
            }
            Some(ErrorObject::Text(message)) => {
                Some(ServerError { message: Some(message), ..Default::default() })
            }
            None if self.object.as_deref() == Some("error") => Some(ServerError {
                message: self.message,
                kind: self.kind,
                code: self.code.as_ref().and_then(code_text),
            }),
            None => None,
        }
    }
}

fn code_text(code: &serde_json::Value) -> Option<String> {
    match code {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

impl ServerError {
    /// Parses an error body, if `body` is OpenAI's error JSON.
    pub fn parse(body: &[u8]) -> Option<Self> {
        serde_json::from_slice::<ErrorBody>(body).ok()?.into_error()
    }

    /// Its text for an error message, bounded.
    pub fn describe(&self) -> String {
        let message = self.message.as_deref().unwrap_or("no message");
        match (&self.kind, &self.code) {
            (Some(kind), _) => excerpt(format!("{kind}: {message}").as_bytes()),
            (None, Some(code)) => excerpt(format!("{code}: {message}").as_bytes()),
            (None, None) => excerpt(message.as_bytes()),
        }
    }

    /// The class of an error event met in a stream: by its numeric code when it is
    /// an HTTP status, else by its words; `Retryable` when it says nothing known.
    pub fn classify_in_stream(&self) -> BackendError {
        let text = format!("error event: {}", self.describe());
        if let Some(status) = self.code.as_deref().and_then(|c| c.parse::<u16>().ok())
            && let Ok(status) = StatusCode::from_u16(status)
            && (status.is_client_error() || status.is_server_error())
        {
            return classify_status(status, &HeaderMap::new(), text);
        }
        let words = [self.kind.as_deref(), self.code.as_deref()];
        let says = |needles: &[&str]| {
            words.iter().flatten().any(|w| {
                let w = w.to_ascii_lowercase();
                needles.iter().any(|n| w.contains(n))
            })
        };
        if says(&["rate_limit", "ratelimit", "too_many"]) {
            BackendError::RateLimited { retry_after: None, message: text }
        } else if says(&["timeout", "timed_out"]) {
            BackendError::Timeout(text)
        } else if says(&[
            "invalid_request",
            "badrequest",
            "bad_request",
            "context_length",
            "not_found",
            "notfound",
            "authentication",
            "permission",
            "invalid_api_key",
        ]) {
            BackendError::Fatal(text)
        } else {
            BackendError::Retryable(text)
        }
    }
}

/// The class of an answer with a status other than 2xx. `text` says what the
/// server said (already bounded).
pub fn classify_status(status: StatusCode, headers: &HeaderMap, text: String) -> BackendError {
    let text = format!("HTTP {}: {text}", status.as_u16());
    match status {
        StatusCode::TOO_MANY_REQUESTS => {
            BackendError::RateLimited { retry_after: retry_after(headers, SystemTime::now()), message: text }
        }
        StatusCode::REQUEST_TIMEOUT => BackendError::Retryable(text),
        s if s.is_server_error() => BackendError::Retryable(text),
        s if s.is_client_error() => BackendError::Fatal(text),
        // 1xx and 3xx (redirects are not followed): this server is not answering as it should
        _ => BackendError::Retryable(text),
    }
}

/// How long a 429 asks to wait: `retry-after-ms` (OpenAI's, milliseconds) when
/// present and valid, else `Retry-After` as delta-seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms.min(86_400_000.0) / 1000.0));
    }
    let value = header("retry-after")?;
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Some(Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = SystemTime::from(date.with_timezone(&chrono::Utc));
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A transport error (no HTTP answer, or the body broke off), without its URL.
pub fn classify_transport(error: reqwest::Error, during: &str) -> BackendError {
    let timeout = error.is_timeout();
    let connect = error.is_connect();
    let text = format!("{during}: {}", chain(&error.without_url()));
    if timeout {
        BackendError::Timeout(text)
    } else if connect {
        BackendError::Retryable(format!("cannot connect: {text}"))
    } else {
        BackendError::Retryable(text)
    }
}

/// The body of an answer broke off: the connection was cut or reset
/// (`Truncated`), or timed out.
pub fn classify_broken_body(error: reqwest::Error) -> BackendError {
    let timeout = error.is_timeout();
    let text = format!("the answer broke off: {}", chain(&error.without_url()));
    if timeout { BackendError::Timeout(text) } else { BackendError::Truncated(text) }
}

/// An error and its sources on one line (reqwest's own text hides the cause:
/// "error sending request" says nothing of a refused connection).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    excerpt(text.as_bytes())
}

/// At most [`EXCERPT_BYTES`] of `bytes` as text on one line (cut on a character
/// boundary, control characters replaced), `…` when cut.
pub fn excerpt(bytes: &[u8]) -> String {
    let cut = bytes.len() > EXCERPT_BYTES;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(EXCERPT_BYTES)]);
    // a character cut at the bound decodes as U+FFFD: drop it
    let text = if cut { text.trim_end_matches('\u{fffd}') } else { &text };
    let mut line: String = text.trim().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if cut {
        line.push('…');
    }
    line
}

/// What a refused answer's body says: OpenAI's error message when it is one,
/// else an excerpt of the body.
pub fn body_text(body: &[u8]) -> String {
    match ServerError::parse(body) {
        Some(error) => error.describe(),
        None if body.iter().all(u8::is_ascii_whitespace) => "empty body".to_owned(),
        None => excerpt(body),
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn statuses_are_classified() {
        let none = HeaderMap::new();
        let class =
            |code: u16| classify_status(StatusCode::from_u16(code).unwrap(), &none, "x".into()).kind();
        for code in [500, 502, 503, 504, 408, 301, 307] {
            assert_eq!(class(code), "retryable", "{code}");
        }
        for code in [400, 401, 403, 404, 409, 413, 422] {
            assert_eq!(class(code), "fatal", "{code}");
        }
        assert_eq!(class(429), "rate_limited");
        let error = classify_status(StatusCode::BAD_REQUEST, &none, "bad".into());
        assert_eq!(error, BackendError::Fatal("HTTP 400: bad".into()));
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_milliseconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21 07:28:00 UTC
        let after = |pairs: &[(&'static str, &str)]| retry_after(&headers(pairs), now);
        assert_eq!(after(&[("retry-after", "7")]), Some(Duration::from_secs(7)));
        assert_eq!(after(&[("retry-after", " 1.5 ")]), Some(Duration::from_millis(1500)));
        assert_eq!(after(&[("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT")]), Some(Duration::from_secs(30)));
        assert_eq!(after(&[("retry-after", "Wed, 21 Oct 2015 07:27:00 GMT")]), Some(Duration::ZERO));
        assert_eq!(
            after(&[("retry-after", "7"), ("retry-after-ms", "250")]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(after(&[("retry-after", "7"), ("retry-after-ms", "soon")]), Some(Duration::from_secs(7)));
        assert_eq!(after(&[("retry-after", "-3")]), None);
        assert_eq!(after(&[("retry-after", "later")]), None);
        assert_eq!(after(&[]), None);
        let response =
            classify_status(StatusCode::TOO_MANY_REQUESTS, &headers(&[("retry-after", "2")]), "x".into());
        assert!(
            matches!(response, BackendError::RateLimited { retry_after: Some(d), .. } if d.as_secs() == 2)
        );
    }

    #[test]
    fn openai_error_bodies_give_their_message() {
        let body = br#"{"error":{"message":"model 'x' not found","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#;
        assert_eq!(body_text(body), "invalid_request_error: model 'x' not found");
        let vllm = br#"{"object":"error","message":"too long","type":"BadRequestError","code":400}"#;
        assert_eq!(body_text(vllm), "BadRequestError: too long");
        assert_eq!(body_text(br#"{"error":"no such model"}"#), "no such model");
        assert_eq!(body_text(b"<html>\n<h1>Bad Gateway</h1></html>"), "<html> <h1>Bad Gateway</h1></html>");
        assert_eq!(body_text(b" \n"), "empty body");
        assert_eq!(body_text(br#"{"choices":[]}"#), r#"{"choices":[]}"#);
    }

    #[test]
    fn excerpts_are_bounded_on_a_character_boundary() {
        let long = "é".repeat(EXCERPT_BYTES);
        let text = excerpt(long.as_bytes());
        assert!(text.len() <= EXCERPT_BYTES + '…'.len_utf8(), "{}", text.len());
        assert!(text.ends_with("é…"));
        let message = format!(r#"{{"error":{{"message":"{}"}}}}"#, "x".repeat(10_000));
        assert!(body_text(message.as_bytes()).len() <= EXCERPT_BYTES + 3);
    }

    #[test]
    fn stream_errors_are_classified_by_code_then_words() {
        let error = |kind: Option<&str>, code: Option<&str>| {
            ServerError { message: Some("m".into()), kind: kind.map(Into::into), code: code.map(Into::into) }
                .classify_in_stream()
                .kind()
        };
        assert_eq!(error(None, None), "retryable");
        assert_eq!(error(Some("server_error"), None), "retryable");
        assert_eq!(error(Some("server_error"), Some("500")), "retryable");
        assert_eq!(error(None, Some("429")), "rate_limited");
        assert_eq!(error(Some("requests"), Some("rate_limit_exceeded")), "rate_limited");
        assert_eq!(error(Some("invalid_request_error"), Some("context_length_exceeded")), "fatal");
        assert_eq!(error(Some("BadRequestError"), Some("400")), "fatal");
        assert_eq!(error(Some("timeout"), None), "timeout");
        assert_eq!(error(Some("whatever"), Some("42")), "retryable");
    }
}
