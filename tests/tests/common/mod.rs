//! The end-to-end harness: real server processes on 127.0.0.1:0 over real sled directories (or
//! real PostgreSQL databases, [`pg`]), and real `casenote` CLI processes over real device stores.

#![allow(dead_code)]

pub mod pg;
#[allow(unused_imports)]
pub use pg::{on_postgres, store_args};

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How many rounds a randomised test runs: more when slow suites are on
/// (`CASENOTE_SLOW_TESTS=1`, as CI runs them).
pub fn rounds(quick: usize, slow: usize) -> usize {
    if std::env::var_os("CASENOTE_SLOW_TESTS").is_some() {
        slow
    } else {
        quick
    }
}

pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_e2e-casenote-server");
pub const CLI_BIN: &str = env!("CARGO_BIN_EXE_e2e-casenote");

/// Runs `casenote-server` with `args` to completion; panics with its stderr if it fails.
pub fn server_cmd(args: &[&str]) -> String {
    let out = Command::new(SERVER_BIN)
        .args(args)
        .output()
        .expect("run casenote-server");
    assert!(
        out.status.success(),
        "casenote-server {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The audit log of `data`, oldest first, as `audit show --json` prints it (the server must not
/// be running on `data`).
pub fn audit_entries(data: &Path) -> Vec<Value> {
    let out = server_cmd_on(&["audit", "show"], data, &["--json"]);
    let v: Value = serde_json::from_str(&out).expect("audit show --json prints JSON");
    v.as_array()
        .expect("audit show --json prints an array")
        .clone()
}

/// One demo staff member's token, as `demo --json` prints it.
#[derive(Clone, Debug)]
pub struct Staff {
    pub name: String,
    pub team: String,
    pub token: String,
}

/// Loads the demo borough into `data` and returns its staff tokens.
pub fn demo(data: &Path) -> Vec<Staff> {
    demo_with_admin(data).0
}

/// Loads the demo borough into `data` and returns its staff tokens and the admin token it
/// printed.
pub fn demo_with_admin(data: &Path) -> (Vec<Staff>, String) {
    let out = server_cmd_on(&["demo"], data, &["--json"]);
    let v: Value = serde_json::from_str(&out).expect("demo --json prints one JSON object");
    let admin = v["admin_token"]
        .as_str()
        .expect("demo --json prints an admin token")
        .to_string();
    let staff = v["tokens"]
        .as_array()
        .expect("a tokens array")
        .iter()
        .map(|t| Staff {
            name: t["staff"].as_str().unwrap().to_string(),
            team: t["team"].as_str().unwrap().to_string(),
            token: t["token"].as_str().unwrap().to_string(),
        })
        .collect();
    (staff, admin)
}

/// A fresh temporary folder with the demo borough loaded into its `server` data directory.
pub fn demo_borough() -> (tempfile::TempDir, PathBuf, Vec<Staff>) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let staff = demo(&data);
    (tmp, data, staff)
}

/// The store key of the devices tests open through the Rust API (the same for every device, so
/// a test can reopen a store after a crash).
pub fn store_key() -> casenote_client_core::StoreKey {
    casenote_client_core::StoreKey::from_bytes([0x5a; 32])
}

/// A device with its store in `tmp/store`, signed in to `server` as the demo staff member `name`.
pub fn device(
    tmp: &tempfile::TempDir,
    server: &Server,
    staff: &[Staff],
    store: &str,
    name: &str,
) -> Cli {
    Cli::login(tmp.path().join(store), server, &token_of(staff, name))
}

/// Issues a new device token for a staff member (the server must not be running on `data`).
pub fn issue_token(data: &Path, staff: &str) -> String {
    server_cmd_on(&["admin"], data, &["token", "issue", "--staff", staff])
        .trim()
        .to_string()
}

/// Runs `casenote-server COMMAND... STORE REST...`, where STORE names the store of `data`
/// ([`store_args`]: `--data DIR`, or `--postgres URL` on PostgreSQL).
pub fn server_cmd_on(command: &[&str], data: &Path, rest: &[&str]) -> String {
    let store = store_args(data);
    let mut all: Vec<&str> = command.to_vec();
    all.extend(store.iter().map(String::as_str));
    all.extend_from_slice(rest);
    server_cmd(&all)
}

/// The token of the demo staff member called `name`.
pub fn token_of(staff: &[Staff], name: &str) -> String {
    staff
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no demo staff member {name}"))
        .token
        .clone()
}

/// A running server process.
pub struct Server {
    child: Child,
    pub url: String,
    pub data: PathBuf,
    /// The database of a node started with [`Server::start_postgres`].
    pub postgres: Option<String>,
}

impl Server {
    /// Starts a server on `data`, on a free port.
    pub fn start(data: &Path) -> Server {
        Self::start_on(data, "127.0.0.1:0")
    }

    /// Starts a server on `data` listening on `addr`.
    pub fn start_on(data: &Path, addr: &str) -> Server {
        Self::start_with(data, addr, &[])
    }

    /// Starts a server on `data` listening on `addr`, with more `serve` options.
    pub fn start_with(data: &Path, addr: &str, options: &[&str]) -> Server {
        let mut cmd = Command::new(SERVER_BIN);
        cmd.arg("serve")
            .args(store_args(data))
            .args(["--listen", addr])
            .args(options);
        Self::spawn(cmd, data)
    }

    /// Starts a server on `data` listening on `addr`, its wall clock moved by libfaketime
    /// (`offset` in its syntax: `+5h`), its log (`RUST_LOG=info`) written to `log`. Its monotonic
    /// clock is left alone, so its timeouts run as usual.
    pub fn start_faked(data: &Path, addr: &str, offset: &str, log: &Path) -> Server {
        const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
        assert!(
            Path::new(FAKETIME_LIB).exists(),
            "{FAKETIME_LIB} is missing: install Debian's `faketime` package (scripts/test does)"
        );
        let mut cmd = Command::new(SERVER_BIN);
        cmd.arg("serve")
            .args(store_args(data))
            .args(["--listen", addr])
            .env("LD_PRELOAD", FAKETIME_LIB)
            .env("FAKETIME", offset)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("FAKETIME_NO_CACHE", "1")
            .env("RUST_LOG", "info")
            .env("CASENOTE_TEST_LOG_FILE", log);
        Self::spawn(cmd, data)
    }

    /// Starts a server on `data`, on a free port, writing its log (`RUST_LOG=info`) to `log`.
    pub fn start_logging(data: &Path, log: &Path) -> Server {
        Self::start_logging_on(data, "127.0.0.1:0", log)
    }

    /// Starts a server on `data` listening on `addr`, writing its log (`RUST_LOG=info`) to `log`.
    pub fn start_logging_on(data: &Path, addr: &str, log: &Path) -> Server {
        let mut cmd = Command::new(SERVER_BIN);
        cmd.arg("serve")
            .args(store_args(data))
            .args(["--listen", addr])
            .env("RUST_LOG", "info")
            .env("CASENOTE_TEST_LOG_FILE", log);
        Self::spawn(cmd, data)
    }

    /// Starts a server node on the PostgreSQL database `url` (whatever the suite's backend),
    /// on a free port. Several nodes may serve one database.
    pub fn start_postgres(url: &str) -> Server {
        Self::start_postgres_on(url, "127.0.0.1:0")
    }

    /// Starts a server node on the PostgreSQL database `url`, listening on `addr`.
    pub fn start_postgres_on(url: &str, addr: &str) -> Server {
        let mut cmd = Command::new(SERVER_BIN);
        cmd.args(["serve", "--postgres", url, "--listen", addr]);
        let mut server = Self::spawn(cmd, Path::new(""));
        server.postgres = Some(url.to_string());
        server
    }

    /// Starts a server on `data`, on a free port, allowed to open at most `nofile` files (soft
    /// and hard limit, as an operator's `ulimit -n` or systemd's `LimitNOFILE` sets it).
    pub fn start_with_fd_limit(data: &Path, nofile: u64) -> Server {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(SERVER_BIN)
            .arg("serve")
            .args(store_args(data))
            .args(["--listen", "127.0.0.1:0"]);
        Self::spawn(cmd, data)
    }

    fn spawn(mut cmd: Command, data: &Path) -> Server {
        let log_file = cmd
            .get_envs()
            .find(|(k, _)| *k == "CASENOTE_TEST_LOG_FILE")
            .and_then(|(_, v)| v.map(PathBuf::from));
        let stderr = match log_file {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("create the log file")),
            None if std::env::var_os("CASENOTE_TEST_LOG").is_some() => Stdio::inherit(),
            None => Stdio::null(),
        };
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn casenote-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server prints its address within a minute");
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"))
            .to_string();
        Server {
            child,
            url,
            data: data.to_path_buf(),
            postgres: None,
        }
    }

    /// The server process's resident memory, in MiB (from /proc).
    pub fn rss_mb(&self) -> f64 {
        self.status_mb("VmRSS:")
    }

    /// The most resident memory the server process has held since it started, in MiB.
    pub fn peak_rss_mb(&self) -> f64 {
        self.status_mb("VmHWM:")
    }

    fn status_mb(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// The `host:port` the server listens on.
    pub fn addr(&self) -> String {
        let url = self.url.trim_start_matches("https://");
        url.trim_start_matches("http://").to_string()
    }

    /// Stops the server as an operator or systemd does, with SIGTERM, and returns how it
    /// exited (waiting at most a minute, then SIGKILL).
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().expect("reap the server");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends the server SIGTERM and returns at once (see [`Server::wait`]).
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
    }

    /// Waits (at most a minute, then SIGKILL) for the server to exit, and returns how it did.
    pub fn wait(mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().expect("reap the server");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server with SIGKILL and waits for it to be gone.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }

    /// Stops the server, runs `work` on its data directory (admin commands need it to
    /// themselves), and starts the server again on the same port, so devices need not sign in
    /// again.
    pub fn offline(self, work: impl FnOnce(&Path)) -> Server {
        let (data, addr) = (self.data.clone(), self.addr());
        drop(self);
        work(&data);
        Server::start_on(&data, &addr)
    }

    /// Kills the server with SIGKILL and starts it again on the same data and port.
    pub fn crash_and_restart(self) -> Server {
        let (data, addr, postgres) = (self.data.clone(), self.addr(), self.postgres.clone());
        self.kill9();
        match postgres {
            Some(url) => Server::start_postgres_on(&url, &addr),
            None => Server::start_on(&data, &addr),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lets this test process hold at least `n` open files (sockets included), raising its own
/// limit with `prlimit` (CI runs as root, so the hard limit may be raised too).
pub fn allow_open_files(n: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("read /proc/self/limits");
    let (soft, hard) = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| {
            let mut f = l.split_whitespace().skip(3);
            let parse = |v: Option<&str>| v.and_then(|v| v.parse::<u64>().ok()).unwrap_or(u64::MAX);
            (parse(f.next()), parse(f.next()))
        })
        .expect("a Max open files line");
    if soft >= n {
        return;
    }
    let value = if hard >= n {
        format!("--nofile={n}:")
    } else {
        format!("--nofile={n}:{n}")
    };
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(value)
        .status()
        .expect("run prlimit");
    assert!(
        status.success(),
        "could not raise this test's open-file limit to {n}"
    );
}

/// A field device: the `casenote` CLI over its own store directory.
pub struct Cli {
    pub store: PathBuf,
}

impl Cli {
    pub fn new(store: PathBuf) -> Cli {
        Cli { store }
    }

    /// A device signed in to `server` with `token`.
    pub fn login(store: PathBuf, server: &Server, token: &str) -> Cli {
        let cli = Cli::new(store);
        cli.ok(&["login", "--server", &server.url, "--token", token]);
        cli
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(CLI_BIN);
        // The CLI's default key file lives under XDG_CONFIG_HOME: keep it beside the test's
        // store (outside the store directory) rather than in the real home directory.
        let mut config = self.store.as_os_str().to_owned();
        config.push(".config");
        cmd.env("XDG_CONFIG_HOME", config)
            .env_remove("CASENOTE_KEY_FILE")
            .env_remove("CASENOTE_PASSPHRASE");
        cmd.arg("--store").arg(&self.store).args(args);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run casenote")
    }

    /// Runs a command that must succeed; returns its stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "casenote {args:?} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Runs a command that must fail; returns its exit code and stderr.
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "casenote {args:?} should have failed but printed {}",
            String::from_utf8_lossy(&out.stdout)
        );
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    pub fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).expect("valid JSON")
    }

    pub fn show(&self, case: &str) -> Value {
        self.json(&["show", case, "--json"])
    }

    /// The texts of a case's notes as this device shows them.
    pub fn note_texts(&self, case: &str) -> Vec<String> {
        note_texts(&self.show(case))
    }

    pub fn sync(&self) -> Value {
        self.json(&["sync", "--json"])
    }
}

