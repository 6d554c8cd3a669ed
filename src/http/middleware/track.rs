//! Request metrics: every request counted by matched route, method and status, with its latency.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::metrics::HttpRequestMetrics;

/// Counts every request in `castwork_http_requests_total` and
/// `castwork_http_request_duration_seconds`, through handles resolved once per series.
#[derive(Clone, Default)]
pub struct TrackLayer {
    metrics: Arc<HttpRequestMetrics>,
}

impl TrackLayer {
    /// The layer recording into `metrics` (shared by every route the layer is applied to).
    pub fn new(metrics: Arc<HttpRequestMetrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Track { inner, metrics: self.metrics.clone() }
    }
}

/// The service [`TrackLayer`] makes.
#[derive(Clone)]
pub struct Track<S> {
    inner: S,
    metrics: Arc<HttpRequestMetrics>,
}

impl<S> Service<Request> for Track<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // the template's `Arc<str>`, not a copy of it
        let route = req.extensions().get::<MatchedPath>().cloned();
        let method = req.method().clone();
        TrackFuture {
            future: self.inner.call(req),
            metrics: self.metrics.clone(),
            route,
            method,
            started: Instant::now(),
        }
    }
}

pin_project! {
    /// The future of [`Track`]: records the request when the inner service answers.
    pub struct TrackFuture<F> {
        #[pin]
        future: F,
        metrics: Arc<HttpRequestMetrics>,
        route: Option<MatchedPath>,
        method: Method,
        started: Instant,
    }
}

impl<F> Future for TrackFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.future.poll(cx));
        let route = this.route.as_ref().map_or("unmatched", MatchedPath::as_str);
        this.metrics.record(route, this.method, response.status().as_u16(), this.started.elapsed());
        Poll::Ready(Ok(response))
    }
}
