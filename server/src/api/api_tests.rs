//! Router-level tests: every endpoint and every rejection, driven through `Router::oneshot` over a
//! real sled store in a temporary directory.

use crate::api::{router, AppState};
use crate::auth;
use crate::config::Config;
use crate::model::{By, Staff};
use crate::store::sled::SledStore;
use crate::store::{self, Store};
use crate::testkit;
use automerge::transaction::Transactable;
use automerge::{Author, AutoCommit, ROOT};
use axum::body::{Body, Bytes};
use axum::http::{header, Request, StatusCode};
use axum::Router;
use casenote_protocol::record::{self, Identity};
use casenote_protocol::wire::{
    self, DocPush, Hash, SyncRequest, SyncResponse, CBOR_MEDIA_TYPE, PROTOCOL_VERSION,
};
use casenote_protocol::{limits, CaseId, DeviceId, DocId, DocKind, ErrorBody, ErrorCode, Seq};
use http_body_util::BodyExt;
use serde_bytes::ByteBuf;
use std::collections::HashSet;
use std::sync::Arc;
use tower::ServiceExt;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<SledStore>,
    app: Router,
    /// The app's refusal aggregator, to write its pending counts.
    refusals: Arc<crate::audit::Refusals>,
    /// Tokens: Alice and Bob are in North, Carol in South.
    alice: String,
    bob: String,
    carol: String,
    alice_staff: Staff,
    bob_staff: Staff,
    carol_staff: Staff,
    /// Per token, the last `reconcile_id` received: [`Fixture::sync`] confirms it, as a device
    /// does once it has applied a response.
    confirms: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        let [(alice, alice_token), (bob, bob_token), (carol, carol_token)] =
            testkit::people(&*store);
        let state = AppState::new(store.clone(), Config::default());
        Fixture {
            alice: alice_token,
            bob: bob_token,
            carol: carol_token,
            alice_staff: alice,
            bob_staff: bob,
            carol_staff: carol,
            refusals: state.refusals.clone(),
            app: router(state),
            store,
            _dir: dir,
            confirms: Default::default(),
        }
    }

    fn log_id(&self) -> uuid::Uuid {
        store::read(&*self.store, |t| t.log_id()).unwrap()
    }

    fn device_of(&self, token: &str) -> DeviceId {
        match auth::authenticate(&*self.store, token).unwrap() {
            auth::Authenticated::Ok(p) => p.device_id,
            other => panic!("not a live token: {other:?}"),
        }
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, Option<String>, Bytes) {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let ctype = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, ctype, body)
    }

    async fn sync_raw(&self, token: &str, body: Vec<u8>) -> (StatusCode, Option<String>, Bytes) {
        self.send(
            Request::post("/v1/sync")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, CBOR_MEDIA_TYPE)
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }

    /// Syncs as a well-behaved device: confirms the last reconciliation it received.
    async fn sync(&self, token: &str, cursor: Seq, docs: Vec<DocPush>) -> SyncResponse {
        let confirmed = self.confirms.lock().unwrap().get(token).copied();
        let resp = self
            .sync_req(
                token,
                SyncRequest {
                    confirmed_reconcile: confirmed,
                    views: Vec::new(),
                    restricted: Vec::new(),
                    ..request(cursor, docs)
                },
            )
            .await;
        if let Some(id) = resp.reconcile_id {
            self.confirms.lock().unwrap().insert(token.to_string(), id);
        }
        resp
    }

    /// Sends `req` as it is and decodes the answer.
    async fn sync_req(&self, token: &str, req: SyncRequest) -> SyncResponse {
        let (status, ctype, body) = self.sync_raw(token, wire::encode(&req)).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert_eq!(ctype.as_deref(), Some(CBOR_MEDIA_TYPE));
        wire::decode_response(&body).unwrap()
    }

    async fn whoami(&self, auth: Option<&str>) -> (StatusCode, Bytes) {
        let mut req = Request::get("/v1/whoami");
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let (status, _, body) = self.send(req.body(Body::empty()).unwrap()).await;
        (status, body)
    }
}

/// A request from a device that has never synced (no log id, nothing to confirm).
fn request(cursor: Seq, docs: Vec<DocPush>) -> SyncRequest {
    SyncRequest {
        version: PROTOCOL_VERSION,
        cursor,
        device_clock_ms: crate::now_ms(),
        docs,
        log_id: None,
        confirmed_reconcile: None,
        views: Vec::new(),
        restricted: Vec::new(),
    }
}

/// A new draft note on `case_id` written by `staff`, through the record API.
fn draft_note(staff: &Staff, case_id: CaseId, text: &str) -> AutoCommit {
    let mut doc = authored(staff);
    record::init_note(
        &mut doc,
        &record::NewNote {
            case_id,
            kind: record::NoteKind::Visit,
            author: record::NoteAuthor {
                staff_id: staff.staff_id.to_string(),
                role: staff.role.to_string(),
                org: "Council".into(),
                team: String::new(),
            },
            // Now: the server judges lateness by when it receives the filing.
            occurred_at_ms: crate::now_ms(),
            recorded_at_ms: crate::now_ms(),
            text: text.into(),
            amends: None,
            late_entry_reason: None,
        },
    )
    .unwrap();
    doc.commit();
    doc
}

fn error_code(body: &[u8]) -> ErrorCode {
    serde_json::from_slice::<ErrorBody>(body)
        .unwrap_or_else(|e| panic!("not an error body ({e}): {}", String::from_utf8_lossy(body)))
        .code
}

fn changes_of(doc: &mut AutoCommit) -> Vec<ByteBuf> {
    doc.get_changes(&[])
        .into_iter()
        .map(|mut c| ByteBuf::from(c.bytes().into_owned()))
        .collect()
}

/// A new document whose changes are authored by `staff` (under a fresh actor).
fn authored(staff: &Staff) -> AutoCommit {
    let mut doc = AutoCommit::new();
    doc.set_author(Some(Author::from(staff.staff_id.as_bytes().to_vec())));
    doc
}

/// A new case document, written by `staff`, and the push that creates it.
fn new_case(name: &str, staff: &Staff) -> (CaseId, AutoCommit, DocPush) {
    let case_id = CaseId::new_random();
    let mut doc = authored(staff);
    record::init_case(
        &mut doc,
        case_id,
        &Identity {
            name: name.into(),
            ..Identity::default()
        },
    )
    .unwrap();
    let push = DocPush {
        doc_id: DocId(case_id.0),
        case_id,
        kind: DocKind::Case,
        base: vec![],
        changes: changes_of(&mut doc),
    };
    (case_id, doc, push)
}

fn hashes(changes: &[ByteBuf]) -> Vec<Hash> {
    changes
        .iter()
        .map(|b| {
            automerge::Change::from_bytes(b.to_vec())
                .unwrap()
                .hash()
                .into()
        })
        .collect()
}

#[tokio::test]
async fn health_answers_ok_without_a_token() {
    let f = Fixture::new();
    let (status, _, body) = f
        .send(Request::get("/health").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"status": "ok", "store_writable": true})
    );
}

#[tokio::test]
async fn an_unknown_path_is_a_json_not_found() {
    let f = Fixture::new();
    let (status, _, body) = f
        .send(Request::get("/v1/nothing").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), ErrorCode::NotFound);
}

#[tokio::test]
async fn whoami_names_the_bearer_and_refuses_missing_wrong_or_revoked_tokens() {
    let f = Fixture::new();
    let (status, body) = f.whoami(Some(&format!("Bearer {}", f.alice))).await;
    assert_eq!(status, StatusCode::OK);
    let who: casenote_protocol::wire::WhoAmI = serde_json::from_slice(&body).unwrap();
    assert_eq!(who.name, "Alice");
    assert_eq!(who.role, "social_worker");
    assert_eq!(who.org, "Council");
    assert_eq!(who.teams.len(), 1);
    assert_eq!(who.teams[0].name, "North");

    for auth in [
        None,
        Some("Bearer cn_0000".to_string()),
        Some(format!("Basic {}", f.alice)),
        Some("Bearer".to_string()),
    ] {
        let (status, body) = f.whoami(auth.as_deref()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(error_code(&body), ErrorCode::Unauthorized);
    }

    let device = f.device_of(&f.alice);
    testkit::revoke(&*f.store, device, 0);
    let (status, body) = f.whoami(Some(&format!("Bearer {}", f.alice))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), ErrorCode::DeviceRevoked);
}

#[tokio::test]
async fn sync_without_a_token_is_unauthorized() {
    let f = Fixture::new();
    let req = SyncRequest {
        version: PROTOCOL_VERSION,
        cursor: Seq(0),
        device_clock_ms: 0,
        docs: vec![],
        log_id: None,
        confirmed_reconcile: None,
        views: Vec::new(),
        restricted: Vec::new(),
    };
    let (status, _, body) = f
        .send(
            Request::post("/v1/sync")
                .header(header::CONTENT_TYPE, CBOR_MEDIA_TYPE)
                .body(Body::from(wire::encode(&req)))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), ErrorCode::Unauthorized);
}

