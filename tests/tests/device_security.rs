//! A lost, shared or forgotten device, end to end with a real server: the store is encrypted at
//! rest (through the CLI, its key file and its passphrase), a shared tablet keeps each user's
//! records under their own key, and the offline lease locks and then wipes a device that has not
//! reached the server, with an injected clock. A revoked device wipes on its next contact.

mod common;
use casenote_client_core::device::Clock;
use casenote_client_core::{Device, Error, SharedDevice, StoreKey};
use casenote_protocol::record::{Identity, NoteKind};
use common::*;
use std::process::Stdio;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOUR: i64 = 3600 * 1000;
const DAY: i64 = 24 * HOUR;

/// A clock the test moves by hand.
fn manual_clock() -> (Arc<AtomicI64>, Clock) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t = Arc::new(AtomicI64::new(now));
    let reader = t.clone();
    (t, Arc::new(move || reader.load(Ordering::SeqCst)))
}

fn person(name: &str) -> Identity {
    Identity {
        name: name.into(),
        nhs_number: None,
        dob: None,
        address: None,
    }
}

/// Runs a CLI command with a deadline: a command that waits for a prompt fails the test.
fn run_with_deadline(mut cmd: std::process::Command) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("casenote waited for input without a terminal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_marker_written_through_the_cli_is_readable_and_in_no_byte_of_the_store_files() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    let marker = "MARKER-encrypted-at-rest-3b9f";
    let name = "Marker Encrypted-Person";
    let case = priya.ok(&["case", "new", "--name", name, "--nhs-number", "9990000026"]);
    let note = priya.ok(&["note", "add", &case, "--text", marker]);
    priya.ok(&["note", "file", &note]);
    priya.ok(&["plan", "append", &case, "--text", marker]);
    priya.ok(&["about-me", "append", &case, "--text", marker]);
    priya.sync();

    let shown = serde_json::to_string(&priya.show(&case)).unwrap();
    assert!(
        shown.contains(marker) && shown.contains(name),
        "readable through the API"
    );
    assert!(
        contains(&priya.decrypted_bytes(), marker.as_bytes()),
        "positive control: the store holds the marker"
    );
    let files = all_bytes_under(&priya.store);
    for needle in [
        marker.as_bytes(),
        name.as_bytes(),
        b"9990000026",
        case.as_bytes(),
        note.as_bytes(),
    ] {
        assert!(
            !contains(&files, needle),
            "{} is in the store's files",
            String::from_utf8_lossy(needle)
        );
    }
    let case_id: uuid::Uuid = case.parse().unwrap();
    assert!(
        !contains(&files, case_id.as_bytes()),
        "a raw case id is in the files"
    );
    let key_file = priya.store_key_file();
    assert!(
        !key_file.starts_with(&priya.store),
        "the key is kept outside the store"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn a_wrong_missing_or_exposed_key_is_a_clear_error_and_changes_nothing() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    let case = priya.ok(&["case", "new", "--name", "Key Test"]);
    let before = priya.show(&case);

    // Another valid key.
    let other = tmp.path().join("other.key");
    std::fs::write(&other, format!("{}\n", "ab".repeat(32))).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, err) = priya.fails(&["--key-file", other.to_str().unwrap(), "case", "list"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not open this device store"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // The right key, readable by others.
    let exposed = tmp.path().join("exposed.key");
    std::fs::copy(priya.store_key_file(), &exposed).unwrap();
    std::fs::set_permissions(&exposed, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, err) = priya.fails(&["--key-file", exposed.to_str().unwrap(), "case", "list"]);
    assert!(err.contains("chmod 600"), "{err}");

    // Not a key at all.
    let junk = tmp.path().join("junk.key");
    std::fs::write(&junk, "not a key").unwrap();
    std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, err) = priya.fails(&["--key-file", junk.to_str().unwrap(), "case", "list"]);
    assert!(err.contains("not a store key"), "{err}");

    // The default key file is gone (another user's config): no new key is made for an old store.
    let mut cmd = priya.command(&["case", "list"]);
    cmd.env("XDG_CONFIG_HOME", tmp.path().join("elsewhere"));
    let out = run_with_deadline(cmd);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("key file") && err.contains("missing"), "{err}");
    assert!(!tmp.path().join("elsewhere").exists(), "a key was invented");

    // Nothing was changed by any of it.
    assert_eq!(priya.show(&case), before);
}

