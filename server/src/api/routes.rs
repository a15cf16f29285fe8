//! The small routes: `GET /health` and `GET /ready` (no auth), `GET /v1/whoami`,
//! `GET /v1/history/{doc_id}`, `POST /v1/escrow/{device_id}`, and the 404 for anything else. Each
//! hands its work to the domain ([`crate::history`], [`crate::escrow`]) on the blocking pool.

use super::error::{blocking, ApiError};
use super::extract::Authed;
use super::AppState;
use crate::now_ms;
use crate::store::{self, Writability};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use casenote_protocol::wire::{self, TeamRef, WhoAmI};
use casenote_protocol::ErrorCode;

/// `GET /health` (no auth): the process is up (always 200); `status` is `degraded` and
/// `store_writable` false while the store refuses writes (see `/ready`).
pub(crate) async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    let writable = writability(&state).await.writable;
    Json(serde_json::json!({
        "status": if writable { "ok" } else { "degraded" },
        "store_writable": writable,
    }))
}

/// `GET /ready` (no auth): 200 when the store accepts writes, 503 with the reason when it does
/// not (its disk below the free-space floor, a failed or stuck flush). Checking may start the
/// store's recovery once the cause has gone.
pub(crate) async fn ready(State(state): State<AppState>) -> Response {
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

async fn writability(state: &AppState) -> Writability {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || store.writability())
        .await
        .unwrap_or_else(|e| Writability {
            writable: false,
            reason: Some(format!("the check failed: {e}")),
            free_bytes: None,
            free_bytes_min: 0,
        })
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no such endpoint",
    )
}

pub(crate) async fn whoami(
    State(state): State<AppState>,
    Authed(who): Authed,
) -> Result<Json<WhoAmI>, ApiError> {
    let store = state.store.clone();
    let answer = blocking(move || {
        let (org, teams) = store::read(&*store, |txn| {
            let org = txn
                .org(who.staff.org_id)?
                .map(|o| o.name)
                .unwrap_or_default();
            let mut teams = Vec::new();
            for id in &who.staff.teams {
                if let Some(t) = txn.team(*id)? {
                    teams.push(TeamRef {
                        team_id: t.team_id,
                        name: t.name,
                    });
                }
            }
            Ok((org, teams))
        })?;
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
pub(crate) async fn history(
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
pub(crate) async fn escrow_handler(
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

/// `POST /v1/break-glass` (JSON [`wire::BreakGlassRequest`]): urgent read access to a sealed
/// section ([`crate::break_glass`]), answered with the grant ([`wire::BreakGlassGranted`]) once
/// it is durable. A section that is hidden, of a case the bearer may not read, or missing is 403
/// `forbidden` alike; a bad reason is 422 `invalid_request`. Audited as `break_glass`, the reason
/// by its hash only; the reason is never logged.
pub(crate) async fn break_glass(
    State(state): State<AppState>,
    Authed(who): Authed,
    body: axum::body::Bytes,
) -> Result<Json<wire::BreakGlassGranted>, ApiError> {
    use crate::break_glass::Refusal;
    let req: wire::BreakGlassRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedBody,
            format!("a break-glass request is JSON {{doc_id, category, reason}}: {e}"),
        )
    })?;
    let store = state.store.clone();
    let granted = blocking(move || {
        let out = crate::break_glass::grant(&*store, &who, &req, now_ms());
        if out.is_ok() {
            store.flush()?;
        }
        Ok(out)
    })
    .await?;
    match granted {
        Ok(g) => {
            tracing::info!(doc = %g.doc_id, grant = %g.grant_id, "break-glass granted");
            Ok(Json(g))
        }
        Err(Refusal::Store(e)) => Err(e.into()),
        Err(e @ (Refusal::NotSealed(_) | Refusal::AlreadyReadable(_))) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            e.to_string(),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidRequest,
            e.to_string(),
        )),
    }
}
