//! The vendored automerge's clock walk (`vendor/automerge/src/change_graph.rs`,
//! `calculate_clock_inner`): loading a document whose actors take turns caches one clock per
//! 16 changes, not one per change. As published, a walk that met a change's second parent (its
//! own actor's previous change) ran past its limit on nodes the cached clock it had merged
//! already held and cached a clock at each node of its frontier: changes x actors x 4 bytes
//! (here about 530 MB). It counts what is allocated with its own global allocator, so it is a test
//! binary of its own.

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ROOT};
use peak_alloc::PeakAlloc;

/// The system allocator, counting the bytes allocated now and the most since a reset: what
/// automerge holds, whatever the allocator keeps from earlier.
#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

const MIB: f64 = 1024.0 * 1024.0;

#[test]
fn a_history_of_2048_actors_taking_turns_loads_without_a_clock_per_change() {
    const CHANGES: usize = 65_536;
    const ACTORS: usize = 2_048;
    let actors: Vec<ActorId> = (0..ACTORS).map(|_| ActorId::random()).collect();
    let mut doc = AutoCommit::new();
    for i in 0..CHANGES {
        doc.set_actor(actors[i % ACTORS].clone());
        doc.put(ROOT, "x", i as i64).unwrap();
        doc.commit();
    }
    let saved = doc.save();
    let heads = doc.get_heads();
    drop(doc);
    ALLOCATOR.reset_peak_usage();
    let before = ALLOCATOR.current_usage();
    let mut loaded = AutoCommit::load(&saved).unwrap();
    let peak = ALLOCATOR.peak_usage();
    assert_eq!(loaded.get_heads(), heads);
    assert_eq!(loaded.get_changes(&[]).len(), CHANGES);
    // The cached clocks at one per 16 changes: 65,536 / 16 x 2,048 x 4 bytes = 32 MiB.
    let grew = (peak - before) as f64 / MIB;
    eprintln!("loading allocated up to {grew:.0} MiB at once");
    assert!(
        grew < 200.0,
        "loading allocated up to {grew:.0} MiB at once"
    );
}
