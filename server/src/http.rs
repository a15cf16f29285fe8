//! The HTTP face of the server: the axum router, bearer-token authentication and [`ApiError`].
//!
//! Only this module knows HTTP. Every error leaves as JSON `{code, message}` with a stable code
//! from `casenote_protocol::ErrorCode`; internal failures are logged with a request id and answered
//! with that id only. Store calls run on the blocking pool, never on the async executor.
//!
//! Authentication: a missing or unknown token is `401 unauthorized`; a token that was revoked
//! (its device, or its member of staff) is `401 device_revoked` with [`DEVICE_REVOKED_MESSAGE`],
//! the one answer on which a client wipes its local store. Both are audited as `refused` through
//! [`AppState::refusals`], which writes the first of a kind at once and counts repeats; the entry
//! carries the code and the route template, never the path the peer sent.
//!
//! A request body that stalls (no byte for `limits::HTTP_BODY_STALL_TIMEOUT_MS`) is abandoned with
//! 408 `request_timeout`. Connection-level limits (the cap, header and write timeouts) are
//! [`crate::listen`]'s.

use crate::audit::{RefusalKind, Refusals};
use crate::auth::{self, Authenticated, Principal};
use crate::listen::{ConnectionSettings, PerDevice};
use crate::live::{Live, LiveSettings};
use crate::store::{Store, StoreError};
use crate::{now_ms, sync};
use axum::body::{Body, Bytes};
use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Path, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use casenote_protocol::wire::{self, TeamRef, WhoAmI, CBOR_MEDIA_TYPE};
use casenote_protocol::{limits, ErrorBody, ErrorCode};
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutError};

/// The message of the `device_revoked` answer.
pub const DEVICE_REVOKED_MESSAGE: &str =
    "this device has been revoked; its local data must be wiped";

/// Server settings that are not limits (limits live in `casenote_protocol::limits`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Filing a note more than this long after it happened needs a late-entry reason
    /// (`serve --late-entry-hours N`).
    pub late_entry_after_ms: i64,
    /// The live channel's settings (`GET /v1/live`).
    pub live: LiveSettings,
    /// The offline lease sent to devices in every sync answer (`serve --lock-after-hours`,
    /// `--wipe-after-days`).
    pub lease: wire::Lease,
    /// The connection cap and timeouts ([`crate::listen`]).
    pub connections: ConnectionSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            late_entry_after_ms: limits::LATE_ENTRY_AFTER_MS_DEFAULT,
            live: LiveSettings::default(),
            lease: wire::Lease::default(),
            connections: ConnectionSettings::default(),
        }
    }
}

impl Config {
    /// The record rules this configuration asks for.
    pub fn rules(&self) -> crate::validate::Rules {
        crate::validate::Rules {
            late_entry_after_ms: self.late_entry_after_ms,
        }
    }

    /// This configuration with other live-channel settings.
    pub fn with_live(mut self, live: LiveSettings) -> Self {
        self.live = live;
        self
    }

    /// This configuration with another offline lease for devices.
    pub fn with_lease(mut self, lease: wire::Lease) -> Self {
        self.lease = lease;
        self
    }

    /// This configuration with other connection settings.
    pub fn with_connections(mut self, connections: ConnectionSettings) -> Self {
        self.connections = connections;
        self
    }

    /// This configuration with another late-entry window.
    pub fn with_late_entry_after_ms(mut self, ms: i64) -> Self {
        self.late_entry_after_ms = ms;
        self
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    /// The live channel's hub: syncs publish to it, `GET /v1/live` connections listen.
    pub live: Arc<Live>,
    /// Audits refusals, counting repeats ([`crate::audit::Refusals`]).
    pub refusals: Arc<Refusals>,
    /// Each device's syncs in progress (`limits::SYNCS_PER_DEVICE_MAX`).
    pub syncs: Arc<PerDevice>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: Config) -> Self {
        AppState {
            store,
            live: Arc::new(Live::new(config.live.clone())),
            refusals: Arc::new(Refusals::default()),
            syncs: Arc::new(PerDevice::new(limits::SYNCS_PER_DEVICE_MAX)),
            config: Arc::new(config),
        }
    }
}

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

    /// An internal failure: the detail is logged under a fresh request id; only the id is sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        let request_id = uuid::Uuid::new_v4();
        tracing::error!(%request_id, error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("internal error; quote request id {request_id} to the administrator"),
        )
    }

    fn stalled() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::RequestTimeout,
            "the body stopped arriving and the request was abandoned; nothing was stored: send it again",
        )
    }

    fn too_large(len: usize) -> Self {
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
            StoreError::Full { .. } => StatusCode::INSUFFICIENT_STORAGE,
            StoreError::Unwritable(_) => StatusCode::SERVICE_UNAVAILABLE,
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
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

/// Runs a store call on the blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(join) => Err(ApiError::internal(format!(
            "a blocking task failed: {join}"
        ))),
    }
}

