//! `casenote sync --watch`: keep a device in sync the way an app would, while the field worker
//! goes on using the store from other commands.
//!
//! Syncs are driven by client-core's [`SyncSchedule`]: one at start, one whenever the server's
//! live channel says something this device holds changed, one soon after another command changed
//! the store, one on a timer, and after a failure a retry with exponential backoff and jitter.
//! Between syncs the watcher lets go of the store ([`Device::release`]), so other commands open
//! it at once; the watcher's next sync waits for them in turn. The live channel runs on its own
//! thread with what it needs to connect and never touches the store; another thread notices when
//! the store's files change under another command, a stat every half second, no lock. One JSON
//! line per sync goes to stdout (ids, counts and sizes only), so scripts and tests can follow it.
//! A watch in which every sync failed ends with the last failure's exit code.

use crate::exit::{advise, core_code, Doing, Exit};
use anyhow::Result;
use casenote_client_core::device::LiveConnector;
use casenote_client_core::schedule::{self, SyncSchedule, Trigger};
use casenote_client_core::{Device, Error as CoreError};
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How often the watcher looks at the store's files for another command's edits.
const FILES_POLL: Duration = Duration::from_millis(500);

/// The store's main file as last seen: its length and modification time.
type Stamp = Option<(u64, SystemTime)>;

fn stamp(dir: &Path) -> Stamp {
    let meta = std::fs::metadata(dir.join("db")).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// How the syncs of a watch went.
#[derive(Default)]
struct Outcome {
    tries: usize,
    succeeded: usize,
    last_error: Option<CoreError>,
    fatal: bool,
}

/// Syncs until `duration` passes (or forever); stops at once on an error no retry can cure
/// (revoked, locked, wiped, signed out), and returns it.
pub fn run(device: &Device, duration: Option<Duration>) -> Result<()> {
    let started = Instant::now();
    let until = duration.map(|d| started + d);
    let connector = device.live_connector()?;
    let dir = device.store_dir().to_path_buf();
    let (tx, rx) = mpsc::channel();
    let stop = AtomicBool::new(false);
    let left_as = Mutex::new(None);
    let mut outcome = Outcome::default();
    std::thread::scope(|scope| {
        let (live_tx, files_tx) = (tx.clone(), tx.clone());
        let (stop, left_as) = (&stop, &left_as);
        scope.spawn(move || listen(&connector, &live_tx, stop));
        let files_dir = dir.clone();
        scope.spawn(move || watch_files(&files_dir, left_as, &files_tx, stop));
        let mut sched = SyncSchedule::new(0);
        schedule::run(&mut sched, &rx, until, || {
            let ok = sync_once(device, &mut outcome);
            // Let go of the store until the next sync, and remember how it was left, so that
            // another command's edit shows as a change.
            device.release();
            *left_as.lock().unwrap_or_else(|p| p.into_inner()) = stamp(&dir);
            if outcome.fatal {
                let _ = tx.send(Trigger::Stop);
            }
            ok
        });
        stop.store(true, Ordering::SeqCst);
    });
    finish(outcome, started)
}

/// One sync, reported as a JSON line.
fn sync_once(device: &Device, outcome: &mut Outcome) -> bool {
    let started = Instant::now();
    outcome.tries += 1;
    match device.sync() {
        Ok(r) => {
            outcome.succeeded += 1;
            crate::emit(
                &json!({
                    "ok": true,
                    "requests": r.requests,
                    "changes_up": r.changes_up,
                    "changes_down": r.changes_down,
                    "bytes_up": r.bytes_up,
                    "bytes_down": r.bytes_down,
                    "elapsed_ms": r.elapsed_ms,
                })
                .to_string(),
            );
            true
        }
        Err(e) => {
            crate::emit(
                &json!({
                    "ok": false,
                    "error": e.to_string(),
                    "elapsed_ms": started.elapsed().as_millis() as u64,
                })
                .to_string(),
            );
            outcome.fatal = is_fatal(&e);
            outcome.last_error = Some(e);
            false
        }
    }
}

/// The watch's end: the fatal error, or every sync having failed, is an error.
fn finish(outcome: Outcome, started: Instant) -> Result<()> {
    let Some(last) = outcome.last_error else {
        return Ok(());
    };
    if outcome.fatal {
        return Err(advise(last, Doing::Sync));
    }
    if outcome.succeeded > 0 {
        return Ok(());
    }
    Err(Exit {
        code: core_code(&last),
        message: format!(
            "every sync failed ({} in {} s); the last: {}",
            crate::page::count(outcome.tries, "attempt"),
            started.elapsed().as_secs(),
            advise(last, Doing::Sync)
        ),
    }
    .into())
}

fn is_fatal(e: &CoreError) -> bool {
    matches!(
        e,
        CoreError::RevokedAndWiped(_)
            | CoreError::Locked { .. }
            | CoreError::ExpiredAndWiped { .. }
            | CoreError::Wiped
            | CoreError::NotLoggedIn
            | CoreError::NoStore(_)
            | CoreError::WrongKey
            | CoreError::Transport(casenote_client_core::TransportError::Unauthorized(_))
    )
}

/// Another command's edits: when the store's files change after the watcher let go of them, a
/// sync is due soon (as an app's edit makes one due).
fn watch_files(dir: &Path, left_as: &Mutex<Stamp>, tx: &mpsc::Sender<Trigger>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(FILES_POLL);
        let now = stamp(dir);
        let mut left = left_as.lock().unwrap_or_else(|p| p.into_inner());
        if left.is_some() && now != *left {
            *left = now;
            if tx.send(Trigger::LocalEdit).is_err() {
                return;
            }
        }
    }
}

/// The live channel: each event (and each reconnect, which may have missed events) pokes the
/// schedule. Reconnects back off like syncs do.
fn listen(connector: &LiveConnector, tx: &mpsc::Sender<Trigger>, stop: &AtomicBool) {
    let epoch = Instant::now();
    let now = || epoch.elapsed().as_millis() as u64;
    let mut backoff = SyncSchedule::new(now());
    while !stop.load(Ordering::SeqCst) {
        if !backoff.is_due(now()) {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        backoff.on_started(now());
        match connector.connect() {
            Ok(mut live) => {
                backoff.on_finished(now(), true);
                let _ = tx.send(Trigger::LivePoke);
                while !stop.load(Ordering::SeqCst) {
                    match live.next(Duration::from_millis(250)) {
                        Ok(Some(_)) => {
                            if tx.send(Trigger::LivePoke).is_err() {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(_) => break,
                    }
                }
                // Dropped: reconnect soon, but not in a loop.
                backoff.on_started(now());
                backoff.on_finished(now(), false);
            }
            Err(_) => backoff.on_finished(now(), false),
        }
    }
}
