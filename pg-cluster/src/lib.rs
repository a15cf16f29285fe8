//! A throwaway PostgreSQL cluster, started and stopped by casenote's tests and benchmarks
//! themselves: `initdb` on a temporary directory, `pg_ctl start` on a free port of 127.0.0.1
//! (and a Unix socket in the same directory, nowhere else), `pg_ctl stop` when dropped.
//!
//! `initdb` and the server refuse to run as root, so as root (CI runs as root) they run as the
//! `postgres` user (`runuser`), on a directory handed to that user. The binaries come from
//! `CASENOTE_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin` (Debian's `postgresql`
//! package, which `scripts/test` installs when it is missing).
//!
//! A test process can die without running destructors (a panic in a static's user, SIGKILL),
//! so every cluster also gets a watchdog: a small shell loop, detached from the test's output,
//! that stops the cluster and removes its directory once the process that started it is gone.
//!
//! Settings: `fsync=off` unless [`Options::durable`]: a test kills casenote processes, never the
//! machine, and nothing a PostgreSQL server committed is lost when a client dies, so flushing
//! to the disk buys no test anything; the benchmarks keep the default (`fsync=on`) so that
//! their figures are those of a durable database.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// How to start a cluster.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Keep PostgreSQL's defaults for durability (`fsync=on`): for benchmarks.
    pub durable: bool,
}

/// A running throwaway cluster; stopped, and its directory removed, when dropped.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    databases: AtomicU64,
}

/// How many times a start is tried on a fresh port: another process may take the free port
/// between the moment it is found and the moment the server binds it.
const START_TRIES: usize = 5;

impl Cluster {
    /// Starts a cluster with the test settings (see the module docs).
    pub fn start() -> io::Result<Cluster> {
        Self::start_with(&Options::default())
    }

    /// Starts a cluster with `options`.
    pub fn start_with(options: &Options) -> io::Result<Cluster> {
        let bin = bin_dir()?;
        let as_postgres = is_root()?;
        let dir = tempfile::Builder::new().prefix("casenote-pg-").tempdir()?;
        if as_postgres {
            hand_over(dir.path())?;
        }
        let data = dir.path().join("data");
        let cluster = |port| Cluster {
            dir,
            bin,
            port,
            as_postgres,
            databases: AtomicU64::new(0),
        };
        let mut cluster = cluster(0);
        cluster.run_checked(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        let mut last = None;
        for _ in 0..START_TRIES {
            cluster.port = free_port()?;
            match cluster.pg_ctl_start(options) {
                Ok(()) => {
                    cluster.watchdog()?;
                    return Ok(cluster);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("the cluster did not start")))
    }

    /// The port the cluster listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connection URL of database `name` as the superuser `postgres` (trust on loopback).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a fresh, empty database and returns its URL.
    pub fn create_database(&self) -> io::Result<String> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("casenote_{n}");
        self.create_named(&name)?;
        Ok(self.url(&name))
    }

    /// Creates database `name` (letters, digits and `_` only) unless it exists; returns its URL.
    pub fn database(&self, name: &str) -> io::Result<String> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(io::Error::other(format!("a bad database name: {name:?}")));
        }
        let exists = self.psql(&format!(
            "SELECT 1 FROM pg_database WHERE datname = '{name}'"
        ))?;
        if exists.trim() != "1" {
            self.create_named(name)?;
        }
        Ok(self.url(name))
    }

    /// Runs one SQL statement on database `postgres` through `psql`; returns its unaligned,
    /// tuples-only output.
    pub fn psql(&self, sql: &str) -> io::Result<String> {
        let port = self.port.to_string();
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "psql failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn create_named(&self, name: &str) -> io::Result<()> {
        self.psql(&format!("CREATE DATABASE {name}")).map(|_| ())
    }

    /// The cluster's data directory (tests search its files for bytes that must be gone).
    pub fn data_dir(&self) -> PathBuf {
        self.data()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl_start(&self, options: &Options) -> io::Result<()> {
        let dir = self.dir.path();
        let mut settings = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 -c wal_recycle=off",
            self.port,
            dir.display()
        );
        if !options.durable {
            settings.push_str(" -c fsync=off -c full_page_writes=off");
        }
        let log = dir.join("server.log");
        let data = self.data();
        self.run_checked(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-o".as_ref(),
                settings.as_ref(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "start".as_ref(),
            ],
        )
    }

    /// A detached shell loop that stops the cluster once this process is gone.
    fn watchdog(&self) -> io::Result<()> {
        let stop = self.command_line("pg_ctl", &["-D", &self.data().to_string_lossy()]);
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {stop} -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            dir = self.dir.path().display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(|_| ())
    }

    /// `tool args...` as a shell command line, run as `postgres` when we are root.
    fn command_line(&self, tool: &str, args: &[&str]) -> String {
        let mut line = String::new();
        if self.as_postgres {
            line.push_str("runuser -u postgres -- ");
        }
        line.push_str(&format!("'{}'", self.bin.join(tool).display()));
        for a in args {
            line.push_str(&format!(" '{a}'"));
        }
        line
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    fn run_checked(&self, tool: &str, args: &[&std::ffi::OsStr]) -> io::Result<()> {
        let out = self
            .command(tool)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()?;
        if out.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        Err(io::Error::other(format!(
            "{tool} failed: {}{}\n{log}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The directory of PostgreSQL's server binaries.
fn bin_dir() -> io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CASENOTE_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        io::Error::other(
            "PostgreSQL's server binaries were not found under /usr/lib/postgresql \
             (scripts/test installs the `postgresql` package; or set CASENOTE_PG_BIN)",
        )
    })
}

fn is_root() -> io::Result<bool> {
    let out = Command::new("id").arg("-u").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Gives the `postgres` user the cluster's directory.
fn hand_over(dir: &Path) -> io::Result<()> {
    let status = Command::new("chown")
        .arg("postgres:")
        .arg(dir)
        .stdin(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(
            "could not hand the cluster's directory to the `postgres` user",
        ))
    }
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_creates_databases_and_stops_when_dropped() {
        let cluster = Cluster::start().unwrap();
        let url = cluster.create_database().unwrap();
        assert!(url.ends_with("/casenote_0"), "{url}");
        assert_eq!(
            cluster.database("named_one").unwrap(),
            cluster.url("named_one")
        );
        // A second call finds it rather than failing.
        cluster.database("named_one").unwrap();
        let names = cluster
            .psql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database")
            .unwrap();
        assert!(
            names.contains("casenote_0") && names.contains("named_one"),
            "{names}"
        );
        let port = cluster.port();
        let dir = cluster.dir.path().to_path_buf();
        drop(cluster);
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "the cluster still listens after it was dropped"
        );
        assert!(!dir.exists(), "the cluster's directory was left behind");
    }
}
