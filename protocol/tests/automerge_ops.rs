//! The vendored automerge's check of incoming changes (`vendor/README.md`, `casenote_check.rs`):
//! changes that automerge never writes but a device can build byte by byte are refused before
//! they touch the document. Without the check, automerge 0.12 applied each of them, and the
//! document then saved to bytes that `Automerge::load` refused ("mismatching heads", "missing
//! ops", "invalid mark operation order") or panicked on; some panicked in the apply itself. A
//! device keeps its documents as saved snapshots, so one such change, once accepted, would stop
//! every copy of the document from opening.
//!
//! The crafted cases name each rule; the mutation test then rewrites one field of honest changes
//! at random (predecessors, keys, objects, actions, marks, insert flags, sequence numbers,
//! actors, first op counters, dependencies) and holds the check to its promise: a change is
//! refused with the document left as it was, or taken and the document saves and loads again,
//! whichever way the changes are batched. And the other side: what automerge writes (overwrites
//! of conflicts, counters, updates of an element made in the same change, texts with marks,
//! whole histories in one batch) passes.

use automerge::legacy::{ElementId, Key, ObjectId, Op, OpId};
use automerge::marks::{ExpandMark, Mark};
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, Automerge, Change, ObjId, ObjType, PatchLog, ReadDoc, ROOT};
use automerge::{ScalarValue, Value};

mod common;
use common::Rng;

/// A document by actor `aa`: ops 1 and 2 put `x` and `y` on the root, 3 makes `list`, 4..=7
/// insert its elements a..d, 8 makes the map `m`, 9 puts `m.k`.
struct Base {
    doc: AutoCommit,
    list: ObjId,
    m: ObjId,
    bytes: Vec<u8>,
}

fn base() -> Base {
    let mut doc = AutoCommit::new().with_actor(ActorId::from(vec![0xaa; 16]));
    doc.put(ROOT, "x", 1).unwrap();
    doc.put(ROOT, "y", 2).unwrap();
    let list = doc.put_object(ROOT, "list", ObjType::List).unwrap();
    for (i, v) in ["a", "b", "c", "d"].into_iter().enumerate() {
        doc.insert(&list, i, v).unwrap();
    }
    let m = doc.put_object(ROOT, "m", ObjType::Map).unwrap();
    doc.put(&m, "k", 3).unwrap();
    let bytes = doc.save();
    Base {
        doc,
        list,
        m,
        bytes,
    }
}

fn op(counter: u64) -> OpId {
    OpId(counter, ActorId::from(vec![0xaa; 16]))
}

impl Base {
    /// The change `edit` makes under actor `bb`, with every op then rewritten by `rewrite`.
    fn crafted(&self, edit: impl FnOnce(&mut AutoCommit), rewrite: impl Fn(&mut Op)) -> Change {
        let mut tmp = self.doc.clone().with_actor(ActorId::from(vec![0xbb; 16]));
        edit(&mut tmp);
        let mut expanded = tmp.get_last_local_change().unwrap().decode();
        expanded.hash = None;
        expanded.operations.iter_mut().for_each(rewrite);
        Change::from(expanded)
    }
}

/// Applies `change` to the base with an inactive and an active patch log; returns automerge's
/// error, after checking that neither apply panicked nor changed the document.
fn refusal(b: &Base, change: &Change) -> String {
    let mut errors = vec![];
    for active in [false, true] {
        let mut doc = Automerge::load(&b.bytes).unwrap();
        let mut log = if active {
            PatchLog::active()
        } else {
            PatchLog::inactive()
        };
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            doc.apply_changes_log_patches([change.clone()], &mut log)
        }));
        let error = match applied {
            Err(_) => panic!("the apply panicked (active log: {active})"),
            Ok(Ok(())) => panic!("the change was applied (active log: {active})"),
            Ok(Err(e)) => e.to_string(),
        };
        assert!(
            doc.save() == b.bytes,
            "the refused change left the document changed"
        );
        errors.push(error);
    }
    assert_eq!(errors[0], errors[1]);
    errors.remove(0)
}

