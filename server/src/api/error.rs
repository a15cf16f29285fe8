//! [`ApiError`]: every error the API answers with, as JSON `{code, message, request_id}` with a
//! stable code from `casenote_protocol::ErrorCode` and the request's id (`request_id.rs`).
//! Internal failures are logged in the request's span and answered with its id only; a store that cannot write answers `store_full` and says that
//! nothing was kept. Also [`blocking`], which runs store calls off the async executor.

use crate::store::StoreError;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use casenote_protocol::{limits, ErrorBody, ErrorCode};

/// The message of the `device_revoked` answer.
pub const DEVICE_REVOKED_MESSAGE: &str =
    "this device has been revoked; its local data must be wiped";

/// Every error the API answers with.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "send a valid device token as `Authorization: Bearer cn_...`; ask an admin for a new one if it was revoked",
        )
    }

    /// A token that was revoked (its device, or its staff member). The client wipes its store on
    /// this code and on no other.
    pub fn device_revoked() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::DeviceRevoked,
            DEVICE_REVOKED_MESSAGE,
        )
    }

    /// An internal failure: the detail is logged in the request's span (its request id); only
    /// the id is sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        let request_id =
            super::request_id::current().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        tracing::error!(%request_id, error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("internal error; quote request id {request_id} to the administrator"),
        )
    }

    /// The store stayed busy through every retry (conflicting writes) or for the whole wait for
    /// a database connection: nothing was kept, and the device may try again after the
    /// `Retry-After` seconds (503 `server_busy`, as at the request cap).
    fn busy(e: StoreError) -> Self {
        tracing::warn!(error = %e, "a request gave up: the store was busy");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServerBusy,
            format!(
                "{e}. Nothing in this request was stored: keep your edits and sync again after \
                 the Retry-After seconds"
            ),
        )
    }

    pub(crate) fn stalled() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::RequestTimeout,
            "the body stopped arriving and the request was abandoned; nothing was stored: send it again",
        )
    }

    pub(crate) fn too_large(len: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BodyTooLarge,
            format!(
                "body is {len} bytes or more; the limit is {} bytes: sync in smaller pieces",
                limits::REQUEST_BYTES_MAX
            ),
        )
    }
}

impl From<StoreError> for ApiError {
    /// A store that cannot write answers with a code (`store_full`: 507 when its disk is below
    /// the floor, 503 otherwise) and says that nothing was kept; any other failure is internal.
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
            StoreError::Unwritable(_) => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::Conflict | StoreError::Busy(_) => return ApiError::busy(e),
            _ => return ApiError::internal(e),
        };
        tracing::warn!(error = %e, "write refused: the store cannot write");
        Self::new(
            status,
            ErrorCode::StoreFull,
            format!(
                "{e}. Nothing in this request was stored: keep your edits and sync again later; \
                 the server resumes by itself once it can write"
            ),
        )
    }
}

impl IntoResponse for ApiError {
    /// The JSON error; a `server_busy` answer also says when to come back (`Retry-After`).
    fn into_response(self) -> Response {
        crate::metrics::refused(self.code);
        let busy = self.code == ErrorCode::ServerBusy;
        let body = ErrorBody {
            code: self.code,
            message: self.message,
            request_id: super::request_id::current(),
        };
        let mut resp = (self.status, Json(body)).into_response();
        if busy {
            let retry = HeaderValue::from(limits::HTTP_BUSY_RETRY_AFTER_S);
            resp.headers_mut().insert(RETRY_AFTER, retry);
        }
        resp
    }
}

/// Runs a store call on the blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    // The request's span goes with the work, so its log lines carry the request id.
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(f)).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(join) => Err(ApiError::internal(format!(
            "a blocking task failed: {join}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer `e` becomes: status, `Retry-After`, error code.
    async fn answer(e: StoreError) -> (StatusCode, Option<String>, ErrorCode) {
        let resp = ApiError::from(e).into_response();
        let status = resp.status();
        let retry = resp
            .headers()
            .get(RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
            .await
            .unwrap();
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        (status, retry, body.code)
    }

    #[tokio::test]
    async fn a_store_too_busy_to_take_the_request_is_503_server_busy_with_retry_after() {
        let retry = Some(limits::HTTP_BUSY_RETRY_AFTER_S.to_string());
        for busy in [
            StoreError::Busy("every connection in use".into()),
            StoreError::Conflict,
        ] {
            assert_eq!(
                answer(busy).await,
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    retry.clone(),
                    ErrorCode::ServerBusy
                )
            );
        }
        // A failure that is not load stays internal, with no invitation to retry.
        let failed = answer(StoreError::Backend("connection reset".into())).await;
        assert_eq!(
            failed,
            (StatusCode::INTERNAL_SERVER_ERROR, None, ErrorCode::Internal)
        );
    }
}
