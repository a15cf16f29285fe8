//! The network adapter: HTTP and HTTPS to a casenote server (ureq, with the endpoint's rustls
//! configuration, [`crate::tls`]). With the live channel, the only code in client-core that
//! does I/O beyond the local store.

use crate::tls::Endpoint;
use casenote_protocol::wire::{EscrowKey, HistoryEntry, WhoAmI, CBOR_MEDIA_TYPE};
use casenote_protocol::{limits, DeviceId, DocId, ErrorBody, ErrorCode};
use std::io::Read;
use std::time::Duration;

/// Why a request to the server did not produce an answer. Each message says what happened;
/// what it means for the caller (edits kept for the next sync, history unavailable offline) is
/// the caller's to add.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot reach the server at {url} ({detail})")]
    Unreachable { url: String, detail: String },
    /// The TLS handshake failed: most often a certificate this device does not trust (signed by
    /// a CA it was not given, for another name, expired). Nothing was sent.
    #[error("the server at {url} could not be trusted, so nothing was sent to it: {detail}")]
    Untrusted { url: String, detail: String },
    /// The server's own wording is kept for logs; the message is the device's, in words.
    #[error("the server does not accept this device's token: check that it was copied whole, or ask an administrator for a new one")]
    Unauthorized(String),
    #[error("an administrator has revoked this device")]
    Revoked(String),
    #[error("the server answered {status} {code}: {message}")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the server's answer was too large or unreadable: {0}")]
    BadAnswer(String),
}

/// What an HTTP error answer from the server means for the device: a revoked device, a refused
/// token, or another coded refusal. Shared by the HTTP transport and the live channel's handshake.
pub(crate) fn refusal(status: u16, body: Option<ErrorBody>) -> TransportError {
    let (code, message) = body
        .map(|b| (b.code.to_string(), b.message))
        .unwrap_or_else(|| ("unknown".into(), "no error body".into()));
    if status == 401 && code == ErrorCode::DeviceRevoked.as_str() {
        TransportError::Revoked(message)
    } else if status == 401 {
        TransportError::Unauthorized(message)
    } else {
        TransportError::Server {
            status,
            code,
            message,
        }
    }
}

/// Why a server could not be reached, in a few words (ureq's own text repeats the URL).
fn why_unreachable(t: &ureq::Transport) -> String {
    match t.kind() {
        ureq::ErrorKind::Dns => "no such host".into(),
        _ => match std::error::Error::source(t) {
            Some(source) => source.to_string(),
            None => t.kind().to_string(),
        },
    }
}

pub use crate::tls::check_server_url;

/// Something that carries one sync request to the server and brings its answer back.
pub trait Transport {
    /// Sends one CBOR sync request; returns the CBOR response body.
    fn sync(&self, body: Vec<u8>) -> Result<Vec<u8>, TransportError>;
    /// Asks the server who this token belongs to.
    fn whoami(&self) -> Result<WhoAmI, TransportError>;
    /// Asks the server for the escrow key of `device`'s store (`POST /v1/escrow/{device}`).
    /// Transports that only carry syncs (tests, benchmarks) need not offer it.
    fn escrow(&self, device: DeviceId) -> Result<EscrowKey, TransportError> {
        Err(TransportError::BadAnswer(format!(
            "this transport does not carry key escrow requests (device {device})"
        )))
    }
}

impl HttpTransport {
    /// Who changed a document and when the server received each change, in received order.
    pub fn history(&self, doc: DocId) -> Result<Vec<HistoryEntry>, TransportError> {
        let resp = self
            .agent
            .get(&self.url(&format!("/v1/history/{doc}")))
            .set("authorization", &format!("Bearer {}", self.token))
            .call()
            .map_err(|e| self.map_err(e))?;
        resp.into_json()
            .map_err(|e| TransportError::BadAnswer(e.to_string()))
    }
}

/// HTTP(S) transport over a blocking client (the CLI and tests; apps may bring their own).
pub struct HttpTransport {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// How long one request may take end to end. A large page over a slow mobile link must fit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl HttpTransport {
    /// A transport to `server` as it is, trusting the built-in roots ([`Endpoint::unchecked`]:
    /// a malformed address fails every request as unreachable). A device uses [`Self::to`].
    pub fn new(server: &str, token: &str) -> Self {
        Self::to(&Endpoint::unchecked(server), token)
    }

    /// A transport to a checked `server`, with its TLS configuration.
    pub fn to(server: &Endpoint, token: &str) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .timeout_connect(CONNECT_TIMEOUT)
            .tls_config(server.tls_config())
            .build();
        Self {
            base: server.url().to_string(),
            token: token.to_string(),
            agent,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn map_err(&self, err: ureq::Error) -> TransportError {
        match err {
            ureq::Error::Status(status, resp) => refusal(status, resp.into_json().ok()),
            ureq::Error::Transport(t) => match crate::tls::tls_failure(&t) {
                Some(detail) => TransportError::Untrusted {
                    url: self.base.clone(),
                    detail,
                },
                None => TransportError::Unreachable {
                    url: self.base.clone(),
                    detail: why_unreachable(&t),
                },
            },
        }
    }
}

impl Transport for HttpTransport {
    fn sync(&self, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let resp = self
            .agent
            .post(&self.url("/v1/sync"))
            .set("authorization", &format!("Bearer {}", self.token))
            .set("content-type", CBOR_MEDIA_TYPE)
            .send_bytes(&body)
            .map_err(|e| self.map_err(e))?;
        let mut out = Vec::new();
        resp.into_reader()
            .take(limits::REQUEST_BYTES_MAX as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| TransportError::Unreachable {
                url: self.base.clone(),
                detail: format!("connection lost while reading the answer: {e}"),
            })?;
        if out.len() > limits::REQUEST_BYTES_MAX {
            return Err(TransportError::BadAnswer(format!(
                "over {} bytes",
                limits::REQUEST_BYTES_MAX
            )));
        }
        Ok(out)
    }

    fn whoami(&self) -> Result<WhoAmI, TransportError> {
        let resp = self
            .agent
            .get(&self.url("/v1/whoami"))
            .set("authorization", &format!("Bearer {}", self.token))
            .call()
            .map_err(|e| self.map_err(e))?;
        resp.into_json()
            .map_err(|e| TransportError::BadAnswer(e.to_string()))
    }

    fn escrow(&self, device: DeviceId) -> Result<EscrowKey, TransportError> {
        let resp = self
            .agent
            .post(&self.url(&format!("/v1/escrow/{device}")))
            .set("authorization", &format!("Bearer {}", self.token))
            .call()
            .map_err(|e| self.map_err(e))?;
        resp.into_json()
            .map_err(|e| TransportError::BadAnswer(e.to_string()))
    }
}
