//! The live channel: `GET /v1/live` upgrades to a WebSocket on which the server tells a device
//! "new changes you may read are durable up to seq N; sync" (docs/design.md, "Sync").
//!
//! The channel carries no record content, only [`LiveEvent`]s (CBOR, one binary message each):
//! the device fetches the changes with an ordinary HTTP sync, so access control, paging and
//! durability stay in one place ([`crate::sync`]) and HTTP remains the fallback. A device that
//! misses events loses nothing; it syncs on the next one, or when it reconnects (the first event
//! on every connection is a hello with the server's current sequence).
//!
//! Flow: every sync that stored changes publishes `(seq, changed documents, origin device)` on a
//! bounded broadcast ([`crate::feed`], from the sync handler, after the sync's flush). Each connection runs its own task: it receives from the broadcast, keeps the documents
//! its device may read (decided by [`crate::access`], remembered per connection in a
//! bounded cache that is dropped, and the token re-checked, whenever the access epoch moves), and
//! sends an event naming them. Events already waiting when the task takes one (a busy server
//! publishes faster than the task runs) are folded into one message with the highest sequence
//! and all their documents, at most [`limits::LIVE_COALESCE_EVENTS_MAX`] at a time: it says what
//! they said one by one, for one socket write. After an event, the connection sends its next no
//! sooner than [`limits::LIVE_EVENT_INTERVAL_MS`] later (`LiveSettings::event_interval`), so
//! on a busy server what comes meanwhile folds into it; the first event after a quiet spell goes
//! at once. Nothing is ever sent about a document the device may not read.
//!
//! Slow consumers never hold anyone up: the broadcast does not wait for receivers, and each
//! connection writes only its own socket. A connection that falls more than
//! [`limits::LIVE_BROADCAST_EVENTS_MAX`] events behind is closed with reason `lagged`; one whose
//! socket write does not finish within [`limits::LIVE_SEND_TIMEOUT_MS`] is dropped. Either way
//! the device reconnects and syncs over HTTP. Messages from the device other than ping, pong and
//! close are ignored; one over [`limits::LIVE_MESSAGE_BYTES_MAX`] ends that connection in the
//! WebSocket layer. The server pings every [`limits::LIVE_PING_INTERVAL_MS`] and re-checks the
//! token then, so a revoked device is closed with reason `device_revoked`.
//!
//! Caps (counted by [`crate::feed`]): at most `LiveSettings::connections_max` connections in all (one more is answered 503),
//! and at most [`limits::LIVE_CONNECTIONS_PER_DEVICE_MAX`] per device. A device's connection
//! beyond that replaces its oldest, which is closed with reason `replaced`: the newest wins
//! because a device that reconnects after its network dropped must not be locked out by the
//! half-dead connection it left behind (the server only notices a dead peer at its next ping),
//! and one device can never hold more than its few slots, so it cannot keep other devices out.

use super::error::ApiError;
use super::extract::{bearer, Authed};
use super::AppState;
use crate::access::{self, Cases};
use crate::auth::{self, Authenticated, Principal};
use crate::feed::{Admitted, Changed, Feed};
use crate::store::{self, Store, StoreError};
use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use casenote_protocol::limits;
use casenote_protocol::wire::{
    self, LiveEvent, LIVE_CLOSE_LAGGED, LIVE_CLOSE_REPLACED, LIVE_CLOSE_REVOKED, LIVE_VERSION,
};
use casenote_protocol::{DocId, ErrorCode, Seq};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Why a connection ends early.
pub(super) enum End {
    Revoked,
    Unauthorized,
    Failed(String),
}

/// `read`, tried again while the store answers `Busy` (every pooled connection stayed in use:
/// an overload that passes, after which the same read succeeds), at most
/// [`limits::LIVE_BUSY_RETRIES`] times. Closing the connection instead makes its device
/// reconnect and resync, which adds load where there is too much already.
fn patiently<T>(mut read: impl FnMut() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let mut attempt = 0;
    loop {
        match read() {
            Err(StoreError::Busy(_)) if attempt < limits::LIVE_BUSY_RETRIES => {
                attempt += 1;
                store::back_off(attempt);
            }
            other => return other,
        }
    }
}

/// What one connection knows about its device's access.
pub(super) struct Filter {
    token: String,
    who: Principal,
    epoch: Option<u64>,
    readable: HashMap<DocId, bool>,
}

