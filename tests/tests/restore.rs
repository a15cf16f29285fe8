//! A server restored from backup loses what was acknowledged after the backup; devices still hold
//! it. After the operator runs `admin restored`, every device re-sends what it holds and nothing
//! acknowledged before the restore is lost.

mod common;
use common::*;

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
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
fn after_a_restore_from_backup_devices_resend_what_the_server_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let backup = tmp.path().join("backup");
    let staff = demo(&data);
    let fresh_token = issue_token(&data, "Priya Shah");
    let server = Server::start(&data);
    let a = device(&tmp, &server, &staff, "a", "Priya Shah");
    let b = device(&tmp, &server, &staff, "b", "Mark Ellison");
    let case = a.ok(&["case", "new", "--name", "Restored Person"]);
    a.ok(&["plan", "append", &case, "--text", "Before the backup."]);
    a.sync();
    b.sync();

    // The nightly backup.
    let server = server.offline(|data| copy_dir(data, &backup));

    // After the backup: a note that is filed, acknowledged and never touched again, and plan
    // edits from both devices.
    let note = a.ok(&["note", "add", &case, "--text", "AFTER-BACKUP-NOTE"]);
    a.ok(&["note", "file", &note]);
    a.ok(&["plan", "append", &case, "--text", " AFTER-BACKUP-A."]);
    a.sync();
    b.ok(&["plan", "append", &case, "--text", " AFTER-BACKUP-B."]);
    b.sync();
    a.sync();

    // Disaster: the server's disk is restored from the backup, and the operator says so.
    let server = server.offline(|data| {
        std::fs::remove_dir_all(data).unwrap();
        copy_dir(&backup, data);
        admin(data, &["restored"]);
    });

    // B syncs first and re-sends everything it holds. Without signatures the server cannot
    // tell B's copies of A's lost changes from forgeries, so it stores only B's own work that
    // does not depend on them; the rest waits for A, whose device re-sends its own, and then for
    // B's next sync.
    let report = b.sync();
    assert_eq!(
        report["resets"], 1,
        "B did not notice the restore: {report}"
    );
    let report = a.sync();
    assert_eq!(
        report["resets"], 1,
        "A did not notice the restore: {report}"
    );
    b.sync();
    a.sync();
    for (name, dev) in [("A", &a), ("B", &b)] {
        let status = dev.json(&["status", "--json"]);
        assert_eq!(
            status["unsynced_changes"], 0,
            "{name} still holds work the server lacks"
        );
    }

    let fresh = Cli::login(tmp.path().join("fresh"), &server, &fresh_token);
    fresh.sync();
    let show = fresh.show(&case);
    let text = show.to_string();
    for marker in [
        "Before the backup.",
        "AFTER-BACKUP-NOTE",
        "AFTER-BACKUP-A.",
        "AFTER-BACKUP-B.",
    ] {
        assert!(text.contains(marker), "{marker} was lost in the restore");
    }
    assert_eq!(show, a.show(&case));
    assert_eq!(show, b.show(&case));
}
