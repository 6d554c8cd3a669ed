//! Load shedding at the HTTP edge: at most `server.max_in_flight_requests`
//! requests are served at once; a request that finds every slot taken waits
//! for one at most `server.queue_wait_ms`, and only while fewer than
//! `server.max_queued_requests` wait; otherwise it is answered at once with 503
//! `overloaded` and `Retry-After`. So under overload the node answers fast 503s
//! instead of queueing without bound, and what it does serve keeps its latency.
//!
//! The liveness and readiness probes are never shed: an orchestrator must be able
//! to tell a busy node from a dead one.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::Request;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use super::error::ApiError;
use crate::config::ServerSettings;
use crate::metrics;

/// Paths that are never shed.
const NEVER_SHED: [&str; 2] = ["/health/live", "/health/ready"];

/// How many requests are served at once, and how many may wait for a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShedLimits {
    /// Requests served at once (0: no limit).
    pub max_in_flight: usize,
    /// Requests waiting for a turn at once; more are refused at once.
    pub max_queued: usize,
    /// Longest wait for a turn.
    pub queue_wait: Duration,
}

impl ShedLimits {
    /// The limits `[server]` describes.
    pub fn from_settings(server: &ServerSettings) -> Self {
        Self {
            max_in_flight: server.max_in_flight_requests,
            max_queued: server.max_queued_requests,
            queue_wait: Duration::from_millis(server.queue_wait_ms),
        }
    }
}

#[derive(Clone)]
struct Gate {
    permits: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
    limits: ShedLimits,
}

impl Gate {
    /// A turn for one request, or the refusal to answer instead.
    async fn admit(self) -> Result<OwnedSemaphorePermit, ApiError> {
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            return Ok(permit);
        }
        let queued = self.queued.fetch_add(1, Ordering::AcqRel);
        let _leave = Leave(&self.queued);
        if queued >= self.limits.max_queued {
            metrics::http_shed("queue_full");
            return Err(overloaded());
        }
        match tokio::time::timeout(self.limits.queue_wait, Arc::clone(&self.permits).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // the semaphore is never closed: only the wait can end this way
            _ => {
                metrics::http_shed("queue_timeout");
                Err(overloaded())
            }
        }
    }
}

/// Decrements the waiting count however the wait ends (answered, timed out, dropped).
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn overloaded() -> ApiError {
    ApiError::Unavailable {
        code: "overloaded",
        message: "the node is serving as many requests as it can; retry shortly".to_owned(),
        retry_after: Duration::from_secs(1),
    }
}

/// Sheds load in front of a service (see the module documentation).
#[derive(Clone)]
pub struct ShedLayer {
    gate: Option<Gate>,
}

impl ShedLayer {
    /// The layer for `limits`; with `max_in_flight` 0 it lets everything through.
    pub fn new(limits: ShedLimits) -> Self {
        let gate = (limits.max_in_flight > 0).then(|| Gate {
            permits: Arc::new(Semaphore::new(limits.max_in_flight)),
            queued: Arc::default(),
            limits,
        });
        Self { gate }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Shed { inner, gate: self.gate.clone() }
    }
}

/// The service [`ShedLayer`] makes.
#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    gate: Option<Gate>,
}

