//! The network adapter: HTTP to a casenote server. The only code in client-core that does I/O
//! beyond the local store.

use casenote_protocol::wire::{EscrowKey, HistoryEntry, WhoAmI, CBOR_MEDIA_TYPE};
use casenote_protocol::{limits, DeviceId, DocId, ErrorBody, ErrorCode};
use std::io::Read;
use std::time::Duration;

/// Why a request to the server did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot reach the server at {url}: {detail}; your changes are safe on this device and will go up on the next sync")]
    Unreachable { url: String, detail: String },
    #[error("the server refused this device's token ({0}); check the token, or ask an administrator for a new one")]
    Unauthorized(String),
    #[error("this device has been revoked by an administrator ({0})")]
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

/// HTTP transport over a blocking client (the CLI and tests; apps may bring their own).
pub struct HttpTransport {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// How long one request may take end to end. A large page over a slow mobile link must fit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl HttpTransport {
    pub fn new(server: &str, token: &str) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .timeout_connect(CONNECT_TIMEOUT)
            .build();
        Self {
            base: server.trim_end_matches('/').to_string(),
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
            ureq::Error::Transport(t) => TransportError::Unreachable {
                url: self.base.clone(),
                detail: t.to_string(),
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
