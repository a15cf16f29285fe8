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

/// One device as the benchmark drives it: its token, transport, cursor and log id.
struct Client {
    transport: HttpTransport,
    cursor: Seq,
    log_id: Option<uuid::Uuid>,
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
            confirmed_reconcile: None,
        };
        let body = self.transport.sync(wire::encode(&req))?;
        let resp = wire::decode_response(&body)?;
        self.cursor = resp.cursor;
        self.log_id = Some(resp.log_id);
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

/// Runs W5L on its own server.
pub fn w5l(cfg: Light) -> anyhow::Result<Value> {
    let server = InProcessServer::start()?;
    let tokens = harness::provision_team(server.store.as_ref(), "Bench Team W5L", cfg.devices)?;
    let staff: Vec<Vec<u8>> = tokens
        .iter()
        .map(|t| {
            harness::principal(server.store.as_ref(), t).map(|p| p.staff_id().as_bytes().to_vec())
        })
        .collect::<anyhow::Result<_>>()?;
    let actors: Vec<ActorId> = (0..cfg.devices).map(|_| ActorId::random()).collect();
    let mut clients: Vec<Client> = tokens
        .iter()
        .map(|t| Client {
            transport: HttpTransport::new(&server.url, t),
            cursor: Seq(0),
            log_id: None,
        })
        .collect();

    // The shared plans, created by device 0 (a case document and its plan each).
    let mut plans: Vec<(CaseId, DocId, AutoCommit)> = Vec::new();
    let mut setup = Vec::new();
    for i in 0..cfg.plans {
        let case_id = CaseId::new_random();
        let mut case = author_doc(&AutoCommit::new(), &staff[0], &actors[0]);
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
        let mut plan = author_doc(&AutoCommit::new(), &staff[0], &actors[0]);
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

    // Every edit, built before the clock starts: device j's nth edit goes to plan (j + n) % plans.
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
    let edits: Vec<Vec<Edit>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cfg.devices)
            .map(|j| {
                let (plans, staff, actors) = (&plans, &staff, &actors);
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

    // Listeners: one live channel per device.
    let stop = Arc::new(AtomicBool::new(false));
    let stop_listening = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(cfg.devices + cfg.pushers + 1));
    let mut listeners = Vec::new();
    for (j, token) in tokens.iter().enumerate() {
        let mut channel = live::connect(&server.url, token)?;
        let (stop, start) = (stop_listening.clone(), start.clone());
        listeners.push(
            std::thread::Builder::new()
                .name(format!("w5l-listen-{j}"))
                .spawn(move || -> anyhow::Result<(Vec<(Instant, Seq)>, bool)> {
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
        let (stop, start, plan_ids, failures) = (
            stop.clone(),
            start.clone(),
            plan_ids.clone(),
            failures.clone(),
        );
        let devices = cfg.devices;
        pushers.push(
            std::thread::Builder::new()
                .name(format!("w5l-push-{t}"))
                .spawn(move || -> anyhow::Result<Vec<Sent>> {
                    let mut mine = mine;
                    let mut next: Vec<usize> = vec![0; mine.len()];
                    let mut sent = Vec::new();
                    start.wait();
                    let began = Instant::now();
                    let due = |j: usize, n: usize| match interval {
                        // Staggered: device j's edits are offset by j / devices of an interval.
                        Some(iv) => began + iv.mul_f64(n as f64 + j as f64 / devices as f64),
                        None => began,
                    };
                    while !stop.load(Ordering::Relaxed) {
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
                        let (case_id, doc_id) = plan_ids[edit.plan];
                        let push = push_of(doc_id, case_id, DocKind::Plan, vec![edit.bytes.clone()]);
                        let t_sent = Instant::now();
                        let resp = client.sync(vec![push])?;
                        let acked = Instant::now();
                        next[k] += 1;
                        let ok = resp.acks.iter().any(|a| a.doc_id == doc_id && a.stored == 1);
                        if !ok || !resp.rejections.is_empty() || !resp.need_full_history.is_empty() {
                            failures.lock().unwrap_or_else(|e| e.into_inner()).push(format!(
                                "device {j} edit {n}: acks {:?} rejections {:?} need_full_history {}",
                                resp.acks.iter().map(|a| a.stored).collect::<Vec<_>>(),
                                resp.rejections.iter().map(|r| r.code.as_str()).collect::<Vec<_>>(),
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
                })?,
        );
    }
    let flushes_before = server.store.flush_count();
    let cpu_before = thread_cpu();
    start.wait();
    let began = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(cfg.secs));
    let cpu_after = thread_cpu();
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
    let flushes = server.store.flush_count() - flushes_before;
    let failures = failures.lock().unwrap_or_else(|e| e.into_inner()).clone();
    anyhow::ensure!(
        failures.is_empty(),
        "W5L: {} edits were not stored, first: {}",
        failures.len(),
        failures[0]
    );

    // Each edit's sequence, from the log.
    let mut seqs: HashMap<(DocId, Hash), Seq> = HashMap::new();
    server
        .store
        .scan_log(Seq(0), server.store.last_seq()?, &mut |e| {
            seqs.insert((e.doc_id, e.hash), e.seq);
            true
        })?;
    // Per device: arrival times and the highest sequence announced by then.
    let covered: Vec<Vec<(Instant, Seq)>> = heard
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
    let mut relay = Vec::new();
    let mut after_ack = Vec::new();
    let mut missed = 0usize;
    for s in &sent {
        let Some(seq) = seqs.get(&(s.doc, s.hash)).copied() else {
            anyhow::bail!("W5L: an acknowledged edit is not in the log");
        };
        for (d, cov) in covered.iter().enumerate() {
            if d == s.device {
                continue;
            }
            let i = cov.partition_point(|(_, top)| *top < seq);
            match cov.get(i) {
                Some((at, _)) => {
                    relay.push(at.saturating_duration_since(s.sent).as_secs_f64() * 1000.0);
                    after_ack.push(
                        (at.saturating_duration_since(s.acked).as_secs_f64()
                            - s.acked.saturating_duration_since(*at).as_secs_f64())
                            * 1000.0,
                    );
                }
                None => missed += 1,
            }
        }
    }
    let relay = sorted(relay);
    let after_ack = sorted(after_ack);
    let push_ms = sorted(
        sent.iter()
            .map(|s| s.acked.duration_since(s.sent).as_secs_f64() * 1000.0)
            .collect(),
    );
    let lag = sorted(
        sent.iter()
            .map(|s| s.sent.saturating_duration_since(s.due).as_secs_f64() * 1000.0)
            .collect(),
    );
    let events: usize = heard.iter().map(Vec::len).sum();
    let cpu = |group: &str| {
        let after = cpu_after.get(group).copied().unwrap_or(0.0);
        let before = cpu_before.get(group).copied().unwrap_or(0.0);
        round2((after - before).max(0.0))
    };
    let line = json!({
        "workload": "W5L",
        "what": "lightweight devices push precomputed plan edits over HTTP (one edit per sync request) and listen on their live channels; edits_per_s = acknowledged (durable) edits / duration; latency = request sent to the first live event on another device that covers the edit",
        "transport": "websocket",
        "devices": cfg.devices,
        "plans": cfg.plans,
        "pushers": cfg.pushers,
        "offered_edits_per_s": if cfg.rate > 0.0 { json!(cfg.rate) } else { json!("max") },
        "duration_s": round2(elapsed),
        "runs": 1,
        "wall_ms": round1(elapsed * 1000.0),
        "edits": sent.len(),
        "edits_per_s": round1(sent.len() as f64 / elapsed),
        "p50_ms": round1(percentile(&relay, 50.0)),
        "p99_ms": round1(percentile(&relay, 99.0)),
        "latency_samples": relay.len(),
        "not_announced": missed,
        "announce_after_ack_p50_ms": round1(percentile(&after_ack, 50.0)),
        "announce_after_ack_p99_ms": round1(percentile(&after_ack, 99.0)),
        "push_p50_ms": round1(percentile(&push_ms, 50.0)),
        "push_p99_ms": round1(percentile(&push_ms, 99.0)),
        "lag_p99_ms": round1(percentile(&lag, 99.0)),
        "live_events": events,
        "live_closed": closed,
        "requests": sent.len(),
        "server_flushes": flushes,
        "server_flushes_per_request": round2(flushes as f64 / sent.len().max(1) as f64),
        "cpu_s": {
            "server": cpu("server"),
            "pushers": cpu("pushers"),
            "listeners": cpu("listeners"),
            "other": cpu("other"),
        },
        "server_rss_mb": mem(None).rss_mb,
        "client_rss_note": "server and the lightweight devices share this process: server_rss_mb is the whole process",
    });
    server.stop();
    Ok(line)
}

/// CPU seconds used so far by this process's threads, grouped: the server (tokio workers and
/// blocking pool, sled's threads), the pushers, the listeners, and the rest.
fn thread_cpu() -> HashMap<&'static str, f64> {
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
