//! The backup drill, through real processes: a backup taken over the admin API while devices
//! sync, more notes acknowledged after it, the server killed with SIGKILL, the backup restored
//! into a fresh store and served; every device notices the new log id and re-sends what the
//! backup lacks, so nothing any device had acknowledged is lost, and the audit chain verifies.
//! Also: a truncated or damaged backup is refused before anything is written, a store that is
//! not empty is never restored into, and only a live admin token takes a backup.

mod common;
use casenote_client_core::Device;
use casenote_protocol::record::Identity;
use common::*;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Runs `casenote-server` with `args` to completion, whatever its exit.
fn run(args: &[&str]) -> Output {
    Command::new(SERVER_BIN)
        .args(args)
        .output()
        .expect("run casenote-server")
}

/// `admin --server URL --admin-token TOKEN backup --out FILE`.
fn backup_over_api(url: &str, token: &str, out: &Path) -> Output {
    let out = out.to_string_lossy();
    run(&[
        "admin",
        "--server",
        url,
        "--admin-token",
        token,
        "backup",
        "--out",
        &out,
    ])
}

/// `restore --from FILE` into the store of `data`.
fn restore(from: &Path, data: &Path) -> Output {
    let from = from.to_string_lossy().into_owned();
    let mut args = vec!["restore".to_string(), "--from".into(), from];
    args.extend(store_args(data));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&args)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_backup_taken_while_devices_sync_restores_and_devices_resend_what_it_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let (staff, admin_token) = demo_with_admin(&data);
    let fresh_token = issue_token(&data, "Priya Shah");
    let server = Server::start(&data);
    let (url, addr) = (server.url.clone(), server.addr());
    let owner = Device::open(&tmp.path().join("owner"), &common::store_key()).unwrap();
    owner.login(&url, &token_of(&staff, "Priya Shah")).unwrap();
    let case = owner
        .case_new(&Identity {
            name: "Backup Drill Person".into(),
            ..Default::default()
        })
        .unwrap();
    owner.sync().unwrap();
    drop(owner);

    let names = ["Priya Shah", "Mark Ellison", "Ruth Adebayo"];
    let load = FieldLoad::default();
    let workers: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let dir = tmp.path().join(format!("dev{i}"));
            edit_and_sync_until_stopped(
                dir,
                url.clone(),
                token_of(&staff, name),
                case,
                i,
                load.clone(),
            )
        })
        .collect();
    let acked = || load.acknowledged.lock().unwrap().len();
    eventually("the devices syncing a few edits", || acked() >= 12);

    // The backup, taken over the admin API while the devices keep editing and syncing.
    let file = tmp.path().join("casenote.backup");
    let before = acked();
    let out = backup_over_api(&url, &admin_token, &file);
    assert!(out.status.success(), "backup failed: {}", stderr(&out));
    let during = acked() - before;
    assert!(file.is_file(), "no backup file");
    assert!(
        !tmp.path().join("casenote.backup.tmp").exists(),
        "the temporary file was left behind"
    );

    // More notes acknowledged after the backup, which it cannot hold; then the disaster.
    let at_backup = acked();
    eventually("more edits acknowledged after the backup", || {
        acked() >= at_backup + 9
    });
    server.kill9();
    let after = acked() - at_backup;
    // The devices keep editing while the server is down.
    std::thread::sleep(Duration::from_millis(200));
    let unacknowledged = load.stop_and_join(workers);

    // The backup restored into a fresh store, served where the old server was.
    let restored = tmp.path().join("restored");
    let out = restore(&file, &restored);
    assert!(out.status.success(), "restore failed: {}", stderr(&out));
    let server = Server::start_on(&restored, &addr);

    // Every device notices the new log id, and re-sends what the server lacks. A device's change
    // that depends on a colleague's lost change waits until the colleague's device has re-sent
    // that one (changes are not signed, so only their author's device may), so the devices sync
    // in turns until quiet: each turn settles at least one more link of such a chain.
    let devices: Vec<Device> = (0..names.len())
        .map(|i| Device::open(&tmp.path().join(format!("dev{i}")), &common::store_key()).unwrap())
        .collect();
    let unsynced = |d: &Device| d.status().unwrap().unsynced_changes;
    let mut resets = 0;
    let mut turns = 0;
    while turns == 0 || devices.iter().any(|d| unsynced(d) > 0) {
        assert!(turns < 20, "the devices never settled after 20 turns");
        for d in &devices {
            resets += d.sync().unwrap().resets;
        }
        turns += 1;
    }
    assert_eq!(
        resets,
        names.len(),
        "not every device noticed the restore exactly once"
    );

    // A fresh device gets every note any device had acknowledged, before or after the backup.
    let fresh = Device::open(&tmp.path().join("fresh"), &common::store_key()).unwrap();
    fresh.login(&server.url, &fresh_token).unwrap();
    fresh.sync().unwrap();
    let text = fresh.show(case).unwrap().to_string();
    let acknowledged = load.acknowledged.lock().unwrap().clone();
    for m in acknowledged.iter().chain(&unacknowledged) {
        assert!(text.contains(m.as_str()), "change {m} was lost");
    }
    eprintln!(
        "{} changes acknowledged: {during} while the backup ran, {after} after it and before \
         the kill; {} syncs failed while the server was down; settled in {turns} turns",
        acknowledged.len(),
        load.failed.load(Ordering::SeqCst)
    );

    // The restored store's audit chain verifies, and says who backed up and what was restored.
    drop(server);
    let verified = server_cmd_on(&["audit", "verify"], &restored, &[]);
    assert!(verified.contains("audit log intact"), "{verified}");
    let entries = audit_entries(&restored);
    let action = |a: &str| {
        entries
            .iter()
            .find(|e| e["details"]["action"] == a)
            .cloned()
    };
    let backup = action("backup").expect("the backup is in the restored audit log");
    assert!(
        backup["details"]["by"]["admin_id"].is_string(),
        "the backup's entry does not name the admin: {backup}"
    );
    assert!(
        action("restored_from_backup").is_some(),
        "the restore is not audited"
    );
}

