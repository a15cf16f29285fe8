//! Writing safely on a disk that fills or stalls: the free-space floor checked before every
//! write, group commit on a flusher thread with a bounded wait, the high-water mark written after
//! every flush, and the reopen that lets a store whose sled failed a write resume by itself.
//!
//! sled 0.34 fails a write that meets a full disk and then fails every later write (the error
//! is sticky) until it is opened again. So: writes are refused below the floor
//! ([`limits::STORE_FREE_BYTES_MIN_DEFAULT`], `serve --min-free-mb`) before sled sees them; if
//! sled fails anyway (the disk filled between the check and the write), the store is marked
//! failed, refuses writes with a code, keeps serving reads from the failed handle, and reopens
//! sled once there is room ([`limits::STORE_REOPEN_FREE_BYTES_MIN`]), at most once per
//! [`limits::STORE_REOPEN_INTERVAL_MS`]. A flush that does not return within
//! [`limits::STORE_FLUSH_WAIT_MS_MAX`] answers its callers and refuses writes until it ends.

use super::codec::{hex32, FLUSH_GEN_KEY, MARKED_KEY};
use super::mark::{self, Found, Mark};
use super::trees::Sled;
use super::{limits, lock, Damage, Shared, SledStore, Store, StoreError, Writability};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// Why a flush failed: sled itself (the store then refuses writes until it reopens), or
/// something around it (a read, the mark file), which the next flush tries again.
pub(super) enum FlushFailed {
    Sled(sled::Error),
    Store(StoreError),
}

impl From<StoreError> for FlushFailed {
    fn from(e: StoreError) -> Self {
        FlushFailed::Store(e)
    }
}

impl std::fmt::Display for FlushFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlushFailed::Sled(e) => write!(f, "{e}"),
            FlushFailed::Store(e) => write!(f, "{e}"),
        }
    }
}

/// The refusal of a disk below the floor.
fn full(free_bytes: u64, min_bytes: u64) -> StoreError {
    StoreError::Full(format!(
        "the store's disk is nearly full ({} MiB free; writes need {} MiB)",
        free_bytes / (1024 * 1024),
        min_bytes / (1024 * 1024)
    ))
}

/// Whether sled can take writes (apart from free space, which is checked on every write).
#[derive(Clone, Debug)]
pub(super) enum Health {
    Ok,
    /// A flush has run longer than the bounded wait; writes are refused until it ends.
    Stalled {
        since: Instant,
    },
    /// sled failed a write or a flush; writes are refused until the store reopens.
    Failed {
        reason: String,
        last_try: Option<Instant>,
    },
}

/// Group commit (docs/design.md, "Facts measured": one flush costs about as much as a hundred
/// inserts, so throughput comes from sharing flushes). A caller of [`Store::flush`] needs a
/// flush that *starts* after its call (one already running may have started before its writes);
/// it asks for the next one and waits. The store's flusher thread runs flushes one at a time,
/// each covering every caller that asked before it started, so N concurrent syncs cost about two
/// flushes, not N. Each flush ends by writing the high-water mark ([`mark`]), and a caller
/// returns only after a flush that began after its own writes completed, mark included. The
/// wait is bounded ([`limits::STORE_FLUSH_WAIT_MS_MAX`]): sled's flush runs on the flusher
/// thread, so a flush that never returns holds up no request; the callers are answered and the
/// store refuses writes until that flush ends.
#[derive(Default)]
pub(super) struct GroupCommit {
    pub(super) state: Mutex<FlushState>,
    /// Wakes the flusher: a flush is wanted, or the store is closing.
    pub(super) wake: Condvar,
    /// Wakes callers: a flush ended.
    pub(super) done: Condvar,
    /// sled flushes run so far (see [`SledStore::flush_count`]).
    pub(super) flushes: AtomicU64,
}

