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

use std::collections::HashMap;

use crate::change::Change;
use crate::columnar::Key;
use crate::error::AutomergeError;
use crate::op_set2::op_set::OpSet;
use crate::op_set2::types::{Action, KeyRef};
use crate::storage::change::ChangeOp as StoredOp;
use crate::types::{ElemId, ObjId, ObjType, OpId};

/// Where an op sits: its object, and its map key or the element it belongs to.
#[derive(Clone, Debug, PartialEq)]
enum Place {
    Map(ObjId, String),
    Seq(ObjId, ElemId),
}

/// What the check needs to know of an op, in the batch or in the document.
#[derive(Clone, Debug)]
struct Placed {
    place: Place,
    insert: bool,
    made: Option<ObjType>,
}

/// Refuses `changes` (ready to apply, in causal order) if an op names an object, element or
/// predecessor that automerge would never write it with.
pub(crate) fn check(ops: &OpSet, changes: &[Change]) -> Result<(), AutomergeError> {
    let mut actors = Actors::new(ops);
    let mut batch: HashMap<OpId, Placed> = HashMap::new();
    for change in changes {
        let map = actors.map_of(change);
        let start = change.start_op().get();
        let end = start.checked_add(change.len() as u64);
        if end.map_or(true, |e| e > u64::from(u32::MAX)) {
            return Err(invalid(change, 0, "its op counters pass 2^32"));
        }
        for (i, op) in change.iter_ops().enumerate() {
            let id = OpId::new(start + i as u64, map[0]);
            let placed = check_op(change, i, id, &op, &map, &|at| find(ops, &batch, at))?;
            batch.insert(id, placed);
        }
    }
    Ok(())
}

/// Checks one op and says where it sits.
fn check_op(
    change: &Change,
    i: usize,
    id: OpId,
    op: &StoredOp,
    map: &[usize],
    found: &dyn Fn(OpId) -> Option<Placed>,
) -> Result<Placed, AutomergeError> {
    let bad = |why| invalid(change, i, why);
    let obj = op
        .obj
        .map(map)
        .map_err(|_| bad("an actor index is out of range"))?;
    let obj_type = if obj.is_root() {
        ObjType::Map
    } else if obj.0.counter() >= id.counter() {
        return Err(bad("its object is made after it"));
    } else {
        match found(obj.0).and_then(|p| p.made) {
            Some(t) => t,
            None => return Err(bad("its object does not exist")),
        }
    };
    let place = match (&op.key, obj_type.is_sequence()) {
        (Key::Prop(key), false) if !op.insert => Place::Map(obj, key.to_string()),
        (Key::Elem(e), true) => {
            let e = e
                .map(map)
                .map_err(|_| bad("an actor index is out of range"))?;
            if e.is_head() {
                if !op.insert {
                    return Err(bad("it updates the head of a sequence"));
                }
            } else if e.0.counter() >= id.counter() {
                return Err(bad("its element is made after it"));
            } else {
                match found(e.0) {
                    Some(p) if p.insert && p.place == Place::Seq(obj, e) => {}
                    _ => return Err(bad("its element is not an element of its object")),
                }
            }
            Place::Seq(obj, if op.insert { ElemId(id) } else { e })
        }
        _ => return Err(bad("its key does not fit its object")),
    };
    if op.insert && !op.pred.is_empty() {
        return Err(bad("an insert names predecessors"));
    }
    for pred in &op.pred {
        let pred = pred
            .map(map)
            .map_err(|_| bad("an actor index is out of range"))?;
        if pred.counter() >= id.counter() {
            return Err(bad("a predecessor comes after it"));
        }
        match found(pred) {
            Some(p) if p.place == place => {}
            Some(_) => return Err(bad("a predecessor is on another key or element")),
            None => return Err(bad("a predecessor does not exist")),
        }
    }
    let made = match Action::try_from(op.action) {
        Ok(action) => ObjType::try_from(action).ok(),
        Err(_) => None,
    };
    Ok(Placed {
        place,
        insert: op.insert,
        made,
    })
}

/// The op `id`, of the batch so far or of the document.
fn find(ops: &OpSet, batch: &HashMap<OpId, Placed>, id: OpId) -> Option<Placed> {
    batch.get(&id).cloned().or_else(|| in_doc(ops, id))
}

/// The op `id` of the document, if it holds one.
fn in_doc(ops: &OpSet, id: OpId) -> Option<Placed> {
    if id.actor() >= ops.actors.len() {
        return None;
    }
    let op = ops.get(ops.get_op_id_pos(id)?)?;
    let place = match op.key {
        KeyRef::Map(key) => Place::Map(op.obj, key.into_owned()),
        KeyRef::Seq(_) if op.insert => Place::Seq(op.obj, ElemId(op.id)),
        KeyRef::Seq(e) => Place::Seq(op.obj, e),
    };
    Some(Placed {
        place,
        insert: op.insert,
        made: ObjType::try_from(op.action).ok(),
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
