//! The panic guard and the request deadline.

use std::convert::Infallible;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use futures::future::{Either, Ready, ready};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower::{Layer, Service};

use super::panic_response;

/// A panic in the inner service, while it is called or while its future is polled, becomes
/// the JSON 500 of [`panic_response`]. The response body is left as it is (no box around it).
#[derive(Debug, Clone, Copy, Default)]
pub struct PanicGuardLayer;

impl<S> Layer<S> for PanicGuardLayer {
    type Service = PanicGuard<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PanicGuard { inner }
    }
}

/// The service [`PanicGuardLayer`] makes.
#[derive(Debug, Clone)]
pub struct PanicGuard<S> {
    inner: S,
}

impl<S> Service<Request> for PanicGuard<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, PanicGuardFuture<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(future) => Either::Right(PanicGuardFuture { future }),
            Err(panic) => Either::Left(ready(Ok(panic_response(panic)))),
        }
    }
}

pin_project! {
    /// The future of [`PanicGuard`].
    pub struct PanicGuardFuture<F> {
        #[pin]
        future: F,
    }
}

impl<F> Future for PanicGuardFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = self.project().future;
        // after a panic the future is never polled again: this answer completes the request
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(poll) => poll,
            Err(panic) => Poll::Ready(Ok(panic_response(panic))),
        }
    }
}

/// Past its deadline (`server.request_timeout_secs` after the call) a request is answered with
/// an empty 503 and its inner future dropped. The timer is armed only when the inner future
/// is first pending, so a request answered in its first poll never touches the timer wheel.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    timeout: Duration,
}

impl DeadlineLayer {
    /// The layer for a `timeout` per request.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner, timeout: self.timeout }
    }
}

/// The service [`DeadlineLayer`] makes.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Service<Request> for Deadline<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        DeadlineFuture {
            future: self.inner.call(req),
            // a timeout too large to add is no deadline
            deadline: Instant::now().checked_add(self.timeout),
            sleep: None,
        }
    }
}

pin_project! {
    /// The future of [`Deadline`].
    pub struct DeadlineFuture<F> {
        #[pin]
        future: F,
        deadline: Option<Instant>,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl<F> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(output);
        }
        let Some(deadline) = *this.deadline else { return Poll::Pending };
        if this.sleep.is_none() {
            this.sleep.set(Some(sleep_until(deadline)));
        }
        match this.sleep.as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => {
                let mut timed_out = Response::new(Body::empty());
                *timed_out.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                Poll::Ready(Ok(timed_out))
            }
            _ => Poll::Pending,
        }
    }
}
