//! Router-level tests: every endpoint and every rejection, driven through `Router::oneshot` over a
//! real sled store in a temporary directory.

use crate::auth;
use crate::directory::{self, Staff};
use crate::http::{router, AppState, Config};
use crate::store::{Commit, SledStore, Store};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ROOT};
use axum::body::{Body, Bytes};
use axum::http::{header, Request, StatusCode};
use axum::Router;
use casenote_protocol::record::{self, Identity};
use casenote_protocol::wire::{
    self, DocPush, Hash, SyncRequest, SyncResponse, CBOR_MEDIA_TYPE, PROTOCOL_VERSION,
};
use casenote_protocol::{limits, CaseId, DocId, DocKind, ErrorBody, ErrorCode, Seq};
use http_body_util::BodyExt;
use serde_bytes::ByteBuf;
use std::collections::HashSet;
use std::sync::Arc;
use tower::ServiceExt;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<SledStore>,
    app: Router,
    /// Tokens: Alice and Bob are in North, Carol in South.
    alice: String,
    bob: String,
    carol: String,
    carol_staff: Staff,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path()).unwrap();
        let s: &dyn Store = &*store;
        directory::add_org(s, "Council").unwrap();
        directory::add_team(s, "Council", "North").unwrap();
        directory::add_team(s, "Council", "South").unwrap();
        let alice = directory::add_staff(s, "Alice", "social_worker", "Council", &["North".into()])
            .unwrap();
        let bob = directory::add_staff(s, "Bob", "nurse", "Council", &["North".into()]).unwrap();
        let carol = directory::add_staff(s, "Carol", "gp", "Council", &["South".into()]).unwrap();
        let token = |staff: &Staff| auth::issue(s, staff, "test", 0).unwrap().token;
        Fixture {
            alice: token(&alice),
            bob: token(&bob),
            carol: token(&carol),
            carol_staff: carol,
            app: router(AppState::new(store.clone(), Config::default())),
            store,
            _dir: dir,
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

    async fn sync(&self, token: &str, cursor: Seq, docs: Vec<DocPush>) -> SyncResponse {
        let req = SyncRequest {
            version: PROTOCOL_VERSION,
            cursor,
            device_clock_ms: crate::now_ms(),
            docs,
        };
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

/// A new case document and the push that creates it.
fn new_case(name: &str) -> (CaseId, AutoCommit, DocPush) {
    let case_id = CaseId::new_random();
    let mut doc = AutoCommit::new();
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
    assert_eq!(v, serde_json::json!({"status": "ok"}));
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

    let device = auth::authenticate(&*f.store, &f.alice)
        .unwrap()
        .unwrap()
        .device_id;
    auth::revoke(&*f.store, &device.to_string()).unwrap();
    let (status, body) = f.whoami(Some(&format!("Bearer {}", f.alice))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), ErrorCode::Unauthorized);
}

#[tokio::test]
async fn sync_without_a_token_is_unauthorized() {
    let f = Fixture::new();
    let req = SyncRequest {
        version: PROTOCOL_VERSION,
        cursor: Seq(0),
        device_clock_ms: 0,
        docs: vec![],
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
    let (case_id, mut doc, push) = new_case("Test Person");
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

    let last = f.store.last_seq();
    let again = f.sync(&f.alice, resp.cursor, vec![push]).await;
    assert_eq!(again.acks[0].stored, 0);
    assert_eq!(again.acks[0].duplicates, sent.len() as u32);
    assert_eq!(f.store.last_seq(), last, "a re-send stores nothing");

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
        docs: vec![new_case("X").2],
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

    assert_eq!(f.store.last_seq(), Seq(0), "no bad request stored anything");
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
    let (case_id, mut doc, push) = new_case("Y");
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
            f.store.last_seq(),
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
    let (case_id, mut doc, push) = new_case("Z");
    let created = f.sync(&f.alice, Seq(0), vec![push.clone()]).await;
    let last = f.store.last_seq();

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
    let mut note = AutoCommit::new();
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
    assert_eq!(f.store.last_seq(), last, "nothing was stored");
}

#[tokio::test]
async fn bad_headers_unknown_cases_and_malformed_changes_are_rejected_per_document() {
    let f = Fixture::new();
    let (case_id, _, case_push) = new_case("W");
    let mut note = AutoCommit::new();
    note.put(ROOT, "x", 1).unwrap();
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
    let last = f.store.last_seq();

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
            ..new_case("V").2
        },
        // A new note of a case the server does not know.
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
        (ids[3], ErrorCode::UnknownCase),
        (ids[4], ErrorCode::MalformedChange),
    ];
    codes.sort_by_key(|(d, c)| (*d, c.as_str()));
    expected.sort_by_key(|(d, c)| (*d, c.as_str()));
    assert_eq!(codes, expected);
    assert!(resp.rejections.iter().all(|r| !r.reason.is_empty()));
    assert!(resp.acks.is_empty());
    assert_eq!(f.store.last_seq(), last);
}

#[tokio::test]
async fn a_restricted_document_reaches_only_its_access_list() {
    let f = Fixture::new();
    let (case_id, _, push) = new_case("R");
    f.sync(&f.alice, Seq(0), vec![push]).await;
    // Put South around the person too, so Carol may hold the case but not its restricted part.
    let mut case = f.store.get_case(case_id).unwrap().unwrap();
    case.teams.extend(f.carol_staff.teams.iter().copied());
    f.store
        .write(&mut || {
            Ok(Commit {
                cases: vec![case.clone()],
                ..Commit::default()
            })
        })
        .unwrap();
    let mut sealed = AutoCommit::new();
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
    let (case_id, _, push) = new_case("P");
    f.sync(&f.alice, Seq(0), vec![push]).await;
    // Nine notes of about 700 KB each, sent in three requests: more than one page of pulls.
    let mut sent: HashSet<Hash> = HashSet::new();
    let mut rng = rand::thread_rng();
    for _ in 0..3 {
        let mut docs = Vec::new();
        for _ in 0..3 {
            let mut note = AutoCommit::new();
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

    let mut cursor = Seq(0);
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
    assert_eq!(cursor, f.store.last_seq());
    let unique: HashSet<Hash> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "no change comes twice");
    assert!(sent.is_subset(&unique), "every note change arrived");
    assert_eq!(
        got.len(),
        sent.len() + hashes(&new_case("_").2.changes).len()
    );
}