#[tokio::test]
async fn a_case_pushed_by_one_device_reaches_a_colleague_and_a_resend_stores_nothing_new() {
    let f = Fixture::new();
    let (case_id, mut doc, push) = new_case("Test Person", &f.alice_staff);
    let sent = hashes(&push.changes);
    let resp = f.sync(&f.alice, Seq(0), vec![push.clone()]).await;
    assert!(resp.rejections.is_empty(), "{:?}", resp.rejections);
    assert_eq!(resp.acks.len(), 1);
    assert_eq!(resp.acks[0].stored, sent.len() as u32);
    assert_eq!(resp.acks[0].duplicates, 0);
    assert_eq!(resp.acks[0].heads, wire::to_wire_heads(&doc.get_heads()));
    assert!(
        resp.docs.is_empty(),
        "the pusher is not sent its own changes back"
    );
    assert_eq!(resp.cursor, Seq(sent.len() as u64));

    let pulled = f.sync(&f.bob, Seq(0), vec![]).await;
    assert_eq!(pulled.docs.len(), 1);
    assert_eq!(pulled.docs[0].case_id, case_id);
    assert_eq!(pulled.docs[0].kind, DocKind::Case);
    assert_eq!(hashes(&pulled.docs[0].changes), sent);
    assert_eq!(pulled.docs[0].heads, resp.acks[0].heads);
    let mut copy = AutoCommit::new();
    copy.apply_changes(
        pulled.docs[0]
            .changes
            .iter()
            .map(|b| automerge::Change::from_bytes(b.to_vec()).unwrap()),
    )
    .unwrap();
    assert_eq!(record::content_json(&copy), record::content_json(&doc));

    let last = f.store.last_seq().unwrap();
    let again = f.sync(&f.alice, resp.cursor, vec![push]).await;
    assert_eq!(again.acks[0].stored, 0);
    assert_eq!(again.acks[0].duplicates, sent.len() as u32);
    assert_eq!(
        f.store.last_seq().unwrap(),
        last,
        "a re-send stores nothing"
    );

    // An idle reconnect: nothing new, the cursor stays.
    let idle = f.sync(&f.bob, pulled.cursor, vec![]).await;
    assert!(idle.docs.is_empty() && !idle.more);
    assert_eq!(idle.cursor, pulled.cursor);

    // An edit on top of the acknowledged heads is stored and moves the heads.
    let base = resp.acks[0].heads.clone();
    let before = doc.get_heads();
    doc.put(ROOT, "name", "Test Person Renamed").unwrap();
    let edit: Vec<ByteBuf> = doc
        .get_changes(&before)
        .into_iter()
        .map(|mut c| ByteBuf::from(c.bytes().into_owned()))
        .collect();
    let resp = f
        .sync(
            &f.alice,
            resp.cursor,
            vec![DocPush {
                doc_id: DocId(case_id.0),
                case_id,
                kind: DocKind::Case,
                base,
                changes: edit,
            }],
        )
        .await;
    assert_eq!(resp.acks[0].stored, 1);
    assert_eq!(resp.acks[0].heads, wire::to_wire_heads(&doc.get_heads()));
}

#[tokio::test]
async fn bad_bodies_get_their_codes_and_the_router_keeps_serving() {
    let f = Fixture::new();
    let good = SyncRequest {
        version: PROTOCOL_VERSION,
        cursor: Seq(0),
        device_clock_ms: 0,
        docs: vec![new_case("X", &f.alice_staff).2],
        log_id: None,
        confirmed_reconcile: None,
        views: Vec::new(),
        restricted: Vec::new(),
    };
    let bytes = wire::encode(&good);

    let (status, _, body) = f.sync_raw(&f.alice, vec![0xff, 0x00, 0x13]).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, ErrorCode::MalformedBody)
    );

    let (status, _, body) = f
        .sync_raw(&f.alice, bytes[..bytes.len() / 2].to_vec())
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, ErrorCode::MalformedBody)
    );

    let wrong = SyncRequest {
        version: PROTOCOL_VERSION + 1,
        ..good.clone()
    };
    let (status, _, body) = f.sync_raw(&f.alice, wire::encode(&wrong)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, ErrorCode::UnsupportedVersion)
    );

    let over = SyncRequest {
        docs: vec![good.docs[0].clone(); limits::PUSH_DOCS_MAX + 1],
        ..good.clone()
    };
    let (status, _, body) = f.sync_raw(&f.alice, wire::encode(&over)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, ErrorCode::LimitExceeded)
    );

    for ctype in [None, Some("application/json")] {
        let mut req =
            Request::post("/v1/sync").header(header::AUTHORIZATION, format!("Bearer {}", f.alice));
        if let Some(c) = ctype {
            req = req.header(header::CONTENT_TYPE, c);
        }
        let (status, _, body) = f.send(req.body(Body::from(bytes.clone())).unwrap()).await;
        assert_eq!(
            (status, error_code(&body)),
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType
            )
        );
    }

    // A body over the limit: refused by its Content-Length before reading, and while reading when
    // the request carries no Content-Length (oneshot requests have none unless set).
    let (status, _, body) = f
        .send(
            Request::post("/v1/sync")
                .header(header::AUTHORIZATION, format!("Bearer {}", f.alice))
                .header(header::CONTENT_TYPE, CBOR_MEDIA_TYPE)
                .header(
                    header::CONTENT_LENGTH,
                    (limits::REQUEST_BYTES_MAX + 1).to_string(),
                )
                .body(Body::from(vec![0u8; 16]))
                .unwrap(),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::BodyTooLarge)
    );
    let huge = vec![0u8; limits::REQUEST_BYTES_MAX + 1];
    let (status, _, body) = f
        .send(
            Request::post("/v1/sync")
                .header(header::AUTHORIZATION, format!("Bearer {}", f.alice))
                .header(header::CONTENT_TYPE, CBOR_MEDIA_TYPE)
                .body(Body::from(huge))
                .unwrap(),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::BodyTooLarge)
    );

    assert_eq!(
        f.store.last_seq().unwrap(),
        Seq(0),
        "no bad request stored anything"
    );
    let resp = f.sync(&f.alice, Seq(0), good.docs).await;
    assert_eq!(
        resp.acks.len(),
        1,
        "the router still serves after bad requests"
    );
}

#[tokio::test]
async fn an_unknown_base_asks_for_the_full_history_and_the_full_history_is_then_stored() {
    let f = Fixture::new();
    let (case_id, mut doc, push) = new_case("Y", &f.alice_staff);
    let before = doc.get_heads();
    doc.put(ROOT, "name", "Y2").unwrap();
    let later: Vec<ByteBuf> = doc
        .get_changes(&before)
        .into_iter()
        .map(|mut c| ByteBuf::from(c.bytes().into_owned()))
        .collect();
    // The server never saw the first changes: a base it lacks, and a dependency it lacks.
    for base in [wire::to_wire_heads(&before), vec![]] {
        let resp = f
            .sync(
                &f.alice,
                Seq(0),
                vec![DocPush {
                    base,
                    changes: later.clone(),
                    ..push.clone()
                }],
            )
            .await;
        assert_eq!(resp.need_full_history, vec![DocId(case_id.0)]);
        assert!(resp.acks.is_empty() && resp.rejections.is_empty());
        assert_eq!(
            f.store.last_seq().unwrap(),
            Seq(0),
            "nothing of that document is stored"
        );
    }
    let resp = f
        .sync(
            &f.alice,
            Seq(0),
            vec![DocPush {
                changes: changes_of(&mut doc),
                ..push
            }],
        )
        .await;
    assert!(resp.need_full_history.is_empty());
    assert_eq!(resp.acks[0].heads, wire::to_wire_heads(&doc.get_heads()));
}

#[tokio::test]
async fn another_teams_case_is_neither_writable_nor_readable() {
    let f = Fixture::new();
    let (case_id, mut doc, push) = new_case("Z", &f.alice_staff);
    let created = f.sync(&f.alice, Seq(0), vec![push.clone()]).await;
    let last = f.store.last_seq().unwrap();

    let pulled = f.sync(&f.carol, Seq(0), vec![]).await;
    assert!(
        pulled.docs.is_empty(),
        "Carol's team is not around this person"
    );
    assert_eq!(
        pulled.cursor, last,
        "the cursor still moves past what she may not read"
    );

    let before = doc.get_heads();
    doc.put(ROOT, "name", "Changed by another team").unwrap();
    let edit = DocPush {
        base: created.acks[0].heads.clone(),
        changes: doc
            .get_changes(&before)
            .into_iter()
            .map(|mut c| ByteBuf::from(c.bytes().into_owned()))
            .collect(),
        ..push
    };
    let mut note = authored(&f.carol_staff);
    note.put(ROOT, "x", 1).unwrap();
    let new_note = DocPush {
        doc_id: DocId::new_random(),
        case_id,
        kind: DocKind::Note,
        base: vec![],
        changes: changes_of(&mut note),
    };
    let resp = f.sync(&f.carol, pulled.cursor, vec![edit, new_note]).await;
    assert_eq!(resp.rejections.len(), 2);
    assert!(resp
        .rejections
        .iter()
        .all(|r| r.code == ErrorCode::Forbidden));
    assert!(resp.acks.is_empty());
    assert_eq!(f.store.last_seq().unwrap(), last, "nothing was stored");
}

