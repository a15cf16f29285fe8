//! The crash harness: a real server process under concurrent sync load from several devices is
//! killed with SIGKILL at random moments and restarted, again and again; afterwards every change
//! it acknowledged is there and every device converges.

mod common;
use casenote_client_core::{Device, Error, TransportError};
use casenote_protocol::record::{Identity, NoteKind};
use common::*;
use rand::Rng;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let syncs_ok = Arc::new(AtomicUsize::new(0));
    let syncs_failed = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for (i, name) in names.iter().enumerate() {
        // The fourth device is Priya's laptop, with a token of its own.
        let token = if i == 3 {
            laptop_token.clone()
        } else {
            token_of(&staff, name)
        };
        let dir = tmp.path().join(format!("dev{i}"));
        let (url, stop, acked, ok, failed) = (
            url.clone(),
            stop.clone(),
            acknowledged.clone(),
            syncs_ok.clone(),
            syncs_failed.clone(),
        );
        workers.push(std::thread::spawn(move || {
            let dev = Device::open(&dir, &common::store_key()).unwrap();
            while dev.login(&url, &token).is_err() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut pending = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let marker = format!("<d{i}-{n}>");
                n += 1;
                let edit = if n % 2 == 0 {
                    dev.plan_append(case, &marker)
                } else {
                    dev.note_add(case, NoteKind::Visit, &marker, None)
                        .map(|_| ())
                };
                match edit {
                    Ok(()) => pending.push(marker),
                    // The case arrives with this device's first successful sync.
                    Err(Error::NotFound(..)) => {}
                    Err(e) => panic!("device {i}: edit failed: {e}"),
                }
                match dev.sync() {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        acked.lock().unwrap().append(&mut pending);
                    }
                    Err(Error::Transport(
                        TransportError::Unreachable { .. } | TransportError::Server { .. },
                    )) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => {
                        panic!("device {i}: sync failed with something other than the outage: {e}")
                    }
                }
            }
            pending
        }));
    }

    let mut rng = rand::thread_rng();
    let kills = rounds(8, 25);
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..250)));
        server = server.crash_and_restart();
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let unacknowledged: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("a device thread panicked"))
        .collect();

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
    let acknowledged = acknowledged.lock().unwrap();
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
        syncs_ok.load(Ordering::SeqCst),
        syncs_failed.load(Ordering::SeqCst),
    );
    eprintln!("{kills} kills; {ok} syncs acknowledged, {failed} failed during outages; {} acknowledged changes checked", acknowledged.len());
    assert!(
        ok > kills,
        "too few syncs got through for the kills to matter"
    );
    assert!(failed > 0, "no sync ever met a dead server");
}