/// Applies `changes` to a copy of `doc` saved and loaded; the result must save and load to the
/// same document.
fn applies_and_reloads(doc: &[u8], changes: Vec<Change>) -> Automerge {
    let mut applied = Automerge::load(doc).unwrap();
    applied
        .apply_changes(changes)
        .expect("automerge's own change applies");
    let saved = applied.save();
    let loaded = Automerge::load(&saved).expect("the saved document loads");
    assert_eq!(loaded.get_heads(), applied.get_heads());
    assert!(loaded.save() == saved, "the reloaded document saves alike");
    applied
}

#[test]
fn changes_automerge_never_writes_are_refused_and_leave_the_document_as_it_was() {
    let b = base();
    let (list, m) = (b.list.clone(), b.m.clone());
    let put_d = |d: &mut AutoCommit| d.put(&list, 3, "D").unwrap();
    let del_d = |d: &mut AutoCommit| d.delete(&list, 3).unwrap();
    let insert_e = |d: &mut AutoCommit| d.insert(&list, 4, "e").unwrap();
    let put_x = |d: &mut AutoCommit| d.put(ROOT, "x", 5).unwrap();
    let put_k = |d: &mut AutoCommit| d.put(&m, "k", 5).unwrap();
    let pred = |ids: Vec<OpId>| move |o: &mut Op| o.pred = ids.clone().into();
    let bb = ActorId::from(vec![0xbb; 16]);
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "a list update whose predecessor is another element's insert",
            b.crafted(put_d, pred(vec![op(4)])),
            "a predecessor is on another key or element",
        ),
        (
            "a list update naming its own element and another's",
            b.crafted(put_d, pred(vec![op(4), op(7)])),
            "a predecessor is on another key or element",
        ),
        (
            "a list deletion whose predecessor is another element's insert",
            b.crafted(del_d, pred(vec![op(4)])),
            "a predecessor is on another key or element",
        ),
        (
            "a list update whose predecessor is a map op",
            b.crafted(put_d, pred(vec![op(1)])),
            "a predecessor is on another key or element",
        ),
        (
            "a map put whose predecessor is on another key",
            b.crafted(|d| d.put(ROOT, "y", 5).unwrap(), pred(vec![op(1)])),
            "a predecessor is on another key or element",
        ),
        (
            "a map deletion whose predecessor is on another key",
            b.crafted(|d| d.delete(ROOT, "y").unwrap(), pred(vec![op(1)])),
            "a predecessor is on another key or element",
        ),
        (
            "a map put whose predecessor is in another object",
            b.crafted(put_x, pred(vec![op(9)])),
            "a predecessor is on another key or element",
        ),
        (
            "a map put whose predecessor is a list element",
            b.crafted(put_x, pred(vec![op(5)])),
            "a predecessor is on another key or element",
        ),
        (
            "a predecessor that does not exist",
            b.crafted(put_x, pred(vec![OpId(2, bb.clone())])),
            "a predecessor is not one it had seen",
        ),
        (
            "a predecessor that comes after the op (its own id)",
            b.crafted(put_x, pred(vec![OpId(10, bb.clone())])),
            "a predecessor comes after it",
        ),
        (
            "an insert that names a predecessor",
            b.crafted(insert_e, pred(vec![op(7)])),
            "an insert names predecessors",
        ),
        (
            "an insert after an op that is not an element",
            b.crafted(insert_e, |o| {
                o.key = Key::Seq(ElementId::Id(op(1)));
            }),
            "its element is not an element of its object",
        ),
        (
            "an update of an op that is not an element",
            b.crafted(put_d, |o| o.key = Key::Seq(ElementId::Id(op(1)))),
            "its element is not an element of its object",
        ),
        (
            "an update of the head of a list",
            b.crafted(put_d, |o| o.key = Key::Seq(ElementId::Head)),
            "it updates the head of a sequence",
        ),
        (
            "a map key on a list",
            b.crafted(put_d, |o| o.key = Key::Map("k".into())),
            "its key does not fit its object",
        ),
        (
            "a deletion that names nothing",
            b.crafted(|d| d.delete(ROOT, "y").unwrap(), pred(vec![])),
            "a deletion names no predecessor",
        ),
        (
            "an insert that deletes",
            b.crafted(insert_e, |o| o.action = automerge::legacy::OpType::Delete),
            "an insert is a deletion",
        ),
        (
            "an op in an object that does not exist",
            b.crafted(put_k, |o| o.obj = ObjectId::Id(op(2))),
            "its object does not exist",
        ),
        (
            "an op in an object made after it",
            b.crafted(put_k, |o| o.obj = ObjectId::Id(op(98))),
            "its object is made after it",
        ),
    ];
    for (what, change, why) in cases {
        let error = refusal(&b, &change);
        assert!(error.ends_with(why), "{what}: refused with {error:?}");
        assert!(
            error.contains(&change.hash().to_string()),
            "{what}: {error}"
        );
    }
    // The document takes automerge's own change after all that.
    let fine = b.crafted(put_d, |_| {});
    applies_and_reloads(&b.bytes, vec![fine]);
}

