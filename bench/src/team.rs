//! W5, team editing: 20 devices edit 10 shared plans at once, and every edit's propagation to the
//! other devices is timed.
//!
//! The live WebSocket channel does not exist yet, so each device polls over HTTP: append a marker
//! to a plan, `sync` (the acknowledgement), look at the plan it watches, loop. A marker is
//! `~dDDeN~` (device DD's Nth edit). Each device watches one plan (2 devices per plan); when a
//! sync returns and the watched plan's narrative holds a marker the device had not seen, that is
//! the moment the edit reached it. Latency is that moment minus the moment the author's
//! acknowledgement (the answer to the sync that carried the edit) arrived at the author's device,
//! both `Instant`s in this process. A watcher whose whole sync finishes before the author has even
//! received its answer counts 0 and is reported in `seen_before_ack`.

use crate::harness::{mem, ms_since, percentile, round1, round2, sorted};
use crate::progress;
use casenote_client_core::{Device, HttpTransport, Transport, TransportError};
use casenote_protocol::record::Identity;
use casenote_protocol::wire::WhoAmI;
use casenote_protocol::CaseId;
use serde_json::{json, Value};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

type Marker = (u16, u32);

#[derive(Default)]
struct DeviceLog {
    acks: Vec<(Marker, Instant)>,
    seen: Vec<(Marker, Instant)>,
    sync_ms: Vec<f64>,
    edit_ms: f64,
    observe_ms: f64,
    requests: usize,
    bytes_up: usize,
    bytes_down: usize,
}

fn markers(text: &str) -> impl Iterator<Item = Marker> + '_ {
    text.split('~').filter_map(|tok| {
        let rest = tok.strip_prefix('d')?;
        let (d, e) = rest.split_once('e')?;
        Some((d.parse().ok()?, e.parse().ok()?))
    })
}