/// A small store with a backup of it taken offline; returns the backup file.
fn demo_backup(tmp: &tempfile::TempDir) -> std::path::PathBuf {
    let data = tmp.path().join("server");
    demo(&data);
    let file = tmp.path().join("demo.backup");
    let f = file.to_string_lossy().into_owned();
    server_cmd_on(&["admin"], &data, &["backup", "--out", &f]);
    file
}

#[test]
fn a_truncated_or_damaged_backup_is_refused_and_nothing_is_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let file = demo_backup(&tmp);
    let bytes = std::fs::read(&file).unwrap();
    let target = tmp.path().join("target");

    let truncated = tmp.path().join("truncated.backup");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let out = restore(&truncated, &target);
    assert!(!out.status.success(), "a truncated backup was restored");
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));

    let no_trailer = tmp.path().join("no-trailer.backup");
    std::fs::write(&no_trailer, &bytes[..bytes.len() - 1]).unwrap();
    let out = restore(&no_trailer, &target);
    assert!(
        !out.status.success(),
        "a backup without its trailer was restored"
    );

    // One flipped byte anywhere: in a record's body, in a length, in the trailer.
    for at in [bytes.len() / 2, 20, bytes.len() - 5] {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x01;
        let path = tmp.path().join(format!("flipped-{at}.backup"));
        std::fs::write(&path, &damaged).unwrap();
        let out = restore(&path, &target);
        assert!(
            !out.status.success(),
            "a backup with byte {at} flipped was restored"
        );
        let err = stderr(&out);
        assert!(
            err.contains("damaged") || err.contains("truncated"),
            "byte {at}: {err}"
        );
    }

    // Nothing was written by the refusals: the good backup restores into the same store.
    let out = restore(&file, &target);
    assert!(out.status.success(), "{}", stderr(&out));
    let verified = server_cmd_on(&["verify"], &target, &[]);
    assert!(verified.contains("store verified"), "{verified}");
}

#[test]
fn a_store_that_is_not_empty_is_never_restored_into() {
    let tmp = tempfile::tempdir().unwrap();
    let file = demo_backup(&tmp);
    let data = tmp.path().join("server");
    let before = audit_entries(&data).len();
    let out = restore(&file, &data);
    assert!(!out.status.success(), "restored over a live store");
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert_eq!(audit_entries(&data).len(), before, "the refusal wrote");
}

#[test]
fn only_a_live_admin_token_takes_a_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let staff = demo(&data);
    let server = Server::start(&data);
    let file = tmp.path().join("stolen.backup");
    let device_token = token_of(&staff, "Priya Shah");
    for token in ["cna_wrong", device_token.as_str()] {
        let out = backup_over_api(&server.url, token, &file);
        assert!(
            !out.status.success(),
            "a backup with token {token:.6}… was taken"
        );
        assert!(stderr(&out).contains("unauthorized"), "{}", stderr(&out));
    }
    let f = file.to_string_lossy();
    let out = run(&["admin", "--server", &server.url, "backup", "--out", &f]);
    assert!(!out.status.success(), "a backup without a token was taken");
    assert!(stderr(&out).contains("admin token"), "{}", stderr(&out));
    assert!(!file.exists(), "a refused backup left a file");
    assert!(
        !tmp.path().join("stolen.backup.tmp").exists(),
        "a refused backup left a temporary file"
    );
}
