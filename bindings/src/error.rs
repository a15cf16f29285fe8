//! The one error type apps see: its variant is a stable kind to branch on, its `message` the
//! human text (from client-core, which says what to do next).
//!
//! Kotlin gets `CasenoteException.NotLoggedIn` and so on, Swift `CasenoteError.notLoggedIn`,
//! Python `CasenoteError.NotLoggedIn`. Variants are only ever added, never renamed: apps match on
//! them. Every client-core error maps here; a variant client-core adds later falls into
//! `Internal` until it gets its own kind, so the bindings keep building.

use casenote_client_core::{Error, TransportError};
use casenote_protocol::record::RecordError;
use std::fmt;

/// Why a call failed: the variant is the kind, the exception's message the human text.
// A flat error: each variant crosses as its kind plus its `Display` text, which Kotlin and Swift
// show as the exception's own message. (A field named `message` in a non-flat error does not
// compile in Kotlin: it clashes with `Throwable.message`, mozilla/uniffi-rs#1434.)
#[derive(Debug, uniffi::Error)]
#[uniffi(flat_error)]
pub enum CasenoteError {
    /// The store is not signed in yet: call `login`.
    NotLoggedIn { message: String },
    /// The store belongs to another member of staff: open another directory for this one.
    OtherUser { message: String },
    /// No case, note or document with that id on this device (it may not have synced here yet).
    NotFound { message: String },
    /// An argument is malformed: an id that is not a uuid, a key that is not 32 bytes, a text
    /// over its limit, a value not among those allowed, a position past the end.
    InvalidInput { message: String },
    /// The record rules refuse the edit: a filed note cannot change, an amendment needs a filed
    /// note, a late entry needs a reason.
    Refused { message: String },
    /// The key does not open this store (it was created under another key). Nothing was read.
    WrongKey { message: String },
    /// The device has been out of touch with the server past its lease: sign in again (`login`)
    /// to unlock it. Unsynced edits are kept.
    Locked { message: String },
    /// The device was out of touch past the wipe time and has wiped its store: nothing on it can
    /// be read until its user signs in again (`CasenoteDevice.signIn`), which brings everything
    /// back, unsynced edits included. Also the answer to opening such a store.
    ExpiredAndWiped { message: String },
    /// An administrator revoked this device; its store has been wiped.
    RevokedAndWiped { message: String },
    /// The server cannot be reached. Edits are safe on the device; sync again when online.
    Unreachable { message: String },
    /// The server refused the token: ask an administrator for a new one.
    Unauthorized { message: String },
    /// The server answered with an error, or with something unreadable.
    Transport { message: String },
    /// The server sent something this device cannot use.
    Protocol { message: String },
    /// The device store failed (disk full, I/O error, a store written by an older casenote).
    Store { message: String },
    /// The device store holds damaged data.
    Corrupt { message: String },
    /// Anything else: a bug, or an error this version of the bindings does not know yet.
    Internal { message: String },
    /// The device's disk is full: the edit was not saved and nothing else changed. Everything
    /// saved can still be read; free some space and try again.
    DiskFull { message: String },
    /// A wiped store that cannot come back: its device was revoked, or the token signing in is
    /// another member of staff's. Delete the directory.
    Unrecoverable { message: String },
    /// Another process holds the store (a background sync, say) and did not let go of it in
    /// time: try again in a moment. Holders let go between uses with `release`.
    Busy { message: String },
    /// The server could not be trusted (its certificate is not signed by a CA the device trusts,
    /// is for another name, or has expired), so nothing was sent. If the server uses the
    /// organisation's own CA, sign in with its certificate (`caPem`).
    Untrusted { message: String },
}

impl CasenoteError {
    /// The stable kind, in snake_case (Rust callers and logs; foreign code matches the variant).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotLoggedIn { .. } => "not_logged_in",
            Self::OtherUser { .. } => "other_user",
            Self::NotFound { .. } => "not_found",
            Self::InvalidInput { .. } => "invalid_input",
            Self::Refused { .. } => "refused",
            Self::WrongKey { .. } => "wrong_key",
            Self::Locked { .. } => "locked",
            Self::ExpiredAndWiped { .. } => "expired_and_wiped",
            Self::RevokedAndWiped { .. } => "revoked_and_wiped",
            Self::Unreachable { .. } => "unreachable",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Transport { .. } => "transport",
            Self::Protocol { .. } => "protocol",
            Self::Store { .. } => "store",
            Self::Corrupt { .. } => "corrupt",
            Self::Internal { .. } => "internal",
            Self::DiskFull { .. } => "disk_full",
            Self::Unrecoverable { .. } => "unrecoverable",
            Self::Busy { .. } => "busy",
            Self::Untrusted { .. } => "untrusted",
        }
    }

    /// The human message.
    pub fn message(&self) -> &str {
        match self {
            Self::NotLoggedIn { message }
            | Self::OtherUser { message }
            | Self::NotFound { message }
            | Self::InvalidInput { message }
            | Self::Refused { message }
            | Self::WrongKey { message }
            | Self::Locked { message }
            | Self::ExpiredAndWiped { message }
            | Self::RevokedAndWiped { message }
            | Self::Unreachable { message }
            | Self::Unauthorized { message }
            | Self::Transport { message }
            | Self::Protocol { message }
            | Self::Store { message }
            | Self::Corrupt { message }
            | Self::Internal { message }
            | Self::DiskFull { message }
            | Self::Unrecoverable { message }
            | Self::Busy { message }
            | Self::Untrusted { message } => message,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidInput {
            message: message.into(),
        }
    }
}

