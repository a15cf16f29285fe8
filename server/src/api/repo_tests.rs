//! Tests of `GET /v1/repo`, `GET /v1/caseload` and `/app/` (`repo/`): every refusal before the
//! upgrade, the protocol's errors, the per-connection document bound, and the static files. The
//! stock automerge-repo client's tests (the authorization matrix, edits both ways with CLI
//! devices, forgery, filed notes, access ending) are web/test/repo.test.mjs, run by
//! scripts/web-test.

use super::live_tests::Server;
use super::repo::message::{doc_id_to_repo, SERVER_PEER_ID};
use super::{router, AppState};
use crate::config::Config;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use casenote_protocol::{limits, DocId};
use ciborium::Value;
use http_body_util::BodyExt;
use std::net::TcpStream;
use std::time::Duration;
use tower::ServiceExt;
use tungstenite::{Message, WebSocket};

const PATIENCE: Duration = Duration::from_secs(60);

async fn get(state: &AppState, path: &str, token: Option<&str>) -> (StatusCode, Vec<u8>) {
    let mut req = Request::get(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = router(state.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    (
        status,
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

fn connect(addr: std::net::SocketAddr, token: &str) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let url = format!("ws://{addr}/v1/repo?token={token}");
    tungstenite::client(url, stream).expect("the upgrade").0
}

fn send(ws: &mut WebSocket<TcpStream>, fields: Vec<(&str, Value)>) {
    let map = Value::Map(fields.into_iter().map(|(k, v)| (k.into(), v)).collect());
    let mut bytes = Vec::new();
    ciborium::into_writer(&map, &mut bytes).unwrap();
    ws.send(Message::Binary(bytes.into())).unwrap();
}

/// The next binary message as a map of text keys; `None` when the connection closed.
fn next(ws: &mut WebSocket<TcpStream>) -> Option<Vec<(String, Value)>> {
    loop {
        match ws.read() {
            Ok(Message::Binary(b)) => {
                let v: Value = ciborium::from_reader(&b[..]).unwrap();
                let map = v.into_map().unwrap();
                return Some(
                    map.into_iter()
                        .map(|(k, v)| (k.into_text().unwrap(), v))
                        .collect(),
                );
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

fn field<'a>(msg: &'a [(String, Value)], key: &str) -> Option<&'a Value> {
    msg.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn text(msg: &[(String, Value)], key: &str) -> String {
    field(msg, key)
        .and_then(|v| v.as_text())
        .unwrap_or_default()
        .to_string()
}

fn join(ws: &mut WebSocket<TcpStream>, versions: &[&str]) {
    let versions = versions
        .iter()
        .map(|v| Value::Text(v.to_string()))
        .collect();
    send(
        ws,
        vec![
            ("type", Value::Text("join".into())),
            ("senderId", Value::Text("test-peer".into())),
            ("peerMetadata", Value::Map(Vec::new())),
            ("supportedProtocolVersions", Value::Array(versions)),
        ],
    );
}

/// An empty document's first sync message.
fn empty_sync() -> Vec<u8> {
    use automerge::sync::SyncDoc;
    let mut doc = automerge::AutoCommit::new();
    let msg = doc
        .sync()
        .generate_sync_message(&mut automerge::sync::State::new())
        .unwrap();
    msg.encode()
}

fn doc_message(ws: &mut WebSocket<TcpStream>, kind: &str, doc: &str, data: Vec<u8>) {
    send(
        ws,
        vec![
            ("type", Value::Text(kind.into())),
            ("senderId", Value::Text("test-peer".into())),
            ("targetId", Value::Text(SERVER_PEER_ID.into())),
            ("documentId", Value::Text(doc.into())),
            ("data", Value::Bytes(data)),
        ],
    );
}

#[tokio::test]
async fn a_missing_or_unknown_token_is_refused_before_the_upgrade() {
    let s = Server::start(Config::default()).await;
    let (status, _) = get(&s.state, "/v1/repo", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = get(&s.state, "/v1/repo?token=cn_nobody", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = get(&s.state, &format!("/v1/repo?token={}", s.alice), None).await;
    assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
}

#[tokio::test]
async fn the_caseload_lists_what_the_token_may_read_in_automerge_repo_form() {
    let s = Server::start(Config::default()).await;
    let doc = s.push_case(&s.alice, &s.alice_staff).await;
    let (status, _) = get(&s.state, "/v1/caseload", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = get(&s.state, "/v1/caseload", Some(&s.alice)).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let docs = v["docs"].as_array().unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["doc_id"], doc.to_string());
    assert_eq!(docs[0]["url"], format!("automerge:{}", doc_id_to_repo(doc)));
    assert_eq!(v["author"], hex::encode(s.alice_staff.staff_id.as_bytes()));
    // Carol's team is not on the case.
    let (_, body) = get(&s.state, "/v1/caseload", Some(&s.carol)).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["docs"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_client_that_breaks_the_protocol_gets_an_error_and_is_closed() {
    let s = Server::start(Config::default()).await;
    let (addr, token) = (s.addr, s.alice.clone());
    tokio::task::spawn_blocking(move || {
        // A version the server does not speak.
        let mut ws = connect(addr, &token);
        join(&mut ws, &["2"]);
        let msg = next(&mut ws).expect("an error message");
        assert_eq!(text(&msg, "type"), "error");
        assert!(next(&mut ws).is_none(), "the connection closes");
        // A document message before join.
        let mut ws = connect(addr, &token);
        doc_message(
            &mut ws,
            "request",
            "2k9CVDM9BYipGiF3CRJrU9N4iszB",
            empty_sync(),
        );
        let msg = next(&mut ws).expect("an error message");
        assert_eq!(text(&msg, "message"), "send join first");
        // Bytes that are not CBOR.
        let mut ws = connect(addr, &token);
        ws.send(Message::Binary(vec![0xff, 0x00].into())).unwrap();
        let msg = next(&mut ws).expect("an error message");
        assert_eq!(text(&msg, "type"), "error");
        // A sync message that is not one.
        let mut ws = connect(addr, &token);
        join(&mut ws, &["1"]);
        assert_eq!(text(&next(&mut ws).unwrap(), "type"), "peer");
        doc_message(
            &mut ws,
            "sync",
            "2k9CVDM9BYipGiF3CRJrU9N4iszB",
            vec![1, 2, 3],
        );
        let msg = next(&mut ws).expect("an error message");
        assert_eq!(text(&msg, "type"), "error");
        assert!(next(&mut ws).is_none());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn one_connection_syncs_at_most_the_documents_its_bound_allows() {
    let s = Server::start(Config::default()).await;
    let (addr, token) = (s.addr, s.alice.clone());
    tokio::task::spawn_blocking(move || {
        let mut ws = connect(addr, &token);
        join(&mut ws, &["1"]);
        assert_eq!(text(&next(&mut ws).unwrap(), "type"), "peer");
        let data = empty_sync();
        // Documents the store does not hold: each one's empty answer keeps a sync state.
        for i in 0..=limits::REPO_DOCS_PER_CONNECTION_MAX {
            let doc = doc_id_to_repo(DocId(uuid::Uuid::from_u128(i as u128 + 1)));
            doc_message(&mut ws, "sync", &doc, data.clone());
            let msg = next(&mut ws).expect("an answer");
            let expected = if i < limits::REPO_DOCS_PER_CONNECTION_MAX {
                "sync"
            } else {
                "doc-unavailable"
            };
            assert_eq!(text(&msg, "type"), expected, "document {i}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_app_serves_plain_file_names_inside_its_directory_only() {
    let app = tempfile::tempdir().unwrap();
    std::fs::write(app.path().join("index.html"), "<!doctype html>casenote").unwrap();
    std::fs::write(app.path().join(".hidden"), "no").unwrap();
    let s = Server::start(Config::default().with_app_dir(app.path().to_path_buf())).await;
    let (status, body) = get(&s.state, "/app/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8(body).unwrap().contains("casenote"));
    for path in ["/app/.hidden", "/app/..%2Fsecret", "/app/missing.js"] {
        let (status, _) = get(&s.state, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let plain = Server::start(Config::default()).await;
    let (status, _) = get(&plain.state, "/app/", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Syncs `doc` over `ws` until the server's answer has `doc`'s heads.
fn sync_until_held(
    ws: &mut WebSocket<TcpStream>,
    repo_id: &str,
    doc: &mut automerge::AutoCommit,
    state: &mut automerge::sync::State,
) {
    use automerge::sync::{Message as SyncMessage, SyncDoc};
    let heads = doc.get_heads();
    for _ in 0..8 {
        if let Some(msg) = doc.sync().generate_sync_message(state) {
            doc_message(ws, "sync", repo_id, msg.encode());
        }
        let answer = next(ws).expect("an answer");
        assert_eq!(text(&answer, "type"), "sync");
        let data = field(&answer, "data").and_then(|d| d.as_bytes()).unwrap();
        let msg = SyncMessage::decode(data).unwrap();
        if msg.heads == heads {
            return;
        }
        doc.sync().receive_sync_message(state, msg).unwrap();
    }
    panic!("the server never held the document");
}

#[tokio::test]
async fn a_new_document_from_a_repo_client_is_stored_and_reaches_live_devices() {
    use automerge::sync::State;
    let s = Server::start(Config::default()).await;
    let mut bob_live = s.listen(&s.bob).await;
    let (addr, token, alice) = (s.addr, s.alice.clone(), s.alice_staff.clone());
    let case = tokio::task::spawn_blocking(move || {
        // Alice's case, written as the record code writes it, offered over automerge-repo's
        // protocol: the server answers as an empty document, then takes the changes.
        let (case_id, push) = super::live_tests::new_case(&alice);
        let mut doc = automerge::AutoCommit::new();
        let changes = push
            .changes
            .iter()
            .map(|b| automerge::Change::from_bytes(b.to_vec()).unwrap())
            .collect::<Vec<_>>();
        doc.apply_changes(changes).unwrap();
        let repo_id = doc_id_to_repo(DocId(case_id.0));
        let mut ws = connect(addr, &token);
        join(&mut ws, &["1"]);
        assert_eq!(text(&next(&mut ws).unwrap(), "type"), "peer");
        sync_until_held(&mut ws, &repo_id, &mut doc, &mut State::new());
        case_id
    })
    .await
    .unwrap();
    // Acknowledged means durable and on the feed: Bob's device hears of it live.
    let event = tokio::task::spawn_blocking(move || {
        super::live_tests::next_event(&mut bob_live).expect("a live event")
    })
    .await
    .unwrap();
    assert_eq!(event.docs, vec![DocId(case.0)]);
    let stored = crate::store::read(&*s.store, |txn| txn.doc(DocId(case.0))).unwrap();
    assert!(stored.is_some());
}

/// A change automerge never writes, offered over automerge-repo's protocol: a deletion in the
/// case's about-me text that names no predecessor. Before the vendored check, automerge applied
/// it and then panicked inside the session ("MissingOps", building the answer): the connection
/// dropped with no answer. Now the session refuses the document, stores nothing, and the stored
/// case still loads.
#[tokio::test]
async fn a_change_automerge_never_writes_is_refused_over_the_repo_protocol() {
    use automerge::sync::{Message as SyncMessage, MessageVersion, State};
    use automerge::transaction::Transactable;
    use automerge::ReadDoc;
    let s = Server::start(Config::default()).await;
    let (addr, token, alice) = (s.addr, s.alice.clone(), s.alice_staff.clone());
    let (case, held) = tokio::task::spawn_blocking(move || {
        let (case_id, push) = super::live_tests::new_case(&alice);
        let mut doc = automerge::AutoCommit::new();
        // Alice's device: its actor's first change names her.
        doc.set_author(Some(automerge::Author::from(
            alice.staff_id.as_bytes().to_vec(),
        )));
        let changes = push
            .changes
            .iter()
            .map(|b| automerge::Change::from_bytes(b.to_vec()));
        doc.apply_changes(changes.map(Result::unwrap)).unwrap();
        let about = match doc.get(automerge::ROOT, "about_me").unwrap().unwrap() {
            (automerge::Value::Object(automerge::ObjType::Text), id) => id,
            other => panic!("no about_me text: {other:?}"),
        };
        let repo_id = doc_id_to_repo(DocId(case_id.0));
        let mut ws = connect(addr, &token);
        join(&mut ws, &["1"]);
        assert_eq!(text(&next(&mut ws).unwrap(), "type"), "peer");
        let mut state = State::new();
        sync_until_held(&mut ws, &repo_id, &mut doc, &mut state);
        doc.splice_text(&about, 0, 0, "abc").unwrap();
        doc.commit();
        sync_until_held(&mut ws, &repo_id, &mut doc, &mut state);
        let held = doc.get_heads();
        // The deletion of "b", its predecessor (the insert of "b") taken away.
        let mut fork = doc.fork();
        fork.splice_text(&about, 1, 1, "").unwrap();
        let mut crafted = fork.get_last_local_change().unwrap().decode();
        crafted.hash = None;
        crafted.operations[0].pred = Vec::new().into();
        let crafted = automerge::Change::from(crafted);
        let msg = SyncMessage {
            heads: vec![crafted.hash()],
            need: vec![],
            have: vec![],
            changes: vec![crafted.raw_bytes().to_vec()].into(),
            flags: None,
            version: MessageVersion::V1,
        };
        doc_message(&mut ws, "sync", &repo_id, msg.encode());
        let answer = next(&mut ws).expect("an answer");
        assert_eq!(text(&answer, "type"), "doc-unavailable", "{answer:?}");
        (case_id, held)
    })
    .await
    .unwrap();
    let stored = crate::store::read(&*s.store, |txn| txn.doc(DocId(case.0)))
        .unwrap()
        .expect("the case is stored");
    let held: Vec<_> = held.into_iter().map(Into::into).collect();
    assert_eq!(stored.heads, held, "the crafted change was stored");
    let doc = crate::validate::materialise(&*s.store, DocId(case.0)).unwrap();
    automerge::AutoCommit::load(&doc.clone().save()).expect("the stored case loads");
}

/// A stored document that does not load (a change in its log automerge cannot read), asked for
/// over automerge-repo's protocol. Before, the session's load failed and the connection closed
/// (`internal`), with every other document the web app had open on it, at every reconnection.
/// Now that document alone is `doc-unavailable`, and the connection serves the others.
#[tokio::test]
async fn a_stored_document_that_does_not_load_is_unavailable_alone() {
    let s = Server::start(Config::default()).await;
    let who = crate::testkit::principal(&*s.store, &s.alice);
    let (damaged, healthy) = (
        super::live_tests::new_case(&s.alice_staff),
        super::live_tests::new_case(&s.alice_staff),
    );
    let pushed = crate::sync::push(&*s.store, &who, vec![damaged.1, healthy.1], 0).unwrap();
    assert_eq!(pushed.acks.len(), 2, "{:?}", pushed.rejections);
    let damaged = DocId(damaged.0 .0);
    crate::store::write(&*s.store, |t| {
        let hash = casenote_protocol::wire::Hash([0xdc; 32]);
        t.append_change(&crate::model::NewChange {
            doc_id: damaged,
            hash,
            bytes: b"not an automerge change".to_vec(),
            received_at_ms: 1,
        })?;
        let mut rec = t.doc(damaged)?.expect("the case is stored");
        rec.heads.push(hash);
        t.put_doc(&rec)
    })
    .unwrap();
    let (addr, token) = (s.addr, s.alice.clone());
    let healthy = doc_id_to_repo(DocId(healthy.0 .0));
    tokio::task::spawn_blocking(move || {
        let mut ws = connect(addr, &token);
        join(&mut ws, &["1"]);
        assert_eq!(text(&next(&mut ws).unwrap(), "type"), "peer");
        doc_message(&mut ws, "request", &doc_id_to_repo(damaged), empty_sync());
        let answer = next(&mut ws).expect("an answer, not a closed connection");
        assert_eq!(text(&answer, "type"), "doc-unavailable");
        doc_message(&mut ws, "request", &healthy, empty_sync());
        let answer = next(&mut ws).expect("the connection still serves");
        assert_eq!(text(&answer, "type"), "sync");
        assert_eq!(text(&answer, "documentId"), healthy);
    })
    .await
    .unwrap();
}
