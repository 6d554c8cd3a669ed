//! JSON for every error: responses that did not come from a handler (axum's 405, the 503 of
//! the deadline, ...) get the `{"error":{"code","message"}}` body too.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::to_bytes;
use axum::extract::Request;
use axum::http::header;
use axum::response::Response;
use futures::future::BoxFuture;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::code_for;
use crate::http::error::ApiError;

/// Rewrites any 4xx/5xx response whose content type is not JSON (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonErrorsLayer;

impl<S> Layer<S> for JsonErrorsLayer {
    type Service = JsonErrors<S>;
    fn layer(&self, inner: S) -> Self::Service {
        JsonErrors { inner }
    }
}

/// The service [`JsonErrorsLayer`] makes.
#[derive(Debug, Clone)]
pub struct JsonErrors<S> {
    inner: S,
}

impl<S> Service<Request> for JsonErrors<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = JsonErrorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        JsonErrorsFuture::Waiting { future: self.inner.call(req) }
    }
}

pin_project! {
    /// The future of [`JsonErrors`]: the inner response as it is, unless it needs the JSON
    /// body; only then is its body read (a boxed future: the rare path).
    #[project = JsonErrorsProj]
    pub enum JsonErrorsFuture<F> {
        Waiting { #[pin] future: F },
        Rewriting { future: BoxFuture<'static, Response> },
    }
}

impl<F> Future for JsonErrorsFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                JsonErrorsProj::Waiting { future } => {
                    let Ok(response) = ready!(future.poll(cx));
                    if !needs_json(&response) {
                        return Poll::Ready(Ok(response));
                    }
                    self.set(Self::Rewriting { future: Box::pin(rewrite(response)) });
                }
                JsonErrorsProj::Rewriting { future } => return future.as_mut().poll(cx).map(Ok),
            }
        }
    }
}

/// Whether `response` is an error without a JSON body.
fn needs_json(response: &Response) -> bool {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return false;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    !is_json
}

/// The error body for `response`: its text (up to 4 KiB) as the message, or the status's
/// reason when it has none; every header but the content type and length kept.
async fn rewrite(response: Response) -> Response {
    let status = response.status();
    let (parts, body) = response.into_parts();
    let text =
        to_bytes(body, 4096).await.ok().and_then(|b| String::from_utf8(b.to_vec()).ok()).unwrap_or_default();
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text.trim().to_owned()
    };
    let mut fixed = ApiError::body_for(status, code_for(status), message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fixed.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fixed
}
