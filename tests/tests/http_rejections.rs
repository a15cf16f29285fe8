//! The real HTTP API refuses what it must with a 4xx and a stable code, and goes on serving.

mod common;
use casenote_protocol::wire::{self, SyncRequest, PROTOCOL_VERSION};
use casenote_protocol::{limits, Seq};
use common::*;
use serde_json::Value;

fn post(
    server: &Server,
    token: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> (u16, Option<Value>) {
    let mut req = ureq::post(&format!("{}/v1/sync", server.url)).set("content-type", content_type);
    if let Some(t) = token {
        req = req.set("authorization", &format!("Bearer {t}"));
    }
    match req.send_bytes(body) {
        Ok(resp) => (resp.status(), None),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_json().ok()),
        Err(e) => panic!("transport error: {e}"),
    }
}

/// What to send, and the status and code the server must answer with.
type BadRequest<'a> = (&'a str, Option<&'a str>, &'a str, Vec<u8>, u16, &'a str);

fn valid_request() -> Vec<u8> {
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

/// Sends `case` and checks the answer: its status, a JSON body with its code and a message.
fn refused_as_it_says(server: &Server, case: BadRequest) {
    let (what, tok, ctype, body, want_status, want_code) = case;
    let (status, err) = post(server, tok, ctype, &body);
    assert_eq!(status, want_status, "{what}: wrong status");
    let err = err.unwrap_or_else(|| panic!("{what}: no JSON error body"));
    assert_eq!(err["code"], want_code, "{what}: wrong code in {err}");
    assert!(
        !err["message"].as_str().unwrap_or_default().is_empty(),
        "{what}: empty message"
    );
}

fn still_serving(server: &Server, token: &str) {
    let health = ureq::get(&format!("{}/health", server.url)).call().unwrap();
    assert_eq!(health.status(), 200);
    let (status, _) = post(server, Some(token), wire::CBOR_MEDIA_TYPE, &valid_request());
    assert_eq!(status, 200, "a valid sync fails after a bad request");
}

#[test]
fn bad_tokens_and_bad_bodies_get_a_coded_4xx_and_the_server_goes_on_serving() {
    let (_tmp, data, staff) = demo_borough();
    let token = token_of(&staff, "Priya Shah");
    let server = Server::start(&data);
    let cbor = wire::CBOR_MEDIA_TYPE;

    let cases: Vec<BadRequest> = vec![
        ("no token", None, cbor, valid_request(), 401, "unauthorized"),
        (
            "a wrong token",
            Some("cn_0000000000000000000000000000000000000000000000000000000000000000"),
            cbor,
            valid_request(),
            401,
            "unauthorized",
        ),
        (
            "a token that is not even hex",
            Some("garbage, not a token"),
            cbor,
            valid_request(),
            401,
            "unauthorized",
        ),
        (
            "malformed CBOR",
            Some(&token),
            cbor,
            b"\xff\xfe this is not CBOR".to_vec(),
            400,
            "malformed_body",
        ),
        (
            "an empty body",
            Some(&token),
            cbor,
            Vec::new(),
            400,
            "malformed_body",
        ),
        (
            "a truncated request",
            Some(&token),
            cbor,
            valid_request()[..10].to_vec(),
            400,
            "malformed_body",
        ),
        (
            "JSON instead of CBOR",
            Some(&token),
            "application/json",
            b"{\"cursor\":0}".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "another protocol version",
            Some(&token),
            cbor,
            wire::encode(&SyncRequest {
                version: PROTOCOL_VERSION + 1,
                cursor: Seq(0),
                device_clock_ms: 0,
                docs: vec![],
                log_id: None,
                confirmed_reconcile: None,
                views: Vec::new(),
                restricted: Vec::new(),
            }),
            400,
            "unsupported_version",
        ),
        (
            "an oversized body",
            Some(&token),
            cbor,
            vec![0u8; limits::REQUEST_BYTES_MAX + 1],
            413,
            "body_too_large",
        ),
    ];

    for case in cases {
        refused_as_it_says(&server, case);
        still_serving(&server, &token);
    }

    // whoami needs a token too.
    match ureq::get(&format!("{}/v1/whoami", server.url)).call() {
        Err(ureq::Error::Status(401, resp)) => {
            let v: Value = resp.into_json().unwrap();
            assert_eq!(v["code"], "unauthorized");
        }
        other => panic!("whoami without a token: {other:?}"),
    }
}

/// A sync whose body never comes: it holds one of its device's sync slots (taken before the body
/// is read) until the server's stall timeout or until it is dropped.
fn stalled_sync(server: &Server, token: &str) -> std::net::TcpStream {
    use std::io::Write;
    let addr = server.url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /v1/sync HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\
         content-type: {}\r\ncontent-length: 1000\r\n\r\n",
        wire::CBOR_MEDIA_TYPE
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&[0; 10]).unwrap();
    s
}

#[test]
fn a_sync_refused_before_its_body_is_read_still_gets_its_answer_whatever_the_body_size() {
    let (_tmp, data, staff) = demo_borough();
    let token = token_of(&staff, "Priya Shah");
    let server = Server::start(&data);
    let cbor = wire::CBOR_MEDIA_TYPE;
    // A body far larger than the sockets' buffers: a client that writes it all before reading
    // (ureq, like most) sees a reset connection if the server answers and closes unread.
    let big = vec![0u8; limits::REQUEST_BYTES_MAX / 2];
    // Syncs that never finish take every slot of the device: one more each time the probe (a
    // small sync of the same device, which may itself take a slot for a moment, and so have a
    // stalled one refused) still gets in.
    let mut held = Vec::new();
    eventually("every sync slot of the device to be taken", || {
        if post(&server, Some(&token), cbor, &valid_request()).0 == 429 {
            return true;
        }
        held.push(stalled_sync(&server, &token));
        std::thread::sleep(std::time::Duration::from_millis(50));
        false
    });
    let cases: Vec<BadRequest> = vec![
        (
            "one sync too many",
            Some(&token),
            cbor,
            big.clone(),
            429,
            "limit_exceeded",
        ),
        ("no token", None, cbor, big.clone(), 401, "unauthorized"),
        (
            "not CBOR",
            Some(&token),
            "application/json",
            big,
            415,
            "unsupported_media_type",
        ),
    ];
    for case in cases {
        refused_as_it_says(&server, case);
    }
    drop(held);
    eventually("the held slots to come free", || {
        post(&server, Some(&token), cbor, &valid_request()).0 == 200
    });
    still_serving(&server, &token);
}
