//! The writers of one node: they take turns first come first served, and the writers that are
//! waiting when one finishes share its transaction and its commit (group commit).
//!
//! Why a queue: every write transaction takes the database's advisory lock
//! ([`super::WRITE_LOCK`]), so writers run one at a time whatever happens; but a writer blocked
//! on that lock inside the database holds a pooled connection while it waits, and under load
//! the waiting writers took every connection from the readers (a token check, a live channel's
//! access check), which were refused. Writers now wait here, holding nothing.
//!
//! Why a shared transaction: a commit is one durable flush of PostgreSQL's log (about 4 ms here),
//! taken under the lock, so one commit per writer capped a node at a few hundred writes a
//! second. A batch is one transaction: the first writer opens it (a connection, `BEGIN`, the
//! lock) and runs its work in it directly (if that fails, the transaction is rolled back: it
//! holds nobody else's work); each later writer runs its work inside a savepoint of its own,
//! kept until the commit (a release was one more round trip a writer), so a writer whose work
//! fails is undone alone and gets its own error at once; when a writer is done and others are
//! waiting, it hands the transaction to the next (at most [`limits::PG_WRITE_BATCH_MAX`]
//! writers a batch), else it commits, once for all. A writer returns only with the batch's
//! commit: success only once its work is durable, and a failed commit fails every writer of the
//! batch, whose [`crate::store::write`] runs its work again. The writers of a batch run one
//! after another, each seeing what the ones before it wrote, as if each had committed in turn.

use super::pool::Pool;
use super::session::Session;
use super::txn::Tips;
use super::watch::Own;
use super::{commit, StoreError};
use crate::store::outcomes::{self, Outcomes};
use casenote_protocol::{limits, Seq};
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The writers of one store.
pub(super) struct Writers {
    state: Mutex<State>,
    changed: Condvar,
    wait: Duration,
}

struct State {
    next_ticket: u64,
    /// Tickets of writers waiting for their turn, oldest first.
    queue: VecDeque<u64>,
    /// A writer has its turn (running its work, or opening a batch).
    busy: bool,
    /// The open batch, between two of its writers.
    open: Option<Batch>,
    next_batch: u64,
    /// How recent batches ended, for the writers waiting on them (the last few hundred).
    outcomes: Outcomes,
}

impl Default for State {
    fn default() -> State {
        State {
            next_ticket: 0,
            queue: VecDeque::new(),
            busy: false,
            open: None,
            next_batch: 0,
            outcomes: Outcomes::new(OUTCOMES_KEPT),
        }
    }
}

/// An open transaction shared by the writers of one batch.
pub(super) struct Batch {
    number: u64,
    session: Session,
    /// Writers whose work is in it.
    members: usize,
    /// The first and last sequence its writers appended.
    range: Option<(Seq, Seq)>,
    /// The logs' tips as its last kept writer left them.
    tips: Tips,
}

/// A writer's turn: the open transaction, to run its work in.
pub(super) struct Turn<'w> {
    writers: &'w Writers,
    pool: &'w Pool,
    own: &'w Own,
    batch: Option<Batch>,
}

/// Outcomes kept for writers still to read theirs; more than writers can be waiting.
const OUTCOMES_KEPT: usize = 4 * limits::PG_WRITE_BATCH_MAX + 256;

impl Writers {
    pub(super) fn new() -> Writers {
        Writers::with_wait(Duration::from_millis(limits::PG_POOL_WAIT_MS_MAX))
    }

    pub(super) fn with_wait(wait: Duration) -> Writers {
        Writers {
            state: Mutex::default(),
            changed: Condvar::new(),
            wait,
        }
    }

