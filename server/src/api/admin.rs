//! The admin API: `POST /v1/admin/{path}`, one route per admin act (the paths are the CLI's
//! subcommand words, [`crate::admin::act::PATHS`]: `org/add`, `token/revoke`, `case/remove-team`,
//! `audit/show`, `export`...), the act's fields as a JSON object, the act's outcome as JSON
//! ([`crate::admin::act::Outcome`]). `casenote-server admin --server URL` speaks it.
//!
//! Only an admin token opens it ([`AdminAuthed`], `Authorization: Bearer cna_...`): a device
//! token, however live, is `401 unauthorized` here, as an admin token is on the device routes.
//! Refusals are audited as on the device routes (the code and the route template). Every act
//! runs through [`crate::admin::act::perform`] on the blocking pool as [`By::Admin`], so each is
//! one store transaction with its checks, audited with the admin's id and flushed before the
//! answer; an access change bumps the access epoch, so devices are reconciled at their next sync
//! with nothing restarted. `POST /v1/admin/backup` is the one route whose answer is a stream, not
//! an `Outcome` ([`backup`]).

mod backup;

use super::error::{blocking, ApiError};
use super::extract::bearer;
use super::guard::Guard;
use super::AppState;
use crate::admin::act::{self, Act, Outcome};
use crate::admin::AdminError;
use crate::audit::RefusalKind;
use crate::auth;
use crate::model::{AdminToken, By};
use crate::now_ms;
use crate::store::StoreError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use casenote_protocol::ErrorCode;

/// The admin routes, to merge into the router: each capped, and timed but for the acts that
/// read a whole log ([`LONG_ACTS`]; `guard.rs`).
pub(crate) fn routes(guard: &Guard) -> Router<AppState> {
    let mut router = Router::new();
    for (tag, path) in act::PATHS {
        let tag = *tag;
        let route = post(
            move |state: State<AppState>,
                  admin: AdminAuthed,
                  body: Result<Bytes, BytesRejection>| {
                handle(tag, state, admin, body)
            },
        );
        let route = if LONG_ACTS.contains(&tag) {
            guard.long(route)
        } else {
            guard.short(route)
        };
        router = router.route(&format!("/v1/admin/{path}"), route);
    }
    router.route("/v1/admin/backup", guard.long(post(backup::handle)))
}

/// The acts that read a whole log, which the request timeout must not cut
/// (`limits::HTTP_REQUEST_TIMEOUT_MS` says why; the admin client waits
/// `limits::ADMIN_CLIENT_TIMEOUT_MS`).
const LONG_ACTS: &[&str] = &[
    "audit_verify",
    "audit_show",
    "export",
    "sar_fulfil",
    "note_misfiled", // VACUUM FULL on PostgreSQL
];

/// Runs the act `tag` with the fields of `body` as the admin who sent it.
async fn handle(
    tag: &'static str,
    State(state): State<AppState>,
    AdminAuthed(admin): AdminAuthed,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Outcome>, ApiError> {
    let act = parse(tag, body)?.within_api_limits();
    let by = By::Admin {
        admin_id: admin.admin_id,
    };
    tracing::info!(act = tag, admin_id = %admin.admin_id, "admin act");
    let store = state.store.clone();
    let done = blocking(move || Ok(act::perform(&*store, by, act, now_ms()))).await?;
    done.map(Json).map_err(refused)
}

/// The act named `tag` with the fields of `body` (a JSON object; an empty body for an act without
/// fields).
fn parse(tag: &str, body: Result<Bytes, BytesRejection>) -> Result<Act, ApiError> {
    let body =
        body.map_err(|e| ApiError::new(e.status(), ErrorCode::MalformedBody, e.body_text()))?;
    let mut fields = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| malformed(e.to_string()))?
    };
    let Some(map) = fields.as_object_mut() else {
        return Err(malformed("the body must be a JSON object".into()));
    };
    map.insert("act".into(), tag.into());
    serde_json::from_value(fields).map_err(|e| malformed(e.to_string()))
}

fn malformed(why: String) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::MalformedBody,
        format!(
            "{why}; send the act's fields as a JSON object (see ARCHITECTURE.md, api/admin.rs)"
        ),
    )
}

/// An admin act's refusal as HTTP: what is missing is 404 `not_found`; a store that cannot write
/// is the usual `store_full`; any other refusal (a name taken or ambiguous, an empty name, a
/// revoked member of staff) is 422 `invalid_request`. The message is the admin service's.
fn refused(e: AdminError) -> ApiError {
    use AdminError as E;
    let status = match &e {
        E::Store(_) | E::Failed(_) => {
            let store = match e {
                E::Store(s) => s,
                other => StoreError::Task(other.to_string()),
            };
            return store.into();
        }
        E::NoSuchOrg(_)
        | E::NoSuchTeam { .. }
        | E::NoSuchStaff(_)
        | E::NoSuchTeamAnywhere(_)
        | E::NoSuchTeamId(_)
        | E::NoSuchStaffId(_)
        | E::NoSuchDevice(_)
        | E::NoSuchCase(_)
        | E::NoSuchDocument(_)
        | E::NoSuchAdminToken(_)
        | E::NoSuchRequest(_)
        | E::NoSuchAgreement { .. }
        | E::NoObjection(_)
        | E::NoSuchBreakGlass(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
        _ => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidRequest),
    };
    ApiError::new(status.0, status.1, e.to_string())
}

/// The admin of a request, from `Authorization: Bearer cna_...`: a live admin token, or `401
/// unauthorized` (audited as a refusal; a device token gets the same answer).
pub struct AdminAuthed(pub AdminToken);

impl FromRequestParts<AppState> for AdminAuthed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers);
        let route = super::extract::route_template(parts);
        let (store, refusals) = (state.store.clone(), state.refusals.clone());
        blocking(move || {
            let found = match &token {
                Some(t) => auth::authenticate_admin(&*store, t)?,
                None => None,
            };
            if let Some(admin) = found {
                return Ok(Ok(AdminAuthed(admin)));
            }
            let kind = RefusalKind::unauthenticated(ErrorCode::Unauthorized);
            let details = serde_json::json!({ "route": route, "token_sent": token.is_some() });
            if let Err(e) = refusals.record(&*store, kind, details, now_ms()) {
                tracing::error!(error = %e, "could not append to the audit log");
            }
            Ok(Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "send a live admin token as `Authorization: Bearer cna_...` (device tokens do not open the admin API); `casenote-server admin --data DIR admin-token issue` makes one",
            )))
        })
        .await?
    }
}