impl<S, B> Service<Request<B>> for Shed<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ShedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let Some(gate) = &self.gate else {
            return ShedFuture::Through { future: self.inner.call(request), permit: None };
        };
        if NEVER_SHED.contains(&request.uri().path()) {
            return ShedFuture::Through { future: self.inner.call(request), permit: None };
        }
        // a free slot: taken without waiting, and without an allocation
        if let Ok(permit) = Arc::clone(&gate.permits).try_acquire_owned() {
            return ShedFuture::Through { future: self.inner.call(request), permit: Some(permit) };
        }
        // the service that was made ready is the one called; a fresh clone takes its place
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let gate = gate.clone();
        ShedFuture::Waiting {
            future: Box::pin(async move {
                match gate.admit().await {
                    Ok(permit) => {
                        let response = inner.call(request).await;
                        drop(permit);
                        response
                    }
                    Err(refusal) => Ok(refusal.into_response()),
                }
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of [`Shed`]: the inner service's, holding its slot until it is
    /// ready, or (past the limit) a wait for a slot that may end in a refusal.
    #[project = ShedProjection]
    pub enum ShedFuture<F> {
        Through { #[pin] future: F, permit: Option<OwnedSemaphorePermit> },
        Waiting { future: BoxFuture<'static, Result<Response, Infallible>> },
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for ShedFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ShedProjection::Through { future, permit } => {
                let response = std::task::ready!(future.poll(cx));
                // the slot is free as soon as the response is
                permit.take();
                Poll::Ready(response)
            }
            ShedProjection::Waiting { future } => future.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{StatusCode, header};
    use tokio::sync::Notify;
    use tower::ServiceExt;

    use super::*;

    const LIMITS: ShedLimits =
        ShedLimits { max_in_flight: 1, max_queued: 1, queue_wait: Duration::from_millis(100) };

    /// A service whose `/slow` requests wait until `release` is notified.
    fn service(
        release: Arc<Notify>,
    ) -> impl Service<Request<Body>, Response = Response, Error = Infallible, Future: Send> + Clone + Send + 'static
    {
        tower::service_fn(move |req: Request<Body>| {
            let release = Arc::clone(&release);
            async move {
                if req.uri().path() == "/slow" {
                    release.notified().await;
                }
                Ok::<_, Infallible>(StatusCode::OK.into_response())
            }
        })
    }

    fn get(path: &str) -> Request<Body> {
        Request::builder().uri(path).body(Body::empty()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_limit_requests_wait_briefly_then_get_a_fast_503() {
        let release = Arc::new(Notify::new());
        let svc = ShedLayer::new(LIMITS).layer(service(Arc::clone(&release)));
        let busy = tokio::spawn(svc.clone().oneshot(get("/slow")));
        tokio::task::yield_now().await;

        // the one slot is taken: a second request waits its turn, then is refused
        let started = tokio::time::Instant::now();
        let refused = svc.clone().oneshot(get("/items")).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers().get(header::RETRY_AFTER).unwrap(), "1");
        assert_eq!(started.elapsed(), LIMITS.queue_wait, "it waited exactly the queue wait");
        let body = axum::body::to_bytes(refused.into_body(), 1024).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "overloaded");

        // the probes are never shed
        let live = svc.clone().oneshot(get("/health/live")).await.unwrap();
        assert_eq!(live.status(), StatusCode::OK);

        // one waiter at most: while one waits, the next is refused without waiting
        let waiting = tokio::spawn(svc.clone().oneshot(get("/items")));
        tokio::task::yield_now().await;
        let started = tokio::time::Instant::now();
        let at_once = svc.clone().oneshot(get("/items")).await.unwrap();
        assert_eq!(at_once.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(started.elapsed(), Duration::ZERO, "a full queue refuses at once");

        // the slot comes free: the waiter is served, and so is the busy request
        release.notify_one();
        assert_eq!(busy.await.unwrap().unwrap().status(), StatusCode::OK);
        assert_eq!(waiting.await.unwrap().unwrap().status(), StatusCode::OK);
        let after = svc.clone().oneshot(get("/items")).await.unwrap();
        assert_eq!(after.status(), StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_lets_everything_through() {
        let release = Arc::new(Notify::new());
        let limits = ShedLimits { max_in_flight: 0, ..LIMITS };
        let svc = ShedLayer::new(limits).layer(service(Arc::clone(&release)));
        let slow: Vec<_> = (0..5).map(|_| tokio::spawn(svc.clone().oneshot(get("/slow")))).collect();
        tokio::task::yield_now().await;
        assert_eq!(svc.clone().oneshot(get("/items")).await.unwrap().status(), StatusCode::OK);
        release.notify_waiters();
        for task in slow {
            assert_eq!(task.await.unwrap().unwrap().status(), StatusCode::OK);
        }
    }
}
