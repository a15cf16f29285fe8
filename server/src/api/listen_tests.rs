//! Tests of the accept loop and its timeouts ([`crate::api`]'s `listen.rs`) through [`crate::run`] on a
//! real listener on 127.0.0.1:0, with real sockets, shortened timeouts and a small cap.

use crate::config::Config;
use crate::config::ConnectionSettings;
use casenote_protocol::wire::{self, SyncRequest, CBOR_MEDIA_TYPE, PROTOCOL_VERSION};
use casenote_protocol::Seq;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A safety net so that a broken test fails instead of hanging; never a measurement.
const PATIENCE: Duration = Duration::from_secs(60);

struct Server {
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    /// Alice's device token.
    token: String,
}

async fn start(connections: ConnectionSettings) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::sled::open(dir.path()).unwrap();
    let [(_, token), _, _] = crate::testkit::people(&*store);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config::default().with_connections(connections);
    tokio::spawn(crate::run(listener, store, config, std::future::pending()));
    Server {
        _dir: dir,
        addr,
        token,
    }
}

fn empty_sync() -> Vec<u8> {
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

fn sync_head(token: &str, len: usize) -> String {
    format!(
        "POST /v1/sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: {CBOR_MEDIA_TYPE}\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// Everything the server sends on `s` until it closes it (or the patience runs out).
fn answer(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the server closed `s` without answering anything (within the patience).
fn closed_silently(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

/// The status line of one answer on a kept-alive connection (reads only what arrived).
fn status_line(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_is_answered_408_and_one_that_trickles_for_longer_is_served() {
    let stall = Duration::from_millis(500);
    let s = start(ConnectionSettings::default().with_timeouts(stall)).await;
    let (addr, token) = (s.addr, s.token.clone());
    tokio::task::spawn_blocking(move || {
        // Ten bytes of a hundred, then nothing.
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(sync_head(&token, 100).as_bytes()).unwrap();
        c.write_all(&[0xa0; 10]).unwrap();
        let got = answer(&mut c);
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
        assert!(got.contains("\"code\":\"request_timeout\""), "{got}");

        // A body that keeps arriving, a byte at a time, for several stall timeouts in all.
        let body = empty_sync();
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(sync_head(&token, body.len()).as_bytes())
            .unwrap();
        let started = Instant::now();
        for b in &body {
            std::thread::sleep(stall / 5);
            c.write_all(&[*b]).unwrap();
        }
        assert!(started.elapsed() > 2 * stall, "the body did not take long");
        assert_eq!(status_line(&mut c), "HTTP/1.1 200 OK");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_sends_requests_and_never_reads_the_answers_loses_its_connection() {
    let s = start(ConnectionSettings::default().with_timeouts(Duration::from_millis(500))).await;
    let addr = s.addr;
    tokio::task::spawn_blocking(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_write_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let requests = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".repeat(256);
        let deadline = Instant::now() + PATIENCE;
        let ended = loop {
            assert!(
                Instant::now() < deadline,
                "the server still holds a connection whose peer never reads"
            );
            match c.write(&requests) {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => break e,
            }
        };
        assert!(
            matches!(
                ended.kind(),
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
            ),
            "{ended}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_the_longest_waiting_connection_makes_room_and_a_busy_one_never_does() {
    // Long timeouts: only the cap closes connections here.
    let settings = ConnectionSettings::default()
        .with_timeouts(PATIENCE)
        .with_connections_max(4);
    let s = start(settings).await;
    let (addr, token) = (s.addr, s.token.clone());
    tokio::task::spawn_blocking(move || {
        // Busy: a sync whose body is half sent.
        let body = empty_sync();
        let (first, rest) = body.split_at(body.len() / 2);
        let mut busy = TcpStream::connect(addr).unwrap();
        busy.write_all(sync_head(&token, body.len()).as_bytes())
            .unwrap();
        busy.write_all(first).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // Three that never send anything fill the cap; the oldest of them waited longest.
        let mut silent: Vec<TcpStream> = (0..3)
            .map(|_| {
                let c = TcpStream::connect(addr).unwrap();
                std::thread::sleep(Duration::from_millis(50));
                c
            })
            .collect();
        // Twelve devices in turn are served, each making room for itself.
        let mut served = Vec::new();
        for _ in 0..12 {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            assert_eq!(status_line(&mut c), "HTTP/1.1 200 OK");
            served.push(c);
        }
        // The silent ones were closed for room; the busy sync was not, and finishes.
        for c in &mut silent {
            assert!(
                closed_silently(c),
                "a silent connection was not closed for room"
            );
        }
        busy.write_all(rest).unwrap();
        assert_eq!(status_line(&mut busy), "HTTP/1.1 200 OK");
    })
    .await
    .unwrap();
}
