//! The live channel, device side: a blocking WebSocket listener on the server's `GET /v1/live`.
//!
//! The server sends a [`LiveEvent`] whenever changes this device may read became durable ("sync
//! now"); the app calls `Device::sync` when one arrives. Events carry no record content, so this
//! module never touches the store: HTTP sync stays the one way data moves, and the fallback when
//! the live channel is down. The first event after connecting is a hello with the server's
//! current sequence: sync if your cursor is below it.
//!
//! ```no_run
//! # fn main() -> Result<(), casenote_client_core::TransportError> {
//! use std::time::Duration;
//! let mut live = casenote_client_core::live::connect("http://127.0.0.1:8080", "cn_...")?;
//! loop {
//!     if let Some(_event) = live.next(Duration::from_secs(30))? {
//!         // device.sync()?;
//!     }
//! }
//! # }
//! ```
//!
//! Plain `ws://` only, like the HTTP transport (TLS is terminated in front of the server). The
//! listener answers the server's pings while it is inside [`LiveListener::next`]; an app that
//! stops calling it for long is dropped by the server (`limits::LIVE_SEND_TIMEOUT_MS` once its
//! socket buffers fill) and reconnects.

use crate::transport::TransportError;
use casenote_protocol::wire::{self, LiveEvent, LIVE_CLOSE_REVOKED};
use casenote_protocol::{limits, ErrorBody};
use std::io::ErrorKind;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// How long connecting (TCP and the WebSocket handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An open live channel.
pub struct LiveListener {
    socket: WebSocket<TcpStream>,
    url: String,
}

/// Opens the live channel of the server at `server_url` (the URL the device syncs with, e.g.
/// `http://host:port`) with the device's token. A refused token is
/// [`TransportError::Unauthorized`] or [`TransportError::Revoked`], as for a sync.
pub fn connect(server_url: &str, token: &str) -> Result<LiveListener, TransportError> {
    let base = server_url.trim_end_matches('/');
    let unreachable = |detail: String| TransportError::Unreachable {
        url: base.to_string(),
        detail,
    };
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| unreachable("the live channel needs an http:// server URL".into()))?;
    let host = rest.split('/').next().unwrap_or(rest);
    let url = format!("ws://{rest}/v1/live");
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| unreachable(e.to_string()))?;
    let auth = format!("Bearer {token}")
        .parse()
        .map_err(|_| TransportError::Unauthorized("the token is not a valid header".into()))?;
    request.headers_mut().insert("authorization", auth);

    let addrs = host
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("cannot resolve {host}: {e}")))?;
    let mut last = None;
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let stream = stream
        .ok_or_else(|| unreachable(last.map_or_else(|| "no address".into(), |e| e.to_string())))?;
    let io = |e: std::io::Error| unreachable(e.to_string());
    stream.set_nodelay(true).map_err(io)?;
    stream.set_read_timeout(Some(CONNECT_TIMEOUT)).map_err(io)?;
    stream
        .set_write_timeout(Some(CONNECT_TIMEOUT))
        .map_err(io)?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(limits::LIVE_MESSAGE_BYTES_MAX))
        .max_frame_size(Some(limits::LIVE_MESSAGE_BYTES_MAX));
    let (socket, _) = match tungstenite::client::client_with_config(request, stream, Some(config)) {
        Ok(ok) => ok,
        Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let status = resp.status().as_u16();
            let body: Option<ErrorBody> = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok());
            return Err(crate::transport::refusal(status, body));
        }
        Err(e) => return Err(unreachable(format!("the WebSocket handshake failed: {e}"))),
    };
    Ok(LiveListener { socket, url })
}

impl LiveListener {
    /// Waits up to `timeout` for the next event. `Ok(None)`: none arrived in time (the channel
    /// is still open). An error means the channel is closed: the server dropped it (it fell
    /// behind, or the server is stopping; the message says why) or the network failed. Sync
    /// over HTTP and [`connect`] again. [`TransportError::Revoked`]: the device was revoked (its
    /// next sync wipes it).
    pub fn next(&mut self, timeout: Duration) -> Result<Option<LiveEvent>, TransportError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // A zero read timeout means "block forever" to the OS: never pass it.
            let wait = left.max(Duration::from_millis(1));
            self.socket
                .get_mut()
                .set_read_timeout(Some(wait))
                .map_err(|e| self.closed(e.to_string()))?;
            match self.socket.read() {
                Ok(Message::Binary(bytes)) => {
                    return wire::decode_live_event(&bytes)
                        .map(Some)
                        .map_err(|e| TransportError::BadAnswer(e.to_string()));
                }
                Ok(Message::Close(frame)) => {
                    let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                    if reason == LIVE_CLOSE_REVOKED {
                        return Err(TransportError::Revoked(
                            "the server closed the live channel: device_revoked".into(),
                        ));
                    }
                    return Err(self.closed(format!(
                        "the server closed the live channel ({})",
                        if reason.is_empty() {
                            "no reason"
                        } else {
                            &reason
                        }
                    )));
                }
                // Pings are answered by tungstenite; nothing else is expected.
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    continue;
                }
                Err(e) => return Err(self.closed(e.to_string())),
            }
        }
    }

    /// Closes the channel politely.
    pub fn close(mut self) {
        let _ = self.socket.close(None);
        let _ = self.socket.flush();
    }

    fn closed(&self, detail: String) -> TransportError {
        TransportError::Unreachable {
            url: self.url.clone(),
            detail,
        }
    }
}
