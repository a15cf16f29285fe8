//! When to sync: on connectivity and other events, and on a timer, backing off with jitter on
//! failure. Never a tight loop.
//!
//! [`SyncSchedule`] is sans-IO: the host app feeds it events (the network came back, the user
//! edited, the live channel said something changed, a sync finished) with the time, and asks when
//! the next sync is due. The rules:
//!
//! - while all is well, one sync every `SYNC_INTERVAL_MS` (with ±10% jitter, so a ward of tablets
//!   switched on together does not sync in lockstep);
//! - after a failure, retry after `SYNC_BACKOFF_BASE_MS`, doubling per failure up to
//!   `SYNC_BACKOFF_MAX_MS`, each delay drawn from its upper half ("equal jitter");
//! - with no connectivity, no sync at all until the network comes back, which makes one due at
//!   once and forgets the backoff;
//! - events never start syncs closer together than `SYNC_MIN_GAP_MS`, so a flapping connection
//!   or a burst of live pokes costs at most one sync a second.
//!
//! [`run`] is a small blocking driver for hosts without their own scheduler (the CLI's
//! `sync --watch`): it waits on a channel of [`Trigger`]s until the next sync is due.

use casenote_protocol::limits::{
    SYNC_BACKOFF_BASE_MS, SYNC_BACKOFF_MAX_MS, SYNC_INTERVAL_MS, SYNC_MIN_GAP_MS,
};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The timings a schedule follows (defaults from `limits`).
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    pub interval_ms: u64,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub min_gap_ms: u64,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            interval_ms: SYNC_INTERVAL_MS,
            backoff_base_ms: SYNC_BACKOFF_BASE_MS,
            backoff_max_ms: SYNC_BACKOFF_MAX_MS,
            min_gap_ms: SYNC_MIN_GAP_MS,
        }
    }
}

/// Something that may make a sync due sooner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The network came back (or went away).
    Connectivity { online: bool },
    /// The user edited something: send it soon.
    LocalEdit,
    /// The live channel said a document this device holds changed.
    LivePoke,
    /// Stop the driver.
    Stop,
}

/// The sync timer and backoff state of one device. Times are ms on any monotonic clock.
#[derive(Debug)]
pub struct SyncSchedule {
    timings: Timings,
    online: bool,
    failures: u32,
    next_at: u64,
    last_start: Option<u64>,
    rng: u64,
}

impl SyncSchedule {
    /// A schedule with a sync due at once, and a random jitter seed.
    pub fn new(now_ms: u64) -> Self {
        Self::with_seed(now_ms, Timings::default(), rand::random())
    }

    /// A schedule with given timings and jitter seed (tests fix both).
    pub fn with_seed(now_ms: u64, timings: Timings, seed: u64) -> Self {
        Self {
            timings,
            online: true,
            failures: 0,
            next_at: now_ms,
            last_start: None,
            rng: seed | 1,
        }
    }

    /// When the next sync is due, or `None` while there is no connectivity.
    pub fn next_sync_at(&self) -> Option<u64> {
        self.online.then_some(self.next_at)
    }

    /// Whether a sync is due now.
    pub fn is_due(&self, now_ms: u64) -> bool {
        self.next_sync_at().is_some_and(|at| at <= now_ms)
    }

    /// Consecutive failed syncs.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Feeds an event.
    pub fn on(&mut self, trigger: Trigger, now_ms: u64) {
        match trigger {
            Trigger::Connectivity { online: false } => self.online = false,
            Trigger::Connectivity { online: true } => {
                self.online = true;
                self.failures = 0;
                self.next_at = self.soonest(now_ms);
            }
            Trigger::LocalEdit | Trigger::LivePoke => {
                // A failing server is not hammered by edits: backoff still applies.
                if self.failures == 0 {
                    self.next_at = self.next_at.min(self.soonest(now_ms));
                }
            }
            Trigger::Stop => {}
        }
    }

