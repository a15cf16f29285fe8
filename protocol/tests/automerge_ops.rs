//! The vendored automerge's check of incoming ops (`vendor/README.md`, `casenote_check.rs`):
//! changes that automerge never writes but a device can build byte by byte are refused before
//! they touch the document. Without the check, automerge 0.12 applied each of them, and the
//! document then saved to bytes that `Automerge::load` refused ("mismatching heads") or panicked
//! on; two of them (an insert after an op that is not an element, an op in an object that does
//! not exist) panicked in the apply itself. A device keeps its documents as saved snapshots, so
//! one such change, once accepted, would stop every copy of the document from opening.
//!
//! And the other side: what automerge writes (overwrites of conflicts, counters, updates of an
//! element made in the same change, texts with marks, whole histories in one batch) passes.

use automerge::legacy::{ElementId, Key, ObjectId, Op, OpId};
use automerge::marks::{ExpandMark, Mark};
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, Automerge, Change, ObjId, ObjType, PatchLog, ReadDoc, ROOT};
use automerge::{ScalarValue, Value};

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
            "a predecessor does not exist",
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
