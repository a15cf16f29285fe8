//! A full disk under the server: syncs are refused with a code (never a hang, never an
//! acknowledgement), `/ready` and `/health` say the store cannot write, and writes resume on
//! their own once space returns. Every sync acknowledged before, during and after is kept.
//!
//! The data directory sits on a small tmpfs of its own (CI runs as root, so the test mounts one)
//! and a filler file takes the rest of its space while the server runs.

mod common;
use casenote_protocol::{ErrorCode, Seq};
use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A generous bound on anything that must answer: a hang is a wait past it.
const DEADLINE: Duration = Duration::from_secs(60);

/// A tmpfs mounted for the test's lifetime.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size_mib: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "could not mount a tmpfs on {} (the full-disk test needs root, as CI runs)",
            dir.display()
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Fills the file system of `dir` with a file `filler` until a write fails for lack of space.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    for chunk in [1024 * 1024, 4096, 1] {
        let buf = vec![0xa5u8; chunk];
        while file.write_all(&buf).is_ok() {}
    }
    let _ = file.sync_all();
    path
}

/// Runs `casenote ARGS` on `dev`, waiting at most [`DEADLINE`]; `None` if it did not finish.
fn run_bounded(dev: &Cli, args: &[&str]) -> Option<std::process::Output> {
    let mut child = dev
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while started.elapsed() < DEADLINE {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// `GET url` with a bounded wait: (status, body), or `None` if no answer came in time.
fn get(url: &str) -> Option<(u16, serde_json::Value)> {
    let agent = ureq::AgentBuilder::new().timeout(DEADLINE).build();
    let resp = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(_) => return None,
    };
    let status = resp.status();
    Some((status, resp.into_json().unwrap_or_default()))
}

/// One raw pull-only sync with a bounded wait: `Ok` (acknowledged) or the error answer.
fn raw_sync_bounded(url: &str, token: &str) -> Option<Result<(), (u16, ErrorCode)>> {
    let (url, token) = (url.to_string(), token.to_string());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(
            raw::sync(&url, &token, Seq(0), vec![])
                .map(|_| ())
                .map_err(|(status, body)| (status, body.code)),
        );
    });
    rx.recv_timeout(DEADLINE).ok()
}