impl Filter {
    pub(super) fn new(token: String, who: Principal) -> Self {
        Filter {
            token,
            who,
            epoch: None,
            readable: HashMap::new(),
        }
    }

    /// Re-authenticates the token (a revoked device must not keep listening).
    fn reauthenticate(&mut self, store: &dyn Store) -> Result<(), End> {
        match patiently(|| auth::authenticate(store, &self.token)) {
            Ok(Authenticated::Ok(who)) => {
                if who != self.who {
                    self.readable.clear();
                    self.who = who;
                }
                Ok(())
            }
            Ok(Authenticated::Revoked { .. }) => Err(End::Revoked),
            Ok(Authenticated::Unknown) => Err(End::Unauthorized),
            Err(e) => Err(End::Failed(e.to_string())),
        }
    }

    /// The documents of `changed` this device may read, when the event's shared epoch is known
    /// and is the one this connection's cache was made under, and the cache decides every
    /// document: no store read, so no blocking task. `None`: ask [`Self::keep`].
    fn cached(&self, changed: &Changed) -> Option<Vec<DocId>> {
        if self.epoch.is_none() || changed.epoch.get() != self.epoch.as_ref() {
            return None;
        }
        let mut out = Vec::new();
        for doc in &changed.docs {
            if *self.readable.get(doc)? {
                out.push(*doc);
            }
        }
        Some(out)
    }

    /// The documents of `changed` this device may read. Blocking (store reads).
    fn keep(&mut self, store: &dyn Store, changed: &Changed) -> Result<Vec<DocId>, End> {
        let failed = |e: StoreError| End::Failed(e.to_string());
        let epoch = changed
            .epoch_or_read(|| patiently(|| store.access_epoch()))
            .map_err(failed)?;
        if self.epoch != Some(epoch) {
            self.readable.clear();
            self.reauthenticate(store)?;
            self.epoch = Some(epoch);
        }
        let unknown: Vec<DocId> = changed
            .docs
            .iter()
            .filter(|d| !self.readable.contains_key(d))
            .copied()
            .collect();
        // Every document decided already: no read (the listeners that found the epoch unread
        // came here together, and each opened an empty transaction).
        let decided = if unknown.is_empty() {
            HashMap::new()
        } else {
            self.decide(store, &unknown).map_err(failed)?
        };
        let mut out = Vec::new();
        for doc in &changed.docs {
            let ok = match self.readable.get(doc) {
                Some(ok) => *ok,
                None => {
                    let ok = decided.get(doc).copied().unwrap_or(false);
                    if self.readable.len() >= limits::LIVE_READ_CACHE_DOCS_MAX {
                        self.readable.clear();
                    }
                    self.readable.insert(*doc, ok);
                    ok
                }
            };
            if ok {
                out.push(*doc);
            }
        }
        Ok(out)
    }

    /// Whether this device may read each of `docs`, in one read transaction.
    fn decide(
        &self,
        store: &dyn Store,
        docs: &[DocId],
    ) -> Result<HashMap<DocId, bool>, StoreError> {
        let decided = patiently(|| {
            store::read(store, |txn| {
                let mut cases = Cases::new();
                docs.iter()
                    .map(|d| {
                        Ok((
                            *d,
                            access::readable_doc(txn, &self.who, *d, &mut cases)?.is_some(),
                        ))
                    })
                    .collect::<Result<Vec<_>, StoreError>>()
            })
        })?;
        Ok(decided.into_iter().collect())
    }
}

/// The documents of `changed` that `filter`'s device may read: from its cache when that decides,
/// else from the store on the blocking pool.
async fn kept(
    store: &Arc<dyn Store>,
    filter: Filter,
    changed: &Arc<Changed>,
) -> (Option<Filter>, Result<Vec<DocId>, End>) {
    if let Some(docs) = filter.cached(changed) {
        return (Some(filter), Ok(docs));
    }
    let c = changed.clone();
    with_filter(store, filter, move |s, f| f.keep(s, &c)).await
}