#[tokio::test]
async fn bad_headers_unknown_cases_and_malformed_changes_are_rejected_per_document() {
    let f = Fixture::new();
    let (case_id, _, case_push) = new_case("W", &f.alice_staff);
    let mut note = draft_note(&f.alice_staff, case_id, "x");
    let note_push = DocPush {
        doc_id: DocId::new_random(),
        case_id,
        kind: DocKind::Note,
        base: vec![],
        changes: changes_of(&mut note),
    };
    // The case and its first note in one request: case documents are handled first.
    let resp = f
        .sync(&f.alice, Seq(0), vec![note_push.clone(), case_push.clone()])
        .await;
    assert_eq!(resp.acks.len(), 2, "{:?}", resp.rejections);
    let last = f.store.last_seq().unwrap();

    let pushes = vec![
        // An existing note pushed as a plan.
        DocPush {
            kind: DocKind::Plan,
            ..note_push.clone()
        },
        // An existing note pushed under another case.
        DocPush {
            case_id: CaseId::new_random(),
            ..note_push.clone()
        },
        // A new case document whose id is not its case id.
        DocPush {
            doc_id: DocId::new_random(),
            ..new_case("V", &f.alice_staff).2
        },
        // A new note of a case the server does not know: answered like an unreadable case.
        DocPush {
            doc_id: DocId::new_random(),
            case_id: CaseId::new_random(),
            ..note_push.clone()
        },
        // Bytes that are no Automerge change.
        DocPush {
            doc_id: DocId::new_random(),
            changes: vec![ByteBuf::from(vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3])],
            ..note_push.clone()
        },
    ];
    let ids: Vec<DocId> = pushes.iter().map(|p| p.doc_id).collect();
    let resp = f.sync(&f.alice, Seq(0), pushes).await;
    // Case documents are handled first, so compare without order.
    let mut codes: Vec<(DocId, ErrorCode)> =
        resp.rejections.iter().map(|r| (r.doc_id, r.code)).collect();
    let mut expected = vec![
        (ids[0], ErrorCode::HeaderMismatch),
        (ids[1], ErrorCode::HeaderMismatch),
        (ids[2], ErrorCode::HeaderMismatch),
        (ids[3], ErrorCode::Forbidden),
        (ids[4], ErrorCode::MalformedChange),
    ];
    codes.sort_by_key(|(d, c)| (*d, c.as_str()));
    expected.sort_by_key(|(d, c)| (*d, c.as_str()));
    assert_eq!(codes, expected);
    assert!(resp.rejections.iter().all(|r| !r.reason.is_empty()));
    assert!(resp.acks.is_empty());
    assert_eq!(f.store.last_seq().unwrap(), last);
}

#[tokio::test]
async fn a_restricted_document_reaches_only_its_access_list() {
    let f = Fixture::new();
    let (case_id, _, push) = new_case("R", &f.alice_staff);
    f.sync(&f.alice, Seq(0), vec![push]).await;
    // Put South around the person too, so Carol may hold the case but not its restricted part.
    let mut case = store::read(f.s(), |t| t.case(case_id)).unwrap().unwrap();
    case.teams.extend(f.carol_staff.teams.iter().copied());
    store::write(f.s(), |t| t.put_case(&case)).unwrap();
    let mut sealed = authored(&f.alice_staff);
    sealed.put(ROOT, "title", "Safeguarding").unwrap();
    let restricted = DocPush {
        doc_id: DocId::new_random(),
        case_id,
        kind: DocKind::Restricted,
        base: vec![],
        changes: changes_of(&mut sealed),
    };
    let resp = f.sync(&f.alice, Seq(0), vec![restricted.clone()]).await;
    assert_eq!(resp.acks.len(), 1);

    let carol = f.sync(&f.carol, Seq(0), vec![]).await;
    let kinds: Vec<DocKind> = carol.docs.iter().map(|d| d.kind).collect();
    assert_eq!(kinds, vec![DocKind::Case]);
    let bob = f.sync(&f.bob, Seq(0), vec![]).await;
    let kinds: HashSet<DocKind> = bob.docs.iter().map(|d| d.kind).collect();
    assert_eq!(kinds, HashSet::from([DocKind::Case, DocKind::Restricted]));

    let mut more = sealed.fork().with_actor(automerge::ActorId::random());
    let before = more.get_heads();
    more.put(ROOT, "title", "Edited").unwrap();
    let edit = DocPush {
        base: resp.acks[0].heads.clone(),
        changes: more
            .get_changes(&before)
            .into_iter()
            .map(|mut c| ByteBuf::from(c.bytes().into_owned()))
            .collect(),
        ..restricted
    };
    let resp = f.sync(&f.carol, carol.cursor, vec![edit]).await;
    assert_eq!(resp.rejections[0].code, ErrorCode::Forbidden);
}

#[tokio::test]
async fn large_pulls_come_in_pages_and_the_cursor_gets_everything_exactly_once() {
    use rand::distributions::{Alphanumeric, DistString};
    let f = Fixture::new();
    let (case_id, _, push) = new_case("P", &f.alice_staff);
    f.sync(&f.alice, Seq(0), vec![push]).await;
    // Bob's first sync (a backfill of the case, sync::reconcile) and the next one, which
    // confirms it: the rest comes by the log scan.
    let (first, _, mut cursor) = f.sync_all(&f.bob, Seq(0)).await;
    assert_eq!(first.len(), 1);
    assert!(cursor > Seq(0));
    let confirmed = f.sync(&f.bob, cursor, vec![]).await;
    assert!(confirmed.docs.is_empty() && confirmed.reconcile_id.is_none());
    // Nine notes of about 700 KB each, sent in three requests: more than one page of pulls.
    let mut sent: HashSet<Hash> = HashSet::new();
    let mut rng = rand::thread_rng();
    for _ in 0..3 {
        let mut docs = Vec::new();
        for _ in 0..3 {
            let mut note = draft_note(&f.alice_staff, case_id, "x");
            note.put(
                ROOT,
                "blob",
                Alphanumeric.sample_string(&mut rng, 700 * 1024),
            )
            .unwrap();
            note.commit();
            note.put(ROOT, "small", 1).unwrap();
            let changes = changes_of(&mut note);
            sent.extend(hashes(&changes));
            docs.push(DocPush {
                doc_id: DocId::new_random(),
                case_id,
                kind: DocKind::Note,
                base: vec![],
                changes,
            });
        }
        let resp = f.sync(&f.alice, Seq(0), docs).await;
        assert_eq!(resp.acks.len(), 3);
    }

    let mut got: Vec<Hash> = Vec::new();
    let mut pages = 0;
    loop {
        let resp = f.sync(&f.bob, cursor, vec![]).await;
        pages += 1;
        let bytes: usize = resp
            .docs
            .iter()
            .flat_map(|d| &d.changes)
            .map(|c| c.len())
            .sum();
        assert!(bytes <= limits::RESPONSE_CHANGE_BYTES_SOFT_MAX);
        assert!(resp.cursor > cursor, "every page moves the cursor");
        for d in &resp.docs {
            got.extend(hashes(&d.changes));
        }
        cursor = resp.cursor;
        if !resp.more {
            break;
        }
        assert!(pages < 100);
    }
    assert!(pages >= 2, "the pull was paged ({pages} page)");
    assert_eq!(cursor, f.store.last_seq().unwrap());
    let unique: HashSet<Hash> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "no change comes twice");
    assert!(sent.is_subset(&unique), "every note change arrived");
    assert_eq!(got.len(), sent.len());
}

// ---- Access control: revocation, access changes, authorship, audit ----

use crate::admin;
use crate::audit;
use casenote_protocol::wire::DocPull;

impl Fixture {
    fn s(&self) -> &dyn Store {
        &*self.store
    }

    fn team(&self, name: &str) -> casenote_protocol::TeamId {
        admin::find_team_any(self.s(), name).unwrap().team_id
    }

    /// Syncs until `more` is false, collecting everything.
    async fn sync_all(&self, token: &str, mut cursor: Seq) -> (Vec<DocPull>, Vec<DocId>, Seq) {
        let mut docs = Vec::new();
        let mut evictions = Vec::new();
        for _ in 0..100 {
            let r = self.sync(token, cursor, vec![]).await;
            docs.extend(r.docs);
            evictions.extend(r.evictions);
            cursor = r.cursor;
            if !r.more {
                return (docs, evictions, cursor);
            }
        }
        panic!("the server never stopped saying more");
    }

    /// Alice opens a case with one note; returns the case, the note and the case document.
    async fn case_with_note(&self) -> (CaseId, DocId, AutoCommit) {
        let (case_id, doc, push) = new_case("Person", &self.alice_staff);
        let mut note = draft_note(&self.alice_staff, case_id, "a visit");
        let note_id = DocId::new_random();
        let note_push = DocPush {
            doc_id: note_id,
            case_id,
            kind: DocKind::Note,
            base: vec![],
            changes: changes_of(&mut note),
        };
        let r = self.sync(&self.alice, Seq(0), vec![push, note_push]).await;
        assert_eq!(r.acks.len(), 2, "{:?}", r.rejections);
        (case_id, note_id, doc)
    }
}

fn ids(docs: &[DocPull]) -> std::collections::BTreeSet<DocId> {
    docs.iter().map(|d| d.doc_id).collect()
}

fn all_hashes(docs: &[DocPull]) -> HashSet<Hash> {
    docs.iter().flat_map(|d| hashes(&d.changes)).collect()
}

#[tokio::test]
async fn a_revoked_device_is_told_device_revoked_and_revoking_staff_revokes_all_their_devices() {
    let f = Fixture::new();
    let second = testkit::issue(f.s(), &f.alice_staff, "phone", 0)
        .unwrap()
        .token;
    let device = f.device_of(&f.alice);
    testkit::revoke(f.s(), device, 0);

    let req = SyncRequest {
        version: PROTOCOL_VERSION,
        cursor: Seq(0),
        device_clock_ms: 0,
        docs: vec![],
        log_id: None,
        confirmed_reconcile: None,
        views: Vec::new(),
        restricted: Vec::new(),
    };
    let (status, _, body) = f.sync_raw(&f.alice, wire::encode(&req)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let err: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(err.code, ErrorCode::DeviceRevoked);
    assert_eq!(
        err.message,
        "this device has been revoked; its local data must be wiped"
    );
    // An unknown token is not told anything about revocation.
    let (status, _, body) = f.sync_raw("cn_unknown", wire::encode(&req)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized)
    );
    // Alice's other device still works until Alice herself is revoked.
    f.sync(&second, Seq(0), vec![]).await;
    let revoked = admin::revoke_staff(f.s(), By::Cli, f.alice_staff.staff_id, 1).unwrap();
    assert_eq!(revoked.len(), 2);
    for token in [&f.alice, &second] {
        let (status, _, body) = f.sync_raw(token, wire::encode(&req)).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::UNAUTHORIZED, ErrorCode::DeviceRevoked)
        );
    }
    f.sync(&f.bob, Seq(0), vec![]).await;
    // Alice's first device was refused twice: once written, once counted until the window ends.
    f.refusals.flush_all(f.s(), crate::now_ms()).unwrap();
    let refused: Vec<_> = audit::entries(f.s(), None)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == audit::AuditKind::Refused)
        .collect();
    let counted = |e: &audit::AuditEntry| e.details["repeated"].as_u64().unwrap_or(1);
    assert_eq!(
        refused.iter().map(counted).sum::<u64>(),
        4,
        "every 401 is audited"
    );
    assert_eq!(refused.len(), 4, "three kinds, one of them repeated");
    let first = refused
        .iter()
        .find(|e| e.device_id == Some(device))
        .unwrap();
    assert_eq!(
        first.details,
        serde_json::json!({"code": "device_revoked", "route": "/v1/sync"})
    );
}

