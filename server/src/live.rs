//! The live channel: `GET /v1/live` upgrades to a WebSocket on which the server tells a device
//! "new changes you may read are durable up to seq N; sync" (DESIGN.md, "Live updates").
//!
//! The channel carries no record content, only [`LiveEvent`]s (CBOR, one binary message each):
//! the device fetches the changes with an ordinary HTTP sync, so access control, paging and
//! durability stay in one place ([`crate::sync`]) and HTTP remains the fallback. A device that
//! misses events loses nothing; it syncs on the next one, or when it reconnects (the first event
//! on every connection is a hello with the server's current sequence).
//!
//! Flow: every sync that stored changes publishes `(seq, changed documents, origin device)` on a
//! bounded [`tokio::sync::broadcast`] ([`Live::publish`], from the HTTP handler, after the sync's
//! flush). Each connection runs its own task: it receives from the broadcast, keeps the documents
//! its device may read (decided by [`crate::sync::may_read`], remembered per connection in a
//! bounded cache that is dropped, and the token re-checked, whenever the access epoch moves), and
//! sends an event naming them. Nothing is ever sent about a document the device may not read.
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
//! Caps: at most [`LiveSettings::connections_max`] connections in all (one more is answered 503),
//! and at most [`limits::LIVE_CONNECTIONS_PER_DEVICE_MAX`] per device. A device's connection
//! beyond that replaces its oldest, which is closed with reason `replaced`: the newest wins
//! because a device that reconnects after its network dropped must not be locked out by the
//! half-dead connection it left behind (the server only notices a dead peer at its next ping),
//! and one device can never hold more than its few slots, so it cannot keep other devices out.

use crate::auth::{self, Authenticated, Principal};
use crate::store::{Store, StoreError};
use crate::sync::{may_read, Stored};
use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes, WebSocket};
use casenote_protocol::limits;
use casenote_protocol::wire::{
    self, LiveEvent, LIVE_CLOSE_LAGGED, LIVE_CLOSE_REPLACED, LIVE_CLOSE_REVOKED, LIVE_VERSION,
};
use casenote_protocol::{DeviceId, DocId, Seq};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, oneshot, OwnedSemaphorePermit, Semaphore};

/// The live channel's settings; [`Default`] takes them from `casenote_protocol::limits`. Tests
/// shorten the timeouts.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LiveSettings {
    pub connections_max: usize,
    /// Connections one device may hold; a newer one replaces its oldest.
    pub per_device_max: usize,
    pub broadcast_events: usize,
    pub send_timeout: Duration,
    pub ping_interval: Duration,
}

impl Default for LiveSettings {
    fn default() -> Self {
        LiveSettings {
            connections_max: limits::LIVE_CONNECTIONS_MAX,
            per_device_max: limits::LIVE_CONNECTIONS_PER_DEVICE_MAX,
            broadcast_events: limits::LIVE_BROADCAST_EVENTS_MAX,
            send_timeout: Duration::from_millis(limits::LIVE_SEND_TIMEOUT_MS),
            ping_interval: Duration::from_millis(limits::LIVE_PING_INTERVAL_MS),
        }
    }
}

impl LiveSettings {
    /// These settings with another send timeout.
    pub fn with_send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// These settings with at most `max` connections in all (at least 1).
    pub fn with_connections_max(mut self, max: usize) -> Self {
        self.connections_max = max.max(1);
        self
    }

    /// These settings with at most `max` connections per device (at least 1).
    pub fn with_per_device_max(mut self, max: usize) -> Self {
        self.per_device_max = max.max(1);
        self
    }

    /// These settings with another broadcast capacity.
    pub fn with_broadcast_events(mut self, events: usize) -> Self {
        self.broadcast_events = events.max(1);
        self
    }
}

/// What one sync stored, as the broadcast carries it.
#[derive(Debug)]
pub struct Changed {
    pub seq: Seq,
    pub docs: Vec<DocId>,
    /// The device that pushed: it is not told about its own changes.
    pub origin: Option<DeviceId>,
}

/// The hub every connection subscribes to.
pub struct Live {
    tx: broadcast::Sender<Arc<Changed>>,
    permits: Arc<Semaphore>,
    settings: LiveSettings,
    devices: Arc<Mutex<Devices>>,
    next_id: AtomicU64,
}

/// Each device's open connections, oldest first: an id and the way to tell it it was replaced.
type Devices = HashMap<DeviceId, VecDeque<(u64, oneshot::Sender<()>)>>;

impl Live {
    pub fn new(settings: LiveSettings) -> Self {
        let (tx, _) = broadcast::channel(settings.broadcast_events.max(1));
        Live {
            tx,
            permits: Arc::new(Semaphore::new(settings.connections_max)),
            settings,
            devices: Arc::default(),
            next_id: AtomicU64::new(0),
        }
    }

    /// Announces what a sync stored (call it only once the sync's flush returned). Never waits.
    pub fn publish(&self, stored: Stored, origin: Option<DeviceId>) {
        if stored.docs.is_empty() {
            return;
        }
        // No receiver is not an error: nobody is listening.
        let _ = self.tx.send(Arc::new(Changed {
            seq: stored.upto,
            docs: stored.docs,
            origin,
        }));
    }

    /// Open live connections.
    pub fn connections(&self) -> usize {
        self.settings.connections_max - self.permits.available_permits()
    }

    pub fn settings(&self) -> &LiveSettings {
        &self.settings
    }

