//! SIGTERM drains: the server stops accepting connections, finishes the requests in flight
//! (a sync whose body is still arriving is answered), flushes, and exits 0; every sync a device
//! saw acknowledged is in the store after the restart.

mod common;
use casenote_protocol::wire::{self, SyncRequest, PROTOCOL_VERSION};
use casenote_protocol::Seq;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A sync request's bytes: a pull from the start.
fn pull_body() -> Vec<u8> {
    wire::encode(&SyncRequest {
        version: PROTOCOL_VERSION,
        cursor: Seq(0),
        device_clock_ms: 0,
        docs: vec![],
        log_id: None,
        confirmed_reconcile: None,
        views: Vec::new(),
        restricted: Vec::new(),
    })
}

#[test]
fn a_sync_in_flight_at_sigterm_is_answered_then_the_server_exits_0() {
    let (_tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let token = token_of(&staff, "Priya Shah");
    let body = pull_body();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut conn = TcpStream::connect(server.addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        conn,
        "POST /v1/sync HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         content-type: {}\r\ncontent-length: {}\r\n\r\n",
        wire::CBOR_MEDIA_TYPE,
        body.len()
    )
    .unwrap();
    conn.write_all(first).unwrap();
    conn.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    server.terminate();
    // It stops accepting: a new connection is refused (within a generous deadline).
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(server.addr()).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the server kept accepting after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The sync in flight is finished and answered.
    conn.write_all(rest).unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "the sync in flight was not answered: {:?}",
        text.lines().next()
    );
    assert_eq!(
        server.wait().code(),
        Some(0),
        "the server exits 0 after draining"
    );
}

#[test]
fn sigterm_during_a_stream_of_syncs_loses_nothing_acknowledged_and_exits_0() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let writers: Vec<_> = ["Priya Shah", "Mark Ellison"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let dev = device(&tmp, &server, &staff, &format!("w{i}"), name);
            std::thread::spawn(move || {
                let case = dev.ok(&["case", "new", "--name", "Stream Person"]);
                let (mut written, mut acknowledged) = (Vec::new(), Vec::new());
                for round in 0..1000 {
                    let text = format!("visit {round}");
                    written.push(dev.ok(&["note", "add", &case, "--text", &text]));
                    if !dev.run(&["sync"]).status.success() {
                        break;
                    }
                    acknowledged = written.clone();
                }
                (case, acknowledged)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let addr = server.addr();
    server.terminate();
    assert_eq!(
        server.wait().code(),
        Some(0),
        "the server exits 0 after draining"
    );
    let results: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();

    let server = Server::start_on(&data, &addr);
    let reader = device(&tmp, &server, &staff, "reader", "Ruth Adebayo");
    reader.sync();
    for (case, acknowledged) in results {
        assert!(!acknowledged.is_empty(), "the stream ran before SIGTERM");
        let shown = reader.show(&case).to_string();
        for note in acknowledged {
            assert!(shown.contains(&note), "acknowledged note {note} lost");
        }
    }
}
