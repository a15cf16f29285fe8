//! W5L, team editing measured at the server: W5's 20 staff members and 10 shared plans, but the
//! devices are lightweight, so that the server, not the devices' own Automerge work, is what is
//! measured (full W5 devices spend over 80 % of the 2 cores loading and saving their plans).
//!
//! Before the clock starts, every edit is built as a real Automerge change: each staff member has
//! one device and one actor, a change appends a marker to a plan's narrative, the actor's first
//! change in each plan carries the author (automerge 0.12 writes it there only), and each change
//! depends on the plan as created and on the same device's previous edit of that plan (devices
//! edit concurrently and do not wait for each other's edits; the server merges them). Then a few
//! pusher threads send the edits over real HTTP (`POST /v1/sync`, the CBOR envelope of
//! `casenote_protocol::wire`, one edit per request, each device's cursor and log id kept as a
//! device would, so every answer also carries what others wrote since) on an open-loop schedule
//! of `rate` edits per second in all (`--rate 0`: as fast as the pushers can). Every device also
//! holds its live channel (`GET /v1/live`) on its own listener thread, which notes when each event
//! arrived and its sequence.
//!
//! Figures: `edits_per_s` = edits acknowledged (an acknowledgement is sent only once the edit is
//! flushed) / duration. Relay latency, per edit and per other device (19 samples per edit): the
//! first moment that device's live channel delivered an event whose `seq` covers the edit (an
//! event means "everything up to seq is durable; sync", and the device's next sync returns it)
//! minus the moment the author's request was sent. The edit's sequence comes from the server's
//! log after the run. `lag_p99_ms` is how late pushes left against the schedule (the pushers'
//! own queueing: when it grows, the offered rate is not being met).
//!
//! The run itself ([`run`]) only needs the nodes' URLs: [`w5l`] serves a sled store in this
//! process, `compare-backends` ([`crate::compare`]) the real server binary over sled or
//! PostgreSQL with one node or more; with several nodes device `j` pushes and listens on node
//! `j % nodes`, and the relay latency is also split into within a node and across nodes.

use crate::harness::{self, mem, percentile, round1, round2, sorted, InProcessServer};
use crate::progress;
use automerge::{ActorId, Author, AutoCommit};
use casenote_client_core::{live, HttpTransport, Transport};
use casenote_protocol::record::{self, field, Identity};
use casenote_protocol::wire::{self, DocPush, Hash, SyncRequest, PROTOCOL_VERSION};
use casenote_protocol::{CaseId, DocId, DocKind, Seq};
use casenote_server::Store;
use serde_bytes::ByteBuf;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

/// The settings of one W5L run.
#[derive(Clone, Copy, Debug)]
pub struct Light {
    pub devices: usize,
    pub plans: usize,
    pub secs: f64,
    /// Offered edits per second, all devices together; 0: as fast as the pushers go.
    pub rate: f64,
    /// Threads that send the edits, each driving its share of the devices (at most one request
    /// in flight per thread).
    pub pushers: usize,
}

/// One device as the benchmark drives it: its token, transport, cursor and log id, and the
/// reconciliation it confirms in its next request, as a device does (its first sync is one).
struct Client {
    transport: HttpTransport,
    cursor: Seq,
    log_id: Option<uuid::Uuid>,
    confirm: Option<u64>,
}

impl Client {
    /// One sync request carrying `docs`; returns the response.
    fn sync(&mut self, docs: Vec<DocPush>) -> anyhow::Result<wire::SyncResponse> {
        let req = SyncRequest {
            version: PROTOCOL_VERSION,
            cursor: self.cursor,
            device_clock_ms: casenote_server::now_ms(),
            docs,
            log_id: self.log_id,
            confirmed_reconcile: self.confirm,
            views: Vec::new(),
            restricted: Vec::new(),
        };
        let body = self.transport.sync(wire::encode(&req))?;
        let resp = wire::decode_response(&body)?;
        self.cursor = resp.cursor;
        self.log_id = Some(resp.log_id);
        self.confirm = resp.reconcile_id;
        Ok(resp)
    }
}

/// One precomputed edit.
struct Edit {
    plan: usize,
    hash: Hash,
    bytes: Vec<u8>,
}

