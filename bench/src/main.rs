//! casenote-bench: the docs/design.md benchmark workloads W1-W6, measured on loopback with a real
//! server, real HTTP, real sled stores and real client-core devices.
//!
//! `cargo run --release -p casenote-bench -- [W1|W2|W3|W4|W5|W5L|W6|all] [--quick] [--http-poll]
//! [--edit-interval-ms N] [--rate N] [--pushers N] [--docs N] [--held N] [--store DIR] [--w5-secs N]`
//!
//! W5 and W6's editing phase use the live WebSocket channel unless `--http-poll` asks for the
//! polling variant; `--edit-interval-ms` sets how often each device edits there (default 500).
//! W5L is W5 with lightweight devices (precomputed changes pushed over HTTP, live listeners), so
//! that it measures the server; `--rate` is its offered edits per second (default 2,000; 0: as
//! fast as possible), `--pushers` how many threads send them (default 20: one per device).
//! W6's `--docs` is how many documents its store holds (default 100,000; 1,000,000 is issue 18's
//! figure), `--held` how many of them the W3 device's team holds (default 10,000), and
//! `--store DIR` keeps the seeded store in DIR and reuses it in later runs with the same
//! `--held` (seeding a million documents takes a quarter of an hour), `--w5-secs` how long its
//! W5 edits (default 5; 0 leaves W5 out).
//! Prints one JSON line per workload on stdout; progress goes to stderr. `--quick` shrinks every
//! workload so that `all --quick` takes well under a minute (a smoke run, not a measurement).
//! W2 and W4 need W1's caseload, so asking for either runs W1 first (and prints it too). `all`
//! runs W1, W2 and W4 on one server, then W3, W5 and W6 each on their own. See bench/README.md
//! for what each figure means.
//!
//! `casenote-bench compare-backends [--quick] [--secs N] [--rate N] [--pushers N] [--backends
//! sled,pg-1,pg-2]` runs W3, W4 and W5L on the real `casenote-server` binary over sled, over
//! PostgreSQL with one node and with two ([`compare`]), and prints a table side by side after
//! the JSON lines; `--secs` is W5L's duration. It needs `cargo build --release -p
//! casenote-server` (the binary next to this one) and PostgreSQL's server binaries.

mod caseload;
mod compare;
mod deploy;
mod harness;
mod idle;
mod light;
mod scale;
mod seed;
mod team;

/// The server binary's allocator (see bench/Cargo.toml).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::bail;
use serde_json::Value;
use std::path::PathBuf;

/// The sizes of one run.
struct Sizes {
    w1_cases: usize,
    w2_runs: usize,
    w3_docs: usize,
    w3_runs: usize,
    w4_runs: usize,
    w5_devices: usize,
    w5_plans: usize,
    w5_secs: f64,
    w6_docs: usize,
    w6_held: usize,
    w6_idle_runs: usize,
    w6_edit_secs: f64,
}

impl Sizes {
    fn full() -> Self {
        Self {
            w1_cases: 1_000,
            w2_runs: 1,
            w3_docs: 10_000,
            w3_runs: 101,
            w4_runs: 5,
            w5_devices: 20,
            w5_plans: 10,
            w5_secs: 20.0,
            w6_docs: 100_000,
            w6_held: 10_000,
            // 501 idle syncs (under a second): a p99 of 51 samples was their second largest.
            w6_idle_runs: 501,
            w6_edit_secs: 5.0,
        }
    }

    fn quick() -> Self {
        Self {
            w1_cases: 50,
            w2_runs: 3,
            w3_docs: 1_000,
            w3_runs: 51,
            w4_runs: 5,
            w5_devices: 20,
            w5_plans: 10,
            w5_secs: 5.0,
            w6_docs: 10_000,
            w6_held: 1_000,
            w6_idle_runs: 21,
            w6_edit_secs: 3.0,
        }
    }
}

fn emit(mut line: Value, quick: bool) {
    if let Value::Object(m) = &mut line {
        m.insert("quick".into(), quick.into());
        m.insert(
            "cores".into(),
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
                .into(),
        );
    }
    println!("{line}");
}

const USAGE: &str = "usage: casenote-bench [W1|W2|W3|W4|W5|W5L|W6|all] [--quick] [--http-poll] \
     [--edit-interval-ms N] [--rate N] [--pushers N] [--docs N] [--held N] [--store DIR] \
     [--w5-secs N] (no workload: all of them, in turn, for several minutes)";