    /// A sync started now.
    pub fn on_started(&mut self, now_ms: u64) {
        self.last_start = Some(now_ms);
        // Until it finishes, nothing else is due.
        self.next_at = u64::MAX;
    }

    /// The sync started last finished, well or not.
    pub fn on_finished(&mut self, now_ms: u64, ok: bool) {
        let delay = if ok {
            self.failures = 0;
            let tenth = self.timings.interval_ms / 10;
            self.timings.interval_ms - tenth + self.random_below(2 * tenth + 1)
        } else {
            self.failures = self.failures.saturating_add(1);
            let exp = self.failures.saturating_sub(1).min(32);
            let full = self
                .timings
                .backoff_base_ms
                .saturating_mul(1u64 << exp)
                .min(self.timings.backoff_max_ms);
            full / 2 + self.random_below(full / 2 + 1)
        };
        self.next_at = now_ms.saturating_add(delay.max(self.timings.min_gap_ms));
    }

    /// The earliest a sync may start: now, but not within the minimum gap of the last one.
    fn soonest(&self, now_ms: u64) -> u64 {
        match self.last_start {
            Some(last) => now_ms.max(last.saturating_add(self.timings.min_gap_ms)),
            None => now_ms,
        }
    }

    /// xorshift64*: jitter needs spread, not secrecy.
    fn random_below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// What [`run`] did, for the host's logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub syncs: u32,
    pub failures: u32,
}

