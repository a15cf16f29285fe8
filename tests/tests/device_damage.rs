//! A device whose store holds one document it cannot read (its store detected the damage:
//! a record that fails to open, or a snapshot automerge cannot load). Before, every sync of that
//! device failed on it, so nothing else it wrote reached the server and nothing else reached
//! it, for good (and `show` of its case failed). Now the document is skipped and named, what the
//! server sends for it is kept beside it unread, edits made to it before the damage still go up
//! from their outbox list, every other document syncs both ways, and the case shows without it
//! and `status` names it.

mod common;
use casenote_client_core::store::{key, Writes, SNAPSHOT};
use casenote_protocol::DocId;
use casenote_server::store::sled::SledStore;
use casenote_server::store::Store;
use common::*;

/// Two devices of Priya's, laptop and phone, holding a case with two notes, synced.
struct Desk {
    tmp: tempfile::TempDir,
    server: Server,
    laptop: Cli,
    phone: Cli,
    case: String,
    first: String,
    second: String,
}

impl Desk {
    fn new(name: &str) -> Desk {
        let (tmp, data, staff) = demo_borough();
        let server = Server::start(&data);
        let token = token_of(&staff, "Priya Shah");
        let laptop = Cli::login(tmp.path().join("laptop"), &server, &token);
        let phone = Cli::login(tmp.path().join("phone"), &server, &token);
        let case = laptop.ok(&["case", "new", "--name", name]);
        let first = laptop.ok(&["note", "add", &case, "--text", "First note."]);
        let second = laptop.ok(&["note", "add", &case, "--text", "Second note."]);
        laptop.sync();
        phone.sync();
        Desk {
            tmp,
            server,
            laptop,
            phone,
            case,
            first,
            second,
        }
    }

    /// `work` done on the server's store while the server is stopped; then it serves again.
    fn with_server_store(self, work: impl FnOnce(&SledStore)) -> Desk {
        let server = self.server.offline(|data| {
            let store = casenote_server::store::sled::open(data).unwrap();
            work(&store);
            store.flush().unwrap();
        });
        Desk { server, ..self }
    }
}

/// `dev` edits note `note` to `text`.
fn edit(dev: &Cli, note: &str, text: &str) {
    dev.ok(&["note", "edit", note, "--text", text]);
}

/// Asserts that a sync's report names `doc`, and only it, as damaged.
fn names_damaged(report: &serde_json::Value, doc: &str) {
    assert_eq!(report["damaged"], serde_json::json!([doc]), "{report}");
}

