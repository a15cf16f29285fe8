//! casenote patch: the ops of incoming changes are checked against the document before a batch
//! is applied (vendor/README.md).
//!
//! automerge 0.12 trusts what a change says about where its ops go. A change it never writes,
//! but anyone can build, was applied, and the document then saved to bytes that
//! `Automerge::load` refuses or panics on (or the apply itself panicked): a predecessor on
//! another element, key or object, one that does not exist, does not come before the op or is
//! a deletion; an insert that names predecessors or deletes; a deletion that names nothing; an
//! element key that is not an element; an object that does not exist; an object, element or
//! predecessor the change had not seen; a mark that is not an insert into a sequence, or whose
//! end has no begin before it in its object; and of the change as a whole, an actor the
//! document does not hold, a sequence number that skips, reused op ids, an author after the
//! first change. A document a device keeps as a saved snapshot could then no longer be opened.
//!
//! [`check`] refuses such a batch before anything is changed: it reads the document (a clock
//! of its change graph per change, one op-id lookup per key and predecessor outside the batch)
//! and an index of the batch's own ops. Every
//! change automerge writes passes: an op's predecessors are the ops it overwrites, on its own
//! object and key (a list element's being its insert or the updates of that element), with
//! lower counters; an insert has none.

use std::borrow::Cow;
use std::collections::HashMap;

use smol_str::SmolStr;

use crate::change::Change;
use crate::columnar::Key;
use crate::error::AutomergeError;
use crate::op_set2::op_set::OpSet;
use crate::op_set2::types::{Action, KeyRef};
use crate::storage::change::ChangeOp as StoredOp;
use crate::types::{ElemId, ObjId, ObjType, OpId, SmallHashMap};
use crate::Automerge;

/// Where an op sits: its object, and its map key or the element it belongs to.
#[derive(Clone, Debug, PartialEq)]
enum Place {
    Map(ObjId, SmolStr),
    Seq(ObjId, ElemId),
}

/// What the check needs to know of an op, in the batch or in the document.
#[derive(Clone, Debug)]
struct Placed {
    place: Place,
    insert: bool,
    mark_begin: bool,
}

/// What the check knows of the batch so far: its ops and the objects they make, the actors,
/// and each change's sequence number, last op and causal past.
struct Batch<'a> {
    doc: &'a OpSet,
    ops: SmallHashMap<OpId, Placed>,
    made: SmallHashMap<OpId, ObjType>,
    actors: Actors<'a>,
    first: std::collections::HashSet<&'a crate::ActorId>,
    seqs: HashMap<&'a crate::ActorId, (u64, u64)>,
    /// The causal past of each checked change that a later change of the batch still names as
    /// a dependency; dropped after the last one, so that what is kept is the batch's frontier,
    /// not every change's (a whole history is one batch when the server materialises it).
    pasts: HashMap<crate::ChangeHash, Vec<u64>>,
    /// How many changes of the batch not yet checked name each change as a dependency.
    pending: HashMap<crate::ChangeHash, usize>,
}

/// Refuses `changes` (ready to apply, in causal order) if one of them or one of its ops is
/// something automerge would never write; else each change's ops as read, so that the apply
/// does not decode them a second time.
pub(crate) fn check(
    doc: &Automerge,
    changes: &[Change],
) -> Result<Vec<Vec<StoredOp>>, AutomergeError> {
    let mut batch = Batch::new(doc.ops(), changes);
    let mut decoded = Vec::with_capacity(changes.len());
    for change in changes {
        let map = batch.actors.map_of(change);
        let past = batch
            .header(doc, change, map[0])
            .map_err(|why| invalid(change, 0, why))?;
        decoded.push(batch.ops_of(change, &map, &past)?);
        batch.seen(change, map[0], past);
    }
    Ok(decoded)
}

impl<'a> Batch<'a> {
    fn new(ops: &'a OpSet, changes: &'a [Change]) -> Self {
        Batch {
            ops: SmallHashMap::default(),
            made: SmallHashMap::default(),
            actors: Actors::new(ops),
            // The actors the apply adds: those of the batch's first changes.
            first: changes
                .iter()
                .filter(|c| c.seq() == 1)
                .map(|c| c.actor_id())
                .collect(),
            seqs: HashMap::new(),
            pasts: HashMap::new(),
            pending: changes.iter().flat_map(|c| c.deps().iter().copied()).fold(
                HashMap::new(),
                |mut n, dep| {
                    *n.entry(dep).or_insert(0) += 1;
                    n
                },
            ),
            doc: ops,
        }
    }

