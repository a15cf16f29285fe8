//! A device never aborts on a document in its own store, whatever the document holds: one nested
//! 100,000 maps deep (as a server before the structure limits accepted from a hostile device) is
//! withheld from `show`, reports no conflicts, and the rest of the case shows as usual.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ROOT};
use casenote_client_core::store::{DeviceStore, Header, Writes};
use casenote_client_core::{Device, StoreKey};
use casenote_protocol::record::{self, Identity, NewNote, NoteAuthor, NoteKind, WITHHELD};
use casenote_protocol::{CaseId, DocId, DocKind};

fn stored(store: &DeviceStore, doc_id: DocId, case: CaseId, kind: DocKind, mut doc: AutoCommit) {
    let mut writes = Writes::default();
    store.stage_header(
        &mut writes,
        doc_id,
        &Header {
            case_id: case,
            kind,
        },
    );
    store
        .stage_doc(&mut writes, doc_id, &mut doc, &[], 0)
        .unwrap();
    store.commit(writes).unwrap();
}

#[test]
fn a_stored_document_nested_100000_deep_is_withheld_not_walked() {
    let dir = tempfile::tempdir().unwrap();
    let key = StoreKey::from_bytes([7; 32]);
    let case = CaseId::new_random();
    let note = DocId::new_random();
    {
        let store = DeviceStore::open(dir.path(), &key).unwrap();
        let mut c = AutoCommit::new();
        record::init_case(
            &mut c,
            case,
            &Identity {
                name: "Deep Person".into(),
                ..Default::default()
            },
        )
        .unwrap();
        stored(&store, DocId(case.0), case, DocKind::Case, c);
        let mut n = AutoCommit::new();
        record::init_note(
            &mut n,
            &NewNote {
                case_id: case,
                kind: NoteKind::Visit,
                author: NoteAuthor::default(),
                occurred_at_ms: 1,
                recorded_at_ms: 1,
                text: "Seen.".into(),
                amends: None,
                late_entry_reason: None,
            },
        )
        .unwrap();
        let mut obj = n.put_object(ROOT, "nested", ObjType::Map).unwrap();
        for _ in 0..100_000 {
            obj = n.put_object(&obj, "m", ObjType::Map).unwrap();
        }
        stored(&store, note, case, DocKind::Note, n);
    }
    // A small stack, as on a phone's worker thread: any recursion over the document overflows it.
    let path = dir.path().to_path_buf();
    let (shown, conflicts) = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || {
            let device = Device::open(&path, &key).unwrap();
            (device.show(case).unwrap(), device.conflicts(case).unwrap())
        })
        .unwrap()
        .join()
        .expect("show and conflicts return");
    assert_eq!(shown["record"]["name"], "Deep Person");
    let notes = shown["notes"].as_array().unwrap();
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0]["content"][WITHHELD].is_string(),
        "the deep note is not withheld: {}",
        notes[0]["content"]
    );
    assert!(conflicts.is_empty());
}
