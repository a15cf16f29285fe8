//! casenote patch: the ops of incoming changes are checked against the document before a batch
//! is applied (vendor/README.md).
//!
//! automerge 0.12 trusts what a change says about where its ops go. A change it never writes,
//! but anyone can build (a predecessor on another element, key or object, a predecessor that
//! does not exist or does not come before the op, an insert that names predecessors, an
//! element key that is not an element, an object that does not exist), was applied, and the
//! document then saved to bytes that `Automerge::load` refuses or panics on; or the apply itself
//! panicked. A document a device keeps as a saved snapshot could then no longer be opened.
//!
//! [`check`] refuses such a batch before anything is changed: it reads the document (one op-id
//! lookup per key and predecessor outside the batch) and an index of the batch's own ops. Every
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
}

/// The batch's ops so far, and the objects they make.
#[derive(Default)]
struct Batch {
    ops: SmallHashMap<OpId, Placed>,
    made: SmallHashMap<OpId, ObjType>,
}

/// Refuses `changes` (ready to apply, in causal order) if an op names an object, element or
/// predecessor that automerge would never write it with; else each change's ops as read, so that
/// the apply does not decode them a second time.
pub(crate) fn check(ops: &OpSet, changes: &[Change]) -> Result<Vec<Vec<StoredOp>>, AutomergeError> {
    let mut actors = Actors::new(ops);
    let mut batch = Batch::default();
    let mut decoded = Vec::with_capacity(changes.len());
    for change in changes {
        let map = actors.map_of(change);
        let start = change.start_op().get();
        let end = start.checked_add(change.len() as u64);
        if end.map_or(true, |e| e > u64::from(u32::MAX)) {
            return Err(invalid(change, 0, "its op counters pass 2^32"));
        }
        let mut read = Vec::with_capacity(change.len());
        for (i, op) in change.iter_ops().enumerate() {
            let id = OpId::new(start + i as u64, map[0]);
            let bad = |why| invalid(change, i, why);
            let placed = check_op(id, &op, &map, ops, &batch).map_err(bad)?;
            if let Some(t) = Action::try_from(op.action)
                .ok()
                .and_then(|a| ObjType::try_from(a).ok())
            {
                batch.made.insert(id, t);
            }
            batch.ops.insert(id, placed);
            read.push(op);
        }
        decoded.push(read);
    }
    Ok(decoded)
}

/// Checks one op and says where it sits; the rule it breaks, if it does.
fn check_op(
    id: OpId,
    op: &StoredOp,
    map: &[usize],
    ops: &OpSet,
    batch: &Batch,
) -> Result<Placed, &'static str> {
    const ACTOR: &str = "an actor index is out of range";
    let obj = op.obj.map(map).map_err(|_| ACTOR)?;
    let obj_type = if obj.is_root() {
        ObjType::Map
    } else if obj.0.counter() >= id.counter() {
        return Err("its object is made after it");
    } else {
        let made = batch.made.get(&obj.0).copied();
        made.or_else(|| in_doc_obj(ops, obj))
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
            } else {
                match find(ops, batch, e.0).as_deref() {
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
    for pred in &op.pred {
        let pred = pred.map(map).map_err(|_| ACTOR)?;
        if pred.counter() >= id.counter() {
            return Err("a predecessor comes after it");
        }
        match find(ops, batch, pred).as_deref() {
            Some(p) if p.place == place => {}
            Some(_) => return Err("a predecessor is on another key or element"),
            None => return Err("a predecessor does not exist"),
        }
    }
    Ok(Placed {
        place,
        insert: op.insert,
    })
}

/// The op `id`, of the batch so far or of the document.
fn find<'a>(ops: &OpSet, batch: &'a Batch, id: OpId) -> Option<Cow<'a, Placed>> {
    match batch.ops.get(&id) {
        Some(p) => Some(Cow::Borrowed(p)),
        None => in_doc(ops, id).map(Cow::Owned),
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
