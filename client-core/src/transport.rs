//! The network adapter: HTTP to a casenote server. The only code in client-core that does I/O
//! beyond the local store.

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

/// Checks that `server` is an address the device can talk to: `http://HOST[:PORT][/PATH]`.
/// Anything else (no scheme, another scheme, no host, spaces) is [`crate::Error::BadServerUrl`],
/// before any request is tried.
pub fn check_server_url(server: &str) -> Result<(), crate::Error> {
    let bad = || crate::Error::BadServerUrl {
        given: server.to_string(),
        hint: if server.contains("://") || server.trim().is_empty() {
            "http://HOST:PORT (the device speaks plain HTTP; TLS is terminated in front of the \
             server)"
                .into()
        } else {
            format!("http://{}", server.trim())
        },
    };
    let rest = server.strip_prefix("http://").ok_or_else(bad)?;
    let host = rest.split('/').next().unwrap_or_default();
    let name = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.parse::<u16>().is_ok() {
            name
        } else {
            ""
        }
    });
    if name.is_empty() || server.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    Ok(())
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
    /// A transport to `server` (check it first with [`check_server_url`]: a malformed address
    /// fails every request as unreachable).
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
                detail: why_unreachable(&t),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_addresses_with_a_host_are_server_addresses() {
        for good in [
            "http://127.0.0.1:8080",
            "http://casenote.example/",
            "http://[::1]:8080",
            "http://host/prefix",
        ] {
            assert!(check_server_url(good).is_ok(), "{good}");
        }
        for bad in [
            "127.0.0.1:8080",
            "https://casenote.example",
            "http://",
            "http://:8080",
            "http://host:port",
            "http://host name",
            "",
        ] {
            assert!(
                matches!(
                    check_server_url(bad),
                    Err(crate::Error::BadServerUrl { .. })
                ),
                "{bad}"
            );
        }
        let hint = check_server_url("127.0.0.1:8080").unwrap_err().to_string();
        assert!(hint.contains("http://127.0.0.1:8080"), "{hint}");
    }
}
