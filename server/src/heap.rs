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
//! Also [`calm_purging`]: jemalloc's background thread, which gives freed pages back to the
//! system, runs at the lowest priority, so that giving memory back never holds up a request.
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

/// The name jemalloc gives its background threads.
const PURGING_THREAD: &str = "jemalloc_bg_thd";

/// Sets this process's jemalloc background threads to the lowest priority (nice 19); returns how
/// many it set. Why: they give freed pages back to the system (`dirty_decay_ms` in
/// `.cargo/config.toml`, for the memory bound) in runs of 0.5-5.5 ms, and a request's thread
/// woken on the core one of them held waited for the rest of its run: `perf sched` of W3 at a
/// million documents, just after the first pull freed its pages, showed it the most frequent
/// thing running while a sync's threads waited to run. At nice 19 a thread that wakes takes the
/// core from it at once; with nothing else to run it purges as before. jemalloc starts them
/// when the process starts (before `main`), so one call at start finds them; on a system
/// without `/proc` it sets none.
pub fn calm_purging() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == PURGING_THREAD)
        })
        .filter_map(|t| t.file_name().to_str()?.parse::<i32>().ok())
        .filter(|tid| lowest_priority(*tid))
        .count()
}

#[cfg(unix)]
fn lowest_priority(tid: i32) -> bool {
    use rustix::process::{setpriority_process, Pid};
    // On Linux a thread's priority is its own: `setpriority` with a thread id sets that thread.
    Pid::from_raw(tid).is_some_and(|pid| setpriority_process(Some(pid), 19).is_ok())
}

#[cfg(not(unix))]
fn lowest_priority(_tid: i32) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value of thread `tid` of this process, from its `stat` (the 19th field); `None`
    /// once the thread is gone (other tests' threads come and go).
    fn nice_of(tid: &str) -> Option<i64> {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
        let after_name = &stat[stat.rfind(')')? + 2..];
        after_name.split(' ').nth(16)?.parse().ok()
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn jemallocs_purging_thread_is_set_to_the_lowest_priority_and_no_other() {
        let before: Vec<(String, String, i64)> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter_map(|t| {
                let tid = t.file_name().to_string_lossy().into_owned();
                let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
                let nice = nice_of(&tid)?;
                Some((tid, comm.trim().to_string(), nice))
            })
            .collect();
        let purging = before.iter().filter(|t| t.1 == PURGING_THREAD).count();
        assert!(
            purging >= 1,
            "jemalloc's background thread runs: {before:?}"
        );
        assert_eq!(calm_purging(), purging);
        for (tid, comm, nice) in &before {
            let Some(now) = nice_of(tid) else { continue };
            match comm == PURGING_THREAD {
                true => assert_eq!(now, 19, "{tid} {comm}"),
                false => assert_eq!(now, *nice, "{tid} {comm}: only jemalloc's threads move"),
            }
        }
    }

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
