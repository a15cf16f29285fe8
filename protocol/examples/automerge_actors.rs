//! Measures what loading a document of many actors costs automerge (vendor/README.md, "the clock
//! walk"): `make CHANGES ACTORS FILE` saves a document of CHANGES one-op changes whose ACTORS
//! actors take turns; `load FILE` loads it and prints the time. Run each in its own process and
//! read the peak memory of the load from `/usr/bin/time -f %M`:
//!
//! ```text
//! cargo build --release -p casenote-protocol --example automerge_actors
//! target/release/examples/automerge_actors make 65536 2048 /tmp/doc
//! target/release/examples/automerge_actors load /tmp/doc
//! ```

use automerge::{transaction::Transactable, ActorId, AutoCommit, ReadDoc, ROOT};
use peak_alloc::PeakAlloc;
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["make", changes, actors, file] => {
            let (changes, actors) = (number(changes), number(actors));
            let ids: Vec<ActorId> = (0..actors).map(|_| ActorId::random()).collect();
            let mut doc = AutoCommit::new();
            for i in 0..changes {
                doc.set_actor(ids[i % actors].clone());
                doc.put(ROOT, "x", i as i64).expect("a put");
                doc.commit();
            }
            std::fs::write(file, doc.save()).expect("write the document");
        }
        ["load", file] => {
            let bytes = std::fs::read(file).expect("read the document");
            ALLOCATOR.reset_peak_usage();
            let before = ALLOCATOR.current_usage();
            let started = Instant::now();
            let doc = AutoCommit::load(&bytes).expect("a document");
            let took = started.elapsed();
            let stats = doc.stats();
            let mib = |b: usize| (b - before) as f64 / (1024.0 * 1024.0);
            println!(
                "loaded {} changes ({} ops) by {} actors in {took:?}: {:.1} MiB held, {:.1} MiB at most",
                stats.num_changes,
                stats.num_ops,
                stats.num_actors,
                mib(ALLOCATOR.current_usage()),
                mib(ALLOCATOR.peak_usage()),
            );
        }
        _ => {
            eprintln!("usage: automerge_actors make CHANGES ACTORS FILE | load FILE");
            std::process::exit(2);
        }
    }
}

fn number(s: &str) -> usize {
    s.parse().ok().filter(|&n| n > 0).unwrap_or_else(|| {
        eprintln!("not a positive number: {s}");
        std::process::exit(2)
    })
}