#[tokio::test]
async fn adding_a_team_to_a_case_backfills_its_documents_although_the_cursor_is_past_them() {
    let f = Fixture::new();
    let (case_id, note_id, _) = f.case_with_note().await;
    let (docs, _, cursor) = f.sync_all(&f.carol, Seq(0)).await;
    assert!(docs.is_empty());
    assert_eq!(
        cursor,
        f.store.last_seq().unwrap(),
        "Carol's cursor is past the case"
    );
    let (_, _, bob_cursor) = f.sync_all(&f.bob, Seq(0)).await;

    admin::case_add_team(f.s(), By::Cli, case_id, f.team("South"), 1).unwrap();
    let r = f.sync(&f.carol, cursor, vec![]).await;
    assert_eq!(ids(&r.docs), [DocId(case_id.0), note_id].into());
    assert!(r.evictions.is_empty());
    assert_eq!(r.cursor, cursor);
    let alice_changes: usize = f.store.last_seq().unwrap().0 as usize;
    assert_eq!(
        r.docs.iter().map(|d| d.changes.len()).sum::<usize>(),
        alice_changes,
        "the whole history of both documents"
    );
    let again = f.sync(&f.carol, r.cursor, vec![]).await;
    assert!(again.docs.is_empty() && again.evictions.is_empty());
    // Bob's team was on the case all along: nothing changes for him.
    let bob = f.sync(&f.bob, bob_cursor, vec![]).await;
    assert!(bob.docs.is_empty() && bob.evictions.is_empty());
}

#[tokio::test]
async fn a_backfill_larger_than_a_page_keeps_the_cursor_until_it_is_complete() {
    use rand::distributions::{Alphanumeric, DistString};
    let f = Fixture::new();
    let (case_id, _, push) = new_case("Big", &f.alice_staff);
    f.sync(&f.alice, Seq(0), vec![push]).await;
    let mut rng = rand::thread_rng();
    // One note whose own history (about 6 MB compressed) is larger than a page, so a page ends
    // inside it, and two more notes.
    let mut sent: HashSet<Hash> = HashSet::new();
    for changes_per_note in [8, 1, 1] {
        let mut note = draft_note(&f.alice_staff, case_id, "x");
        for _ in 0..changes_per_note {
            note.put(
                ROOT,
                "blob",
                Alphanumeric.sample_string(&mut rng, 1024 * 1024),
            )
            .unwrap();
            note.commit();
        }
        let changes = changes_of(&mut note);
        sent.extend(hashes(&changes));
        let r = f
            .sync(
                &f.alice,
                Seq(0),
                vec![DocPush {
                    doc_id: DocId::new_random(),
                    case_id,
                    kind: DocKind::Note,
                    base: vec![],
                    changes,
                }],
            )
            .await;
        assert_eq!(r.acks.len(), 1);
    }
    let (_, _, cursor) = f.sync_all(&f.carol, Seq(0)).await;
    admin::case_add_team(f.s(), By::Cli, case_id, f.team("South"), 1).unwrap();

    let mut got: Vec<Hash> = Vec::new();
    let mut pages = 0;
    let mut at = cursor;
    loop {
        let r = f.sync(&f.carol, at, vec![]).await;
        pages += 1;
        let bytes: usize = r
            .docs
            .iter()
            .flat_map(|d| &d.changes)
            .map(|c| c.len())
            .sum();
        assert!(bytes <= limits::RESPONSE_CHANGE_BYTES_SOFT_MAX);
        assert_eq!(r.cursor, cursor, "the cursor stays during a backfill");
        got.extend(r.docs.iter().flat_map(|d| hashes(&d.changes)));
        at = r.cursor;
        if !r.more {
            break;
        }
        assert!(pages < 50);
    }
    assert!(pages >= 2, "the backfill was paged");
    let unique: HashSet<Hash> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "no change comes twice");
    assert!(sent.is_subset(&unique), "every note change arrived");
    let idle = f.sync(&f.carol, at, vec![]).await;
    assert!(idle.docs.is_empty() && !idle.more);
}

#[tokio::test]
async fn removing_a_team_from_a_case_evicts_exactly_that_cases_documents() {
    let f = Fixture::new();
    let (first, first_note, _) = f.case_with_note().await;
    let (second, second_note, _) = f.case_with_note().await;
    let south = f.team("South");
    admin::case_add_team(f.s(), By::Cli, first, south, 1).unwrap();
    admin::case_add_team(f.s(), By::Cli, second, south, 1).unwrap();
    let (docs, _, cursor) = f.sync_all(&f.carol, Seq(0)).await;
    assert_eq!(ids(&docs).len(), 4);
    let (_, _, bob_cursor) = f.sync_all(&f.bob, Seq(0)).await;

    admin::case_remove_team(f.s(), By::Cli, first, south, 2).unwrap();
    let r = f.sync(&f.carol, cursor, vec![]).await;
    let evicted: std::collections::BTreeSet<DocId> = r.evictions.iter().copied().collect();
    assert_eq!(evicted, [DocId(first.0), first_note].into());
    assert_eq!(r.evictions.len(), 2);
    assert!(r.docs.is_empty());
    let again = f.sync(&f.carol, r.cursor, vec![]).await;
    assert!(again.evictions.is_empty(), "an eviction is sent once");
    let bob = f.sync(&f.bob, bob_cursor, vec![]).await;
    assert!(bob.evictions.is_empty(), "North is still on the case");
    // And Carol's device no longer receives the first case's edits, but still the second's.
    assert!(store::read(f.s(), |t| t.case(second))
        .unwrap()
        .unwrap()
        .teams
        .contains(&south));
    let _ = second_note;
}

#[tokio::test]
async fn granting_and_revoking_a_restricted_document_moves_only_that_document() {
    let f = Fixture::new();
    let (case_id, _, _) = f.case_with_note().await;
    let south = f.team("South");
    admin::case_add_team(f.s(), By::Cli, case_id, south, 1).unwrap();
    let mut sealed = authored(&f.alice_staff);
    sealed.put(ROOT, "title", "Safeguarding").unwrap();
    let restricted = DocId::new_random();
    let r = f
        .sync(
            &f.alice,
            Seq(0),
            vec![DocPush {
                doc_id: restricted,
                case_id,
                kind: DocKind::Restricted,
                base: vec![],
                changes: changes_of(&mut sealed),
            }],
        )
        .await;
    assert_eq!(r.acks.len(), 1);
    let (docs, _, cursor) = f.sync_all(&f.carol, Seq(0)).await;
    assert_eq!(ids(&docs).len(), 2);
    assert!(!ids(&docs).contains(&restricted));

    admin::restricted_grant(f.s(), By::Cli, restricted, south, 2).unwrap();
    let r = f.sync(&f.carol, cursor, vec![]).await;
    assert_eq!(ids(&r.docs), [restricted].into());
    assert!(r.evictions.is_empty());

    admin::restricted_revoke(f.s(), By::Cli, restricted, south, 3).unwrap();
    let r = f.sync(&f.carol, r.cursor, vec![]).await;
    assert_eq!(r.evictions, vec![restricted]);
    assert!(r.docs.is_empty());
    // A note is not restricted: its access follows its case.
    let note = store::read(f.s(), |t| t.docs_of_case(case_id)).unwrap();
    let plain = note
        .into_iter()
        .find(|d| *d != restricted && d.0 != case_id.0)
        .unwrap();
    assert!(admin::restricted_grant(f.s(), By::Cli, plain, south, 4).is_err());
}

