//! A damaged disk under the server: one flipped byte in sled's log, in the part written since
//! sled's last snapshot, makes sled's recovery stop at the bad entry and drop everything after
//! it. The server must notice at start that it lost what it acknowledged (its high-water mark
//! lives outside sled), say so in its audit log, and have the devices that hold the lost work
//! send it again, so that nothing acknowledged is lost. `verify` and `audit verify` name the
//! loss on the damaged store. A store put back from a backup without `admin restored` (same log
//! id, devices' cursors past its log) makes devices start over too.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

/// sled 0.34's log segment header: crc (4), lsn xor 0x7FFF.. (8, little-endian), max stable lsn.
const SLED_LSN_XOR: i64 = 0x7FFF_FFFF_FFFF_FFFF;

/// The segment size sled recorded in the store's `conf` file.
fn segment_size(data: &Path) -> usize {
    // The text is followed by a binary checksum.
    let conf = std::fs::read(data.join("conf")).expect("sled's conf file");
    String::from_utf8_lossy(&conf)
        .lines()
        .find_map(|l| l.strip_prefix("segment_size: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a segment_size line in sled's conf")
}

/// The log sequence number up to which sled's last snapshot (`snap.<LSN in hex>`) covers the log:
/// what recovery replays starts after it. 0 without a snapshot.
fn snapshot_lsn(data: &Path) -> i64 {
    std::fs::read_dir(data)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let hex = name.strip_prefix("snap.")?;
            i64::from_str_radix(hex, 16).ok()
        })
        .max()
        .unwrap_or(0)
}

/// The log sequence number of byte `pos` of sled's `db` file (from its segment's header).
fn lsn_at(db: &[u8], segment: usize, pos: usize) -> i64 {
    let base = pos - pos % segment;
    let raw: [u8; 8] = db[base + 4..base + 12].try_into().unwrap();
    (i64::from_le_bytes(raw) ^ SLED_LSN_XOR) + (pos - base) as i64
}

/// Flips a byte of the first entry sled wrote about document `doc` after its last snapshot
/// (sled's messages are checksummed, so recovery stops at that entry). Returns the file offset.
fn flip_first_mention_after_snapshot(data: &Path, doc: &str) -> usize {
    let id: uuid::Uuid = doc.parse().unwrap();
    let needle = id.as_bytes();
    let path = data.join("db");
    let mut db = std::fs::read(&path).unwrap();
    let (segment, snap) = (segment_size(data), snapshot_lsn(data));
    let pos = db
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| w == needle)
        .map(|(i, _)| i)
        .filter(|&i| lsn_at(&db, segment, i) > snap)
        .min_by_key(|&i| lsn_at(&db, segment, i))
        .unwrap_or_else(|| panic!("document {doc} is not in sled's log after the snapshot"));
    db[pos] ^= 0xff;
    std::fs::write(&path, &db).unwrap();
    pos
}

