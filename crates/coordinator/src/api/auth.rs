//! Who a request is: a token of `COORDINATOR_TOKENS_FILE` (found by its SHA-256), the single
//! `COORDINATOR_API_TOKEN` (compared in constant time), or, with neither set, anyone. The
//! [`Caller`] is put in the request's extensions for the handlers.

use super::{Api, ApiError};
use crate::tenant::Caller;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 7235), so `bearer` and `BEARER` work too.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

pub(super) async fn require_token(
    State(api): State<Api>,
    mut request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or("");
    match identify(&api, given) {
        Some(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            Some("authorization"),
            "missing or wrong bearer token; send `Authorization: Bearer <token>` with a token \
             of COORDINATOR_TOKENS_FILE or COORDINATOR_API_TOKEN",
        )
        .into_response(),
    }
}

/// The caller a bearer token (`""` for none) is, or `None` when it is no one's.
fn identify(api: &Api, given: &str) -> Option<Caller> {
    if let Some(caller) = api.tenants.as_ref().and_then(|t| t.caller(given)) {
        return Some(caller);
    }
    let default = |name: &str| Caller {
        tenant: None,
        name: name.to_owned(),
    };
    match &api.token {
        Some(token) => {
            bool::from(given.as_bytes().ct_eq(token.as_bytes())).then(|| default("token"))
        }
        None if api.tenants.is_some() => None,
        None => Some(default("anonymous")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_matched_without_regard_to_case() {
        for value in ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret"] {
            assert_eq!(bearer_token(value), Some("s3cret"), "{value}");
        }
        assert_eq!(bearer_token("Basic s3cret"), None);
        assert_eq!(bearer_token("Bearers3cret"), None);
    }
}
