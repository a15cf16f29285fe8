//! Reads on devices are audited (issue 16), through the real `casenote` binary and a real server:
//! a case shown, exported (`show --json`) or its conflicts listed is recorded on the device
//! before anything is printed, waits there while the device is offline, and reaches the server's
//! audit chain at the next sync as `device_view` entries with ids only; a view re-sent (an answer
//! lost) is not audited twice, and a view survives the process being killed as it prints.

mod common;
use casenote_protocol::wire::{SyncRequest, View, ViewKind, PROTOCOL_VERSION};
use casenote_protocol::{CaseId, Seq};
use common::*;
use serde_json::Value;
use std::io::Read;
use std::process::Stdio;

fn views_queued(cli: &Cli) -> u64 {
    cli.json(&["status", "--json"])["views_queued"]
        .as_u64()
        .expect("status --json has views_queued")
}

fn device_views(data: &std::path::Path) -> Vec<Value> {
    audit_entries(data)
        .into_iter()
        .filter(|e| e["kind"] == "device_view")
        .collect()
}

#[test]
fn views_made_offline_reach_the_audit_chain_at_the_next_sync_with_ids_only() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let dev = device(&tmp, &server, &staff, "dev", "Priya Shah");
    let case = dev.ok(&["case", "new", "--name", "Viewed Person"]);
    dev.ok(&[
        "note",
        "add",
        &case,
        "--kind",
        "visit",
        "--text",
        "Private words here.",
    ]);
    dev.sync();
    let me = raw::whoami(&server.url, &token_of(&staff, "Priya Shah"));

    // Offline: three views, kept on the device.
    let server = server.offline(|_| {
        dev.ok(&["show", &case]);
        dev.ok(&["show", &case, "--json"]);
        dev.ok(&["conflicts", &case]);
        assert_eq!(views_queued(&dev), 3);
    });
    assert_eq!(
        views_queued(&dev),
        3,
        "views are kept until the server has them"
    );
    dev.sync();
    assert_eq!(views_queued(&dev), 0, "the server holds them now");
    dev.sync();

    let _server = server.offline(|data| {
        let views = device_views(data);
        let kinds: Vec<&str> = views
            .iter()
            .map(|e| e["details"]["view"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["show", "export", "conflicts"], "{views:?}");
        for e in &views {
            assert_eq!(e["details"]["case_id"], case.as_str());
            assert_eq!(e["staff_id"], me["staff_id"]);
            assert_eq!(e["device_id"], me["device_id"]);
            let mut keys: Vec<&str> = e["details"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            keys.sort();
            assert_eq!(
                keys,
                [
                    "case_id",
                    "device_time_ms",
                    "view",
                    "view_seq",
                    "view_stream"
                ],
                "a view's audit entry carries ids, a kind and a time only"
            );
            assert!(!e.to_string().contains("Private words"), "{e}");
            assert!(!e.to_string().contains("Viewed Person"), "{e}");
        }
        let verified = server_cmd_on(&["audit", "verify"], data, &[]);
        assert!(verified.contains("intact"), "{verified}");
    });
}

#[test]
fn a_view_is_on_disk_before_the_record_is_printed_and_survives_a_kill() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let dev = device(&tmp, &server, &staff, "dev", "Priya Shah");
    let case = dev.ok(&["case", "new", "--name", "Killed Mid Page"]);
    dev.sync();
    for _ in 0..rounds(3, 20) {
        let mut child = dev
            .command(&["show", &case])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // As soon as the first byte of the page is out, SIGKILL.
        let mut first = [0u8; 1];
        let n = child.stdout.take().unwrap().read(&mut first).unwrap();
        assert_eq!(n, 1, "show printed nothing");
        let _ = child.kill();
        let _ = child.wait();
    }
    let before = views_queued(&dev);
    assert_eq!(before as usize, rounds(3, 20), "every view shown was kept");
    dev.sync();
    drop(server);
    assert_eq!(device_views(&data).len(), rounds(3, 20));
}