#[test]
fn a_document_the_device_cannot_read_is_skipped_and_everything_else_syncs() {
    let Desk {
        tmp: _tmp,
        server: _server,
        laptop,
        phone,
        case,
        first,
        second,
    } = Desk::new("Damaged Person");
    // On the laptop Priya edits the first note, unsynced; then its copy there is damaged:
    // automerge cannot load what the store holds (the edit's own outbox list is intact).
    laptop.ok(&[
        "note",
        "edit",
        &first,
        "--text",
        "First note, edited on the laptop.",
    ]);
    let doc: DocId = first.parse().unwrap();
    {
        let store = laptop.open_store();
        let mut w = Writes::default();
        w.put(key(SNAPSHOT, doc), b"not an automerge document".to_vec());
        store.commit(w).unwrap();
    }
    let status = laptop.json(&["status", "--json"]);
    assert_eq!(status["damaged"], serde_json::json!([first]), "{status}");
    assert_eq!(status["unsynced_docs"], 1, "{status}");
    // Priya amends both drafts on her phone; on the laptop she writes a third note.
    phone.ok(&[
        "note",
        "edit",
        &first,
        "--text",
        "First note, amended on the phone.",
    ]);
    phone.ok(&[
        "note",
        "edit",
        &second,
        "--text",
        "Second note, amended on the phone.",
    ]);
    phone.sync();
    laptop.ok(&[
        "note",
        "add",
        &case,
        "--text",
        "Third note, from the laptop.",
    ]);
    let report = laptop.sync();
    assert_eq!(report["damaged"], serde_json::json!([first]), "{report}");
    // Everything else went both ways; the laptop shows the case without the damaged note, and
    // names it.
    assert_eq!(
        laptop.show(&case)["damaged"],
        serde_json::json!([{ "doc_id": first, "kind": "note" }])
    );
    let texts = laptop.note_texts(&case);
    assert!(
        texts.contains(&"Second note, amended on the phone.".to_string()),
        "{texts:?}"
    );
    phone.sync();
    let texts = phone.note_texts(&case);
    assert!(
        texts.contains(&"Third note, from the laptop.".to_string()),
        "{texts:?}"
    );
    // The edit made before the damage went up from its outbox list, and merged.
    assert!(
        texts
            .iter()
            .any(|t| t.contains("laptop") && t.contains("phone")),
        "{texts:?}"
    );
    // What the server sent for the damaged note is kept on the laptop, unread.
    let held = laptop.decrypted_bytes();
    assert!(
        held.windows(b"on the phone".len())
            .filter(|w| w == b"on the phone")
            .count()
            >= 2,
        "the amendment to the damaged note is kept"
    );
    // The next sync goes through too, and names it again (its outbox mark stays: the device
    // cannot read whether the server's heads cover it).
    let report = laptop.sync();
    assert_eq!(report["damaged"], serde_json::json!([first]), "{report}");
}

/// The server's copy of a document that no longer loads as its record says (here its record
/// names a head its log does not hold: the two were damaged apart). Before, every sync of a
/// device with an edit to it failed (500), so nothing else it wrote reached the server. Now that
/// document alone is refused, `internal`, and the device keeps its edit and sends it again next
/// sync, while everything else syncs.
#[test]
fn a_document_the_server_cannot_load_is_refused_alone_and_the_device_keeps_its_edit() {
    use casenote_server::store;
    let desk = Desk::new("Damaged Server Copy");
    let doc: DocId = desk.first.parse().unwrap();
    let desk = desk.with_server_store(|store| {
        store::write(store, |t| {
            let mut rec = t.doc(doc)?.expect("the note is stored");
            rec.heads = vec![casenote_protocol::wire::Hash([0xda; 32])];
            t.put_doc(&rec)
        })
        .unwrap();
    });
    edit(&desk.laptop, &desk.first, "First note, edited.");
    edit(&desk.laptop, &desk.second, "Second note, edited.");
    let out = desk.laptop.ok(&["sync"]);
    assert!(
        out.contains(&format!("refused: document {} (internal)", desk.first)),
        "{out}"
    );
    for _ in 0..2 {
        let status = desk.laptop.json(&["status", "--json"]);
        assert_eq!(status["unsynced_docs"], 1, "the edit is kept: {status}");
        assert_eq!(status["refused"], serde_json::json!([]), "{status}");
        // Sent again at the next sync, and refused again while the copy stays damaged.
        let again = desk.laptop.ok(&["sync"]);
        assert!(
            again.contains(&format!("refused: document {}", desk.first)),
            "{again}"
        );
    }
    desk.phone.sync();
    let texts = desk.phone.note_texts(&desk.case);
    assert!(
        texts.contains(&"Second note, edited.".to_string()),
        "{texts:?}"
    );
}

/// A change in the server's log that the devices cannot use: here not Automerge at all (damage
/// the server's store did not catch). Before, every device that may read the document failed
/// every sync on it ("the server sent something this device cannot use"), for good. Now the
/// device keeps what it was sent beside the document, names the document damaged, and
/// everything else syncs.
#[test]
fn a_change_from_the_server_the_device_cannot_decode_stops_only_its_document() {
    server_change_the_devices_cannot_use(|_, _| {
        (
            casenote_protocol::wire::Hash([0xdb; 32]),
            b"not an automerge change".to_vec(),
        )
    });
}

