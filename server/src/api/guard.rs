//! The request cap and the request timeout (issue 13), as tower layers on the routes: tower's
//! `GlobalConcurrencyLimit` (one semaphore for every capped route) under `LoadShed`, and tower's
//! `Timeout`, with axum's `HandleErrorLayer` turning what they refuse into the usual JSON error
//! (`error.rs`, with the request id) and `Retry-After`.
//!
//! - At most `ConnectionSettings::requests_max` ([`limits::HTTP_REQUESTS_IN_FLIGHT_MAX`]) requests
//!   are served at once; one more is answered at once 503 `server_busy`, never queued.
//! - A short request gets `ConnectionSettings::request_timeout`
//!   ([`limits::HTTP_REQUEST_TIMEOUT_MS`]); past it, 503 `request_timeout`.
//!
//! Which route gets which ([`Guard::short`], [`Guard::long`], [`Guard::probe`]): the probes
//! (`/health`, `/ready`, `/metrics`, the OpenAPI document) are timed but never capped, so a busy
//! server still says it is up; `/v1/sync` and the admin acts that read a whole log are capped but
//! not timed (limits.rs says why); `/v1/live` is neither (it has its own cap, and lives for
//! hours); everything else is both.

use super::error::ApiError;
use crate::config::ConnectionSettings;
use axum::error_handling::HandleErrorLayer;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use casenote_protocol::{limits, ErrorCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::error::Overloaded;
use tower::timeout::error::Elapsed;
use tower::timeout::TimeoutLayer;
use tower::{BoxError, ServiceBuilder};

/// The cap's semaphore and the timeout, shared by every route of a server.
#[derive(Clone)]
pub(crate) struct Guard {
    requests: Arc<Semaphore>,
    requests_max: usize,
    timeout: Duration,
}

impl Guard {
    pub(crate) fn new(settings: &ConnectionSettings) -> Self {
        Guard {
            requests: Arc::new(Semaphore::new(settings.requests_max)),
            requests_max: settings.requests_max,
            timeout: settings.request_timeout,
        }
    }

    /// Capped requests being served now.
    pub(crate) fn in_flight(&self) -> usize {
        self.requests_max
            .saturating_sub(self.requests.available_permits())
    }

    /// Capped and timed: the cap of [`Guard::long`] around the timeout of [`Guard::probe`].
    pub(crate) fn short<S: Clone + Send + Sync + 'static>(
        &self,
        route: MethodRouter<S>,
    ) -> MethodRouter<S> {
        self.long(self.probe(route))
    }

    /// Capped, not timed.
    pub(crate) fn long<S: Clone + Send + Sync + 'static>(
        &self,
        route: MethodRouter<S>,
    ) -> MethodRouter<S> {
        route.layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(refusal))
                .load_shed()
                .layer(GlobalConcurrencyLimitLayer::with_semaphore(
                    self.requests.clone(),
                )),
        )
    }

    /// Timed, not capped.
    pub(crate) fn probe<S: Clone + Send + Sync + 'static>(
        &self,
        route: MethodRouter<S>,
    ) -> MethodRouter<S> {
        route.layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(refusal))
                .layer(TimeoutLayer::new(self.timeout)),
        )
    }
}

/// What the cap or the timeout refused, as the usual JSON error with `Retry-After`.
async fn refusal(e: BoxError) -> Response {
    let error = if e.is::<Overloaded>() {
        tracing::warn!("a request was refused: the server is at its request cap");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServerBusy,
            "the server is busy and did nothing with this request; keep your edits and try again \
             after the Retry-After seconds",
        )
    } else if e.is::<Elapsed>() {
        tracing::warn!("a request timed out");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::RequestTimeout,
            "the server did not answer in time; what the request asked may still be done, so \
             check before repeating it",
        )
    } else {
        ApiError::internal(e)
    };
    let retry = HeaderValue::from(limits::HTTP_BUSY_RETRY_AFTER_S);
    ([(RETRY_AFTER, retry)], error).into_response()
}