#[test]
fn a_passphrase_store_never_prompts_without_a_terminal_and_refuses_a_wrong_passphrase() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let cli = Cli::new(tmp.path().join("laptop"));
    let token = token_of(&staff, "Priya Shah");

    let mut no_pass = cli.command(&[
        "--passphrase",
        "login",
        "--server",
        &server.url,
        "--token",
        &token,
    ]);
    no_pass.env_remove("CASENOTE_PASSPHRASE");
    let out = run_with_deadline(no_pass);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CASENOTE_PASSPHRASE"), "{err}");

    let with = |pass: &str, args: &[&str]| {
        let mut all = vec!["--passphrase"];
        all.extend_from_slice(args);
        let mut cmd = cli.command(&all);
        cmd.env("CASENOTE_PASSPHRASE", pass);
        run_with_deadline(cmd)
    };
    let pass = "a long ward passphrase 42";
    let out = with(pass, &["login", "--server", &server.url, "--token", &token]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = with(pass, &["case", "new", "--name", "Passphrase Person"]);
    assert!(out.status.success());
    let case = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let out = with("a long ward passphrase 43", &["case", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not open this device store"));
    let out = with("short", &["case", "list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least"));

    let out = with(pass, &["case", "list", "--json"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&case));
    assert!(!contains(
        &all_bytes_under(&cli.store),
        b"Passphrase Person"
    ));
}

#[test]
fn on_a_shared_tablet_each_user_reads_only_their_own_records() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let root = tmp.path().join("ward-tablet");
    let (alice_key, bob_key) = (StoreKey::generate(), StoreKey::generate());
    let marker = "MARKER-shared-tablet-priya-only-61d0";
    let mut tablet = SharedDevice::new(&root);

    let priya = tablet.switch_user(&alice_key).unwrap();
    priya
        .login(&server.url, &token_of(&staff, "Priya Shah"))
        .unwrap();
    let case = priya.case_new(&person("Shared Tablet Person")).unwrap();
    priya.note_add(case, NoteKind::Visit, marker, None).unwrap();
    priya.sync().unwrap();

    // Lena, on another team, signs in on the same tablet.
    let lena = tablet.switch_user(&bob_key).unwrap();
    lena.login(&server.url, &token_of(&staff, "Lena Fischer"))
        .unwrap();
    lena.sync().unwrap();
    assert!(lena.cases().unwrap().iter().all(|c| c.case_id != case));
    assert!(matches!(lena.show(case), Err(Error::NotFound(..))));
    tablet.sign_out();

    // Her key opens nothing of Priya's; Priya's records are in no byte of the tablet in the clear.
    assert!(matches!(
        Device::open(&tablet.slot_dir(&alice_key), &bob_key),
        Err(Error::WrongKey)
    ));
    assert!(!contains(&all_bytes_under(&root), marker.as_bytes()));
    assert!(!contains(&all_bytes_under(&root), "Priya Shah".as_bytes()));

    // Priya signs back in: her records are where she left them.
    let priya = tablet.switch_user(&alice_key).unwrap();
    let shown = priya.show(case).unwrap().to_string();
    assert!(shown.contains(marker));
}

#[test]
fn a_device_out_of_touch_locks_then_wipes_itself_and_a_clock_set_back_buys_no_time() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let token = token_of(&staff, "Priya Shah");
    let (clock, now) = manual_clock();
    let dir = tmp.path().join("phone");
    let dev = Device::open_with_clock(&dir, &store_key(), now.clone()).unwrap();
    dev.login(&server.url, &token).unwrap();
    let case = dev.case_new(&person("Lease Person")).unwrap();
    dev.sync().unwrap();
    let start = clock.load(Ordering::SeqCst);
    let lease = dev.status().unwrap().lease;
    assert_eq!(
        lease.locks_at_ms.unwrap() - lease.last_contact_ms.unwrap(),
        72 * HOUR
    );
    assert_eq!(
        lease.wipes_at_ms.unwrap() - lease.last_contact_ms.unwrap(),
        14 * DAY
    );

    // A visit without signal: edits made offline are kept through the lock.
    let note = dev
        .note_add(
            case,
            NoteKind::Visit,
            "written offline before the lock",
            None,
        )
        .unwrap();
    clock.store(start + 71 * HOUR, Ordering::SeqCst);
    assert!(dev.cases().is_ok(), "still inside the lease");
    clock.store(start + 73 * HOUR, Ordering::SeqCst);
    assert!(matches!(dev.cases(), Err(Error::Locked { hours: 72 })));
    assert!(matches!(dev.show(case), Err(Error::Locked { .. })));
    assert!(matches!(
        dev.note_edit(note, "x"),
        Err(Error::Locked { .. })
    ));
    assert!(
        matches!(dev.sync(), Err(Error::Locked { .. })),
        "a locked device does not use its stored token"
    );
    let status = dev.status().unwrap();
    assert!(status.lease.locked);
    assert_eq!(status.unsynced_docs, 1, "the offline note is kept");

    // Setting the clock back does not unlock it.
    clock.store(start, Ordering::SeqCst);
    assert!(matches!(dev.cases(), Err(Error::Locked { .. })));
    drop(dev);
    let dev = Device::open_with_clock(&dir, &store_key(), now.clone()).unwrap();
    assert!(
        matches!(dev.cases(), Err(Error::Locked { .. })),
        "the lock survives a restart"
    );

    // Signing in again unlocks it; the offline note goes up.
    clock.store(start + 73 * HOUR, Ordering::SeqCst);
    dev.login(&server.url, &token).unwrap();
    let report = dev.sync().unwrap();
    assert!(report.changes_stored >= 1, "{report:?}");
    assert!(dev
        .show(case)
        .unwrap()
        .to_string()
        .contains("written offline"));
    drop(dev);
    let sealed = sealed_case_records(&dir, case);
    let dev = Device::open_with_clock(&dir, &store_key(), now.clone()).unwrap();

    // An unsynced note, then fourteen days without contact: the device wipes itself. Its records
    // stay on the disk, sealed; the key it opened with opens nothing any more.
    dev.note_add(
        case,
        NoteKind::Visit,
        "written offline before the wipe",
        None,
    )
    .unwrap();
    let last = clock.load(Ordering::SeqCst);
    clock.store(last + 14 * DAY + 1, Ordering::SeqCst);
    assert!(matches!(
        dev.cases(),
        Err(Error::ExpiredAndWiped { days: 14 })
    ));
    assert!(matches!(dev.show(case), Err(Error::Wiped)));
    drop(dev);
    assert!(
        all_in(&all_bytes_under(&dir), &sealed),
        "the sealed records are kept for their user"
    );
    assert!(matches!(
        Device::open_with_clock(&dir, &store_key(), now.clone()),
        Err(Error::Wiped)
    ));
    assert!(matches!(
        casenote_client_core::store::DeviceStore::open(&dir, &store_key()),
        Err(Error::Wiped)
    ));

    // Its user signs in again: everything is back, the unsynced note included, and goes up.
    let (dev, _) = sign_in(&dir, &now, &server, &token).unwrap();
    assert!(dev
        .show(case)
        .unwrap()
        .to_string()
        .contains("written offline before the wipe"));
    assert!(dev.sync().unwrap().changes_stored >= 1);

    // The same, found at open: a device left in a drawer for a month.
    drop(dev);
    clock.store(clock.load(Ordering::SeqCst) + 30 * DAY, Ordering::SeqCst);
    assert!(matches!(
        Device::open_with_clock(&dir, &store_key(), now.clone()),
        Err(Error::ExpiredAndWiped { .. })
    ));
    assert!(matches!(
        Device::open_with_clock(&dir, &store_key(), now.clone()),
        Err(Error::Wiped)
    ));
    let (dev, _) = sign_in(&dir, &now, &server, &token).unwrap();
    assert!(dev.status().unwrap().docs_held > 0);
}