#[derive(Default)]
pub(super) struct FlushState {
    /// Tickets of flushes started and completed (successfully), in order; one runs at a time.
    pub(super) started: u64,
    pub(super) completed: u64,
    /// The highest ticket a caller waits for.
    pub(super) wanted: u64,
    /// The last flush that failed, and why.
    pub(super) failed: Option<(u64, String)>,
    /// Callers inside `flush` right now.
    pub(super) waiting: usize,
    /// Callers that asked for a flush since the last one started: the next one serves them.
    pub(super) asking: usize,
    /// Tests only: no flush starts while set.
    pub(super) held: bool,
    /// The store is closing: the flusher stops.
    pub(super) closing: bool,
    /// The flusher has stopped.
    pub(super) stopped: bool,
}

impl Shared {
    /// The current sled handle; refused while the store reopens.
    pub(super) fn sled(&self) -> Result<Arc<Sled>, StoreError> {
        self.sled
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Unwritable("the store is reopening; try again".into()))
    }

    /// One flush: the flush generation into sled, sled's flush, then the high-water mark. What
    /// the mark says is read from the trees before sled's flush, so the flush covers it: a
    /// transaction is visible to these reads only once it has committed whole.
    pub(super) fn flush_once(&self) -> Result<(), FlushFailed> {
        let s = self.sled()?;
        let tip = s.tip()?;
        let (audit_seq, audit_hash) = s.audit_tail()?;
        let log_id = s
            .log_id()?
            .ok_or_else(|| StoreError::Corrupt("the store has no log id".into()))?;
        let flush_gen = self.flush_gen.load(Ordering::Acquire) + 1;
        s.meta
            .insert(FLUSH_GEN_KEY, &flush_gen.to_be_bytes()[..])
            .map_err(FlushFailed::Sled)?;
        s.db.flush().map_err(FlushFailed::Sled)?;
        self.flush_gen.store(flush_gen, Ordering::Release);
        let mark = Mark {
            log_id,
            log_seq: tip.seq,
            chain: tip.chain,
            audit_seq,
            audit_hash: hex32(&audit_hash)?,
            flush_gen,
        };
        let created = self
            .write_mark(&mark)
            .map_err(|e| StoreError::Unwritable(format!("the high-water mark: {e}")))?;
        if created {
            // Only once the file is on disk: from now on a missing mark file is damage.
            s.meta
                .insert(MARKED_KEY, &[1][..])
                .map_err(FlushFailed::Sled)?;
        }
        self.durable.fetch_max(tip.seq, Ordering::AcqRel);
        Ok(())
    }

    /// Writes the mark (creating the file if there is none); says whether it created it.
    pub(super) fn write_mark(&self, mark: &Mark) -> std::io::Result<bool> {
        let mut m = lock(&self.mark);
        let created = match m.writer.as_mut() {
            Some(w) => {
                w.write(mark)?;
                false
            }
            None => {
                m.writer = Some(mark::Writer::create(&self.dir, mark)?);
                true
            }
        };
        m.last = Some(*mark);
        Ok(created)
    }

    /// The flusher thread: runs the flushes callers ask for, one at a time, until the store
    /// closes.
    pub(super) fn run_flusher(&self) {
        let group = &self.group;
        loop {
            let mut st = lock(&group.state);
            while !st.closing && (st.held || st.wanted <= st.started) {
                st = group.wake.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.closing {
                st.stopped = true;
                group.done.notify_all();
                return;
            }
            st.started += 1;
            let ticket = st.started;
            let sharing = std::mem::take(&mut st.asking);
            drop(st);
            let began = Instant::now();
            let result = self.flush_once();
            crate::metrics::flushed(began.elapsed(), sharing);
            group.flushes.fetch_add(1, Ordering::Relaxed);
            let mut st = lock(&group.state);
            match &result {
                Ok(()) => st.completed = ticket,
                Err(e) => st.failed = Some((ticket, e.to_string())),
            }
            group.done.notify_all();
            drop(st);
            self.flush_ended(result);
        }
    }

    /// After a flush: a stalled store is writable again, and a flush that sled failed fails the
    /// store (its callers were refused either way; other failures, such as the mark's, are
    /// retried by the next flush).
    pub(super) fn flush_ended(&self, result: Result<(), FlushFailed>) {
        let mut health = lock(&self.health);
        match result {
            Err(FlushFailed::Store(e)) => {
                tracing::error!(error = %e, "a flush failed");
            }
            Ok(()) => {
                if let Health::Stalled { since } = *health {
                    tracing::warn!(
                        stalled_ms = since.elapsed().as_millis() as u64,
                        "the stalled flush finished; writes resume"
                    );
                    *health = Health::Ok;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "a flush failed; writes are refused until the store reopens");
                *health = Health::Failed {
                    reason: e.to_string(),
                    last_try: Some(Instant::now()),
                };
            }
        }
    }

    /// After a transaction's work failed: an I/O error sled returned inside it (mapped to
    /// `Full` or `Unwritable`, see `codec.rs`) marks the store failed, as a failed commit does,
    /// so that it reopens once there is space; any other error passes through. A store already
    /// failed keeps its state: sled returns its first error from every later call, reads
    /// included, and restarting the reopen's clock on each would put the reopen off for as
    /// long as devices keep trying.
    pub(super) fn after_failed_work(&self, e: StoreError) -> StoreError {
        if let StoreError::Full(reason) | StoreError::Unwritable(reason) = &e {
            let mut health = lock(&self.health);
            if !matches!(*health, Health::Failed { .. }) {
                tracing::error!(error = %reason, "the store failed an operation; writes are refused until it reopens");
                *health = Health::Failed {
                    reason: reason.clone(),
                    last_try: Some(Instant::now()),
                };
            }
        }
        e
    }

    /// Marks the store failed when `e` is an I/O error from sled (it then refuses every write
    /// until reopened), and says so as a refusal; any other sled error is the backend's.
    pub(super) fn failed(&self, e: sled::Error) -> StoreError {
        let sled::Error::Io(io) = &e else {
            return StoreError::from(e);
        };
        tracing::error!(error = %io, "the store failed a write; writes are refused until it reopens");
        let reason = format!("the store failed a write ({io})");
        *lock(&self.health) = Health::Failed {
            reason: reason.clone(),
            last_try: Some(Instant::now()),
        };
        if io.kind() == std::io::ErrorKind::StorageFull {
            full(0, self.free_bytes_min.load(Ordering::Relaxed))
        } else {
            StoreError::Unwritable(reason)
        }
    }

    /// Refuses a write when the data directory has less free space than the floor.
    pub(super) fn check_space(&self) -> Result<Option<u64>, StoreError> {
        let min = self.free_bytes_min.load(Ordering::Relaxed);
        let free = match fs2::available_space(&self.dir) {
            Ok(free) => free,
            Err(e) => {
                // Unknown: let the write try (sled reports a real failure itself).
                tracing::warn!(error = %e, "could not read the data directory's free space");
                return Ok(None);
            }
        };
        if free < min {
            if !self.space_low.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    free_bytes = free,
                    free_bytes_min = min,
                    "the store's disk is nearly full: writes are refused until space is freed"
                );
            }
            return Err(full(free, min));
        }
        if self.space_low.swap(false, Ordering::Relaxed) {
            tracing::info!(
                free_bytes = free,
                "the store's disk has space again: writes resume"
            );
        }
        Ok(Some(free))
    }
}

