//! The accept loop: how the server takes connections so that no peer, with a token or without,
//! can starve everyone else at the connection level (issue 11).
//!
//! - A cap on open connections (`crate::config::connections_cap`): `limits::CONNECTIONS_MAX`, and never more
//!   than the process's open-file limit less `limits::FD_RESERVE`, so the store never runs out of
//!   descriptors. A connection holds its slot for as long as its socket is open, upgraded live
//!   channels included.
//! - At the cap, the connection that has waited longest for a request (a stalled head, an idle
//!   keep-alive) is closed to make room for the new one. A connection busy with a request is never
//!   closed for room; if every one is busy, the loop accepts nothing more until a slot frees (new
//!   connections wait in the kernel's backlog). So a flood of connections that never send a
//!   request cannot keep a device out even for the length of a timeout.
//! - hyper's header-read timeout (`limits::HTTP_HEADER_READ_TIMEOUT_MS`), which also closes a
//!   kept-alive connection idle that long, and a cap on the head's size
//!   (`limits::HTTP_HEAD_BYTES_MAX`).
//! - A write-stall timeout (`limits::HTTP_WRITE_STALL_TIMEOUT_MS`): a peer that stops reading
//!   loses its connection instead of holding it forever. (A stalled request body is the router's:
//!   tower-http's body timeout.)
//! - TLS, when the server terminates it itself (`ConnectionSettings::tls`, from `serve
//!   --tls-cert --tls-key`): tokio-rustls over the same socket, so the slot, the write-stall
//!   timeout and the drain apply as to plain HTTP. The handshake must finish within the
//!   header-read timeout, like a request head, and a connection still in its handshake may be
//!   closed for room. Live channels upgrade over it (`wss://`).
//!
//! - Draining at shutdown: once `shutdown` completes the listener is closed (new connections are
//!   refused), every connection is told to finish the request it is serving and close (hyper's
//!   graceful shutdown; an idle one closes at once), and [`serve`] returns when all have, or after
//!   `limits::SHUTDOWN_DRAIN_MS`. Upgraded live channels are not waited for: they carry no
//!   acknowledgements, and end with the runtime.
//!
//! Also [`PerDevice`], each device's requests in progress, which caps its syncs.

use crate::config::ConnectionSettings;
use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::Router;
use casenote_protocol::{limits, DeviceId};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tower::Service;

/// Accepts connections on `listener` and serves `app` on each, under `settings`' cap, until
/// `shutdown` completes; then drains: closes the listener and waits for the requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: &ConnectionSettings,
    shutdown: impl Future<Output = ()>,
) {
    let open = Arc::new(Open::new());
    accept(listener, app, settings, open.clone(), shutdown).await;
    open.drain();
    let drained = tokio::time::timeout(
        Duration::from_millis(limits::SHUTDOWN_DRAIN_MS),
        open.all_done(),
    )
    .await;
    match drained {
        Ok(()) => tracing::info!("drained: every request in flight answered"),
        Err(_) => tracing::warn!(
            still_open = open.lock().len(),
            "gave up waiting for requests in flight"
        ),
    }
}

/// The accept loop, until `shutdown` completes; the listener is closed when it returns.
async fn accept(
    listener: TcpListener,
    app: Router,
    settings: &ConnectionSettings,
    open: Arc<Open>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(settings.cap()));
    let tls = settings.tls.clone().map(TlsAcceptor::from);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(limits::ACCEPT_ERROR_BACKOFF_MS)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                open.close_longest_waiting();
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => return,
                    },
                    () = &mut shutdown => return,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let socket = Socket::new(stream, slot, settings.write_stall_timeout);
        let head_timeout = settings.header_read_timeout;
        // Counted before the task starts, so a drain never misses it.
        let (id, state) = open.add();
        let conn = connection(
            socket,
            head_timeout,
            tls.clone(),
            app.clone(),
            open.clone(),
            (id, state),
        );
        tokio::spawn(conn);
    }
}

