//! What a piece of work left allocated: [`held_by`], from jemalloc's per-thread counts of the
//! bytes a thread allocated and freed (`thread.allocatedp` and `thread.deallocatedp`, through
//! tikv-jemalloc-ctl; jemalloc keeps them when built with its `stats`).
//!
//! Why: the cache of validated states (`validate::resident`) bounds memory by weighing each
//! state, and a figure per operation fits some states and not others. automerge 0.12 holds a
//! document built by applying changes at 74 to 700 bytes an operation depending on its shape,
//! and the same document loaded from its save at 1 to 310 (measured: a W5L plan of 34,000
//! operations, 324 bytes an operation built and 15.6 loaded; `limits::RESIDENT_BYTES_PER_OP`).
//! A state loaded from its save is weighed by what its load left allocated.
//!
//! The counts are the calling thread's, so they say what `f` left allocated when `f` runs on
//! one thread and frees nothing another thread allocated, as a load does. In a process whose
//! global allocator is not jemalloc (the server binary's is, and so are the end-to-end tests',
//! the benchmark's and this crate's unit tests') the counts do not move, and [`held_by`] says
//! so with `None`: the cache then weighs by operations, as before.

use tikv_jemalloc_ctl::thread::{allocatedp, deallocatedp};

/// `f`'s result, and the bytes this thread held allocated after it less before it, in the size
/// classes jemalloc handed out (up to a quarter more than was asked) (`None` when
/// that is not known: jemalloc's counts are not there, or `f` allocated nothing through them,
/// or it freed more than it kept).
pub fn held_by<T>(f: impl FnOnce() -> T) -> (T, Option<u64>) {
    let (Ok(allocated), Ok(freed)) = (allocatedp::read(), deallocatedp::read()) else {
        return (f(), None);
    };
    let (allocated_before, freed_before) = (allocated.get(), freed.get());
    let out = f();
    let allocated = allocated.get().wrapping_sub(allocated_before);
    let freed = freed.get().wrapping_sub(freed_before);
    let held = allocated.checked_sub(freed).filter(|_| allocated > 0);
    (out, held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_closure_leaves_allocated_is_counted_and_what_it_frees_is_not() {
        let (kept, held) = held_by(|| {
            let temporary = vec![1u8; 3 << 20];
            drop(temporary);
            vec![7u8; 1 << 20]
        });
        // jemalloc counts the size classes it hands out (up to a quarter more than was asked;
        // a mebibyte is one).
        assert_eq!(
            held,
            Some(1 << 20),
            "the kept megabyte, not the freed three"
        );
        let (_, freed) = held_by(|| drop(kept));
        assert_eq!(freed, None, "freeing leaves nothing held");
        let (grown, held) = held_by(|| {
            let mut v: Vec<u64> = Vec::with_capacity(10);
            v.extend(0..50_000);
            v
        });
        let held = held.expect("jemalloc counts");
        let bytes = (grown.capacity() * 8) as u64;
        assert!(
            (bytes..=bytes * 5 / 4).contains(&held),
            "what it grew to, through reallocations: {held} for {bytes}"
        );
    }
}
