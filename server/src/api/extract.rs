//! [`Authed`]: the authenticated device of a request, from `Authorization: Bearer TOKEN`.
//!
//! A missing or unknown token is `401 unauthorized`; a token that was revoked (its device, or its
//! member of staff) is `401 device_revoked`, the one answer on which a client wipes its local
//! store. Both are audited as `refused` through [`AppState::refusals`], which writes the first of
//! a kind at once and counts repeats; the entry carries the code and the route template, never
//! the path the peer sent.

use super::error::{blocking, ApiError};
use super::AppState;
use crate::audit::RefusalKind;
use crate::auth::{self, Authenticated, Principal};
use crate::now_ms;
use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use casenote_protocol::ErrorCode;

/// The token of `Authorization: Bearer TOKEN`, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        })
}

/// The route template of a request, for the audit of a refusal: never the path, which is text
/// the peer chose.
pub(super) fn route_template(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
}

/// An authenticated device, extracted from `Authorization: Bearer TOKEN`.
pub struct Authed(pub Principal);

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers);
        let route = route_template(parts);
        authenticate(state, token, route).await.map(Authed)
    }
}

/// The device of `token`, or the refusal (audited as above, with `route`, never the path): for
/// the bearer token of every route, and the `token` query parameter of `GET /v1/repo` (browsers
/// cannot set headers on a WebSocket). From the store's memory on this thread when it holds the
/// token's credentials as they are now ([`auth::authenticate_cached`]), else read on the blocking
/// pool (which a refusal always is, to be audited).
pub(super) async fn authenticate(
    state: &AppState,
    token: Option<String>,
    route: Option<String>,
) -> Result<Principal, ApiError> {
    if let Some(p) = token
        .as_deref()
        .and_then(|t| auth::authenticate_cached(&*state.store, t))
    {
        return Ok(p);
    }
    let (store, refusals) = (state.store.clone(), state.refusals.clone());
    blocking(move || {
        let found = match &token {
            Some(t) => auth::authenticate(&*store, t)?,
            None => Authenticated::Unknown,
        };
        let (kind, details, answer) = match found {
            Authenticated::Ok(p) => return Ok(Ok(p)),
            Authenticated::Revoked {
                device_id,
                staff_id,
            } => (
                RefusalKind::device(ErrorCode::DeviceRevoked, staff_id, device_id),
                serde_json::json!({ "route": route }),
                ApiError::device_revoked(),
            ),
            Authenticated::Unknown => (
                RefusalKind::unauthenticated(ErrorCode::Unauthorized),
                serde_json::json!({ "route": route, "token_sent": token.is_some() }),
                ApiError::unauthorized(),
            ),
        };
        // Logged, not propagated: an audit failure must not change the answer.
        if let Err(e) = refusals.record(&*store, kind, details, now_ms()) {
            tracing::error!(error = %e, "could not append to the audit log");
        }
        Ok(Err(answer))
    })
    .await?
}