#[tokio::test]
async fn a_forged_author_or_a_stolen_actor_is_refused_and_never_reaches_another_device() {
    let f = Fixture::new();
    let (case_id, _, mut doc) = f.case_with_note().await;
    let case_doc = DocId(case_id.0);
    let alice_actor = doc.get_actor().clone();
    let base = doc.get_heads();
    let last = f.store.last_seq().unwrap();
    let alice_phone = testkit::issue(f.s(), &f.alice_staff, "phone", 0)
        .unwrap()
        .token;

    let edit = |author: &Staff, actor: Option<automerge::ActorId>, text: &str| {
        let mut d = doc.clone();
        d.set_author(Some(Author::from(author.staff_id.as_bytes().to_vec())));
        if let Some(a) = actor {
            d.set_actor(a);
        }
        d.put(ROOT, "forged", text).unwrap();
        DocPush {
            doc_id: case_doc,
            case_id,
            kind: DocKind::Case,
            base: wire::to_wire_heads(&base),
            changes: d
                .get_changes(&base)
                .into_iter()
                .map(|mut c| ByteBuf::from(c.bytes().into_owned()))
                .collect(),
        }
    };
    let mut forged_hashes: HashSet<Hash> = HashSet::new();
    let attempts = [
        (
            "Bob claims Alice as author",
            &f.bob,
            edit(&f.alice_staff, Some(automerge::ActorId::random()), "F1"),
        ),
        (
            "Bob writes under Alice's actor",
            &f.bob,
            edit(&f.bob_staff, Some(alice_actor.clone()), "F2"),
        ),
        (
            "Alice's phone reuses her laptop's actor",
            &alice_phone,
            edit(&f.alice_staff, Some(alice_actor.clone()), "F3"),
        ),
    ];
    for (what, token, push) in attempts {
        forged_hashes.extend(hashes(&push.changes));
        let r = f.sync(token, Seq(0), vec![push]).await;
        assert!(r.acks.is_empty(), "{what}");
        assert_eq!(r.rejections.len(), 1, "{what}");
        assert_eq!(r.rejections[0].code, ErrorCode::ForgedAuthor, "{what}");
        assert!(r.rejections[0].reason.contains("change 0"), "{what}");
        assert!(!r.rejections[0].reason.contains("Alice"), "{what}");
    }
    assert_eq!(
        f.store.last_seq().unwrap(),
        last,
        "nothing forged was stored"
    );

    // A change without any author under an unknown actor is refused too.
    let mut anon = doc.clone().with_actor(automerge::ActorId::random());
    anon.set_author(None);
    anon.put(ROOT, "forged", "F4").unwrap();
    let r = f
        .sync(
            &f.bob,
            Seq(0),
            vec![DocPush {
                doc_id: case_doc,
                case_id,
                kind: DocKind::Case,
                base: wire::to_wire_heads(&base),
                changes: anon
                    .get_changes(&base)
                    .into_iter()
                    .map(|mut c| ByteBuf::from(c.bytes().into_owned()))
                    .collect(),
            }],
        )
        .await;
    assert_eq!(r.rejections[0].code, ErrorCode::ForgedAuthor);

    // Honest edits still work: Alice on her own device, with her own actor.
    let before = doc.get_heads();
    doc.put(ROOT, "honest", "yes").unwrap();
    let honest = DocPush {
        doc_id: case_doc,
        case_id,
        kind: DocKind::Case,
        base: wire::to_wire_heads(&before),
        changes: doc
            .get_changes(&before)
            .into_iter()
            .map(|mut c| ByteBuf::from(c.bytes().into_owned()))
            .collect(),
    };
    let r = f.sync(&f.alice, Seq(0), vec![honest]).await;
    assert_eq!(r.acks.len(), 1, "{:?}", r.rejections);

    for token in [&f.bob, &alice_phone] {
        let (docs, _, _) = f.sync_all(token, Seq(0)).await;
        let got = all_hashes(&docs);
        assert!(
            got.is_disjoint(&forged_hashes),
            "a forged change was handed out"
        );
        assert!(!got.is_empty());
    }
    let refused: Vec<_> = audit::entries(f.s(), None)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == audit::AuditKind::Refused)
        .collect();
    assert_eq!(refused.len(), 4);
    assert!(refused.iter().all(|e| e.details["code"] == "forged_author"));
}

#[tokio::test]
async fn a_resend_of_someone_elses_changes_is_accepted_as_duplicates() {
    let f = Fixture::new();
    let (case_id, _, doc) = f.case_with_note().await;
    let (docs, _, cursor) = f.sync_all(&f.bob, Seq(0)).await;
    let case_pull = docs.iter().find(|d| d.doc_id.0 == case_id.0).unwrap();
    let mut bobs = AutoCommit::new();
    bobs.apply_changes(
        case_pull
            .changes
            .iter()
            .map(|b| automerge::Change::from_bytes(b.to_vec()).unwrap()),
    )
    .unwrap();
    bobs.set_author(Some(Author::from(f.bob_staff.staff_id.as_bytes().to_vec())));
    bobs.put(ROOT, "by_bob", 1).unwrap();
    let everything = changes_of(&mut bobs);
    let alices = doc.clone().get_changes(&[]).len() as u32;
    let r = f
        .sync(
            &f.bob,
            cursor,
            vec![DocPush {
                doc_id: DocId(case_id.0),
                case_id,
                kind: DocKind::Case,
                base: vec![],
                changes: everything,
            }],
        )
        .await;
    assert!(r.rejections.is_empty(), "{:?}", r.rejections);
    assert_eq!((r.acks[0].stored, r.acks[0].duplicates), (1, alices));
}

#[tokio::test]
async fn pushes_to_unreadable_or_unknown_documents_and_cases_get_the_same_answer() {
    let f = Fixture::new();
    let (case_id, note_id, _) = f.case_with_note().await;
    let mut mine = authored(&f.carol_staff);
    mine.put(ROOT, "x", 1).unwrap();
    let changes = changes_of(&mut mine);
    let push = |doc_id: DocId, case_id: CaseId| DocPush {
        doc_id,
        case_id,
        kind: DocKind::Note,
        base: vec![],
        changes: changes.clone(),
    };
    let existing = push(note_id, case_id);
    let existing_other_claim = push(note_id, CaseId::new_random());
    let new_in_unreadable = push(DocId::new_random(), case_id);
    let new_in_unknown = push(DocId::new_random(), CaseId::new_random());
    let r = f
        .sync(
            &f.carol,
            Seq(0),
            vec![
                existing,
                existing_other_claim,
                new_in_unreadable,
                new_in_unknown,
            ],
        )
        .await;
    assert_eq!(r.rejections.len(), 4);
    let answers: HashSet<(ErrorCode, String)> = r
        .rejections
        .iter()
        .map(|x| (x.code, x.reason.replace(&x.doc_id.to_string(), "DOC")))
        .collect();
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers.into_iter().next().unwrap().0, ErrorCode::Forbidden);
    assert!(r
        .rejections
        .iter()
        .all(|x| !x.reason.contains(&case_id.to_string())));
}

#[tokio::test]
async fn the_admin_role_reads_no_records_even_on_a_team_of_the_case() {
    let f = Fixture::new();
    f.case_with_note().await;
    let admin_staff =
        testkit::add_staff(f.s(), "Ada", "admin", "Council", &["North".into()]).unwrap();
    let token = testkit::issue(f.s(), &admin_staff, "desk", 0)
        .unwrap()
        .token;
    let (docs, _, _) = f.sync_all(&token, Seq(0)).await;
    assert!(docs.is_empty());
}

#[tokio::test]
async fn an_idle_reconnect_with_an_unchanged_epoch_does_no_reconciliation() {
    let f = Fixture::new();
    let (case_id, note_id, _) = f.case_with_note().await;
    let (docs, _, cursor) = f.sync_all(&f.bob, Seq(0)).await;
    assert_eq!(ids(&docs), [DocId(case_id.0), note_id].into());
    // The device's next sync confirms its first sync (a reconciliation, sync::reconcile).
    let confirming = f.sync(&f.bob, cursor, vec![]).await;
    assert!(confirming.docs.is_empty() && confirming.reconcile_id.is_none());
    // Make the server forget what Bob's device holds: a reconciliation would now backfill both
    // documents, so an answer without them shows that none ran.
    let bob_device = f.device_of(&f.bob);
    store::write(f.s(), |t| t.device_docs_clear(bob_device)).unwrap();
    let idle = f.sync(&f.bob, cursor, vec![]).await;
    assert!(idle.docs.is_empty() && idle.evictions.is_empty() && !idle.more);
    assert_eq!(idle.cursor, cursor);
    // The probe is sensitive: after an access change the same sync reconciles.
    admin::staff_add_team(f.s(), By::Cli, f.bob_staff.staff_id, f.team("South"), 1).unwrap();
    let r = f.sync(&f.bob, cursor, vec![]).await;
    assert_eq!(ids(&r.docs), [DocId(case_id.0), note_id].into());
}

