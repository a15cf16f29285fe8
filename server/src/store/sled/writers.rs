//! The sled store's writers: they take turns at the store's write lock, and the writers that are
//! coming when one finishes its work share its transaction and its commit (group commit of
//! transactions, before the group commit of flushes in [`super::durable`]).
//!
//! Why: every write transaction was one sled transaction, and each takes sled's global
//! concurrency-control lock exclusively, waiting for every read in progress to end while the
//! reads that arrive meanwhile wait behind it. A sync makes two write transactions; in W5L, at
//! 2,600 of them a second, that lock was where the server's threads waited most (a fifth of its
//! context switches) and the write lock, held through each commit, was the queue every push
//! stood in. Now a writer that finds others coming leaves its work in the open transaction (an
//! overlay of writes, [`TxnState`]) and waits; the next one runs its work in the same overlay,
//! seeing what the ones before it wrote, as if each had committed in turn; the last of a batch
//! (nobody else coming, or [`limits::SLED_WRITE_BATCH_MAX`] writers or
//! [`limits::SLED_WRITE_BATCH_BYTES_MAX`] bytes in it) commits it, once for all, as one sled
//! transaction, which sled recovers atomically. "Nobody coming" is asked twice, the second time
//! after yielding the processor to the threads that can run, some of them on their way to
//! write ([`Writers::coming_after_yield`]), but only while writers meet: when the last batch
//! committed held more than one.
//!
//! A writer's work that fails is undone alone (the overlay as it was before it) and it gets its
//! own error at once; the others' work goes on. A failed commit fails every writer of the batch.
//! A writer returns only with its batch's outcome, and never after a commit that lost its work.
//! A writer that panics inside its work ends its batch as failed (its overlay cannot be
//! trusted), so nobody waits for a commit that will not come.

use super::lock;
use super::trees::Sled;
use super::txn::{SledTxn, TxnState};
use crate::store::outcomes::{self, Outcomes};
use crate::store::{StoreError, Work};
use casenote_protocol::limits;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The writers of one store.
pub(super) struct Writers {
    state: Mutex<Batches>,
    ended: Condvar,
    /// Writers that asked for the write lock and have not taken it yet.
    coming: AtomicUsize,
    /// The last batch committed held more than one writer.
    met: AtomicBool,
    /// Tests only: the times a writer yielded the processor.
    #[cfg(test)]
    yields: AtomicUsize,
}

pub(super) struct Batches {
    /// The open transaction, between two of its writers.
    open: Option<Batch>,
    next_batch: u64,
    outcomes: Outcomes,
}

/// An open transaction shared by the writers of one batch.
struct Batch {
    number: u64,
    state: TxnState,
    /// Writers whose work is in it.
    members: usize,
}

/// A writer's turn: it holds the write lock and the open batch.
pub(super) struct Turn<'w> {
    writers: &'w Writers,
    guard: Option<MutexGuard<'w, Batches>>,
    batch: Option<Batch>,
    /// This writer's work is in the batch.
    joined: bool,
    /// The batch this writer is committing (for its drop, should the commit panic).
    committing: Option<u64>,
}

impl Writers {
    pub(super) fn new() -> Writers {
        Writers {
            state: Mutex::new(Batches {
                open: None,
                next_batch: 0,
                outcomes: Outcomes::new(4 * limits::SLED_WRITE_BATCH_MAX + 256),
            }),
            ended: Condvar::new(),
            coming: AtomicUsize::new(0),
            met: AtomicBool::new(false),
            #[cfg(test)]
            yields: AtomicUsize::new(0),
        }
    }

