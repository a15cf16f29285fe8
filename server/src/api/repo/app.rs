//! The web app's two plain-HTTP needs: `GET /v1/caseload` (the documents the token may read,
//! with their kind, case and automerge-repo URL; the content comes over `/v1/repo`) and the
//! built app itself at `/app/` (the files of `serve --app-dir`, read per request).
//!
//! Static files: only a file name of letters, digits, `.`, `-` and `_` that does not start with
//! a dot, directly inside the app directory, a regular file of at most
//! `limits::APP_FILE_BYTES_MAX` bytes; anything else is 404. The service worker is served with
//! `Service-Worker-Allowed: /app/` and nothing is cached by the server's say-so (the app's own
//! service worker decides what it keeps offline).

use super::super::error::{blocking, ApiError};
use super::super::extract::Authed;
use super::super::AppState;
use super::message::doc_id_to_repo;
use crate::access;
use crate::store;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use casenote_protocol::{limits, ErrorCode};
use serde_json::json;

/// `GET /v1/caseload`: who the token is (staff id; as hex, the author the app writes into its
/// changes; the role, organisation and team names a new note's author block states, as the
/// directory has them) and every document it may read now.
pub(crate) async fn caseload(
    State(state): State<AppState>,
    Authed(who): Authed,
) -> Result<Json<serde_json::Value>, ApiError> {
    let store = state.store.clone();
    let docs = blocking(move || {
        store::read(&*store, |txn| {
            let mut out = Vec::new();
            for doc in access::readable_docs(txn, &who)? {
                if let Some(rec) = txn.doc(doc)? {
                    out.push(json!({
                        "doc_id": doc,
                        "url": format!("automerge:{}", doc_id_to_repo(doc)),
                        "kind": rec.header.kind.as_str(),
                        "case_id": rec.header.case_id,
                    }));
                }
            }
            let org = txn.org(who.staff.org_id)?.map(|o| o.name);
            let mut teams = Vec::new();
            for t in who.teams() {
                teams.extend(txn.team(*t)?.map(|t| t.name));
            }
            Ok(json!({
                "staff_id": who.staff_id(),
                "role": who.staff.role.to_string(),
                "org": org,
                "teams": teams,
                "author": hex::encode(who.staff_id().as_bytes()),
                "device_id": who.device_id,
                "docs": out,
            }))
        })
    })
    .await?;
    Ok(Json(docs))
}

/// `GET /app`: to `/app/`, so relative URLs resolve inside the app.
pub(crate) async fn to_app() -> Response {
    (
        StatusCode::PERMANENT_REDIRECT,
        [(LOCATION, HeaderValue::from_static("/app/"))],
    )
        .into_response()
}

/// `GET /app/`: the app's page.
pub(crate) async fn index(state: State<AppState>) -> Result<Response, ApiError> {
    file(state, Path("index.html".to_string())).await
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such file")
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "webmanifest") => "application/json",
        Some("wasm") => "application/wasm",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// `GET /app/{file}`: one file of the built app.
pub(crate) async fn file(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let Some(dir) = state.config.app_dir.clone() else {
        return Err(not_found());
    };
    if !plain_name(&name) {
        return Err(not_found());
    }
    let path = dir.join(&name);
    let bytes = blocking(move || {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(_) => return Ok(None),
        };
        if !meta.is_file() || meta.len() > limits::APP_FILE_BYTES_MAX {
            return Ok(None);
        }
        Ok(std::fs::read(&path).ok())
    })
    .await?
    .ok_or_else(not_found)?;
    let mut response = (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type(&name))),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        bytes,
    )
        .into_response();
    if name == "sw.js" {
        response
            .headers_mut()
            .insert("service-worker-allowed", HeaderValue::from_static("/app/"));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::plain_name;

    #[test]
    fn only_plain_names_inside_the_app_directory_are_served() {
        for ok in ["index.html", "app.js", "sw.js", "manifest.webmanifest"] {
            assert!(plain_name(ok), "{ok}");
        }
        for bad in ["", "../secret", ".env", "a/b", "..", "a%2fb", "x\\y"] {
            assert!(!plain_name(bad), "{bad}");
        }
    }
}
