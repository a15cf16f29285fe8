//! A device keeps documents in memory once loaded (client-core's `doc_cache`, issue 18): what it
//! shows and stores must be exactly what a fresh load of its store gives, through edits, syncs
//! that bring other devices' changes, and compactions; and edits made at once from two threads
//! through one handle must all be kept.

mod common;
use casenote_client_core::Device;
use casenote_protocol::record::Identity;
use common::*;
use std::path::Path;
use std::sync::Arc;

fn narrative(shown: &serde_json::Value) -> String {
    shown["plans"][0]["content"]["narrative"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn signed_in(dir: &Path, url: &str, token: &str) -> Device {
    let dev = Device::open(dir, &store_key()).unwrap();
    dev.login(url, token).unwrap();
    dev
}

#[test]
fn a_device_shows_and_stores_what_a_fresh_load_of_its_store_gives_through_edits_and_syncs() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let a = signed_in(
        &tmp.path().join("a"),
        &server.url,
        &token_of(&staff, "Priya Shah"),
    );
    let b_dir = tmp.path().join("b");
    let b = signed_in(&b_dir, &server.url, &token_of(&staff, "Mark Ellison"));
    let case = a
        .case_new(&Identity {
            name: "Cached Person".into(),
            ..Default::default()
        })
        .unwrap();
    a.sync().unwrap();
    b.sync().unwrap();
    // More rounds than a document keeps chunks before it is compacted into one snapshot
    // (limits::DEVICE_CHUNKS_BEFORE_COMPACT), on both devices, with each device's edits and the
    // other's arriving in turn.
    let rounds = casenote_protocol::limits::DEVICE_CHUNKS_BEFORE_COMPACT + 6;
    for i in 0..rounds {
        a.plan_append(case, &format!(" a{i};")).unwrap();
        a.sync().unwrap();
        b.sync().unwrap();
        b.plan_append(case, &format!(" b{i};")).unwrap();
        b.sync().unwrap();
        a.sync().unwrap();
    }
    let shown_a = a.show(case).unwrap();
    let shown_b = b.show(case).unwrap();
    assert_eq!(shown_a, shown_b, "the two devices converged");
    let text = narrative(&shown_b);
    for i in 0..rounds {
        assert!(text.contains(&format!(" a{i};")) && text.contains(&format!(" b{i};")));
    }
    assert_eq!(b.status().unwrap().unsynced_docs, 0);
    drop(b);
    // A new handle loads everything from the files.
    let reopened = Device::open(&b_dir, &store_key()).unwrap();
    assert_eq!(reopened.show(case).unwrap(), shown_b);
    assert_eq!(reopened.status().unwrap().unsynced_docs, 0);
}

#[test]
fn edits_at_once_from_two_threads_through_one_handle_are_all_kept() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let dir = tmp.path().join("dev");
    let dev = Arc::new(signed_in(
        &dir,
        &server.url,
        &token_of(&staff, "Priya Shah"),
    ));
    let case = dev
        .case_new(&Identity {
            name: "Busy Person".into(),
            ..Default::default()
        })
        .unwrap();
    let per_thread = 60;
    let threads: Vec<_> = ["x", "y"]
        .into_iter()
        .map(|t| {
            let dev = dev.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    dev.plan_append(case, &format!(" {t}{i};")).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let report = dev.sync().unwrap();
    assert!(report.rejections.is_empty(), "{:?}", report.rejections);
    drop(dev);
    let reopened = Device::open(&dir, &store_key()).unwrap();
    let text = narrative(&reopened.show(case).unwrap());
    let missing: Vec<String> = ["x", "y"]
        .iter()
        .flat_map(|t| (0..per_thread).map(move |i| format!(" {t}{i};")))
        .filter(|m| !text.contains(m.as_str()))
        .collect();
    assert!(missing.is_empty(), "edits lost: {missing:?}");
    let fresh = signed_in(
        &tmp.path().join("fresh"),
        &server.url,
        &token_of(&staff, "Mark Ellison"),
    );
    fresh.sync().unwrap();
    assert_eq!(narrative(&fresh.show(case).unwrap()), text);
}
