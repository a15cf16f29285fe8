//! Stable, machine-readable error codes shared by server responses and the client.
//!
//! The code is the contract (scripts match on it); the message is for people and may change.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Every error code the server can answer with, and the rejection codes inside a sync response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No bearer token, or one the server does not know or has revoked.
    Unauthorized,
    /// The token is fine but this staff member may not do this.
    Forbidden,
    /// The body could not be decoded (bad CBOR, truncated, wrong shape).
    MalformedBody,
    /// The body is larger than `limits::REQUEST_BYTES_MAX`.
    BodyTooLarge,
    /// A count or size inside the body is over a limit.
    LimitExceeded,
    /// The envelope's version is not one this server speaks.
    UnsupportedVersion,
    /// The body was not sent as `application/cbor`.
    UnsupportedMediaType,
    /// No such resource.
    NotFound,
    /// A pushed change could not be decoded as an Automerge change.
    MalformedChange,
    /// A pushed document's case or kind differs from the header the server holds.
    HeaderMismatch,
    /// A pushed document names a case the server does not know.
    UnknownCase,
    /// The device's token was revoked (a lost tablet, a leaver): the device must wipe its store.
    DeviceRevoked,
    /// A pushed change's actor or author belongs to someone other than the pushing device's
    /// staff member: authorship cannot be forged.
    ForgedAuthor,
    /// A pushed change breaks a rule of its record kind (a filed note changed, a field's type
    /// changed, a note authored as someone else, a late filing without a reason); the change is
    /// quarantined on the server and never relayed. Added for issue 4 (server-side validation).
    RuleViolation,
    /// The server's store cannot take writes now (its disk is nearly full, or a flush did not
    /// finish in time): nothing in the request was acknowledged. Keep the edits and sync again
    /// later; the server resumes by itself once it can write. HTTP 507.
    StoreFull,
    /// Something went wrong on the server; the message carries a request id to quote.
    Internal,
    /// The request stalled: no byte of its body arrived for `limits::HTTP_BODY_STALL_TIMEOUT_MS`
    /// (408). Nothing of it was stored; send it again. Added for issue 11. Also a short request
    /// the server did not answer within `limits::HTTP_REQUEST_TIMEOUT_MS` (503, issue 13): its
    /// work may still finish, so check before repeating an admin act.
    RequestTimeout,
    /// An admin act that cannot be done as asked (a name taken or ambiguous, an empty name, a
    /// revoked member of staff); the message says what to do. HTTP 422. Only the admin API
    /// answers it. Added for issue 13.
    InvalidRequest,
    /// The server is serving as many requests as it allows (`limits::HTTP_REQUESTS_IN_FLIGHT_MAX`):
    /// nothing of this one was done. HTTP 503 with `Retry-After`; keep the edits and retry then.
    /// Added for issue 13.
    ServerBusy,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::MalformedBody => "malformed_body",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MalformedChange => "malformed_change",
            ErrorCode::HeaderMismatch => "header_mismatch",
            ErrorCode::UnknownCase => "unknown_case",
            ErrorCode::DeviceRevoked => "device_revoked",
            ErrorCode::ForgedAuthor => "forged_author",
            ErrorCode::RuleViolation => "rule_violation",
            ErrorCode::StoreFull => "store_full",
            ErrorCode::Internal => "internal",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::ServerBusy => "server_busy",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every error response: `{"code": "...", "message": "...", "request_id":
/// "..."}`. `request_id` (issue 13) is the `x-request-id` of the request, to quote to an operator;
/// absent from older servers, and ignored by older clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}
