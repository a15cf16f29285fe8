//! Several server nodes on one PostgreSQL database: devices on different nodes converge, a node
//! killed with SIGKILL under load loses nothing it acknowledged while devices on the other node
//! carry on, and an edit through one node reaches a device listening live on another.
//!
//! These run on PostgreSQL whatever `CASENOTE_TEST_BACKEND` says: a throwaway cluster of this
//! test process, a fresh database per test, real `casenote-server serve --postgres` processes.

mod common;
use casenote_client_core::live::LiveListener;
use casenote_client_core::Device;
use casenote_protocol::record::Identity;
use common::*;
use rand::Rng;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A fresh database with the demo borough loaded; its URL and the demo staff.
fn demo_database() -> (String, Vec<Staff>) {
    let url = pg::fresh_database();
    let out = server_cmd(&["demo", "--postgres", &url, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("demo --json prints JSON");
    let staff = v["tokens"]
        .as_array()
        .expect("a tokens array")
        .iter()
        .map(|t| Staff {
            name: t["staff"].as_str().unwrap().to_string(),
            team: t["team"].as_str().unwrap().to_string(),
            token: t["token"].as_str().unwrap().to_string(),
        })
        .collect();
    (url, staff)
}

fn postgres_token(url: &str, staff: &str) -> String {
    server_cmd(&[
        "admin",
        "--postgres",
        url,
        "token",
        "issue",
        "--staff",
        staff,
    ])
    .trim()
    .to_string()
}

fn cli(tmp: &Path, store: &str, server: &Server, token: &str) -> Cli {
    Cli::login(tmp.join(store), server, token)
}

#[test]
fn devices_on_two_nodes_of_one_database_converge() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, staff) = demo_database();
    let a = Server::start_postgres(&url);
    let b = Server::start_postgres(&url);
    let priya = cli(tmp.path(), "priya", &a, &token_of(&staff, "Priya Shah"));
    let mark = cli(tmp.path(), "mark", &b, &token_of(&staff, "Mark Ellison"));

    let case = priya.ok(&["case", "new", "--name", "Two Nodes Person"]);
    priya.ok(&["plan", "append", &case, "--text", "Written through node A."]);
    priya.sync();
    mark.sync();
    assert!(
        plan_text(&mark.show(&case)).contains("Written through node A."),
        "a device on node B did not receive what node A stored"
    );

    // Both edit the same plan offline, then sync through their own nodes until quiet.
    priya.ok(&["plan", "append", &case, "--text", " Priya on A."]);
    mark.ok(&["plan", "append", &case, "--text", " Mark on B."]);
    priya.ok(&[
        "note",
        "add",
        &case,
        "--kind",
        "visit",
        "--text",
        "Visit noted on A.",
    ]);
    mark.ok(&[
        "note",
        "add",
        &case,
        "--kind",
        "phone",
        "--text",
        "Call noted on B.",
    ]);
    for _ in 0..2 {
        priya.sync();
        mark.sync();
    }
    let (on_a, on_b) = (priya.show(&case), mark.show(&case));
    assert_eq!(on_a, on_b, "the devices on the two nodes did not converge");
    let text = on_a.to_string();
    for part in [
        "Priya on A.",
        "Mark on B.",
        "Visit noted on A.",
        "Call noted on B.",
    ] {
        assert!(text.contains(part), "{part:?} is missing after convergence");
    }
    drop((a, b));
    let verified = server_cmd(&["audit", "verify", "--postgres", &url]);
    assert!(verified.contains("intact"), "{verified}");
}

#[test]
fn an_edit_through_node_a_reaches_a_device_listening_live_on_node_b_within_a_second() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, staff) = demo_database();
    let a = Server::start_postgres(&url);
    let b = Server::start_postgres(&url);
    let priya = cli(tmp.path(), "priya", &a, &token_of(&staff, "Priya Shah"));
    let mark_token = token_of(&staff, "Mark Ellison");
    let mark = cli(tmp.path(), "mark", &b, &mark_token);
    let case = priya.ok(&["case", "new", "--name", "Live Across Nodes"]);
    priya.sync();
    mark.sync();

    let mut live: LiveListener =
        casenote_client_core::live::connect(&b.url, &mark_token).expect("live on node B");
    // The hello comes first, on every connection.
    let hello = live
        .next(Duration::from_secs(10))
        .expect("the live channel")
        .expect("a hello");
    assert!(hello.docs.is_empty(), "the hello names no document");

    priya.ok(&["plan", "append", &case, "--text", "Heard on B?"]);
    priya.sync();
    let acknowledged = Instant::now();
    // The bound: within a second of node A acknowledging the edit.
    let deadline = acknowledged + Duration::from_secs(1);
    let mut heard = None;
    while heard.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match live.next(left).expect("the live channel stays up") {
            Some(event) if !event.docs.is_empty() => heard = Some(event),
            Some(_) => {}
            None => break,
        }
    }
    let event = heard.expect("no live event on node B within a second of node A's acknowledgement");
    eprintln!(
        "heard on node B {} ms after node A acknowledged",
        acknowledged.elapsed().as_millis()
    );
    let plan = mark.show(&case)["plans"][0]["doc_id"]
        .as_str()
        .map(str::to_string);
    assert!(
        event.docs.iter().any(|d| Some(d.to_string()) == plan),
        "the event does not name the plan Priya edited: {event:?}"
    );
    mark.sync();
    assert!(plan_text(&mark.show(&case)).contains("Heard on B?"));
}