    /// Waits for this writer's turn (every writer that came earlier has had its own), then
    /// joins the open batch or opens one with a connection of `pool`. Refused with
    /// [`StoreError::Busy`] when the turn does not come within the wait.
    pub(super) fn enter<'w>(
        &'w self,
        pool: &'w Pool,
        own: &'w Own,
    ) -> Result<Turn<'w>, StoreError> {
        let mut state = match self.wait_for_turn() {
            Ok(state) => state,
            Err(orphan) => return Err(self.gave_up(orphan, pool, own)),
        };
        let open = state.open.take();
        drop(state);
        let batch = match open {
            Some(batch) => batch,
            None => match self.open_batch(pool) {
                Ok(batch) => batch,
                Err(e) => {
                    self.lock().busy = false;
                    self.changed.notify_all();
                    return Err(e);
                }
            },
        };
        Ok(Turn {
            writers: self,
            pool,
            own,
            batch: Some(batch),
        })
    }

    /// A writer that gave up waiting: refused busy; but if it was the last in the queue and a
    /// batch had been handed on to the queue, nobody else will take that batch, so it commits it
    /// for the batch's writers first.
    fn gave_up(&self, orphan: Option<Box<Batch>>, pool: &Pool, own: &Own) -> StoreError {
        if let Some(batch) = orphan {
            let turn = Turn {
                writers: self,
                pool,
                own,
                batch: None,
            };
            let _ = turn.commit(*batch);
            turn.release_turn();
        }
        StoreError::Busy(format!(
            "no turn to write came within {} ms",
            self.wait.as_millis()
        ))
    }

    /// Waits for this writer's turn; on giving up, the batch it must commit, if any.
    fn wait_for_turn(&self) -> Result<MutexGuard<'_, State>, Option<Box<Batch>>> {
        let deadline = Instant::now() + self.wait;
        let mut state = self.lock();
        let me = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push_back(me);
        loop {
            if !state.busy && state.queue.front() == Some(&me) {
                state.queue.pop_front();
                state.busy = true;
                return Ok(state);
            }
            let now = Instant::now();
            if now >= deadline {
                state.queue.retain(|t| *t != me);
                let orphan = if state.queue.is_empty() && !state.busy {
                    state.open.take().map(Box::new)
                } else {
                    None
                };
                state.busy |= orphan.is_some();
                drop(state);
                // The writer behind this one may be first now.
                self.changed.notify_all();
                return Err(orphan);
            }
            state = self.wait_on(state, deadline - now);
        }
    }

    /// A new batch: a connection, its transaction begun and the write lock taken.
    fn open_batch(&self, pool: &Pool) -> Result<Batch, StoreError> {
        let mut session = pool.get()?.detach();
        let begun = session.begin(&format!(
            "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({})",
            super::WRITE_LOCK
        ));
        if let Err(e) = begun {
            pool.give_back(session);
            return Err(e);
        }
        let mut state = self.lock();
        let number = state.next_batch;
        state.next_batch += 1;
        Ok(Batch {
            number,
            session,
            members: 0,
            range: None,
            tips: Tips::default(),
        })
    }

    /// Waits until batch `number` has ended, for at most [`limits::PG_BATCH_COMMIT_WAIT_MS`].
    fn outcome(&self, number: u64) -> Result<(), StoreError> {
        let wait = Duration::from_millis(limits::PG_BATCH_COMMIT_WAIT_MS);
        outcomes::wait_for(self.lock(), &self.changed, number, wait, |s| &s.outcomes)
    }

    fn ended(&self, number: u64, outcome: Result<(), StoreError>) {
        self.lock().outcomes.record(number, outcome);
        self.changed.notify_all();
    }

    fn wait_on<'s>(&self, state: MutexGuard<'s, State>, d: Duration) -> MutexGuard<'s, State> {
        self.changed
            .wait_timeout(state, d)
            .unwrap_or_else(|e| e.into_inner())
            .0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent fields (each is written whole).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Batches (transactions) opened so far.
    #[cfg(test)]
    pub(super) fn batches(&self) -> u64 {
        self.lock().next_batch
    }

    /// Writers waiting for their turn.
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.lock().queue.len()
    }
}

/// The savepoints of a batch nest (each writer but the first takes one, kept until the commit):
/// PostgreSQL caches 64 subtransactions a backend, and past that every snapshot taken while the
/// transaction runs grows slower.
const _: () = assert!(limits::PG_WRITE_BATCH_MAX <= 64);

