//! A device with a wrong clock or a full disk, through the real `casenote` binary and a real
//! server: no clock error destroys an edit, and a full disk still lets everything be read.
//!
//! The wrong clock is real: libfaketime (`LD_PRELOAD`) shifts the CLI process's wall clock and
//! leaves its monotonic clocks alone, as a phone whose date is set wrong does. The full disk is
//! real too: the store lives on a small tmpfs (CI runs as root) filled to the last byte.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `faketime` package puts the library (`.ci/run` installs it).
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// `cli`'s command with its wall clock shifted by `offset` (libfaketime's syntax: `+15d`,
/// `-365d`). The monotonic clocks are left alone.
fn shifted(cli: &Cli, offset: &str, args: &[&str]) -> Command {
    assert!(
        Path::new(FAKETIME_LIB).exists(),
        "{FAKETIME_LIB} is missing: install Debian's `faketime` package (.ci/run does)"
    );
    let mut cmd = cli.command(args);
    cmd.env("LD_PRELOAD", FAKETIME_LIB)
        .env("FAKETIME", offset)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("FAKETIME_NO_CACHE", "1");
    cmd
}

/// Runs `cmd`; returns (exit code, stdout, stderr).
fn run(mut cmd: Command) -> (i32, String, String) {
    let out = cmd.output().expect("run casenote");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn libfaketime_shifts_the_cli_clock() {
    // Positive control for the two clock tests: the shift reaches the CLI process. A note's
    // recorded time is the device's wall clock.
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    let case = priya.ok(&["case", "new", "--name", "Clock Control"]);
    let (code, _, err) = run(shifted(
        &priya,
        "-365d",
        &["note", "add", &case, "--text", "dated a year ago"],
    ));
    assert_eq!(code, 0, "{err}");
    let shown = priya.show(&case);
    let recorded = shown["notes"][0]["content"]["recorded_at_ms"]
        .as_i64()
        .unwrap();
    let now = casenote_server::now_ms();
    assert!(
        now - recorded > 300 * 24 * 3600 * 1000,
        "the shifted clock did not reach the CLI: recorded {recorded}, now {now}"
    );
}

#[test]
fn a_clock_fifteen_days_ahead_keeps_the_store_and_its_unsynced_notes() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    priya.sync();
    let case = priya.ok(&["case", "new", "--name", "Ahead Person"]);
    priya.sync();
    let marker = "written offline, then the clock jumped 15 days";
    priya.ok(&["note", "add", &case, "--text", marker]);

    // The device's date is set 15 days ahead: nothing is wiped, the note reads back.
    let (code, out, err) = run(shifted(&priya, "+15d", &["show", &case, "--json"]));
    assert_eq!(code, 0, "show with the clock 15 days ahead: {err}");
    assert!(out.contains(marker), "{out}");
    let (code, _, err) = run(shifted(&priya, "+15d", &["case", "list"]));
    assert_eq!(code, 0, "{err}");

    // The clock is put right: the note is still there, and goes up with the next sync.
    assert!(note_texts(&priya.show(&case)).contains(&marker.to_string()));
    let report = priya.sync();
    assert!(report["changes_stored"].as_u64().unwrap() >= 1, "{report}");
}

#[test]
fn a_sync_made_with_the_clock_a_year_behind_does_not_wipe_the_store_later() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    let case = priya.ok(&["case", "new", "--name", "Behind Person"]);
    let marker = "a visit written before the sync";
    priya.ok(&["note", "add", &case, "--text", marker]);

    // A sync with the clock a year behind: it records when it reached the server.
    let (code, _, err) = run(shifted(&priya, "-365d", &["sync", "--json"]));
    assert_eq!(code, 0, "sync with the clock a year behind: {err}");
    // Unsynced edits after it, then the clock is put right.
    let later = "a note after the sync";
    priya.ok(&["note", "add", &case, "--text", later]);
    let (code, out, err) = run(priya.command(&["show", &case, "--json"]));
    assert_eq!(code, 0, "the next command with the right clock: {err}");
    for text in [marker, later] {
        assert!(out.contains(text), "{text} is gone: {out}");
    }
    let status = priya.json(&["status", "--json"]);
    assert_eq!(status["lease"]["locked"], false, "{status}");
}

