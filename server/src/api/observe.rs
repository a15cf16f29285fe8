//! What the server says about itself: every request counted and timed by its route template
//! ([`track`], into [`crate::metrics`]), `GET /metrics` (no auth, like `/health`: it holds only
//! counts, codes and route templates), and `GET /v1/openapi.json`, the API's description
//! (`openapi.json` beside this file, committed and checked against the router by a test).

use super::AppState;
use crate::metrics;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;

/// The OpenAPI 3.1 document of the API.
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

/// Counts and times a request by its route template (a route layer: only matched routes).
pub(crate) async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let resp = next.run(req).await;
    metrics::request(&route, resp.status().as_u16(), started.elapsed());
    resp
}

/// `GET /metrics`: Prometheus text; the gauges (live connections, capped requests in flight,
/// store size) read now, the
/// store's size on the blocking pool.
pub(crate) async fn metrics_handler(State(state): State<AppState>) -> Response {
    let store = state.store.clone();
    let size = tokio::task::spawn_blocking(move || store.size_bytes())
        .await
        .ok()
        .flatten();
    let text = metrics::render(state.feed.connections(), state.guard.in_flight(), size);
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        )],
        text,
    )
        .into_response()
}

/// `GET /v1/openapi.json`.
pub(crate) async fn openapi() -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        OPENAPI,
    )
        .into_response()
}