#[tokio::test]
async fn the_audit_chain_verifies_after_a_realistic_sequence_and_a_tampered_entry_is_named() {
    let f = Fixture::new();
    let (case_id, _, _) = f.case_with_note().await;
    let (_, _, cursor) = f.sync_all(&f.carol, Seq(0)).await;
    admin::case_add_team(f.s(), By::Cli, case_id, f.team("South"), 1).unwrap();
    f.sync(&f.carol, cursor, vec![]).await;
    admin::case_remove_team(f.s(), By::Cli, case_id, f.team("South"), 2).unwrap();
    f.sync(&f.carol, cursor, vec![]).await;
    testkit::revoke(f.s(), f.device_of(&f.bob), 0);
    let (status, _, _) = f
        .sync_raw(
            &f.bob,
            wire::encode(&SyncRequest {
                version: PROTOCOL_VERSION,
                cursor: Seq(0),
                device_clock_ms: 0,
                docs: vec![],
                log_id: None,
                confirmed_reconcile: None,
                views: Vec::new(),
                restricted: Vec::new(),
            }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let n = audit::verify(f.s()).unwrap();
    let entries = audit::entries(f.s(), None).unwrap();
    assert_eq!(n, entries.len());
    let kinds: HashSet<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    for k in ["enrol", "sync", "access_change", "token_revoke", "refused"] {
        assert!(kinds.contains(k), "no {k} entry in {kinds:?}");
    }
    let syncs: Vec<_> = entries
        .iter()
        .filter(|e| e.kind.as_str() == "sync")
        .collect();
    assert!(syncs.iter().any(|e| e.details["evictions"]
        .as_array()
        .is_some_and(|a| a.len() == 2)));
    assert!(syncs
        .iter()
        .all(|e| e.device_id.is_some() && e.staff_id.is_some()));
    let text = serde_json::to_string(&entries).unwrap();
    for name in ["Alice", "Bob", "Carol", "Person", "a visit"] {
        assert!(!text.contains(name), "the audit log names {name}");
    }

    // Tamper with one entry's value on disk, as an e2e test does.
    let target = entries[entries.len() / 2].seq;
    let Fixture {
        _dir: dir,
        store,
        app,
        ..
    } = f;
    drop(app);
    store.flush().unwrap();
    drop(store);
    crate::store::sled::tests::rewrite_audit_entry(dir.path(), target, |bytes| {
        let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        value["at_ms"] = serde_json::json!(value["at_ms"].as_i64().unwrap() + 1);
        serde_json::to_vec(&value).unwrap()
    });
    let store = crate::store::sled::open(dir.path()).unwrap();
    match audit::verify(&*store) {
        Err(audit::VerifyError::Broken(b)) => assert_eq!(b.seq, target, "{b}"),
        other => panic!("the tampered entry was not found: {other:?}"),
    }
}

// ---- Sync hardening: log id, confirmed reconciliation ----

#[tokio::test]
async fn a_device_on_another_log_is_told_to_reset_and_nothing_it_sent_is_stored() {
    let f = Fixture::new();
    let ours = f.log_id();
    let (_, _, push) = new_case("Reset", &f.alice_staff);
    let before = f.store.last_seq().unwrap();
    let other = uuid::Uuid::new_v4();
    let r = f
        .sync_req(
            &f.alice,
            SyncRequest {
                log_id: Some(other),
                ..request(Seq(7), vec![push.clone()])
            },
        )
        .await;
    assert!(r.reset);
    assert_eq!(r.log_id, ours);
    assert_eq!(r.cursor, Seq(0));
    assert!(r.acks.is_empty() && r.docs.is_empty() && r.rejections.is_empty());
    assert!(r.evictions.is_empty() && r.need_full_history.is_empty());
    assert_eq!(
        f.store.last_seq().unwrap(),
        before,
        "nothing of a reset request is stored"
    );
    let audited = audit::entries(f.s(), None).unwrap();
    assert!(audited
        .iter()
        .any(|e| e.kind == audit::AuditKind::Sync && e.details["reset"] == true));

    // No log id (a new device) and the right one are both handled normally.
    for log_id in [None, Some(ours)] {
        let r = f
            .sync_req(
                &f.alice,
                SyncRequest {
                    log_id,
                    ..request(Seq(0), vec![push.clone()])
                },
            )
            .await;
        assert!(!r.reset);
        assert_eq!(r.log_id, ours);
        assert_eq!(r.acks.len(), 1);
    }
}

#[tokio::test]
async fn admin_restored_gives_the_store_a_new_log_id_and_devices_on_the_old_one_reset() {
    let f = Fixture::new();
    let first = f.sync(&f.alice, Seq(0), vec![]).await.log_id;
    let said = admin::restored(f.s(), By::Cli, 5).unwrap();
    let second = f.log_id();
    assert_ne!(first, second);
    assert_eq!((said.old, said.new), (first, second));
    let stale = f
        .sync_req(
            &f.alice,
            SyncRequest {
                log_id: Some(first),
                ..request(Seq(3), vec![])
            },
        )
        .await;
    assert!(stale.reset);
    assert_eq!(stale.log_id, second);
    let again = f
        .sync_req(
            &f.alice,
            SyncRequest {
                log_id: Some(second),
                ..request(Seq(0), vec![])
            },
        )
        .await;
    assert!(!again.reset);
    assert!(audit::entries(f.s(), None)
        .unwrap()
        .iter()
        .any(|e| e.kind == audit::AuditKind::Admin && e.details["action"] == "restored"));
}

#[test]
fn the_log_id_is_created_with_the_store_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log_id = || {
        let store = crate::store::sled::open(dir.path()).unwrap();
        store::read(&*store, |t| t.log_id()).unwrap()
    };
    let id = log_id();
    assert_eq!(id.get_version_num(), 4);
    assert_eq!(log_id(), id);
}

#[tokio::test]
async fn a_lost_reconciliation_is_sent_again_until_the_device_confirms_it() {
    let f = Fixture::new();
    let (first, first_note, _) = f.case_with_note().await;
    let south = f.team("South");
    admin::case_add_team(f.s(), By::Cli, first, south, 1).unwrap();
    let (docs, _, cursor) = f.sync_all(&f.carol, Seq(0)).await;
    assert_eq!(ids(&docs), [DocId(first.0), first_note].into());
    // The device's next sync confirms its first sync (a reconciliation, sync::reconcile).
    f.sync(&f.carol, cursor, vec![]).await;
    let carol = f.device_of(&f.carol);

    admin::case_remove_team(f.s(), By::Cli, first, south, 2).unwrap();
    // The device never confirms: its responses were "lost".
    let lost = f.sync_req(&f.carol, request(cursor, vec![])).await;
    let expected: std::collections::BTreeSet<DocId> = [DocId(first.0), first_note].into();
    assert_eq!(
        lost.evictions
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        expected
    );
    let first_id = lost
        .reconcile_id
        .expect("a reconciling response carries an id");
    let again = f.sync_req(&f.carol, request(cursor, vec![])).await;
    assert_eq!(again.evictions, lost.evictions, "the same evictions again");
    let second_id = again.reconcile_id.unwrap();
    assert_ne!(first_id, second_id);
    assert_eq!(
        store::read(f.s(), |t| t.device_docs(carol)).unwrap().len(),
        2,
        "nothing is committed before the device confirms"
    );
    // A stale confirmation (of a response the server has since re-sent) commits nothing.
    let stale = f
        .sync_req(
            &f.carol,
            SyncRequest {
                confirmed_reconcile: Some(first_id),
                views: Vec::new(),
                restricted: Vec::new(),
                ..request(cursor, vec![])
            },
        )
        .await;
    assert_eq!(stale.evictions, lost.evictions);
    let confirmed = f
        .sync_req(
            &f.carol,
            SyncRequest {
                confirmed_reconcile: stale.reconcile_id,
                views: Vec::new(),
                restricted: Vec::new(),
                ..request(cursor, vec![])
            },
        )
        .await;
    assert!(confirmed.evictions.is_empty() && confirmed.reconcile_id.is_none());
    assert!(store::read(f.s(), |t| t.device_docs(carol))
        .unwrap()
        .is_empty());
    let idle = f.sync_req(&f.carol, request(cursor, vec![])).await;
    assert!(idle.evictions.is_empty() && idle.docs.is_empty() && idle.reconcile_id.is_none());

    // A lost backfill is re-sent the same way.
    admin::case_add_team(f.s(), By::Cli, first, south, 3).unwrap();
    let lost = f.sync_req(&f.carol, request(cursor, vec![])).await;
    assert_eq!(ids(&lost.docs), expected);
    let again = f.sync_req(&f.carol, request(cursor, vec![])).await;
    assert_eq!(ids(&again.docs), expected, "the backfill again");
    let done = f
        .sync_req(
            &f.carol,
            SyncRequest {
                confirmed_reconcile: again.reconcile_id,
                views: Vec::new(),
                restricted: Vec::new(),
                ..request(cursor, vec![])
            },
        )
        .await;
    assert!(done.docs.is_empty() && done.reconcile_id.is_none());
    assert_eq!(
        store::read(f.s(), |t| t.device_docs(carol)).unwrap().len(),
        2
    );
}

// ---- Record integrity: validation, quarantine, history, export ----

/// The push of `doc`'s changes since `base`.
fn push_since(
    doc: &mut AutoCommit,
    doc_id: DocId,
    case_id: CaseId,
    kind: DocKind,
    base: &[automerge::ChangeHash],
) -> DocPush {
    DocPush {
        doc_id,
        case_id,
        kind,
        base: wire::to_wire_heads(base),
        changes: doc
            .get_changes(base)
            .into_iter()
            .map(|mut c| ByteBuf::from(c.bytes().into_owned()))
            .collect(),
    }
}

/// Alice's case and one of her notes, filed; returns the case, the note id and the note.
async fn filed_note(f: &Fixture) -> (CaseId, DocId, AutoCommit) {
    let (case_id, _, push) = new_case("Filed", &f.alice_staff);
    let note_id = DocId::new_random();
    let mut note = draft_note(&f.alice_staff, case_id, "Seen at home.");
    record::file_note(&mut note, note_id, 3_000).unwrap();
    note.commit();
    let r = f
        .sync(
            &f.alice,
            Seq(0),
            vec![
                push,
                push_since(&mut note, note_id, case_id, DocKind::Note, &[]),
            ],
        )
        .await;
    assert_eq!(r.acks.len(), 2, "{:?}", r.rejections);
    (case_id, note_id, note)
}

#[tokio::test]
async fn a_crafted_change_to_a_filed_note_is_refused_quarantined_and_never_pulled() {
    let f = Fixture::new();
    let (case_id, note_id, mut note) = filed_note(&f).await;
    let base = note.get_heads();
    let last = f.store.last_seq().unwrap();
    // Made with automerge directly, past the record API's own refusal.
    let text = record::get_obj(&note, &ROOT, "text", automerge::ObjType::Text).unwrap();
    note.splice_text(&text, 0, 0, "NOT ").unwrap();
    note.commit();
    let crafted = push_since(&mut note, note_id, case_id, DocKind::Note, &base);
    let crafted_hashes: HashSet<Hash> = hashes(&crafted.changes).into_iter().collect();
    let r = f.sync(&f.alice, Seq(0), vec![crafted]).await;
    assert!(r.acks.is_empty());
    assert_eq!(r.rejections.len(), 1);
    assert_eq!(r.rejections[0].code, ErrorCode::RuleViolation);
    let reason = &r.rejections[0].reason;
    assert!(
        reason.contains("change 0") && reason.contains("filed"),
        "{reason}"
    );
    assert_eq!(
        f.store.last_seq().unwrap(),
        last,
        "nothing of it was stored"
    );

    let held = f.store.quarantine_list().unwrap();
    assert_eq!(held.len(), 1);
    assert!(crafted_hashes.contains(&held[0].hash));
    assert_eq!(held[0].doc_id, note_id);
    assert_eq!(held[0].staff_id, f.alice_staff.staff_id);
    assert!(held[0].reason.contains("filed"));
    let rows: Vec<_> = admin::quarantine(f.s())
        .unwrap()
        .iter()
        .map(crate::admin::act::QuarantineRow::from)
        .collect();
    let listed = crate::cli::render_quarantine(&rows, true);
    assert!(listed.contains(&hex::encode(held[0].hash.0)));
    assert!(!listed.contains("NOT") && !listed.contains("Seen at home"));
    assert!(audit::entries(f.s(), None)
        .unwrap()
        .iter()
        .any(|e| { e.kind == audit::AuditKind::Refused && e.details["code"] == "rule_violation" }));

    // A re-send is refused again and not quarantined twice; no device ever receives it.
    let r = f
        .sync(
            &f.alice,
            Seq(0),
            vec![push_since(
                &mut note,
                note_id,
                case_id,
                DocKind::Note,
                &base,
            )],
        )
        .await;
    assert_eq!(r.rejections[0].code, ErrorCode::RuleViolation);
    assert_eq!(f.store.quarantine_list().unwrap().len(), 1);
    for token in [&f.alice, &f.bob] {
        let (docs, _, _) = f.sync_all(token, Seq(0)).await;
        assert!(all_hashes(&docs).is_disjoint(&crafted_hashes));
        assert!(ids(&docs).contains(&note_id));
    }
}

#[tokio::test]
async fn changing_about_me_into_a_string_is_refused() {
    let f = Fixture::new();
    let (case_id, mut doc, push) = new_case("Typed", &f.alice_staff);
    f.sync(&f.alice, Seq(0), vec![push]).await;
    let base = doc.get_heads();
    doc.put(ROOT, "about_me", "a plain string").unwrap();
    let r = f
        .sync(
            &f.alice,
            Seq(0),
            vec![push_since(
                &mut doc,
                DocId(case_id.0),
                case_id,
                DocKind::Case,
                &base,
            )],
        )
        .await;
    assert_eq!(r.rejections.len(), 1, "{:?}", r.acks);
    assert_eq!(r.rejections[0].code, ErrorCode::RuleViolation);
    assert!(
        r.rejections[0].reason.contains("about_me"),
        "{}",
        r.rejections[0].reason
    );
}

#[tokio::test]
async fn a_note_authored_as_someone_else_is_refused() {
    let f = Fixture::new();
    let (case_id, _, push) = new_case("Authored", &f.alice_staff);
    f.sync(&f.alice, Seq(0), vec![push]).await;
    // Bob's own change (so authorship of the change itself is fine), naming Alice as the author.
    let mut note = authored(&f.bob_staff);
    record::init_note(
        &mut note,
        &record::NewNote {
            case_id,
            kind: record::NoteKind::Visit,
            author: record::NoteAuthor {
                staff_id: f.alice_staff.staff_id.to_string(),
                ..Default::default()
            },
            occurred_at_ms: 0,
            recorded_at_ms: 0,
            text: "in Alice's name".into(),
            amends: None,
            late_entry_reason: None,
        },
    )
    .unwrap();
    let note_id = DocId::new_random();
    let r = f
        .sync(
            &f.bob,
            Seq(0),
            vec![push_since(&mut note, note_id, case_id, DocKind::Note, &[])],
        )
        .await;
    assert_eq!(r.rejections.len(), 1);
    assert_eq!(r.rejections[0].code, ErrorCode::RuleViolation);
    assert!(
        r.rejections[0].reason.contains("author"),
        "{}",
        r.rejections[0].reason
    );
    assert!(store::read(f.s(), |t| t.doc(note_id)).unwrap().is_none());
}

#[tokio::test]
async fn filing_late_without_a_reason_is_refused_and_with_a_reason_accepted() {
    let f = Fixture::new();
    let (case_id, _, push) = new_case("Late", &f.alice_staff);
    let note_id = DocId::new_random();
    let mut note = draft_note(&f.alice_staff, case_id, "Visited at the farm.");
    let r = f
        .sync(
            &f.alice,
            Seq(0),
            vec![
                push,
                push_since(&mut note, note_id, case_id, DocKind::Note, &[]),
            ],
        )
        .await;
    assert_eq!(r.acks.len(), 2);
    let base = note.get_heads();
    let occurred = record::get_i64(&note, &ROOT, "occurred_at_ms").unwrap();
    let late = occurred + limits::LATE_ENTRY_AFTER_MS_DEFAULT + 1;

    // Filed a day late with no reason, written directly (the record API would refuse it).
    let mut bare = note.clone();
    bare.put(ROOT, "status", "filed").unwrap();
    bare.put(ROOT, "filed_at_ms", late).unwrap();
    bare.commit();
    let r = f
        .sync(
            &f.alice,
            Seq(0),
            vec![push_since(
                &mut bare,
                note_id,
                case_id,
                DocKind::Note,
                &base,
            )],
        )
        .await;
    assert_eq!(r.rejections.len(), 1);
    assert_eq!(r.rejections[0].code, ErrorCode::RuleViolation);
    assert!(
        r.rejections[0].reason.contains("late-entry reason"),
        "{}",
        r.rejections[0].reason
    );

    let mut reasoned = note.clone();
    record::file_note_late(
        &mut reasoned,
        note_id,
        late,
        Some("No signal at the farm."),
        limits::LATE_ENTRY_AFTER_MS_DEFAULT,
    )
    .unwrap();
    reasoned.commit();
    let r = f
        .sync(
            &f.alice,
            Seq(0),
            vec![push_since(
                &mut reasoned,
                note_id,
                case_id,
                DocKind::Note,
                &base,
            )],
        )
        .await;
    assert_eq!(r.acks.len(), 1, "{:?}", r.rejections);
}

#[tokio::test]
async fn a_filing_followed_by_an_edit_in_the_same_push_is_refused_at_the_edit() {
    let f = Fixture::new();
    let (case_id, _, push) = new_case("Sneaky", &f.alice_staff);
    f.sync(&f.alice, Seq(0), vec![push]).await;
    let note_id = DocId::new_random();
    let mut note = draft_note(&f.alice_staff, case_id, "First words.");
    record::file_note(&mut note, note_id, 3_000).unwrap();
    note.commit();
    let text = record::get_obj(&note, &ROOT, "text", automerge::ObjType::Text).unwrap();
    note.splice_text(&text, 0, 0, "Later ").unwrap();
    note.commit();
    let r = f
        .sync(
            &f.alice,
            Seq(0),
            vec![push_since(&mut note, note_id, case_id, DocKind::Note, &[])],
        )
        .await;
    assert_eq!(r.rejections.len(), 1);
    assert!(
        r.rejections[0].reason.starts_with("change 2 "),
        "{}",
        r.rejections[0].reason
    );
}

impl Fixture {
    async fn history(&self, token: &str, doc: DocId) -> (StatusCode, Bytes) {
        let (status, _, body) = self
            .send(
                Request::get(format!("/v1/history/{doc}"))
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        (status, body)
    }
}

#[tokio::test]
async fn history_is_in_the_order_received_even_when_device_clocks_disagree() {
    use automerge::transaction::CommitOptions;
    let f = Fixture::new();
    let (case_id, mut alice_doc, push) = new_case("History", &f.alice_staff);
    f.sync(&f.alice, Seq(0), vec![push]).await;
    let doc_id = DocId(case_id.0);
    // Alice's clock is years ahead; Bob's, later, is at 1970.
    let base = alice_doc.get_heads();
    alice_doc.put(ROOT, "address", "1 Future Road").unwrap();
    alice_doc.commit_with(CommitOptions::default().with_time(4_000_000_000_000));
    f.sync(
        &f.alice,
        Seq(0),
        vec![push_since(
            &mut alice_doc,
            doc_id,
            case_id,
            DocKind::Case,
            &base,
        )],
    )
    .await;
    let (docs, _, _) = f.sync_all(&f.bob, Seq(0)).await;
    let mut bob_doc = AutoCommit::new();
    for d in docs.iter().filter(|d| d.doc_id == doc_id) {
        bob_doc
            .apply_changes(
                d.changes
                    .iter()
                    .map(|b| automerge::Change::from_bytes(b.to_vec()).unwrap()),
            )
            .unwrap();
    }
    bob_doc.set_author(Some(Author::from(f.bob_staff.staff_id.as_bytes().to_vec())));
    let base = bob_doc.get_heads();
    bob_doc.put(ROOT, "dob", "1940-01-01").unwrap();
    bob_doc.commit_with(CommitOptions::default().with_time(1_000));
    let r = f
        .sync(
            &f.bob,
            Seq(0),
            vec![push_since(
                &mut bob_doc,
                doc_id,
                case_id,
                DocKind::Case,
                &base,
            )],
        )
        .await;
    assert_eq!(r.acks.len(), 1, "{:?}", r.rejections);

    let (status, body) = f.history(&f.alice, doc_id).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let entries: Vec<wire::HistoryEntry> = serde_json::from_slice(&body).unwrap();
    assert_eq!(entries.len(), 3);
    assert!(entries.windows(2).all(|w| w[0].seq < w[1].seq));
    let (future, past) = (&entries[1], &entries[2]);
    assert_eq!(future.device_time_ms, 4_000_000_000_000);
    assert_eq!(past.device_time_ms, 1_000);
    assert_eq!(future.staff_name.as_deref(), Some("Alice"));
    assert_eq!(past.staff_name.as_deref(), Some("Bob"));
    assert_eq!(past.role.as_deref(), Some("nurse"));
    assert_eq!(past.org.as_deref(), Some("Council"));
    assert_eq!(past.device_id, Some(f.device_of(&f.bob)));
    assert!(entries
        .iter()
        .all(|e| e.received_at_ms.is_some() && e.ops > 0));
    assert!(past.received_at_ms >= future.received_at_ms);
    assert!(audit::entries(f.s(), None)
        .unwrap()
        .iter()
        .any(|e| e.kind == audit::AuditKind::Read && e.details["doc_id"] == doc_id.to_string()));
}

#[tokio::test]
async fn the_history_of_a_document_you_may_not_read_is_not_found_like_a_missing_one() {
    let f = Fixture::new();
    let (_, note_id, _) = f.case_with_note().await;
    let (status, body) = f.history(&f.carol, note_id).await;
    let (missing_status, missing_body) = f.history(&f.carol, DocId::new_random()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), ErrorCode::NotFound);
    // The same answer but for the request id, which is new for every request.
    let without_id = |b: &[u8]| {
        let mut e: casenote_protocol::ErrorBody = serde_json::from_slice(b).unwrap();
        assert!(e.request_id.take().is_some());
        e
    };
    assert_eq!(
        (status, without_id(&body)),
        (missing_status, without_id(&missing_body))
    );
    let (status, _) = f.history(&f.carol, note_id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, body) = f
        .send(
            Request::get(format!("/v1/history/{note_id}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized)
    );
}

#[test]
fn the_export_of_a_demo_person_holds_every_note_every_amendment_and_every_original() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::sled::open(dir.path()).unwrap();
    let demo = crate::cli::demo::load(&*store, 1_700_000_000_000).unwrap();
    let out = tempfile::tempdir().unwrap();
    for case in &demo.cases {
        let target = out.path().join(&case.label);
        let done = crate::export::case(&*store, By::Cli, case.case_id, &target, 1_700_000_001_000)
            .unwrap();
        assert!(done.to_string().contains("record.html"));
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(target.join("record.json")).unwrap()).unwrap();
        let html = std::fs::read_to_string(target.join("record.html")).unwrap();
        assert!(html.contains("includes restricted"));
        let notes = json["notes"].as_array().unwrap();
        let note_ids: HashSet<String> = notes
            .iter()
            .map(|n| n["note_id"].as_str().unwrap().to_string())
            .collect();
        let mut all_docs = 0;
        for id in store::read(&*store, |t| t.docs_of_case(case.case_id)).unwrap() {
            let rec = store::read(&*store, |t| t.doc(id)).unwrap().unwrap();
            all_docs += 1;
            if rec.header.kind == DocKind::Note {
                assert!(note_ids.contains(&id.to_string()), "note {id} is missing");
                assert!(html.contains(&id.to_string()));
            }
            assert!(json.to_string().contains(&id.to_string()));
        }
        assert_eq!(json["documents"].as_array().unwrap().len(), all_docs);
        for n in notes {
            assert!(n["occurred_at_ms"].is_i64() && n["filed_at_ms"].is_i64());
            assert!(n["first_received_at_ms"].is_i64());
            if let Some(original) = n["amends"]["note_id"].as_str() {
                assert!(
                    note_ids.contains(original),
                    "the original {original} is missing"
                );
                let orig = notes.iter().find(|m| m["note_id"] == original).unwrap();
                assert_eq!(orig["amended_by"][0]["note_id"], n["note_id"]);
            }
        }
        for d in json["documents"].as_array().unwrap() {
            for h in d["history"].as_array().unwrap() {
                assert!(h["staff_name"].is_string() && h["received_at_ms"].is_i64());
            }
        }
        if case.label == "Peggy" {
            assert!(notes.iter().any(|n| n["amends"]["kind"] == "correction"));
        }
        if case.label == "Daniel" {
            assert!(json["documents"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["kind"] == "restricted"));
            assert!(html.contains("Safeguarding"));
        }
    }
    assert!(audit::entries(&*store, None)
        .unwrap()
        .iter()
        .any(|e| e.kind == audit::AuditKind::Export));
    assert!(crate::export::escape("<b>&\"'").starts_with("&lt;b&gt;&amp;"));
}

#[tokio::test]
async fn every_error_carries_the_request_id_of_its_response_and_keeps_code_and_message() {
    let f = Fixture::new();
    let ask = |id: Option<&str>| {
        let mut req = Request::get("/v1/whoami").header(header::AUTHORIZATION, "Bearer cn_0");
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        f.app.clone().oneshot(req.body(Body::empty()).unwrap())
    };
    let given = uuid::Uuid::new_v4().to_string();
    for (sent, kept) in [
        (None, false),
        (Some(given.as_str()), true),
        (Some("a name"), false),
    ] {
        let resp = ask(sent).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let header = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        assert!(header.parse::<uuid::Uuid>().is_ok(), "{header}");
        assert_eq!(kept, header == given, "{sent:?} -> {header}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let parsed: casenote_protocol::ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed.code, ErrorCode::Unauthorized);
        assert!(!parsed.message.is_empty());
        assert_eq!(parsed.request_id.as_deref(), Some(header.as_str()));
        // A client that knows only {code, message} still reads it.
        let old: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(old["code"], "unauthorized");
    }
    let (status, _, body) = f
        .send(Request::get("/v1/nothing").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let parsed: casenote_protocol::ErrorBody = serde_json::from_slice(&body).unwrap();
    assert!(parsed
        .request_id
        .is_some_and(|id| id.parse::<uuid::Uuid>().is_ok()));
}

/// A sync authenticates its device, then reads the access epoch: an access change landing between
/// the two must not be reconciled with the permissions read before it (the device would keep what
/// it may no longer read, with its state marked reconciled at the new epoch, until the next change).
#[tokio::test]
async fn an_access_change_between_authentication_and_the_sync_is_reconciled_with_the_new_permissions(
) {
    let f = Fixture::new();
    let (case_id, note, _) = f.case_with_note().await;
    let south = f.team("South");
    admin::case_add_team(f.s(), By::Cli, case_id, south, 1).unwrap();
    let (docs, _, cursor) = f.sync_all(&f.carol, Seq(0)).await;
    assert_eq!(ids(&docs), [DocId(case_id.0), note].into());

    // Carol's request is authenticated; then she leaves South before her sync reads the epoch.
    let authenticated = testkit::principal(f.s(), &f.carol);
    admin::staff_remove_team(f.s(), By::Cli, f.carol_staff.staff_id, south, 2).unwrap();
    let confirmed = f.confirms.lock().unwrap().get(&f.carol).copied();
    let req = SyncRequest {
        confirmed_reconcile: confirmed,
        log_id: Some(f.log_id()),
        ..request(cursor, vec![])
    };
    let rules = crate::validate::Rules::default();
    let (r, _) = crate::sync::handle(f.s(), &authenticated, req, 3, &rules).unwrap();
    let mut evicted: std::collections::BTreeSet<DocId> = r.evictions.iter().copied().collect();
    if let Some(id) = r.reconcile_id {
        f.confirms.lock().unwrap().insert(f.carol.clone(), id);
    }
    // Whatever that sync said, the device's next one must leave it holding nothing of the case.
    let next = f.sync(&f.carol, r.cursor, vec![]).await;
    evicted.extend(next.evictions.iter().copied());
    assert_eq!(evicted, [DocId(case_id.0), note].into());
}

impl Fixture {
    async fn break_glass(&self, token: Option<&str>, body: &str) -> (StatusCode, ErrorBody) {
        let mut req =
            Request::post("/v1/break-glass").header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let (status, _, bytes) = self
            .send(req.body(Body::from(body.to_string())).unwrap())
            .await;
        let err: ErrorBody = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{status}: {}", String::from_utf8_lossy(&bytes)));
        (status, err)
    }
}

#[tokio::test]
async fn break_glass_refuses_no_token_a_malformed_body_an_unknown_category_a_bad_reason_and_an_unknown_section(
) {
    let f = Fixture::new();
    let doc = DocId::new_random();
    let body = |category: &str, reason: &str| {
        serde_json::json!({"doc_id": doc, "category": category, "reason": reason}).to_string()
    };
    let (status, err) = f.break_glass(None, &body("risk_to_life", "why")).await;
    assert_eq!(
        (status, err.code),
        (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized)
    );
    let (status, err) = f.break_glass(Some(&f.carol), "{not json").await;
    assert_eq!(
        (status, err.code),
        (StatusCode::BAD_REQUEST, ErrorCode::MalformedBody)
    );
    let (status, err) = f.break_glass(Some(&f.carol), &body("boredom", "why")).await;
    assert_eq!(
        (status, err.code),
        (StatusCode::BAD_REQUEST, ErrorCode::MalformedBody)
    );
    let (status, err) = f
        .break_glass(Some(&f.carol), &body("risk_to_life", "  "))
        .await;
    assert_eq!(
        (status, err.code),
        (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidRequest)
    );
    // A section that does not exist is answered as one that is hidden or not the bearer's.
    let (status, err) = f
        .break_glass(Some(&f.carol), &body("risk_to_life", "why"))
        .await;
    assert_eq!(
        (status, err.code),
        (StatusCode::FORBIDDEN, ErrorCode::Forbidden)
    );
    assert!(
        err.message.contains("not a sealed section"),
        "{}",
        err.message
    );
}
