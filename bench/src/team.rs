//! W5, team editing: 20 devices edit 10 shared plans at once, and every edit's propagation to the
//! other devices is timed.
//!
//! Two modes. **websocket** (the default): each device listens on its own live channel
//! (`GET /v1/live`, `casenote_client_core::live`) and edits at a steady pace (one edit every
//! `edit_interval`, devices staggered): append a marker to a plan and `sync` (the
//! acknowledgement); between edits, wait for a live event and `sync` when one arrives (an event
//! whose sequence an earlier event-triggered sync already covered is skipped). **http-poll**
//! (`W5 --http-poll`, the variant before the live channel existed): each device loops as fast
//! as it can: append a marker to a plan, `sync`, look at the plan it watches, loop; other
//! devices' edits arrive with its own syncs. A marker is
//! `~dDDeN~` (device DD's Nth edit). Each device watches one plan (2 devices per plan); when a
//! sync returns and the watched plan's narrative holds a marker the device had not seen, that is
//! the moment the edit reached it. Latency is that moment minus the moment the author's
//! acknowledgement (the answer to the sync that carried the edit) arrived at the author's device,
//! both `Instant`s in this process. A watcher whose whole sync finishes before the author has even
//! received its answer counts 0 and is reported in `seen_before_ack`.

use crate::harness::{mem, ms_since, percentile, round1, round2, sorted};
use crate::progress;
use casenote_client_core::{live, Device, HttpTransport, Transport, TransportError};
use casenote_protocol::record::Identity;
use casenote_protocol::wire::WhoAmI;
use casenote_protocol::{CaseId, Seq};
use serde_json::{json, Value};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

type Marker = (u16, u32);

/// How devices learn of each other's edits.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Every device edits and syncs in a tight loop (no live channel).
    HttpPoll,
    /// Every device edits once per `edit_interval` and syncs when its live channel says so.
    WebSocket { edit_interval: Duration },
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::HttpPoll => "http-poll",
            Mode::WebSocket { .. } => "websocket",
        }
    }
}

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
    events: usize,
    event_syncs: usize,
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

/// One device's part: its store, its place, what it has seen.
struct Editor {
    j: usize,
    dev: Device,
    transport: Timed,
    watch: CaseId,
    seen: HashSet<Marker>,
    log: DeviceLog,
}

impl Editor {
    /// Appends the device's `n`th marker to a plan and syncs it (the acknowledgement).
    fn edit(&mut self, cases: &[CaseId], n: u32) -> anyhow::Result<()> {
        let me = self.j as u16;
        let case = cases[(self.j + n as usize) % cases.len()];
        let t = Instant::now();
        self.dev.plan_append(case, &format!(" ~d{me:02}e{n}~"))?;
        self.log.edit_ms += ms_since(t);
        let returned = self.sync()?;
        let acked = self.transport.answered.get().unwrap_or(returned);
        self.log.acks.push(((me, n), acked));
        Ok(())
    }

    /// One sync; notes the moment each marker new to the watched plan arrived.
    fn sync(&mut self) -> anyhow::Result<Instant> {
        let t = Instant::now();
        let r = self.dev.sync_with(&self.transport)?;
        let returned = Instant::now();
        self.log.sync_ms.push(ms_since(t));
        anyhow::ensure!(r.rejections.is_empty(), "W5: an edit was refused");
        self.log.requests += r.requests;
        self.log.bytes_up += r.bytes_up;
        self.log.bytes_down += r.bytes_down;
        let t = Instant::now();
        if r.changes_down > 0 {
            for m in markers(&narrative(&self.dev, self.watch)?) {
                if m.0 != self.j as u16 && self.seen.insert(m) {
                    self.log.seen.push((m, returned));
                }
            }
        }
        self.log.observe_ms += ms_since(t);
        Ok(returned)
    }
}

#[allow(clippy::too_many_arguments)]
fn edit_loop(
    j: usize,
    devices: usize,
    dev: Device,
    token: String,
    cases: Arc<Vec<CaseId>>,
    start: Arc<Barrier>,
    stop: Arc<AtomicBool>,
    mode: Mode,
) -> anyhow::Result<DeviceLog> {
    let url = dev.status()?.server.unwrap_or_default();
    let mut ed = Editor {
        j,
        transport: Timed {
            inner: dev.http_transport()?,
            answered: Cell::new(None),
        },
        watch: cases[j % cases.len()],
        dev,
        seen: HashSet::new(),
        log: DeviceLog::default(),
    };
    let mut n = 0u32;
    match mode {
        Mode::HttpPoll => {
            start.wait();
            while !stop.load(Ordering::Relaxed) {
                ed.edit(&cases, n)?;
                n += 1;
            }
        }
        Mode::WebSocket { edit_interval } => {
            let mut channel = live::connect(&url, &token)?;
            // The hello: everything up to it is on this device already.
            let hello = channel.next(Duration::from_secs(30))?;
            let mut covered = hello.map_or(Seq(0), |e| e.seq);
            start.wait();
            let began = Instant::now();
            // Staggered, so that the devices' edits spread over the interval.
            let mut next_edit = began + edit_interval.mul_f64(j as f64 / devices as f64);
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now >= next_edit {
                    ed.edit(&cases, n)?;
                    n += 1;
                    next_edit = (next_edit + edit_interval).max(now);
                    continue;
                }
                let wait = (next_edit - now).min(Duration::from_millis(100));
                if let Some(event) = channel.next(wait)? {
                    ed.log.events += 1;
                    if event.seq > covered {
                        covered = event.seq;
                        ed.log.event_syncs += 1;
                        ed.sync()?;
                    }
                }
            }
            channel.close();
        }
    }
    Ok(ed.log)
}

