//! `GET /v1/repo`: a WebSocket that speaks automerge-repo's network protocol (version "1"), so
//! the stock `@automerge/automerge-repo` client with its WebSocket adapter syncs casenote's
//! documents (issue 14), under the device protocol's rules: the same push (authorship binding,
//! record rules, quarantine, audit, acknowledged only once flushed), the same access decisions,
//! the same live feed both ways (what a web client stores reaches CBOR devices' live channel,
//! and what devices store reaches the web client at once).
//!
//! Browsers cannot set headers on a WebSocket, so the device token comes as the `token` query
//! parameter. It is never logged: the request span carries the method and request id only, and
//! nothing here writes the URI. A missing, unknown or revoked token is refused before the
//! upgrade, as every route refuses it (`extract.rs`, audited the same way).
//!
//! The wire (`message.rs`): CBOR maps, `join` answered with `peer`; `request` and `sync` carry an
//! Automerge sync message; the server answers `sync`, `doc-unavailable`, or `error` (then closes).
//! The work per message (`session.rs`) runs on the blocking pool, one at a time per connection,
//! so a connection's messages are answered in order.
//!
//! Caps: at most `limits::REPO_CONNECTIONS_MAX` connections (503 beyond), messages of at most
//! `limits::REPO_MESSAGE_BYTES_MAX` (larger ends the connection in the WebSocket layer), at most
//! `limits::REPO_DOCS_PER_CONNECTION_MAX` documents per connection; a send that does not finish
//! within the live channel's send timeout drops the connection. A connection that falls behind
//! the live feed re-offers every document it syncs (nothing is lost: sync states say what the
//! client lacks).
//!
//! The static web app (`/app/`) and the caseload (`GET /v1/caseload`) are in `app.rs`.

pub(crate) mod app;
mod chunks;
pub mod message;
mod session;

use super::error::ApiError;
use super::extract::authenticate;
use super::AppState;
use crate::validate::Rules;
use crate::{now_ms, store::Store};
use axum::extract::ws::{close_code, CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use casenote_protocol::{limits, ErrorCode};
use message::Outgoing;
use serde::Deserialize;
use session::{End, Reply, Session};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, OwnedSemaphorePermit};

/// The query of `GET /v1/repo`.
#[derive(Deserialize)]
pub(crate) struct RepoQuery {
    #[serde(default)]
    token: Option<String>,
}

/// `GET /v1/repo?token=TOKEN`: see the module's documentation. 401 before any upgrade for a bad
/// token, 503 `limit_exceeded` when every slot is taken, 426 without a WebSocket upgrade.
pub(crate) async fn repo_handler(
    State(state): State<AppState>,
    Query(query): Query<RepoQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let token = query.token.filter(|t| !t.is_empty());
    let who = authenticate(&state, token.clone(), Some("/v1/repo".into())).await?;
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            ErrorCode::MalformedBody,
            format!("GET /v1/repo is a WebSocket; send a WebSocket upgrade request ({e})"),
        )
    })?;
    let Ok(permit) = state.repo_connections.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::LimitExceeded,
            format!(
                "the server holds {} repo connections already; try again later",
                limits::REPO_CONNECTIONS_MAX
            ),
        ));
    };
    let rules = Rules {
        late_entry_after_ms: state.config.late_entry_after_ms,
    };
    let session = Session::new(token.unwrap_or_default(), who, rules);
    Ok(upgrade
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_message_size(limits::REPO_MESSAGE_BYTES_MAX)
        .max_frame_size(limits::REPO_MESSAGE_BYTES_MAX)
        .on_upgrade(move |socket| serve(socket, permit, state, session)))
}

/// What the loop does next.
enum Work {
    Message(Vec<u8>),
    Changed(Vec<casenote_protocol::DocId>),
    Tick,
}

/// Runs one piece of work on the blocking pool with the session.
async fn run(
    store: &Arc<dyn Store>,
    mut session: Session,
    work: Work,
) -> (Option<Session>, Result<Reply, End>) {
    let store = store.clone();
    let done = tokio::task::spawn_blocking(move || {
        let out = match work {
            Work::Message(bytes) => handle(&*store, &mut session, &bytes),
            Work::Changed(docs) => session.changed(&*store, &docs),
            Work::Tick => session.tick(&*store),
        };
        (session, out)
    })
    .await;
    match done {
        Ok((session, out)) => (Some(session), out),
        Err(e) => (
            None,
            Err(End::Failed(format!("a blocking task failed: {e}"))),
        ),
    }
}

