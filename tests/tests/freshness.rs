//! Freshness (issue 16), through the real `casenote` binary and a real server: an alert carries
//! when it was raised, and the page shows its age; a device whose last sync is more than 12 hours
//! old says so above what it shows (`show`, `show --json` on stderr, `status`), and a device just
//! synced does not. The passing hours are real to the CLI: libfaketime (`LD_PRELOAD`) moves its
//! wall clock forward, as a day passing would, and leaves the monotonic clocks alone.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Where Debian's `faketime` package puts the library (`scripts/test` checks for it).
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// `cli ARGS` with its wall clock `offset` ahead (libfaketime's syntax: `+13h`).
fn later(cli: &Cli, offset: &str, args: &[&str]) -> Command {
    assert!(
        Path::new(FAKETIME_LIB).exists(),
        "{FAKETIME_LIB} is missing: install Debian's `faketime` package (scripts/test says so)"
    );
    let mut cmd = cli.command(args);
    cmd.env("LD_PRELOAD", FAKETIME_LIB)
        .env("FAKETIME", offset)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("FAKETIME_NO_CACHE", "1");
    cmd
}

/// (stdout, stderr) of a command that must succeed.
fn run(mut cmd: Command) -> (String, String) {
    let out = cmd.output().expect("run casenote");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "failed: {stderr}");
    (stdout, stderr)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn an_alert_carries_when_it_was_raised_and_the_page_shows_its_age() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let a = device(&tmp, &server, &staff, "a", "Priya Shah");
    let b = device(&tmp, &server, &staff, "b", "Mark Ellison");
    let case = a.ok(&["case", "new", "--name", "Alerted Person"]);
    let before = now_ms();
    let alert = a.ok(&["alert", "add", &case, "--text", "Visit in pairs"]);
    let after = now_ms();
    a.sync();
    b.sync();

    // Another device holds when it was raised (the server kept the integer field).
    let shown: Value = b.show(&case);
    let raised = shown["record"]["alerts"][&alert]["raised_at_ms"]
        .as_i64()
        .unwrap_or_else(|| panic!("the alert has no raise time: {shown}"));
    assert!(
        (before..=after).contains(&raised),
        "{before} <= {raised} <= {after}"
    );

    let page = b.ok(&["show", &case]);
    let line = page
        .lines()
        .find(|l| l.contains("Visit in pairs"))
        .expect("the alert is on the page");
    assert!(
        line.contains("raised by Priya Shah") || line.contains("raised by staff"),
        "{line}"
    );
    assert!(line.contains("second") || line.contains("minute"), "{line}");
    // Thirteen hours on, the alert is thirteen hours old.
    let (page, _) = run(later(&b, "+13h", &["show", &case]));
    let line = page.lines().find(|l| l.contains("Visit in pairs")).unwrap();
    assert!(line.contains("13 hours ago"), "{line}");
}

#[test]
fn a_device_warns_when_its_data_is_more_than_twelve_hours_old() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let a = device(&tmp, &server, &staff, "a", "Priya Shah");
    let case = a.ok(&["case", "new", "--name", "Stale Person"]);
    a.sync();

    // Just synced, or eleven hours on: no warning.
    for offset in ["+0", "+11h"] {
        let (page, _) = run(later(&a, offset, &["show", &case]));
        assert!(!page.contains("WARNING"), "{offset}: {page}");
        let (status, _) = run(later(&a, offset, &["status"]));
        assert!(!status.contains("WARNING"), "{offset}: {status}");
    }
    // Thirteen hours on: the page opens with the warning, status says it, and `show --json`
    // says it on stderr, leaving the JSON as it is.
    let (page, _) = run(later(&a, "+13h", &["show", &case]));
    let first = page.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("WARNING: this device last synced 13 hours ago"),
        "{page}"
    );
    let (status, _) = run(later(&a, "+13h", &["status"]));
    assert!(status.contains("last synced 13 hours ago"), "{status}");
    assert!(status.contains("may be out of date"), "{status}");
    let (json, err) = run(later(&a, "+13h", &["show", &case, "--json"]));
    assert!(err.contains("last synced 13 hours ago"), "{err}");
    let parsed: Value = serde_json::from_str(&json).expect("show --json stays JSON");
    assert_eq!(parsed["case_id"], case.as_str());
    let fresh = a.json(&["status", "--json"])["freshness"].clone();
    assert_eq!(fresh["stale"], false, "{fresh}");
    let fresh: Value =
        serde_json::from_str(&run(later(&a, "+13h", &["status", "--json"])).0).unwrap();
    assert_eq!(fresh["freshness"]["stale"], true, "{fresh}");

    // A sync brings it up to date: no warning, even at the later clock.
    run(later(&a, "+13h", &["sync"]));
    let (page, _) = run(later(&a, "+13h", &["show", &case]));
    assert!(!page.contains("WARNING"), "{page}");
}