#[test]
fn one_refused_change_refuses_its_batch_and_the_batch_applies_without_it() {
    let b = base();
    let list = b.list.clone();
    let good = b.crafted(|d| d.put(ROOT, "x", 6).unwrap(), |_| {});
    let mut tmp = b.doc.clone().with_actor(ActorId::from(vec![0xcc; 16]));
    tmp.put(&list, 3, "D").unwrap();
    let mut bad = tmp.get_last_local_change().unwrap().decode();
    bad.hash = None;
    bad.operations[0].pred = vec![op(4)].into();
    let bad = Change::from(bad);
    let mut doc = Automerge::load(&b.bytes).unwrap();
    assert!(doc.apply_changes([good.clone(), bad.clone()]).is_err());
    assert!(
        doc.save() == b.bytes,
        "the refused batch changed the document"
    );
    doc.apply_changes([good]).unwrap();
    assert_eq!(doc.get(ROOT, "x").unwrap().unwrap().0, Value::from(6));
    assert!(
        doc.apply_changes([bad]).is_err(),
        "refused again on its own"
    );
}

#[test]
fn what_automerge_writes_passes_and_reloads() {
    let mut b = base();
    let (list, m) = (b.list.clone(), b.m.clone());
    // Two devices edit concurrently; a third then overwrites both sides of each conflict.
    let mut one = b.doc.fork().with_actor(ActorId::from(vec![1; 16]));
    let mut two = b.doc.fork().with_actor(ActorId::from(vec![2; 16]));
    for (d, v) in [(&mut one, "one"), (&mut two, "two")] {
        d.put(ROOT, "x", v).unwrap();
        d.put(&list, 1, v).unwrap();
        d.delete(&list, 2).unwrap();
        d.put(&m, "count", ScalarValue::counter(1)).unwrap();
        d.insert(&list, 0, v).unwrap();
    }
    one.merge(&mut two).unwrap();
    let mut three = one.fork().with_actor(ActorId::from(vec![3; 16]));
    three.put(ROOT, "x", "three").unwrap();
    three.put(&list, 2, "three").unwrap();
    three.increment(&m, "count", 5).unwrap();
    three.delete(&list, 0).unwrap();
    // In one change: an object made and edited, an element inserted and updated twice, a text
    // spliced and marked, a counter in a list made and incremented.
    let text = three.put_object(&m, "text", ObjType::Text).unwrap();
    three.splice_text(&text, 0, 0, "hello world").unwrap();
    three.splice_text(&text, 5, 1, ", ").unwrap();
    let mark = Mark::new("bold".into(), true, 0, 5);
    three.mark(&text, mark, ExpandMark::After).unwrap();
    three.insert(&list, 1, "new").unwrap();
    three.put(&list, 1, "newer").unwrap();
    three.put(&list, 1, "newest").unwrap();
    three.insert(&list, 0, ScalarValue::counter(0)).unwrap();
    three.increment(&list, 0, 2).unwrap();
    three.put(ROOT, "x", "three again").unwrap();
    three.commit();
    // The whole history in one batch, onto an empty document, and onto the base change by change.
    let all = three.get_changes(&[]);
    let from_empty = applies_and_reloads(&AutoCommit::new().save(), all.clone());
    let since_base: Vec<Change> = three.get_changes(&b.doc.get_heads());
    let mut stepwise = Automerge::load(&b.bytes).unwrap();
    for c in since_base {
        stepwise.apply_changes([c]).unwrap();
    }
    let reloaded = Automerge::load(&stepwise.save()).unwrap();
    assert_eq!(from_empty.get_heads(), three.get_heads());
    assert_eq!(reloaded.get_heads(), three.get_heads());
    assert_eq!(reloaded.text(&text).unwrap(), "hello, world");
    assert_eq!(
        reloaded.get(ROOT, "x").unwrap().unwrap().0,
        Value::from("three again")
    );
}