/// What a team-editing run measured.
pub struct Team {
    pub devices: usize,
    /// From the first device's sign-in until every device holds the plans (each device's first
    /// sync included).
    pub setup_ms: f64,
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
    pub mode: Mode,
    pub events: usize,
    pub event_syncs: usize,
}

/// Runs `tokens.len()` devices (all in one team) editing `plans` shared plans for `secs`.
pub fn run(
    url: &str,
    tokens: &[String],
    plans: usize,
    secs: f64,
    dir: &Path,
    mode: Mode,
) -> anyhow::Result<Team> {
    let setup_started = std::time::Instant::now();
    let devices: Vec<Device> = tokens
        .iter()
        .enumerate()
        .map(|(j, token)| -> anyhow::Result<Device> {
            let dev = Device::open(
                &dir.join(format!("w5-device-{j}")),
                &casenote_client_core::StoreKey::generate(),
            )?;
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
    let setup_ms = ms_since(setup_started);
    progress!(
        "W5: {} devices hold {} shared plans ({setup_ms:.0} ms to set up); editing for {secs} s",
        devices.len(),
        plans
    );
    let cases = Arc::new(cases);
    let start = Arc::new(Barrier::new(devices.len() + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let n = devices.len();
    let handles: Vec<_> = devices
        .into_iter()
        .enumerate()
        .map(|(j, dev)| {
            let (cases, start, stop) = (cases.clone(), start.clone(), stop.clone());
            let token = tokens[j].clone();
            std::thread::spawn(move || edit_loop(j, n, dev, token, cases, start, stop, mode))
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
        setup_ms,
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
        mode,
        events: logs.iter().map(|l| l.events).sum(),
        event_syncs: logs.iter().map(|l| l.event_syncs).sum(),
    })
}

impl Team {
    /// The JSON fields common to W5 and W6's editing phase.
    pub fn fields(&self) -> serde_json::Map<String, Value> {
        let busy = (self.edit_ms + self.sync_ms + self.observe_ms).max(1.0);
        let mut v = json!({
            "transport": self.mode.name(),
            "devices": self.devices,
            "setup_ms": round1(self.setup_ms),
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
        if let Mode::WebSocket { edit_interval } = self.mode {
            let interval_ms = edit_interval.as_secs_f64() * 1000.0;
            v["edit_interval_ms"] = json!(round1(interval_ms));
            v["offered_edits_per_s"] = json!(round1(
                self.devices as f64 * 1000.0 / interval_ms.max(0.001)
            ));
            v["live_events"] = json!(self.events);
            v["event_syncs"] = json!(self.event_syncs);
        }
        match v {
            Value::Object(m) => m,
            _ => unreachable!("a JSON object literal"),
        }
    }
}

/// W5 on its own server: a new team of `devices` workers and `plans` shared plans.
pub fn w5(devices: usize, plans: usize, secs: f64, mode: Mode) -> anyhow::Result<Value> {
    let server = crate::harness::InProcessServer::start()?;
    let tokens = crate::harness::provision_team(server.store.as_ref(), "Bench Team W5", devices)?;
    let flushes_before = server.store.flush_count();
    let team = run(&server.url, &tokens, plans, secs, server.scratch(), mode)?;
    let flushes = server.store.flush_count() - flushes_before;
    let mut line = serde_json::Map::new();
    line.insert("workload".into(), "W5".into());
    let what = match mode {
        Mode::HttpPoll => "devices loop: append a marker to a shared plan, sync, read the watched plan; latency = ack to first sync of another device that returns it",
        Mode::WebSocket { .. } => "devices edit a shared plan every edit_interval_ms and sync; between edits they sync when their live WebSocket says so; latency = ack to the end of another device's sync that returns it",
    };
    line.insert("what".into(), what.into());
    line.extend(team.fields());
    // Group commit: sled flushes the server ran per sync request (setup included).
    line.insert("server_flushes".into(), flushes.into());
    line.insert(
        "server_flushes_per_request".into(),
        round2(flushes as f64 / team.requests.max(1) as f64).into(),
    );
    line.insert("server_rss_mb".into(), mem(None).rss_mb.into());
    line.insert(
        "client_rss_note".into(),
        "server and all devices share this process: server_rss_mb is the whole process".into(),
    );
    server.stop();
    Ok(Value::Object(line))
}
