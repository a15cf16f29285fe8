//! Materialised documents in the server's memory: a budget that bounds them all, and the cache
//! of recently validated states that lives inside it.
//!
//! Validating a push needs the document as stored, materialised from its log, and a materialised
//! Automerge document costs about 250 bytes of memory per operation in its history (measured:
//! a 20,000-change plan of 300,000 operations takes about 60 MB). A device chooses how much it
//! sends, so nothing here is bounded by counting documents: every materialised document is
//! counted by its operations against one budget, `limits::SERVER_RESIDENT_OPS_MAX`, shared by
//! the documents being validated now ([`Reserved`]) and the cache of validated states (which
//! gives way first: least recently kept entries are evicted to make room). A validation that
//! finds the budget taken by others' validations waits for one of them to finish. One document
//! may never need more than the whole budget (`limits::DOC_OPS_MAX` is smaller), and a thread
//! holds at most one reservation and never waits for anything else while it does, so a wait
//! always ends.
//!
//! A cached state is used only when its heads equal the heads the store holds for the document:
//! the same heads mean the same changes, so the same state, whichever store it came from.

use crate::store::{Store, StoreError, Txn};
use automerge::{AutoCommit, Change, ReadDoc};
use casenote_protocol::limits::SERVER_RESIDENT_OPS_MAX;
use casenote_protocol::wire::{from_wire_heads, Hash};
use casenote_protocol::{DocId, Seq};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

#[derive(Default)]
struct State {
    /// doc → (last kept tick, operations, state)
    cache: HashMap<DocId, (u64, u64, AutoCommit)>,
    cached_ops: u64,
    reserved_ops: u64,
    tick: u64,
}

impl State {
    fn used(&self) -> u64 {
        self.cached_ops + self.reserved_ops
    }

    fn evict_oldest(&mut self) -> bool {
        let oldest = self
            .cache
            .iter()
            .min_by_key(|(_, (t, _, _))| *t)
            .map(|(d, _)| *d);
        match oldest.and_then(|d| self.cache.remove(&d)) {
            Some((_, ops, _)) => {
                self.cached_ops -= ops;
                true
            }
            None => false,
        }
    }
}

struct Resident {
    state: Mutex<State>,
    freed: Condvar,
}

fn resident() -> &'static Resident {
    static RESIDENT: OnceLock<Resident> = OnceLock::new();
    RESIDENT.get_or_init(|| Resident {
        state: Mutex::new(State::default()),
        freed: Condvar::new(),
    })
}

fn lock() -> MutexGuard<'static, State> {
    resident().state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Operations reserved for one document being validated; given back when dropped, or moved into
/// the cache with the state they pay for ([`Reserved::keep`]).
#[must_use]
pub struct Reserved {
    ops: u64,
}

