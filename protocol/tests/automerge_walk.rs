//! The vendored automerge's shortcut, checked from outside: an apply that writes no patches
//! starts each text's or list's walk at the first element its changes touch, not at the
//! sequence's first op (`vendor/README.md`, `list_walk_start` in `batch.rs`). The document it
//! builds must be the one the whole walk builds (an apply with an active patch log), op for op:
//! the saved bytes are compared. Concurrent splices at a text's head, middle and end, deletions,
//! marks, and list inserts, updates and deletions, applied in batches of one to four changes.

use automerge::marks::{ExpandMark, Mark};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, Automerge, Change, ObjId, ObjType, PatchLog, ReadDoc, ROOT};

mod common;
use common::Rng;

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

#[test]
fn an_apply_without_patches_builds_the_document_the_whole_walk_builds() {
    for seed in 0..20 {
        check_seed(seed);
    }
}