fn narrative(dev: &Device, case: CaseId) -> anyhow::Result<String> {
    let shown = dev.show(case)?;
    Ok(shown["plans"][0]["content"]["narrative"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// The device's HTTP transport, noting the moment each answer has arrived: for an edit's own
/// sync, the moment the server's acknowledgement reached the device.
struct Timed {
    inner: HttpTransport,
    answered: Cell<Option<Instant>>,
}

impl Transport for Timed {
    fn sync(&self, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let out = self.inner.sync(body);
        self.answered.set(Some(Instant::now()));
        out
    }
    fn whoami(&self) -> Result<WhoAmI, TransportError> {
        self.inner.whoami()
    }
}

fn edit_loop(
    j: usize,
    dev: Device,
    cases: Arc<Vec<CaseId>>,
    start: Arc<Barrier>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<DeviceLog> {
    let transport = Timed {
        inner: dev.http_transport()?,
        answered: Cell::new(None),
    };
    let watch = cases[j % cases.len()];
    let mut log = DeviceLog::default();
    let mut seen: HashSet<Marker> = HashSet::new();
    let me = j as u16;
    start.wait();
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let case = cases[(j + n as usize) % cases.len()];
        let t = Instant::now();
        dev.plan_append(case, &format!(" ~d{me:02}e{n}~"))?;
        log.edit_ms += ms_since(t);
        let t = Instant::now();
        let r = dev.sync_with(&transport)?;
        let returned = Instant::now();
        log.sync_ms.push(ms_since(t));
        anyhow::ensure!(r.rejections.is_empty(), "W5: an edit was refused");
        let acked = transport.answered.get().unwrap_or(returned);
        log.acks.push(((me, n), acked));
        log.requests += r.requests;
        log.bytes_up += r.bytes_up;
        log.bytes_down += r.bytes_down;
        let t = Instant::now();
        if r.changes_down > 0 {
            for m in markers(&narrative(&dev, watch)?) {
                if m.0 != me && seen.insert(m) {
                    log.seen.push((m, returned));
                }
            }
        }
        log.observe_ms += ms_since(t);
        n += 1;
    }
    Ok(log)
}

/// What a team-editing run measured.
pub struct Team {
    pub devices: usize,
    pub plans: usize,
    pub secs: f64,
    pub edits: usize,
    pub samples: usize,
    pub seen_before_ack: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub sync_p50_ms: f64,
    pub sync_p99_ms: f64,
    pub edit_ms: f64,
    pub sync_ms: f64,
    pub observe_ms: f64,
    pub requests: usize,
    pub bytes_up: usize,
    pub bytes_down: usize,
}

/// Runs `tokens.len()` devices (all in one team) editing `plans` shared plans for `secs`.
pub fn run(
    url: &str,
    tokens: &[String],
    plans: usize,
    secs: f64,
    dir: &Path,
) -> anyhow::Result<Team> {
    let devices: Vec<Device> = tokens
        .iter()
        .enumerate()
        .map(|(j, token)| -> anyhow::Result<Device> {
            let dev = Device::open(&dir.join(format!("w5-device-{j}")))?;
            dev.login(url, token)?;
            Ok(dev)
        })
        .collect::<anyhow::Result<_>>()?;
    let mut cases = Vec::with_capacity(plans);
    for i in 0..plans {
        cases.push(devices[0].case_new(&Identity {
            name: format!("Shared Plan Person {i}"),
            ..Default::default()
        })?);
    }
    devices[0].sync()?;
    for dev in &devices {
        dev.sync()?;
    }
    progress!(
        "W5: {} devices hold {} shared plans; editing for {secs} s",
        devices.len(),
        plans
    );
    let cases = Arc::new(cases);
    let start = Arc::new(Barrier::new(devices.len() + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = devices
        .into_iter()
        .enumerate()
        .map(|(j, dev)| {
            let (cases, start, stop) = (cases.clone(), start.clone(), stop.clone());
            std::thread::spawn(move || edit_loop(j, dev, cases, start, stop))
        })
        .collect();
    start.wait();
    let began = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for h in handles {
        logs.push(
            h.join()
                .map_err(|_| anyhow::anyhow!("a W5 device thread panicked"))??,
        );
    }
    let elapsed = began.elapsed().as_secs_f64();

    let acks: HashMap<Marker, Instant> = logs.iter().flat_map(|l| l.acks.clone()).collect();
    let mut latencies = Vec::new();
    let mut seen_before_ack = 0;
    for (m, at) in logs.iter().flat_map(|l| l.seen.iter()) {
        let Some(acked) = acks.get(m) else { continue };
        match at.checked_duration_since(*acked) {
            Some(d) => latencies.push(d.as_secs_f64() * 1000.0),
            None => {
                seen_before_ack += 1;
                latencies.push(0.0);
            }
        }
    }
    let latencies = sorted(latencies);
    let syncs = sorted(logs.iter().flat_map(|l| l.sync_ms.clone()).collect());
    Ok(Team {
        devices: tokens.len(),
        plans,
        secs: elapsed,
        edits: acks.len(),
        samples: latencies.len(),
        seen_before_ack,
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        sync_p50_ms: percentile(&syncs, 50.0),
        sync_p99_ms: percentile(&syncs, 99.0),
        edit_ms: logs.iter().map(|l| l.edit_ms).sum(),
        sync_ms: logs.iter().map(|l| l.sync_ms.iter().sum::<f64>()).sum(),
        observe_ms: logs.iter().map(|l| l.observe_ms).sum(),
        requests: logs.iter().map(|l| l.requests).sum(),
        bytes_up: logs.iter().map(|l| l.bytes_up).sum(),
        bytes_down: logs.iter().map(|l| l.bytes_down).sum(),
    })
}

impl Team {
    /// The JSON fields common to W5 and W6's editing phase.
    pub fn fields(&self) -> serde_json::Map<String, Value> {
        let busy = (self.edit_ms + self.sync_ms + self.observe_ms).max(1.0);
        let v = json!({
            "transport": "http-poll",
            "devices": self.devices,
            "plans": self.plans,
            "duration_s": round2(self.secs),
            "edits": self.edits,
            "edits_per_s": round1(self.edits as f64 / self.secs),
            "runs": 1,
            "wall_ms": round1(self.secs * 1000.0),
            "p50_ms": round1(self.p50_ms),
            "p99_ms": round1(self.p99_ms),
            "latency_samples": self.samples,
            "seen_before_ack": self.seen_before_ack,
            "sync_p50_ms": round1(self.sync_p50_ms),
            "sync_p99_ms": round1(self.sync_p99_ms),
            "device_time_split": {
                "edit": round2(self.edit_ms / busy),
                "sync": round2(self.sync_ms / busy),
                "observe": round2(self.observe_ms / busy),
            },
            "requests": self.requests,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "bytes_up_per_edit": self.bytes_up / self.edits.max(1),
            "bytes_down_per_edit": self.bytes_down / self.edits.max(1),
        });
        match v {
            Value::Object(m) => m,
            _ => unreachable!("a JSON object literal"),
        }
    }
}

/// W5 on its own server: a new team of `devices` workers and `plans` shared plans.
pub fn w5(devices: usize, plans: usize, secs: f64) -> anyhow::Result<Value> {
    let server = crate::harness::InProcessServer::start()?;
    let tokens = crate::harness::provision_team(server.store.as_ref(), "Bench Team W5", devices)?;
    let team = run(&server.url, &tokens, plans, secs, server.scratch())?;
    let mut line = serde_json::Map::new();
    line.insert("workload".into(), "W5".into());
    line.insert(
        "what".into(),
        "devices loop: append a marker to a shared plan, sync, read the watched plan; latency = ack to first sync of another device that returns it"
            .into(),
    );
    line.extend(team.fields());
    line.insert("server_rss_mb".into(), mem(None).rss_mb.into());
    line.insert(
        "client_rss_note".into(),
        "server and all devices share this process: server_rss_mb is the whole process".into(),
    );
    server.stop();
    Ok(Value::Object(line))
}
