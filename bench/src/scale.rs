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

/// W6's sizes and where its store lives.
pub struct Scale {
    /// Documents stored (the W3 device's share included).
    pub docs: usize,
    /// Documents of the W3 device's team: what that device holds.
    pub held: usize,
    pub idle_runs: usize,
    pub edit_secs: f64,
    /// Keep the seeded store here and reuse it in later runs (`--store DIR`); `None`: a temp dir.
    pub keep: Option<std::path::PathBuf>,
}

/// Seeds `s.docs` documents into the store in `data` (the demo loaded first), the W3 device's
/// team first: one transaction per batch of cases ([`seed::bulk_cases`]), with progress.
/// Returns the documents stored and the seconds it took.
fn seed_store(data: &Path, s: &Scale) -> anyhow::Result<(usize, f64)> {
    let store = casenote_server::open(data)?;
    let st: &dyn Store = store.as_ref();
    casenote_server::cli::demo::load(st, casenote_server::now_ms())?;
    let started = Instant::now();
    let mut stored = 0;
    let mut shown = 0;
    for (i, owner) in OWNERS.iter().enumerate() {
        let share = if i == 0 {
            s.held
        } else {
            s.docs.saturating_sub(s.held).div_ceil(OWNERS.len() - 1)
        };
        let seeder = Seeder::new(
            st,
            harness::principal(st, &harness::issue_token(st, owner, "w6 seeder")?)?,
        )?;
        let before = stored;
        let mut report = |n: usize| {
            let now = before + n;
            if now >= shown + 25_000 {
                shown = now;
                let secs = started.elapsed().as_secs_f64();
                let eta = (s.docs.saturating_sub(now)) as f64 * secs / now.max(1) as f64;
                progress!(
                    "W6: {now} of {} documents stored ({secs:.0} s, {:.0}/s, about {eta:.0} s to go)",
                    s.docs,
                    now as f64 / secs.max(0.001)
                );
            }
        };
        let cases = idle::cases_for(share);
        let notes = crate::caseload::NOTES_PER_CASE;
        stored += seed::bulk_cases(st, &seeder, (cases, notes, 60 + i as u64), &mut report)?;
    }
    st.flush()?;
    let secs = started.elapsed().as_secs_f64();
    progress!("W6: {stored} documents stored in {secs:.0} s");
    Ok((stored, secs))
}

/// Tokens for this run: a new device of a colleague in the W3 team, and a new team of 20 for W5
/// (named per run, so that a kept store takes another run).
fn enrol(data: &Path) -> anyhow::Result<(String, Vec<String>)> {
    let store = casenote_server::open(data)?;
    let st: &dyn Store = store.as_ref();
    let w3 = harness::issue_token(st, "Ruth Adebayo", "w6 device")?;
    let team = format!(
        "Bench Team W6 {}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let w5 = harness::provision_team(st, &team, 20)?;
    st.flush()?;
    Ok((w3, w5))
}

/// Milliseconds `casenote_server::open` takes on the store in `data`, and its last sequence.
fn timed_open(data: &Path) -> anyhow::Result<(f64, u64)> {
    let t = Instant::now();
    let store = casenote_server::open(data)?;
    let ms = harness::ms_since(t);
    Ok((ms, store.last_seq()?.0))
}

/// W6 over a store of `s.docs` documents: seeded (or found, with `keep`), reopened, then served
/// by a child process while `s.held` of them are pulled and synced idle by one device (W3) and
/// 20 devices edit for `s.edit_secs` (W5).
pub fn w6(s: &Scale, mode: team::Mode) -> anyhow::Result<Value> {
    let tmp = tempfile::tempdir()?;
    let root = s.keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let data = root.join("server");
    let info_path = root.join("w6-seeded.json");
    let (seeded_docs, seed_secs, open_after_seed_ms) =
        if casenote_server::store::sled::exists(&data) {
            let info: Value = serde_json::from_str(&std::fs::read_to_string(&info_path)?)?;
            progress!("W6: reusing the store in {} ({info})", data.display());
            let (asked, held) = (info["asked"].as_u64(), info["held"].as_u64());
            anyhow::ensure!(
                asked.is_none_or(|n| n == s.docs as u64) && held == Some(s.held as u64),
                "the kept store was seeded for --docs {asked:?} --held {held:?}, not {} and {}",
                s.docs,
                s.held
            );
            (
                info["docs"].as_u64().unwrap_or(0) as usize,
                info["seed_s"].clone(),
                Value::Null,
            )
        } else {
            std::fs::create_dir_all(&root)?;
            progress!("W6: storing {} documents", s.docs);
            let (stored, secs) = seed_store(&data, s)?;
            std::fs::write(
                &info_path,
                json!({"docs": stored, "asked": s.docs, "held": s.held, "seed_s": round1(secs)})
                    .to_string(),
            )?;
            // The first open after a long write session replays sled's log since its last open.
            let (ms, _) = timed_open(&data)?;
            progress!("W6: the first open after seeding took {ms:.0} ms");
            (stored, round1(secs).into(), round1(ms).into())
        };
    let (w3_token, w5_tokens) = enrol(&data)?;
    let (open_ms, log_entries) = timed_open(&data)?;
    progress!("W6: the store opens in {open_ms:.0} ms ({log_entries} log entries)");
    let store_mb = round1(dir_bytes(&data) as f64 / 1_048_576.0);

    let started = Instant::now();
    let server = ChildServer::start(&data)?;
    let server_start_ms = harness::ms_since(started);
    let pid = Some(server.pid());
    std::thread::sleep(std::time::Duration::from_millis(200));
    let at_start = mem(pid);
    let sampler = RssSampler::start(pid);
    let idle = idle::run(
        &server.url,
        &w3_token,
        &tmp.path().join("w6-w3-device"),
        s.idle_runs,
    )?;
    let after_w3 = mem(pid);
    // `--w5-secs 0` leaves W5 out: at a million documents each of its 20 new devices' first
    // sync walks the whole log (about 40 s of server work each).
    let team = if s.edit_secs > 0.0 {
        Some(team::run(
            &server.url,
            &w5_tokens,
            10,
            s.edit_secs,
            tmp.path(),
            mode,
        )?)
    } else {
        None
    };
    let peak_sampled = sampler.finish();
    let end = mem(pid);
    server.stop()?;

    let mut w3 = idle.fields();
    w3.insert("server_rss_mb".into(), after_w3.rss_mb.into());
    let w5 = team.map(|team| {
        let mut w5 = team.fields();
        w5.insert("server_rss_mb".into(), end.rss_mb.into());
        w5
    });
    Ok(json!({
        "workload": "W6",
        "what": "server (child process) over a store of many documents serving W3 then a short W5; memory from /proc/<server pid>/status",
        "docs": seeded_docs,
        "docs_held_by_w3_team": s.held,
        "log_entries": log_entries,
        "store_on_disk_mb": store_mb,
        "seed_s": seed_secs,
        "open_after_seed_ms": open_after_seed_ms,
        "open_ms": round1(open_ms),
        "server_start_ms": round1(server_start_ms),
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