/// One message from the client.
fn handle(store: &dyn Store, session: &mut Session, bytes: &[u8]) -> Result<Reply, End> {
    let msg =
        message::decode(bytes).map_err(|_| End::Protocol("a message that does not decode"))?;
    match msg.kind.as_str() {
        "join" => session.join(msg.sender_id, msg.supported.as_deref().unwrap_or(&[])),
        kind @ ("request" | "sync") => {
            let (Some(doc), Some(data)) = (msg.document_id, msg.data) else {
                return Err(End::Protocol("a sync message needs documentId and data"));
            };
            session.doc_message(store, &doc, &data, kind == "request", now_ms())
        }
        // The client says it lacks a document, ephemeral messages (never relayed: they would
        // bypass the record rules), remote-heads subscriptions: nothing to do.
        _ => Ok(Reply::default()),
    }
}

/// Sends `msg`, giving up after `timeout`. `false`: the connection is done.
async fn send(socket: &mut WebSocket, msg: WsMessage, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, socket.send(msg)).await,
        Ok(Ok(()))
    )
}

async fn send_all(socket: &mut WebSocket, out: Vec<Outgoing>, timeout: Duration) -> bool {
    for msg in out {
        if !send(socket, WsMessage::Binary(msg.encode().into()), timeout).await {
            return false;
        }
    }
    true
}

/// Serves one upgraded connection until the client leaves, breaks the protocol or loses its
/// token.
async fn serve(
    mut socket: WebSocket,
    _permit: OwnedSemaphorePermit,
    state: AppState,
    session: Session,
) {
    let device = session.device();
    let timeout = state.feed.settings().send_timeout;
    let mut rx = state.feed.subscribe();
    let mut session = Some(session);
    let period = Duration::from_millis(limits::REPO_ACCESS_CHECK_MS);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::debug!(%device, "repo connection open");
    let end = loop {
        let work = tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Binary(bytes))) => Work::Message(bytes.to_vec()),
                Some(Ok(WsMessage::Text(_))) => break Some(End::Protocol("messages are binary CBOR")),
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break None,
                Some(Ok(_)) => continue,
            },
            changed = rx.recv() => match changed {
                Ok(c) => {
                    // Only what this connection syncs: most events concern none of it.
                    let held = session.as_ref().map(|s| s.holding(&c.docs)).unwrap_or_default();
                    if held.is_empty() {
                        continue;
                    }
                    Work::Changed(held)
                }
                // Fell behind the feed: offer every document again.
                Err(broadcast::error::RecvError::Lagged(_)) => match &session {
                    Some(s) => Work::Changed(s.docs()),
                    None => break None,
                },
                Err(broadcast::error::RecvError::Closed) => break None,
            },
            _ = tick.tick() => Work::Tick,
        };
        let Some(s) = session.take() else { break None };
        let (s, done) = run(&state.store, s, work).await;
        session = s;
        match done {
            Ok(reply) => {
                if let Some(stored) = reply.stored {
                    state.feed.publish(stored, Some(device));
                }
                if !send_all(&mut socket, reply.out, timeout).await {
                    tracing::info!(%device, "repo connection dropped: a send did not complete in time");
                    return;
                }
            }
            Err(end) => break Some(end),
        }
    };
    let client = session
        .as_ref()
        .map(|s| s.client().to_string())
        .unwrap_or_default();
    finish(&mut socket, end, &client, timeout).await;
}

/// Says why the connection ends (an `error` message for a protocol breach), then closes it.
async fn finish(socket: &mut WebSocket, end: Option<End>, client: &str, timeout: Duration) {
    let device_revoked = ErrorCode::DeviceRevoked.as_str();
    let (code, reason): (u16, &'static str) = match end {
        None => (close_code::NORMAL, "bye"),
        Some(End::Revoked) => {
            let _ = send_all(
                socket,
                vec![Outgoing::error(client, device_revoked)],
                timeout,
            )
            .await;
            (close_code::POLICY, "device_revoked")
        }
        Some(End::Unauthorized) => (close_code::POLICY, "unauthorized"),
        Some(End::Protocol(why)) => {
            tracing::info!(why, "repo connection ended: the client broke the protocol");
            let _ = send_all(socket, vec![Outgoing::error(client, why)], timeout).await;
            (close_code::PROTOCOL, "protocol")
        }
        Some(End::Failed(detail)) => {
            tracing::error!(error = %detail, "repo connection failed");
            (close_code::ERROR, "internal")
        }
        // Answered per document where it arises; here only if that was missed.
        Some(End::Unloadable(doc)) => {
            tracing::error!(%doc, "repo connection failed on a stored document that does not load");
            (close_code::ERROR, "internal")
        }
    };
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = send(socket, WsMessage::Close(Some(frame)), timeout).await;
}
