//! The server under test as a deployment: the real `casenote-server` binary serving a sled store
//! (`serve --data DIR`) or a PostgreSQL database (`serve --postgres URL`, one node or several on
//! the same database), for `compare-backends`.
//!
//! The database is a throwaway cluster of the `casenote-pg-cluster` crate started with its
//! durable option (`fsync=on`), so that PostgreSQL's figures are those of a durable database, as
//! sled's are. Every workload gets a fresh store: a new sled directory, or a new database on the
//! run's one cluster.
//!
//! A store is provisioned (demo, teams, tokens, seeded documents) in this process through the
//! server's library before any node serves it, and read again after the nodes stopped: a sled
//! store is held by one process at a time, and the same order is kept on PostgreSQL so that the
//! three deployments are measured the same way. The nodes are child processes, stopped with
//! SIGTERM (a clean stop: pending audit counts written, the store flushed) and waited for.

use crate::progress;
use anyhow::{bail, Context};
use casenote_pg_cluster::{Cluster, Options};
use casenote_server::store::postgres::PgStore;
use casenote_server::Store;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which store the server under test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sled,
    /// PostgreSQL, with this many server nodes on the one database.
    Postgres {
        nodes: usize,
    },
}

impl Backend {
    /// The column name in the comparison: `sled`, `pg-1`, `pg-2`.
    pub fn label(&self) -> String {
        match self {
            Backend::Sled => "sled".into(),
            Backend::Postgres { nodes } => format!("pg-{nodes}"),
        }
    }

    pub fn nodes(&self) -> usize {
        match self {
            Backend::Sled => 1,
            Backend::Postgres { nodes } => *nodes,
        }
    }
}

/// One store and the nodes serving it (none until [`Deployment::serve`]).
pub struct Deployment {
    pub backend: Backend,
    server_bin: PathBuf,
    pg_url: Option<String>,
    nodes: Vec<Node>,
    // Dropped last: the sled store, the devices' stores and the nodes' logs live here.
    scratch: tempfile::TempDir,
}

/// One server process.
struct Node {
    url: String,
    child: Child,
}

/// How long a node may take to stop cleanly after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

impl Deployment {
    /// A fresh store for `backend`: a sled directory, or a new database on `cluster`.
    pub fn create(
        backend: Backend,
        cluster: Option<&Cluster>,
        server_bin: &Path,
    ) -> anyhow::Result<Self> {
        let pg_url = match backend {
            Backend::Sled => None,
            Backend::Postgres { .. } => Some(
                cluster
                    .context("a PostgreSQL deployment needs a cluster")?
                    .create_database()?,
            ),
        };
        Ok(Self {
            backend,
            server_bin: server_bin.to_path_buf(),
            pg_url,
            nodes: Vec::new(),
            scratch: tempfile::tempdir()?,
        })
    }

    /// A directory for device stores, removed with the deployment.
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    fn sled_dir(&self) -> PathBuf {
        self.scratch.path().join("server")
    }

    /// Opens the store in this process, runs `f` on it, flushes and closes it. Only while no
    /// node serves it.
    pub fn with_store<T>(
        &self,
        f: impl FnOnce(&dyn Store) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        if !self.nodes.is_empty() {
            bail!("the store is opened in the benchmark only while no node serves it");
        }
        let store: Arc<dyn Store> = match &self.pg_url {
            None => casenote_server::open(&self.sled_dir())?,
            Some(url) => Arc::new(PgStore::open(url)?),
        };
        let out = f(store.as_ref())?;
        store.flush()?;
        Ok(out)
    }

    /// Starts the backend's nodes; returns their URLs (node i at index i).
    pub fn serve(&mut self) -> anyhow::Result<Vec<String>> {
        for i in 0..self.backend.nodes() {
            let node = self.start_node(i)?;
            self.nodes.push(node);
        }
        Ok(self.urls())
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.child.id()).collect()
    }

    fn start_node(&self, i: usize) -> anyhow::Result<Node> {
        let log = std::fs::File::create(self.scratch.path().join(format!("node-{i}.log")))?;
        let mut cmd = Command::new(&self.server_bin);
        cmd.arg("serve").args(["--listen", "127.0.0.1:0"]);
        match &self.pg_url {
            None => cmd.arg("--data").arg(self.sled_dir()),
            // Through the environment, as a deployment would pass a password.
            Some(url) => cmd.env("CASENOTE_POSTGRES_URL", url),
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("could not start {}", self.server_bin.display()))?;
        let stdout = child.stdout.take().context("the node's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(url) = line.trim().strip_prefix("casenote-server listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(self.scratch.path().join(format!("node-{i}.log")))
                .unwrap_or_default();
            bail!("node {i} did not start: {line:?}\n{log}");
        };
        progress!("{}: node {i} serving on {url}", self.backend.label());
        Ok(Node {
            url: url.to_string(),
            child,
        })
    }

    /// Stops every node cleanly (SIGTERM, then wait); a node that exits with an error, or
    /// needs killing, is an error naming its log.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        for (i, mut node) in self.nodes.drain(..).enumerate() {
            let _ = Command::new("kill")
                .args(["-TERM", &node.child.id().to_string()])
                .status();
            let deadline = Instant::now() + STOP_DEADLINE;
            let status = loop {
                if let Some(status) = node.child.try_wait()? {
                    break Some(status);
                }
                if Instant::now() > deadline {
                    let _ = node.child.kill();
                    let _ = node.child.wait();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if !status.is_some_and(|s| s.success()) {
                problems.push(format!("node {i} stopped with {status:?}"));
            }
        }
        if !problems.is_empty() {
            bail!(
                "{} (logs in {})",
                problems.join("; "),
                self.scratch.path().display()
            );
        }
        Ok(())
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }
}

/// The `casenote-server` binary: `CASENOTE_SERVER_BIN`, else the one next to this benchmark's
/// binary (`cargo build --release -p casenote-server` puts it there).
pub fn server_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("CASENOTE_SERVER_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .context("the benchmark's directory")?
        .join("casenote-server");
    if !bin.is_file() {
        bail!(
            "{} is missing: build it first (cargo build --release -p casenote-server), or set \
             CASENOTE_SERVER_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// Starts the run's PostgreSQL cluster, durable (`fsync=on`).
pub fn start_cluster() -> anyhow::Result<Cluster> {
    Cluster::start_with(&Options { durable: true }).context(
        "could not start a PostgreSQL cluster (install it: apt-get install -y postgresql; \
         scripts/test does)",
    )
}

/// CPU seconds (user + system) a process has used so far, from /proc/PID/stat; 0 when gone.
pub fn process_cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the ")" that ends the name: state is field 0, utime 11, stime 12.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of every `postgres` process on the machine (the run's cluster: its postmaster,
/// backends and background workers), by pid, so that a backend that exits mid-run still counts
/// up to its last reading.
pub fn postgres_cpu() -> HashMap<u32, f64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim() == "postgres" {
            out.insert(pid, process_cpu_s(pid));
        }
    }
    out
}
