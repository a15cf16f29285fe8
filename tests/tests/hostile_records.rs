//! One enrolled device against the record: changes crafted with automerge directly, past
//! client-core's checks, under the device's own (valid) token. None of them may take the server
//! down, and none may make the record say something untrue: deep nesting, marks on a filed note,
//! an author block or an alert that names someone else, a colleague's draft, a backdated filing,
//! text the device chose echoed into the audit log, a refusal that tells whether a document
//! exists, more actors than a document may hold, and a change whose columns claim 2^40
//! operations (over `POST /v1/sync` and, as a web client, over `GET /v1/repo`).

mod common;
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ReadDoc, ROOT};
use casenote_protocol::wire::{self, DocPull, DocPush};
use casenote_protocol::{CaseId, DocId, DocKind, ErrorCode, Seq, StaffId};
use common::craft::{craft, load, push_of};
use common::*;
use serde_json::Value;

/// A demo borough with a server, and Priya's case with one draft note, as her device made them.
struct Scene {
    tmp: tempfile::TempDir,
    server: Server,
    staff: Vec<Staff>,
    case: CaseId,
    note: DocId,
}

impl Scene {
    fn new() -> Scene {
        let (tmp, data, staff) = demo_borough();
        let server = Server::start(&data);
        let priya = Cli::login(
            tmp.path().join("priya"),
            &server,
            &token_of(&staff, "Priya Shah"),
        );
        let case = priya.ok(&["case", "new", "--name", "Hostile Person"]);
        let note = priya.ok(&["note", "add", &case, "--text", "Seen at home."]);
        priya.sync();
        Scene {
            tmp,
            server,
            staff,
            case: case.parse().unwrap(),
            note: note.parse().unwrap(),
        }
    }

    fn token(&self, name: &str) -> String {
        token_of(&self.staff, name)
    }