/// Drives `sync` by `schedule` until a [`Trigger::Stop`] arrives, the channel closes, or `until`
/// passes. `sync` runs one sync and returns whether it succeeded.
pub fn run(
    schedule: &mut SyncSchedule,
    triggers: &Receiver<Trigger>,
    until: Option<Instant>,
    mut sync: impl FnMut() -> bool,
) -> RunStats {
    let epoch = Instant::now();
    let now = || epoch.elapsed().as_millis() as u64;
    let mut stats = RunStats::default();
    loop {
        if until.is_some_and(|u| Instant::now() >= u) {
            return stats;
        }
        if schedule.is_due(now()) {
            schedule.on_started(now());
            let ok = sync();
            stats.syncs += 1;
            if !ok {
                stats.failures += 1;
            }
            schedule.on_finished(now(), ok);
            continue;
        }
        let wait_ms = schedule
            .next_sync_at()
            .map_or(u64::MAX, |at| at.saturating_sub(now()));
        let mut wait = Duration::from_millis(wait_ms.min(24 * 3600 * 1000));
        if let Some(u) = until {
            wait = wait.min(u.saturating_duration_since(Instant::now()));
        }
        match triggers.recv_timeout(wait) {
            Ok(Trigger::Stop) | Err(RecvTimeoutError::Disconnected) => return stats,
            Ok(t) => schedule.on(t, now()),
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timings() -> Timings {
        Timings {
            interval_ms: 300_000,
            backoff_base_ms: 2_000,
            backoff_max_ms: 900_000,
            min_gap_ms: 1_000,
        }
    }

    #[test]
    fn failures_back_off_exponentially_with_jitter_up_to_the_cap() {
        let mut s = SyncSchedule::with_seed(0, timings(), 42);
        assert!(s.is_due(0));
        let mut now = 0;
        let mut delays = Vec::new();
        for _ in 0..14 {
            s.on_started(now);
            s.on_finished(now, false);
            let at = s.next_sync_at().unwrap();
            delays.push(at - now);
            now = at;
        }
        for (i, d) in delays.iter().enumerate() {
            let full = (2_000u64 << i.min(32)).min(900_000);
            assert!(
                *d >= full / 2 && *d <= full,
                "retry {i}: {d} ms is outside [{}, {full}]",
                full / 2
            );
        }
        assert!(delays[13] >= 450_000, "the cap is reached: {delays:?}");
        assert_eq!(s.failures(), 14);
        // Jitter: two devices failing together do not retry together.
        let mut other = SyncSchedule::with_seed(0, timings(), 7);
        other.on_started(0);
        other.on_finished(0, false);
        let mut first = SyncSchedule::with_seed(0, timings(), 42);
        first.on_started(0);
        first.on_finished(0, false);
        for _ in 0..5 {
            let (a, b) = (first.next_sync_at(), other.next_sync_at());
            if a != b {
                return;
            }
            first.on_started(a.unwrap());
            first.on_finished(a.unwrap(), false);
            other.on_started(b.unwrap());
            other.on_finished(b.unwrap(), false);
        }
        panic!("two seeds gave the same retry times five times running");
    }

    #[test]
    fn success_resets_the_backoff_and_waits_about_an_interval() {
        let mut s = SyncSchedule::with_seed(0, timings(), 1);
        for _ in 0..5 {
            s.on_started(0);
            s.on_finished(0, false);
        }
        s.on_started(100);
        s.on_finished(100, true);
        assert_eq!(s.failures(), 0);
        let at = s.next_sync_at().unwrap() - 100;
        assert!((270_000..=330_000).contains(&at), "{at}");
    }

    #[test]
    fn offline_means_no_sync_until_connectivity_returns_then_one_at_once() {
        let mut s = SyncSchedule::with_seed(0, timings(), 3);
        s.on_started(0);
        s.on_finished(0, false);
        s.on(Trigger::Connectivity { online: false }, 10);
        assert_eq!(s.next_sync_at(), None);
        assert!(!s.is_due(u64::MAX));
        s.on(Trigger::LocalEdit, 20);
        assert_eq!(s.next_sync_at(), None, "an edit offline does not poll");
        s.on(Trigger::Connectivity { online: true }, 5_000);
        assert_eq!(s.next_sync_at(), Some(5_000));
        assert_eq!(s.failures(), 0);
    }

    #[test]
    fn events_never_start_syncs_closer_than_the_minimum_gap() {
        let mut s = SyncSchedule::with_seed(0, timings(), 5);
        s.on_started(1_000);
        s.on_finished(1_050, true);
        // A flapping connection and a burst of pokes right after a sync.
        for t in [1_100, 1_200, 1_300] {
            s.on(Trigger::Connectivity { online: false }, t);
            s.on(Trigger::Connectivity { online: true }, t + 10);
            s.on(Trigger::LivePoke, t + 20);
        }
        assert_eq!(s.next_sync_at(), Some(2_000));
    }

    #[test]
    fn edits_during_backoff_do_not_cut_it_short() {
        let mut s = SyncSchedule::with_seed(0, timings(), 9);
        s.on_started(0);
        s.on_finished(0, false);
        s.on_started(2_000);
        s.on_finished(3_000, false);
        let due = s.next_sync_at().unwrap();
        assert!(
            due >= 3_000 + 2_000,
            "the second retry waits at least 2 s: {due}"
        );
        s.on(Trigger::LocalEdit, 3_100);
        assert_eq!(s.next_sync_at(), Some(due));
    }

    #[test]
    fn the_driver_syncs_on_events_and_stops() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut s = SyncSchedule::with_seed(
            0,
            Timings {
                interval_ms: 60_000,
                backoff_base_ms: 60_000,
                backoff_max_ms: 60_000,
                min_gap_ms: 1,
            },
            11,
        );
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            tx.send(Trigger::LivePoke).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            tx.send(Trigger::Stop).unwrap();
        });
        let started = Instant::now();
        let stats = run(
            &mut s,
            &rx,
            Some(Instant::now() + Duration::from_secs(10)),
            || true,
        );
        sender.join().unwrap();
        // One sync at start, one for the poke; then Stop, long before the 60 s timer.
        assert_eq!(
            stats,
            RunStats {
                syncs: 2,
                failures: 0
            }
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