/// The options that take no value, and those followed by one.
const FLAGS: &[&str] = &["--quick", "--http-poll"];
const VALUED: &[&str] = &[
    "--edit-interval-ms",
    "--rate",
    "--pushers",
    "--docs",
    "--held",
    "--store",
    "--w5-secs",
];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve-store") {
        let Some(dir) = args.get(1) else {
            bail!("usage: casenote-bench serve-store DIR (internal: W6's server process)");
        };
        return harness::serve_store(&PathBuf::from(dir));
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}\n{COMPARE_USAGE}");
        return Ok(());
    }
    if args.first().map(String::as_str) == Some("compare-backends") {
        return compare_backends(&args[1..]);
    }
    for (i, a) in args.iter().enumerate() {
        let value_of = i > 0 && VALUED.contains(&args[i - 1].as_str());
        if a.starts_with('-')
            && !value_of
            && !FLAGS.contains(&a.as_str())
            && !VALUED.contains(&a.as_str())
        {
            bail!("unknown option {a}; {USAGE}");
        }
    }
    let quick = args.iter().any(|a| a == "--quick");
    let interval_ms: u64 = match args.iter().position(|a| a == "--edit-interval-ms") {
        Some(i) => match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(ms) if ms > 0 => ms,
            _ => bail!("--edit-interval-ms needs a number of milliseconds above 0"),
        },
        None => 500,
    };
    let mode = if args.iter().any(|a| a == "--http-poll") {
        team::Mode::HttpPoll
    } else {
        team::Mode::WebSocket {
            edit_interval: std::time::Duration::from_millis(interval_ms),
        }
    };
    let rate = rate_arg(&args)?;
    let pushers = pushers_arg(&args)?;
    let which: Vec<String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !(a.starts_with("--") || *i > 0 && VALUED.contains(&args[i - 1].as_str())))
        .map(|(_, a)| a)
        .map(|a| a.to_uppercase())
        .collect();
    let which = if which.is_empty() {
        vec!["ALL".to_string()]
    } else {
        which
    };
    for w in &which {
        if !["ALL", "W1", "W2", "W3", "W4", "W5", "W5L", "W6"].contains(&w.as_str()) {
            bail!("unknown workload {w}; {USAGE}; {COMPARE_USAGE}");
        }
    }
    let wants = |w: &str| which.iter().any(|x| x == w || x == "ALL");
    let mut s = if quick { Sizes::quick() } else { Sizes::full() };
    if let Some(n) = count_arg(&args, "--docs")? {
        s.w6_docs = n;
    }
    if let Some(n) = count_arg(&args, "--held")? {
        s.w6_held = n;
    }
    if s.w6_held > s.w6_docs {
        bail!(
            "--held ({}) cannot exceed --docs ({})",
            s.w6_held,
            s.w6_docs
        );
    }
    if let Some(i) = args.iter().position(|a| a == "--w5-secs") {
        match args.get(i + 1).and_then(|v| v.parse::<f64>().ok()) {
            Some(secs) if secs >= 0.0 => s.w6_edit_secs = secs,
            _ => bail!("--w5-secs needs W6's editing time in seconds (0: no W5)"),
        }
    }
    let keep = match args.iter().position(|a| a == "--store") {
        Some(i) => match args.get(i + 1) {
            Some(dir) if !dir.starts_with("--") => Some(PathBuf::from(dir)),
            _ => bail!("--store needs a directory"),
        },
        None => None,
    };
    let started = std::time::Instant::now();

    if wants("W1") || wants("W2") || wants("W4") {
        progress!("W1: seeding {} cases through a device", s.w1_cases);
        let (w1, mut load) = caseload::w1(s.w1_cases)?;
        emit(w1, quick);
        if wants("W2") || wants("W4") {
            emit(caseload::w2(&mut load, s.w2_runs)?, quick);
        }
        if wants("W4") {
            emit(caseload::w4(&load, s.w4_runs)?, quick);
        }
        drop(load.puller.take());
        load.server.stop();
    }
    if wants("W3") {
        progress!("W3: a device holding {} documents", s.w3_docs);
        emit(idle::w3(s.w3_docs, s.w3_runs)?, quick);
    }
    if wants("W5") {
        emit(team::w5(s.w5_devices, s.w5_plans, s.w5_secs, mode)?, quick);
    }
    if wants("W5L") {
        emit(
            light::w5l(light::Light {
                devices: s.w5_devices,
                plans: s.w5_plans,
                secs: s.w5_secs,
                rate,
                pushers: pushers.min(s.w5_devices),
            })?,
            quick,
        );
    }
    if wants("W6") {
        let scale = scale::Scale {
            docs: s.w6_docs,
            held: s.w6_held,
            idle_runs: s.w6_idle_runs,
            edit_secs: s.w6_edit_secs,
            keep,
        };
        emit(scale::w6(&scale, mode)?, quick);
    }
    progress!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `--rate N`: W5L's offered edits per second (default 2,000; 0: as fast as possible).