/// What one pushed edit became.
struct Sent {
    device: usize,
    doc: DocId,
    hash: Hash,
    due: Instant,
    sent: Instant,
    acked: Instant,
}

fn author_doc(base: &AutoCommit, staff: &[u8], actor: &ActorId) -> AutoCommit {
    let mut doc = base.clone();
    // set_author picks a fresh actor when the author changes, so the actor goes last.
    doc.set_author(Some(Author::from(staff.to_vec())));
    doc.set_actor(actor.clone());
    doc
}

fn push_of(doc_id: DocId, case_id: CaseId, kind: DocKind, changes: Vec<Vec<u8>>) -> DocPush {
    DocPush {
        doc_id,
        case_id,
        kind,
        base: Vec::new(),
        changes: changes.into_iter().map(ByteBuf::from).collect(),
    }
}

/// The team W5L provisions: one token and one staff id per device.
pub struct Team {
    tokens: Vec<String>,
    staff: Vec<Vec<u8>>,
}

/// Adds W5L's team of `devices` social workers to `store`.
pub fn provision(store: &dyn Store, devices: usize) -> anyhow::Result<Team> {
    let tokens = harness::provision_team(store, "Bench Team W5L", devices)?;
    let staff = tokens
        .iter()
        .map(|t| harness::principal(store, t).map(|p| p.staff_id().as_bytes().to_vec()))
        .collect::<anyhow::Result<_>>()?;
    Ok(Team { tokens, staff })
}

/// The server under test as W5L sees it while it runs.
pub struct Under<'a> {
    /// The nodes' URLs: device `j` talks to node `j % urls.len()` (pushes and live channel).
    pub urls: &'a [String],
    /// The server's flush count so far, where the benchmark can read it (an in-process sled).
    pub flushes: Option<&'a dyn Fn() -> u64>,
    /// CPU seconds used so far, grouped (see [`thread_cpu`]).
    pub cpu: &'a dyn Fn() -> HashMap<&'static str, f64>,
}

/// What one run produced, before the log is read to place each edit.
pub struct Run {
    sent: Vec<Sent>,
    heard: Vec<Vec<(Instant, Seq)>>,
    closed: usize,
    elapsed: f64,
    flushes: Option<u64>,
    cpu: HashMap<&'static str, f64>,
    nodes: usize,
}

/// A plan shared by the team: its case, its id, and the document as created.
type SharedPlan = (CaseId, DocId, AutoCommit);

/// Creates the shared plans through device 0 (a case document and its plan each) and brings
/// every device's cursor up to date.
fn create_plans(
    cfg: &Light,
    team: &Team,
    actors: &[ActorId],
    clients: &mut [Client],
) -> anyhow::Result<Vec<SharedPlan>> {
    let mut plans = Vec::new();
    let mut setup = Vec::new();
    for i in 0..cfg.plans {
        let case_id = CaseId::new_random();
        let mut case = author_doc(&AutoCommit::new(), &team.staff[0], &actors[0]);
        record::init_case(
            &mut case,
            case_id,
            &Identity {
                name: format!("Shared Plan Person {i}"),
                ..Default::default()
            },
        )?;
        case.commit();
        let changes = case
            .get_changes(&[])
            .iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        setup.push(push_of(DocId(case_id.0), case_id, DocKind::Case, changes));
        let mut plan = author_doc(&AutoCommit::new(), &team.staff[0], &actors[0]);
        record::init_plan(&mut plan, case_id)?;
        plan.commit();
        let plan_id = DocId::new_random();
        let changes = plan
            .get_changes(&[])
            .iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        setup.push(push_of(plan_id, case_id, DocKind::Plan, changes));
        plans.push((case_id, plan_id, plan));
    }
    let resp = clients[0].sync(setup)?;
    anyhow::ensure!(
        resp.rejections.is_empty() && resp.need_full_history.is_empty(),
        "W5L: the shared plans were refused"
    );
    for c in clients.iter_mut() {
        c.sync(Vec::new())?;
    }
    Ok(plans)
}

