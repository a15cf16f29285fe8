//! The vendored automerge's shortcut, checked from outside: an apply that writes no patches
//! starts each text's or list's walk at the first element its changes touch, not at the
//! sequence's first op (`vendor/README.md`, `list_walk_start` in `batch.rs`). The document it
//! builds must be the one the whole walk builds (an apply with an active patch log), op for op:
//! the saved bytes are compared. Concurrent splices at a text's head, middle and end, deletions,
//! marks, and list inserts, updates and deletions, applied in batches of one to four changes.

use automerge::marks::{ExpandMark, Mark};
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, Automerge, Change, ObjId, ObjType, PatchLog, ReadDoc, ROOT};

/// splitmix64: a reproducible stream of numbers for one seed (the test names its seed).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n.max(1) as u64) as usize
    }

    fn actor(&mut self) -> ActorId {
        ActorId::from((0..16).map(|_| self.below(256) as u8).collect::<Vec<u8>>())
    }
}

/// One device's concurrent change to `source`'s current state: a few splices, maybe a mark, one
/// list edit.
fn edit(rng: &mut Rng, source: &mut AutoCommit, text: &ObjId, list: &ObjId, n: &mut i64) -> Change {
    let mut tmp = source.fork().with_actor(rng.actor());
    for _ in 0..=rng.below(5) {
        let len = tmp.length(text);
        let index = match rng.below(4) {
            0 => 0,
            1 => len,
            _ => rng.below(len + 1),
        };
        let del = rng.below(3).min(len - index);
        *n += 1;
        tmp.splice_text(text, index, del as isize, &format!("<{n}>"))
            .unwrap();
    }
    let len = tmp.length(text);
    let (a, b) = (rng.below(len), rng.below(len));
    if a != b {
        let mark = Mark::new("bold".into(), *n, a.min(b), a.max(b));
        tmp.mark(text, mark, ExpandMark::After).unwrap();
    }
    let len = tmp.length(list);
    *n += 1;
    match rng.below(3) {
        0 => tmp.insert(list, rng.below(len + 1), *n).unwrap(),
        1 if len > 0 => tmp.put(list, rng.below(len), *n).unwrap(),
        _ if len > 1 => tmp.delete(list, rng.below(len)).unwrap(),
        _ => tmp.insert(list, 0, *n).unwrap(),
    }
    let change = tmp.get_last_local_change().unwrap();
    source.merge(&mut tmp).unwrap();
    change
}

fn check_seed(seed: u64) {
    let mut rng = Rng(seed);
    let mut source = AutoCommit::new().with_actor(rng.actor());
    let text = source.put_object(ROOT, "text", ObjType::Text).unwrap();
    source
        .splice_text(&text, 0, 0, "the quick brown fox jumps over the lazy dog")
        .unwrap();
    let list = source.put_object(ROOT, "list", ObjType::List).unwrap();
    for i in 0..8 {
        source.insert(&list, i, i as i64).unwrap();
    }
    let base = source.save();
    let mut fast = Automerge::load(&base).unwrap();
    let mut full = Automerge::load(&base).unwrap();
    let mut n = 0;
    for round in 0..30 {
        let batch: Vec<Change> = (0..=rng.below(3))
            .map(|_| edit(&mut rng, &mut source, &text, &list, &mut n))
            .collect();
        fast.apply_changes_log_patches(batch.clone(), &mut PatchLog::inactive())
            .unwrap();
        full.apply_changes_log_patches(batch, &mut PatchLog::active())
            .unwrap();
        assert_eq!(
            fast.text(&text).unwrap(),
            full.text(&text).unwrap(),
            "seed {seed}, round {round}: the texts differ"
        );
        assert!(
            fast.save() == full.save(),
            "seed {seed}, round {round}: the documents differ"
        );
    }
    assert!(
        fast.save() == source.save(),
        "seed {seed}: the applied document is not the source's"
    );
}

/// Applies `change` to `base` once with each log; both must end alike: refused alike, or the same
/// document. A panic inside automerge counts as a refusal (the server catches them).
fn apply_both_ways(base: &[u8], change: Change) -> Option<Vec<u8>> {
    let run = |active: bool| {
        let mut doc = Automerge::load(base).unwrap();
        let mut log = if active {
            PatchLog::active()
        } else {
            PatchLog::inactive()
        };
        let change = change.clone();
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            doc.apply_changes_log_patches([change], &mut log)
        }));
        matches!(applied, Ok(Ok(()))).then(|| doc.save())
    };
    let (fast, full) = (run(false), run(true));
    assert!(
        fast == full,
        "the two walks end differently (applied: {} without patches, {} with)",
        fast.is_some(),
        full.is_some()
    );
    fast
}

/// Changes automerge never writes, but a device could send: a list update whose predecessor is
/// on an earlier element than the one it updates (the shortened walk must start at that
/// element, or the predecessor would stay unmarked), and an insert after an op that is not an
/// element's insert. The shortened walk must treat them as the whole walk does.
#[test]
fn crafted_changes_end_as_the_whole_walk_ends_them() {
    let a = ActorId::from(vec![0xaa; 16]);
    let mut doc = AutoCommit::new().with_actor(a.clone());
    let list = doc.put_object(ROOT, "list", ObjType::List).unwrap();
    for (i, v) in ["a", "b", "c", "d"].into_iter().enumerate() {
        doc.insert(&list, i, v).unwrap();
    }
    doc.put(&list, 1, "B").unwrap();
    let base = doc.save();
    // Ops of actor `a`: 1 the list, 2..=5 the elements a..d, 6 the put on b.
    let op = |counter: u64| automerge::legacy::OpId(counter, a.clone());
    let mut edited = |edit: &dyn Fn(&mut automerge::legacy::Op)| {
        let mut tmp = doc.fork().with_actor(ActorId::from(vec![0xbb; 16]));
        tmp.put(&list, 3, "D").unwrap();
        tmp.insert(&list, 4, "e").unwrap();
        let mut expanded = tmp.get_last_local_change().unwrap().decode();
        expanded.hash = None;
        for o in &mut expanded.operations {
            edit(o);
        }
        Change::from(expanded)
    };
    // The put on d names a's insert as its predecessor: the whole walk marks `a` overwritten.
    let cross_pred = edited(&|o| {
        if !o.insert {
            o.pred = vec![op(2)].into();
        }
    });
    // (automerge 0.12 accepts it, and the document it saves then fails to load: its own defect,
    // with either walk; vendor/README.md.)
    assert!(
        apply_both_ways(&base, cross_pred).is_some(),
        "the whole walk applies it"
    );
    // The insert follows op 6, the put on b, which is not an element.
    let bad_key = edited(&|o| {
        if o.insert {
            o.key = automerge::legacy::Key::Seq(automerge::legacy::ElementId::Id(op(6)));
        }
    });
    apply_both_ways(&base, bad_key);
}

#[test]
fn an_apply_without_patches_builds_the_document_the_whole_walk_builds() {
    for seed in 0..20 {
        check_seed(seed);
    }
}