fn rate_arg(args: &[String]) -> anyhow::Result<f64> {
    Ok(match args.iter().position(|a| a == "--rate") {
        Some(i) => match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(r) if r >= 0.0 => r,
            _ => bail!("--rate needs a number of edits per second (0: as fast as possible)"),
        },
        None => 2_000.0,
    })
}

/// `--docs N`, `--held N`: a count above 0, if given.
fn count_arg(args: &[String], flag: &str) -> anyhow::Result<Option<usize>> {
    match args.iter().position(|a| a == flag) {
        Some(i) => match args
            .get(i + 1)
            .and_then(|v| v.replace('_', "").parse().ok())
        {
            Some(n) if n > 0 => Ok(Some(n)),
            _ => bail!("{flag} needs a number of documents above 0"),
        },
        None => Ok(None),
    }
}

/// `--pushers N`: W5L's sending threads (default 20).
fn pushers_arg(args: &[String]) -> anyhow::Result<usize> {
    Ok(match args.iter().position(|a| a == "--pushers") {
        Some(i) => match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(n) if n > 0 => n,
            _ => bail!("--pushers needs a number of threads above 0"),
        },
        None => 20,
    })
}

const COMPARE_USAGE: &str = "usage: casenote-bench compare-backends [--quick] [--secs N] \
    [--rate N] [--pushers N] [--backends sled,pg-1,pg-2]";

/// `compare-backends`: W3, W4 and W5L on each backend, one JSON line each, then the table.
fn compare_backends(args: &[String]) -> anyhow::Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let s = if quick { Sizes::quick() } else { Sizes::full() };
    let secs: f64 = match args.iter().position(|a| a == "--secs") {
        Some(i) => match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(x) if x > 0.0 => x,
            _ => bail!("--secs needs W5L's duration in seconds, above 0; {COMPARE_USAGE}"),
        },
        None => s.w5_secs,
    };
    let backends = match args.iter().position(|a| a == "--backends") {
        Some(i) => parse_backends(args.get(i + 1).map(String::as_str).unwrap_or(""))?,
        None => vec![
            deploy::Backend::Sled,
            deploy::Backend::Postgres { nodes: 1 },
            deploy::Backend::Postgres { nodes: 2 },
        ],
    };
    for (i, a) in args.iter().enumerate() {
        let value_of = i > 0
            && ["--secs", "--rate", "--pushers", "--backends"].contains(&args[i - 1].as_str());
        if !value_of
            && !["--quick", "--secs", "--rate", "--pushers", "--backends"].contains(&a.as_str())
        {
            bail!("unknown argument {a}; {COMPARE_USAGE}");
        }
    }
    let sizes = compare::Sizes {
        w3_docs: s.w3_docs,
        w3_runs: s.w3_runs,
        w4_cases: s.w1_cases,
        w4_runs: s.w4_runs,
        light: light::Light {
            devices: s.w5_devices,
            plans: s.w5_plans,
            secs,
            rate: rate_arg(args)?,
            pushers: pushers_arg(args)?.min(s.w5_devices),
        },
    };
    let started = std::time::Instant::now();
    let lines = compare::run(&sizes, &backends, &mut |line| emit(line.clone(), quick))?;
    println!();
    print!("{}", compare::table(&lines));
    progress!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `sled,pg-1,pg-2`: the backends to compare, in that order.
fn parse_backends(list: &str) -> anyhow::Result<Vec<deploy::Backend>> {
    list.split(',')
        .map(|b| match b.trim() {
            "sled" => Ok(deploy::Backend::Sled),
            pg => match pg.strip_prefix("pg-").and_then(|n| n.parse().ok()) {
                Some(nodes) if nodes > 0 => Ok(deploy::Backend::Postgres { nodes }),
                _ => bail!(
                    "unknown backend {b:?}: sled, pg-1, pg-2 (pg-N: N nodes); {COMPARE_USAGE}"
                ),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy::Backend;

    #[test]
    fn backends_parse_in_the_order_given_and_unknown_ones_are_refused() {
        assert_eq!(
            parse_backends("pg-2,sled").unwrap(),
            vec![Backend::Postgres { nodes: 2 }, Backend::Sled]
        );
        for bad in ["", "mysql", "pg-0", "pg-x", "sled,"] {
            assert!(parse_backends(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
