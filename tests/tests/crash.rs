//! Crashes with real processes and SIGKILL: a server killed right after it acknowledged a sync
//! keeps every acknowledged change; a device killed mid-edit keeps every edit whose command
//! returned, and its outbox still syncs; a device killed during or right after a sync (one that
//! brought something, or an idle one whose bookkeeping waits for no flush) recovers and
//! converges. Which syncs wait for the device's disk is checked here too.

mod common;
use casenote_client_core::Device;
use casenote_protocol::record::Identity;
use common::*;
use rand::Rng;
use std::time::{Duration, Instant};

#[test]
fn a_server_killed_right_after_acknowledging_keeps_every_acknowledged_change() {
    let (tmp, data, staff) = demo_borough();
    let fresh_token = issue_token(&data, "Priya Shah");
    let mut server = Server::start(&data);
    let dev = device(&tmp, &server, &staff, "dev", "Priya Shah");
    let case = dev.ok(&["case", "new", "--name", "Test Person Three"]);

    let mut acknowledged = Vec::new();
    for round in 0..rounds(5, 20) {
        for i in 0..3 {
            let marker = format!("ACK-{round}-{i}");
            let note = dev.ok(&["note", "add", &case, "--text", &marker]);
            dev.ok(&["note", "file", &note]);
            dev.ok(&["plan", "append", &case, "--text", &format!(" {marker}")]);
            acknowledged.push(marker);
        }
        let report = dev.sync();
        assert!(
            report["changes_stored"].as_u64().unwrap() > 0,
            "the server stored nothing: {report}"
        );
        // The sync returned, so the server acknowledged: kill it at once.
        server = server.crash_and_restart();
    }

    let fresh = Cli::login(tmp.path().join("fresh"), &server, &fresh_token);
    fresh.sync();
    let show = fresh.show(&case);
    let notes: Vec<String> = show["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["content"]["text"].as_str().unwrap().to_string())
        .collect();
    let plan = plan_text(&show);
    for marker in &acknowledged {
        assert!(
            notes.contains(marker),
            "acknowledged note {marker} was lost"
        );
        assert!(
            plan.contains(marker),
            "acknowledged plan edit {marker} was lost"
        );
    }
    assert_eq!(show, dev.show(&case));
}

#[test]
fn a_device_killed_mid_edit_keeps_every_edit_that_returned_and_still_syncs_them() {
    let (tmp, data, staff) = demo_borough();
    let fresh_token = issue_token(&data, "Priya Shah");
    let server = Server::start(&data);
    let dev = device(&tmp, &server, &staff, "dev", "Priya Shah");
    let case = dev.ok(&["case", "new", "--name", "Test Person Four"]);
    dev.sync();

    let mut rng = rand::thread_rng();
    let mut returned = Vec::new();
    let mut killed = 0;
    for i in 0..rounds(40, 200) {
        let marker = format!("EDIT-{i:02}");
        let mut child = dev
            .command(&["plan", "append", &case, "--text", &format!(" {marker}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_micros(rng.gen_range(0..60_000));
        let mut finished = None;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                finished = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        match finished {
            Some(status) => {
                let mut err = String::new();
                std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
                assert!(status.success(), "edit {marker} failed on its own: {err}");
                returned.push(marker);
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                killed += 1;
            }
        }
    }
    assert!(
        killed > 0,
        "no edit was interrupted; the test proved nothing"
    );
    assert!(
        !returned.is_empty(),
        "no edit returned; the test proved nothing"
    );

    let plan = plan_text(&dev.show(&case));
    for marker in &returned {
        assert!(
            plan.contains(marker.as_str()),
            "edit {marker} returned but was lost after a crash"
        );
    }
    let status = dev.json(&["status", "--json"]);
    assert!(status["unsynced_changes"].as_u64().unwrap() >= returned.len() as u64);

    dev.sync();
    let fresh = Cli::login(tmp.path().join("fresh"), &server, &fresh_token);
    fresh.sync();
    let fresh_plan = plan_text(&fresh.show(&case));
    assert_eq!(
        fresh_plan, plan,
        "the outbox did not carry every surviving edit to the server"
    );
    assert_eq!(dev.json(&["status", "--json"])["unsynced_changes"], 0);
}

#[test]
fn a_device_killed_mid_sync_recovers_and_converges() {
    let (tmp, data, staff) = demo_borough();
    let fresh_token = issue_token(&data, "Priya Shah");
    let server = Server::start(&data);
    let dev = device(&tmp, &server, &staff, "dev", "Priya Shah");
    let other = device(&tmp, &server, &staff, "other", "Mark Ellison");
    let case = dev.ok(&["case", "new", "--name", "Test Person Five"]);
    dev.sync();
    other.sync();

    let mut rng = rand::thread_rng();
    let mut killed = 0;
    for i in 0..rounds(15, 60) {
        dev.ok(&["plan", "append", &case, "--text", &format!(" <mine-{i}>")]);
        other.ok(&["plan", "append", &case, "--text", &format!(" <theirs-{i}>")]);
        other.sync();
        // The first sync brings the colleague's edit; the second, when the first finished,
        // brings nothing, and its bookkeeping is committed without a flush. Either may die.
        for _ in 0..2 {
            let mut child = dev
                .command(&["sync"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_micros(rng.gen_range(0..40_000)));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                killed += 1;
            }
            child.wait().unwrap();
        }
    }
    assert!(
        killed > 0,
        "no sync was interrupted; the test proved nothing"
    );
    dev.sync();
    other.sync();
    let fresh = Cli::login(tmp.path().join("fresh"), &server, &fresh_token);
    fresh.sync();
    let show = fresh.show(&case);
    assert_eq!(dev.show(&case), show);
    assert_eq!(other.show(&case), show);
    let plan = plan_text(&show);
    for i in 0..rounds(15, 60) {
        assert!(
            plan.contains(&format!("<mine-{i}>")) && plan.contains(&format!("<theirs-{i}>")),
            "round {i} lost an edit"
        );
    }
}

#[test]
fn a_sync_waits_for_the_device_disk_unless_it_brought_and_changed_nothing() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let open = |name: &str, who: &str| {
        let dev = Device::open(&tmp.path().join(name), &store_key()).unwrap();
        dev.login(&server.url, &token_of(&staff, who)).unwrap();
        dev
    };
    let (a, b) = (open("a", "Priya Shah"), open("b", "Mark Ellison"));
    let who = Identity {
        name: "Test Person Six".into(),
        ..Default::default()
    };
    let case = a.case_new(&who).unwrap();
    a.sync().unwrap();
    b.sync().unwrap();
    b.sync().unwrap(); // confirms the first sync's reconciliation

    let flushes = b.store_flushes();
    let idle = b.sync().unwrap();
    assert_eq!(idle.changes_down, 0, "nothing was new");
    assert_eq!(
        b.store_flushes(),
        flushes,
        "a sync that brought and changed nothing waited for the disk"
    );
    let last = b
        .status()
        .unwrap()
        .last_sync
        .expect("the idle sync is recorded");
    assert_eq!(last.finished_at_ms, idle.finished_at_ms);
    assert_eq!(last.cursor, idle.cursor);

    a.plan_append(case, " a colleague's line").unwrap();
    a.sync().unwrap();
    let flushes = b.store_flushes();
    let brought = b.sync().unwrap();
    assert!(brought.changes_down > 0, "the colleague's edit came down");
    assert!(
        b.store_flushes() > flushes,
        "a sync that brought a change returned before it was on disk"
    );

    b.plan_append(case, " my own line").unwrap();
    let flushes = b.store_flushes();
    let pushed = b.sync().unwrap();
    assert_eq!(pushed.changes_stored, 1);
    assert!(
        b.store_flushes() > flushes,
        "a sync whose change was acknowledged returned before that was on disk"
    );
}