impl Turn<'_> {
    /// Whether this writer is the first of its batch: nobody else's work is in the transaction.
    pub(super) fn first(&self) -> bool {
        self.batch.as_ref().is_none_or(|b| b.members == 0)
    }

    /// The open transaction, for this writer's work (inside its savepoint), and the logs' tips
    /// as the writers before it left them.
    pub(super) fn session(&mut self) -> (&mut Session, Tips) {
        let batch = self.batch.as_mut().expect("a turn holds its batch");
        (&mut batch.session, batch.tips.clone())
    }

    /// This writer's work is in the transaction (its savepoint released), having appended
    /// `appended` and left the logs' tips at `tips`: hands the batch on or commits it, and
    /// returns once the batch has ended.
    pub(super) fn done(
        mut self,
        appended: Option<(Seq, Seq)>,
        tips: Tips,
    ) -> Result<(), StoreError> {
        let mut batch = self.batch.take().expect("a turn holds its batch");
        batch.members += 1;
        batch.tips = tips;
        if let Some((first, last)) = appended {
            let first = batch.range.map_or(first, |(f, _)| f);
            batch.range = Some((first, last));
        }
        let number = batch.number;
        match self.hand_on(batch) {
            None => self.writers.outcome(number),
            Some(batch) => self.commit(batch),
        }
    }

    /// This writer's work failed and was undone (rolled back to its savepoint): the batch goes
    /// on without it.
    pub(super) fn undone(mut self) {
        let batch = self.batch.take().expect("a turn holds its batch");
        if batch.members == 0 {
            // Nobody else's work is in it.
            let mut session = batch.session;
            session.rollback();
            self.pool.give_back(session);
            self.release_turn();
            return;
        }
        if let Some(batch) = self.hand_on(batch) {
            let _ = self.commit(batch);
        }
    }

    /// Gives the batch to the next writer when one is waiting and there is room; else gives it
    /// back to be committed.
    fn hand_on(&self, batch: Batch) -> Option<Batch> {
        let mut state = self.writers.lock();
        state.busy = false;
        if !state.queue.is_empty() && batch.members < limits::PG_WRITE_BATCH_MAX {
            state.open = Some(batch);
            drop(state);
            self.writers.changed.notify_all();
            return None;
        }
        drop(state);
        // The next writer opens a batch of its own while this one commits.
        self.writers.changed.notify_all();
        Some(batch)
    }

    /// Commits the batch for all its writers, gives its connection back, and tells them.
    fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        let Batch {
            number,
            mut session,
            range,
            ..
        } = batch;
        let outcome = commit(&mut session, range, self.own);
        self.pool.give_back(session);
        self.writers.ended(number, outcome.clone());
        outcome
    }

    fn release_turn(&self) {
        self.writers.lock().busy = false;
        self.writers.changed.notify_all();
    }
}

impl Drop for Turn<'_> {
    /// A writer that panicked inside its work: its batch cannot be trusted, so nothing of it is
    /// committed, and its other writers are told (their work runs again).
    fn drop(&mut self) {
        if let Some(batch) = self.batch.take() {
            let mut session = batch.session;
            session.rollback();
            self.pool.give_back(session);
            let failed = StoreError::Backend("a writer of the shared transaction failed".into());
            self.writers.ended(batch.number, Err(failed));
            self.release_turn();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_whose_turn_does_not_come_is_refused_busy_and_leaves_the_queue() {
        let writers = Writers::with_wait(Duration::from_millis(50));
        let held = writers.wait_for_turn();
        assert!(held.is_ok(), "the first writer has its turn at once");
        drop(held);
        // The first writer still has its turn (busy), so the second's never comes.
        let refused = writers.wait_for_turn().map(drop);
        assert!(
            matches!(refused, Err(None)),
            "refused, with no batch to commit"
        );
        assert_eq!(writers.waiting(), 0, "the refused writer left its ticket");
        writers.lock().busy = false;
        let next = writers.wait_for_turn();
        assert!(next.is_ok(), "nobody is stuck behind it");
    }
}
