//! Progress of long work on a terminal: one line on stderr, rewritten as the work goes on, and
//! cleared when it ends. Only when stderr is a terminal and the output is for people: a script,
//! a pipe or `--json` sees nothing of it.
//!
//! A sync reports after each round that another will follow (`Device::sync_observed`); a first
//! sync of a whole caseload takes many, each a page of a few MiB. One line of counts says enough,
//! and the total is not known until the server says there is no more, so there is no bar (and no
//! crate for one).

use casenote_client_core::SyncReport;
use std::io::{IsTerminal, Write};
use std::time::Instant;

/// A progress line on stderr, or nothing.
pub struct Progress {
    on: bool,
    shown: bool,
    started: Instant,
}

impl Progress {
    /// Progress for people: shown only if `for_people` and stderr is a terminal.
    pub fn new(for_people: bool) -> Self {
        Self {
            on: for_people && std::io::stderr().is_terminal(),
            shown: false,
            started: Instant::now(),
        }
    }

    /// Says what is starting.
    pub fn start(&mut self, what: &str) {
        self.line(&format!("{what}…"));
    }

    /// What a sync has done so far.
    pub fn sync(&mut self, r: &SyncReport) {
        self.line(&format!(
            "syncing: sent {} changes, received {} changes in {} documents ({:.1} MB) so far, {} s…",
            r.changes_up,
            r.changes_down,
            r.docs_down,
            r.bytes_down as f64 / 1e6,
            self.started.elapsed().as_secs()
        ));
    }

    fn line(&mut self, text: &str) {
        if self.on {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{text}");
            let _ = err.flush();
            self.shown = true;
        }
    }

    /// Clears the line before the result is printed.
    pub fn finish(&mut self) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.shown = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