/// A document with a map, a list, a text and a counter, each edited twice by two actors.
fn rich_base() -> (AutoCommit, ObjId, ObjId) {
    let mut doc = AutoCommit::new().with_actor(ActorId::from(vec![0xaa; 16]));
    doc.put(ROOT, "x", 1).unwrap();
    doc.put(ROOT, "c", ScalarValue::counter(1)).unwrap();
    let list = doc.put_object(ROOT, "list", ObjType::List).unwrap();
    let text = doc.put_object(ROOT, "text", ObjType::Text).unwrap();
    for i in 0..4 {
        doc.insert(&list, i, i as i64).unwrap();
    }
    doc.splice_text(&text, 0, 0, "hello world").unwrap();
    doc.commit();
    let mut other = doc.fork().with_actor(ActorId::from(vec![0xcc; 16]));
    other.put(&list, 1, "one").unwrap();
    other.delete(&list, 2).unwrap();
    other.splice_text(&text, 5, 1, "_").unwrap();
    other.increment(ROOT, "c", 2).unwrap();
    other.put(ROOT, "x", 2).unwrap();
    doc.merge(&mut other).unwrap();
    (doc, list, text)
}

/// One edit automerge writes, of a kind chosen by `pick`.
fn honest_edit(d: &mut AutoCommit, list: &ObjId, text: &ObjId, pick: usize) {
    match pick {
        0 => d.put(ROOT, "x", 7).unwrap(),
        1 => d.delete(ROOT, "x").unwrap(),
        2 => d.increment(ROOT, "c", 3).unwrap(),
        3 => d.put(list, 1, "put").unwrap(),
        4 => d.delete(list, 0).unwrap(),
        5 => d.insert(list, 2, "new").unwrap(),
        6 => d.splice_text(text, 3, 2, "XY").unwrap(),
        7 => {
            let mark = Mark::new("bold".into(), true, 1, 4);
            d.mark(text, mark, ExpandMark::After).unwrap();
        }
        _ => {
            let m = d.put_object(ROOT, "m", ObjType::Map).unwrap();
            d.put(&m, "k", 1).unwrap();
            d.put(&m, "k", 2).unwrap();
        }
    }
}

/// Every op id, key and element the mutations may name: the base's and the change's own.
fn names(doc: &mut AutoCommit, change: &Change) -> Vec<OpId> {
    let mut ids: Vec<OpId> = doc
        .get_changes(&[])
        .iter()
        .chain([change])
        .flat_map(|c| {
            let actor = c.actor_id().clone();
            (0..c.len() as u64).map(move |i| OpId(c.start_op().get() + i, actor.clone()))
        })
        .collect();
    ids.push(OpId(99, ActorId::from(vec![0xaa; 16])));
    ids
}