impl SledStore {
    /// Refuses while sled cannot write, trying a due reopen first.
    pub(super) fn healthy(&self) -> Result<(), StoreError> {
        let mut health = lock(&self.shared.health);
        match &mut *health {
            Health::Ok => Ok(()),
            Health::Stalled { since } => Err(StoreError::Unwritable(format!(
                "a flush has not finished after {} s; writes are refused until it does \
                 (restart the server if it never does)",
                since.elapsed().as_secs()
            ))),
            Health::Failed { reason, last_try } => {
                let interval = std::time::Duration::from_millis(limits::STORE_REOPEN_INTERVAL_MS);
                if last_try.is_some_and(|t| t.elapsed() < interval) {
                    return Err(self.refusal(reason));
                }
                *last_try = Some(Instant::now());
                let reason = reason.clone();
                drop(health);
                self.reopen().map_err(|e| {
                    tracing::warn!(error = %e, "the store could not reopen yet");
                    self.refusal(&reason)
                })
            }
        }
    }

    /// The refusal of a store that failed: full when its disk is below the floor now.
    pub(super) fn refusal(&self, reason: &str) -> StoreError {
        match self.shared.check_space() {
            Err(full) => full,
            Ok(_) => StoreError::Unwritable(format!("{reason}; it reopens by itself")),
        }
    }