/// Signs the store in `dir` in (bringing it back if the lease wiped it), with the test's key and
/// a wall clock alone.
fn sign_in(
    dir: &std::path::Path,
    now: &Clock,
    server: &Server,
    token: &str,
) -> Result<(Device, casenote_protocol::wire::WhoAmI), Error> {
    Device::sign_in(
        dir,
        casenote_client_core::store::Unlock::Key(&store_key()),
        casenote_client_core::Clocks::wall_only(now.clone()),
        &server.url,
        token,
    )
}

#[test]
fn a_wiped_store_comes_back_for_its_own_staff_only_and_never_after_revocation() {
    let (tmp, data, staff) = demo_borough();
    let issued: serde_json::Value = serde_json::from_str(&admin(
        &data,
        &["token", "issue", "--staff", "Priya Shah", "--json"],
    ))
    .unwrap();
    let server = Server::start(&data);
    let (priya_token, lena_token) = (
        token_of(&staff, "Priya Shah"),
        token_of(&staff, "Lena Fischer"),
    );
    let (clock, now) = manual_clock();
    let dir = tmp.path().join("phone");
    let (dev, who) = sign_in(&dir, &now, &server, &priya_token).unwrap();
    let case = dev.case_new(&person("Escrow Person")).unwrap();
    dev.sync().unwrap();
    dev.note_add(case, NoteKind::Visit, "kept through the wipe", None)
        .unwrap();
    let wipe = |dev: &Device| {
        clock.store(clock.load(Ordering::SeqCst) + 15 * DAY, Ordering::SeqCst);
        assert!(matches!(dev.cases(), Err(Error::ExpiredAndWiped { .. })));
    };
    wipe(&dev);
    drop(dev);

    // Another member of staff gets nothing, on the device or at the endpoint; the store stays.
    assert!(matches!(
        sign_in(&dir, &now, &server, &lena_token),
        Err(Error::Unrecoverable)
    ));
    let url = format!("{}/v1/escrow/{}", server.url, who.device_id);
    let status = |token: Option<&str>| {
        let mut req = ureq::post(&url);
        if let Some(t) = token {
            req = req.set("authorization", &format!("Bearer {t}"));
        }
        match req.call() {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(code, _)) => code,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(status(Some(&lena_token)), 404);
    assert_eq!(status(None), 401);
    assert_eq!(status(Some(&priya_token)), 200, "positive control");

    // Priya on a new enrolment of hers: everything is back, the unsynced note included.
    let new_token = issued["token"].as_str().unwrap();
    let (dev, new_who) = sign_in(&dir, &now, &server, new_token).unwrap();
    assert_ne!(new_who.device_id, who.device_id);
    assert!(dev
        .show(case)
        .unwrap()
        .to_string()
        .contains("kept through the wipe"));

    // Wiped again, and that enrolment revoked: the wipe is final, whoever signs in.
    wipe(&dev);
    drop(dev);
    let device_id = issued["device_id"].as_str().unwrap().to_string();
    let server = server.offline(|data| {
        admin(data, &["token", "revoke", "--device", &device_id]);
    });
    assert!(matches!(
        sign_in(&dir, &now, &server, &priya_token),
        Err(Error::Unrecoverable)
    ));
    let server_data = server.data.clone();
    drop(server);
    let escrow_audits: Vec<serde_json::Value> = audit_entries(&server_data)
        .into_iter()
        .filter(|e| e["kind"] == "key_escrow")
        .collect();
    assert!(escrow_audits.len() >= 5, "{escrow_audits:?}");
    assert!(escrow_audits
        .iter()
        .any(|e| e["details"]["handed_out"] == false));
}

/// The sealed bytes, as on disk, of every record the (closed) store in `dir` holds about a case
/// document; they are in the files now (the positive control for a later "no trace").
fn sealed_case_records(dir: &std::path::Path, case: casenote_protocol::CaseId) -> Vec<Vec<u8>> {
    let store = casenote_client_core::store::DeviceStore::open(dir, &store_key()).unwrap();
    let sealed = store
        .sealed_records_of(casenote_protocol::DocId(case.0))
        .unwrap();
    drop(store);
    assert!(all_in(&all_bytes_under(dir), &sealed), "positive control");
    sealed
}

#[test]
fn the_server_sets_the_lease_and_a_revoked_device_wipes_on_its_next_contact() {
    let (tmp, data, staff) = demo_borough();
    let issued: serde_json::Value = serde_json::from_str(&admin(
        &data,
        &["token", "issue", "--staff", "Priya Shah", "--json"],
    ))
    .unwrap();
    let server = Server::start_with(
        &data,
        "127.0.0.1:0",
        &["--lock-after-hours", "2", "--wipe-after-days", "3"],
    );
    let (clock, now) = manual_clock();
    let start = clock.load(Ordering::SeqCst);
    let dev =
        Device::open_with_clock(&tmp.path().join("tablet"), &store_key(), now.clone()).unwrap();
    dev.login(&server.url, &token_of(&staff, "Priya Shah"))
        .unwrap();
    dev.sync().unwrap();
    let lease = dev.status().unwrap().lease;
    assert_eq!(
        lease.locks_at_ms,
        Some(start + 2 * HOUR),
        "the server's lock time"
    );
    assert_eq!(
        lease.wipes_at_ms,
        Some(start + 3 * DAY),
        "the server's wipe time"
    );
    clock.store(start + 3 * HOUR, Ordering::SeqCst);
    assert!(matches!(dev.cases(), Err(Error::Locked { hours: 2 })));

    // A revoked tablet, back in touch with the server, wipes itself on that contact.
    let tablet_dir = tmp.path().join("revoked");
    let tablet = Device::open_with_clock(&tablet_dir, &store_key(), now.clone()).unwrap();
    tablet
        .login(&server.url, issued["token"].as_str().unwrap())
        .unwrap();
    tablet.sync().unwrap();
    assert!(tablet.status().unwrap().docs_held > 0);
    let device_id = issued["device_id"].as_str().unwrap().to_string();
    let _server = server.offline(|data| {
        admin(data, &["token", "revoke", "--device", &device_id]);
    });
    assert!(matches!(tablet.sync(), Err(Error::RevokedAndWiped(_))));
    assert_eq!(tablet.status().unwrap().docs_held, 0);
    assert!(matches!(tablet.whoami(), Err(Error::NotLoggedIn)));
}
