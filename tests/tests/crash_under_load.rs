//! The crash harness: a real server process under concurrent sync load from several devices is
//! killed with SIGKILL at random moments and restarted, again and again; afterwards every change
//! it acknowledged is there and every device converges.

mod common;
use casenote_client_core::Device;
use casenote_protocol::record::Identity;
use common::*;
use rand::Rng;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[test]
fn a_server_killed_at_random_under_concurrent_load_loses_nothing_it_acknowledged() {
    let (tmp, data, staff) = demo_borough();
    let fresh_token = issue_token(&data, "Priya Shah");
    let laptop_token = issue_token(&data, "Priya Shah");
    let mut server = Server::start(&data);
    let url = server.url.clone();
    let names = ["Priya Shah", "Mark Ellison", "Ruth Adebayo", "Priya Shah"];
    let owner = Device::open(&tmp.path().join("owner"), &common::store_key()).unwrap();
    owner.login(&url, &token_of(&staff, "Priya Shah")).unwrap();
    let case = owner
        .case_new(&Identity {
            name: "Crash Load Person".into(),
            ..Default::default()
        })
        .unwrap();
    owner.sync().unwrap();
    drop(owner);

    let load = FieldLoad::default();
    let mut workers = Vec::new();
    for (i, name) in names.iter().enumerate() {
        // The fourth device is Priya's laptop, with a token of its own.
        let token = if i == 3 {
            laptop_token.clone()
        } else {
            token_of(&staff, name)
        };
        let dir = tmp.path().join(format!("dev{i}"));
        workers.push(edit_and_sync_until_stopped(
            dir,
            url.clone(),
            token,
            case,
            i,
            load.clone(),
        ));
    }

    let mut rng = rand::thread_rng();
    let kills = rounds(8, 25);
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..250)));
        server = server.crash_and_restart();
    }
    std::thread::sleep(Duration::from_millis(200));
    let unacknowledged = load.stop_and_join(workers);

    // Every device syncs until quiet; a fresh device then pulls everything.
    let devices: Vec<Device> = (0..names.len())
        .map(|i| Device::open(&tmp.path().join(format!("dev{i}")), &common::store_key()).unwrap())
        .collect();
    for _ in 0..2 {
        for d in &devices {
            d.sync().unwrap();
        }
    }
    let fresh = Device::open(&tmp.path().join("fresh"), &common::store_key()).unwrap();
    fresh.login(&server.url, &fresh_token).unwrap();
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
    let acknowledged = load.acknowledged.lock().unwrap();
    for m in acknowledged.iter() {
        assert!(
            text.contains(m.as_str()),
            "acknowledged change {m} was lost"
        );
    }
    for m in &unacknowledged {
        assert!(
            text.contains(m.as_str()),
            "unacknowledged change {m} was lost although its device kept it"
        );
    }
    let (ok, failed) = (
        load.ok.load(Ordering::SeqCst),
        load.failed.load(Ordering::SeqCst),
    );
    eprintln!("{kills} kills; {ok} syncs acknowledged, {failed} failed during outages; {} acknowledged changes checked", acknowledged.len());
    assert!(
        ok > kills,
        "too few syncs got through for the kills to matter"
    );
    assert!(failed > 0, "no sync ever met a dead server");
}