/// The token of `Authorization: Bearer TOKEN`, if any.
fn bearer(headers: &HeaderMap) -> Option<String> {
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

/// An authenticated device, extracted from `Authorization: Bearer TOKEN`.
pub struct Authed(pub Principal);

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers);
        // The route template, never the path: the path is text the peer chose.
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map(|m| m.as_str().to_string());
        let (store, refusals) = (state.store.clone(), state.refusals.clone());
        blocking(move || {
            let found = match &token {
                Some(t) => auth::authenticate(&*store, t)?,
                None => Authenticated::Unknown,
            };
            let (kind, details, answer) = match found {
                Authenticated::Ok(p) => return Ok(Ok(Authed(p))),
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
}

/// The router with every endpoint.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/v1/whoami", get(whoami))
        .route("/v1/history/{doc_id}", get(history))
        .route("/v1/escrow/{device_id}", post(escrow_handler))
        .route("/v1/live", get(live_handler))
        .route(
            "/v1/sync",
            post(sync_handler).layer(DefaultBodyLimit::disable()),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limits::SMALL_BODY_BYTES_MAX))
        .layer(RequestBodyTimeoutLayer::new(
            state.config.connections.body_stall_timeout,
        ))
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::internal("a handler panicked").into_response()
            },
        ))
        .with_state(state)
}

/// `GET /health` (no auth): the process is up (always 200); `status` is `degraded` and
/// `store_writable` false while the store refuses writes (see `/ready`).
async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    let writable = writability(&state).await.writable;
    Json(serde_json::json!({
        "status": if writable { "ok" } else { "degraded" },
        "store_writable": writable,
    }))
}

/// `GET /ready` (no auth): 200 when the store accepts writes, 503 with the reason when it does
/// not (its disk below the free-space floor, a failed or stuck flush). Checking may start the
/// store's recovery once the cause has gone.
async fn ready(State(state): State<AppState>) -> Response {
    let w = writability(&state).await;
    let status = if w.writable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "ready": w.writable,
        "store_writable": w.writable,
        "reason": w.reason,
        "free_bytes": w.free_bytes,
        "free_bytes_min": w.free_bytes_min,
    });
    (status, Json(body)).into_response()
}

async fn writability(state: &AppState) -> crate::store::Writability {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || store.writability())
        .await
        .unwrap_or_else(|e| crate::store::Writability {
            writable: false,
            reason: Some(format!("the check failed: {e}")),
            free_bytes: None,
            free_bytes_min: 0,
        })
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no such endpoint",
    )
}

async fn whoami(
    State(state): State<AppState>,
    Authed(who): Authed,
) -> Result<Json<WhoAmI>, ApiError> {
    let store = state.store.clone();
    let answer = blocking(move || {
        let org = store
            .get_org(who.staff.org_id)?
            .map(|o| o.name)
            .unwrap_or_default();
        let mut teams = Vec::new();
        for id in &who.staff.teams {
            if let Some(t) = store.get_team(*id)? {
                teams.push(TeamRef {
                    team_id: t.team_id,
                    name: t.name,
                });
            }
        }
        Ok(WhoAmI {
            staff_id: who.staff.staff_id,
            device_id: who.device_id,
            name: who.staff.name,
            role: who.staff.role.to_string(),
            org,
            teams,
        })
    })
    .await?;
    Ok(Json(answer))
}

/// `GET /v1/history/{doc_id}`: who changed a document, when the server received each change, in
/// the order received (JSON array of [`wire::HistoryEntry`]). A document the bearer may not read
/// is answered exactly like a missing one (404 `not_found`). Audited as `read`.
async fn history(
    State(state): State<AppState>,
    Authed(who): Authed,
    Path(doc_id): Path<String>,
) -> Result<Json<Vec<wire::HistoryEntry>>, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "no such document, or none you may read",
        )
    };
    let Ok(doc_id) = doc_id.parse::<casenote_protocol::DocId>() else {
        return Err(not_found());
    };
    let store = state.store.clone();
    let entries = blocking(move || crate::history::read(&*store, &who, doc_id, now_ms())).await?;
    entries.map(Json).ok_or_else(not_found)
}

/// `POST /v1/escrow/{device_id}`: the wrap key of a device store (JSON [`wire::EscrowKey`], see
/// [`crate::escrow`]): the bearer's own device's (made on the first request), or another live
/// device's of the same member of staff. Anything else is 404 `not_found`, whether or not the
/// device exists. Audited as `key_escrow`; the key is never logged.
async fn escrow_handler(
    State(state): State<AppState>,
    Authed(who): Authed,
    Path(device_id): Path<String>,
) -> Result<Json<wire::EscrowKey>, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "no such device, or none of yours",
        )
    };
    let Ok(device) = device_id.parse::<casenote_protocol::DeviceId>() else {
        return Err(not_found());
    };
    let store = state.store.clone();
    let key = blocking(move || crate::escrow::key_for(&*store, &who, device, now_ms())).await?;
    let key = key.ok_or_else(not_found)?;
    Ok(Json(wire::EscrowKey {
        device_id: device,
        wrap_key: hex::encode(key),
        server_time_ms: now_ms(),
    }))
}