/// The same with a change that decodes but that automerge refuses to apply (a deletion whose
/// predecessor is another character's insert: a store written before the vendored automerge's
/// check could hold one).
#[test]
fn a_change_from_the_server_automerge_refuses_stops_only_its_document() {
    use automerge::{transaction::Transactable, ObjType, ReadDoc, ROOT};
    server_change_the_devices_cannot_use(|store, doc| {
        let mut note = casenote_server::validate::materialise(store, doc).unwrap();
        let base = note.get_heads();
        let text = match note.get(ROOT, "text").unwrap().unwrap() {
            (automerge::Value::Object(ObjType::Text), id) => id,
            other => panic!("no text: {other:?}"),
        };
        note.splice_text(&text, 3, 1, "").unwrap();
        note.commit();
        let honest = note.get_changes(&base).pop().unwrap();
        let mut expanded = honest.decode();
        expanded.hash = None;
        let op = &mut expanded.operations[0];
        let own = op.pred.iter().next().unwrap().clone();
        op.pred = vec![automerge::legacy::OpId(own.0 - 3, own.1.clone())].into();
        let crafted = automerge::Change::from(expanded);
        (
            casenote_protocol::wire::Hash(crafted.hash().0),
            crafted.raw_bytes().to_vec(),
        )
    });
}

/// Two devices hold a case with two notes; then the server's log gets a change of the first
/// note that `bad` makes, named a head of it; then the laptop edits the second note.
fn server_change_the_devices_cannot_use(
    bad: impl FnOnce(&SledStore, DocId) -> (casenote_protocol::wire::Hash, Vec<u8>),
) {
    use casenote_server::model::NewChange;
    use casenote_server::store;
    let desk = Desk::new("Bad Change Person");
    let doc: DocId = desk.first.parse().unwrap();
    let desk = desk.with_server_store(|store| {
        let (hash, bytes) = bad(store, doc);
        store::write(store, |t| {
            t.append_change(&NewChange {
                doc_id: doc,
                hash,
                bytes: bytes.clone(),
                received_at_ms: 1,
            })?;
            let mut rec = t.doc(doc)?.expect("the note is stored");
            rec.heads = vec![hash];
            t.put_doc(&rec)
        })
        .unwrap();
    });
    edit(&desk.laptop, &desk.second, "Second note, edited.");
    let synced = desk.laptop.sync();
    names_damaged(&synced, &desk.first);
    // The phone edits the first note before it hears of the bad change: that edit is not lost
    // with the document, it still goes up from its outbox list (and the server, whose own copy
    // does not load, refuses it for that document alone, for the phone to send again).
    edit(&desk.phone, &desk.first, "First note, edited on the phone.");
    let pulled = desk.phone.sync();
    names_damaged(&pulled, &desk.first);
    let again = desk.phone.sync();
    let refused: Vec<_> = again["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["doc_id"].clone(), r["code"].clone()))
        .collect();
    assert_eq!(
        refused,
        vec![(serde_json::json!(desk.first), serde_json::json!("internal"))],
        "the phone's edit went up again: {again}"
    );
    let texts = desk.phone.note_texts(&desk.case);
    assert!(
        texts.contains(&"Second note, edited.".to_string()),
        "{texts:?}"
    );
    // The phone still syncs: the next edit of the laptop reaches it.
    edit(&desk.laptop, &desk.second, "Second note, edited twice.");
    desk.laptop.sync();
    desk.phone.sync();
    assert!(desk
        .phone
        .note_texts(&desk.case)
        .contains(&"Second note, edited twice.".to_string()));
    // The case shows without the document, and names it.
    let shown = desk.phone.show(&desk.case);
    assert_eq!(
        shown["damaged"],
        serde_json::json!([{"doc_id": desk.first, "kind": "note"}]),
        "{shown}"
    );
}
