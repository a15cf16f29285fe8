//! The errors a device API call can end in; each says what to do next.

use casenote_protocol::record::RecordError;
use casenote_protocol::{DocId, DocKind};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("this store is not signed in: run `casenote --store DIR login --server URL --token TOKEN` first")]
    NotLoggedIn,
    #[error("this store belongs to {current}; use another --store directory for {other}")]
    OtherUser { current: String, other: String },
    #[error("no {0} with id {1} on this device (has it been synced here?)")]
    NotFound(&'static str, String),
    #[error("document {0} is a {1}, not a {2}")]
    WrongKind(DocId, DocKind, DocKind),
    #[error("{0}")]
    Ambiguous(String),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("the device store failed: {0}")]
    Store(sled::Error),
    #[error("the device's disk is full: this change was not saved, and nothing else changed. What is saved can still be read; free some space and try again")]
    DiskFull,
    #[error("a write to the device store failed, so it was closed (nothing of that write is kept): open it again")]
    StoreClosed,
    #[error("the device store holds damaged data ({0}); restore it or sign in to a new store")]
    Corrupt(String),
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    #[error("this device has been revoked by an administrator, so its store has been wiped: every case record is gone from it ({0})")]
    RevokedAndWiped(String),
    #[error("this key does not open this device store: it was created under another key (or another passphrase). Nothing was read or changed")]
    WrongKey,
    #[error("invalid store key: {0}")]
    InvalidKey(String),
    #[error("the store at {0} was written without encryption by an older casenote; sync it with that version, then sign in to a new store")]
    Unencrypted(String),
    #[error("this device has not reached the server for {hours} hours, so it is locked: sign in again (`login`) to unlock it. Unsynced edits are kept")]
    Locked { hours: i64 },
    #[error("this device had not reached the server for {days} days, so it has wiped its store: nothing on it can be read until you sign in again (`login`), which brings everything back, unsynced edits included")]
    ExpiredAndWiped { days: i64 },
    #[error("this device's store was wiped by its offline lease (it had not reached the server for too long): sign in again (`login`) to bring it back, unsynced edits included")]
    Wiped,
    #[error("this store was wiped and cannot be brought back: its device was revoked, or it belongs to another member of staff, so the server will not hand this token its key. Nothing in it can be read: delete the directory, or use another store")]
    Unrecoverable,
    #[error("the server sent something this device cannot use: {0}")]
    Protocol(String),
    #[error("this device store is busy: another casenote (a sync, most likely) did not let go of it within {} s; try again in a moment", waited_ms.div_ceil(1000).max(1))]
    Busy { waited_ms: u64 },
    #[error("there is no device store at {0}: sign in to create one, or check the path")]
    NoStore(String),
    #[error("{given:?} is not a server address: write it as {hint}")]
    BadServerUrl { given: String, hint: String },
    /// Plain http to a host that is not this machine's loopback, not explicitly allowed.
    #[error("refusing plain http:// to {host}: the device's token and case notes would cross the network unencrypted. Use https://; plain http goes without asking only to this machine's loopback address, and elsewhere only when explicitly allowed, on a network you trust")]
    InsecureHttp { host: String },
    /// The CA the device was given to trust cannot be used.
    #[error("the CA certificate cannot be used: {0}")]
    BadCa(String),
    #[error("unknown field {given:?}: use {valid}")]
    UnknownField { given: String, valid: String },
    /// The queue of views waiting for the server's audit chain is full.
    #[error("{queued} views of records on this device are waiting to be recorded by the server, the most it keeps: sync before opening another record (every view is audited)")]
    ViewsFull { queued: usize },
    /// The host could not find the store's key (a key file missing, say); its own message.
    #[error("{0}")]
    KeyUnavailable(String),
    #[error("{0}")]
    Invalid(String),
    #[error("break-glass is granted only online, and the server cannot be reached ({0}): nothing was asked. Phone the section's team (`show` says whom to ask), or try again once online")]
    BreakGlassOffline(String),
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        match &e {
            sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => Error::DiskFull,
            _ => Error::Store(e),
        }
    }
}

impl From<automerge::AutomergeError> for Error {
    fn from(e: automerge::AutomergeError) -> Self {
        Error::Record(RecordError::Automerge(e))
    }
}
