//! The request id: every request gets one (`x-request-id`, tower-http's `SetRequestIdLayer` with a
//! random UUID, echoed on the response by `PropagateRequestIdLayer`), every log line of the request
//! carries it (a tracing span, `request{request_id=...}`, also entered on the blocking pool), and
//! every error body carries it (`{code, message, request_id}`), so an operator can find the lines
//! behind a device's error.
//!
//! An id sent with the request is kept only if it is a UUID (a proxy in front may have set it, to
//! correlate its own logs); anything else is replaced, since the logs carry no text a peer chose.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tower_http::request_id::RequestId;

/// The header.
pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    /// The request id of the request this task is serving.
    static CURRENT: String;
}

/// The id of the request being served on this task, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(String::clone).ok()
}

/// Drops an incoming `x-request-id` that is not a UUID, so that `SetRequestIdLayer` makes one.
pub(crate) async fn keep_only_uuids(mut req: Request, next: Next) -> Response {
    let foreign = req.headers().get(HEADER).is_some_and(|v| {
        v.to_str()
            .ok()
            .and_then(|s| s.parse::<uuid::Uuid>().ok())
            .is_none()
    });
    if foreign {
        req.headers_mut().remove(HEADER);
    }
    next.run(req).await
}

/// Serves the request with its id as this task's [`current`] one, for error bodies.
pub(crate) async fn scope(req: Request, next: Next) -> Response {
    let id = id_of(&req);
    CURRENT.scope(id, next.run(req)).await
}

fn id_of(req: &Request) -> String {
    req.extensions()
        .get::<RequestId>()
        .map(RequestId::header_value)
        .or_else(|| req.headers().get(HEADER))
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The span every log line of a request is in: its id and method (never its path, which the peer
/// chose).
pub(crate) fn span(req: &Request) -> tracing::Span {
    tracing::info_span!("request", request_id = %id_of(req), method = %req.method())
}