/// Runs `casenote-server ARGS`; returns (exit code, stdout and stderr).
fn server_run(args: &[&str]) -> (i32, String) {
    let out = Command::new(SERVER_BIN).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_flipped_byte_in_the_server_log_is_detected_and_the_devices_send_back_what_it_lost() {
    let (tmp, data, staff) = demo_borough();
    let fresh_token = issue_token(&data, "Priya Shah");
    let server = Server::start(&data);
    let addr = server.addr();
    let a = device(&tmp, &server, &staff, "a", "Priya Shah");
    let b = device(&tmp, &server, &staff, "b", "Mark Ellison");
    let case = a.ok(&["case", "new", "--name", "Damaged Disk Person"]);
    a.sync();
    b.sync();
    let mut notes = Vec::new();
    for i in 0..40 {
        let dev = if i % 2 == 0 { &a } else { &b };
        let marker = format!("ACKNOWLEDGED-NOTE-{i}");
        notes.push(dev.ok(&["note", "add", &case, "--text", &marker]));
        let report = dev.sync();
        assert_eq!(report["changes_stored"], 1, "note {i}: {report}");
    }
    // Everything above was acknowledged, so it was flushed: a SIGKILL loses nothing.
    server.kill9();
    flip_first_mention_after_snapshot(&data, &notes[5]);
    let verify = server_run(&["verify", "--data", data.to_str().unwrap()]);
    let audit_verify = server_run(&["audit", "verify", "--data", data.to_str().unwrap()]);
    eprintln!("verify on the damaged store: {verify:?}\naudit verify: {audit_verify:?}");

    let server = Server::start_on(&data, &addr);
    let fresh = Cli::login(tmp.path().join("fresh"), &server, &fresh_token);
    fresh.sync();
    let seen_at_restart = fresh.note_texts(&case).len();
    // The devices that hold the lost notes are told to start over and send them again.
    let (ra, rb) = (a.sync(), b.sync());
    assert_eq!(
        (ra["resets"].as_u64(), rb["resets"].as_u64()),
        (Some(1), Some(1)),
        "the devices were not told the server lost what it acknowledged (a fresh device saw \
         {seen_at_restart} of 40 notes; `audit verify` said: {}): {ra} {rb}",
        audit_verify.1.trim()
    );
    // As after a restore: each device's own work first, then what depends on a colleague's.
    for dev in [&a, &b, &a, &b] {
        dev.sync();
    }
    fresh.sync();
    let seen = fresh.note_texts(&case);
    for i in 0..40 {
        let marker = format!("ACKNOWLEDGED-NOTE-{i}");
        assert!(seen.contains(&marker), "{marker} was lost for good");
    }
    assert_eq!(fresh.show(&case), a.show(&case));

    // On the damaged store, before the server started: both checks named the loss.
    assert_eq!(verify.0, 1, "verify passed a damaged store: {}", verify.1);
    assert!(
        verify.1.contains("acknowledged"),
        "verify did not name the loss: {}",
        verify.1
    );
    assert_eq!(
        audit_verify.0, 1,
        "audit verify passed an audit log that lost acknowledged entries: {}",
        audit_verify.1
    );

    // The detection is in the audit log; after healing, the store verifies end to end.
    drop(server);
    let entries = audit_entries(&data);
    assert!(
        entries
            .iter()
            .any(|e| e["details"]["action"] == "store_damage_detected"),
        "the detection is not in the audit log"
    );
    let (code, out) = server_run(&["verify", "--data", data.to_str().unwrap()]);
    assert_eq!(code, 0, "the healed store does not verify: {out}");
    let (code, out) = server_run(&["audit", "verify", "--data", data.to_str().unwrap()]);
    assert_eq!(code, 0, "the healed audit log does not verify: {out}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_device_whose_cursor_is_past_the_server_log_starts_over_and_sends_what_it_holds() {
    let (tmp, data, staff) = demo_borough();
    let backup = tmp.path().join("backup");
    let fresh_token = issue_token(&data, "Priya Shah");
    let server = Server::start(&data);
    let a = device(&tmp, &server, &staff, "a", "Priya Shah");
    let case = a.ok(&["case", "new", "--name", "Forgotten Restore Person"]);
    a.sync();
    let server = server.offline(|data| copy_dir(data, &backup));
    for i in 0..3 {
        a.ok(&["note", "add", &case, "--text", &format!("AFTER-BACKUP-{i}")]);
        a.sync();
    }
    // The backup goes back, whole, and nobody runs `admin restored`: the log id is the same,
    // and the device's cursor counts changes this log no longer has.
    let server = server.offline(|data| {
        std::fs::remove_dir_all(data).unwrap();
        copy_dir(&backup, data);
    });
    let report = a.sync();
    assert_eq!(
        report["resets"], 1,
        "a cursor past the server's log did not start the device over: {report}"
    );
    a.sync();
    let fresh = Cli::login(tmp.path().join("fresh"), &server, &fresh_token);
    fresh.sync();
    let seen = fresh.note_texts(&case);
    for i in 0..3 {
        assert!(
            seen.contains(&format!("AFTER-BACKUP-{i}")),
            "note {i} was lost"
        );
    }
}
