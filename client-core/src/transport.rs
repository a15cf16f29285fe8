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
    /// Asks for break-glass access to a sealed section (`POST /v1/break-glass`).
    pub fn break_glass(
        &self,
        req: &casenote_protocol::wire::BreakGlassRequest,
    ) -> Result<casenote_protocol::wire::BreakGlassGranted, TransportError> {
        let resp = self
            .agent
            .post(&self.url("/v1/break-glass"))
            .set("authorization", &format!("Bearer {}", self.token))
            .send_json(req)
            .map_err(|e| self.map_err(e))?;
        resp.into_json()
            .map_err(|e| TransportError::BadAnswer(e.to_string()))
    }

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

impl HttpTransport {
    /// Posts one sync body; a 503 `server_busy` answer (the server did nothing with it) is sent
    /// again after its `Retry-After`, at most [`limits::SYNC_BUSY_RETRIES_MAX`] times.
    fn post_sync(&self, body: &[u8]) -> Result<ureq::Response, TransportError> {
        let mut retries = 0;
        loop {
            let sent = self
                .agent
                .post(&self.url("/v1/sync"))
                .set("authorization", &format!("Bearer {}", self.token))
                .set("content-type", CBOR_MEDIA_TYPE)
                .send_bytes(body);
            match sent {
                Err(ureq::Error::Status(503, resp)) if retries < limits::SYNC_BUSY_RETRIES_MAX => {
                    let header = resp.header("retry-after").map(str::to_string);
                    let body: Option<ErrorBody> = resp.into_json().ok();
                    let Some(after) = busy_wait(header.as_deref(), body.as_ref()) else {
                        return Err(refusal(503, body));
                    };
                    retries += 1;
                    std::thread::sleep(after);
                }
                other => return other.map_err(|e| self.map_err(e)),
            }
        }
    }
}

/// How long to wait before sending again, when a 503 answer's body says `server_busy`: its
/// `Retry-After` seconds (at most [`limits::SYNC_BUSY_RETRY_AFTER_MAX_S`]), plus up to half
/// again at random, so devices turned away together do not come back together. `None`: another
/// 503 (a store that cannot write, a timeout), which is not retried here.
fn busy_wait(retry_after: Option<&str>, body: Option<&ErrorBody>) -> Option<Duration> {
    if body?.code != ErrorCode::ServerBusy {
        return None;
    }
    let seconds = retry_after
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(limits::HTTP_BUSY_RETRY_AFTER_S)
        .min(limits::SYNC_BUSY_RETRY_AFTER_MAX_S);
    let base = Duration::from_secs(seconds);
    Some(base + base.mul_f64(rand::random::<f64>() / 2.0))
}

impl Transport for HttpTransport {
    fn sync(&self, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let resp = self.post_sync(&body)?;
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
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// A real HTTP server on 127.0.0.1:0 that answers each request with the next of `answers`
    /// (status, body) and records the bodies it received.
    fn serve(answers: Vec<(u16, &'static str)>) -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for (status, body) in answers {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut received = vec![0; length];
                reader.read_exact(&mut received).unwrap();
                log.lock().unwrap().push(received);
                let mut stream = stream;
                write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nretry-after: 0\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        });
        (url, seen)
    }

    const BUSY: &str = r#"{"code":"server_busy","message":"the store is busy"}"#;

    #[test]
    fn a_sync_answered_server_busy_is_sent_again_after_retry_after_and_succeeds() {
        let (url, seen) = serve(vec![(503, BUSY), (503, BUSY), (200, "done")]);
        let answer = HttpTransport::new(&url, "cn_token").sync(b"the body".to_vec());
        assert_eq!(answer.unwrap(), b"done");
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.len(),
            3,
            "two busy answers, then the sync went through"
        );
        assert!(
            seen.iter().all(|b| b == b"the body"),
            "the same body each time"
        );
    }

    #[test]
    fn a_server_that_stays_busy_gets_its_error_back_after_the_retries() {
        let tries = limits::SYNC_BUSY_RETRIES_MAX as usize + 1;
        let (url, seen) = serve(vec![(503, BUSY); tries + 1]);
        let answer = HttpTransport::new(&url, "cn_token").sync(b"x".to_vec());
        match answer {
            Err(TransportError::Server { status, code, .. }) => {
                assert_eq!((status, code.as_str()), (503, "server_busy"));
            }
            other => panic!("expected the busy error, got {other:?}"),
        }
        assert_eq!(
            seen.lock().unwrap().len(),
            tries,
            "sent once and retried, no more"
        );
    }

    #[test]
    fn another_503_is_not_retried() {
        let unwritable = r#"{"code":"store_full","message":"the store cannot write now"}"#;
        let (url, seen) = serve(vec![(503, unwritable), (200, "done")]);
        let answer = HttpTransport::new(&url, "cn_token").sync(b"x".to_vec());
        assert!(
            matches!(answer, Err(TransportError::Server { status: 503, .. })),
            "{answer:?}"
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}
