//! Exit codes, and messages that say what happened and what to do, once.
//!
//! client-core's errors say what happened; what it means depends on what the user was doing (an
//! unreachable server keeps a sync's edits for the next sync, fails a sign-in that changed
//! nothing, and leaves history unread), so the CLI adds that here, once, rather than client-core
//! saying it everywhere.

use casenote_client_core::{Error as CoreError, TransportError};
use std::fmt;

/// What `--help` lists after the commands (and the README repeats).
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  refused or invalid (the message says why)
  2  usage: a mistyped command, flag, field or server address, or no store at --store
  3  the server could not be reached, or not trusted (edits stay on the device for the next sync)
  4  the server refused the token (a wrong token, or a revoked device)
  5  locked or wiped by the offline lease: sign in again with `login`
  6  the store is busy: another casenote is using it; try again";

/// An error with its message and exit code settled by the CLI.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl Exit {
    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> anyhow::Error {
        Exit {
            code: 2,
            message: message.into(),
        }
        .into()
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// The exit code of a client-core error.
pub fn core_code(e: &CoreError) -> u8 {
    match e {
        CoreError::Transport(TransportError::Unreachable { .. })
        | CoreError::Transport(TransportError::Untrusted { .. }) => 3,
        CoreError::Transport(TransportError::Unauthorized(_))
        | CoreError::Transport(TransportError::Revoked(_))
        | CoreError::RevokedAndWiped(_) => 4,
        CoreError::Locked { .. }
        | CoreError::ExpiredAndWiped { .. }
        | CoreError::Wiped
        | CoreError::Unrecoverable => 5,
        CoreError::Busy { .. } => 6,
        CoreError::NoStore(_)
        | CoreError::BadServerUrl { .. }
        | CoreError::InsecureHttp { .. }
        | CoreError::BadCa(_)
        | CoreError::UnknownField { .. } => 2,
        _ => 1,
    }
}

/// The exit code of any error the CLI ends with.
pub fn code(err: &anyhow::Error) -> u8 {
    if let Some(exit) = err.downcast_ref::<Exit>() {
        return exit.code;
    }
    err.downcast_ref::<CoreError>().map_or(1, core_code)
}

/// What the user was doing when an error came.
#[derive(Clone, Copy)]
pub enum Doing {
    SignIn,
    Sync,
    History,
}

/// `e` with what it means for what the user was doing, said once.
pub fn advise(e: CoreError, doing: Doing) -> anyhow::Error {
    // A sync answered 503 (the server busy, or its store unable to write) or 507 stored nothing
    // (the sync is never timed): as with an unreachable server, the edits wait on the device.
    let unreachable = matches!(e, CoreError::Transport(TransportError::Unreachable { .. }));
    let untrusted = matches!(e, CoreError::Transport(TransportError::Untrusted { .. }));
    let busy = matches!(
        e,
        CoreError::Transport(TransportError::Server {
            status: 503 | 507,
            ..
        })
    );
    let advice = match doing {
        Doing::SignIn if untrusted => {
            "; if the server uses your organisation's own CA, sign in with --ca-file FILE (its \
             certificate, PEM). Nothing was changed"
        }
        _ if untrusted => {
            "; if the server's CA changed, sign in again with --ca-file FILE. Your edits are kept \
             on this device"
        }
        Doing::SignIn if unreachable => {
            "; check the server's address and that it is running (nothing was changed)"
        }
        Doing::Sync if unreachable || busy => {
            "; your edits are kept on this device and go up at the next sync"
        }
        Doing::History if unreachable => {
            "; a document's history comes from the server: try again when it can be reached"
        }
        _ => "",
    };
    let prefix = match doing {
        Doing::SignIn => "cannot sign in: ",
        _ => "",
    };
    Exit {
        code: core_code(&e),
        message: format!("{prefix}{e}{advice}"),
    }
    .into()
}

/// A store that is not there: how to make one, or to check the path.
pub fn no_store(store: &std::path::Path) -> anyhow::Error {
    Exit::usage(format!(
        "no device store at {0}: sign in first to make one (`casenote --store {0} login --server \
         URL`), or check the --store path",
        store.display()
    ))
}