    /// Waits for the write lock, then joins the open batch or opens one.
    pub(super) fn enter(&self) -> Turn<'_> {
        self.coming.fetch_add(1, Ordering::AcqRel);
        let mut guard = lock(&self.state);
        self.coming.fetch_sub(1, Ordering::AcqRel);
        let batch = guard.open.take().unwrap_or_else(|| {
            guard.next_batch += 1;
            Batch {
                number: guard.next_batch,
                state: TxnState::default(),
                members: 0,
            }
        });
        Turn {
            writers: self,
            guard: Some(guard),
            batch: Some(batch),
            joined: false,
            committing: None,
        }
    }

    /// Writers waiting for the write lock now.
    fn coming(&self) -> usize {
        self.coming.load(Ordering::Acquire)
    }

    /// Writers waiting for the write lock once this thread has let the others that can run
    /// have the processor (`sched_yield`: at once, when none can). A writer that finds nobody
    /// coming commits alone, and the next, a moment later, commits alone too: in W5L a batch
    /// held 2.2-2.4 writers (0.87 commits a sync), and every commit costs sled two log buffers
    /// written and synced (`pin_log`) and holds reads out while it lands. Threads about to
    /// write get there first, and join: 6.6-6.9 writers a batch, 0.30 commits a sync.
    ///
    /// Only while writers meet (the last batch held more than one): a yield gives the processor
    /// to any thread that can run on it, for as long as the scheduler gives that one, and with
    /// writers that come one at a time (W3's idle syncs at a million documents) a lone writer
    /// that yielded waited 1.3-2.3 ms for nothing, its sync's slowest step. Writers that meet
    /// without it still met in 2.2-2.4 writers a batch, so the yield stays on under load.
    fn coming_after_yield(&self) -> usize {
        if !self.met.load(Ordering::Acquire) {
            return 0;
        }
        #[cfg(test)]
        self.yields.fetch_add(1, Ordering::Relaxed);
        std::thread::yield_now();
        self.coming()
    }

    /// The write lock with no batch open, for up to `wait_ms` (a reopen, which swaps the sled
    /// handle): an open batch is ended as failed, its writers told to sync again.
    pub(super) fn exclusive(&self, wait_ms: u64) -> Option<MutexGuard<'_, Batches>> {
        let mut guard = super::durable::lock_within(&self.state, wait_ms)?;
        if let Some(batch) = guard.open.take() {
            let refused = StoreError::Unwritable(
                "the store reopened before this write was committed; sync again".into(),
            );
            guard.outcomes.record(batch.number, Err(refused));
            self.ended.notify_all();
        }
        Some(guard)
    }
}

impl Turn<'_> {
    /// Runs `work` in the open transaction over `s`; on failure, undoes only its own writes.
    pub(super) fn run(&mut self, s: &Sled, work: &mut Work<'_>) -> Result<(), StoreError> {
        let batch = self.batch.as_mut().expect("a turn holds its batch");
        let before = (batch.members > 0).then(|| batch.state.clone());
        let mut txn = SledTxn::resume(s, std::mem::take(&mut batch.state));
        match work(&mut txn) {
            Ok(()) => {
                batch.state = txn.into_state();
                batch.members += 1;
                self.joined = true;
                Ok(())
            }
            Err(e) => {
                batch.state = before.unwrap_or_default();
                Err(e)
            }
        }
    }

    /// Hands the batch on to a writer that is coming, and waits for its outcome (a writer whose
    /// work failed does not wait); or, nobody coming or the batch full, commits it with `commit`
    /// for all its writers.
    pub(super) fn finish(
        mut self,
        commit: impl FnOnce(TxnState) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let batch = self.batch.take().expect("a turn holds its batch");
        if batch.members == 0 {
            // Nobody's work is in it (this writer's failed, and it was the first).
            return Ok(());
        }
        let number = batch.number;
        let room = batch.members < limits::SLED_WRITE_BATCH_MAX
            && batch.state.bytes() <= limits::SLED_WRITE_BATCH_BYTES_MAX;
        if room && (self.writers.coming() > 0 || self.writers.coming_after_yield() > 0) {
            let mut guard = self.guard.take().expect("a turn holds the write lock");
            guard.open = Some(batch);
            if !self.joined {
                return Ok(());
            }
            let wait = Duration::from_millis(limits::STORE_FLUSH_WAIT_MS_MAX);
            let ended = &self.writers.ended;
            return outcomes::wait_for(guard, ended, number, wait, |b| &b.outcomes);
        }
        self.committing = Some(number);
        self.writers.met.store(batch.members > 1, Ordering::Release);
        let outcome = commit(batch.state);
        self.committing = None;
        self.ended(number, outcome.clone());
        outcome
    }

    /// Records how batch `number` ended, and tells its writers.
    fn ended(&mut self, number: u64, outcome: Result<(), StoreError>) {
        if let Some(guard) = self.guard.as_mut() {
            guard.outcomes.record(number, outcome);
            self.writers.ended.notify_all();
        }
    }
}

impl Drop for Turn<'_> {
    /// A writer that panicked inside its work or its batch's commit: nothing of its batch is
    /// committed (or, from a commit, nothing is known of it), and the batch's other writers are
    /// told (their devices sync again).
    fn drop(&mut self) {
        let unfinished = self
            .batch
            .take()
            .map(|b| b.number)
            .or(self.committing.take());
        if let Some(number) = unfinished {
            let failed = StoreError::Backend("a writer of the shared transaction failed".into());
            self.ended(number, Err(failed));
        }
    }
}

