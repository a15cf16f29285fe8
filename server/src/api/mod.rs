//! The HTTP face of the server, and the only module that knows axum, hyper, tower and http: the
//! router and its layers ([`router`], [`AppState`]), errors ([`ApiError`], in `error.rs`), the
//! authenticated device of a request (`extract.rs`), the small routes (`routes.rs`), the sync
//! handler (`sync.rs`), the live WebSocket (`live.rs`), automerge-repo's WebSocket, the caseload and
//! the web app (`repo/`), the admin API (`admin.rs`), the request id
//! in log lines and error bodies (`request_id.rs`), the request cap and timeout (`guard.rs`),
//! `/metrics` and the OpenAPI document (`observe.rs`) and the accept loop (`listen.rs`).
//!
//! Every handler hands its work to the domain (sync, history, escrow, auth) on the blocking pool,
//! never doing store work on the async executor, and turns the domain's answer into HTTP. A
//! request body that stalls (no byte for `limits::HTTP_BODY_STALL_TIMEOUT_MS`) is abandoned with
//! 408 `request_timeout`; connection-level limits (the cap, header and write timeouts) are the
//! accept loop's.
//!
//! It may use everything else in the server; nothing else uses it but `lib.rs`.

mod admin;
mod error;
mod extract;
mod guard;
pub(crate) mod listen;
mod live;
mod observe;
mod repo;
pub mod request_id;
mod routes;
mod sync;

pub use error::{ApiError, DEVICE_REVOKED_MESSAGE};
pub use extract::Authed;

use crate::audit::Refusals;
use crate::config::Config;
use crate::feed::Feed;
use crate::store::Store;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use casenote_protocol::limits;
use listen::PerDevice;
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    /// The change feed: syncs publish to it, `GET /v1/live` connections listen.
    pub feed: Arc<Feed>,
    /// Audits refusals, counting repeats ([`crate::audit::Refusals`]).
    pub refusals: Arc<Refusals>,
    /// Each device's syncs in progress (`limits::SYNCS_PER_DEVICE_MAX`).
    pub syncs: Arc<PerDevice>,
    /// The request cap and timeout (`guard.rs`), one for every route.
    guard: guard::Guard,
    /// `GET /v1/repo` connections (`limits::REPO_CONNECTIONS_MAX`).
    repo_connections: Arc<tokio::sync::Semaphore>,
    /// Refused syncs whose bodies are being drained (`limits::REFUSED_BODY_DRAINS_MAX`).
    draining: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: Config) -> Self {
        AppState {
            store,
            feed: Arc::new(Feed::new(config.live.clone())),
            refusals: Arc::new(Refusals::default()),
            syncs: Arc::new(PerDevice::new(limits::SYNCS_PER_DEVICE_MAX)),
            guard: guard::Guard::new(&config.connections),
            repo_connections: Arc::new(tokio::sync::Semaphore::new(limits::REPO_CONNECTIONS_MAX)),
            draining: Arc::new(tokio::sync::Semaphore::new(limits::REFUSED_BODY_DRAINS_MAX)),
            config: Arc::new(config),
        }
    }
}

/// The router with every endpoint (the routes' cap and timeout: `guard.rs`; the OpenAPI
/// document, `openapi.json`, lists every one of them, checked by a test).
pub fn router(state: AppState) -> Router {
    let g = state.guard.clone();
    Router::new()
        .route("/health", g.probe(get(routes::health)))
        .route("/ready", g.probe(get(routes::ready)))
        .route("/metrics", g.probe(get(observe::metrics_handler)))
        .route("/v1/openapi.json", g.probe(get(observe::openapi)))
        .route("/v1/whoami", g.short(get(routes::whoami)))
        .route("/v1/history/{doc_id}", g.short(get(routes::history)))
        .route(
            "/v1/escrow/{device_id}",
            g.short(post(routes::escrow_handler)),
        )
        .route("/v1/break-glass", g.short(post(routes::break_glass)))
        .route("/v1/live", get(live::live_handler))
        // automerge-repo's protocol, the caseload and the web app (`repo/`, issue 14).
        .route("/v1/repo", get(repo::repo_handler))
        .route("/v1/caseload", g.short(get(repo::app::caseload)))
        .route("/app", g.short(get(repo::app::to_app)))
        .route("/app/", g.short(get(repo::app::index)))
        .route("/app/{file}", g.short(get(repo::app::file)))
        .merge(admin::routes(&g))
        .route(
            "/v1/sync",
            g.long(post(sync::sync_handler).layer(DefaultBodyLimit::disable())),
        )
        // Every matched request counted and timed by its route template (`observe.rs`).
        .route_layer(axum::middleware::from_fn(observe::track))
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(limits::SMALL_BODY_BYTES_MAX))
        .layer(RequestBodyTimeoutLayer::new(
            state.config.connections.body_stall_timeout,
        ))
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::internal("a handler panicked").into_response()
            },
        ))
        // The request id (`request_id.rs`), outermost: made first, in every log line and error.
        .layer(axum::middleware::from_fn(request_id::scope))
        .layer(TraceLayer::new_for_http().make_span_with(request_id::span))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(axum::middleware::from_fn(request_id::keep_only_uuids))
        .with_state(state)
}

#[cfg(test)]
mod api_tests;
#[cfg(test)]
mod guard_tests;
#[cfg(test)]
mod listen_tests;
#[cfg(test)]
mod live_tests;
#[cfg(test)]
mod openapi_tests;
#[cfg(test)]
mod repo_tests;
