//! What every workload needs: a real server on loopback over a real sled store (in this process, or
//! in a child process when its memory must be measured on its own), device tokens, memory readings
//! from /proc, statistics, and deterministic case-note text.
//!
//! Nothing here is mocked: the server is `casenote_server::run` on a tokio runtime bound to
//! 127.0.0.1:0, and devices reach it over HTTP. Devices are blocking (ureq), so callers drive them
//! from ordinary threads, never from inside the runtime.

use anyhow::{bail, Context};
use casenote_server::admin::{self, NewStaff};
use casenote_server::auth::{self, Principal};
use casenote_server::model::{By, Role};
use casenote_server::{SledStore, Store};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Writes a progress line to stderr (stdout carries only the JSON results).
#[macro_export]
macro_rules! progress {
    ($($arg:tt)*) => {
        eprintln!("[bench] {}", format_args!($($arg)*))
    };
}

/// The org the demo loads; benchmark teams are added to it.
pub const COUNCIL: &str = "Castlebridge Council";

/// A server running in this process, with its store still reachable for provisioning.
pub struct InProcessServer {
    pub url: String,
    pub store: Arc<SledStore>,
    pub demo: casenote_server::cli::demo::DemoOutput,
    runtime: tokio::runtime::Runtime,
    // Dropped last: the store's files live here.
    dir: tempfile::TempDir,
}

impl InProcessServer {
    /// Opens a fresh sled store in a temp dir, loads the demo borough and serves it.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let store = casenote_server::open(&dir.path().join("server"))?;
        let demo = casenote_server::cli::demo::load(store.as_ref(), casenote_server::now_ms())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("http://{}", listener.local_addr()?);
        runtime.spawn(casenote_server::run(
            listener,
            store.clone(),
            casenote_server::Config::default(),
            std::future::pending(),
        ));
        Ok(Self {
            url,
            store,
            demo,
            runtime,
            dir,
        })
    }

    /// The token the demo issued for `staff`.
    pub fn demo_token(&self, staff: &str) -> anyhow::Result<String> {
        demo_token(&self.demo, staff)
    }

    /// A directory for device stores, removed with the server.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// Stops serving; the store's files go with the temp dir.
    pub fn stop(self) {
        self.runtime.shutdown_timeout(Duration::from_secs(2));
        drop(self.store);
        drop(self.dir);
    }
}

/// The token the demo issued for `staff`.
pub fn demo_token(
    demo: &casenote_server::cli::demo::DemoOutput,
    staff: &str,
) -> anyhow::Result<String> {
    Ok(demo
        .tokens
        .iter()
        .find(|t| t.staff == staff)
        .with_context(|| format!("the demo has no staff member {staff}"))?
        .token
        .clone())
}

/// Enrols one more device for an existing member of staff and returns its token.
pub fn issue_token(store: &dyn Store, staff: &str, device_name: &str) -> anyhow::Result<String> {
    let staff = admin::find_staff(store, staff)?;
    let now = casenote_server::now_ms();
    let issued = admin::issue_token(store, By::Cli, staff.staff_id, device_name, now)?;
    Ok(issued.token)
}

/// The principal a token stands for, as the server would authenticate it.
pub fn principal(store: &dyn Store, token: &str) -> anyhow::Result<Principal> {
    match auth::authenticate(store, token)? {
        auth::Authenticated::Ok(who) => Ok(who),
        _ => bail!("a freshly issued token did not authenticate"),
    }
}

/// The names of `who`'s organisation and first team, as the directory has them.
pub fn names_of(store: &dyn Store, who: &Principal) -> anyhow::Result<(String, String)> {
    Ok(casenote_server::store::read(store, |t| {
        let org = t.org(who.staff.org_id)?.map(|o| o.name).unwrap_or_default();
        let team = match who.staff.teams.first() {
            Some(id) => t.team(*id)?.map(|t| t.name).unwrap_or_default(),
            None => String::new(),
        };
        Ok((org, team))
    })?)
}

/// Adds a team of `n` social workers to the council and returns one device token each.
pub fn provision_team(store: &dyn Store, team: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let now = casenote_server::now_ms();
    admin::add_team(store, By::Cli, COUNCIL, team, now)?;
    let mut tokens = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("{team} Worker {i:02}");
        let new = NewStaff {
            name: &name,
            role: Role::SocialWorker,
            org: COUNCIL,
            teams: &[team.to_string()],
        };
        let staff = admin::add_staff(store, By::Cli, new, now)?;
        tokens.push(admin::issue_token(store, By::Cli, staff.staff_id, "bench device", now)?.token);
    }
    Ok(tokens)
}