#[cfg(test)]
impl Writers {
    /// Batches opened so far.
    fn batches(&self) -> u64 {
        lock(&self.state).next_batch
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{AuditKind, AuditRecord, NewChange};
    use crate::store::sled::SledStore;
    use crate::store::{Store, StoreError, Txn};
    use casenote_protocol::wire::Hash;
    use casenote_protocol::{DocId, Seq};
    use serde_json::json;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    fn change(doc: DocId, n: u8) -> NewChange {
        NewChange {
            doc_id: doc,
            hash: Hash([n; 32]),
            bytes: vec![n; 8],
            received_at_ms: 0,
        }
    }

    fn record(n: u8) -> AuditRecord {
        AuditRecord::new(AuditKind::Admin, 1_000, json!({"action": "test", "n": n}))
    }

    /// A store of its own, and a document to write to.
    fn fresh() -> (tempfile::TempDir, SledStore, DocId) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        (dir, store, DocId::new_random())
    }

    /// The first writer's work: change 0 and audit entry 0.
    fn first_write(txn: &mut dyn Txn, doc: DocId) -> Result<Seq, StoreError> {
        let seq = txn.append_change(&change(doc, 0))?;
        txn.audit_append(record(0))?;
        Ok(seq)
    }

    /// One write transaction: a change and an audit entry; `fail` then refuses it.
    fn write(store: &SledStore, doc: DocId, n: u8, fail: bool) -> Result<Seq, StoreError> {
        let mut seq = None;
        store.write_txn(&mut |txn: &mut dyn Txn| {
            seq = Some(txn.append_change(&change(doc, n))?);
            txn.audit_append(record(n))?;
            if fail {
                return Err(StoreError::Corrupt("this writer's work fails".into()));
            }
            Ok(())
        })?;
        Ok(seq.expect("the work ran"))
    }