    /// The change as a whole: the actors it names, its sequence number, its op ids and author;
    /// and what it had seen (its causal past, as the highest op counter of each actor).
    fn header(
        &mut self,
        doc: &Automerge,
        change: &'a Change,
        own: usize,
    ) -> Result<Vec<u64>, &'static str> {
        let doc_ops = self.doc;
        let first = &self.first;
        let unknown = |a: &crate::ActorId| doc_ops.lookup_actor(a).is_none() && !first.contains(a);
        if change.actors().any(unknown) {
            return Err("it names an actor the document does not hold");
        }
        let (seq, max_op) = *self.seqs.entry(change.actor_id()).or_insert_with(|| {
            let a = change.actor_id();
            (doc.seq_for_actor(a), doc.last_max_op_of(a))
        });
        if change.seq() != seq + 1 {
            return Err("its sequence number does not follow its actor's last");
        }
        if change.start_op().get() <= max_op {
            return Err("its ops reuse its actor's op ids");
        }
        if change.author().is_some() && change.seq() != 1 {
            return Err("it names an author after its actor's first change");
        }
        if change.max_op() > u64::from(u32::MAX) {
            return Err("its op counters pass 2^32");
        }
        let past = self.past_of(doc, change)?;
        if past.iter().any(|&seen| seen >= change.start_op().get()) {
            return Err("its first op counter is not above everything it had seen");
        }
        if past.get(own).copied().unwrap_or(0) < max_op {
            return Err("it had not seen its actor's previous change");
        }
        self.seqs
            .insert(change.actor_id(), (change.seq(), change.max_op()));
        Ok(past)
    }

    /// The highest op counter of each actor (in the check's actor index space) among the
    /// changes `change` depends on, directly or not.
    fn past_of(&mut self, doc: &Automerge, change: &Change) -> Result<Vec<u64>, &'static str> {
        let (mut in_doc, mut in_batch) = (Vec::new(), Vec::new());
        for dep in change.deps() {
            match self.pasts.get(dep) {
                Some(_) => in_batch.push(*dep),
                None if doc.change_graph.has_change(dep) => in_doc.push(*dep),
                None => return Err("a change it depends on is missing"),
            }
        }
        let mut past: Vec<u64> = doc
            .change_graph
            .clock_at(&in_doc)
            .0
            .iter()
            .map(|&c| u64::from(c))
            .collect();
        for dep in in_batch {
            let other = &self.pasts[&dep];
            if past.len() < other.len() {
                past.resize(other.len(), 0);
            }
            for (mine, theirs) in past.iter_mut().zip(other) {
                *mine = (*mine).max(*theirs);
            }
        }
        Ok(past)
    }

    /// Checks every op of `change`, given what it had seen; the ops as read.
    fn ops_of(
        &mut self,
        change: &Change,
        map: &[usize],
        past: &[u64],
    ) -> Result<Vec<StoredOp>, AutomergeError> {
        let start = change.start_op().get();
        let mut read = Vec::with_capacity(change.len());
        for (i, op) in change.iter_ops().enumerate() {
            let id = OpId::new(start + i as u64, map[0]);
            // An op it may name: one it had seen, or an earlier one of its own.
            let seen = |o: OpId| {
                past.get(o.actor()).is_some_and(|&c| c >= o.counter())
                    || (o.actor() == id.actor() && (start..id.counter()).contains(&o.counter()))
            };
            let placed =
                check_op(id, &op, map, self, &seen).map_err(|why| invalid(change, i, why))?;
            if let Some(t) = Action::try_from(op.action)
                .ok()
                .and_then(|a| ObjType::try_from(a).ok())
            {
                self.made.insert(id, t);
            }
            // A deletion is no op of the document (it is kept only as its predecessors'
            // successor), so no later op may name it, in this batch or after.
            if op.action != u64::from(Action::Delete) {
                self.ops.insert(id, placed);
            }
            read.push(op);
        }
        Ok(read)
    }

    /// Records what `change` had seen, and its own ops, for the changes that depend on it; and
    /// forgets the pasts of its dependencies that no later change names.
    fn seen(&mut self, change: &'a Change, own: usize, mut past: Vec<u64>) {
        for dep in change.deps() {
            let left = self.pending.get_mut(dep).map(|n| {
                *n -= 1;
                *n
            });
            if left == Some(0) {
                self.pasts.remove(dep);
            }
        }
        if self.pending.get(&change.hash()).is_some_and(|&n| n > 0) {
            if past.len() <= own {
                past.resize(own + 1, 0);
            }
            past[own] = past[own].max(change.max_op());
            self.pasts.insert(change.hash(), past);
        }
    }
}

