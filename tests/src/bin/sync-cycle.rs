//! Measures one sync cycle of a device holding many documents, against a real server on loopback
//! with a real sled store: idle (nothing new) and with some documents changed.
//!
//! `cargo run --release -p casenote-tests --bin sync-cycle -- [DOCS] [CHANGED]` (defaults 1000 20).
//! Prints one JSON line per scenario. This is a measurement, not a test; the benchmark suite
//! (bench/) is where the full workloads live.

use casenote_client_core::Device;
use casenote_protocol::record::{Identity, NoteKind};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let docs = args.first().copied().unwrap_or(1000);
    let changed = args.get(1).copied().unwrap_or(20);
    let tmp = tempfile::tempdir()?;

    let store = casenote_server::open(&tmp.path().join("server"))?;
    let demo = casenote_server::cli::demo::load(store.as_ref(), casenote_server::now_ms())?;
    let token = demo
        .tokens
        .iter()
        .find(|t| t.staff == "Priya Shah")
        .expect("demo staff")
        .token
        .clone();
    let rt = tokio::runtime::Runtime::new()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url = format!("http://{}", listener.local_addr()?);
    rt.spawn(casenote_server::run(
        listener,
        store,
        casenote_server::Config::default(),
        std::future::pending(),
    ));

    // A device with `docs` documents of its own: cases (case + plan) and notes.
    let dev = Device::open(
        &tmp.path().join("device"),
        &casenote_client_core::StoreKey::generate(),
    )?;
    dev.login(&url, &token)?;
    dev.sync()?;
    let mut cases = Vec::new();
    let held = dev.status()?.docs_held;
    while dev.status()?.docs_held < docs.max(held + 2) {
        let case = dev.case_new(&Identity {
            name: format!("Measure {}", cases.len()),
            ..Default::default()
        })?;
        dev.note_add(
            case,
            NoteKind::Visit,
            "A home visit: kitchen, stairs and mobility reviewed.",
            None,
        )?;
        cases.push(case);
    }
    let seed = dev.sync()?;
    let held = dev.status()?.docs_held;

    let mut idle_ms = Vec::new();
    let mut idle = None;
    for _ in 0..21 {
        let t = Instant::now();
        let r = dev.sync()?;
        idle_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        idle = Some(r);
    }
    let idle = idle.expect("ran");
    println!(
        "{}",
        serde_json::json!({"scenario": "idle", "docs_held": held, "median_ms": median(idle_ms),
            "requests": idle.requests, "bytes_up": idle.bytes_up, "bytes_down": idle.bytes_down})
    );

    let mut changed_ms = Vec::new();
    let mut last = None;
    for round in 0..11 {
        for case in cases.iter().take(changed) {
            dev.plan_append(*case, &format!(" Review {round}: agreed with the person."))?;
        }
        let t = Instant::now();
        let r = dev.sync()?;
        changed_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        last = Some(r);
    }
    let r = last.expect("ran");
    println!(
        "{}",
        serde_json::json!({"scenario": "changed", "docs_held": held, "docs_changed": r.docs_up,
            "median_ms": median(changed_ms), "requests": r.requests, "bytes_up": r.bytes_up, "bytes_down": r.bytes_down})
    );
    eprintln!(
        "seeded {} documents in {} requests ({} bytes up)",
        held, seed.requests, seed.bytes_up
    );
    Ok(())
}
