//! Authentication on by default: every route but [`PUBLIC_ROUTES`] needs a bearer token.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures::future::{Either, Ready, ready};
use tower::{Layer, Service};

use super::{PUBLIC_ROUTES, bearer_token};
use crate::auth::AuthError;
use crate::http::AppState;
use crate::http::error::ApiError;

/// Verifies the bearer token of every non-public request and stores the
/// [`crate::auth::Principal`] in the request extensions.
#[derive(Clone)]
pub struct AuthenticateLayer {
    state: AppState,
}

impl AuthenticateLayer {
    /// The layer checking tokens with `state`'s [`crate::auth::AuthService`].
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authenticate { inner, state: self.state.clone() }
    }
}

/// The service [`AuthenticateLayer`] makes. The check needs no waiting, so it is done in
/// `call`: a refusal is a ready response, a request that passes gets the inner future as is.
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for Authenticate<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        if PUBLIC_ROUTES.contains(&req.uri().path()) {
            return Either::Right(self.inner.call(req));
        }
        let verified = match bearer_token(req.headers()) {
            Some(token) => self.state.auth().authenticate(token),
            None => Err(AuthError::MissingToken),
        };
        match verified {
            Ok(principal) => {
                tracing::Span::current().record("user", principal.username.as_str());
                req.extensions_mut().insert(principal);
                Either::Right(self.inner.call(req))
            }
            Err(err) => Either::Left(ready(Ok(ApiError::from(err).into_response()))),
        }
    }
}