/// Runs `f` on the blocking pool with the connection's filter.
async fn with_filter<T: Send + 'static>(
    store: &Arc<dyn Store>,
    filter: Filter,
    f: impl FnOnce(&dyn Store, &mut Filter) -> Result<T, End> + Send + 'static,
) -> (Option<Filter>, Result<T, End>) {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || {
        let mut filter = filter;
        let out = f(&*store, &mut filter);
        (filter, out)
    })
    .await
    {
        Ok((filter, out)) => (Some(filter), out),
        Err(e) => (
            None,
            Err(End::Failed(format!("a blocking task failed: {e}"))),
        ),
    }
}

/// Sends one message, giving up after the send timeout. `false`: the connection is done.
async fn send(socket: &mut WebSocket, msg: Message, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, socket.send(msg)).await,
        Ok(Ok(()))
    )
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str, timeout: Duration) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = send(socket, Message::Close(Some(frame)), timeout).await;
}

fn event(seq: Seq, mut docs: Vec<DocId>) -> Message {
    if docs.len() > limits::LIVE_EVENT_DOCS_MAX {
        docs.clear();
    }
    let bytes = wire::encode(&LiveEvent {
        version: LIVE_VERSION,
        seq,
        docs,
    });
    Message::Binary(bytes.into())
}

/// Why the broadcast gave no event.
pub(super) enum Missed {
    /// The connection fell this many events behind.
    Lagged(u64),
    /// The server is stopping.
    Closed,
}

impl From<broadcast::error::RecvError> for Missed {
    fn from(e: broadcast::error::RecvError) -> Self {
        match e {
            broadcast::error::RecvError::Lagged(missed) => Missed::Lagged(missed),
            broadcast::error::RecvError::Closed => Missed::Closed,
        }
    }
}

/// `first` and the events already waiting behind it, at most
/// [`limits::LIVE_COALESCE_EVENTS_MAX`] in all (never waiting for more).
pub(super) fn waiting(
    first: Arc<Changed>,
    rx: &mut broadcast::Receiver<Arc<Changed>>,
) -> Result<Vec<Arc<Changed>>, Missed> {
    let mut batch = vec![first];
    while batch.len() < limits::LIVE_COALESCE_EVENTS_MAX {
        match rx.try_recv() {
            Ok(changed) => batch.push(changed),
            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                return Err(Missed::Lagged(missed))
            }
            Err(_) => break,
        }
    }
    Ok(batch)
}

/// One message for the events of `batch` that other devices caused: the highest sequence among
/// those with documents this device may read, and those documents (more than
/// [`limits::LIVE_EVENT_DOCS_MAX`] become the empty list of [`event`], "sync"). `None`: nothing
/// for this device. `Err(None)`: the filter was lost with a failed task.
pub(super) async fn fold(
    store: &Arc<dyn Store>,
    filter: &mut Option<Filter>,
    batch: Vec<Arc<Changed>>,
    device: casenote_protocol::DeviceId,
) -> Result<Option<(Seq, Vec<DocId>)>, Option<End>> {
    let mut out: Option<(Seq, std::collections::BTreeSet<DocId>)> = None;
    for changed in batch {
        if changed.origin == Some(device) {
            continue;
        }
        let f = filter.take().ok_or(None)?;
        let (f, kept) = kept(store, f, &changed).await;
        *filter = f;
        let docs = kept.map_err(Some)?;
        if docs.is_empty() {
            continue;
        }
        let (seq, all) = out.get_or_insert_with(|| (changed.seq, Default::default()));
        *seq = (*seq).max(changed.seq);
        for doc in docs {
            if all.len() > limits::LIVE_EVENT_DOCS_MAX {
                break;
            }
            all.insert(doc);
        }
    }
    Ok(out.map(|(seq, all)| (seq, all.into_iter().collect())))
}