/// The text of every note of a `show --json` value.
pub fn note_texts(show: &Value) -> Vec<String> {
    show["notes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            n["content"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// The text of the plan of a `show --json` value.
pub fn plan_text(show: &Value) -> String {
    show["plans"][0]["content"]["narrative"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The About Me text of a `show --json` value.
pub fn about_me(show: &Value) -> String {
    show["record"]["about_me"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

impl Cli {
    /// The store key the CLI made for this store (its default key file, beside the store).
    pub fn store_key_file(&self) -> PathBuf {
        let mut config = self.store.as_os_str().to_owned();
        config.push(".config");
        let keys = PathBuf::from(config).join("casenote").join("keys");
        let files: Vec<PathBuf> = walk(&keys);
        assert_eq!(files.len(), 1, "one key file under {}", keys.display());
        files[0].clone()
    }

    /// Opens this device's store directly, under its key (no CLI process may have it open).
    pub fn open_store(&self) -> casenote_client_core::store::DeviceStore {
        let key = casenote_cli::keys::read_key_file(&self.store_key_file()).unwrap();
        casenote_client_core::store::DeviceStore::open(&self.store, &key).unwrap()
    }

    /// Every record of this device's store, decrypted, concatenated: what the store holds.
    pub fn decrypted_bytes(&self) -> Vec<u8> {
        self.open_store()
            .dump()
            .unwrap()
            .into_iter()
            .flat_map(|(k, v)| k.into_iter().chain(v))
            .collect()
    }

    /// The sealed bytes, as on disk, of every record this device holds about `doc`.
    pub fn sealed_records_of(&self, doc: &str) -> Vec<Vec<u8>> {
        self.open_store()
            .sealed_records_of(doc.parse().unwrap())
            .unwrap()
    }
}

/// Whether every one of `records` (non-empty) is in `haystack`.
pub fn all_in(haystack: &[u8], records: &[Vec<u8>]) -> bool {
    !records.is_empty()
        && records
            .iter()
            .all(|r| haystack.windows(r.len()).any(|w| w == r.as_slice()))
}

/// Whether any one of `records` is in `haystack`.
pub fn any_in(haystack: &[u8], records: &[Vec<u8>]) -> bool {
    records
        .iter()
        .any(|r| haystack.windows(r.len()).any(|w| w == r.as_slice()))
}

/// Every byte of every file under `dir`.
pub fn all_bytes_under(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in walk(dir) {
        out.extend(std::fs::read(entry).unwrap_or_default());
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Runs `casenote-server admin --data DATA args...`; returns stdout, trimmed. The store is
/// created first (`casenote-server init`) if there is none: `admin` itself refuses a directory
/// that holds no store.
/// Whether `needle` stands anywhere in `haystack` (byte searches of stores and logs).
pub fn contains(haystack: &[u8], needle: impl AsRef<[u8]>) -> bool {
    let needle = needle.as_ref();
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The ids of the cases `dev` holds (`case list --json`).
pub fn case_ids(dev: &Cli) -> Vec<String> {
    dev.json(&["case", "list", "--json"])
        .as_array()
        .expect("case list --json prints an array")
        .iter()
        .map(|c| c["case_id"].as_str().unwrap().to_string())
        .collect()
}

/// `casenote-server admin --server URL ARGS...` with the admin token in CASENOTE_ADMIN_TOKEN.
pub fn admin_over_api(server: &Server, token: &str, args: &[&str]) -> Output {
    let mut all = vec!["admin", "--server", server.url.as_str()];
    all.extend_from_slice(args);
    Command::new(SERVER_BIN)
        .args(all)
        .env("CASENOTE_ADMIN_TOKEN", token)
        .env_remove("CASENOTE_POSTGRES_URL")
        .output()
        .expect("run casenote-server")
}

/// [`admin_over_api`], which must succeed: its stdout, trimmed.
pub fn admin_api_ok(server: &Server, token: &str, args: &[&str]) -> String {
    let out = admin_over_api(server, token, args);
    assert!(
        out.status.success(),
        "admin {args:?} over the API failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Every byte of the server's store: the sled directory, or every file of the PostgreSQL
/// cluster (all its databases, its write-ahead log).
pub fn server_store_bytes(data: &Path) -> Vec<u8> {
    if on_postgres() {
        all_bytes_under(&pg::cluster().data_dir())
    } else {
        all_bytes_under(data)
    }
}

pub fn admin(data: &Path, args: &[&str]) -> String {
    if !data.join("db").exists() {
        server_cmd_on(&["init"], data, &[]);
    }
    server_cmd_on(&["admin"], data, args).trim().to_string()
}

/// Raw protocol access for tests that play a device (or an attacker) without client-core.
pub mod raw {
    use casenote_protocol::wire::{
        self, DocPull, DocPush, SyncRequest, SyncResponse, PROTOCOL_VERSION,
    };
    use casenote_protocol::{ErrorBody, Seq};

    /// One sync request; `Err((status, body))` for an HTTP error.
    pub fn sync(
        url: &str,
        token: &str,
        cursor: Seq,
        docs: Vec<DocPush>,
    ) -> Result<SyncResponse, (u16, ErrorBody)> {
        sync_confirming(url, token, cursor, docs, None)
    }

    /// One sync request that confirms an earlier reconciliation, as a device does once it has
    /// applied it.
    pub fn sync_confirming(
        url: &str,
        token: &str,
        cursor: Seq,
        docs: Vec<DocPush>,
        confirmed_reconcile: Option<u64>,
    ) -> Result<SyncResponse, (u16, ErrorBody)> {
        let req = SyncRequest {
            version: PROTOCOL_VERSION,
            cursor,
            device_clock_ms: 0,
            docs,
            log_id: None,
            confirmed_reconcile,
            views: Vec::new(),
            restricted: Vec::new(),
        };
        sync_request(url, token, &req)
    }

    /// Sends `req` as it is; `Err((status, body))` for an HTTP error.
    pub fn sync_request(
        url: &str,
        token: &str,
        req: &SyncRequest,
    ) -> Result<SyncResponse, (u16, ErrorBody)> {
        let resp = ureq::post(&format!("{url}/v1/sync"))
            .set("authorization", &format!("Bearer {token}"))
            .set("content-type", wire::CBOR_MEDIA_TYPE)
            .send_bytes(&wire::encode(req));
        match resp {
            Ok(r) => {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut r.into_reader(), &mut bytes).unwrap();
                Ok(wire::decode_response(&bytes).expect("a valid response"))
            }
            Err(ureq::Error::Status(code, r)) => {
                Err((code, r.into_json().expect("a JSON error body")))
            }
            Err(e) => panic!("transport: {e}"),
        }
    }

    /// `GET /v1/whoami` for `token`.
    pub fn whoami(url: &str, token: &str) -> serde_json::Value {
        ureq::get(&format!("{url}/v1/whoami"))
            .set("authorization", &format!("Bearer {token}"))
            .call()
            .expect("whoami answers")
            .into_json()
            .expect("whoami is JSON")
    }

    /// The staff id behind `token`.
    pub fn staff_id(url: &str, token: &str) -> casenote_protocol::StaffId {
        whoami(url, token)["staff_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("a staff id")
    }

    /// Pulls everything after `cursor`, following pages; returns the pulls and the final cursor.
    pub fn pull_all(
        url: &str,
        token: &str,
        mut cursor: Seq,
    ) -> (Vec<DocPull>, Vec<casenote_protocol::DocId>, Seq) {
        let mut docs = Vec::new();
        let mut evictions = Vec::new();
        let mut confirm = None;
        for _ in 0..1000 {
            let r = sync_confirming(url, token, cursor, vec![], confirm).expect("pull succeeds");
            confirm = r.reconcile_id.or(confirm);
            docs.extend(r.docs);
            evictions.extend(r.evictions);
            cursor = r.cursor;
            if !r.more {
                return (docs, evictions, cursor);
            }
        }
        panic!("the server never stopped saying more");
    }
}

/// Changes made with automerge directly, past client-core's checks, as a device (or an attacker
/// holding a device's token) could send them.
pub mod craft {
    use automerge::{ActorId, Author, AutoCommit, Change};
    use casenote_protocol::wire::{self, DocPull, DocPush};
    use casenote_protocol::{CaseId, DocId, DocKind, StaffId};
    use serde_bytes::ByteBuf;

    /// A document as the server relays it.
    pub fn load(pull: &DocPull) -> AutoCommit {
        let mut doc = AutoCommit::new();
        doc.apply_changes(
            pull.changes
                .iter()
                .map(|b| Change::from_bytes(b.to_vec()).unwrap()),
        )
        .unwrap();
        doc
    }

    /// The changes `edit` makes to `doc`, under a fresh actor whose author is `staff`.
    pub fn craft(
        doc: &mut AutoCommit,
        staff: StaffId,
        edit: impl FnOnce(&mut AutoCommit),
    ) -> Vec<Change> {
        let base = doc.get_heads();
        doc.set_actor(ActorId::random());
        doc.set_author(Some(Author::from(staff.as_bytes().to_vec())));
        edit(doc);
        doc.commit();
        doc.get_changes(&base)
    }

    pub fn push_of(
        doc_id: DocId,
        case_id: CaseId,
        kind: DocKind,
        base: &[automerge::ChangeHash],
        changes: &[Change],
    ) -> DocPush {
        DocPush {
            doc_id,
            case_id,
            kind,
            base: wire::to_wire_heads(base),
            changes: changes
                .iter()
                .map(|c| ByteBuf::from(c.raw_bytes().to_vec()))
                .collect(),
        }
    }
}

/// Waits (within a generous deadline: a minute) until `f` holds; panics naming `what` if not.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never happened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a field device under a server outage shares with the test: when to stop, the markers of
/// edits the server acknowledged, and counts of syncs that succeeded and that failed.
#[derive(Clone, Default)]
pub struct FieldLoad {
    pub stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub acknowledged: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub ok: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub failed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FieldLoad {
    /// Tells the devices to stop and waits for them; the markers they never had acknowledged.
    pub fn stop_and_join(&self, workers: Vec<std::thread::JoinHandle<Vec<String>>>) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a device thread panicked"))
            .collect()
    }
}

/// A device in `dir` signed in to `url` that, until `load.stop`, alternately appends to the plan
/// of `case` and adds a note, each carrying a unique marker `<d{i}-{n}>`, syncing after each edit.
/// A sync the outage refused (unreachable, or a server error) is counted and tried again with the
/// next edit; anything else panics. Returns the markers of edits never acknowledged.
pub fn edit_and_sync_until_stopped(
    dir: PathBuf,
    url: String,
    token: String,
    case: casenote_protocol::CaseId,
    i: usize,
    load: FieldLoad,
) -> std::thread::JoinHandle<Vec<String>> {
    use casenote_client_core::{Error, TransportError};
    use std::sync::atomic::Ordering;
    std::thread::spawn(move || {
        let dev = casenote_client_core::Device::open(&dir, &store_key()).unwrap();
        while dev.login(&url, &token).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut pending = Vec::new();
        let mut n = 0;
        while !load.stop.load(Ordering::SeqCst) {
            let marker = format!("<d{i}-{n}>");
            n += 1;
            let edit = if n % 2 == 0 {
                dev.plan_append(case, &marker)
            } else {
                dev.note_add(
                    case,
                    casenote_protocol::record::NoteKind::Visit,
                    &marker,
                    None,
                )
                .map(|_| ())
            };
            match edit {
                Ok(()) => pending.push(marker),
                // The case arrives with this device's first successful sync.
                Err(Error::NotFound(..)) => {}
                Err(e) => panic!("device {i}: edit failed: {e}"),
            }
            match dev.sync() {
                Ok(_) => {
                    load.ok.fetch_add(1, Ordering::SeqCst);
                    load.acknowledged.lock().unwrap().append(&mut pending);
                }
                Err(Error::Transport(
                    TransportError::Unreachable { .. } | TransportError::Server { .. },
                )) => {
                    load.failed.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    panic!("device {i}: sync failed with something other than the outage: {e}")
                }
            }
        }
        pending
    })
}
