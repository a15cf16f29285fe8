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
//! `wss://` for an `https://` server, with the device's TLS configuration ([`crate::tls`]), and
//! `ws://` for `http://`. The listener answers the server's pings while it is inside [`LiveListener::next`]; an app that
//! stops calling it for long is dropped by the server (`limits::LIVE_SEND_TIMEOUT_MS` once its
//! socket buffers fill) and reconnects.

use crate::tls::{self, Endpoint};
use crate::transport::TransportError;
use casenote_protocol::wire::{self, LiveEvent, LIVE_CLOSE_REVOKED};
use casenote_protocol::{limits, ErrorBody};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use std::io::{ErrorKind, Read, Write};
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
    socket: WebSocket<Stream>,
    url: String,
}

/// The channel's connection: plain TCP, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Opens the live channel of the server at `server_url` (the URL the device syncs with, e.g.
/// `https://host:port`) with the device's token, trusting the built-in roots and checking
/// nothing else ([`Endpoint::unchecked`]); a device opens it with [`connect_to`]. A refused
/// token is [`TransportError::Unauthorized`] or [`TransportError::Revoked`], as for a sync.
pub fn connect(server_url: &str, token: &str) -> Result<LiveListener, TransportError> {
    connect_to(&Endpoint::unchecked(server_url), token)
}

/// Opens the live channel of `server` with the device's token: `wss://` with the endpoint's TLS
/// configuration for an `https://` server, `ws://` for `http://`. A certificate the device does
/// not trust is [`TransportError::Untrusted`].
pub fn connect_to(server: &Endpoint, token: &str) -> Result<LiveListener, TransportError> {
    let base = server.url();
    let unreachable = |detail: String| TransportError::Unreachable {
        url: base.to_string(),
        detail,
    };
    let (https, rest) = match (base.strip_prefix("https://"), base.strip_prefix("http://")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        (None, None) => {
            return Err(unreachable(
                "the live channel needs an https:// or http:// server URL".into(),
            ))
        }
    };
    let host = rest.split('/').next().unwrap_or(rest);
    let url = format!("{}://{rest}/v1/live", if https { "wss" } else { "ws" });
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
    let stream = if https {
        Stream::Tls(Box::new(tls_handshake(server, host, stream)?))
    } else {
        Stream::Plain(stream)
    };
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

/// Completes the TLS handshake with `host` (`name[:port]`) on `tcp`, before the WebSocket's, so
/// that a certificate the device does not trust is told apart from a network failure.
fn tls_handshake(
    server: &Endpoint,
    host: &str,
    mut tcp: TcpStream,
) -> Result<StreamOwned<ClientConnection, TcpStream>, TransportError> {
    let url = server.url().to_string();
    let name = ServerName::try_from(tls::host_of(host).to_string()).map_err(|e| {
        TransportError::Unreachable {
            url: url.clone(),
            detail: format!("not a TLS server name: {e}"),
        }
    })?;
    let failed = |e: std::io::Error| match tls::tls_failure(&e) {
        Some(detail) => TransportError::Untrusted {
            url: url.clone(),
            detail,
        },
        None => TransportError::Unreachable {
            url: url.clone(),
            detail: format!("the TLS handshake failed: {e}"),
        },
    };
    let mut conn = ClientConnection::new(server.tls_config(), name)
        .map_err(|e| failed(std::io::Error::other(e)))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(failed)?;
    }
    Ok(StreamOwned::new(conn, tcp))
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
                .get_ref()
                .tcp()
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