/// Every edit, built before the clock starts: device j's nth edit goes to plan (j + n) % plans.
fn build_edits(
    cfg: &Light,
    team: &Team,
    actors: &[ActorId],
    plans: &[SharedPlan],
) -> anyhow::Result<Vec<Vec<Edit>>> {
    let per_device = if cfg.rate > 0.0 {
        (cfg.rate * cfg.secs / cfg.devices as f64).ceil() as usize + 2
    } else {
        // As fast as possible: more than the server could take in the time.
        (4_000.0 * cfg.secs / cfg.devices as f64).ceil() as usize
    };
    progress!(
        "W5L: building {} edits ({} devices x {per_device})",
        per_device * cfg.devices,
        cfg.devices
    );
    let built = Instant::now();
    let edits = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cfg.devices)
            .map(|j| {
                let staff = &team.staff;
                s.spawn(move || -> anyhow::Result<Vec<Edit>> {
                    let mut docs: Vec<AutoCommit> = plans
                        .iter()
                        .map(|(_, _, p)| author_doc(p, &staff[j], &actors[j]))
                        .collect();
                    let mut out = Vec::with_capacity(per_device);
                    for n in 0..per_device {
                        let plan = (j + n) % plans.len();
                        let doc = &mut docs[plan];
                        record::append_root_text(
                            doc,
                            "plan",
                            field::NARRATIVE,
                            &format!(" ~d{j:02}e{n}~"),
                        )?;
                        doc.commit();
                        let change = doc
                            .get_last_local_change()
                            .ok_or_else(|| anyhow::anyhow!("no change was made"))?;
                        out.push(Edit {
                            plan,
                            hash: change.hash().into(),
                            bytes: change.raw_bytes().to_vec(),
                        });
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a builder panicked"))?
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    progress!(
        "W5L: built in {:.1} s; {} devices push for {} s at {} edits/s offered",
        built.elapsed().as_secs_f64(),
        cfg.devices,
        cfg.secs,
        if cfg.rate > 0.0 {
            format!("{}", cfg.rate)
        } else {
            "max".into()
        }
    );
    Ok(edits)
}

/// What a listener thread returns: each event's arrival and sequence, and whether the channel
/// closed under it.
type Heard = anyhow::Result<(Vec<(Instant, Seq)>, bool)>;

/// One live channel per device, each on its own thread, on the device's node.
fn spawn_listeners(
    team: &Team,
    urls: &[String],
    stop: &Arc<AtomicBool>,
    start: &Arc<Barrier>,
) -> anyhow::Result<Vec<std::thread::JoinHandle<Heard>>> {
    let mut listeners = Vec::new();
    for (j, token) in team.tokens.iter().enumerate() {
        let mut channel = live::connect(&urls[j % urls.len()], token)?;
        let (stop, start) = (stop.clone(), start.clone());
        listeners.push(
            std::thread::Builder::new()
                .name(format!("w5l-listen-{j}"))
                .spawn(move || -> Heard {
                    let _hello = channel.next(Duration::from_secs(30))?;
                    start.wait();
                    let mut events = Vec::new();
                    let mut closed = false;
                    while !stop.load(Ordering::Relaxed) {
                        match channel.next(Duration::from_millis(50)) {
                            Ok(Some(e)) => events.push((Instant::now(), e.seq)),
                            Ok(None) => {}
                            Err(_) => {
                                closed = true;
                                break;
                            }
                        }
                    }
                    channel.close();
                    Ok((events, closed))
                })?,
        );
    }
    Ok(listeners)
}

/// What the pushers share.
struct PushShared {
    stop: Arc<AtomicBool>,
    start: Arc<Barrier>,
    plan_ids: Arc<Vec<(CaseId, DocId)>>,
    failures: Arc<Mutex<Vec<String>>>,
    interval: Option<Duration>,
    devices: usize,
}

/// One pusher thread's loop: send its devices' edits on schedule until told to stop.
fn push_loop(
    mut mine: Vec<(usize, Client, Vec<Edit>)>,
    shared: PushShared,
) -> anyhow::Result<Vec<Sent>> {
    let mut next: Vec<usize> = vec![0; mine.len()];
    let mut sent = Vec::new();
    shared.start.wait();
    let began = Instant::now();
    let due = |j: usize, n: usize| match shared.interval {
        // Staggered: device j's edits are offset by j / devices of an interval.
        Some(iv) => began + iv.mul_f64(n as f64 + j as f64 / shared.devices as f64),
        None => began,
    };
    while !shared.stop.load(Ordering::Relaxed) {
        // The device whose next edit is due first.
        let Some(k) = (0..mine.len())
            .filter(|&k| next[k] < mine[k].2.len())
            .min_by_key(|&k| due(mine[k].0, next[k]))
        else {
            break;
        };
        let (j, client, edits) = &mut mine[k];
        let n = next[k];
        let at = due(*j, n);
        let now = Instant::now();
        if at > now {
            std::thread::sleep((at - now).min(Duration::from_millis(20)));
            continue;
        }
        let edit = &edits[n];
        let (case_id, doc_id) = shared.plan_ids[edit.plan];
        let push = push_of(doc_id, case_id, DocKind::Plan, vec![edit.bytes.clone()]);
        let t_sent = Instant::now();
        let resp = client.sync(vec![push])?;
        let acked = Instant::now();
        next[k] += 1;
        let ok = resp
            .acks
            .iter()
            .any(|a| a.doc_id == doc_id && a.stored == 1);
        if !ok || !resp.rejections.is_empty() || !resp.need_full_history.is_empty() {
            shared
                .failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!(
                    "device {j} edit {n}: acks {:?} rejections {:?} need_full_history {}",
                    resp.acks.iter().map(|a| a.stored).collect::<Vec<_>>(),
                    resp.rejections
                        .iter()
                        .map(|r| r.code.as_str())
                        .collect::<Vec<_>>(),
                    resp.need_full_history.len()
                ));
            continue;
        }
        sent.push(Sent {
            device: *j,
            doc: doc_id,
            hash: edit.hash,
            due: at,
            sent: t_sent,
            acked,
        });
    }
    Ok(sent)
}

/// Runs W5L's clock against the server `under`: plans created, edits built, listeners and
/// pushers started, `cfg.secs` of pushing, everything joined.
pub fn run(cfg: &Light, team: &Team, under: &Under) -> anyhow::Result<Run> {
    let urls = under.urls;
    anyhow::ensure!(!urls.is_empty(), "W5L needs at least one node");
    let actors: Vec<ActorId> = (0..cfg.devices).map(|_| ActorId::random()).collect();
    let mut clients: Vec<Client> = team
        .tokens
        .iter()
        .enumerate()
        .map(|(j, t)| Client {
            transport: HttpTransport::new(&urls[j % urls.len()], t),
            cursor: Seq(0),
            log_id: None,
            confirm: None,
        })
        .collect();
    let plans = create_plans(cfg, team, &actors, &mut clients)?;
    let edits = build_edits(cfg, team, &actors, &plans)?;

    let stop = Arc::new(AtomicBool::new(false));
    let stop_listening = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(cfg.devices + cfg.pushers + 1));
    let listeners = spawn_listeners(team, urls, &stop_listening, &start)?;

    // Pushers: thread t drives devices t, t + cfg.pushers, ...
    let plan_ids: Arc<Vec<(CaseId, DocId)>> =
        Arc::new(plans.iter().map(|(c, d, _)| (*c, *d)).collect());
    let mut per_thread: Vec<Vec<(usize, Client, Vec<Edit>)>> =
        (0..cfg.pushers).map(|_| Vec::new()).collect();
    for (j, (client, edits)) in clients.into_iter().zip(edits).enumerate() {
        per_thread[j % cfg.pushers].push((j, client, edits));
    }
    let interval = (cfg.rate > 0.0).then(|| Duration::from_secs_f64(cfg.devices as f64 / cfg.rate));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut pushers = Vec::new();
    for (t, mine) in per_thread.into_iter().enumerate() {
        let shared = PushShared {
            stop: stop.clone(),
            start: start.clone(),
            plan_ids: plan_ids.clone(),
            failures: failures.clone(),
            interval,
            devices: cfg.devices,
        };
        pushers.push(
            std::thread::Builder::new()
                .name(format!("w5l-push-{t}"))
                .spawn(move || push_loop(mine, shared))?,
        );
    }
    let flushes_before = under.flushes.map(|f| f());
    let cpu_before = (under.cpu)();
    start.wait();
    let began = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(cfg.secs));
    let cpu_after = (under.cpu)();
    stop.store(true, Ordering::Relaxed);
    let mut sent: Vec<Sent> = Vec::new();
    for h in pushers {
        sent.extend(
            h.join()
                .map_err(|_| anyhow::anyhow!("a pusher panicked"))??,
        );
    }
    let elapsed = began.elapsed().as_secs_f64();
    // Let the last announcements arrive before the listeners stop.
    std::thread::sleep(Duration::from_millis(300));
    stop_listening.store(true, Ordering::Relaxed);
    let mut heard = Vec::new();
    let mut closed = 0;
    for h in listeners {
        let (events, was_closed) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a listener panicked"))??;
        closed += usize::from(was_closed);
        heard.push(events);
    }
    let flushes = match (under.flushes, flushes_before) {
        (Some(f), Some(before)) => Some(f() - before),
        _ => None,
    };
    let failures = failures.lock().unwrap_or_else(|e| e.into_inner()).clone();
    anyhow::ensure!(
        failures.is_empty(),
        "W5L: {} edits were not stored, first: {}",
        failures.len(),
        failures[0]
    );
    let mut cpu: HashMap<&'static str, f64> = ["server", "pushers", "listeners", "other"]
        .into_iter()
        .map(|g| (g, 0.0))
        .collect();
    for (group, after) in &cpu_after {
        let before = cpu_before.get(group).copied().unwrap_or(0.0);
        cpu.insert(group, round2((after - before).max(0.0)));
    }
    Ok(Run {
        sent,
        heard,
        closed,
        elapsed,
        flushes,
        cpu,
        nodes: urls.len(),
    })
}

/// Each stored change's sequence, from the log.
pub fn log_seqs(store: &dyn Store) -> anyhow::Result<HashMap<(DocId, Hash), Seq>> {
    let mut seqs = HashMap::new();
    store.scan_log(Seq(0), store.last_seq()?, &mut |e| {
        seqs.insert((e.doc_id, e.hash), e.seq);
        true
    })?;
    Ok(seqs)
}

/// Relay latencies (ms) of a run, from each edit's send to the first event covering it on every
/// other device, split by whether author and listener were on the same node.
struct Relay {
    all: Vec<f64>,
    same_node: Vec<f64>,
    cross_node: Vec<f64>,
    after_ack: Vec<f64>,
    missed: usize,
}

fn relay(run: &Run, seqs: &HashMap<(DocId, Hash), Seq>) -> anyhow::Result<Relay> {
    // Per device: arrival times and the highest sequence announced by then.
    let covered: Vec<Vec<(Instant, Seq)>> = run
        .heard
        .iter()
        .map(|events| {
            let mut top = Seq(0);
            events
                .iter()
                .map(|(at, seq)| {
                    top = top.max(*seq);
                    (*at, top)
                })
                .collect()
        })
        .collect();
    let mut out = Relay {
        all: Vec::new(),
        same_node: Vec::new(),
        cross_node: Vec::new(),
        after_ack: Vec::new(),
        missed: 0,
    };
    for s in &run.sent {
        let Some(seq) = seqs.get(&(s.doc, s.hash)).copied() else {
            anyhow::bail!("W5L: an acknowledged edit is not in the log");
        };
        for (d, cov) in covered.iter().enumerate() {
            if d == s.device {
                continue;
            }
            let i = cov.partition_point(|(_, top)| *top < seq);
            let Some((at, _)) = cov.get(i) else {
                out.missed += 1;
                continue;
            };
            let ms = at.saturating_duration_since(s.sent).as_secs_f64() * 1000.0;
            out.all.push(ms);
            if d % run.nodes == s.device % run.nodes {
                out.same_node.push(ms);
            } else {
                out.cross_node.push(ms);
            }
            out.after_ack.push(
                (at.saturating_duration_since(s.acked).as_secs_f64()
                    - s.acked.saturating_duration_since(*at).as_secs_f64())
                    * 1000.0,
            );
        }
    }
    Ok(out)
}

/// W5L's JSON line for `run`, whose edits `seqs` places in the log.
pub fn report(cfg: &Light, run: &Run, seqs: &HashMap<(DocId, Hash), Seq>) -> anyhow::Result<Value> {
    let r = relay(run, seqs)?;
    let (all, same, cross, after_ack) = (
        sorted(r.all),
        sorted(r.same_node),
        sorted(r.cross_node),
        sorted(r.after_ack),
    );
    let push_ms = sorted(
        run.sent
            .iter()
            .map(|s| s.acked.duration_since(s.sent).as_secs_f64() * 1000.0)
            .collect(),
    );
    let lag = sorted(
        run.sent
            .iter()
            .map(|s| s.sent.saturating_duration_since(s.due).as_secs_f64() * 1000.0)
            .collect(),
    );
    let events: usize = run.heard.iter().map(Vec::len).sum();
    let requests = run.sent.len();
    let mut line = json!({
        "workload": "W5L",
        "what": "lightweight devices push precomputed plan edits over HTTP (one edit per sync request) and listen on their live channels; edits_per_s = acknowledged (durable) edits / duration; latency = request sent to the first live event on another device that covers the edit",
        "transport": "websocket",
        "devices": cfg.devices,
        "plans": cfg.plans,
        "pushers": cfg.pushers,
        "nodes": run.nodes,
        "offered_edits_per_s": if cfg.rate > 0.0 { json!(cfg.rate) } else { json!("max") },
        "duration_s": round2(run.elapsed),
        "runs": 1,
        "wall_ms": round1(run.elapsed * 1000.0),
        "edits": requests,
        "edits_per_s": round1(requests as f64 / run.elapsed),
        "p50_ms": round1(percentile(&all, 50.0)),
        "p99_ms": round1(percentile(&all, 99.0)),
        "latency_samples": all.len(),
        "not_announced": r.missed,
        "announce_after_ack_p50_ms": round1(percentile(&after_ack, 50.0)),
        "announce_after_ack_p99_ms": round1(percentile(&after_ack, 99.0)),
        "push_p50_ms": round1(percentile(&push_ms, 50.0)),
        "push_p99_ms": round1(percentile(&push_ms, 99.0)),
        "lag_p99_ms": round1(percentile(&lag, 99.0)),
        "live_events": events,
        "live_closed": run.closed,
        "requests": requests,
        "cpu_s": run.cpu,
    });
    if run.nodes > 1 {
        line["same_node_p50_ms"] = json!(round1(percentile(&same, 50.0)));
        line["same_node_p99_ms"] = json!(round1(percentile(&same, 99.0)));
        line["cross_node_p50_ms"] = json!(round1(percentile(&cross, 50.0)));
        line["cross_node_p99_ms"] = json!(round1(percentile(&cross, 99.0)));
        line["cross_node_samples"] = json!(cross.len());
    }
    if let Some(flushes) = run.flushes {
        line["server_flushes"] = json!(flushes);
        line["server_flushes_per_request"] = json!(round2(flushes as f64 / requests.max(1) as f64));
    }
    Ok(line)
}

/// Runs W5L on its own in-process server (sled).
pub fn w5l(cfg: Light) -> anyhow::Result<Value> {
    let server = InProcessServer::start()?;
    let team = provision(server.store.as_ref(), cfg.devices)?;
    let urls = [server.url.clone()];
    let flushes = || server.store.flush_count();
    let under = Under {
        urls: &urls,
        flushes: Some(&flushes),
        cpu: &thread_cpu,
    };
    let run = run(&cfg, &team, &under)?;
    let seqs = log_seqs(server.store.as_ref())?;
    let mut line = report(&cfg, &run, &seqs)?;
    line["server_rss_mb"] = json!(mem(None).rss_mb);
    line["client_rss_note"] = json!(
        "server and the lightweight devices share this process: server_rss_mb is the whole process"
    );
    server.stop();
    Ok(line)
}

/// CPU seconds used so far by this process's threads, grouped: the server (tokio workers and
/// blocking pool, sled's threads), the pushers, the listeners, and the rest.
pub fn thread_cpu() -> HashMap<&'static str, f64> {
    let mut out = HashMap::new();
    let ticks = 100.0; // USER_HZ on Linux
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in dir.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        // Fields after the ")" that ends the name: state is the first, utime the 12th.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let cpu = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let secs = (cpu(11) + cpu(12)) / ticks;
        let comm = comm.trim();
        let group = if comm.starts_with("tokio") || comm.starts_with("sled") {
            "server"
        } else if comm.starts_with("w5l-push") {
            "pushers"
        } else if comm.starts_with("w5l-listen") {
            "listeners"
        } else {
            "other"
        };
        *out.entry(group).or_insert(0.0) += secs;
    }
    out
}