    /// The writers of changes 1 and 2 (the first of them fails when `fails[0]`, the second when
    /// `fails[1]`), for [`queued`].
    fn later_writers(
        store: &SledStore,
        doc: DocId,
        fails: [bool; 2],
    ) -> Vec<Box<dyn FnOnce() -> Result<Seq, StoreError> + Send + '_>> {
        (1..=2u8)
            .zip(fails)
            .map(|(n, fail)| {
                Box::new(move || write(store, doc, n, fail))
                    as Box<dyn FnOnce() -> Result<Seq, StoreError> + Send>
            })
            .collect()
    }

    /// Runs `first` as the first writer of a batch whose work goes on only once `behind`
    /// more writers are waiting for the write lock; then `rest`, each on a thread of its own.
    /// Their results, first's first.
    fn queued<T: Send>(
        store: &SledStore,
        first: impl FnOnce(&mut dyn Txn) -> Result<T, StoreError> + Send,
        rest: Vec<Box<dyn FnOnce() -> Result<T, StoreError> + Send + '_>>,
    ) -> Vec<Result<T, StoreError>> {
        let behind = rest.len();
        std::thread::scope(|s| {
            let (entered, inside) = mpsc::channel();
            let head = s.spawn(move || {
                let mut first = Some(first);
                let mut out = None;
                let done = store.write_txn(&mut |txn: &mut dyn Txn| {
                    entered.send(()).unwrap();
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while store.shared.writers.coming() < behind {
                        assert!(Instant::now() < deadline, "the other writers never came");
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    out = Some(first.take().expect("runs once")(txn)?);
                    Ok(())
                });
                done.map(|()| out.expect("the work ran"))
            });
            inside.recv().unwrap();
            let others: Vec<_> = rest.into_iter().map(|w| s.spawn(w)).collect();
            let mut all = vec![head.join().unwrap()];
            all.extend(others.into_iter().map(|t| t.join().unwrap()));
            all
        })
    }

    /// The times this store's writers yielded the processor.
    fn yields(store: &SledStore) -> usize {
        store
            .shared
            .writers
            .yields
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    #[test]
    fn a_writer_yields_for_company_only_after_a_batch_that_had_it() {
        let (_dir, store, doc) = fresh();
        for n in 1..=5u8 {
            write(&store, doc, n, false).unwrap();
        }
        assert_eq!(yields(&store), 0, "writers one at a time never yield");
        let rest = (7..9u8)
            .map(|n| {
                let store = &store;
                Box::new(move || write(store, doc, n, false)) as Box<dyn FnOnce() -> _ + Send>
            })
            .collect();
        let shared = queued(&store, |txn| first_write(txn, doc), rest);
        assert!(shared.iter().all(Result::is_ok), "{shared:?}");
        let after_shared = yields(&store);
        write(&store, doc, 10, false).unwrap();
        assert_eq!(
            yields(&store),
            after_shared + 1,
            "the writer after a shared batch yields"
        );
        write(&store, doc, 11, false).unwrap();
        write(&store, doc, 12, false).unwrap();
        assert_eq!(
            yields(&store),
            after_shared + 1,
            "a batch of one turns the yield off again"
        );
    }

    #[test]
    fn writers_that_queue_up_share_one_commit_each_seeing_the_writes_before_it() {
        let (_dir, store, doc) = fresh();
        let batches = store.shared.writers.batches();
        let rest = (1..4u8)
            .map(|n| {
                let store = &store;
                Box::new(move || write(store, doc, n, false)) as Box<dyn FnOnce() -> _ + Send>
            })
            .collect();
        let first = |txn: &mut dyn Txn| first_write(txn, doc);
        let seqs: Vec<Seq> = queued(&store, first, rest)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            store.shared.writers.batches(),
            batches + 1,
            "one batch, one commit"
        );
        let mut sorted = seqs.clone();
        sorted.sort();
        assert_eq!(sorted, vec![Seq(1), Seq(2), Seq(3), Seq(4)], "{seqs:?}");
        assert_eq!(store.last_seq().unwrap(), Seq(4));
        store.flush().unwrap();
        assert_eq!(
            crate::audit::verify(&store).unwrap(),
            4,
            "one unforked chain"
        );
    }

    #[test]
    fn a_writer_whose_work_fails_is_undone_alone() {
        let (_dir, store, doc) = fresh();
        let batches = store.shared.writers.batches();
        let rest = later_writers(&store, doc, [true, false]);
        let first = |txn: &mut dyn Txn| first_write(txn, doc);
        let out = queued(&store, first, rest);
        assert!(out[0].is_ok() && out[2].is_ok(), "{out:?}");
        assert!(matches!(out[1], Err(StoreError::Corrupt(_))), "{out:?}");
        assert_eq!(store.shared.writers.batches(), batches + 1);
        // What the failed writer wrote is gone; the writers around it are stored.
        let logged: Vec<Hash> = (1..=2)
            .map(|s| store.get_log(Seq(s)).unwrap().expect("stored").1)
            .collect();
        assert!(
            !logged.contains(&Hash([1; 32])),
            "the failed writer's change"
        );
        assert_eq!(store.last_seq().unwrap(), Seq(2));
        store.flush().unwrap();
        assert_eq!(crate::audit::verify(&store).unwrap(), 2);
    }

    #[test]
    fn a_writer_that_panics_fails_its_batch_and_the_store_goes_on() {
        let (_dir, store, doc) = fresh();
        let store_ref = &store;
        // The second writer panics in its work, after the first left its work in the batch.
        let rest: Vec<Box<dyn FnOnce() -> Result<Seq, StoreError> + Send>> =
            vec![Box::new(move || {
                let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    store_ref.write_txn(&mut |txn: &mut dyn Txn| {
                        txn.append_change(&change(doc, 1))?;
                        panic!("a bug in a writer's work");
                    })
                }));
                assert!(caught.is_err(), "the panic goes on to the writer's caller");
                Ok(Seq(0))
            })];
        let first = |txn: &mut dyn Txn| txn.append_change(&change(doc, 0));
        let out = queued(&store, first, rest);
        assert!(
            matches!(out[0], Err(StoreError::Backend(_))),
            "the first writer is told its batch failed: {out:?}"
        );
        assert_eq!(
            store.last_seq().unwrap(),
            Seq(0),
            "nothing of the batch was committed"
        );
        assert_eq!(
            write(&store, doc, 2, false).unwrap(),
            Seq(1),
            "the next write goes on"
        );
    }

    /// A batch past SLED_WRITE_BATCH_BYTES_MAX of writes is committed at once, though others
    /// are coming: the writers after it are not made to copy it.
    #[test]
    fn a_large_batch_is_committed_at_once() {
        let (_dir, store, doc) = fresh();
        let batches = store.shared.writers.batches();
        let rest = later_writers(&store, doc, [false, false]);
        let large = casenote_protocol::limits::SLED_WRITE_BATCH_BYTES_MAX + 1;
        let first = |txn: &mut dyn Txn| {
            let mut big = change(doc, 0);
            big.bytes = vec![0; large];
            txn.append_change(&big)
        };
        let out = queued(&store, first, rest);
        assert!(out.iter().all(Result::is_ok), "{out:?}");
        assert_eq!(
            store.shared.writers.batches(),
            batches + 2,
            "the large one alone, the two after it together"
        );
        assert_eq!(store.last_seq().unwrap(), Seq(3));
    }
}
