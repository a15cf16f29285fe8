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
//! A state the cache evicts is not thrown away: it is saved (automerge's save, compressed: 6.7 KB
//! for a plan of 23,000 operations, where a materialised document takes hundreds of bytes an
//! operation) within `limits::SERVER_SAVED_STATES_BYTES_MAX` bytes, and the next validation of
//! its document loads it from there, in about a quarter of the time automerge takes to apply
//! the document's history again, and without reading its log. Before this, a
//! team whose plans outgrew the budget (W5L's ten plans, 20,000 operations each after 20 s at
//! 1,500 edits a second) had a push now and then rebuild a plan from its log, 100-200 ms with
//! the pushes of that plan waiting behind it: the relay's p99 went from 35 to 90 ms.
//!
//! A loaded state is far smaller than one built by applying changes: automerge 0.12 loads a
//! text in a byte or two an operation, and builds one in hundreds (a W5L plan of 34,000
//! operations: 15.6 against 324 bytes an operation; maps of many keys hold about as much
//! either way). Counted by its operations, a loaded state took the room of a built one, so ten
//! plans taken in turn that outgrew the budget thrashed: each push evicted the plan the next
//! push needed and loaded its own (in W5L after 15 s, 53 % of the server's samples). So a
//! loaded state is weighed by what its load left allocated (`crate::heap`), in operations of
//! `limits::RESIDENT_BYTES_PER_OP` bytes, and each operation added to it since counts whole
//! ([`Weighed`]); a validation of a cached state that has the stored heads reserves its weight
//! and the push's new operations. What reads the document again from its log (a stale state,
//! a refusal's second reading) reserves for the whole of it first.
//!
//! A cached or saved state is used only when its heads equal the heads the store holds for the
//! document: the same heads mean the same changes, so the same state, whichever store it came
//! from.

use crate::heap;
use crate::store::{Store, StoreError, Txn};
use automerge::{AutoCommit, Change, ReadDoc};
use casenote_protocol::limits::{
    RESIDENT_BYTES_PER_OP, SERVER_RESIDENT_OPS_MAX, SERVER_SAVED_STATES_BYTES_MAX,
};
use casenote_protocol::wire::{from_wire_heads, Hash};
use casenote_protocol::{DocId, Seq};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

#[derive(Default)]
struct State {
    /// doc → (last kept tick, weight, state)
    cache: HashMap<DocId, (u64, u64, Materialised)>,
    cached_weight: u64,
    reserved_weight: u64,
    tick: u64,
    /// States evicted from the cache, to be saved (outside the lock) into `saved`.
    evicted: Vec<(DocId, Materialised)>,
    /// doc → (tick, the state as automerge saves it, how far into the log it reaches).
    saved: HashMap<DocId, (u64, Vec<u8>, Seq)>,
    saved_bytes: u64,
    /// Documents forgotten so far (a count): a state taken out to be saved, or read for a
    /// reservation, before one was forgotten is not kept ([`Resident::keep_saved`],
    /// [`Reserved::keep`]).
    forgotten: u64,
}

impl State {
    fn used(&self) -> u64 {
        self.cached_weight + self.reserved_weight
    }

    fn evict_oldest(&mut self) -> bool {
        match oldest(&self.cache).and_then(|d| self.uncache(d).map(|(_, state)| (d, state))) {
            Some((doc, state)) => {
                self.evicted.push((doc, state));
                true
            }
            None => false,
        }
    }

    /// `doc`'s cached state and its weight, out of the cache.
    fn uncache(&mut self, doc: DocId) -> Option<(u64, Materialised)> {
        let (_, weight, state) = self.cache.remove(&doc)?;
        self.cached_weight -= weight;
        Some((weight, state))
    }

    /// `doc`'s saved state, out of the saved ones.
    fn unsave(&mut self, doc: DocId) -> Option<(Vec<u8>, Seq)> {
        let (_, bytes, through) = self.saved.remove(&doc)?;
        self.saved_bytes -= bytes.len() as u64;
        Some((bytes, through))
    }
}

/// The document whose entry was used longest ago (the first field of each is its tick).
fn oldest<A, B>(m: &HashMap<DocId, (u64, A, B)>) -> Option<DocId> {
    m.iter().min_by_key(|(_, (t, _, _))| *t).map(|(d, _)| *d)
}

/// A budget of operations and the cache inside it, and the saved states of what the cache
/// evicted within a budget of bytes: the server has one ([`resident`]).
struct Resident {
    budget: u64,
    saved_max: u64,
    state: Mutex<State>,
    freed: Condvar,
}

fn resident() -> &'static Resident {
    static RESIDENT: OnceLock<Resident> = OnceLock::new();
    RESIDENT.get_or_init(|| Resident::new(SERVER_RESIDENT_OPS_MAX, SERVER_SAVED_STATES_BYTES_MAX))
}

impl Resident {
    fn new(budget: u64, saved_max: u64) -> Resident {
        Resident {
            budget,
            saved_max,
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
        }
    }

