//! W6, scale: a store holding 100,000 documents, and the server's resident memory while it serves
//! W3 (a device holding 10,000 of them reconnecting idle) and a short W5.
//!
//! The store is seeded in this process through `sync::push` ([`crate::seed`]), spread over six
//! demo teams so that Locality Team North holds a tenth of it. Then the store is closed and served
//! by a child process (this binary's `serve-store` mode), so that `server_rss_mb` is the server's
//! memory alone: not the seeding's, not the devices'.

use crate::harness::{self, mem, round1, ChildServer, RssSampler};
use crate::progress;
use crate::seed::{self, Seeder};
use crate::{idle, team};
use casenote_server::Store;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Instant;

/// Demo staff whose teams hold the rest of the store (the first is the W3 device's team).
const OWNERS: &[&str] = &[
    "Priya Shah",
    "Sam Kowalski",
    "Grace Liu",
    "Owen Hughes",
    "Dr Helen Marsh",
    "Lena Fischer",
];

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// W6: `docs` documents stored, `held` of them readable by the W3 device; `idle_runs` idle syncs
/// and `edit_secs` of team editing against the child server.
pub fn w6(
    docs: usize,
    held: usize,
    idle_runs: usize,
    edit_secs: f64,
    mode: team::Mode,
) -> anyhow::Result<Value> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("server");
    let (w3_token, w5_tokens, log_entries) = {
        let store = casenote_server::open(&data)?;
        let s: &dyn Store = store.as_ref();
        casenote_server::cli::demo::load(s, casenote_server::now_ms())?;
        let started = Instant::now();
        let mut stored = 0;
        for (i, owner) in OWNERS.iter().enumerate() {
            let share = if i == 0 {
                held
            } else {
                docs.saturating_sub(held).div_ceil(OWNERS.len() - 1)
            };
            let seeder = Seeder::new(
                s,
                harness::principal(s, &harness::issue_token(s, owner, "w6 seeder")?)?,
            )?;
            stored += seed::seed_cases(
                s,
                &seeder,
                idle::cases_for(share),
                crate::caseload::NOTES_PER_CASE,
                60 + i as u64,
            )?;
            progress!(
                "W6: {stored} documents stored ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
        }
        let w3 = harness::issue_token(s, "Ruth Adebayo", "w6 device")?;
        let w5 = harness::provision_team(s, "Bench Team W6", 20)?;
        s.flush()?;
        (w3, w5, s.last_seq()?.0)
    };
    let stored_docs = {
        // Count what the store holds, from a fresh open (the seeding store is closed above).
        let store = casenote_server::open(&data)?;
        let n = store.last_seq()?.0;
        anyhow::ensure!(n == log_entries, "the store lost changes on reopen");
        n
    };
    let store_mb = round1(dir_bytes(&data) as f64 / 1_048_576.0);

    let server = ChildServer::start(&data)?;
    let pid = Some(server.pid());
    std::thread::sleep(std::time::Duration::from_millis(200));
    let at_start = mem(pid);
    let sampler = RssSampler::start(pid);
    let idle = idle::run(
        &server.url,
        &w3_token,
        &tmp.path().join("w6-w3-device"),
        idle_runs,
    )?;
    let after_w3 = mem(pid);
    let team = team::run(&server.url, &w5_tokens, 10, edit_secs, tmp.path(), mode)?;
    let peak_sampled = sampler.finish();
    let end = mem(pid);
    server.stop()?;

    let mut w3 = idle.fields();
    w3.insert("server_rss_mb".into(), after_w3.rss_mb.into());
    let mut w5 = team.fields();
    w5.insert("server_rss_mb".into(), end.rss_mb.into());
    Ok(json!({
        "workload": "W6",
        "what": "server (child process) over a store of many documents serving W3 then a short W5; memory from /proc/<server pid>/status",
        "docs": docs,
        "log_entries": stored_docs,
        "store_on_disk_mb": store_mb,
        "runs": 1,
        "wall_ms": w3.get("wall_ms").cloned().unwrap_or(Value::Null),
        "p50_ms": w3.get("p50_ms").cloned().unwrap_or(Value::Null),
        "p99_ms": w3.get("p99_ms").cloned().unwrap_or(Value::Null),
        "requests": w3.get("requests").cloned().unwrap_or(Value::Null),
        "bytes_up": w3.get("bytes_up").cloned().unwrap_or(Value::Null),
        "bytes_down": w3.get("bytes_down").cloned().unwrap_or(Value::Null),
        "server_rss_mb": end.rss_mb,
        "server_rss_at_start_mb": at_start.rss_mb,
        "server_rss_after_w3_mb": after_w3.rss_mb,
        "server_rss_peak_mb": end.hwm_mb.max(peak_sampled),
        "client_rss_note": "server_rss_* is the server process alone; bench_process_rss_mb is the devices and the seeding",
        "bench_process_rss_mb": mem(None).rss_mb,
        "w3": w3,
        "w5": w5,
    }))
}
