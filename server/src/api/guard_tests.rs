//! Tests of the request cap and the request timeout (`guard.rs`) over a real listener on
//! 127.0.0.1:0 with real sockets: a cap of two with a third request, a timeout shortened to
//! 300 ms with a flush held past it.

use super::live_tests::{new_case, next_event, Server};
use crate::config::{Config, ConnectionSettings};
use casenote_protocol::wire::{self, SyncRequest, CBOR_MEDIA_TYPE, PROTOCOL_VERSION};
use casenote_protocol::{limits, DocId, ErrorBody, ErrorCode, Seq};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A safety net so that a broken test fails instead of hanging; never a measurement.
const PATIENCE: Duration = Duration::from_secs(60);

/// An answer: status, `Retry-After`, `x-request-id`, body.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    request_id: Option<String>,
    body: String,
}

fn call(req: ureq::Request) -> Answer {
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport: {e}"),
    };
    Answer {
        status: resp.status(),
        retry_after: resp.header("retry-after").map(str::to_string),
        request_id: resp.header("x-request-id").map(str::to_string),
        body: resp.into_string().unwrap(),
    }
}

fn get(addr: SocketAddr, path: &str, token: &str) -> Answer {
    call(
        ureq::get(&format!("http://{addr}{path}")).set("authorization", &format!("Bearer {token}")),
    )
}

/// The error body of `a`, checked to carry the request id of its answer.
fn error_of(a: &Answer) -> ErrorBody {
    let body: ErrorBody = serde_json::from_str(&a.body).expect("a JSON error body");
    assert!(a.request_id.is_some(), "no x-request-id on the answer");
    assert_eq!(body.request_id, a.request_id, "the body's request id");
    body
}

/// A connection with a sync whose body is half sent: it holds its place until it is dropped.
fn half_sent_sync(addr: SocketAddr, token: &str) -> TcpStream {
    let body = wire::encode(&SyncRequest {
        version: PROTOCOL_VERSION,
        cursor: Seq(0),
        device_clock_ms: 0,
        docs: vec![],
        log_id: None,
        confirmed_reconcile: None,
        views: Vec::new(),
        restricted: Vec::new(),
    });
    let mut s = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /v1/sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: {CBOR_MEDIA_TYPE}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body[..body.len() / 2]).unwrap();
    s
}

/// Waits until `done` says so (or the patience runs out, failing with `what`).
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_request_cap_one_more_request_is_answered_503_server_busy_with_retry_after() {
    let connections = ConnectionSettings::default()
        .with_timeouts(PATIENCE)
        .with_requests_max(2);
    let s = Server::start(Config::default().with_connections(connections)).await;
    let (addr, alice, bob) = (s.addr, s.alice.clone(), s.bob.clone());
    tokio::task::spawn_blocking(move || {
        // Two syncs whose bodies are half sent take both places.
        let held = vec![half_sent_sync(addr, &alice), half_sent_sync(addr, &bob)];
        // Both are in once /metrics (outside the cap) counts them.
        until("two requests in flight", || {
            let scrape = get(addr, "/metrics", "").body;
            scrape.contains("\ncasenote_http_requests_in_flight 2\n")
        });
        // A third request is shed.
        let busy = get(addr, "/v1/whoami", &alice);
        assert_eq!(busy.status, 503, "{}", busy.body);
        let expected = limits::HTTP_BUSY_RETRY_AFTER_S.to_string();
        assert_eq!(busy.retry_after.as_deref(), Some(expected.as_str()));
        assert_eq!(error_of(&busy).code, ErrorCode::ServerBusy, "{}", busy.body);
        // The probes stay outside the cap: a busy server still says it is up.
        assert_eq!(get(addr, "/health", "").status, 200);
        assert_eq!(get(addr, "/ready", "").status, 200);
        // Once the two syncs go, their places are free again.
        drop(held);
        until("whoami served again", || {
            get(addr, "/v1/whoami", &alice).status == 200
        });
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_request_past_the_timeout_is_answered_503_and_a_sync_and_the_live_channel_outlive_it(
) {
    let timeout = Duration::from_millis(300);
    let connections = ConnectionSettings::default().with_request_timeout(timeout);
    let s = Arc::new(Server::start(Config::default().with_connections(connections)).await);
    let mut bob_live = s.listen(&s.bob).await;
    // No flush ends while held: escrow (which flushes the key it makes) and a sync both wait.
    s.store.hold_flushes(true);
    let pusher = s.clone();
    let (case_id, push) = new_case(&s.alice_staff);
    let sync = tokio::spawn(async move { pusher.push(&pusher.alice.clone(), push).await });
    let (addr, alice) = (s.addr, s.alice.clone());
    let escrow = tokio::task::spawn_blocking(move || {
        let me: serde_json::Value =
            serde_json::from_str(&get(addr, "/v1/whoami", &alice).body).unwrap();
        let device = me["device_id"].as_str().unwrap().to_string();
        let req = ureq::post(&format!("http://{addr}/v1/escrow/{device}"))
            .set("authorization", &format!("Bearer {alice}"));
        call(req)
    })
    .await
    .unwrap();
    assert_eq!(escrow.status, 503, "{}", escrow.body);
    assert_eq!(error_of(&escrow).code, ErrorCode::RequestTimeout);
    // Well past the timeout, the sync still waits for its flush and the live channel is open.
    tokio::time::sleep(timeout * 3).await;
    assert!(
        !sync.is_finished(),
        "the sync ended while its flush was held"
    );
    s.store.hold_flushes(false);
    let acked = tokio::time::timeout(PATIENCE, sync).await.unwrap().unwrap();
    assert_eq!(
        acked,
        DocId(case_id.0),
        "the sync was answered 200 with its ack"
    );
    let event = tokio::task::spawn_blocking(move || next_event(&mut bob_live))
        .await
        .unwrap()
        .expect("the live channel outlived the timeout");
    assert_eq!(event.docs, vec![DocId(case_id.0)]);
}