/// The human message alone: it becomes the foreign exception's message.
impl fmt::Display for CasenoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for CasenoteError {}

impl From<Error> for CasenoteError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::NotLoggedIn => Self::NotLoggedIn { message },
            Error::OtherUser { .. } => Self::OtherUser { message },
            Error::NotFound(..) | Error::WrongKind(..) | Error::NoStore(_) => {
                Self::NotFound { message }
            }
            Error::Ambiguous(_)
            | Error::InvalidKey(_)
            | Error::BadServerUrl { .. }
            | Error::InsecureHttp { .. }
            | Error::BadCa(_)
            | Error::UnknownField { .. }
            | Error::KeyUnavailable(_) => Self::InvalidInput { message },
            Error::Busy { .. } => Self::Busy { message },
            Error::ViewsFull { .. } => Self::Refused { message },
            Error::Invalid(_) => Self::InvalidInput { message },
            Error::BreakGlassOffline(_) => Self::Unreachable { message },
            Error::Record(r) => from_record(r, message),
            Error::Store(_) | Error::Unencrypted(_) => Self::Store { message },
            Error::Corrupt(_) => Self::Corrupt { message },
            Error::Transport(t) => from_transport(t, message),
            Error::RevokedAndWiped(_) => Self::RevokedAndWiped { message },
            Error::WrongKey => Self::WrongKey { message },
            Error::Locked { .. } => Self::Locked { message },
            Error::ExpiredAndWiped { .. } | Error::Wiped => Self::ExpiredAndWiped { message },
            Error::DiskFull => Self::DiskFull { message },
            Error::Unrecoverable => Self::Unrecoverable { message },
            Error::StoreClosed => Self::Store { message },
            Error::Protocol(_) => Self::Protocol { message },
            // Variants client-core adds after this was written, until they get a kind here.
            #[allow(unreachable_patterns)]
            _ => Self::Internal { message },
        }
    }
}

fn from_record(e: RecordError, message: String) -> CasenoteError {
    match e {
        RecordError::FiledNoteImmutable(_)
        | RecordError::NoteNotFiled(_)
        | RecordError::AssessmentCompleted(_)
        | RecordError::AssessmentInProgress(_)
        | RecordError::Refused(_)
        | RecordError::LateEntryReasonRequired { .. } => CasenoteError::Refused { message },
        RecordError::EmptyNote
        | RecordError::TooLong { .. }
        | RecordError::OutOfRange { .. }
        | RecordError::NotAllowed { .. }
        | RecordError::NoConflict(_) => CasenoteError::InvalidInput { message },
        RecordError::NoEntry(..) => CasenoteError::NotFound { message },
        RecordError::Invalid(..) => CasenoteError::Corrupt { message },
        #[allow(unreachable_patterns)]
        _ => CasenoteError::Internal { message },
    }
}

fn from_transport(e: TransportError, message: String) -> CasenoteError {
    match e {
        TransportError::Unreachable { .. } => CasenoteError::Unreachable { message },
        TransportError::Untrusted { .. } => CasenoteError::Untrusted { message },
        TransportError::Unauthorized(_) => CasenoteError::Unauthorized { message },
        // Only reached when a call other than sync met a revoked token (sync wipes first and
        // reports `RevokedAndWiped`).
        TransportError::Revoked(_) => CasenoteError::Unauthorized { message },
        TransportError::Server { .. } | TransportError::BadAnswer(_) => {
            CasenoteError::Transport { message }
        }
        #[allow(unreachable_patterns)]
        _ => CasenoteError::Transport { message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_client_core_errors() {
        let cases = [
            (Error::NotLoggedIn, "not_logged_in"),
            (Error::WrongKey, "wrong_key"),
            (Error::Locked { hours: 72 }, "locked"),
            (Error::NotFound("case", "x".into()), "not_found"),
            (Error::InvalidKey("short".into()), "invalid_input"),
            (Error::RevokedAndWiped("gone".into()), "revoked_and_wiped"),
            (Error::Wiped, "expired_and_wiped"),
            (Error::DiskFull, "disk_full"),
            (Error::Unrecoverable, "unrecoverable"),
            (Error::Busy { waited_ms: 30_000 }, "busy"),
            (Error::NoStore("/x".into()), "not_found"),
            (
                Error::UnknownField {
                    given: "discharge".into(),
                    valid: "discharge_date or pathway".into(),
                },
                "invalid_input",
            ),
            (
                Error::Transport(TransportError::Unreachable {
                    url: "http://127.0.0.1:9".into(),
                    detail: "refused".into(),
                }),
                "unreachable",
            ),
            (
                Error::Record(RecordError::FiledNoteImmutable(
                    casenote_protocol::DocId::new_random(),
                )),
                "refused",
            ),
        ];
        for (e, kind) in cases {
            let shown = e.to_string();
            let ffi = CasenoteError::from(e);
            assert_eq!(ffi.kind(), kind);
            assert_eq!(ffi.message(), shown, "the message is client-core's own");
        }
    }
}