    /// A slot for one more connection of `device`, or `None` when every slot is taken. At the
    /// device's own cap its oldest connection is told to close and its slot goes to this one.
    pub(crate) async fn admit(&self, device: DeviceId) -> Option<Admitted> {
        let replaced = self.replace_oldest_beyond_cap(device);
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            // The replaced connection lets go of its slot once it has sent its close frame.
            Err(_) if replaced => tokio::time::timeout(
                self.settings.send_timeout,
                self.permits.clone().acquire_owned(),
            )
            .await
            .ok()?
            .ok()?,
            Err(_) => return None,
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tell, replaced_rx) = oneshot::channel();
        lock(&self.devices)
            .entry(device)
            .or_default()
            .push_back((id, tell));
        Some(Admitted {
            rx: self.tx.subscribe(),
            _permit: permit,
            held: Held {
                devices: self.devices.clone(),
                device,
                id,
            },
            replaced: replaced_rx,
        })
    }

    /// Tells `device`'s oldest connections to close until one more fits under its cap; whether
    /// any was told.
    fn replace_oldest_beyond_cap(&self, device: DeviceId) -> bool {
        let mut devices = lock(&self.devices);
        let Some(held) = devices.get_mut(&device) else {
            return false;
        };
        let mut replaced = false;
        while held.len() >= self.settings.per_device_max.max(1) {
            if let Some((_, tell)) = held.pop_front() {
                let _ = tell.send(());
                replaced = true;
            }
        }
        replaced
    }

    /// Open live connections of `device`.
    pub fn device_connections(&self, device: DeviceId) -> usize {
        lock(&self.devices).get(&device).map_or(0, VecDeque::len)
    }
}

fn lock(devices: &Mutex<Devices>) -> std::sync::MutexGuard<'_, Devices> {
    devices.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection's place in its device's list; leaves it when dropped.
struct Held {
    devices: Arc<Mutex<Devices>>,
    device: DeviceId,
    id: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut devices = lock(&self.devices);
        if let Some(held) = devices.get_mut(&self.device) {
            held.retain(|(id, _)| *id != self.id);
            if held.is_empty() {
                devices.remove(&self.device);
            }
        }
    }
}

/// A connection that was let in: subscribed to the broadcast from this moment, holding its slot
/// and its place among its device's connections until it is dropped.
pub(crate) struct Admitted {
    rx: broadcast::Receiver<Arc<Changed>>,
    _permit: OwnedSemaphorePermit,
    held: Held,
    /// Fires when a newer connection of the same device took this one's place.
    replaced: oneshot::Receiver<()>,
}

/// Why a connection ends early.
enum End {
    Revoked,
    Unauthorized,
    Failed(String),
}

/// What one connection knows about its device's access.
struct Filter {
    token: String,
    who: Principal,
    epoch: Option<u64>,
    readable: HashMap<DocId, bool>,
}

impl Filter {
    /// Re-authenticates the token (a revoked device must not keep listening).
    fn reauthenticate(&mut self, store: &dyn Store) -> Result<(), End> {
        match auth::authenticate(store, &self.token) {
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

    /// The documents of `changed` this device may read. Blocking (store reads).
    fn keep(&mut self, store: &dyn Store, changed: &Changed) -> Result<Vec<DocId>, End> {
        let failed = |e: StoreError| End::Failed(e.to_string());
        let epoch = store.access_epoch().map_err(failed)?;
        if self.epoch != Some(epoch) {
            self.readable.clear();
            self.reauthenticate(store)?;
            self.epoch = Some(epoch);
        }
        let mut out = Vec::new();
        for doc in &changed.docs {
            let ok = match self.readable.get(doc) {
                Some(ok) => *ok,
                None => {
                    let ok = match store.get_doc(*doc).map_err(failed)? {
                        Some(rec) => match store.get_case(rec.header.case_id).map_err(failed)? {
                            Some(case) => may_read(&self.who, &case, Some(&rec.header)),
                            None => false,
                        },
                        None => false,
                    };
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

/// Serves one upgraded connection until the device leaves or is dropped.
pub(crate) async fn serve(
    mut socket: WebSocket,
    admitted: Admitted,
    store: Arc<dyn Store>,
    live: Arc<Live>,
    token: String,
    who: Principal,
) {
    let Admitted {
        mut rx,
        _permit,
        held: _held,
        mut replaced,
    } = admitted;
    let device = who.device_id;
    let timeout = live.settings.send_timeout;
    let mut filter = Some(Filter {
        token,
        who,
        epoch: None,
        readable: HashMap::new(),
    });
    // Subscribed before this read: whatever the hello does not cover is announced later.
    let hello = event(store.durable_seq(), Vec::new());
    if !send(&mut socket, hello, timeout).await {
        return;
    }
    tracing::debug!(%device, "live connection open");
    let period = live.settings.ping_interval;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end: Option<End> = loop {
        tokio::select! {
            received = rx.recv() => match received {
                Ok(changed) => {
                    if changed.origin == Some(device) {
                        continue;
                    }
                    let Some(f) = filter.take() else { break None };
                    let c = changed.clone();
                    let (f, kept) = with_filter(&store, f, move |s, f| f.keep(s, &c)).await;
                    filter = f;
                    match kept {
                        Ok(docs) if docs.is_empty() => {}
                        Ok(docs) => {
                            if !send(&mut socket, event(changed.seq, docs), timeout).await {
                                tracing::info!(%device, "live connection dropped: a send did not complete in time");
                                return;
                            }
                        }
                        Err(e) => break Some(e),
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::info!(%device, missed, "live connection dropped: it fell behind");
                    close(&mut socket, close_code::AGAIN, LIVE_CLOSE_LAGGED, timeout).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => break None,
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