/// A server in a child process (this binary's `serve-store` mode), so that its memory can be read
/// apart from the devices'. It exits when its stdin closes.
pub struct ChildServer {
    pub url: String,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl ChildServer {
    /// Serves the sled store in `data_dir` (which no one else may hold open).
    pub fn start(data_dir: &Path) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("serve-store")
            .arg(data_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("child stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(url) = line.trim().strip_prefix("listening ") else {
            let _ = child.kill();
            bail!("the child server did not start: {line:?}");
        };
        Ok(Self {
            url: url.to_string(),
            child,
            stdin,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes the child's stdin (it exits) and waits for it.
    pub fn stop(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        self.child.wait()?;
        Ok(())
    }
}

/// The body of `serve-store DIR`: serve the store, print `listening URL`, exit on stdin EOF.
pub fn serve_store(data_dir: &Path) -> anyhow::Result<()> {
    let store = casenote_server::open(data_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    println!("listening http://{}", listener.local_addr()?);
    runtime.spawn(casenote_server::run(
        listener,
        store,
        casenote_server::Config::default(),
        std::future::pending(),
    ));
    std::io::copy(&mut std::io::stdin(), &mut std::io::sink())?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// Memory of a process, from /proc/PID/status: resident now and its high-water mark, in MB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mem {
    pub rss_mb: f64,
    pub hwm_mb: f64,
}

/// Reads VmRSS and VmHWM of `pid` (this process when `None`). Zero where /proc is unavailable.
pub fn mem(pid: Option<u32>) -> Mem {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_string(),
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| round1(kb / 1024.0))
            .unwrap_or(0.0)
    };
    Mem {
        rss_mb: field("VmRSS:"),
        hwm_mb: field("VmHWM:"),
    }
}

/// Samples a process's resident memory every few ms and keeps the highest reading.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peak_kb: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(pid: Option<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_kb = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak_kb.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let kb = (mem(pid).rss_mb * 1024.0) as u64;
                p.fetch_max(kb, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self {
            stop,
            peak_kb,
            handle: Some(handle),
        }
    }

    /// Stops sampling; the peak resident memory seen, in MB.
    pub fn finish(mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        round1(self.peak_kb.load(Ordering::Relaxed) as f64 / 1024.0)
    }
}

/// Rounds to one decimal place (for readable JSON).
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Rounds to two decimal places.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Milliseconds since `t`, as a float.
pub fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// The `p`th percentile (0..=100) by nearest rank; 0 for an empty sample.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sorts a sample for [`percentile`].
pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// A small deterministic generator (xorshift64*), so runs write the same amount of text.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SENTENCES: &[&str] = &[
    "Visited at home; she was up and dressed and had made her own breakfast.",
    "Discussed what matters to her: staying in her own home and feeding the birds each morning.",
    "Kitchen and stairs reviewed with the occupational therapist; a second stair rail is advised.",
    "She understood the risks of going out alone and chose to continue; agreed to carry her phone.",
    "Daughter present for part of the visit and supports the plan for a morning call.",
    "Medication delivered weekly by the pharmacy; blister pack checked and up to date.",
    "Reports sleeping poorly since the fall; GP to review pain relief at the next appointment.",
    "Mental capacity to decide where to live was assessed and she has capacity for this decision.",
    "Carer from the agency arrived on time; personal care completed and fluids encouraged.",
    "No new safeguarding concerns observed; home warm, food in the fridge, post opened.",
    "Agreed outcomes reviewed: walking to the shop twice a week with a frame, with a friend.",
    "Telephoned the discharge hub to confirm the package of care starts on Monday.",
    "Key safe code confirmed with the team; visit in pairs alert remains active.",
    "He spoke about his late wife and said the garden keeps him going; referral to befriending.",
    "District nurse dressed the leg ulcer; healing well, next dressing in three days.",
];

/// About `len` characters of case-note prose (ASCII, so byte and character counts agree).
pub fn prose(rng: &mut Rng, len: usize) -> String {
    let mut out = String::with_capacity(len + 100);
    while out.len() < len {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(SENTENCES[rng.below(SENTENCES.len())]);
    }
    out.truncate(len);
    out
}
