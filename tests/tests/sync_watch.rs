//! `casenote sync --watch`: a colleague's edit arrives through the live channel within seconds,
//! and with the server gone the device retries with backoff instead of polling.

mod common;
use common::*;
use serde_json::Value;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn a_watching_device_pulls_a_colleagues_edit_when_the_live_channel_pokes_it() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    let mark = device(&tmp, &server, &staff, "mark", "Mark Ellison");
    let case = priya.ok(&["case", "new", "--name", "Watched Person"]);
    priya.sync();
    mark.sync();

    let watcher = mark
        .command(&["sync", "--watch", "--for", "6s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let edited = Instant::now();
    priya.ok(&[
        "plan",
        "append",
        &case,
        "--text",
        "Edited while Mark watches.",
    ]);
    priya.sync();
    let out = watcher.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let syncs = lines(&out.stdout);
    assert!(
        syncs.iter().any(|s| s["changes_down"].as_u64() >= Some(1)),
        "the edit never arrived: {syncs:?}"
    );
    assert!(
        syncs.len() <= 8,
        "{} syncs in 6 s is polling, not watching",
        syncs.len()
    );
    assert!(edited.elapsed() < Duration::from_secs(10));
    assert!(plan_text(&mark.show(&case)).contains("Edited while Mark watches."));
}

#[test]
fn with_the_server_gone_a_watching_device_backs_off() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let mark = device(&tmp, &server, &staff, "mark", "Mark Ellison");
    server.kill9();
    let out = mark.run(&["sync", "--watch", "--for", "5s"]);
    // Every sync failed: the watch ends with the failure's exit code (issue 17), not success.
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let syncs = lines(&out.stdout);
    assert!(syncs.iter().all(|s| s["ok"] == false), "{syncs:?}");
    // Retries after 1-2 s, then 2-4 s, then 4-8 s: two or three attempts in five seconds.
    assert!(
        (2..=3).contains(&syncs.len()),
        "{} attempts in 5 s: {syncs:?}",
        syncs.len()
    );
}
