//! The scope check as an axum extractor: a handler that takes a [`Caller<Read>`] runs only for
//! a request whose bearer token grants `read` (401 without a token we know, 403 without the
//! scope), and the check runs before any body is read or parsed.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use crate::auth::{Scope, Token};
use crate::collector::Collector;
use crate::error::ApiError;

/// What a handler needs of the caller's token.
pub(crate) trait Need: Send + Sync + 'static {
    /// The scope it needs, or `None` for any token we know.
    const SCOPE: Option<Scope>;
}

/// The `ingest` scope.
pub(crate) struct Ingest;
/// The `read` scope.
pub(crate) struct Read;
/// The `admin` scope.
pub(crate) struct Admin;
/// Any token we know, whatever its scopes.
pub(crate) struct AnyToken;

impl Need for Ingest {
    const SCOPE: Option<Scope> = Some(Scope::Ingest);
}
impl Need for Read {
    const SCOPE: Option<Scope> = Some(Scope::Read);
}
impl Need for Admin {
    const SCOPE: Option<Scope> = Some(Scope::Admin);
}
impl Need for AnyToken {
    const SCOPE: Option<Scope> = None;
}

/// The token of a request that has what `N` needs.
pub(crate) struct Caller<N>(pub(crate) Arc<Token>, pub(crate) PhantomData<N>);

impl<N> Caller<N> {
    /// The token's name (who, in the alert store's history and in logs).
    pub(crate) fn name(&self) -> &str {
        &self.0.name
    }
}

impl<N: Need> FromRequestParts<Arc<Collector>> for Caller<N> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        c: &Arc<Collector>,
    ) -> Result<Caller<N>, ApiError> {
        let auth = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = match N::SCOPE {
            Some(scope) => c.tokens().check(auth, scope),
            None => c.tokens().authenticate(auth),
        }
        .map_err(ApiError::denied)?;
        Ok(Caller(token.clone(), PhantomData))
    }
}