    fn staff_id(&self, name: &str) -> StaffId {
        let cli = device(
            &self.tmp,
            &self.server,
            &self.staff,
            &format!("who-{}", name.replace(' ', "-")),
            name,
        );
        cli.json(&["whoami", "--json"])["staff_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// The document `doc` as `name` pulls it, and the cursor after the pull.
    fn pulled(&self, name: &str, doc: DocId) -> (DocPull, Seq) {
        let (pulled, _, cursor) = raw::pull_all(&self.server.url, &self.token(name), Seq(0));
        let pull = pulled
            .into_iter()
            .find(|p| p.doc_id == doc)
            .expect("the document is readable");
        (pull, cursor)
    }

    /// `name` edits `doc` with `edit` and pushes the result; returns the server's answer for it.
    fn crafted_edit(
        &self,
        name: &str,
        doc: DocId,
        edit: impl FnOnce(&mut AutoCommit),
    ) -> Result<wire::DocAck, wire::Rejection> {
        let (pull, cursor) = self.pulled(name, doc);
        let mut am = load(&pull);
        let base = am.get_heads();
        let changes = craft(&mut am, self.staff_id(name), edit);
        let push = push_of(doc, pull.case_id, pull.kind, &base, &changes);
        answer(raw::sync(
            &self.server.url,
            &self.token(name),
            cursor,
            vec![push],
        ))
    }

    /// `name` pushes a new note on the case, written by `write` on an empty document.
    fn crafted_new_note(
        &self,
        name: &str,
        write: impl FnOnce(&mut AutoCommit),
    ) -> Result<wire::DocAck, wire::Rejection> {
        let mut am = AutoCommit::new();
        let changes = craft(&mut am, self.staff_id(name), write);
        let push = push_of(DocId::new_random(), self.case, DocKind::Note, &[], &changes);
        answer(raw::sync(
            &self.server.url,
            &self.token(name),
            Seq(0),
            vec![push],
        ))
    }

    /// The server still answers an ordinary authenticated request.
    fn assert_serving(&self) {
        let r = ureq::get(&format!("{}/v1/whoami", self.server.url))
            .set(
                "authorization",
                &format!("Bearer {}", self.token("Mark Ellison")),
            )
            .call();
        assert!(r.is_ok(), "the server no longer serves: {r:?}");
    }
}

fn answer(
    r: Result<wire::SyncResponse, (u16, casenote_protocol::ErrorBody)>,
) -> Result<wire::DocAck, wire::Rejection> {
    let r = r.unwrap_or_else(|(code, body)| panic!("HTTP {code}: {body:?}"));
    if let Some(rej) = r.rejections.into_iter().next() {
        return Err(rej);
    }
    Ok(r.acks.into_iter().next().expect("an ack or a rejection"))
}

fn refused(r: Result<wire::DocAck, wire::Rejection>, what: &str) -> wire::Rejection {
    match r {
        Ok(ack) => panic!("{what} was accepted: {ack:?}"),
        Err(rej) => rej,
    }
}

/// A note's skeleton as the record API writes it, authored by `staff`.
fn note_skeleton(doc: &mut AutoCommit, case: CaseId, staff: StaffId, occurred: i64) {
    casenote_protocol::record::init_note(
        doc,
        &casenote_protocol::record::NewNote {
            case_id: case,
            kind: casenote_protocol::record::NoteKind::Visit,
            author: casenote_protocol::record::NoteAuthor {
                staff_id: staff.to_string(),
                role: "social_worker".into(),
                org: "Castlebridge Council".into(),
                team: "Locality Team North".into(),
            },
            occurred_at_ms: occurred,
            recorded_at_ms: occurred,
            text: "Crafted.".into(),
            amends: None,
            late_entry_reason: None,
        },
    )
    .unwrap();
}

fn nest_maps(doc: &mut AutoCommit, depth: usize) {
    let mut obj = doc.put_object(ROOT, "nested", ObjType::Map).unwrap();
    for _ in 1..depth {
        obj = doc.put_object(&obj, "m", ObjType::Map).unwrap();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn maps_nested_500_deep_under_a_draft_are_refused_and_the_server_keeps_serving() {
    let s = Scene::new();
    let rej = refused(
        s.crafted_edit("Priya Shah", s.note, |d| nest_maps(d, 500)),
        "a 500-deep nesting",
    );
    assert_eq!(rej.code, ErrorCode::RuleViolation, "{rej:?}");
    s.assert_serving();
}

#[test]
fn a_new_note_nesting_100000_maps_is_refused_and_colleagues_keep_working() {
    let s = Scene::new();
    let priya = s.staff_id("Priya Shah");
    let case = s.case;
    let rej = refused(
        s.crafted_new_note("Priya Shah", |d| {
            note_skeleton(d, case, priya, now_ms());
            nest_maps(d, 100_000);
        }),
        "a 100,000-deep new note",
    );
    assert_eq!(rej.code, ErrorCode::RuleViolation, "{rej:?}");
    s.assert_serving();
    // A colleague on the case reads it, and edits the plan, as usual.
    let mark = device(&s.tmp, &s.server, &s.staff, "mark", "Mark Ellison");
    mark.sync();
    let shown = mark.show(&s.case.to_string());
    assert_eq!(shown["notes"].as_array().unwrap().len(), 1);
    mark.ok(&["conflicts", &s.case.to_string()]);
    mark.ok(&[
        "plan",
        "append",
        &s.case.to_string(),
        "--text",
        "Still here.",
    ]);
    mark.sync();
    s.assert_serving();
}

#[test]
fn many_objects_in_one_document_are_refused() {
    let s = Scene::new();
    let rej = refused(
        s.crafted_edit("Priya Shah", s.note, |d| {
            let wide = d.put_object(ROOT, "wide", ObjType::Map).unwrap();
            for i in 0..casenote_protocol::limits::DOC_OBJECTS_MAX + 1 {
                d.put_object(&wide, i.to_string(), ObjType::Map).unwrap();
            }
        }),
        "a document with more objects than the limit",
    );
    assert_eq!(rej.code, ErrorCode::RuleViolation, "{rej:?}");
    s.assert_serving();
}

#[test]
fn a_filed_note_gains_nothing_not_even_a_mark() {
    let s = Scene::new();
    let priya = Cli::login(
        s.tmp.path().join("priya2"),
        &s.server,
        &s.token("Priya Shah"),
    );
    priya.sync();
    priya.ok(&["note", "file", &s.note.to_string()]);
    priya.sync();
    for (what, mark) in [
        ("comment", "RETRACTED"),
        ("link", "https://example.invalid/"),
    ] {
        let rej = refused(
            s.crafted_edit("Mark Ellison", s.note, |d| {
                let text = match d.get(ROOT, "text").unwrap().unwrap() {
                    (automerge::Value::Object(ObjType::Text), id) => id,
                    other => panic!("no text: {other:?}"),
                };
                d.mark(
                    &text,
                    automerge::marks::Mark::new(what.into(), mark, 0, 4),
                    automerge::marks::ExpandMark::None,
                )
                .unwrap();
            }),
            "a mark on a filed note",
        );
        assert_eq!(rej.code, ErrorCode::RuleViolation, "{what}: {rej:?}");
    }
    // The author's own mark is refused just the same.
    let rej = refused(
        s.crafted_edit("Priya Shah", s.note, |d| {
            let text = match d.get(ROOT, "text").unwrap().unwrap() {
                (automerge::Value::Object(ObjType::Text), id) => id,
                other => panic!("no text: {other:?}"),
            };
            d.mark(
                &text,
                automerge::marks::Mark::new("bold".into(), true, 0, 4),
                automerge::marks::ExpandMark::None,
            )
            .unwrap();
        }),
        "the author's mark on her filed note",
    );
    assert_eq!(rej.code, ErrorCode::RuleViolation, "{rej:?}");
}

#[test]
fn a_note_author_block_must_be_the_writers_own() {
    let s = Scene::new();
    let priya = s.staff_id("Priya Shah");
    let case = s.case;
    let rej = refused(
        s.crafted_new_note("Priya Shah", |d| {
            note_skeleton(d, case, priya, now_ms());
            let author = match d.get(ROOT, "author").unwrap().unwrap() {
                (automerge::Value::Object(ObjType::Map), id) => id,
                other => panic!("no author: {other:?}"),
            };
            d.put(&author, "role", "psychiatrist").unwrap();
            d.put(&author, "team", "Community Mental Health Team")
                .unwrap();
        }),
        "a social worker's note claiming to be a psychiatrist's",
    );
    assert_eq!(rej.code, ErrorCode::RuleViolation, "{rej:?}");
    // The same note with her true role, org and team is accepted.
    let ok = s.crafted_new_note("Priya Shah", |d| note_skeleton(d, case, priya, now_ms()));
    assert!(ok.is_ok(), "an honest note was refused: {ok:?}");
}

#[test]
fn an_alert_raised_in_someone_elses_name_is_refused() {
    let s = Scene::new();
    let helen = s.staff_id("Dr Helen Marsh");
    let rej = refused(
        s.crafted_edit("Priya Shah", DocId(s.case.0), |d| {
            let alerts = match d.get(ROOT, "alerts").unwrap().unwrap() {
                (automerge::Value::Object(ObjType::Map), id) => id,
                other => panic!("no alerts: {other:?}"),
            };
            let a = d
                .put_object(&alerts, uuid::Uuid::new_v4().to_string(), ObjType::Map)
                .unwrap();
            d.put(&a, "text", "Visit in pairs").unwrap();
            d.put(&a, "status", "active").unwrap();
            d.put(&a, "raised_by", helen.to_string()).unwrap();
        }),
        "an alert raised in Dr Marsh's name by Priya",
    );
    assert_eq!(rej.code, ErrorCode::RuleViolation, "{rej:?}");
}

#[test]
fn a_colleagues_draft_can_be_neither_edited_nor_filed() {
    let s = Scene::new();
    let rej = refused(
        s.crafted_edit("Mark Ellison", s.note, |d| {
            let text = match d.get(ROOT, "text").unwrap().unwrap() {
                (automerge::Value::Object(ObjType::Text), id) => id,
                other => panic!("no text: {other:?}"),
            };
            d.splice_text(&text, 0, 4, "NOT seen").unwrap();
        }),
        "Mark rewriting Priya's draft",
    );
    assert_eq!(rej.code, ErrorCode::RuleViolation, "{rej:?}");
    let rej = refused(
        s.crafted_edit("Mark Ellison", s.note, |d| {
            d.put(ROOT, "status", "filed").unwrap();
            d.put(ROOT, "filed_at_ms", now_ms()).unwrap();
        }),
        "Mark filing Priya's draft",
    );
    assert_eq!(rej.code, ErrorCode::RuleViolation, "{rej:?}");
}

#[test]
fn lateness_is_judged_by_when_the_server_received_the_filing() {
    let s = Scene::new();
    let priya = s.staff_id("Priya Shah");
    let case = s.case;
    let ten_days_ago = now_ms() - 10 * 24 * 3_600_000;
    let rej = refused(
        s.crafted_new_note("Priya Shah", |d| {
            note_skeleton(d, case, priya, ten_days_ago);
            d.put(ROOT, "status", "filed").unwrap();
            d.put(ROOT, "filed_at_ms", ten_days_ago + 3_600_000)
                .unwrap();
        }),
        "a note that happened ten days ago, 'filed' an hour later, with no reason",
    );
    assert_eq!(rej.code, ErrorCode::RuleViolation, "{rej:?}");
    assert!(rej.reason.contains("late-entry"), "{rej:?}");
}

#[test]
fn text_a_device_chose_reaches_neither_the_answer_nor_the_audit_log_nor_quarantine() {
    let s = Scene::new();
    let chosen = "Peggy Doyle 9990000018";
    let plan = {
        let (pulled, _, _) = raw::pull_all(&s.server.url, &s.token("Priya Shah"), Seq(0));
        pulled
            .into_iter()
            .find(|p| p.kind == DocKind::Plan && p.case_id == s.case)
            .unwrap()
            .doc_id
    };
    let rej = refused(
        s.crafted_edit("Priya Shah", plan, |d| {
            let actions = match d.get(ROOT, "actions").unwrap().unwrap() {
                (automerge::Value::Object(ObjType::Map), id) => id,
                other => panic!("no actions: {other:?}"),
            };
            let a = d.put_object(&actions, chosen, ObjType::Map).unwrap();
            d.put(&a, chosen, 42).unwrap();
        }),
        "an action keyed and named by the device",
    );
    assert_eq!(rej.code, ErrorCode::RuleViolation);
    assert!(
        !rej.reason.contains(chosen),
        "the answer echoes: {}",
        rej.reason
    );
    let data = s.server.data.clone();
    drop(s.server);
    let audit = serde_json::to_string(&audit_entries(&data)).unwrap();
    assert!(
        !audit.contains(chosen),
        "the audit log echoes the device's text"
    );
    let quarantine = admin(&data, &["quarantine", "list", "--json"]);
    let list: Value = serde_json::from_str(&quarantine).unwrap();
    assert!(
        !list.as_array().unwrap().is_empty(),
        "nothing was quarantined"
    );
    assert!(
        !quarantine.contains(chosen),
        "quarantine list echoes: {quarantine}"
    );
}

#[test]
fn an_empty_push_answers_the_same_whether_or_not_the_document_exists() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    // Daniel's safeguarding section: only the mental health team may read it; Priya's team is on
    // his case.
    let (helen_docs, _, _) =
        raw::pull_all(&server.url, &token_of(&staff, "Dr Helen Marsh"), Seq(0));
    let restricted = helen_docs
        .iter()
        .find(|p| p.kind == DocKind::Restricted)
        .expect("the demo's safeguarding section");
    let priya = token_of(&staff, "Priya Shah");
    let empty = |doc: DocId| DocPush {
        doc_id: doc,
        case_id: restricted.case_id,
        kind: DocKind::Restricted,
        base: vec![],
        changes: vec![],
    };
    let existing = raw::sync(&server.url, &priya, Seq(0), vec![empty(restricted.doc_id)]).unwrap();
    let missing = raw::sync(
        &server.url,
        &priya,
        Seq(0),
        vec![empty(DocId::new_random())],
    )
    .unwrap();
    let shape = |r: &wire::SyncResponse| {
        (
            r.acks.len(),
            r.rejections.iter().map(|x| x.code).collect::<Vec<_>>(),
            r.need_full_history.len(),
        )
    };
    assert_eq!(
        shape(&existing),
        shape(&missing),
        "an existing restricted document and a missing one are told apart"
    );
    drop(tmp);
}

/// A change automerge never writes, rewritten op by op: a deletion in the draft's text whose
/// predecessor is another character's insert. The server took it before, and a copy of the
/// note saved after it could not be loaded again (a device keeps its documents as saved
/// snapshots, so the note would have stopped opening on every device that compacted it).
#[test]
fn a_change_whose_predecessor_is_on_another_element_is_refused_and_the_note_still_opens() {
    let s = Scene::new();
    let r = s.crafted_edit("Priya Shah", s.note, |d| {
        let text = match d.get(ROOT, "text").unwrap().unwrap() {
            (automerge::Value::Object(ObjType::Text), id) => id,
            other => panic!("no text: {other:?}"),
        };
        d.splice_text(&text, 3, 1, "").unwrap();
    });
    assert!(r.is_ok(), "the honest deletion is taken: {r:?}");
    let (pull, cursor) = s.pulled("Priya Shah", s.note);
    let mut am = load(&pull);
    let base = am.get_heads();
    let honest = craft(&mut am, s.staff_id("Priya Shah"), |d| {
        let text = match d.get(ROOT, "text").unwrap().unwrap() {
            (automerge::Value::Object(ObjType::Text), id) => id,
            other => panic!("no text: {other:?}"),
        };
        d.splice_text(&text, 3, 1, "").unwrap();
    });
    assert_eq!(honest.len(), 1);
    // The deletion's predecessor, the insert of the text's fourth character, becomes the insert
    // of its first (the note's text was written in one splice: consecutive op counters).
    let mut expanded = honest[0].decode();
    expanded.hash = None;
    let op = &mut expanded.operations[0];
    let own = op
        .pred
        .iter()
        .next()
        .expect("a deletion names its predecessor")
        .clone();
    op.pred = vec![automerge::legacy::OpId(own.0 - 3, own.1.clone())].into();
    let crafted = automerge::Change::from(expanded);
    let push = push_of(s.note, pull.case_id, pull.kind, &base, &[crafted]);
    let rej = refused(
        answer(raw::sync(
            &s.server.url,
            &s.token("Priya Shah"),
            cursor,
            vec![push],
        )),
        "a deletion whose predecessor is another character",
    );
    assert_eq!(rej.code, ErrorCode::RuleViolation, "{rej:?}");
    // The note is as it was, and its saved copy loads.
    let (after, _) = s.pulled("Priya Shah", s.note);
    assert_eq!(
        after.changes.len(),
        pull.changes.len(),
        "nothing was stored"
    );
    let saved = load(&after).save();
    AutoCommit::load(&saved).expect("the note's saved copy loads");
    s.assert_serving();
}

/// The id of the note's text object.
fn text_of(d: &AutoCommit) -> automerge::ObjId {
    match d.get(ROOT, "text").unwrap().unwrap() {
        (automerge::Value::Object(ObjType::Text), id) => id,
        other => panic!("no text: {other:?}"),
    }
}

#[test]
fn a_document_takes_no_more_than_its_limit_of_actors() {
    use casenote_protocol::limits::DOC_ACTORS_MAX;
    let s = Scene::new();
    let priya = s.staff_id("Priya Shah");
    // `count` changes, each by a new actor as a device can write them (the author on each),
    // each typing one character; the server's answer, what the note held before, and the
    // document as the device left it (its actor: the last new one).
    let push = |count: usize, new_actors: bool, am: Option<AutoCommit>| {
        let (pull, cursor) = s.pulled("Priya Shah", s.note);
        let mut am = am.unwrap_or_else(|| load(&pull));
        let base = am.get_heads();
        let mut changes = Vec::new();
        for _ in 0..count {
            let type_x = |d: &mut AutoCommit| d.splice_text(text_of(d), 0, 0, "x").unwrap();
            if new_actors {
                changes.extend(craft(&mut am, priya, type_x));
            } else {
                type_x(&mut am);
                am.commit();
                changes.extend(am.get_changes(&base));
            }
        }
        let push = push_of(s.note, pull.case_id, pull.kind, &base, &changes);
        let r = answer(raw::sync(
            &s.server.url,
            &s.token("Priya Shah"),
            cursor,
            vec![push],
        ));
        (r, pull.changes.len(), am)
    };
    let stored = || s.pulled("Priya Shah", s.note).0.changes.len();
    let max = DOC_ACTORS_MAX as usize;
    // The note holds one actor (Priya's device); 3,000 more (one push holds at most 4,000).
    let (r, _, _) = push(3_000, true, None);
    assert!(r.is_ok(), "3,001 actors are taken: {r:?}");
    // One more than the limit: refused, and nothing of the push is stored.
    let (r, held, _) = push(max - 3_000, true, None);
    let rej = refused(r, "a push bringing the note past its limit of actors");
    assert_eq!(rej.code, ErrorCode::RuleViolation, "{rej:?}");
    assert!(rej.reason.contains("actors"), "{rej:?}");
    assert_eq!(stored(), held, "nothing was stored");
    // Up to the limit exactly: taken.
    let (r, _, am) = push(max - 3_001, true, None);
    assert!(r.is_ok(), "a push up to the limit is taken: {r:?}");
    // One more actor, in a push of its own: refused.
    let (r, held, _) = push(1, true, None);
    refused(r, "the first actor past the limit");
    assert_eq!(stored(), held, "nothing was stored");
    // The actors the note holds still write to it.
    let (r, _, _) = push(1, false, Some(am));
    assert!(r.is_ok(), "an actor the note holds still writes: {r:?}");
    s.assert_serving();
}

/// A web client's session on `GET /v1/repo` (automerge-repo's protocol, CBOR maps), joined.
struct RepoClient(tungstenite::WebSocket<std::net::TcpStream>);

impl RepoClient {
    fn join(server: &Server, token: &str) -> RepoClient {
        let addr = server.addr();
        let stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(120)))
            .unwrap();
        let url = format!("ws://{addr}/v1/repo?token={token}");
        let mut c = RepoClient(tungstenite::client(url, stream).expect("the upgrade").0);
        c.send(vec![
            ("type", cbor_text("join")),
            ("senderId", cbor_text("hostile-web")),
            ("peerMetadata", ciborium::Value::Map(Vec::new())),
            (
                "supportedProtocolVersions",
                ciborium::Value::Array(vec![cbor_text("1")]),
            ),
        ]);
        assert_eq!(c.next_type(), "peer");
        c
    }

    fn send(&mut self, fields: Vec<(&str, ciborium::Value)>) {
        let map = fields.into_iter().map(|(k, v)| (cbor_text(k), v)).collect();
        let mut bytes = Vec::new();
        ciborium::into_writer(&ciborium::Value::Map(map), &mut bytes).unwrap();
        self.0
            .send(tungstenite::Message::Binary(bytes.into()))
            .unwrap();
    }

    /// Sends an Automerge sync message about `doc`.
    fn sync(&mut self, doc: DocId, msg: automerge::sync::Message) {
        let id = bs58::encode(doc.0.as_bytes()).with_check().into_string();
        self.send(vec![
            ("type", cbor_text("sync")),
            ("senderId", cbor_text("hostile-web")),
            ("targetId", cbor_text("casenote-server")),
            ("documentId", cbor_text(&id)),
            ("data", ciborium::Value::Bytes(msg.encode())),
        ]);
    }

    /// The type of the next message from the server.
    fn next_type(&mut self) -> String {
        loop {
            match self.0.read().expect("an answer from the server") {
                tungstenite::Message::Binary(b) => {
                    let v: ciborium::Value = ciborium::from_reader(&b[..]).unwrap();
                    let ty = v.into_map().unwrap().into_iter().find_map(|(k, v)| {
                        (k.as_text() == Some("type")).then(|| v.into_text().unwrap())
                    });
                    return ty.expect("a typed message");
                }
                tungstenite::Message::Close(f) => panic!("the server closed: {f:?}"),
                _ => {}
            }
        }
    }
}

fn cbor_text(s: &str) -> ciborium::Value {
    ciborium::Value::Text(s.to_string())
}

/// A new note offered over automerge-repo's protocol as one saved document whose 40,000
/// changes each come from a new actor (2.4 MB, within the message limit). Before the session
/// counted actors from the chunks' headers, it loaded the document first (automerge's clocks
/// for 40,000 actors: about 420 MB) and only then refused it; a longer history of new actors
/// in a 4 MB message would have taken gigabytes.
#[test]
fn a_web_message_naming_40000_actors_is_refused_before_automerge_loads_it() {
    let s = Scene::new();
    let priya = s.staff_id("Priya Shah");
    let mut base = AutoCommit::new();
    base.set_author(Some(automerge::Author::from(priya.as_bytes().to_vec())));
    note_skeleton(&mut base, s.case, priya, now_ms());
    base.commit();
    let heads = base.get_heads();
    let mut changes = Vec::new();
    for i in 0..40_000 {
        let mut fork = base.fork();
        changes.extend(craft(&mut fork, priya, |d| {
            d.put(ROOT, "seen", i as i64).unwrap();
        }));
    }
    let mut doc = base.clone();
    doc.apply_changes(changes).unwrap();
    assert_eq!(doc.get_changes(&heads).len(), 40_000);
    let msg = automerge::sync::Message {
        heads: Vec::new(),
        need: Vec::new(),
        have: Vec::new(),
        changes: vec![doc.save()].into(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    };
    drop(doc);
    let note = DocId::new_random();
    let before = s.server.peak_rss_mb();
    let mut web = RepoClient::join(&s.server, &s.token("Priya Shah"));
    web.sync(note, msg);
    assert_eq!(web.next_type(), "doc-unavailable");
    let grew = s.server.peak_rss_mb() - before;
    eprintln!("the server's peak memory grew by {grew:.1} MB");
    assert!(
        grew < 100.0,
        "the server's peak memory grew by {grew:.0} MB for one refused message"
    );
    let (pulled, _, _) = raw::pull_all(&s.server.url, &s.token("Priya Shah"), Seq(0));
    assert!(
        pulled.iter().all(|p| p.doc_id != note),
        "the note was stored"
    );
    s.assert_serving();
}

/// A change whose columns are each one run of 2^40 rows: 140 bytes that automerge 0.12 parses by
/// visiting every operation (a million take 121 ms; these, about a day and a half of a core).
/// Before the server read the runs' lengths first, the request was never answered and a
/// core stayed busy; now the document is refused at once.
#[test]
fn a_change_claiming_2_40_operations_is_refused_before_automerge_reads_it() {
    let s = Scene::new();
    let (pull, cursor) = s.pulled("Priya Shah", s.note);
    let bomb = casenote_protocol::chunk::testing::run_of_inserts(1 << 40, [7; 32]);
    assert!(bomb.len() < 160);
    let push = DocPush {
        doc_id: s.note,
        case_id: pull.case_id,
        kind: pull.kind,
        base: wire::to_wire_heads(&load(&pull).get_heads()),
        changes: vec![serde_bytes::ByteBuf::from(bomb)],
    };
    let (url, token) = (s.server.url.clone(), s.token("Priya Shah"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(raw::sync(&url, &token, cursor, vec![push]));
    });
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the server answers within 30 s");
    let rej = refused(answer(r), "a change claiming 2^40 operations");
    assert_eq!(rej.code, ErrorCode::MalformedChange, "{rej:?}");
    let (after, _) = s.pulled("Priya Shah", s.note);
    assert_eq!(
        after.changes.len(),
        pull.changes.len(),
        "nothing was stored"
    );
    s.assert_serving();
}

/// The same change, offered by a web client over `GET /v1/repo`: refused at once, where before
/// the session handed it to automerge (the connection's task never answered).
#[test]
fn a_web_message_claiming_2_40_operations_is_refused_before_automerge_reads_it() {
    let s = Scene::new();
    let bomb = casenote_protocol::chunk::testing::run_of_inserts(1 << 40, [7; 32]);
    let msg = automerge::sync::Message {
        heads: Vec::new(),
        need: Vec::new(),
        have: Vec::new(),
        changes: vec![bomb].into(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    };
    let mut web = RepoClient::join(&s.server, &s.token("Priya Shah"));
    web.0
        .get_ref()
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    web.sync(DocId::new_random(), msg);
    assert_eq!(web.next_type(), "doc-unavailable");
    s.assert_serving();
}