/// Serves one upgraded connection until the device leaves or is dropped.
async fn serve(
    mut socket: WebSocket,
    admitted: Admitted,
    store: Arc<dyn Store>,
    feed: Arc<Feed>,
    token: String,
    who: Principal,
) {
    let Admitted {
        mut rx,
        permit: _permit,
        held: _held,
        mut replaced,
    } = admitted;
    let device = who.device_id;
    let timeout = feed.settings().send_timeout;
    let mut filter = Some(Filter::new(token, who));
    // Subscribed before this read: whatever the hello does not cover is announced later.
    // A store read, so on the blocking pool (a database client may not block a runtime thread).
    let reader = store.clone();
    let upto = tokio::task::spawn_blocking(move || reader.durable_seq())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let hello = event(upto, Vec::new());
    if !send(&mut socket, hello, timeout).await {
        return;
    }
    tracing::debug!(%device, "live connection open");
    let period = feed.settings().ping_interval;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let interval = feed.settings().event_interval;
    let mut quiet_until: Option<tokio::time::Instant> = None;
    let end: Option<End> = loop {
        tokio::select! {
            received = rx.recv() => {
                if let Some(at) = quiet_until.take() {
                    // The events coming meanwhile wait in the broadcast, to fold into this one.
                    tokio::time::sleep_until(at).await;
                }
                let batch = match received.map_err(Missed::from).and_then(|c| waiting(c, &mut rx)) {
                    Ok(batch) => batch,
                    Err(Missed::Lagged(missed)) => {
                        tracing::info!(%device, missed, "live connection dropped: it fell behind");
                        close(&mut socket, close_code::AGAIN, LIVE_CLOSE_LAGGED, timeout).await;
                        return;
                    }
                    Err(Missed::Closed) => break None,
                };
                // A full batch means more are waiting: the next goes at once, to catch up.
                let caught_up = batch.len() < limits::LIVE_COALESCE_EVENTS_MAX;
                match fold(&store, &mut filter, batch, device).await {
                    Ok(None) => {}
                    Ok(Some((seq, docs))) => {
                        if !send(&mut socket, event(seq, docs), timeout).await {
                            tracing::info!(%device, "live connection dropped: a send did not complete in time");
                            return;
                        }
                        if caught_up {
                            quiet_until = Some(tokio::time::Instant::now() + interval);
                        }
                    }
                    Err(e) => break e,
                }
            },
            incoming = socket.recv() => match incoming {
                // Pings are answered by the WebSocket layer; anything else is ignored.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = &mut replaced => {
                tracing::info!(%device, "live connection replaced by a newer one of its device");
                close(&mut socket, close_code::POLICY, LIVE_CLOSE_REPLACED, timeout).await;
                return;
            }
            _ = ping.tick() => {
                let Some(f) = filter.take() else { break None };
                let (f, checked) = with_filter(&store, f, |s, f| f.reauthenticate(s)).await;
                filter = f;
                if let Err(e) = checked {
                    break Some(e);
                }
                if !send(&mut socket, Message::Ping(Default::default()), timeout).await {
                    tracing::info!(%device, "live connection dropped: a ping did not complete in time");
                    return;
                }
            }
        }
    };
    match end {
        Some(End::Revoked) => {
            close(&mut socket, close_code::POLICY, LIVE_CLOSE_REVOKED, timeout).await
        }
        Some(End::Unauthorized) => {
            close(&mut socket, close_code::POLICY, "unauthorized", timeout).await
        }
        Some(End::Failed(detail)) => {
            tracing::error!(%device, error = %detail, "live connection failed");
            close(&mut socket, close_code::ERROR, "internal", timeout).await
        }
        None => close(&mut socket, close_code::RESTART, "server", timeout).await,
    }
}

/// `GET /v1/live`: the live channel, a WebSocket (see `live.rs` above). Authenticated like every
/// endpoint (the bearer token in the upgrade request; 401 `unauthorized` or `device_revoked`
/// before any upgrade); 503 `limit_exceeded` when every live slot is taken (a device's own
/// connections beyond `limits::LIVE_CONNECTIONS_PER_DEVICE_MAX` replace its oldest instead); 426
/// for a request that is not a WebSocket upgrade.
pub(crate) async fn live_handler(
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
    let Some(admitted) = state.feed.admit(who.device_id).await else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::LimitExceeded,
            format!(
                "the server holds {} live connections already; sync over HTTP and try again later",
                state.feed.settings().connections_max
            ),
        ));
    };
    let token = bearer(&headers).unwrap_or_default();
    let (store, feed) = (state.store.clone(), state.feed.clone());
    Ok(upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(2 * limits::LIVE_MESSAGE_BYTES_MAX)
        .max_message_size(limits::LIVE_MESSAGE_BYTES_MAX)
        .max_frame_size(limits::LIVE_MESSAGE_BYTES_MAX)
        .on_upgrade(move |socket| serve(socket, admitted, store, feed, token, who)))
}
