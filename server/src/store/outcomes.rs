//! How shared write transactions ended, kept for the writers that wait on them. Both backends
//! commit the work of the writers that queue up at once in one transaction (group commit:
//! `postgres/writers.rs`, `sled/writers.rs`); a writer whose work is in a batch that another
//! writer commits waits here for that batch's outcome, and returns it as its own.

use super::StoreError;
use std::collections::BTreeMap;
use std::sync::{Condvar, MutexGuard};
use std::time::{Duration, Instant};

/// The outcomes of the last batches, by batch number.
pub(crate) struct Outcomes {
    ended: BTreeMap<u64, Result<(), StoreError>>,
    kept: usize,
}

impl Outcomes {
    /// Keeps the last `kept` outcomes: more than writers can be waiting at once.
    pub(crate) fn new(kept: usize) -> Outcomes {
        Outcomes {
            ended: BTreeMap::new(),
            kept: kept.max(1),
        }
    }

    pub(crate) fn record(&mut self, batch: u64, outcome: Result<(), StoreError>) {
        self.ended.insert(batch, outcome);
        while self.ended.len() > self.kept {
            self.ended.pop_first();
        }
    }

    /// How batch `batch` ended; `None` while it has not. An outcome no longer kept is an
    /// error, never a success.
    pub(crate) fn of(&self, batch: u64) -> Option<Result<(), StoreError>> {
        if let Some(outcome) = self.ended.get(&batch) {
            return Some(outcome.clone());
        }
        let aged_out = self
            .ended
            .first_key_value()
            .is_some_and(|(n, _)| *n > batch);
        aged_out.then(|| {
            Err(StoreError::Unwritable(
                "the outcome of this write's commit was lost; sync again".into(),
            ))
        })
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ended.len()
    }
}

/// Waits on `ended` (with `guard` released meanwhile) until batch `batch` has ended, for at
/// most `wait`: past that the writer gives up with `unwritable` (nothing acknowledged; the
/// device syncs again, and a commit that did happen is deduplicated then).
pub(crate) fn wait_for<S>(
    mut guard: MutexGuard<'_, S>,
    ended: &Condvar,
    batch: u64,
    wait: Duration,
    outcomes: impl Fn(&S) -> &Outcomes,
) -> Result<(), StoreError> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(outcome) = outcomes(&guard).of(batch) {
            return outcome;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(StoreError::Unwritable(format!(
                "the shared commit did not end within {} ms; sync again",
                wait.as_millis()
            )));
        }
        guard = ended
            .wait_timeout(guard, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn outcomes_are_kept_for_waiting_writers_and_bounded() {
        let mut outcomes = Outcomes::new(4);
        for n in 0..10 {
            outcomes.record(n, Ok(()));
        }
        assert_eq!(outcomes.len(), 4);
        assert!(matches!(outcomes.of(9), Some(Ok(()))));
        assert!(outcomes.of(10).is_none(), "not ended yet");
        // A writer whose outcome aged out is told that it is unknown, never that it succeeded.
        assert!(matches!(
            outcomes.of(0),
            Some(Err(StoreError::Unwritable(_)))
        ));
    }

    #[test]
    fn a_writer_waits_for_its_batch_and_gives_up_after_the_wait() {
        let state = Mutex::new(Outcomes::new(8));
        let ended = Condvar::new();
        let gave_up = wait_for(
            state.lock().unwrap(),
            &ended,
            0,
            Duration::from_millis(20),
            |o| o,
        );
        assert!(matches!(gave_up, Err(StoreError::Unwritable(_))));
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                wait_for(
                    state.lock().unwrap(),
                    &ended,
                    1,
                    Duration::from_secs(10),
                    |o| o,
                )
            });
            std::thread::sleep(Duration::from_millis(20));
            state
                .lock()
                .unwrap()
                .record(1, Err(StoreError::Backend("the commit failed".into())));
            ended.notify_all();
            assert!(matches!(
                waiter.join().unwrap(),
                Err(StoreError::Backend(_))
            ));
        });
    }
}