/// Serves one connection until it ends, stalls, or is closed to make room; over TLS when `tls`
/// is given.
async fn connection(
    socket: Socket,
    head_timeout: Duration,
    tls: Option<TlsAcceptor>,
    app: Router,
    open: Arc<Open>,
    (id, state): (u64, Arc<ConnState>),
) {
    match tls {
        None => serve_http(socket, head_timeout, app, &open, &state).await,
        Some(tls) => {
            if let Some(stream) = handshake(&tls, socket, head_timeout, &open, &state).await {
                serve_http(stream, head_timeout, app, &open, &state).await;
            }
        }
    }
    // Out of the list before the slot is free, so the accept loop never picks it again.
    open.remove(id);
}

/// Completes the TLS handshake within `timeout` (a peer that connects and says nothing is
/// treated as one that sends no request head), unless the connection is closed for room or the
/// server drains first.
async fn handshake(
    tls: &TlsAcceptor,
    socket: Socket,
    timeout: Duration,
    open: &Open,
    state: &ConnState,
) -> Option<TlsStream<Socket>> {
    let mut draining = open.draining.subscribe();
    tokio::select! {
        done = tokio::time::timeout(timeout, tls.accept(socket)) => match done {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                None
            }
        },
        () = state.close.notified() => None,
        () = async { drop(draining.wait_for(|d| *d).await) } => None,
    }
}

/// Serves HTTP/1.1 on `io` (a socket, or TLS over one) until the connection ends, stalls, or is
/// closed to make room.
async fn serve_http<I>(
    io: I,
    head_timeout: Duration,
    app: Router,
    open: &Open,
    state: &Arc<ConnState>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tracker = state.clone();
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let busy = Busy::new(tracker.clone());
        let mut app = app.clone();
        async move {
            let response = app.call(req.map(Body::new)).await?;
            Ok::<_, std::convert::Infallible>(
                response.map(|body| Body::new(Tracked { body, _busy: busy })),
            )
        }
    });
    let io = TokioIo::new(io);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(limits::HTTP_HEAD_BYTES_MAX)
        .keep_alive(true)
        .serve_connection(io, service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut draining = open.draining.subscribe();
    let served = tokio::select! {
        served = &mut conn => Some(served),
        () = state.close.notified() => {
            tracing::debug!("connection closed to make room");
            None
        }
        () = async { drop(draining.wait_for(|d| *d).await) } => {
            // Finish the request in progress (if any), answer it, then close.
            conn.as_mut().graceful_shutdown();
            Some(conn.await)
        }
    };
    if let Some(Err(e)) = served {
        tracing::debug!(error = %e, "connection ended");
    }
}

/// The connections being served (until each upgrades or ends), for choosing which to close at
/// the cap.
struct Open {
    next_id: AtomicU64,
    by_id: Mutex<HashMap<u64, Arc<ConnState>>>,
    /// When serving began: connection states keep times as ms since then, in an atomic.
    started: Instant,
    /// Set once at shutdown: every connection finishes its request and closes.
    draining: tokio::sync::watch::Sender<bool>,
    /// Told whenever a connection leaves the list.
    removed: Notify,
}

impl Open {
    fn new() -> Self {
        Open {
            next_id: AtomicU64::new(0),
            by_id: Mutex::default(),
            started: Instant::now(),
            draining: tokio::sync::watch::Sender::new(false),
            removed: Notify::new(),
        }
    }

    /// Tells every connection, open now or still starting, to finish its request and close.
    fn drain(&self) {
        self.draining.send_replace(true);
    }

