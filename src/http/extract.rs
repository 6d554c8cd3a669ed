//! Extractors whose rejections are [`ApiError`]s, and role guards.

use std::marker::PhantomData;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::auth::{AuthError, Principal, Role};

/// `axum::Json` with JSON errors.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

/// `axum::extract::Query` with JSON errors.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) = axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// A minimum role, as a type.
pub trait MinRole: Send + Sync {
    /// The least role that passes.
    const ROLE: Role;
}

/// Marker: viewer or above.
pub struct ViewerRole;
/// Marker: editor or above.
pub struct EditorRole;
/// Marker: admin.
pub struct AdminRole;

impl MinRole for ViewerRole {
    const ROLE: Role = Role::Viewer;
}
impl MinRole for EditorRole {
    const ROLE: Role = Role::Editor;
}
impl MinRole for AdminRole {
    const ROLE: Role = Role::Admin;
}

/// The authenticated caller, holding at least role `R` (else 403).
pub struct Authorized<R: MinRole> {
    pub principal: Principal,
    _role: PhantomData<R>,
}

/// Viewer or above.
pub type Viewer = Authorized<ViewerRole>;
/// Editor or above.
pub type Editor = Authorized<EditorRole>;
/// Admin.
pub type Admin = Authorized<AdminRole>;

impl<R: MinRole, S: Send + Sync> FromRequestParts<S> for Authorized<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // the authentication middleware put it there; without it the route is public by mistake
        let principal = parts.extensions.get::<Principal>().cloned().ok_or(AuthError::MissingToken)?;
        if !principal.role.satisfies(R::ROLE) {
            return Err(AuthError::Forbidden { required: R::ROLE }.into());
        }
        Ok(Self { principal, _role: PhantomData })
    }
}

/// The request's `If-None-Match` header, if any (only that header is copied,
/// where axum's `HeaderMap` extractor would clone them all).
pub struct IfNoneMatch(pub Option<axum::http::HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get(axum::http::header::IF_NONE_MATCH).cloned()))
    }
}
