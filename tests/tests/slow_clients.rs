//! Slow and stalled clients do not starve the others: while a hundred connections sit on
//! half-sent headers or trickle a body a byte at a time, a real device goes on syncing.

mod common;
use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn stalled_and_trickling_clients_do_not_hold_up_a_device_that_syncs() {
    let (tmp, data, staff) = demo_borough();
    let token = token_of(&staff, "Priya Shah");
    let server = Server::start(&data);
    let dev = device(&tmp, &server, &staff, "dev", "Mark Ellison");
    let case = dev.ok(&["case", "new", "--name", "Busy Server Person"]);

    let mut slow: Vec<TcpStream> = Vec::new();
    for i in 0..100 {
        let mut s = TcpStream::connect(server.addr()).unwrap();
        if i % 2 == 0 {
            // Headers never finished.
            s.write_all(b"POST /v1/sync HTTP/1.1\r\nHost: x\r\nAuthoriz")
                .unwrap();
        } else {
            // A body that says 1 MiB and will arrive a byte at a time.
            write!(
                s,
                "POST /v1/sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/cbor\r\nContent-Length: 1048576\r\n\r\n"
            )
            .unwrap();
        }
        slow.push(s);
    }
    for round in 0..10 {
        for s in slow.iter_mut().skip(1).step_by(2) {
            let _ = s.write_all(&[0xa0]);
        }
        dev.ok(&[
            "plan",
            "append",
            &case,
            "--text",
            &format!(" round {round}"),
        ]);
        let report = dev.sync();
        assert_eq!(report["requests"], 1, "{report}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let plan = plan_text(&dev.show(&case));
    assert!(plan.contains("round 9"));
    let health = ureq::get(&format!("{}/health", server.url)).call().unwrap();
    assert_eq!(health.status(), 200);
    drop(slow);
}
