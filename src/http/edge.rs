//! The first thing every request meets, before it is logged or routed: the
//! request-target and header limits (`server.max_uri_bytes`,
//! `server.max_header_bytes`, `server.max_headers`), answered with the JSON
//! error body, and the incoming `X-Request-Id` check: one longer than
//! [`MAX_REQUEST_ID_LEN`] or with a byte outside visible ASCII is dropped, so a
//! generated one is logged and echoed instead.
//!
//! hyper's own limits sit above these (see `crate::server::ServeLimits`), so a
//! request only meets hyper's bodyless errors when it is past hyper's fixed
//! ceilings (a target over 65,534 bytes, a head over its buffer) or not HTTP
//! at all (a NUL or other control byte in the request line).

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::http::{HeaderMap, HeaderName, Request};
use axum::response::{IntoResponse, Response};
use futures::future::{Either, Ready, ready};
use tower::{Layer, Service};

use super::error::ApiError;
use crate::config::ServerSettings;
use crate::metrics;

/// The longest incoming request id kept.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The edge limits, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    /// Longest request target (path and query, plus scheme and authority in absolute form).
    pub max_uri_bytes: usize,
    /// Largest sum over header lines of name + value + 4 (": " and CRLF).
    pub max_header_bytes: usize,
    /// Most header lines.
    pub max_headers: usize,
}

impl EdgeLimits {
    /// The limits `[server]` configures.
    pub fn from_settings(server: &ServerSettings) -> Self {
        Self {
            max_uri_bytes: server.max_uri_bytes,
            max_header_bytes: server.max_header_bytes,
            max_headers: server.max_headers,
        }
    }

    /// The error for a request past a limit, if it is.
    pub fn check<B>(&self, request: &Request<B>) -> Option<ApiError> {
        let uri = request.uri();
        let target = uri.path_and_query().map_or(0, |pq| pq.as_str().len())
            + uri.authority().map_or(0, |a| a.as_str().len())
            + uri.scheme_str().map_or(0, |s| s.len() + 3);
        if target > self.max_uri_bytes {
            metrics::http_request_refused("uri_too_long");
            return Some(ApiError::UriTooLong(format!(
                "the request target is {target} bytes; at most {} are accepted",
                self.max_uri_bytes
            )));
        }
        let headers = request.headers();
        if headers.len() > self.max_headers {
            metrics::http_request_refused("headers_too_large");
            return Some(ApiError::HeadersTooLarge(format!(
                "the request has {} header lines; at most {} are accepted",
                headers.len(),
                self.max_headers
            )));
        }
        let bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
        if bytes > self.max_header_bytes {
            metrics::http_request_refused("headers_too_large");
            return Some(ApiError::HeadersTooLarge(format!(
                "the request headers are {bytes} bytes; at most {} are accepted",
                self.max_header_bytes
            )));
        }
        None
    }
}

/// Whether an incoming request id is kept: 1 to [`MAX_REQUEST_ID_LEN`] bytes, each visible ASCII (0x21–0x7E).
pub fn is_acceptable_request_id(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= MAX_REQUEST_ID_LEN && value.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// Drops the `header` values unless there is exactly one and it is acceptable;
/// returns whether any was dropped.
pub fn sanitize_request_id(headers: &mut HeaderMap, header: &HeaderName) -> bool {
    let mut values = headers.get_all(header).iter();
    let Some(first) = values.next() else { return false };
    if values.next().is_none() && is_acceptable_request_id(first.as_bytes()) {
        return false;
    }
    headers.remove(header);
    metrics::http_request_id_replaced();
    true
}

/// Applies [`EdgeLimits`] and the request-id check in front of a service.
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    limits: EdgeLimits,
    request_id: HeaderName,
}

impl EdgeLayer {
    /// The layer for `limits`, checking the `request_id` header.
    pub fn new(limits: EdgeLimits, request_id: HeaderName) -> Self {
        Self { limits, request_id }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Edge { inner, limits: self.limits, request_id: self.request_id.clone() }
    }
}

/// The service [`EdgeLayer`] makes.
#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    limits: EdgeLimits,
    request_id: HeaderName,
}

impl<S, B> Service<Request<B>> for Edge<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if let Some(refusal) = self.limits.check(&request) {
            return Either::Left(ready(Ok(refusal.into_response())));
        }
        sanitize_request_id(request.headers_mut(), &self.request_id);
        Either::Right(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, StatusCode};

    const LIMITS: EdgeLimits = EdgeLimits { max_uri_bytes: 64, max_header_bytes: 100, max_headers: 4 };
    const ID: HeaderName = HeaderName::from_static("x-request-id");

    fn request(uri: &str) -> Request<()> {
        Request::builder().uri(uri).body(()).unwrap()
    }

    #[test]
    fn targets_and_headers_past_the_limits_are_refused() {
        assert!(LIMITS.check(&request("/health/live?x=1")).is_none());
        let long = format!("/x?q={}", "a".repeat(60));
        let err = LIMITS.check(&request(&long)).unwrap();
        assert_eq!(err.status(), StatusCode::URI_TOO_LONG);
        assert_eq!(err.code(), "uri_too_long");
        let mut big = request("/");
        big.headers_mut().insert("x-big", HeaderValue::from_str(&"v".repeat(100)).unwrap());
        let err = LIMITS.check(&big).unwrap();
        assert_eq!(err.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(err.code(), "headers_too_large");
        let mut many = request("/");
        for i in 0..5 {
            many.headers_mut().append("x-n", HeaderValue::from(i));
        }
        assert_eq!(LIMITS.check(&many).unwrap().code(), "headers_too_large");
    }

    #[test]
    fn request_ids_are_kept_only_when_short_and_visible() {
        assert!(is_acceptable_request_id(b"abc-123_XYZ.~"));
        assert!(is_acceptable_request_id("a".repeat(128).as_bytes()));
        assert!(!is_acceptable_request_id("a".repeat(129).as_bytes()));
        assert!(!is_acceptable_request_id(b""));
        assert!(!is_acceptable_request_id(b"has space"));
        assert!(!is_acceptable_request_id(b"tab\there"));
        assert!(!is_acceptable_request_id(&[b'a', 0xff]));

        let mut headers = HeaderMap::new();
        assert!(!sanitize_request_id(&mut headers, &ID));
        headers.insert(&ID, HeaderValue::from_static("fine-id"));
        assert!(!sanitize_request_id(&mut headers, &ID));
        assert_eq!(headers.get(&ID).unwrap(), "fine-id");
        headers.append(&ID, HeaderValue::from_static("second"));
        assert!(sanitize_request_id(&mut headers, &ID), "two ids: neither is trusted");
        assert!(headers.get(&ID).is_none());
        headers.insert(&ID, HeaderValue::from_bytes(&[b'a', 0x80]).unwrap());
        assert!(sanitize_request_id(&mut headers, &ID));
        assert!(headers.get(&ID).is_none());
    }
}