#[test]
fn a_node_killed_under_load_loses_nothing_it_acknowledged_and_the_other_node_carries_on() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, staff) = demo_database();
    let fresh_token = postgres_token(&url, "Priya Shah");
    let mut a = Server::start_postgres(&url);
    let b = Server::start_postgres(&url);
    let owner = Device::open(&tmp.path().join("owner"), &store_key()).unwrap();
    owner
        .login(&a.url, &token_of(&staff, "Priya Shah"))
        .unwrap();
    let case = owner
        .case_new(&Identity {
            name: "Node Crash Person".into(),
            ..Default::default()
        })
        .unwrap();
    owner.sync().unwrap();
    drop(owner);

    // Two devices on node A (the one killed), two on node B.
    let plan = [
        ("Priya Shah", a.url.clone(), false),
        ("Mark Ellison", a.url.clone(), false),
        ("Ruth Adebayo", b.url.clone(), true),
        ("Priya Shah", b.url.clone(), true),
    ];
    // One stop and one list of acknowledged edits; sync counts per node.
    let on_a = FieldLoad::default();
    let on_b = FieldLoad {
        stop: on_a.stop.clone(),
        acknowledged: on_a.acknowledged.clone(),
        ..FieldLoad::default()
    };
    let mut workers = Vec::new();
    for (i, (name, node, is_b)) in plan.iter().enumerate() {
        let token = if i == 3 {
            postgres_token(&url, name)
        } else {
            token_of(&staff, name)
        };
        let dir = tmp.path().join(format!("dev{i}"));
        let load = if *is_b { on_b.clone() } else { on_a.clone() };
        workers.push(edit_and_sync_until_stopped(
            dir,
            node.clone(),
            token,
            case,
            i,
            load,
        ));
    }

    let mut rng = rand::thread_rng();
    let kills = rounds(4, 12);
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..300)));
        a = a.crash_and_restart();
    }
    std::thread::sleep(Duration::from_millis(300));
    let unacknowledged = on_a.stop_and_join(workers);

    let devices: Vec<Device> = (0..plan.len())
        .map(|i| Device::open(&tmp.path().join(format!("dev{i}")), &store_key()).unwrap())
        .collect();
    for _ in 0..2 {
        for d in &devices {
            d.sync().unwrap();
        }
    }
    let fresh = Device::open(&tmp.path().join("fresh"), &store_key()).unwrap();
    fresh.login(&b.url, &fresh_token).unwrap();
    fresh.sync().unwrap();
    let expected = fresh.show(case).unwrap();
    for (i, d) in devices.iter().enumerate() {
        assert_eq!(
            d.show(case).unwrap(),
            expected,
            "device {i} did not converge"
        );
    }
    let text = expected.to_string();
    let acknowledged = on_a.acknowledged.lock().unwrap();
    for m in acknowledged.iter().chain(&unacknowledged) {
        assert!(text.contains(m.as_str()), "change {m} was lost");
    }
    let (ok_b, failed_b, failed_a) = (
        on_b.ok.load(Ordering::SeqCst),
        on_b.failed.load(Ordering::SeqCst),
        on_a.failed.load(Ordering::SeqCst),
    );
    eprintln!(
        "{kills} kills of node A; node B: {ok_b} syncs, {failed_b} failed; node A: {failed_a} \
         failed syncs; {} acknowledged changes checked",
        acknowledged.len()
    );
    assert_eq!(
        failed_b, 0,
        "devices on node B were held up by node A's death"
    );
    assert!(
        ok_b > kills,
        "too few syncs went through node B for the kills to matter"
    );
    assert!(failed_a > 0, "no sync ever met the dead node");
    drop((a, b));
    let verified = server_cmd(&["audit", "verify", "--postgres", &url]);
    assert!(verified.contains("intact"), "{verified}");
}
