//! The writers' gate: one write transaction of this node at a time, first come first served,
//! each waiting at most [`limits::PG_POOL_WAIT_MS_MAX`].
//!
//! Why: every write transaction takes the database's advisory lock ([`super::WRITE_LOCK`]), so
//! writers run one at a time whatever happens; but a writer blocked on that lock inside the
//! database holds a pooled connection while it waits. Under load every connection of the pool
//! ended up held by writers waiting their turn, and reads (a token check, a live channel's
//! access check) waited for a connection until they were refused. Writers of one node now wait
//! here, holding nothing, and take a connection only when it is their turn: at most one
//! connection per node waits on the advisory lock, and the rest serve reads. The queue is a
//! ticket queue, so a writer that has waited longest goes next (std's mutex promises no order).

use super::super::StoreError;
use casenote_protocol::limits;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The gate of one store.
pub(super) struct Gate {
    state: Mutex<State>,
    turn: Condvar,
    wait: Duration,
}

#[derive(Default)]
struct State {
    held: bool,
    next: u64,
    /// Tickets waiting, oldest first.
    queue: VecDeque<u64>,
}

/// A writer's turn; the next one goes when it is dropped.
pub(super) struct Turn<'g> {
    gate: &'g Gate,
}

impl Gate {
    pub(super) fn new() -> Gate {
        Gate::with_wait(Duration::from_millis(limits::PG_POOL_WAIT_MS_MAX))
    }

    pub(super) fn with_wait(wait: Duration) -> Gate {
        Gate {
            state: Mutex::default(),
            turn: Condvar::new(),
            wait,
        }
    }

    /// Waits for this writer's turn: every writer that came earlier has gone through. Refused
    /// with [`StoreError::Busy`] when the turn does not come within the wait.
    pub(super) fn enter(&self) -> Result<Turn<'_>, StoreError> {
        let deadline = Instant::now() + self.wait;
        let mut state = lock(&self.state);
        let me = state.next;
        state.next += 1;
        state.queue.push_back(me);
        loop {
            if !state.held && state.queue.front() == Some(&me) {
                state.queue.pop_front();
                state.held = true;
                return Ok(Turn { gate: self });
            }
            let now = Instant::now();
            if now >= deadline {
                state.queue.retain(|t| *t != me);
                drop(state);
                // The writer behind this one may be first now.
                self.turn.notify_all();
                return Err(StoreError::Busy(format!(
                    "no turn to write came within {} ms",
                    self.wait.as_millis()
                )));
            }
            state = self
                .turn
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
impl Gate {
    /// Writers waiting for their turn.
    pub(super) fn waiting(&self) -> usize {
        lock(&self.state).queue.len()
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        lock(&self.gate.state).held = false;
        self.gate.turn.notify_all();
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves a consistent flag and queue (each is written whole).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::Arc;

    #[test]
    fn writers_go_through_in_the_order_they_came() {
        let gate = Arc::new(Gate::with_wait(Duration::from_secs(30)));
        let first = gate.enter().unwrap();
        let (tx, rx) = mpsc::channel();
        let mut threads = Vec::new();
        for i in 0..8 {
            let (g, tx) = (gate.clone(), tx.clone());
            threads.push(std::thread::spawn(move || {
                let _turn = g.enter().unwrap();
                tx.send(i).unwrap();
            }));
            // Each one queued before the next arrives.
            while lock(&gate.state).queue.len() < i + 1 {
                std::thread::yield_now();
            }
        }
        drop(first);
        threads.into_iter().for_each(|t| t.join().unwrap());
        let order: Vec<usize> = rx.try_iter().collect();
        assert_eq!(order, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn a_writer_whose_turn_does_not_come_is_refused_busy_and_leaves_the_queue() {
        let gate = Gate::with_wait(Duration::from_millis(50));
        let held = gate.enter().unwrap();
        let refused = gate.enter();
        assert!(
            matches!(refused, Err(StoreError::Busy(_))),
            "{:?}",
            refused.err()
        );
        assert!(
            lock(&gate.state).queue.is_empty(),
            "the refused writer left its ticket"
        );
        drop(held);
        // Nobody is stuck behind the ticket that gave up.
        assert!(gate.enter().is_ok());
    }
}