/// Checks one op and says where it sits; the rule it breaks, if it does.
fn check_op(
    id: OpId,
    op: &StoredOp,
    map: &[usize],
    batch: &Batch<'_>,
    seen: &dyn Fn(OpId) -> bool,
) -> Result<Placed, &'static str> {
    const ACTOR: &str = "an actor index is out of range";
    let obj = op.obj.map(map).map_err(|_| ACTOR)?;
    let obj_type = if obj.is_root() {
        ObjType::Map
    } else if obj.0.counter() >= id.counter() {
        return Err("its object is made after it");
    } else if !seen(obj.0) {
        return Err("its object is not one it had seen");
    } else {
        let made = batch.made.get(&obj.0).copied();
        made.or_else(|| in_doc_obj(batch.doc, obj))
            .ok_or("its object does not exist")?
    };
    let place = match (&op.key, obj_type.is_sequence()) {
        (Key::Prop(key), false) if !op.insert => Place::Map(obj, key.clone()),
        (Key::Elem(e), true) => {
            let e = e.map(map).map_err(|_| ACTOR)?;
            if e.is_head() {
                if !op.insert {
                    return Err("it updates the head of a sequence");
                }
            } else if e.0.counter() >= id.counter() {
                return Err("its element is made after it");
            } else if !seen(e.0) {
                return Err("its element is not one it had seen");
            } else {
                match find(batch, e.0).as_deref() {
                    Some(p) if p.insert && p.place == Place::Seq(obj, e) => {}
                    _ => return Err("its element is not an element of its object"),
                }
            }
            Place::Seq(obj, if op.insert { ElemId(id) } else { e })
        }
        _ => return Err("its key does not fit its object"),
    };
    if op.insert && !op.pred.is_empty() {
        return Err("an insert names predecessors");
    }
    if op.action == u64::from(Action::Delete) {
        if op.insert {
            return Err("an insert is a deletion");
        }
        if op.pred.is_empty() {
            return Err("a deletion names no predecessor");
        }
    }
    for pred in &op.pred {
        let pred = pred.map(map).map_err(|_| ACTOR)?;
        if pred.counter() >= id.counter() {
            return Err("a predecessor comes after it");
        }
        if !seen(pred) {
            return Err("a predecessor is not one it had seen");
        }
        match find(batch, pred).as_deref() {
            Some(p) if p.place == place => {}
            Some(_) => return Err("a predecessor is on another key or element"),
            None => return Err("a predecessor does not exist"),
        }
    }
    let mark_begin = mark_rules(id, op, &place, batch)?;
    Ok(Placed {
        place,
        insert: op.insert,
        mark_begin,
    })
}

/// A mark is an insert into a sequence, and its end follows its begin (the op before it, of the
/// same actor) in the same object; whether `op` begins a mark. That the end lands after the
/// begin is checked once the walk has placed them (`BatchApply::marks_in_order`).
fn mark_rules(
    id: OpId,
    op: &StoredOp,
    place: &Place,
    batch: &Batch<'_>,
) -> Result<bool, &'static str> {
    if op.action != u64::from(Action::Mark) {
        return Ok(false);
    }
    let Place::Seq(obj, _) = place else {
        return Err("a mark is not an insert into a sequence");
    };
    if !op.insert {
        return Err("a mark is not an insert into a sequence");
    }
    if op.mark_name.is_some() {
        return Ok(true);
    }
    let begin = OpId::new(id.counter() - 1, id.actor());
    match find(batch, begin).as_deref() {
        Some(p) if p.mark_begin && matches!(&p.place, Place::Seq(o, _) if o == obj) => Ok(false),
        _ => Err("a mark's end has no begin before it in its object"),
    }
}

/// The op `id`, of the batch so far or of the document.
fn find<'a>(batch: &'a Batch<'_>, id: OpId) -> Option<Cow<'a, Placed>> {
    match batch.ops.get(&id) {
        Some(p) => Some(Cow::Borrowed(p)),
        None => in_doc(batch.doc, id).map(Cow::Owned),
    }
}

/// The type of the document's object `obj`, if it holds it.
fn in_doc_obj(ops: &OpSet, obj: ObjId) -> Option<ObjType> {
    if obj.0.actor() >= ops.actors.len() {
        return None;
    }
    ops.object_type(&obj)
}

/// The op `id` of the document, if it holds one.
fn in_doc(ops: &OpSet, id: OpId) -> Option<Placed> {
    if id.actor() >= ops.actors.len() {
        return None;
    }
    let op = ops.get(ops.get_op_id_pos(id)?)?;
    let place = match op.key {
        KeyRef::Map(key) => Place::Map(op.obj, SmolStr::new(key)),
        KeyRef::Seq(_) if op.insert => Place::Seq(op.obj, ElemId(op.id)),
        KeyRef::Seq(e) => Place::Seq(op.obj, e),
    };
    Some(Placed {
        place,
        insert: op.insert,
        mark_begin: op.action == Action::Mark && op.mark_name.is_some(),
    })
}

/// Actor indexes of the document, and past its end for actors it does not hold yet: one index
/// space for the batch and the document (an op of a new actor is never in the document).
struct Actors<'a> {
    ops: &'a OpSet,
    new: HashMap<crate::ActorId, usize>,
}

impl<'a> Actors<'a> {
    fn new(ops: &'a OpSet) -> Self {
        Actors {
            ops,
            new: HashMap::new(),
        }
    }

    /// The change's actor table in this index space.
    fn map_of(&mut self, change: &Change) -> Vec<usize> {
        let known = self.ops.actors.len();
        change
            .actors()
            .map(|a| match self.ops.lookup_actor(a) {
                Some(i) => i,
                None => {
                    let next = known + self.new.len();
                    *self.new.entry(a.clone()).or_insert(next)
                }
            })
            .collect()
    }
}

fn invalid(change: &Change, op: usize, why: &'static str) -> AutomergeError {
    AutomergeError::InvalidChangeOp {
        hash: change.hash(),
        op,
        why,
    }
}
