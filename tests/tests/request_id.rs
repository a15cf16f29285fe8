//! The request id through a real server process: the `x-request-id` of a response is in the log
//! lines of its request (the sync's own line, written on the blocking pool, included) and in the
//! body of every error.

mod common;
use casenote_protocol::wire::{self, SyncRequest, PROTOCOL_VERSION};
use casenote_protocol::Seq;
use common::*;

#[test]
fn a_requests_id_is_in_its_log_lines_and_in_its_error_body() {
    let (tmp, data, staff) = demo_borough();
    let log = tmp.path().join("server.log");
    let server = Server::start_logging(&data, &log);
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
    let synced = ureq::post(&format!("{}/v1/sync", server.url))
        .set(
            "authorization",
            &format!("Bearer {}", token_of(&staff, "Priya Shah")),
        )
        .set("content-type", wire::CBOR_MEDIA_TYPE)
        .send_bytes(&body)
        .expect("the sync is answered");
    let sync_id = synced.header("x-request-id").expect("an id").to_string();
    assert!(sync_id.parse::<uuid::Uuid>().is_ok(), "{sync_id}");

    let refused = ureq::get(&format!("{}/v1/whoami", server.url))
        .set("authorization", "Bearer cn_0")
        .call();
    let Err(ureq::Error::Status(401, resp)) = refused else {
        panic!("an unknown token is refused");
    };
    let header = resp.header("x-request-id").unwrap().to_string();
    let error: serde_json::Value = resp.into_json().unwrap();
    assert_eq!(error["code"], "unauthorized");
    assert_eq!(error["request_id"], header.as_str());
    assert_ne!(header, sync_id);

    assert_eq!(server.stop().code(), Some(0));
    let logged = std::fs::read_to_string(&log).unwrap();
    let sync_lines: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("cursor_in="))
        .collect();
    assert_eq!(sync_lines.len(), 1, "{logged}");
    assert!(
        sync_lines[0].contains(&format!("request_id={sync_id}")),
        "{}",
        sync_lines[0]
    );
}