/// Reserves `ops` operations of the budget (at most the whole budget), evicting cached states
/// and then waiting for other validations as needed.
pub fn reserve(ops: u64) -> Reserved {
    let ops = ops.min(SERVER_RESIDENT_OPS_MAX);
    let mut st = lock();
    while st.used() + ops > SERVER_RESIDENT_OPS_MAX {
        if !st.evict_oldest() {
            st = resident().freed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
    st.reserved_ops += ops;
    Reserved { ops }
}

impl Reserved {
    /// Keeps `state` as document `doc`'s latest validated state, paid for by this reservation
    /// (grown or shrunk to what the state holds; when it has grown past what the budget has free,
    /// older entries give way, and a state too large to fit is simply not kept).
    pub fn keep(self, doc: DocId, state: AutoCommit) {
        let ops = state.stats().num_ops;
        let mut st = lock();
        st.reserved_ops -= self.ops;
        std::mem::forget(self);
        if let Some((_, old, _)) = st.cache.remove(&doc) {
            st.cached_ops -= old;
        }
        while st.used() + ops > SERVER_RESIDENT_OPS_MAX && st.evict_oldest() {}
        if st.used() + ops <= SERVER_RESIDENT_OPS_MAX {
            st.tick += 1;
            let tick = st.tick;
            st.cache.insert(doc, (tick, ops, state));
            st.cached_ops += ops;
        }
        drop(st);
        resident().freed.notify_all();
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        lock().reserved_ops -= self.ops;
        resident().freed.notify_all();
    }
}

/// Operations held by cached states and by validations now (for tests and metrics).
pub fn used_ops() -> u64 {
    lock().used()
}

/// Why the stored document could not be materialised (a server-side problem, not the device's).
fn corrupt(doc: DocId, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("document {doc} does not load from its log: {e}"))
}

/// Loads document `doc` as stored: every stored change, applied in one batch (docs/design.md, "Facts
/// measured": one `apply_changes` per change gets slower as the history grows). The caller holds
/// a [`Reserved`] for it.
pub fn materialise(store: &dyn Store, doc: DocId) -> Result<AutoCommit, StoreError> {
    let seqs = store.doc_change_seqs(doc)?;
    from_log(doc, seqs, |seq| Ok(store.get_log(seq)?.map(|(_, _, b)| b)))
}

/// [`materialise`], reading the log in `txn`: a judgement made inside a write transaction reads
/// there, since through the store each read would take a second pooled connection while the
/// transaction holds one (on PostgreSQL, enough such pushes at once would wait on each other).
pub fn materialise_in(txn: &mut dyn Txn, doc: DocId) -> Result<AutoCommit, StoreError> {
    let seqs = txn.change_seqs_of(doc)?;
    from_log(doc, seqs, |seq| Ok(txn.change_at(seq)?.map(|(_, _, b)| b)))
}

/// How often [`every_document_loads`] says how far it got.
pub const LOADS_PROGRESS_EVERY: usize = 10_000;

/// `verify`'s last step: every document of the log loads from it as a push would find it (every
/// stored change applied in one batch, the vendored automerge's check of each op included). A
/// store written before that check may hold a change it refuses (vendor/README.md), and such a
/// document could take no push. The number of documents, or the first one that does not load,
/// in words (ids and automerge's rule, never content). One document in memory at a time, and
/// the set of ids; `progress(done, total)` every [`LOADS_PROGRESS_EVERY`] documents.
pub fn every_document_loads(
    store: &dyn Store,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Result<usize, String>, StoreError> {
    let mut docs = std::collections::BTreeSet::new();
    store.scan_log(Seq(0), store.last_seq()?, &mut |e| {
        docs.insert(e.doc_id);
        true
    })?;
    let total = docs.len();
    for (i, doc) in docs.into_iter().enumerate() {
        match materialise(store, doc) {
            Ok(_) => {}
            Err(StoreError::Corrupt(why)) => return Ok(Err(why)),
            Err(e) => return Err(e),
        }
        if (i + 1) % LOADS_PROGRESS_EVERY == 0 {
            progress(i + 1, total);
        }
    }
    Ok(Ok(total))
}

/// Document `doc` from the changes at `seqs` (an erased one, `None`, left out), in one batch.
fn from_log(
    doc: DocId,
    seqs: Vec<Seq>,
    mut change_at: impl FnMut(Seq) -> Result<Option<Vec<u8>>, StoreError>,
) -> Result<AutoCommit, StoreError> {
    let mut changes = Vec::with_capacity(seqs.len());
    for seq in seqs {
        if let Some(bytes) = change_at(seq)? {
            changes.push(Change::from_bytes(bytes).map_err(|e| corrupt(doc, e))?);
        }
    }
    let mut out = AutoCommit::new();
    if !changes.is_empty() {
        apply(&mut out, changes).map_err(|e| corrupt(doc, e))?;
    }
    Ok(out)
}

fn sorted(mut heads: Vec<automerge::ChangeHash>) -> Vec<automerge::ChangeHash> {
    heads.sort();
    heads
}

/// Whether `doc` has exactly the heads `heads`.
pub fn has_heads(doc: &mut AutoCommit, heads: &[Hash]) -> bool {
    sorted(doc.get_heads()) == sorted(from_wire_heads(heads))
}

/// Document `doc` as stored with `heads`: taken out of the cache when it holds that state, else
/// [`materialise`]d.
pub fn load(store: &dyn Store, doc: DocId, heads: &[Hash]) -> Result<AutoCommit, StoreError> {
    load_with(doc, heads, || materialise(store, doc))
}

/// [`load`], with `materialise` for a state the cache does not hold.
pub fn load_with(
    doc: DocId,
    heads: &[Hash],
    materialise: impl FnOnce() -> Result<AutoCommit, StoreError>,
) -> Result<AutoCommit, StoreError> {
    let cached = {
        let mut st = lock();
        let taken = st.cache.remove(&doc);
        if let Some((_, ops, _)) = &taken {
            st.cached_ops -= ops;
        }
        taken
    };
    resident().freed.notify_all();
    if let Some((_, _, mut state)) = cached {
        if has_heads(&mut state, heads) {
            return Ok(state);
        }
    }
    materialise()
}

/// Applies `changes` in one batch; a panic inside Automerge becomes an error.
pub fn apply(doc: &mut AutoCommit, changes: Vec<Change>) -> Result<(), String> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| doc.apply_changes(changes))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("applying the changes failed".into()),
    }
}
