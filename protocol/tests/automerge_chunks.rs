//! `chunk::bound` against what automerge itself reads: for changes and documents automerge
//! writes (plain, compressed, deflated columns), the operations, changes and actors it counts
//! are automerge's own; a change whose runs name more rows than allowed, or deflated data that
//! inflates past the limit, is refused at once, before automerge would visit its operations.

mod common;

use automerge::marks::{ExpandMark, Mark};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ReadDoc, ScalarValue, ROOT};
use casenote_protocol::chunk::{self, testing, Bound, ChunkError, Kind, Limits};
use common::Rng;
use std::time::{Duration, Instant};

const LIMITS: Limits = Limits {
    rows_max: 1_000_000,
    inflated_max: 16 * 1024 * 1024,
};

/// A document of a few actors' edits: text typed, deleted and marked, a list spliced, map keys
/// overwritten (conflicts with two predecessors), counters, maps of floats, bytes, strings and
/// timestamps.
fn edited(seed: u64) -> AutoCommit {
    let mut rng = Rng(seed);
    let mut doc = AutoCommit::new();
    let text = doc.put_object(ROOT, "text", ObjType::Text).unwrap();
    let list = doc.put_object(ROOT, "list", ObjType::List).unwrap();
    doc.put(ROOT, "n", ScalarValue::counter(0)).unwrap();
    doc.commit();
    for round in 0..20 {
        let mut other = doc.fork().with_actor(rng.actor());
        for d in [&mut doc, &mut other] {
            let len = d.length(&text);
            let at = rng.below(len + 1);
            d.splice_text(&text, at, 0, &"typed ".repeat(1 + rng.below(300)))
                .unwrap();
            let len = d.length(&text);
            let at = rng.below(len);
            d.splice_text(&text, at, rng.below(len - at).min(400) as isize, "")
                .unwrap();
            let items = (0..rng.below(50)).map(|i| ScalarValue::Int(i as i64));
            d.splice(&list, 0, 0, items).unwrap();
            d.put(ROOT, "k", round as i64).unwrap();
            d.increment(ROOT, "n", 1).unwrap();
            let len = d.length(&text);
            let from = rng.below(len);
            let mark = Mark::new("bold".into(), true, from, (from + 5).min(len));
            d.mark(&text, mark, ExpandMark::After).unwrap();
            let map = d
                .put_object(ROOT, format!("m{}", rng.below(4)), ObjType::Map)
                .unwrap();
            d.put(&map, "f", 1.5).unwrap();
            d.put(&map, "b", vec![0u8, 1, 2]).unwrap();
            d.put(&map, "s", "short").unwrap();
            d.put(&map, "t", ScalarValue::Timestamp(1)).unwrap();
            d.commit();
        }
        doc.merge(&mut other).unwrap();
    }
    doc
}

fn whole(bytes: &[u8]) -> Bound {
    let (bound, rest) = chunk::bound(bytes, LIMITS).expect("a chunk within the limits");
    assert!(rest.is_empty(), "one chunk");
    bound
}

#[test]
fn what_automerge_writes_is_counted_as_automerge_counts_it() {
    for seed in 0..4 {
        let mut doc = edited(seed);
        for mut change in doc.get_changes(&[]) {
            let raw = whole(change.raw_bytes());
            assert_eq!((raw.kind, raw.ops), (Kind::Change, change.len() as u64));
            assert_eq!(raw.actors, change.actors().count() as u64);
            let compressed = change.bytes().to_vec();
            if compressed[8] == 2 {
                let bound = whole(&compressed);
                assert_eq!(bound.kind, Kind::CompressedChange);
                assert_eq!(bound.ops, change.len() as u64);
            }
        }
        let stats = doc.stats();
        for saved in [doc.save(), doc.save_nocompress()] {
            let bound = whole(&saved);
            assert_eq!(bound.kind, Kind::Document);
            assert_eq!(bound.ops, stats.num_ops, "seed {seed}");
            assert_eq!(bound.changes, stats.num_changes, "seed {seed}");
            assert_eq!(bound.actors, stats.num_actors, "seed {seed}");
        }
        // Chunks concatenated: each in turn.
        let joined = [doc.save(), doc.save()].concat();
        let (_, rest) = chunk::bound(&joined, LIMITS).unwrap();
        assert_eq!(whole(rest).ops, stats.num_ops);
    }
}

#[test]
fn a_change_of_one_run_is_counted_from_its_run_lengths() {
    // What automerge reads of it, at a size it parses quickly.
    let crafted = testing::run_of_inserts(10_000, [7; 32]);
    let change = automerge::Change::from_bytes(crafted.clone()).expect("automerge reads it");
    assert_eq!(change.len(), 10_000);
    assert_eq!(whole(&crafted).ops, 10_000);
    // 2^40 operations in 140 bytes: refused from the first column's first run.
    let bomb = testing::run_of_inserts(1 << 40, [7; 32]);
    assert!(bomb.len() < 160, "{} bytes", bomb.len());
    let started = Instant::now();
    assert_eq!(chunk::bound(&bomb, LIMITS), Err(ChunkError::Rows));
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn deflated_data_is_inflated_into_a_bounded_buffer_only() {
    let mut doc = AutoCommit::new();
    let text = doc.put_object(ROOT, "text", ObjType::Text).unwrap();
    doc.splice_text(&text, 0, 0, &"x".repeat(200_000)).unwrap();
    doc.commit();
    let saved = doc.save();
    assert!(
        saved.len() < 4_096,
        "the document deflates: {} bytes",
        saved.len()
    );
    let tight = Limits {
        rows_max: LIMITS.rows_max,
        inflated_max: 100_000,
    };
    assert_eq!(chunk::bound(&saved, tight), Err(ChunkError::Inflates));
    let mut change = doc.get_changes(&[]).pop().unwrap();
    let compressed = change.bytes().to_vec();
    assert_eq!(compressed[8], 2, "a compressed change");
    assert_eq!(chunk::bound(&compressed, tight), Err(ChunkError::Inflates));
    assert_eq!(whole(&compressed).ops, 200_001);
}

#[test]
fn bytes_that_are_not_whole_chunks_are_malformed() {
    let saved = edited(1).save();
    for cut in [0, 3, 8, 9, 12, saved.len() / 2, saved.len() - 1] {
        assert!(chunk::bound(&saved[..cut], LIMITS).is_err(), "cut at {cut}");
    }
    let mut wrong = saved.clone();
    wrong[0] ^= 1;
    assert_eq!(chunk::bound(&wrong, LIMITS), Err(ChunkError::Malformed));
    wrong = saved;
    wrong[8] = 3;
    assert_eq!(chunk::bound(&wrong, LIMITS), Err(ChunkError::Kind));
}