/// `GET /v1/live`: the live channel, a WebSocket (see [`crate::live`]). Authenticated like every
/// endpoint (the bearer token in the upgrade request; 401 `unauthorized` or `device_revoked`
/// before any upgrade); 503 `limit_exceeded` when every live slot is taken (a device's own
/// connections beyond `limits::LIVE_CONNECTIONS_PER_DEVICE_MAX` replace its oldest instead); 426
/// for a request that is not a WebSocket upgrade.
async fn live_handler(
    State(state): State<AppState>,
    Authed(who): Authed,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            ErrorCode::MalformedBody,
            format!("GET /v1/live is a WebSocket; send a WebSocket upgrade request ({e})"),
        )
    })?;
    let Some(admitted) = state.live.admit(who.device_id).await else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::LimitExceeded,
            format!(
                "the server holds {} live connections already; sync over HTTP and try again later",
                state.live.settings().connections_max
            ),
        ));
    };
    let token = bearer(&headers).unwrap_or_default();
    let (store, live) = (state.store.clone(), state.live.clone());
    Ok(upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(2 * limits::LIVE_MESSAGE_BYTES_MAX)
        .max_message_size(limits::LIVE_MESSAGE_BYTES_MAX)
        .max_frame_size(limits::LIVE_MESSAGE_BYTES_MAX)
        .on_upgrade(move |socket| crate::live::serve(socket, admitted, store, live, token, who)))
}

fn is_cbor(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case(CBOR_MEDIA_TYPE)
        })
        .unwrap_or(false)
}

use casenote_protocol::limits::OVERSIZED_BODY_DRAIN_BYTES_MAX;

/// Reads and discards up to `max` bytes of `body`.
async fn drain(mut body: Body, max: usize) {
    use http_body_util::BodyExt;
    let mut read = 0usize;
    while read <= max {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
}

/// Whether a body error is the stall timeout of [`RequestBodyTimeoutLayer`].
fn is_stall(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<TimeoutError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Reads the whole body, refusing more than `limits::REQUEST_BYTES_MAX` bytes without buffering
/// them: by its Content-Length before reading, or as it arrives when the length is not declared.
/// (This is `axum::body::to_bytes` with the limit, plus draining an oversized body; see
/// [`OVERSIZED_BODY_DRAIN_BYTES_MAX`].)
async fn read_body(headers: &HeaderMap, mut body: Body) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let max = limits::REQUEST_BYTES_MAX;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|len| usize::try_from(len).unwrap_or(usize::MAX));
    if let Some(len) = declared {
        if len > max {
            if len <= max.saturating_add(OVERSIZED_BODY_DRAIN_BYTES_MAX) {
                drain(body, len).await;
            }
            return Err(ApiError::too_large(len));
        }
    }
    let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if is_stall(&e) {
                return ApiError::stalled();
            }
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::MalformedBody,
                format!("the body could not be read: {e}"),
            )
        })?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        if buf.len() + data.len() > max {
            let seen = buf.len() + data.len();
            drop(buf);
            drain(body, OVERSIZED_BODY_DRAIN_BYTES_MAX).await;
            return Err(ApiError::too_large(seen));
        }
        buf.extend_from_slice(data);
    }
    Ok(Bytes::from(buf))
}

async fn sync_handler(
    State(state): State<AppState>,
    Authed(who): Authed,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !is_cbor(&headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!("send the sync body as {CBOR_MEDIA_TYPE}"),
        ));
    }
    // Held from before the body is read (one device cannot hold every connection with uploads)
    // until the blocking work ends (a client that hangs up does not free it before then).
    let Some(slot) = state.syncs.enter(who.device_id) else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::LimitExceeded,
            format!(
                "this device has {} syncs in progress already; let them finish first",
                state.syncs.max()
            ),
        ));
    };
    let bytes = read_body(&headers, body).await?;
    let started = std::time::Instant::now();
    let body_bytes = bytes.len();
    let store = state.store.clone();
    let rules = state.config.rules();
    let lease = state.config.lease;
    let device = who.device_id;
    let outcome = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let req = match wire::decode_request(&bytes) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        sync::handle_stored(&*store, &who, req, now_ms(), &rules).map(|(mut resp, stored)| {
            resp.lease = Some(lease);
            Ok((wire::encode(&resp), stored))
        })
    })
    .await;
    let encoded = match outcome {
        Ok(Ok(Ok((encoded, stored)))) => {
            // Durable (the sync flushed): tell the live channel.
            state.live.publish(stored, Some(device));
            encoded
        }
        Ok(Ok(Err(decode))) => {
            let code = decode.code();
            let status = if code == ErrorCode::BodyTooLarge {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return Err(ApiError::new(status, code, decode.to_string()));
        }
        Ok(Err(store)) => return Err(ApiError::from(store)),
        Err(join) => return Err(ApiError::internal(format!("the sync task failed: {join}"))),
    };
    tracing::debug!(
        body_bytes,
        response_bytes = encoded.len(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "sync answered"
    );
    Ok((
        [(CONTENT_TYPE, HeaderValue::from_static(CBOR_MEDIA_TYPE))],
        encoded,
    )
        .into_response())
}