    /// Saves the states the cache evicted (outside the lock: a save takes a millisecond or so
    /// for a large plan), keeping the newest within `saved_max` bytes.
    fn settle(&self) {
        loop {
            let (evicted, forgotten) = self.take_evicted();
            if evicted.is_empty() {
                return;
            }
            for (doc, mut state) in evicted {
                let bytes = state.doc.save();
                let through = state.through;
                drop(state);
                self.keep_saved(doc, (bytes, through), forgotten);
            }
        }
    }

    /// The states evicted so far, to save, and the count of documents forgotten when they were
    /// taken.
    fn take_evicted(&self) -> (Vec<(DocId, Materialised)>, u64) {
        let mut st = self.lock();
        (std::mem::take(&mut st.evicted), st.forgotten)
    }

    /// Keeps `doc`'s saved state, taken out to be saved when `forgotten` documents had been
    /// forgotten.
    fn keep_saved(&self, doc: DocId, (bytes, through): (Vec<u8>, Seq), forgotten: u64) {
        let size = bytes.len() as u64;
        if size > self.saved_max {
            return;
        }
        let mut st = self.lock();
        if st.cache.contains_key(&doc) || st.forgotten != forgotten {
            // A newer state was kept meanwhile, or a document was forgotten (erased) since this
            // one was taken out: perhaps this one, whose state must not come back. Dropping
            // another's costs only a rebuild from its log.
            return;
        }
        st.unsave(doc);
        while st.saved_bytes + size > self.saved_max {
            let Some(oldest) = oldest(&st.saved) else {
                break;
            };
            st.unsave(oldest);
        }
        st.tick += 1;
        let tick = st.tick;
        st.saved.insert(doc, (tick, bytes, through));
        st.saved_bytes += size;
    }