/// A small tmpfs mounted for one test, unmounted when dropped (CI runs as root).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        Tmpfs { dir }
    }

    /// Writes one file until the disk is full; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0xa5u8; 64 * 1024];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        // The last bytes: page by page, then byte by byte.
        for size in [4096usize, 1] {
            while f.write(&block[..size]).is_ok_and(|n| n > 0) {}
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Runs `casenote args` with a deadline: a command that hangs (sled, closing a store after a
/// failed write, used to) fails the test instead of holding it up for ever.
fn bounded(cli: &Cli, args: &[&str]) -> std::process::Output {
    let mut child = cli
        .command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let _ = child.wait();
            panic!(
                "casenote {:?} hung on a full disk",
                &args[..args.len().min(2)]
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// [`bounded`], which must succeed: stdout.
fn bounded_ok(cli: &Cli, args: &[&str]) -> String {
    let out = bounded(cli, args);
    assert!(
        out.status.success(),
        "casenote {:?} failed: {}",
        &args[..args.len().min(2)],
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn bounded_json(cli: &Cli, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&bounded_ok(cli, args)).expect("JSON")
}

#[test]
fn on_a_full_disk_everything_reads_and_an_edit_fails_cleanly() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let disk = Tmpfs::mount(tmp.path().join("disk"), "64m");
    let store_tmp = tmp_in(&disk.dir);
    let priya = device(&store_tmp, &server, &staff, "priya", "Priya Shah");
    priya.sync();
    let case = priya.ok(&["case", "new", "--name", "Full Disk Person"]);
    priya.ok(&[
        "note",
        "add",
        &case,
        "--text",
        "written before the disk filled",
    ]);

    let filler = disk.fill();
    // Edits go on until the store has no room: each one either returns, and is kept, or fails
    // with a clear error and leaves nothing behind.
    let mut saved = Vec::new();
    let (out, refused_text) = loop {
        assert!(
            saved.len() < 400,
            "400 edits of 64 kB fitted on a full disk"
        );
        let text = format!("edit {} on a full disk {}", saved.len(), noise(64 * 1024));
        let out = bounded(&priya, &["note", "add", &case, "--text", &text]);
        if !out.status.success() {
            break (out, text);
        }
        saved.push(text);
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("disk is full"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // Reading works: the case list, the case, its conflicts, the status, who is signed in.
    let shown = bounded_json(&priya, &["show", &case, "--json"]);
    let texts = note_texts(&shown);
    assert_eq!(texts.len(), 1 + saved.len(), "{texts:?}");
    assert!(
        saved.iter().all(|t| texts.contains(t)),
        "an edit that returned is gone"
    );
    assert!(!texts.contains(&refused_text), "the refused edit was kept");
    let cases = bounded_json(&priya, &["case", "list", "--json"]);
    let listed = cases
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["case_id"] == case.as_str())
        .expect("the case is listed");
    assert_eq!(listed["notes"].as_u64(), Some(1 + saved.len() as u64));
    bounded_ok(&priya, &["conflicts", &case]);
    // Reading wins over the audit of the read: the view could not be kept, and the CLI says so.
    let page = bounded(&priya, &["show", &case]);
    assert!(page.status.success());
    let err = String::from_utf8_lossy(&page.stderr);
    assert!(err.contains("not kept for the audit log"), "{err}");
    let status = bounded_json(&priya, &["status", "--json"]);
    assert!(status["unsynced_docs"].as_u64().unwrap() >= 3, "{status}");
    bounded_ok(&priya, &["whoami"]);
    // Refused again, the same way, and reading still works after it.
    let again = bounded(&priya, &["note", "add", &case, "--text", "still no room"]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        again.status.code() == Some(1) && err.contains("disk is full"),
        "{err}"
    );
    assert_eq!(bounded_json(&priya, &["show", &case, "--json"]), shown);

    // A sync reaches the server but cannot store its answer: it fails the same way, and the
    // outbox is intact.
    let sync = bounded(&priya, &["sync", "--json"]);
    let err = String::from_utf8_lossy(&sync.stderr);
    assert!(
        sync.status.code() == Some(1) && err.contains("disk is full"),
        "{err}"
    );
    assert_eq!(
        bounded_json(&priya, &["status", "--json"])["unsynced_docs"],
        status["unsynced_docs"]
    );

    // Room again: the store is whole, edits work, and everything goes up (what the failed sync
    // pushed, the server already has).
    std::fs::remove_file(filler).unwrap();
    assert_eq!(bounded_json(&priya, &["show", &case, "--json"]), shown);
    bounded_ok(&priya, &["note", "add", &case, "--text", "room again"]);
    let report = bounded_json(&priya, &["sync", "--json"]);
    let up =
        report["changes_stored"].as_u64().unwrap() + report["changes_duplicate"].as_u64().unwrap();
    assert!(up >= 4 + saved.len() as u64, "{report}");
    assert_eq!(
        bounded_json(&priya, &["status", "--json"])["unsynced_docs"],
        0
    );
}

/// `len` letters that do not compress (xorshift), so that each edit takes room on the disk.
fn noise(len: usize) -> String {
    let mut x: u64 = rand_seed();
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

fn rand_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    u64::from(t.subsec_nanos()) | 1
}

/// A `TempDir`-like handle for a directory that the test owns (the tmpfs mount point).
fn tmp_in(dir: &Path) -> tempfile::TempDir {
    tempfile::tempdir_in(dir).unwrap()
}

#[test]
fn a_store_the_lease_wiped_comes_back_with_its_unsynced_notes_when_its_user_signs_in() {
    use casenote_client_core::lease::Uptime;
    use casenote_client_core::store::Unlock;
    use casenote_client_core::{Clocks, Device, Error};
    use std::sync::Arc;
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    let case = priya.ok(&["case", "new", "--name", "Wiped Person"]);
    let marker = "unsynced when the lease wiped the store";
    priya.ok(&["note", "add", &case, "--text", marker]);

    // After a reboot, with the clock 15 days ahead, the device has only its wall clock to go
    // on, and its lease wipes it. (The reboot is the one thing a test cannot do to the CLI, so
    // this step runs the same client-core code with the CLI's own key and stated clocks.)
    let key = casenote_cli::keys::read_key_file(&priya.store_key_file()).unwrap();
    let ahead = casenote_server::now_ms() + 15 * 24 * 3600 * 1000;
    let clocks = Clocks {
        wall: Arc::new(move || ahead),
        uptime: Arc::new(|| {
            Some(Uptime {
                boot_id: "the next boot".into(),
                ms: 1000,
            })
        }),
    };
    assert!(matches!(
        Device::open_with(&priya.store, Unlock::Key(&key), clocks),
        Err(Error::ExpiredAndWiped { days: 14 })
    ));

    // Through the CLI: nothing can be read; `login` brings everything back.
    let (code, err) = priya.fails(&["show", &case]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("sign in again"), "{err}");
    priya.ok(&[
        "login",
        "--server",
        &server.url,
        "--token",
        &token_of(&staff, "Priya Shah"),
    ]);
    assert!(note_texts(&priya.show(&case)).contains(&marker.to_string()));
    let report = priya.sync();
    assert!(report["changes_stored"].as_u64().unwrap() >= 1, "{report}");
}
