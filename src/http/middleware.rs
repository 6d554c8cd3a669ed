//! Cross-cutting request handling, as one stack of layers applied once to every route
//! ([`stack`]; outermost first, numbered as in docs/ARCHITECTURE.md):
//!
//! 0. the edge limits and request-id check ([`super::edge`]),
//! 1. the request id: kept or generated, and echoed ([`RequestIdLayer`]),
//! 2. the `http` span ([`MakeRequestSpan`]) and tower-http's request events (`TraceLayer`),
//! 3. the client address ([`super::client_addr`]),
//! 4. JSON for every error ([`JsonErrorsLayer`]),
//! 5. the default body limit,
//! 6. request metrics ([`TrackLayer`]),
//! 7. the panic guard and 8. the request deadline ([`PanicGuardLayer`], [`DeadlineLayer`]),
//! 9. authentication on by default, with an explicit allow-list of public routes
//!    ([`AuthenticateLayer`]).
//!
//! Each layer is a tower service whose future is a plain type, and the stack is applied with
//! one `Router::layer`, so axum boxes it (service and future) once per request. The layers add
//! no boxed future and no clone of the rest of the stack of their own (a `from_fn` middleware
//! adds both, and each `Router::layer` call another boxed service and future); the one
//! allocation they add on the way is tower-http's trace body boxed into axum's `Body`.

mod authenticate;
mod guard;
mod json_errors;
mod request;
mod track;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::Route;
use tower::{Layer, Service, ServiceBuilder};
use tower_http::trace::TraceLayer;

pub use authenticate::{Authenticate, AuthenticateLayer};
pub use guard::{Deadline, DeadlineFuture, DeadlineLayer, PanicGuard, PanicGuardFuture, PanicGuardLayer};
pub use json_errors::{JsonErrors, JsonErrorsFuture, JsonErrorsLayer};
pub use request::{MakeRequestSpan, RequestId, RequestIdFuture, RequestIdLayer};
pub use track::{Track, TrackFuture, TrackLayer};

use super::AppState;
use super::client_addr::{ResolveLayer, TrustedProxies};
use super::edge::{EdgeLayer, EdgeLimits};
use super::error::ApiError;
use super::shed::{ShedLayer, ShedLimits};
use crate::metrics::HttpRequestMetrics;

/// The request-id header: read, generated, logged and echoed.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The only routes served without a bearer token. Everything else, including
/// routes added later and unknown paths, requires one.
pub const PUBLIC_ROUTES: &[&str] = &[
    "/health/live",
    "/health/ready",
    "/health",
    "/metrics",
    "/api/openapi.json",
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
];

/// Every layer of the API, for one `Router::layer` call (see the module docs). Applied to the
/// routes and the fallback, so every layer runs after routing and `track` knows the matched
/// route template.
pub fn stack(
    state: &AppState,
) -> impl Layer<
    Route,
    Service: Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
                 + Clone
                 + Send
                 + Sync
                 + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    let server = &state.settings().server;
    ServiceBuilder::new()
        // outermost: limits answered before anything is logged, and a bad incoming
        // request id dropped before it is logged or echoed
        .layer(EdgeLayer::new(EdgeLimits::from_settings(server), REQUEST_ID))
        // past the concurrency limit: a fast 503, before any per-request work
        .layer(ShedLayer::new(ShedLimits::from_settings(server)))
        .layer(RequestIdLayer::new(REQUEST_ID))
        // tower-http's trace body, boxed into axum's `Body` once, for the layers above
        .map_response(IntoResponse::into_response)
        .layer(TraceLayer::new_for_http().make_span_with(MakeRequestSpan::new(REQUEST_ID)))
        // inside the span, so the span it records `client` in is the request's
        .layer(ResolveLayer::new(TrustedProxies::from_settings(server)))
        .layer(JsonErrorsLayer)
        .layer(DefaultBodyLimit::max(server.body_limit_bytes))
        // outside the guards and authentication: it counts timeouts, panics and auth refusals too
        .layer(TrackLayer::new(Arc::new(HttpRequestMetrics::new())))
        .layer(PanicGuardLayer)
        .layer(DeadlineLayer::new(Duration::from_secs(server.request_timeout_secs)))
        .layer(AuthenticateLayer::new(state.clone()))
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        StatusCode::INTERNAL_SERVER_ERROR => "internal",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    }
}

/// The JSON 404 for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}

/// A handler panic becomes a JSON 500 (and the panic is logged).
pub fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    let detail = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unknown panic".to_owned());
    ApiError::Internal(format!("handler panicked: {detail}")).into_response()
}

#[cfg(test)]
mod tests;
