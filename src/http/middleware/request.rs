//! The request id and the request's `http` span.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::{HeaderName, HeaderValue, Request};
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tower_http::trace::MakeSpan;
use tracing::Span;

/// Keeps the request's id header (the edge has already dropped an unacceptable one) or sets a
/// new UUID v4, and copies it onto the response unless the response has one.
#[derive(Debug, Clone)]
pub struct RequestIdLayer {
    header: HeaderName,
}

impl RequestIdLayer {
    /// The layer for the `header` request id.
    pub fn new(header: HeaderName) -> Self {
        Self { header }
    }
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestId { inner, header: self.header.clone() }
    }
}

/// The service [`RequestIdLayer`] makes.
#[derive(Debug, Clone)]
pub struct RequestId<S> {
    inner: S,
    header: HeaderName,
}

impl<S, B> Service<Request<B>> for RequestId<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = match req.headers().get(&self.header) {
            Some(id) => id.clone(),
            None => {
                let id = new_request_id();
                req.headers_mut().insert(self.header.clone(), id.clone());
                id
            }
        };
        RequestIdFuture { future: self.inner.call(req), id: Some((self.header.clone(), id)) }
    }
}

/// A new request id: a UUID v4 (thread-local RNG), hyphenated, formatted without a `String`.
fn new_request_id() -> HeaderValue {
    let mut buffer = uuid::Uuid::encode_buffer();
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
    // lowercase hex digits and hyphens are always a valid header value
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

pin_project! {
    /// The future of [`RequestId`].
    pub struct RequestIdFuture<F> {
        #[pin]
        future: F,
        id: Option<(HeaderName, HeaderValue)>,
    }
}

impl<F> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = ready!(this.future.poll(cx));
        if let Some((header, id)) = this.id.take()
            && !response.headers().contains_key(&header)
        {
            response.headers_mut().insert(header, id);
        }
        Poll::Ready(Ok(response))
    }
}

/// Builds each request's `http` span (`method`, `path`, `request_id`; `client` and `user` are
/// recorded by the layers below) for tower-http's trace layer. The level and target are `info`
/// and `castwork::http`; when they are off, the span is `Span::none()` and none of its fields
/// is read or formatted.
#[derive(Debug, Clone)]
pub struct MakeRequestSpan {
    request_id: HeaderName,
}

impl MakeRequestSpan {
    /// Spans that log the `request_id` header.
    pub fn new(request_id: HeaderName) -> Self {
        Self { request_id }
    }
}

impl<B> MakeSpan<B> for MakeRequestSpan {
    fn make_span(&mut self, req: &Request<B>) -> Span {
        // the field expressions are evaluated only when the span is enabled
        tracing::info_span!(
            target: "castwork::http",
            "http",
            method = %req.method(),
            path = %req.uri().path(),
            request_id = %req.headers().get(&self.request_id).and_then(|v| v.to_str().ok()).unwrap_or("-"),
            client = tracing::field::Empty,
            user = tracing::field::Empty,
        )
    }
}
