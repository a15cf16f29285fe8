//! W3, idle reconnect: a device holding many documents syncs with nothing new, many times.
//!
//! The documents are seeded on the server ([`crate::seed`]) for a team, a colleague's new device
//! pulls them all once (reported as `pull_ms`, not part of the figure), then every measured
//! `Device::sync` is the real thing: a fresh HTTP connection (the device builds its transport per
//! sync, as the CLI does), one request carrying the cursor, the server's authentication and empty
//! log scan, and the device's durable bookkeeping of the answer.

use crate::harness::{self, mem, ms_since, percentile, round1, round2, sorted, InProcessServer};
use crate::progress;
use crate::seed::{self, Seeder};
use casenote_client_core::{Device, HttpTransport};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Instant;

/// What one series of idle syncs measured.
pub struct Idle {
    pub docs_held: usize,
    pub pull_ms: f64,
    pub pull_requests: usize,
    pub pull_bytes_down: usize,
    pub runs: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: usize,
    pub bytes_up: usize,
    pub bytes_down: usize,
}

/// Opens a device in `dir`, pulls everything, then runs `runs` idle syncs (after 3 unmeasured).
pub fn run(url: &str, token: &str, dir: &Path, runs: usize) -> anyhow::Result<Idle> {
    run_on(&[url.to_string()], token, dir, runs)
}

/// [`run`] against several server nodes on one store: the device signs in through the first
/// and its idle syncs take turns over the nodes (sync `i` through node `i % urls.len()`, each
/// on a fresh transport, as `Device::sync` makes one).
pub fn run_on(urls: &[String], token: &str, dir: &Path, runs: usize) -> anyhow::Result<Idle> {
    anyhow::ensure!(!urls.is_empty(), "W3 needs at least one node");
    let dev = Device::open(dir, &casenote_client_core::StoreKey::generate())?;
    dev.login(&urls[0], token)?;
    let sync = |i: usize| dev.sync_with(&HttpTransport::new(&urls[i % urls.len()], token));
    let started = Instant::now();
    let pull = dev.sync()?;
    let pull_ms = ms_since(started);
    let docs_held = dev.status()?.docs_held;
    progress!("W3: the device pulled {docs_held} documents in {pull_ms:.0} ms");
    for i in 0..3 {
        sync(i)?;
    }
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for i in 0..runs {
        let t = Instant::now();
        let r = sync(i)?;
        times.push(ms_since(t));
        anyhow::ensure!(r.changes_down == 0, "W3: an idle sync brought changes");
        last = Some(r);
    }
    let r = last.expect("at least one run");
    let times = sorted(times);
    Ok(Idle {
        docs_held,
        pull_ms,
        pull_requests: pull.requests,
        pull_bytes_down: pull.bytes_down,
        runs,
        p50_ms: percentile(&times, 50.0),
        p99_ms: percentile(&times, 99.0),
        requests: r.requests,
        bytes_up: r.bytes_up,
        bytes_down: r.bytes_down,
    })
}

impl Idle {
    /// The JSON fields common to W3 and W6's idle phase.
    pub fn fields(&self) -> serde_json::Map<String, Value> {
        let v = json!({
            "docs_held": self.docs_held,
            "runs": self.runs,
            "wall_ms": round2(self.p50_ms),
            "p50_ms": round2(self.p50_ms),
            "p99_ms": round2(self.p99_ms),
            "requests": self.requests,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "pull_ms": round1(self.pull_ms),
            "pull_requests": self.pull_requests,
            "pull_bytes_down": self.pull_bytes_down,
        });
        match v {
            Value::Object(m) => m,
            _ => unreachable!("a JSON object literal"),
        }
    }
}

/// Cases of 20 notes (22 documents each) to reach at least `docs` documents.
pub fn cases_for(docs: usize) -> usize {
    docs.div_ceil(crate::caseload::NOTES_PER_CASE + 2)
}

/// W3's store: `docs` documents seeded for Locality Team North (the demo must be loaded);
/// returns the token of the colleague's device that will hold them.
pub fn seed_w3(store: &dyn casenote_server::Store, docs: usize) -> anyhow::Result<String> {
    let seeder = Seeder::new(
        store,
        harness::principal(
            store,
            &harness::issue_token(store, "Priya Shah", "w3 seeder")?,
        )?,
    )?;
    let started = Instant::now();
    let stored = seed::seed_cases(
        store,
        &seeder,
        cases_for(docs),
        crate::caseload::NOTES_PER_CASE,
        3,
    )?;
    progress!(
        "W3: seeded {stored} documents on the server in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    harness::issue_token(store, "Ruth Adebayo", "w3 device")
}

/// W3 on its own server: `docs` documents seeded for Locality Team North, held by a new device.
pub fn w3(docs: usize, runs: usize) -> anyhow::Result<Value> {
    let server = InProcessServer::start()?;
    let token = seed_w3(server.store.as_ref(), docs)?;
    let idle = run(
        &server.url,
        &token,
        &server.scratch().join("w3-device"),
        runs,
    )?;
    let mut line = serde_json::Map::new();
    line.insert("workload".into(), "W3".into());
    line.insert(
        "what".into(),
        "idle Device::sync (nothing new) of a device holding the documents; median and p99 of many"
            .into(),
    );
    line.extend(idle.fields());
    line.insert("server_rss_mb".into(), mem(None).rss_mb.into());
    line.insert(
        "client_rss_note".into(),
        "server and device share this process: server_rss_mb is the whole process".into(),
    );
    server.stop();
    Ok(Value::Object(line))
}