#[test]
fn a_view_sent_again_after_a_lost_answer_is_audited_once() {
    let (_tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let token = token_of(&staff, "Priya Shah");
    let stream = uuid::Uuid::new_v4();
    let case = CaseId::new_random();
    let view = |seq| View {
        stream,
        seq,
        case_id: case,
        kind: ViewKind::Show,
        device_time_ms: 1_700_000_000_000,
    };
    let request = |views: Vec<View>| SyncRequest {
        version: PROTOCOL_VERSION,
        cursor: Seq(0),
        device_clock_ms: 0,
        docs: Vec::new(),
        log_id: None,
        confirmed_reconcile: None,
        views,
        restricted: Vec::new(),
    };
    let first = raw::sync_request(&server.url, &token, &request(vec![view(1), view(2)])).unwrap();
    assert_eq!(first.views_through, Some(2));
    // The answer was lost: the device sends both again, and one more.
    let again = raw::sync_request(
        &server.url,
        &token,
        &request(vec![view(1), view(2), view(3)]),
    )
    .unwrap();
    assert_eq!(again.views_through, Some(3));
    // A request without views says nothing about them (and an older device sends none).
    let none = raw::sync_request(&server.url, &token, &request(Vec::new())).unwrap();
    assert_eq!(none.views_through, None);
    drop(server);
    let seqs: Vec<u64> = device_views(&data)
        .iter()
        .map(|e| e["details"]["view_seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
}

#[test]
fn more_views_than_one_request_carries_go_up_in_one_sync() {
    // SYNC_VIEWS_MAX views a request: a device with more sends them over the rounds of one sync.
    let max = casenote_protocol::limits::SYNC_VIEWS_MAX;
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let store = tmp.path().join("api");
    let dev = casenote_client_core::Device::open(&store, &store_key()).unwrap();
    dev.login(&server.url, &token_of(&staff, "Priya Shah"))
        .unwrap();
    let case = dev
        .case_new(&casenote_protocol::record::Identity {
            name: "Much Viewed".into(),
            ..Default::default()
        })
        .unwrap();
    for _ in 0..max + 5 {
        dev.show(case).unwrap();
    }
    assert_eq!(dev.views_queued().unwrap(), max + 5);
    dev.sync().unwrap();
    assert_eq!(dev.views_queued().unwrap(), 0);
    drop(dev);
    drop(server);
    assert_eq!(device_views(&data).len(), max + 5);
}

#[test]
fn a_full_queue_of_views_refuses_another_view_until_the_device_syncs() {
    // The queue is bounded (DEVICE_VIEWS_QUEUED_MAX): at the limit a view is refused, none
    // already queued is dropped, and a sync empties it.
    let max = casenote_protocol::limits::DEVICE_VIEWS_QUEUED_MAX;
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let store = tmp.path().join("api");
    let dev = casenote_client_core::Device::open(&store, &store_key()).unwrap();
    dev.login(&server.url, &token_of(&staff, "Priya Shah"))
        .unwrap();
    let case = dev
        .case_new(&casenote_protocol::record::Identity {
            name: "Viewed Often".into(),
            ..Default::default()
        })
        .unwrap();
    for _ in 0..max {
        dev.export(case).unwrap();
    }
    match dev.show(case) {
        Err(casenote_client_core::Error::ViewsFull { queued }) => assert_eq!(queued, max),
        other => panic!("a view past the limit: {other:?}"),
    }
    assert_eq!(
        dev.views_queued().unwrap(),
        max,
        "nothing queued was dropped"
    );
    dev.release();
    // The CLI says what to do.
    let cli = Cli::new(store.clone());
    let mut cmd = cli.command(&["show", &case.to_string()]);
    cmd.env("CASENOTE_KEY_FILE", write_key_file(&tmp));
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sync before opening another record"), "{err}");
    dev.sync().unwrap();
    assert_eq!(dev.views_queued().unwrap(), 0);
    dev.show(case).unwrap();
    drop(dev);
    drop(server);
    assert_eq!(device_views(&data).len(), max);
}

/// A 0600 key file holding [`store_key`], for the CLI to open a store the Rust API made.
fn write_key_file(tmp: &tempfile::TempDir) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = tmp.path().join("api.key");
    std::fs::write(
        &path,
        store_key()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}
