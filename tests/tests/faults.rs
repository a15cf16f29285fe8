//! Network faults between real devices and a real server: connections cut mid-request and
//! mid-response by a proxy, partitions, and requests duplicated and replayed out of order. After
//! healing, every replica converges and nothing acknowledged is lost.

mod common;
#[path = "common/proxy.rs"]
mod proxy;

use casenote_client_core::{Device, HttpTransport, Transport, TransportError};
use casenote_protocol::record::{Identity, NoteKind};
use casenote_protocol::wire::WhoAmI;
use common::*;
use std::cell::RefCell;
use std::sync::atomic::Ordering;

/// Sends every request twice, and before each request replays the previous one: duplicated and
/// re-ordered requests, as a flaky network with retries produces.
struct DuplicatesAndReplays {
    inner: HttpTransport,
    previous: RefCell<Option<Vec<u8>>>,
}

impl Transport for DuplicatesAndReplays {
    fn sync(&self, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        if let Some(old) = self.previous.replace(Some(body.clone())) {
            let _ = self.inner.sync(old); // a stale request arrives late
        }
        let _ = self.inner.sync(body.clone()); // the first copy's answer is lost
        self.inner.sync(body)
    }
    fn whoami(&self) -> Result<WhoAmI, TransportError> {
        self.inner.whoami()
    }
}

#[test]
fn replicas_converge_through_cut_connections_partitions_and_replayed_requests() {
    let (tmp, data, staff) = demo_borough();
    let fresh_token = issue_token(&data, "Priya Shah");
    let server = Server::start(&data);
    let seed = rand::random::<u64>();
    eprintln!("fault schedule seed: {seed}");
    let proxy = proxy::FaultProxy::start(server.addr(), seed, 0.15);

    let names = ["Priya Shah", "Mark Ellison", "Ruth Adebayo"];
    let devices: Vec<Device> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let d = Device::open(&tmp.path().join(format!("d{i}")), &common::store_key()).unwrap();
            d.login(&server.url, &token_of(&staff, name)).unwrap();
            d
        })
        .collect();
    let case = devices[0]
        .case_new(&Identity {
            name: "Faulty Network Person".into(),
            ..Default::default()
        })
        .unwrap();
    for dev in &devices {
        dev.sync().unwrap();
    }

    let through_proxy: Vec<HttpTransport> = names
        .iter()
        .map(|n| HttpTransport::new(&proxy.url, &token_of(&staff, n)))
        .collect();
    let replaying = DuplicatesAndReplays {
        inner: HttpTransport::new(&server.url, &token_of(&staff, names[2])),
        previous: RefCell::new(None),
    };
    let mut acknowledged: Vec<String> = Vec::new();
    let mut pending: Vec<Vec<String>> = vec![Vec::new(); names.len()];
    let mut failed_syncs = 0;
    let rounds = rounds(30, 120);
    for round in 0..rounds {
        proxy.partition(round % 10 >= 7); // partitioned 3 rounds in 10
        for (i, dev) in devices.iter().enumerate() {
            let marker = format!("<r{round}d{i}>");
            match round % 3 {
                0 => dev.plan_append(case, &marker).unwrap(),
                1 => dev.about_me_append(case, &marker).unwrap(),
                _ => {
                    let note = dev.note_add(case, NoteKind::Visit, &marker, None).unwrap();
                    dev.note_file(note).unwrap();
                }
            }
            pending[i].push(marker);
            let result = if i == 2 {
                dev.sync_with(&replaying)
            } else {
                dev.sync_with(&through_proxy[i])
            };
            match result {
                Ok(_) => acknowledged.append(&mut pending[i]),
                Err(casenote_client_core::Error::Transport(_)) => failed_syncs += 1,
                Err(e) => panic!("sync failed with something other than the network: {e}"),
            }
        }
    }

    // Heal: no faults, everyone syncs until quiet.
    proxy.partition(false);
    for _ in 0..3 {
        for dev in &devices {
            dev.sync().unwrap();
        }
    }
    let fresh = Device::open(&tmp.path().join("fresh"), &common::store_key()).unwrap();
    fresh.login(&server.url, &fresh_token).unwrap();
    fresh.sync().unwrap();
    let expected = fresh.show(case).unwrap();
    for (i, dev) in devices.iter().enumerate() {
        assert_eq!(
            dev.show(case).unwrap(),
            expected,
            "device {i} did not converge (seed {seed})"
        );
    }
    let text = expected.to_string();
    for m in acknowledged.iter().chain(pending.iter().flatten()) {
        assert!(text.contains(m.as_str()), "{m} was lost (seed {seed})");
    }
    let c = &proxy.counts;
    eprintln!(
        "{rounds} rounds: {} connections, {} partitions, {} cut mid-request, {} cut mid-response, {failed_syncs} failed syncs, {} changes acknowledged",
        c.connections.load(Ordering::SeqCst),
        c.partitions.load(Ordering::SeqCst),
        c.cut_requests.load(Ordering::SeqCst),
        c.cut_responses.load(Ordering::SeqCst),
        acknowledged.len()
    );
    assert!(
        c.cut_requests.load(Ordering::SeqCst) > 0 && c.cut_responses.load(Ordering::SeqCst) > 0,
        "the schedule cut nothing"
    );
    assert!(
        failed_syncs > 0,
        "no sync ever failed: the faults were not exercised"
    );
}
