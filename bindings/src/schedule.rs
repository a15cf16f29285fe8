//! `CasenoteSyncSchedule`: when an app should call `sync`, from the events it already sees.
//!
//! Wraps client-core's sans-IO [`SyncSchedule`] (a timer, backoff with jitter after failures, no
//! syncs while offline, a minimum gap between syncs) behind a mutex, so the app's connectivity
//! callback, its edit handlers and its sync worker may feed it from different threads. Times are
//! ms on any monotonic clock the app chooses (`SystemClock.elapsedRealtime()`,
//! `ProcessInfo.systemUptime * 1000`).

use casenote_client_core::schedule::Trigger;
use casenote_client_core::SyncSchedule;
use std::sync::{Arc, Mutex, MutexGuard};

/// When to sync next. Feed it events; ask `is_due`/`next_sync_at_ms`; bracket each sync with
/// `on_sync_started` and `on_sync_finished`.
#[derive(uniffi::Object)]
pub struct CasenoteSyncSchedule {
    inner: Mutex<SyncSchedule>,
}

/// Times cross as `i64` (Kotlin's `Long`, Swift's `Int64`); a monotonic clock is never negative,
/// and one that is counts as zero.
fn ms(now_ms: i64) -> u64 {
    u64::try_from(now_ms).unwrap_or(0)
}

impl CasenoteSyncSchedule {
    fn lock(&self) -> MutexGuard<'_, SyncSchedule> {
        // The schedule is a handful of numbers that every method leaves consistent: a panic
        // elsewhere while the lock was held does not make it unusable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[uniffi::export]
impl CasenoteSyncSchedule {
    /// A schedule with a sync due at once.
    #[uniffi::constructor]
    pub fn new(now_ms: i64) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(SyncSchedule::new(ms(now_ms))),
        })
    }

    /// The network came back (a sync is due at once, backoff forgotten) or went away (no sync
    /// until it comes back).
    pub fn on_connectivity(&self, online: bool, now_ms: i64) {
        self.lock().on(Trigger::Connectivity { online }, ms(now_ms));
    }

    /// The user edited something: send it soon.
    pub fn on_local_edit(&self, now_ms: i64) {
        self.lock().on(Trigger::LocalEdit, ms(now_ms));
    }

    /// The server said (live channel, push notification) that something this device holds
    /// changed.
    pub fn on_live_poke(&self, now_ms: i64) {
        self.lock().on(Trigger::LivePoke, ms(now_ms));
    }

    /// A sync started now.
    pub fn on_sync_started(&self, now_ms: i64) {
        self.lock().on_started(ms(now_ms));
    }

    /// The sync started last finished, well (`ok`) or not.
    pub fn on_sync_finished(&self, now_ms: i64, ok: bool) {
        self.lock().on_finished(ms(now_ms), ok);
    }

    /// Whether a sync is due now.
    pub fn is_due(&self, now_ms: i64) -> bool {
        self.lock().is_due(ms(now_ms))
    }

    /// When the next sync is due, or none while offline.
    pub fn next_sync_at_ms(&self) -> Option<i64> {
        self.lock()
            .next_sync_at()
            .map(|at| i64::try_from(at).unwrap_or(i64::MAX))
    }

    /// Consecutive failed syncs.
    pub fn failures(&self) -> u32 {
        self.lock().failures()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_means_no_sync_and_coming_back_means_one_at_once() {
        let s = CasenoteSyncSchedule::new(0);
        assert!(s.is_due(0));
        s.on_sync_started(0);
        s.on_sync_finished(10, false);
        assert!(!s.is_due(11));
        assert_eq!(s.failures(), 1);
        s.on_connectivity(false, 20);
        assert_eq!(s.next_sync_at_ms(), None);
        s.on_connectivity(true, 5_000);
        assert!(s.is_due(5_000));
        assert_eq!(s.failures(), 0);
    }
}
