//! `casenote sync --watch`: keep a device in sync the way an app would.
//!
//! Syncs are driven by client-core's [`SyncSchedule`]: one at start, one whenever the server's live
//! channel says something this device holds changed, one on a timer, and after a failure a retry
//! with exponential backoff and jitter. The live channel runs on its own thread and reconnects
//! with the same backoff. One JSON line per sync goes to stdout (ids, counts and sizes only), so
//! scripts and tests can follow it.

use anyhow::Result;
use casenote_client_core::schedule::{self, SyncSchedule, Trigger};
use casenote_client_core::{Device, Error as CoreError};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Syncs until `duration` passes (or forever); stops at once on an error no retry can cure
/// (revoked, locked, wiped, signed out), and returns it.
pub fn run(device: &Device, duration: Option<Duration>) -> Result<()> {
    let until = duration.map(|d| Instant::now() + d);
    let (tx, rx) = mpsc::channel();
    let stop = AtomicBool::new(false);
    let mut fatal: Option<CoreError> = None;
    std::thread::scope(|scope| {
        let live_tx = tx.clone();
        let stop = &stop;
        scope.spawn(move || listen(device, &live_tx, stop));
        let mut sched = SyncSchedule::new(0);
        schedule::run(&mut sched, &rx, until, || {
            let started = Instant::now();
            match device.sync() {
                Ok(r) => {
                    println!(
                        "{}",
                        json!({
                            "ok": true,
                            "requests": r.requests,
                            "changes_up": r.changes_up,
                            "changes_down": r.changes_down,
                            "bytes_up": r.bytes_up,
                            "bytes_down": r.bytes_down,
                            "elapsed_ms": r.elapsed_ms,
                        })
                    );
                    true
                }
                Err(e) => {
                    println!(
                        "{}",
                        json!({
                            "ok": false,
                            "error": e.to_string(),
                            "elapsed_ms": started.elapsed().as_millis() as u64,
                        })
                    );
                    if is_fatal(&e) {
                        fatal = Some(e);
                        let _ = tx.send(Trigger::Stop);
                    }
                    false
                }
            }
        });
        stop.store(true, Ordering::SeqCst);
    });
    match fatal {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn is_fatal(e: &CoreError) -> bool {
    matches!(
        e,
        CoreError::RevokedAndWiped(_)
            | CoreError::Locked { .. }
            | CoreError::ExpiredAndWiped { .. }
            | CoreError::NotLoggedIn
            | CoreError::Transport(casenote_client_core::TransportError::Unauthorized(_))
    )
}

/// The live channel: each event (and each reconnect, which may have missed events) pokes the
/// schedule. Reconnects back off like syncs do.
fn listen(device: &Device, tx: &mpsc::Sender<Trigger>, stop: &AtomicBool) {
    let epoch = Instant::now();
    let now = || epoch.elapsed().as_millis() as u64;
    let mut backoff = SyncSchedule::new(now());
    while !stop.load(Ordering::SeqCst) {
        if !backoff.is_due(now()) {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        backoff.on_started(now());
        match device.live() {
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