    /// `doc`'s saved state, loaded and weighed by what the load left allocated (a state that
    /// does not load is dropped: the document is then read from its log, as if there were none).
    fn take_saved(&self, doc: DocId) -> Option<Materialised> {
        let (bytes, through) = self.lock().unsave(doc)?;
        let (loaded, held) =
            heap::held_by(|| std::panic::catch_unwind(|| AutoCommit::load(&bytes)));
        let doc = loaded.ok()?.ok()?;
        let weighed = Weighed::of(&doc, held);
        Some(Materialised {
            doc,
            through,
            weighed,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `ops` to what `st` holds reserved, evicting cached states and then waiting for
    /// other validations as needed.
    fn grow<'s>(&'s self, mut st: MutexGuard<'s, State>, ops: u64) -> MutexGuard<'s, State> {
        while st.used() + ops > self.budget {
            if !st.evict_oldest() {
                st = self.freed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        }
        st.reserved_weight += ops;
        st
    }

    fn reserve(&'static self, ops: u64) -> Reserved {
        let ops = ops.min(self.budget);
        let st = self.grow(self.lock(), ops);
        let forgotten_at = st.forgotten;
        drop(st);
        self.settle();
        Reserved {
            resident: self,
            ops,
            forgotten_at,
        }
    }

    /// [`Self::reserve`] for stored document `doc`, whose cached state (if any) leaves the cache
    /// in the same step: its weight becomes part of the reservation, which grows by the rest.
    /// (Reserving first and then taking the state counted it twice meanwhile, and the room made
    /// for that evicted other documents' states, or its own.) The rest is the operations the
    /// state lacks of `ops` when it has `heads` (the push's new ones, applied to it), else all
    /// of `ops`: a stale state may be read again from the log.
    fn reserve_for(
        &'static self,
        doc: DocId,
        ops: u64,
        heads: &[Hash],
    ) -> (Reserved, Option<Materialised>) {
        let mut st = self.lock();
        let mut taken = st.uncache(doc);
        let held = taken.as_ref().map_or(0, |(held, _)| *held);
        st.reserved_weight += held;
        let current = taken.as_mut().and_then(|(_, state)| {
            has_heads(&mut state.doc, heads).then(|| state.doc.stats().num_ops)
        });
        let needs = current.map_or(ops, |has| held + ops.saturating_sub(has));
        let weight = needs.min(self.budget).max(held);
        while st.used() + (weight - held) > self.budget && st.evict_oldest() {}
        if st.used() + (weight - held) > self.budget {
            // The room is held by other validations. Waiting for it while holding this state
            // could wait forever on another doing the same: the state goes (the document is
            // read from its log instead, so the reservation is for all of it), and this waits
            // holding nothing, as any reservation.
            st.reserved_weight -= held;
            drop(st);
            drop(taken);
            self.freed.notify_all();
            return (self.reserve(ops), None);
        }
        st.reserved_weight += weight - held;
        let forgotten_at = st.forgotten;
        drop(st);
        self.settle();
        let reserved = Reserved {
            resident: self,
            ops: weight,
            forgotten_at,
        };
        let taken = taken.map(|(_, state)| state);
        (reserved, taken.or_else(|| self.take_saved(doc)))
    }

    fn forget(&self, doc: DocId) {
        let mut st = self.lock();
        st.forgotten += 1;
        st.uncache(doc);
        st.unsave(doc);
        st.evicted.retain(|(d, _)| *d != doc);
        drop(st);
        self.freed.notify_all();
    }

    /// `doc`'s cached state, out of the cache (and out of the budget), or its saved state.
    fn take(&self, doc: DocId) -> Option<Materialised> {
        let mut st = self.lock();
        let Some((_, state)) = st.uncache(doc) else {
            drop(st);
            return self.take_saved(doc);
        };
        drop(st);
        self.freed.notify_all();
        Some(state)
    }
}

/// A materialised document and how far into its log it is known to reach: it holds every
/// stored change of the document with a sequence up to `through` (and perhaps later ones). A
/// state found stale (the document's heads moved: another node wrote it, on PostgreSQL) is
/// brought up to date from there ([`materialise_after`]) rather than from the whole log.
pub struct Materialised {
    pub doc: AutoCommit,
    pub through: Seq,
    /// What the state weighed when it was last measured (nothing for a state built by applying
    /// changes: it weighs its operations).
    pub weighed: Weighed,
}

/// A state's weight against the resident budget when it was measured (at its load from a
/// saved state): `weight` operations' worth of memory (`limits::RESIDENT_BYTES_PER_OP` bytes
/// each) when it held `ops` operations. Each operation added since counts whole.
#[derive(Clone, Copy, Debug, Default)]
pub struct Weighed {
    ops: u64,
    weight: u64,
}

impl Weighed {
    /// `doc`, which holds `held` bytes (unweighed when that is not known).
    fn of(doc: &AutoCommit, held: Option<u64>) -> Weighed {
        held.map_or_else(Weighed::default, |bytes| Weighed {
            ops: doc.stats().num_ops,
            weight: bytes.div_ceil(RESIDENT_BYTES_PER_OP),
        })
    }
}

impl Materialised {
    /// A state built by applying changes, weighed by its operations.
    pub fn new(doc: AutoCommit, through: Seq) -> Materialised {
        Materialised {
            doc,
            through,
            weighed: Weighed::default(),
        }
    }

    /// What the state weighs against the resident budget: its measured weight and the
    /// operations added since, or, never measured, its operations.
    pub fn weight(&self) -> u64 {
        let ops = self.doc.stats().num_ops;
        self.weighed.weight + ops.saturating_sub(self.weighed.ops)
    }
}

/// Operations reserved for one document being validated; given back when dropped, or moved into
/// the cache with the state they pay for ([`Reserved::keep`]).
#[must_use]
pub struct Reserved {
    resident: &'static Resident,
    ops: u64,
    /// Documents forgotten when it was made: a state read under it is kept only if none was
    /// forgotten since (it may have been read before an erasure committed).
    forgotten_at: u64,
}

/// Reserves `ops` operations of the budget (at most the whole budget), evicting cached states
/// and then waiting for other validations as needed.
pub fn reserve(ops: u64) -> Reserved {
    resident().reserve(ops)
}

/// Drops every state of `doc` the server holds in memory, cached or saved: an erased
/// document's content must not stay behind in the server's memory either. Called in the erasing
/// transaction and again once it committed ([`crate::erase::finish`]): a state read before the
/// commit under a reservation made before the first call is not kept ([`Reserved::keep`]), and
/// one kept under a later reservation is dropped by the second.
pub fn forget(doc: DocId) {
    resident().forget(doc)
}

/// Reserves what validating stored document `doc` needs, which will hold `ops` operations and
/// is stored with `heads`, and takes its cached state, if any, out of the cache ([`load_from`]
/// then uses it).
pub fn reserve_for(doc: DocId, ops: u64, heads: &[Hash]) -> (Reserved, Option<Materialised>) {
    resident().reserve_for(doc, ops, heads)
}

impl Reserved {
    /// Keeps `state` as document `doc`'s latest validated state, paid for by this reservation
    /// (grown or shrunk to what the state holds; when it has grown past what the budget has free,
    /// older entries give way, and a state too large to fit is simply not kept). Not kept either
    /// when a document was forgotten since the reservation: the state may have been read before
    /// an erasure committed (dropping another document's costs only a rebuild from its log).
    pub fn keep(self, doc: DocId, state: Materialised) {
        let weight = state.weight();
        let resident = self.resident;
        let budget = resident.budget;
        let mut st = resident.lock();
        st.reserved_weight -= self.ops;
        let stale = st.forgotten != self.forgotten_at;
        std::mem::forget(self);
        st.uncache(doc);
        st.unsave(doc);
        while !stale && st.used() + weight > budget && st.evict_oldest() {}
        if !stale && st.used() + weight <= budget {
            st.tick += 1;
            let tick = st.tick;
            st.cache.insert(doc, (tick, weight, state));
            st.cached_weight += weight;
        }
        drop(st);
        resident.freed.notify_all();
        resident.settle();
    }

    /// Grows the reservation to `ops` operations (at most the whole budget) when it holds
    /// less: for a copy of the document read again from its log once the state it reserved for
    /// was dropped. It gives back what it holds and waits for the room holding nothing, as any
    /// reservation.
    pub fn regrow(&mut self, ops: u64) {
        let resident = self.resident;
        let ops = ops.min(resident.budget);
        if self.ops >= ops {
            return;
        }
        let mut st = resident.lock();
        st.reserved_weight -= std::mem::take(&mut self.ops);
        resident.freed.notify_all();
        let st = resident.grow(st, ops);
        self.ops = ops;
        drop(st);
        resident.settle();
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.resident.lock().reserved_weight -= self.ops;
        self.resident.freed.notify_all();
    }
}

/// Whether `doc`'s state is in the cache (for tests).
#[cfg(test)]
pub fn is_cached(doc: DocId) -> bool {
    resident().lock().cache.contains_key(&doc)
}

/// Operations held by cached states and by validations now (for tests and metrics).
pub fn used_ops() -> u64 {
    resident().lock().used()
}

/// Why the stored document could not be materialised (a server-side problem, not the device's).
fn corrupt(doc: DocId, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("document {doc} does not load from its log: {e}"))
}

/// Loads document `doc` as stored: every stored change, applied in one batch (docs/design.md, "Facts
/// measured": one `apply_changes` per change gets slower as the history grows). The caller holds
/// a [`Reserved`] for it.
pub fn materialise(store: &dyn Store, doc: DocId) -> Result<AutoCommit, StoreError> {
    Ok(materialise_after(store, doc, None, &[])?.doc)
}

/// Document `doc` as stored with heads `heads`: `stale`, a state of it from before, brought up
/// to date with the changes stored after its `through`, when that gives `heads`; else (no such
/// state, or it does not give `heads`: the document moved on again, or the state held a change
/// that was never stored) every stored change. The caller holds a [`Reserved`] for it.
pub fn materialise_after(
    store: &dyn Store,
    doc: DocId,
    stale: Option<Materialised>,
    heads: &[Hash],
) -> Result<Materialised, StoreError> {
    bring_up(doc, stale, heads, |after| {
        store.doc_changes_after(doc, after)
    })
}

/// [`materialise_after`], reading the log in `txn`: a judgement made inside a write transaction
/// reads there, since through the store each read would take a second pooled connection while
/// the transaction holds one (on PostgreSQL, enough such pushes at once would wait on each other).
pub fn materialise_in(
    txn: &mut dyn Txn,
    doc: DocId,
    stale: Option<Materialised>,
    heads: &[Hash],
) -> Result<Materialised, StoreError> {
    bring_up(doc, stale, heads, |after| txn.changes_of_after(doc, after))
}

/// The changes after a sequence, ascending, with their sequences.
type Logged = Vec<(Seq, Vec<u8>)>;

fn bring_up(
    doc: DocId,
    stale: Option<Materialised>,
    heads: &[Hash],
    mut after: impl FnMut(Seq) -> Result<Logged, StoreError>,
) -> Result<Materialised, StoreError> {
    if let Some(mut held) = stale {
        let newer = after(held.through)?;
        let through = newer.last().map_or(held.through, |(seq, _)| *seq);
        if add(doc, &mut held.doc, newer).is_ok() && has_heads(&mut held.doc, heads) {
            return Ok(Materialised { through, ..held });
        }
    }
    let all = after(Seq(0))?;
    let through = all.last().map_or(Seq(0), |(seq, _)| *seq);
    let mut out = AutoCommit::new();
    add(doc, &mut out, all)?;
    Ok(Materialised::new(out, through))
}

/// Applies the logged changes `logged` to `to`, in one batch (a change `to` holds already is
/// skipped by automerge).
fn add(doc: DocId, to: &mut AutoCommit, logged: Logged) -> Result<(), StoreError> {
    let changes = logged
        .into_iter()
        .map(|(_, bytes)| Change::from_bytes(bytes).map_err(|e| corrupt(doc, e)))
        .collect::<Result<Vec<_>, _>>()?;
    if !changes.is_empty() {
        apply(to, changes).map_err(|e| corrupt(doc, e))?;
    }
    Ok(())
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

fn sorted(mut heads: Vec<automerge::ChangeHash>) -> Vec<automerge::ChangeHash> {
    heads.sort();
    heads
}

/// Whether `doc` has exactly the heads `heads`.
pub fn has_heads(doc: &mut AutoCommit, heads: &[Hash]) -> bool {
    sorted(doc.get_heads()) == sorted(from_wire_heads(heads))
}

/// Document `doc` as stored with `heads`: taken out of the cache when it holds that state, else
/// [`materialise_after`] (from the cached state, if any).
pub fn load(store: &dyn Store, doc: DocId, heads: &[Hash]) -> Result<Materialised, StoreError> {
    load_with(doc, heads, |stale| {
        materialise_after(store, doc, stale, heads)
    })
}

/// [`load`], with `materialise` for a state the cache does not hold: handed the cached state of
/// `doc` when it has other heads, to bring up to date.
pub fn load_with(
    doc: DocId,
    heads: &[Hash],
    materialise: impl FnOnce(Option<Materialised>) -> Result<Materialised, StoreError>,
) -> Result<Materialised, StoreError> {
    load_from(resident().take(doc), heads, materialise)
}

/// The document with `heads`: `cached` when it has them, else `materialise`d (from `cached`, if
/// any, handed over to bring up to date).
pub fn load_from(
    cached: Option<Materialised>,
    heads: &[Hash],
    materialise: impl FnOnce(Option<Materialised>) -> Result<Materialised, StoreError>,
) -> Result<Materialised, StoreError> {
    let Some(mut state) = cached else {
        return materialise(None);
    };
    if has_heads(&mut state.doc, heads) {
        return Ok(state);
    }
    materialise(Some(state))
}

/// Applies `changes` in one batch; a panic inside Automerge becomes an error.
pub fn apply(doc: &mut AutoCommit, changes: Vec<Change>) -> Result<(), String> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| doc.apply_changes(changes))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("applying the changes failed".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NewChange;
    use crate::store::sled::SledStore;
    use crate::store::write;
    use automerge::transaction::Transactable;
    use automerge::{ActorId, ROOT};

    /// A store whose log holds `n` changes of one document (each sets a key), and the changes.
    fn logged(n: i64) -> (tempfile::TempDir, SledStore, DocId, Vec<Change>) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let doc = DocId::new_random();
        let mut am = AutoCommit::new();
        for i in 0..n {
            am.put(ROOT, "k", i).unwrap();
            am.commit();
        }
        let changes = am.get_changes(&[]);
        for c in &changes {
            let change = NewChange {
                doc_id: doc,
                hash: Hash(c.hash().0),
                bytes: c.raw_bytes().to_vec(),
                received_at_ms: 0,
            };
            write(&store, |t| t.append_change(&change)).unwrap();
        }
        (dir, store, doc, changes)
    }

    /// automerge 0.12's load opened a span at the server's log level whose fields formatted
    /// the document's whole change graph, every hash of its history, at each load of a saved
    /// state: 7 % of the server's samples in a 20 s W5L once the plans outgrew the cache, and
    /// growing with their histories (the vendored automerge's `load_changes`).
    #[test]
    fn loading_a_saved_state_at_the_servers_log_level_opens_no_span() {
        use tracing_subscriber::layer::{Context, SubscriberExt};
        struct Spans(std::sync::Arc<std::sync::atomic::AtomicUsize>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Spans {
            fn on_new_span(
                &self,
                _: &tracing::span::Attributes<'_>,
                _: &tracing::span::Id,
                _: Context<'_, S>,
            ) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let (_dir, _store, _doc, changes) = logged(50);
        let mut am = AutoCommit::new();
        am.apply_changes(changes).unwrap();
        let mut saved = am.save();
        // A saved document and then changes after it, as automerge's incremental saves make.
        am.put(ROOT, "k", -1).unwrap();
        saved.extend(am.save_incremental());
        let opened = std::sync::Arc::default();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("info"))
            .with(Spans(std::sync::Arc::clone(&opened)));
        let loaded = tracing::subscriber::with_default(subscriber, || AutoCommit::load(&saved));
        assert_eq!(loaded.unwrap().get_heads(), am.get_heads());
        assert_eq!(opened.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    fn heads_of(changes: &[Change]) -> Vec<Hash> {
        vec![Hash(changes.last().unwrap().hash().0)]
    }

    /// A state holding `changes`, under an actor of its own (a state loaded from the start has
    /// another), that claims to reach `through`.
    fn state(changes: &[Change], through: u64) -> (Materialised, ActorId) {
        let mut doc = AutoCommit::new();
        let actor = ActorId::random();
        doc.set_actor(actor.clone());
        doc.apply_changes(changes.to_vec()).unwrap();
        (Materialised::new(doc, Seq(through)), actor)
    }

    #[test]
    fn a_stale_state_is_brought_up_to_date_with_the_changes_after_it() {
        let (_dir, store, doc, changes) = logged(5);
        let heads = heads_of(&changes);
        let (stale, actor) = state(&changes[..2], 2);
        let mut now = materialise_after(&store, doc, Some(stale), &heads).unwrap();
        assert!(has_heads(&mut now.doc, &heads));
        assert_eq!(now.through, Seq(5));
        assert_eq!(
            now.doc.get_actor(),
            &actor,
            "loaded from the start, not brought up"
        );
    }

    #[test]
    fn a_stale_state_that_does_not_give_the_stored_heads_is_loaded_from_the_start() {
        let (_dir, store, doc, changes) = logged(5);
        let heads = heads_of(&changes);
        // It claims to reach further than it does: bringing it up misses change 3.
        let (overclaiming, actor) = state(&changes[..2], 3);
        let mut now = materialise_after(&store, doc, Some(overclaiming), &heads).unwrap();
        assert!(has_heads(&mut now.doc, &heads));
        assert_eq!(now.through, Seq(5));
        assert_ne!(now.doc.get_actor(), &actor);
        // It holds a change that was never stored.
        let (mut unstored, actor) = state(&changes[..2], 2);
        unstored.doc.put(ROOT, "never", "stored").unwrap();
        unstored.doc.commit();
        let mut now = materialise_after(&store, doc, Some(unstored), &heads).unwrap();
        assert!(has_heads(&mut now.doc, &heads));
        assert_ne!(now.doc.get_actor(), &actor);
        assert!(now.doc.get(ROOT, "never").unwrap().is_none());
    }

    /// A cached state of `ops` operations (each a put of one key).
    fn sized(ops: u64) -> Materialised {
        let mut doc = AutoCommit::new();
        for i in 0..ops {
            doc.put(ROOT, format!("k{i}"), 1).unwrap();
        }
        doc.commit();
        Materialised::new(doc, Seq(1))
    }

    /// A budget of 100 operations of its own, with room for saved states.
    fn small() -> &'static Resident {
        Box::leak(Box::new(Resident::new(100, 1 << 20)))
    }

    /// Two documents whose states of `ops` operations each were kept, in that order.
    fn kept_two(resident: &'static Resident, ops: u64) -> (DocId, DocId) {
        let (a, b) = (DocId::new_random(), DocId::new_random());
        resident.reserve(ops).keep(a, sized(ops));
        resident.reserve(ops).keep(b, sized(ops));
        (a, b)
    }

    /// The heads of `doc`'s cached state.
    fn cached_heads(resident: &Resident, doc: DocId) -> Vec<Hash> {
        let mut st = resident.lock();
        let (_, _, state) = st.cache.get_mut(&doc).expect("a cached state");
        casenote_protocol::wire::to_wire_heads(&state.doc.get_heads())
    }

    /// Waits (up to 10 s, else fails with `never`) until `resident` holds `used` in all: another
    /// thread's validation has let go of what it held and waits.
    fn wait_for_used(resident: &Resident, used: u64, never: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while resident.lock().used() != used {
            assert!(std::time::Instant::now() < deadline, "{never}");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Whether `resident`'s cache holds `doc`.
    fn cached(resident: &Resident, doc: DocId) -> bool {
        resident.lock().cache.contains_key(&doc)
    }

    /// A document whose state is cached, validated again (its next push): its state moves from
    /// the cache into the reservation instead of being counted twice, which under load evicted
    /// other documents' states and made their next pushes rebuild them from the whole log (in
    /// W5L, 100-200 ms each with the pushes to that document waiting behind it).
    #[test]
    fn validating_a_cached_document_counts_its_state_once_and_evicts_no_other() {
        let resident = small();
        let (a, b) = kept_two(resident, 40);
        assert_eq!(resident.lock().used(), 80);
        // A push of five more operations to `a`.
        let heads = cached_heads(resident, a);
        let (reserved, taken) = resident.reserve_for(a, 45, &heads);
        assert!(taken.is_some(), "a's state comes out of the cache");
        assert!(
            cached(resident, b),
            "b's state was not evicted to make room"
        );
        assert_eq!(
            resident.lock().used(),
            85,
            "a counted once, plus its new operations"
        );
        reserved.keep(a, sized(45));
        assert!(cached(resident, a) && cached(resident, b));
        assert_eq!(resident.lock().used(), 85);
    }

    /// The budget still bounds everything: a reservation larger than what is free evicts the
    /// oldest states, and one that gives its state back unkept frees what it held.
    #[test]
    fn a_reservation_past_the_budget_evicts_the_oldest_states() {
        let resident = small();
        let (a, b, c) = (
            DocId::new_random(),
            DocId::new_random(),
            DocId::new_random(),
        );
        resident.reserve(30).keep(a, sized(30));
        resident.reserve(30).keep(b, sized(30));
        let (reserved, taken) = resident.reserve_for(c, 60, &[]);
        assert!(taken.is_none(), "c was never cached");
        assert!(!cached(resident, a), "the oldest state gave way");
        assert!(cached(resident, b));
        assert_eq!(resident.lock().used(), 90);
        drop(reserved);
        assert_eq!(resident.lock().used(), 30);
    }

    /// When the room a validation needs is held by other validations, it lets its cached state
    /// go and waits holding nothing: two validations each holding a state and waiting for the
    /// other's room would wait forever.
    #[test]
    fn a_validation_that_must_wait_for_room_holds_no_state_meanwhile() {
        let resident = small();
        let a = DocId::new_random();
        resident.reserve(60).keep(a, sized(60));
        let other = resident.reserve(40);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting = std::thread::spawn(move || {
            let (reserved, taken) = resident.reserve_for(a, 70, &[]);
            tx.send(taken.is_some()).unwrap();
            drop(reserved);
        });
        wait_for_used(resident, 40, "a's state was never let go");
        drop(other);
        let had_state = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the validation gets its room once the other ends");
        assert!(!had_state, "it reads the document from its log");
        waiting.join().unwrap();
        assert_eq!(resident.lock().used(), 0);
    }

    /// A state the cache evicted is saved, and the next validation of its document loads it
    /// from there instead of applying the document's whole history again.
    #[test]
    fn an_evicted_state_is_saved_and_loaded_back() {
        let resident = small();
        let (a, b) = (DocId::new_random(), DocId::new_random());
        let mut first = sized(60);
        let heads = first.doc.get_heads();
        resident.reserve(60).keep(a, first);
        resident.reserve(60).keep(b, sized(60));
        assert!(!cached(resident, a), "a gave way to b");
        assert!(resident.lock().saved.contains_key(&a), "a was saved");
        let (reserved, taken) = resident.reserve_for(a, 60, &[]);
        let mut back = taken.expect("a's saved state");
        assert_eq!(back.doc.get_heads(), heads);
        assert_eq!(back.through, Seq(1));
        assert!(!resident.lock().saved.contains_key(&a), "taken out");
        drop(reserved);
        drop(back);
        // A state kept afresh replaces the saved one.
        resident.reserve(60).keep(b, sized(60));
        assert!(!resident.lock().saved.contains_key(&b));
    }

    /// The saved states are bounded by bytes: past the bound the oldest go.
    #[test]
    fn the_saved_states_are_bounded_by_their_bytes() {
        let one = sized(60).doc.save().len() as u64;
        let resident: &'static Resident = Box::leak(Box::new(Resident::new(60, one * 2)));
        let docs: Vec<DocId> = (0..4).map(|_| DocId::new_random()).collect();
        for d in &docs {
            resident.reserve(60).keep(*d, sized(60));
        }
        let st = resident.lock();
        assert!(st.saved_bytes <= one * 2);
        assert!(!st.saved.contains_key(&docs[0]), "the oldest went");
        assert!(st.saved.contains_key(&docs[1]) && st.saved.contains_key(&docs[2]));
        assert!(st.cache.contains_key(&docs[3]));
    }

    /// A state the cache evicted is saved outside the cache's lock; a document forgotten
    /// meanwhile (erased) does not get it back.
    #[test]
    fn a_state_being_saved_when_its_document_is_forgotten_is_not_kept() {
        let resident = small();
        let a = DocId::new_random();
        resident.lock().evicted.push((a, sized(60)));
        let (mut evicted, forgotten) = resident.take_evicted();
        let (doc, mut state) = evicted.pop().expect("a's state");
        let bytes = state.doc.save();
        resident.forget(a);
        resident.keep_saved(doc, (bytes, state.through), forgotten);
        let st = resident.lock();
        assert!(
            !st.saved.contains_key(&a),
            "an erased document's state came back"
        );
        assert_eq!(st.saved_bytes, 0);
    }

    /// A validation reserved before an erasure forgot its document may have read the document
    /// as stored before the erasure committed: its state is not kept.
    #[test]
    fn a_state_read_under_a_reservation_made_before_a_forget_is_not_kept() {
        let resident = small();
        let a = DocId::new_random();
        let reserved = resident.reserve(60);
        resident.forget(a);
        reserved.keep(a, sized(60));
        assert!(!cached(resident, a), "an erased document's state came back");
        assert_eq!(resident.lock().used(), 0, "its reservation was given back");
        // A reservation made after the forget keeps its state as before.
        let reserved = resident.reserve(60);
        reserved.keep(a, sized(60));
        assert!(cached(resident, a));
    }

    /// A state of a narrative of `chars` characters (an operation each), typed in one change.
    fn narrative(chars: usize) -> Materialised {
        let mut doc = AutoCommit::new();
        let text = doc
            .put_object(ROOT, "narrative", automerge::ObjType::Text)
            .unwrap();
        doc.splice_text(&text, 0, 0, &"a visit, ".repeat(chars / 9))
            .unwrap();
        doc.commit();
        Materialised::new(doc, Seq(1))
    }

    /// A state loaded from its save weighs what the load left allocated, not its operations:
    /// automerge holds a text it loaded in a byte or two an operation, and one it built by
    /// applying changes in hundreds. Weighed by their operations, ten plans taken in turn
    /// outgrew the budget, and each push evicted the plan the next push needed and loaded its
    /// own (in W5L after 15 s, 53 % of the server's samples were such loads).
    #[test]
    fn a_state_loaded_from_its_save_weighs_what_its_load_left_allocated() {
        let resident: &'static Resident = Box::leak(Box::new(Resident::new(30_000, 1 << 20)));
        let (a, b, c) = (
            DocId::new_random(),
            DocId::new_random(),
            DocId::new_random(),
        );
        for d in [a, b, c] {
            resident.reserve(12_007).keep(d, narrative(12_006));
        }
        assert!(!cached(resident, a), "a gave way to c");
        // a's next push: its saved state is loaded (the room reserved for it, not knowing
        // what it will weigh, evicts b), and then kept; then b's next push, the same.
        for d in [a, b] {
            let (reserved, taken) = resident.reserve_for(d, 12_007, &[]);
            let loaded = taken.expect("a saved state");
            assert!(
                loaded.weight() < 1_000,
                "a loaded text of 12,007 operations weighs {}",
                loaded.weight()
            );
            reserved.keep(d, loaded);
        }
        assert!(
            cached(resident, a) && cached(resident, b) && cached(resident, c),
            "a's and b's loaded states fit beside c's"
        );
        assert!(resident.lock().used() < 14_000);
        // Its next push of 20 operations reserves its weight and those 20, not the whole plan.
        let heads = cached_heads(resident, a);
        let weight = resident.lock().cache[&a].1;
        let (reserved, taken) = resident.reserve_for(a, 12_027, &heads);
        assert!(taken.is_some());
        assert_eq!(reserved.ops, weight + 20);
    }

    /// A budget of 30,000 operations whose cache holds document `a`'s state as loaded from its
    /// save (a text of 12,007 operations), and that state's weight.
    fn with_a_light_state() -> (&'static Resident, DocId, u64) {
        let resident: &'static Resident = Box::leak(Box::new(Resident::new(30_000, 1 << 20)));
        let (a, b) = (DocId::new_random(), DocId::new_random());
        resident.reserve(12_007).keep(a, narrative(12_006));
        resident.reserve(20_000).keep(b, narrative(19_998));
        let (reserved, loaded) = resident.reserve_for(a, 12_007, &[]);
        reserved.keep(a, loaded.expect("a's saved state"));
        let weight = resident.lock().cache[&a].1;
        assert!(weight < 1_000, "a loaded text weighs {weight}");
        (resident, a, weight)
    }

    /// A cached state whose heads are not the stored ones may be read again from the log: its
    /// validation reserves for the whole document.
    #[test]
    fn a_stale_cached_state_reserves_for_the_whole_document() {
        let (resident, a, _) = with_a_light_state();
        let (reserved, taken) = resident.reserve_for(a, 12_027, &[Hash([7; 32])]);
        assert!(taken.is_some());
        assert_eq!(reserved.ops, 12_027);
    }

    /// A validation of a light cached state that must wait for room lets the state go, as any
    /// does, and then reads the document from its log: it waits for room for all of it, not
    /// for the light state's weight.
    #[test]
    fn a_light_state_let_go_to_wait_for_room_is_replaced_by_room_for_the_whole_document() {
        let (resident, a, weight) = with_a_light_state();
        let heads = cached_heads(resident, a);
        let other = resident.reserve(30_000 - weight - 10);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting = std::thread::spawn(move || {
            let (reserved, taken) = resident.reserve_for(a, 12_027, &heads);
            tx.send((reserved.ops, taken.is_some())).unwrap();
        });
        wait_for_used(resident, 30_000 - weight - 10, "a's state was never let go");
        drop(other);
        let (ops, had_state) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the validation gets its room once the other ends");
        assert!(!had_state, "it reads the document from its log");
        assert_eq!(ops, 12_027, "room for the whole document");
        waiting.join().unwrap();
    }

    /// A reservation grown for a second reading of its document (a refusal reads it again from
    /// the log) gives back what it held while it waits for the room, so that two such waits
    /// cannot hold each other up.
    #[test]
    fn a_reservation_grows_holding_nothing_while_it_waits() {
        let resident = small();
        let other = resident.reserve(50);
        let mut mine = resident.reserve(10);
        mine.regrow(40);
        assert_eq!(resident.lock().used(), 90, "room enough: no wait");
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting = std::thread::spawn(move || {
            mine.regrow(80);
            tx.send(resident.lock().used()).unwrap();
            drop(mine);
        });
        wait_for_used(resident, 50, "the 40 held were never given back");
        assert!(rx.try_recv().is_err(), "it waits for the other's 50");
        drop(other);
        let used = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("it grows once the other ends");
        assert_eq!(used, 80);
        waiting.join().unwrap();
        assert_eq!(resident.lock().used(), 0);
    }

    /// An erased document's states leave the server's memory, cached and saved alike.
    #[test]
    fn forgetting_a_document_drops_its_cached_and_saved_states() {
        let resident = small();
        let (a, b) = kept_two(resident, 60);
        assert!(resident.lock().saved.contains_key(&a) && cached(resident, b));
        resident.forget(a);
        resident.forget(b);
        let st = resident.lock();
        assert!(st.saved.is_empty() && st.cache.is_empty());
        assert_eq!((st.saved_bytes, st.used()), (0, 0));
    }
}