/// Writes notes while the disk is full, each sync bounded: returns the notes acknowledged and
/// those refused. Stops after `tries` notes, or three refusals.
fn notes_while_full(
    dev: &Cli,
    case: &str,
    padding: &str,
    tries: usize,
) -> (Vec<String>, Vec<String>) {
    let (mut acknowledged, mut refused) = (Vec::new(), Vec::new());
    for i in 0..tries {
        let marker = format!("WHILE-FULL-{i}");
        dev.ok(&[
            "note",
            "add",
            case,
            "--text",
            &format!("{marker} {padding}"),
        ]);
        let started = Instant::now();
        let out = run_bounded(dev, &["sync", "--json"]).unwrap_or_else(|| {
            panic!(
                "sync {i} on the full disk hung for {} s",
                DEADLINE.as_secs()
            )
        });
        if out.status.success() {
            acknowledged.push(marker);
        } else {
            eprintln!(
                "sync {i} on the full disk refused in {} ms: {}",
                started.elapsed().as_millis(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            refused.push(marker);
            if refused.len() == 3 {
                break;
            }
        }
    }
    (acknowledged, refused)
}

/// The scenario: a server on a small tmpfs with the free-space floor `min_free_mb`; notes
/// before, while and after the disk is full; a crash and restart; every acknowledged note kept.
fn full_disk(min_free_mb: &str, tries_while_full: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&tmp.path().join("disk"), 48);
    let data = disk.dir.join("server");
    let staff = demo(&data);
    let fresh_token = issue_token(&data, "Priya Shah");
    let options = ["--min-free-mb", min_free_mb];
    let server = Server::start_with(&data, "127.0.0.1:0", &options);
    let a = device(&tmp, &server, &staff, "a", "Priya Shah");
    let token = token_of(&staff, "Priya Shah");
    let case = a.ok(&["case", "new", "--name", "Full Disk Person"]);
    // Notes of 100 KB of random hex, which Automerge compresses only by half, so that syncs
    // soon need new pages of the disk.
    let padding: String = (0..50 * 1024)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let note = |marker: String| -> (String, Option<std::process::Output>) {
        a.ok(&[
            "note",
            "add",
            &case,
            "--text",
            &format!("{marker} {padding}"),
        ]);
        (marker, run_bounded(&a, &["sync", "--json"]))
    };
    let mut acknowledged = Vec::new();
    for i in 0..3 {
        let (marker, out) = note(format!("BEFORE-FULL-{i}"));
        assert!(out
            .expect("a sync before the disk filled hung")
            .status
            .success());
        acknowledged.push(marker);
    }

    let filler = fill(&disk.dir);
    // While full: every sync answers, with a code; none is acknowledged wrongly.
    let (mut kept, mut refused) = notes_while_full(&a, &case, &padding, tries_while_full);
    acknowledged.append(&mut kept);
    assert!(!refused.is_empty(), "the full disk refused nothing");
    let asked = Instant::now();
    let answer = raw_sync_bounded(&server.url, &token).expect("a raw sync on the full disk hung");
    eprintln!(
        "a pull-only sync on the full disk answered {answer:?} in {} ms",
        asked.elapsed().as_millis()
    );
    assert!(
        matches!(answer, Err((503 | 507, ErrorCode::StoreFull))),
        "the full disk's refusal: {answer:?}"
    );
    let ready = get(&format!("{}/ready", server.url)).expect("/ready hung");
    assert_eq!(ready.0, 503, "/ready on a full disk: {}", ready.1);
    assert_eq!(ready.1["store_writable"], false, "{}", ready.1);
    let health = get(&format!("{}/health", server.url)).expect("/health hung");
    assert_eq!(health.1["store_writable"], false, "/health: {}", health.1);
    let whoami = run_bounded(&a, &["whoami", "--json"]).expect("whoami hung on a full disk");
    assert!(whoami.status.success(), "reading needs no space");

    // Space returns: writes resume with no restart, and what waited in the outbox goes up.
    std::fs::remove_file(filler).unwrap();
    let started = Instant::now();
    loop {
        let out = run_bounded(&a, &["sync", "--json"]).expect("a sync after space returned hung");
        if out.status.success() {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "writes did not resume once space returned: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "writes resumed {} ms after space returned",
        started.elapsed().as_millis()
    );
    acknowledged.append(&mut refused);
    for i in 0..3 {
        let (marker, out) = note(format!("AFTER-FULL-{i}"));
        assert!(out
            .expect("a sync after the disk emptied hung")
            .status
            .success());
        acknowledged.push(marker);
    }
    let ready = get(&format!("{}/ready", server.url)).expect("/ready hung");
    assert_eq!(ready.0, 200, "/ready after space returned: {}", ready.1);

    // Nothing acknowledged is lost, across a crash and restart too.
    let addr = server.addr();
    server.kill9();
    let server = Server::start_with(&data, &addr, &options);
    let fresh = Cli::login(tmp.path().join("fresh"), &server, &fresh_token);
    fresh.sync();
    let notes = fresh.note_texts(&case);
    for marker in &acknowledged {
        assert!(
            notes.iter().any(|n| n.starts_with(&format!("{marker} "))),
            "acknowledged note {marker} was lost"
        );
    }
    drop(server);
    let verify = Command::new(SERVER_BIN)
        .args(["verify", "--data", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "the store does not verify after the full disk: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    drop(disk);
}

#[test]
fn a_full_disk_refuses_syncs_with_a_code_and_recovers_on_its_own_when_space_returns() {
    // The floor (8 MiB here) refuses writes before sled ever meets the full disk.
    full_disk("8", 3);
}

#[test]
fn a_store_whose_writes_failed_for_lack_of_space_reopens_by_itself_when_space_returns() {
    // No floor: sled itself runs out of space mid-write (as when something else fills the disk
    // between the check and the write), fails, and must be reopened.
    full_disk("0", 40);
}
