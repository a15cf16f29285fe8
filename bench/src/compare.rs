//! `compare-backends`: W3, W4 and W5L on sled, on PostgreSQL with one server node, and on
//! PostgreSQL with two nodes on the same database, one after another in one run, then one table
//! side by side with each figure's ratio to sled's.
//!
//! Every deployment is the real `casenote-server` binary in child processes ([`crate::deploy`]),
//! so the three are served the same way (the other workloads run the server in this process).
//! With two nodes the devices are split between them: W5L's device `j` pushes and listens on
//! node `j % 2`, so relay latency is measured within a node and across nodes (an edit sent
//! through node A and heard by a device on node B is reported as `cross_node_*`); W3's and W4's
//! single device takes turns, one sync through each node.
//!
//! W4 here holds a caseload seeded on the server ([`crate::seed`], W1's sizes: a case, a plan
//! and 20 filed notes per case, for Locality Team North) and pulled by a colleague's new device,
//! instead of W1's device-made caseload and W2's pull: the same documents held, minus W1's
//! minutes of device edits per deployment.

use crate::deploy::{self, Backend, Deployment};
use crate::harness::{self, mem, ms_since, round1, round2};
use crate::light::{self, Light, Under};
use crate::seed::{self, Seeder};
use crate::{caseload, idle, progress};
use casenote_client_core::{Device, HttpTransport};
use casenote_pg_cluster::Cluster;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Instant;

/// The sizes of one comparison.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub w3_docs: usize,
    pub w3_runs: usize,
    pub w4_cases: usize,
    pub w4_runs: usize,
    pub light: Light,
}

/// Runs the comparison over `backends`; `emit` gets every JSON line as it is made. Returns the
/// lines, for [`table`].
pub fn run(
    sizes: &Sizes,
    backends: &[Backend],
    emit: &mut dyn FnMut(&Value),
) -> anyhow::Result<Vec<Value>> {
    let bin = deploy::server_bin()?;
    let needs_pg = backends.iter().any(|b| *b != Backend::Sled);
    let cluster = if needs_pg {
        Some(deploy::start_cluster()?)
    } else {
        None
    };
    let mut lines = Vec::new();
    for backend in backends {
        let label = backend.label();
        let deployment = || Deployment::create(*backend, cluster.as_ref(), &bin);
        progress!("{label}: W3, a device holding {} documents", sizes.w3_docs);
        let w3 = w3(deployment()?, sizes)?;
        progress!("{label}: W4, {} cases held", sizes.w4_cases);
        let w4 = w4(deployment()?, sizes)?;
        progress!("{label}: W5L");
        let w5l = w5l(deployment()?, &sizes.light, cluster.as_ref())?;
        for mut line in [w3, w4, w5l] {
            line["backend"] = json!(label);
            line["nodes"] = json!(backend.nodes());
            line["durable"] = json!(true);
            emit(&line);
            lines.push(line);
        }
    }
    Ok(lines)
}

/// Resident memory of each node, in MB.
fn nodes_rss(d: &Deployment) -> Vec<f64> {
    d.pids().into_iter().map(|p| mem(Some(p)).rss_mb).collect()
}

fn w3(mut d: Deployment, sizes: &Sizes) -> anyhow::Result<Value> {
    let token = d.with_store(|s| {
        casenote_server::cli::demo::load(s, casenote_server::now_ms())?;
        idle::seed_w3(s, sizes.w3_docs)
    })?;
    let urls = d.serve()?;
    let idle = idle::run_on(&urls, &token, &d.scratch().join("w3-device"), sizes.w3_runs)?;
    let rss = nodes_rss(&d);
    d.stop()?;
    let mut line = serde_json::Map::new();
    line.insert("workload".into(), "W3".into());
    line.insert(
        "what".into(),
        "idle Device::sync (nothing new) of a device holding the documents, each sync through the next node in turn; median and p99 of many"
            .into(),
    );
    line.extend(idle.fields());
    line.insert("server_rss_mb".into(), json!(rss));
    Ok(Value::Object(line))
}