    /// Completes once no connection is left (upgraded ones have left already).
    async fn all_done(&self) {
        loop {
            let removed = self.removed.notified();
            let mut removed = std::pin::pin!(removed);
            removed.as_mut().enable();
            if self.lock().is_empty() {
                return;
            }
            removed.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self) -> (u64, Arc<ConnState>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            started: self.started,
            requests: AtomicUsize::new(0),
            waiting_since_ms: AtomicU64::new(ms_since(self.started)),
            close: Notify::new(),
        });
        self.lock().insert(id, state.clone());
        (id, state)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
        self.removed.notify_waiters();
    }

    /// Closes the connection that has waited longest for a request, if any waits at all, and
    /// takes it out of the list (it is on its way out).
    fn close_longest_waiting(&self) {
        let mut open = self.lock();
        let longest = open
            .iter()
            .filter(|(_, c)| c.requests.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, c)| c.waiting_since_ms.load(Ordering::Acquire))
            .map(|(id, _)| *id);
        if let Some(c) = longest.and_then(|id| open.remove(&id)) {
            c.close.notify_one();
        }
    }
}

fn ms_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What the accept loop knows of one connection.
struct ConnState {
    started: Instant,
    /// Requests in progress, from the call until the response body is finished.
    requests: AtomicUsize,
    /// Since when it has had no request in progress (its opening, or its last answer).
    waiting_since_ms: AtomicU64,
    close: Notify,
}

/// One request in progress on a connection, until its response body is done.
struct Busy(Arc<ConnState>);

impl Busy {
    fn new(state: Arc<ConnState>) -> Self {
        state.requests.fetch_add(1, Ordering::AcqRel);
        Busy(state)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let now = ms_since(self.0.started);
        self.0.waiting_since_ms.store(now, Ordering::Release);
        self.0.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in progress until it is done.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl HttpBody for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection's socket: holds the connection's slot for as long as the socket is open (an
/// upgraded live channel keeps it), and fails a write that makes no progress for its stall
/// timeout (`limits::HTTP_WRITE_STALL_TIMEOUT_MS`).
struct Socket {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    stall_timeout: Duration,
    stall: Pin<Box<Sleep>>,
    stalling: bool,
}

impl Socket {
    fn new(stream: TcpStream, slot: OwnedSemaphorePermit, stall_timeout: Duration) -> Self {
        Socket {
            stream,
            _slot: slot,
            stall_timeout,
            stall: Box::pin(tokio::time::sleep(Duration::ZERO)),
            stalling: false,
        }
    }

    /// Passes on a write's result, timing how long writes have been pending.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalling = false;
            return polled;
        }
        if !self.stalling {
            self.stalling = true;
            let deadline = tokio::time::Instant::now() + self.stall_timeout;
            self.stall.as_mut().reset(deadline);
        }
        match self.stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer read nothing for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.watch(cx, polled)
    }
}

/// Counts each device's requests in progress, to cap them ([`limits::SYNCS_PER_DEVICE_MAX`]
/// for syncs). Holds only devices with a request in progress.
#[derive(Debug)]
pub struct PerDevice {
    max: usize,
    counts: Arc<Mutex<HashMap<DeviceId, usize>>>,
}

impl PerDevice {
    pub fn new(max: usize) -> Self {
        PerDevice {
            max: max.max(1),
            counts: Arc::default(),
        }
    }

    /// The most requests in progress per device.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A place for one more request of `device`, held until dropped; `None` at the cap.
    pub fn enter(&self, device: DeviceId) -> Option<InProgress> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(device).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(InProgress {
            counts: self.counts.clone(),
            device,
        })
    }
}

/// One request in progress of a device ([`PerDevice::enter`]).
#[derive(Debug)]
pub struct InProgress {
    counts: Arc<Mutex<HashMap<DeviceId, usize>>>,
    device: DeviceId,
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.device) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.device);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_gets_at_most_max_places_and_each_comes_back_when_dropped() {
        let per = PerDevice::new(2);
        let (a, b) = (DeviceId::new_random(), DeviceId::new_random());
        let first = per.enter(a).unwrap();
        let _second = per.enter(a).unwrap();
        assert!(per.enter(a).is_none());
        let _other = per.enter(b).unwrap();
        drop(first);
        assert!(per.enter(a).is_some());
    }
}