/// Rewrites one field of one op of `change` at random (its predecessors, key, object, action,
/// mark or insert flag, each to something else the document or the change names), and now and
/// then the change's sequence number or actor.
fn mutate(rng: &mut Rng, change: &Change, ids: &[OpId]) -> Change {
    let mut expanded = change.decode();
    expanded.hash = None;
    let i = rng.below(expanded.operations.len());
    let id = ids[rng.below(ids.len())].clone();
    match rng.below(16) {
        10 => expanded.seq = 1 + rng.below(3) as u64,
        11 => {
            let other = ActorId::from(vec![rng.below(4) as u8 * 0x11; 16]);
            expanded.actor_id = other;
        }
        12 => {
            let start = expanded.start_op.get().saturating_sub(3) + rng.below(6) as u64;
            expanded.start_op = std::num::NonZeroU64::new(start.max(1)).unwrap();
        }
        13 => expanded.deps.clear(),
        _ => {}
    }
    let op = &mut expanded.operations[i];
    match rng.below(9) {
        0 => op.pred = vec![id].into(),
        1 => op.pred = vec![].into(),
        2 => {
            let mut pred: Vec<OpId> = op.pred.iter().cloned().collect();
            pred.push(id);
            op.pred = pred.into();
        }
        3 => op.key = Key::Seq(ElementId::Id(id)),
        4 => op.key = Key::Seq(ElementId::Head),
        5 => op.obj = ObjectId::Id(id),
        6 => op.insert = !op.insert,
        7 => {
            op.action = match rng.below(3) {
                0 => automerge::legacy::OpType::Delete,
                1 => automerge::legacy::OpType::Increment(1),
                _ => automerge::legacy::OpType::Put(ScalarValue::Int(5)),
            }
        }
        _ => {
            op.action = match rng.below(2) {
                0 => automerge::legacy::OpType::MarkEnd(false),
                _ => automerge::legacy::OpType::MarkBegin(automerge::legacy::MarkData {
                    name: "bold".into(),
                    value: ScalarValue::Boolean(true),
                    expand: false,
                }),
            }
        }
    }
    Change::from(expanded)
}

/// Applies `batches` in turn; whether every one was taken, after checking that none panicked
/// and that a refused one left the document as it was.
fn taken(base: &[u8], batches: &[Vec<Change>]) -> Option<Automerge> {
    let mut doc = Automerge::load(base).unwrap();
    for batch in batches {
        let before = doc.save();
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            doc.apply_changes(batch.clone())
        }));
        match applied {
            Err(_) => panic!("the apply panicked"),
            Ok(Err(_)) => {
                assert!(doc.save() == before, "a refused batch changed the document");
                return None;
            }
            Ok(Ok(())) => {}
        }
    }
    Some(doc)
}

/// The property the check gives: whatever one mutated op makes of an honest change, the apply
/// either refuses it, leaving the document as it was, or takes it, and then the document saves
/// to bytes that load again to the same heads; and the verdict is the same whether the change
/// comes in one batch with the honest change before it or after it in a batch of its own.
#[test]
fn a_mutated_change_is_refused_or_the_document_still_loads_whatever_the_batches() {
    let (mut doc, list, text) = rich_base();
    let base = doc.save();
    let seed = std::env::var("CASENOTE_FUZZ_SEED").map_or(18, |s| s.parse().unwrap());
    let mut rng = Rng(seed);
    let cases = if std::env::var_os("CASENOTE_SLOW_TESTS").is_some() {
        6_000
    } else {
        1_500
    };
    let (mut refused, mut accepted) = (0, 0);
    for case in 0..cases {
        let mut first = doc.fork().with_actor(ActorId::from(vec![0xbb; 16]));
        honest_edit(&mut first, &list, &text, rng.below(9));
        first.commit();
        let first_change = first.get_last_local_change().unwrap().clone();
        honest_edit(&mut first, &list, &text, rng.below(9));
        first.commit();
        let honest = first.get_last_local_change().unwrap().clone();
        let ids = names(&mut doc, &honest);
        let crafted = mutate(&mut rng, &honest, &ids);
        let together = taken(&base, &[vec![first_change.clone(), crafted.clone()]]);
        let apart = taken(&base, &[vec![first_change.clone()], vec![crafted.clone()]]);
        assert_eq!(
            together.is_some(),
            apart.is_some(),
            "case {case}: the verdict depends on the batches"
        );
        let Some(applied) = together else {
            refused += 1;
            continue;
        };
        accepted += 1;
        let saved = applied.save();
        let loaded = std::panic::catch_unwind(|| Automerge::load(&saved));
        let loaded = match loaded {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(e)) => panic!(
                "case {case}: taken, and the saved document fails: {e}: {:?} / honest {:?}",
                crafted.decode(),
                honest.decode()
            ),
            Err(_) => panic!(
                "case {case}: taken, and the saved document panics on load: {:?} / honest {:?}",
                crafted.decode(),
                honest.decode()
            ),
        };
        assert_eq!(loaded.get_heads(), applied.get_heads(), "case {case}");
    }
    // Both sides of the property were exercised.
    assert!(
        refused > cases / 10 && accepted > cases / 10,
        "{refused} refused, {accepted} taken"
    );
}