fn w4(mut d: Deployment, sizes: &Sizes) -> anyhow::Result<Value> {
    let token = d.with_store(|s| {
        casenote_server::cli::demo::load(s, casenote_server::now_ms())?;
        let who = harness::principal(s, &harness::issue_token(s, "Priya Shah", "w4 seeder")?)?;
        let started = Instant::now();
        let stored = seed::seed_cases(
            s,
            &Seeder::new(s, who)?,
            sizes.w4_cases,
            caseload::NOTES_PER_CASE,
            4,
        )?;
        progress!(
            "W4: seeded {stored} documents on the server in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        harness::issue_token(s, "Mark Ellison", "w4 tablet")
    })?;
    let urls = d.serve()?;
    let dev = Device::open(
        &d.scratch().join("w4-device"),
        &casenote_client_core::StoreKey::generate(),
    )?;
    dev.login(&urls[0], &token)?;
    let started = Instant::now();
    let pull = dev.sync()?;
    let pull_ms = ms_since(started);
    progress!(
        "W4: the device pulled {} documents in {pull_ms:.0} ms",
        pull.docs_down
    );
    let cases: Vec<_> = dev
        .cases()?
        .into_iter()
        .filter(|c| c.name.starts_with("Seeded Person"))
        .map(|c| c.case_id)
        .collect();
    let transport = |round: usize| -> anyhow::Result<HttpTransport> {
        Ok(HttpTransport::new(&urls[round % urls.len()], &token))
    };
    let mut line = caseload::w4_with(&dev, &cases, sizes.w4_runs, &transport)?;
    line["what"] = json!("offline: 20 new notes filed and 5 plan appends on a device holding a seeded caseload, then one Device::sync, each round through the next node in turn (wall_ms is the sync)");
    line["cases"] = json!(sizes.w4_cases);
    line["pull_ms"] = json!(round1(pull_ms));
    line["server_rss_mb"] = json!(nodes_rss(&d));
    drop(dev);
    d.stop()?;
    Ok(line)
}

fn w5l(mut d: Deployment, cfg: &Light, cluster: Option<&Cluster>) -> anyhow::Result<Value> {
    let team = d.with_store(|s| {
        casenote_server::cli::demo::load(s, casenote_server::now_ms())?;
        light::provision(s, cfg.devices)
    })?;
    let urls = d.serve()?;
    let pids = d.pids();
    let on_pg = cluster.is_some() && d.backend != Backend::Sled;
    let cpu = || {
        let mut groups = light::thread_cpu();
        groups.insert(
            "server",
            pids.iter().map(|p| deploy::process_cpu_s(*p)).sum(),
        );
        if on_pg {
            groups.insert("database", deploy::postgres_cpu().values().sum());
        }
        groups
    };
    let under = Under {
        urls: &urls,
        flushes: None,
        cpu: &cpu,
    };
    let run = light::run(cfg, &team, &under)?;
    let rss = nodes_rss(&d);
    d.stop()?;
    let seqs = d.with_store(light::log_seqs)?;
    let mut line = light::report(cfg, &run, &seqs)?;
    line["server_rss_mb"] = json!(rss);
    Ok(line)
}

/// One row of the table: a label and how to read its figure from a workload's line.
struct Row {
    workload: &'static str,
    label: &'static str,
    field: &'static str,
    /// Whether more is better (edits per second) or worse (milliseconds).
    higher_is_better: bool,
}

const ROWS: &[Row] = &[
    Row {
        workload: "W3",
        label: "W3 idle sync p50 (ms)",
        field: "p50_ms",
        higher_is_better: false,
    },
    Row {
        workload: "W3",
        label: "W3 idle sync p99 (ms)",
        field: "p99_ms",
        higher_is_better: false,
    },
    Row {
        workload: "W3",
        label: "W3 first pull (ms)",
        field: "pull_ms",
        higher_is_better: false,
    },
    Row {
        workload: "W4",
        label: "W4 sync p50 (ms)",
        field: "p50_ms",
        higher_is_better: false,
    },
    Row {
        workload: "W4",
        label: "W4 round trip p50 (ms)",
        field: "round_trip_p50_ms",
        higher_is_better: false,
    },
    Row {
        workload: "W4",
        label: "W4 sync p99 (ms)",
        field: "p99_ms",
        higher_is_better: false,
    },
    Row {
        workload: "W4",
        label: "W4 first pull (ms)",
        field: "pull_ms",
        higher_is_better: false,
    },
    Row {
        workload: "W5L",
        label: "W5L durable edits/s",
        field: "edits_per_s",
        higher_is_better: true,
    },
    Row {
        workload: "W5L",
        label: "W5L push p50 (ms)",
        field: "push_p50_ms",
        higher_is_better: false,
    },
    Row {
        workload: "W5L",
        label: "W5L push p99 (ms)",
        field: "push_p99_ms",
        higher_is_better: false,
    },
    Row {
        workload: "W5L",
        label: "W5L relay p50 (ms)",
        field: "p50_ms",
        higher_is_better: false,
    },
    Row {
        workload: "W5L",
        label: "W5L relay p99 (ms)",
        field: "p99_ms",
        higher_is_better: false,
    },
    Row {
        workload: "W5L",
        label: "W5L relay within a node p50 (ms)",
        field: "same_node_p50_ms",
        higher_is_better: false,
    },
    Row {
        workload: "W5L",
        label: "W5L relay within a node p99 (ms)",
        field: "same_node_p99_ms",
        higher_is_better: false,
    },
    Row {
        workload: "W5L",
        label: "W5L relay across nodes p50 (ms)",
        field: "cross_node_p50_ms",
        higher_is_better: false,
    },
    Row {
        workload: "W5L",
        label: "W5L relay across nodes p99 (ms)",
        field: "cross_node_p99_ms",
        higher_is_better: false,
    },
    Row {
        workload: "W5L",
        label: "W5L server CPU-s",
        field: "cpu_s.server",
        higher_is_better: false,
    },
    Row {
        workload: "W5L",
        label: "W5L database CPU-s",
        field: "cpu_s.database",
        higher_is_better: false,
    },
];

/// A figure of `line` by dotted path.
fn figure(line: &Value, path: &str) -> Option<f64> {
    path.split('.')
        .try_fold(line, |v, key| v.get(key))
        .and_then(Value::as_f64)
}

/// The comparison as a Markdown table: one column per backend, each figure followed by its
/// ratio to sled's (`×1.8` = 1.8 times sled's value, whichever way is better; see the row).
pub fn table(lines: &[Value]) -> String {
    let mut backends: Vec<String> = Vec::new();
    let mut by: HashMap<(String, String), &Value> = HashMap::new();
    for line in lines {
        let backend = line["backend"].as_str().unwrap_or("?").to_string();
        let workload = line["workload"].as_str().unwrap_or("?").to_string();
        if !backends.contains(&backend) {
            backends.push(backend.clone());
        }
        by.insert((backend, workload), line);
    }
    let mut out = format!("| | {} |\n|---|", backends.join(" | "));
    out.push_str(&"---|".repeat(backends.len()));
    out.push('\n');
    for row in ROWS {
        let get = |b: &str| {
            by.get(&(b.to_string(), row.workload.to_string()))
                .and_then(|l| figure(l, row.field))
        };
        if backends.iter().all(|b| get(b).is_none()) {
            continue;
        }
        let sled = get("sled");
        let cells: Vec<String> = backends
            .iter()
            .map(|b| match (get(b), sled) {
                (None, _) => "".into(),
                (Some(v), Some(s)) if b != "sled" && s > 0.0 => {
                    format!("{} (×{})", number(v), round2(v / s))
                }
                (Some(v), _) => number(v),
            })
            .collect();
        let better = if row.higher_is_better { "↑" } else { "↓" };
        out.push_str(&format!(
            "| {} {better} | {} |\n",
            row.label,
            cells.join(" | ")
        ));
    }
    out
}

fn number(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{}", round2(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(backend: &str, workload: &str, fields: Value) -> Value {
        let mut v = fields;
        v["backend"] = json!(backend);
        v["workload"] = json!(workload);
        v
    }

    #[test]
    fn the_table_puts_backends_side_by_side_with_ratios_to_sled() {
        let lines = [
            line("sled", "W3", json!({"p50_ms": 2.0})),
            line("pg-1", "W3", json!({"p50_ms": 3.0})),
            line(
                "sled",
                "W5L",
                json!({"edits_per_s": 400.0, "cpu_s": {"server": 20.0}}),
            ),
            line(
                "pg-1",
                "W5L",
                json!({"edits_per_s": 100.0, "cpu_s": {"server": 10.0, "database": 5.0}}),
            ),
        ];
        let table = table(&lines);
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows[0], "| | sled | pg-1 |", "{table}");
        assert!(
            rows.contains(&"| W3 idle sync p50 (ms) ↓ | 2 | 3 (×1.5) |"),
            "{table}"
        );
        assert!(
            rows.contains(&"| W5L durable edits/s ↑ | 400 | 100 (×0.25) |"),
            "{table}"
        );
        assert!(
            rows.contains(&"| W5L server CPU-s ↓ | 20 | 10 (×0.5) |"),
            "{table}"
        );
        // A figure only one backend has is shown without a ratio; rows nobody has are left out.
        assert!(rows.contains(&"| W5L database CPU-s ↓ |  | 5 |"), "{table}");
        assert!(!table.contains("across nodes"), "{table}");
    }
}