    /// The current sled handle for a read. Only after a reopen that closed the failed handle
    /// but could not open the files again is there none: then reads, too, try the reopen when
    /// it is due.
    ///
    /// A read of a failed store tries the reopen when it is due, too: sled may fail reads
    /// after a write failed, and a device that only pulls (or the token lookup that starts
    /// every sync) must bring the store back as a write would. A reopen not yet possible
    /// leaves the failed handle for the read to try.
    pub(super) fn sled(&self) -> Result<Arc<Sled>, StoreError> {
        let failed = matches!(*lock(&self.shared.health), Health::Failed { .. });
        if failed {
            let _ = self.healthy();
        }
        if let Ok(s) = self.shared.sled() {
            return Ok(s);
        }
        self.healthy()?;
        self.shared.sled()
    }

    /// Reopens sled after it failed a write, once there is space again: waits (bounded) for
    /// requests to let go of the failed handle, closes it, opens the files again (sled recovers
    /// what was flushed; nothing unflushed was acknowledged), checks them against the mark and
    /// resumes.
    pub(super) fn reopen(&self) -> Result<(), StoreError> {
        let sh = &self.shared;
        let Ok(_one) = sh.reopening.try_lock() else {
            return Err(StoreError::Unwritable("the store is reopening".into()));
        };
        // Opening needs room of its own (sled writes a snapshot and starts a log segment); with
        // less, keep the failed handle, whose reads still work, and try again later.
        if sh
            .check_space()?
            .is_some_and(|free| free < limits::STORE_REOPEN_FREE_BYTES_MIN)
        {
            return Err(StoreError::Unwritable(
                "too little space to reopen the store".into(),
            ));
        }
        // Bounded: a reopen tried by a read on a thread that holds the write lock (a store
        // read inside a write transaction) gives up rather than waiting on itself.
        let Some(_writes) = sh.writers.exclusive(limits::STORE_REOPEN_WAIT_MS) else {
            return Err(StoreError::Unwritable(
                "writes in progress hold the store; it reopens later".into(),
            ));
        };
        let old = sh.sled.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(old) = old {
            if let Err(old) = close_bounded(old) {
                *sh.sled.write().unwrap_or_else(|e| e.into_inner()) = Some(old);
                return Err(StoreError::Unwritable(
                    "requests still hold the failed store".into(),
                ));
            }
        }
        let sled = Sled::open(&sh.dir)?;
        let tip = sled.tip()?;
        let flush_gen = sled.meta_u64(FLUSH_GEN_KEY)?;
        let found = match lock(&sh.mark).last {
            Some(mark) => Found::Valid { mark, counter: 0 },
            None => Found::Missing,
        };
        let damage = Damage::found(&sled, tip, flush_gen, found)?;
        sh.durable.store(tip.seq, Ordering::Release);
        sh.flush_gen.store(flush_gen, Ordering::Release);
        *sh.sled.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(sled));
        *lock(&sh.health) = Health::Ok;
        tracing::warn!(
            last_seq = tip.seq,
            "the store reopened after a write failure; writes resume"
        );
        drop(_writes);
        if let Some(damage) = damage {
            self.heal(&damage)?;
            self.flush()?;
        }
        Ok(())
    }

    /// [`Store::writability`] for this store.
    pub(super) fn check_writable(&self) -> Writability {
        let min = self.shared.free_bytes_min.load(Ordering::Relaxed);
        let free = fs2::available_space(&self.shared.dir).ok();
        let refused = self
            .healthy()
            .and_then(|()| self.shared.check_space().map(|_| ()));
        Writability {
            writable: refused.is_ok(),
            reason: refused.err().map(|e| e.to_string()),
            free_bytes: free,
            free_bytes_min: min,
        }
    }
}

