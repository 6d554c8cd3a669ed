//! Extractors whose rejections are [`ApiError`]s, and role guards.

use std::marker::PhantomData;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use utoipa::IntoParams;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::{RefOr, Schema};

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

/// `axum::extract::Path` whose rejection (a segment that is not valid
/// percent-encoded UTF-8) is 400 `invalid_path` in the JSON error format.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(value) = axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// A query string as `T`, or 400 `invalid_query` with a message naming the parameter.
///
/// The parameters `T` takes, and which of them may repeat, are read from its
/// `IntoParams` description ([`QueryParams::rules`]): what the OpenAPI document
/// says a route takes is what the route accepts. Before deserializing, every key
/// is checked: an unknown one, or a repeated one whose schema is not an array,
/// is refused by name. The checks come first because neither form deserializer
/// says it well on its own: `serde_urlencoded` (axum's `Query`) cannot fill a `Vec`
/// from repeated keys and answers a repeated scalar with a bare "duplicate field";
/// `serde_html_form`, used here for the values, collects repeated keys into
/// sequences but answers a repeated scalar only with "unsupported value".
pub struct ApiQuery<T>(pub T);

impl<T: QueryParams, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query()).map(Self)
    }
}

/// Parses a raw query string (without the `?`) as [`ApiQuery`] does.
pub fn parse_query<T: QueryParams>(raw: Option<&str>) -> Result<T, ApiError> {
    let raw = raw.unwrap_or("");
    T::rules().check(raw)?;
    let deserializer = serde_html_form::Deserializer::from_bytes(raw.as_bytes());
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let message = match err.path().iter().next() {
            Some(_) => format!("invalid parameter '{}': {}", err.path(), err.inner()),
            None => format!("invalid query: {}", err.inner()),
        };
        invalid_query(message)
    })
}

fn invalid_query(message: String) -> ApiError {
    ApiError::bad_request("invalid_query", message)
}

/// A query-string type for [`ApiQuery`]: its fields are the parameters, described
/// by `IntoParams` and checked by `Deserialize` (with `deny_unknown_fields`).
/// Implement it with [`query_params!`].
pub trait QueryParams: IntoParams + DeserializeOwned {
    /// The names and repeatability of the parameters, read once from the description.
    fn rules() -> &'static QueryRules;
}

/// Implements [`QueryParams`] for each type given, caching its [`QueryRules`].
macro_rules! query_params {
    ($($ty:ty),+ $(,)?) => {$(
        impl $crate::http::extract::QueryParams for $ty {
            fn rules() -> &'static $crate::http::extract::QueryRules {
                static RULES: ::std::sync::LazyLock<$crate::http::extract::QueryRules> =
                    ::std::sync::LazyLock::new($crate::http::extract::QueryRules::of::<$ty>);
                &RULES
            }
        }
    )+};
}
pub(crate) use query_params;

/// Which parameters a query type takes, and which of them may be given more than once.
#[derive(Debug)]
pub struct QueryRules {
    /// In the order of the description.
    names: Vec<String>,
    /// Per name: whether its schema is an array (`tag=a&tag=b`).
    repeatable: Vec<bool>,
}

impl QueryRules {
    /// The rules `T`'s `IntoParams` description states.
    pub fn of<T: IntoParams>() -> Self {
        let params = T::into_params(|| Some(ParameterIn::Query));
        let repeatable =
            params.iter().map(|p| matches!(p.schema, Some(RefOr::T(Schema::Array(_))))).collect();
        Self { names: params.into_iter().map(|p| p.name).collect(), repeatable }
    }

    /// Refuses an unknown key, and a repeated key that may be given once.
    fn check(&self, raw: &str) -> Result<(), ApiError> {
        let mut seen = vec![false; self.names.len()];
        for (key, _) in url::form_urlencoded::parse(raw.as_bytes()) {
            let Some(at) = self.names.iter().position(|name| *name == key) else {
                let expected = if self.names.is_empty() {
                    "this route takes none".to_owned()
                } else {
                    format!("expected one of: {}", self.names.join(", "))
                };
                return Err(invalid_query(format!("unknown parameter '{key}'; {expected}")));
            };
            if seen[at] && !self.repeatable[at] {
                return Err(invalid_query(format!("parameter '{key}' may be given once")));
            }
            seen[at] = true;
        }
        Ok(())
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
