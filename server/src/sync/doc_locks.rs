//! The pushed documents a push holds while it validates and writes them ([`DocLocks`]): every
//! other push of any of them waits, first come first served; pushes of other documents never do.
//!
//! Why first come first served: a team editing the same plans queues its pushes on the plan's
//! lock, and with a lock that any newcomer could take as it was freed (and every waiter woken
//! at each release, most to find it taken again) one push in a hundred waited through the turns
//! of several later ones: in W5L that was most of the slowest pushes' time. Here each push takes
//! a ticket; it proceeds once it is the oldest waiter of every document it pushes, and a release
//! wakes only the pushes it put first.
//!
//! Why this cannot deadlock: a push enters the queues of all its documents at once, under one
//! mutex, so the queues agree on the order of tickets; the oldest ticket of all is first in every
//! queue it is in, so it always proceeds.

use casenote_protocol::DocId;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::Thread;

/// The documents being pushed, and who waits for each.
#[derive(Default)]
pub struct DocLocks {
    state: Mutex<Queues>,
}

#[derive(Default)]
struct Queues {
    next_ticket: u64,
    /// Each held document's queue: the holder first, then its waiters, oldest first.
    docs: HashMap<DocId, VecDeque<u64>>,
    /// The threads of the pushes that wait, to wake when they come first.
    parked: HashMap<u64, Thread>,
}

impl Queues {
    /// Whether `ticket` is first in the queue of every one of `docs`.
    fn first_in_all(&self, ticket: u64, docs: &[DocId]) -> bool {
        docs.iter()
            .all(|d| self.docs.get(d).and_then(|q| q.front()) == Some(&ticket))
    }
}

/// What [`DocLocks::hold`] holds until dropped.
pub struct Held<'a> {
    locks: &'a DocLocks,
    ticket: u64,
    docs: Vec<DocId>,
}

impl DocLocks {
    /// The server's locks (one process, one set of pushes).
    pub fn global() -> &'static DocLocks {
        static LOCKS: OnceLock<DocLocks> = OnceLock::new();
        LOCKS.get_or_init(DocLocks::default)
    }

    /// Takes every document of `docs`, waiting for every push that asked for any of them first.
    pub fn hold(&self, docs: impl IntoIterator<Item = DocId>) -> Held<'_> {
        let docs: Vec<DocId> = docs
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut q = self.lock();
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        for d in &docs {
            q.docs.entry(*d).or_default().push_back(ticket);
        }
        if !q.first_in_all(ticket, &docs) {
            q.parked.insert(ticket, std::thread::current());
            while !q.first_in_all(ticket, &docs) {
                drop(q);
                // A wake meant for an earlier wait of this thread, or none at all, only makes
                // it look again.
                std::thread::park();
                q = self.lock();
            }
            q.parked.remove(&ticket);
        }
        Held {
            locks: self,
            ticket,
            docs,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queues> {
        // A panic while holding it leaves whole queues (each change is one insert or removal).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pushes that hold or wait for a document (tests).
    #[cfg(test)]
    fn queued(&self, doc: DocId) -> usize {
        self.lock().docs.get(&doc).map_or(0, VecDeque::len)
    }
}

impl Drop for Held<'_> {
    /// Leaves every queue, and wakes the pushes now first in one (each looks whether it is
    /// first in all of its own).
    fn drop(&mut self) {
        let mut q = self.locks.lock();
        let mut wake = Vec::new();
        for d in &self.docs {
            let Some(queue) = q.docs.get_mut(d) else {
                continue;
            };
            queue.retain(|t| *t != self.ticket);
            match queue.front() {
                Some(next) => wake.push(*next),
                None => {
                    q.docs.remove(d);
                }
            }
        }
        for t in wake {
            if let Some(thread) = q.parked.get(&t) {
                thread.unpark();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn doc(n: u8) -> DocId {
        DocId(uuid::Uuid::from_bytes([n; 16]))
    }

    /// Waits until `n` pushes hold or wait for `d`.
    fn until_queued(locks: &DocLocks, d: DocId, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while locks.queued(d) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "the pushes never queued"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn pushes_of_one_document_take_it_in_the_order_they_asked() {
        let locks: &'static DocLocks = Box::leak(Box::default());
        let first = locks.hold([doc(1)]);
        let (order, got) = mpsc::channel();
        let mut waiters = Vec::new();
        for i in 0..6 {
            let order = order.clone();
            waiters.push(std::thread::spawn(move || {
                let _held = locks.hold([doc(1)]);
                order.send(i).unwrap();
            }));
            // Each asks only once the one before it waits.
            until_queued(locks, doc(1), i + 2);
        }
        drop(first);
        for w in waiters {
            w.join().unwrap();
        }
        let took: Vec<usize> = got.try_iter().collect();
        assert_eq!(took, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(locks.queued(doc(1)), 0, "nothing is left queued");
    }

    #[test]
    fn a_push_of_other_documents_does_not_wait() {
        let locks = DocLocks::default();
        let _held = locks.hold([doc(1), doc(2)]);
        let other = locks.hold([doc(3)]);
        drop(other);
    }

    #[test]
    fn a_push_waits_for_every_earlier_push_of_any_of_its_documents() {
        let locks: &'static DocLocks = Box::leak(Box::default());
        let a = locks.hold([doc(1)]);
        let b = locks.hold([doc(2)]);
        let (tx, rx) = mpsc::channel();
        let both = std::thread::spawn(move || {
            let _held = locks.hold([doc(2), doc(1)]);
            tx.send(()).unwrap();
        });
        until_queued(locks, doc(1), 2);
        drop(a);
        assert!(
            rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "it still waits for the push of its second document"
        );
        drop(b);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("it proceeds once both are free");
        both.join().unwrap();
    }

    #[test]
    fn overlapping_pushes_from_many_threads_all_finish() {
        let locks: &'static DocLocks = Box::leak(Box::default());
        let threads: Vec<_> = (0..8u8)
            .map(|i| {
                std::thread::spawn(move || {
                    for n in 0..200u8 {
                        let docs = [doc(i % 3), doc((i + n) % 4), doc(n % 5)];
                        let _held = locks.hold(docs);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for d in 0..5 {
            assert_eq!(locks.queued(doc(d)), 0);
        }
    }
}