/// `m`'s guard if it comes free within `wait_ms`.
pub(super) fn lock_within<T>(m: &Mutex<T>, wait_ms: u64) -> Option<std::sync::MutexGuard<'_, T>> {
    let deadline = Instant::now() + std::time::Duration::from_millis(wait_ms);
    loop {
        match m.try_lock() {
            Ok(guard) => return Some(guard),
            Err(std::sync::TryLockError::Poisoned(e)) => return Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) if Instant::now() >= deadline => return None,
            Err(std::sync::TryLockError::WouldBlock) => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
        }
    }
}

/// Closes a failed sled handle: waits for the other holders to let go, then drops it on a
/// thread of its own (sled's close may wait for its own flusher), each step bounded by
/// [`limits::STORE_REOPEN_WAIT_MS`]. Gives the handle back if others still hold it.
pub(super) fn close_bounded(old: Arc<Sled>) -> Result<(), Arc<Sled>> {
    let wait = std::time::Duration::from_millis(limits::STORE_REOPEN_WAIT_MS);
    let started = Instant::now();
    while Arc::strong_count(&old) > 1 {
        if started.elapsed() > wait {
            return Err(old);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(old);
        let _ = tx.send(());
    });
    // If sled's close never ends, the reopen that follows finds the files locked and fails,
    // and the store stays refused: say it on the log.
    if rx.recv_timeout(wait).is_err() {
        tracing::error!("the failed store did not close; restart the server");
    }
    Ok(())
}

impl Drop for SledStore {
    fn drop(&mut self) {
        let group = &self.shared.group;
        let mut st = lock(&group.state);
        st.closing = true;
        group.wake.notify_all();
        let deadline =
            Instant::now() + std::time::Duration::from_millis(limits::STORE_REOPEN_WAIT_MS);
        while !st.stopped {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // A flush that never ends: leave its thread behind.
                return;
            }
            st = group
                .done
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(st);
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
    }
}

impl SledStore {
    /// [`Store::flush`]: asks the flusher for a flush that starts after this call and waits for
    /// it, at most [`limits::STORE_FLUSH_WAIT_MS_MAX`].
    pub(super) fn group_flush(&self) -> Result<(), StoreError> {
        // No free-space check here: what is to be flushed is already written, and small.
        self.healthy()?;
        let sh = &self.shared;
        let group = &sh.group;
        let wait = std::time::Duration::from_millis(sh.flush_wait_ms.load(Ordering::Relaxed));
        let deadline = Instant::now() + wait;
        let mut st = lock(&group.state);
        let target = ask(&mut st, group);
        st.waiting += 1;
        let outcome = loop {
            if st.completed >= target {
                break Ok(());
            }
            if let Some((ticket, why)) = &st.failed {
                if *ticket >= target {
                    break Err(StoreError::Unwritable(format!("the flush failed: {why}")));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Marked while the flush state is held, so the flush's end (which takes it
                // first) always comes after, and clears it.
                self.stalled();
                break Err(StoreError::Unwritable(format!(
                    "the flush did not finish within {} s",
                    wait.as_secs()
                )));
            }
            st = group
                .done
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        st.waiting -= 1;
        outcome
    }

    /// Asks the flusher for a flush that starts after this call, and waits for none.
    pub(super) fn ask_flush(&self) {
        let group = &self.shared.group;
        ask(&mut lock(&group.state), group);
    }

    /// A flush wait ran out: unless the flush failed meanwhile, the store refuses writes until
    /// that flush ends.
    pub(super) fn stalled(&self) {
        let mut health = lock(&self.shared.health);
        if matches!(*health, Health::Ok) {
            tracing::error!("a flush did not finish in time; writes are refused until it does");
            *health = Health::Stalled {
                since: Instant::now(),
            };
        }
    }
}

/// Asks the flusher for a flush that starts after now and returns its ticket. A flush running now
/// may have started before the caller's writes; the next one to start covers them.
fn ask(st: &mut FlushState, group: &GroupCommit) -> u64 {
    let target = st.started + 1;
    st.wanted = st.wanted.max(target);
    st.asking += 1;
    group.wake.notify_one();
    target
}
