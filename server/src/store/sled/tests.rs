//! The sled backend against the store contract ([`crate::store::conformance`]), on real sled
//! directories, plus what only sled has: its lock on the data directory. Also the one way other
//! tests tamper with a stored audit entry ([`rewrite_audit_entry`]), so they need not know sled.

use super::{open, SledStore, AUDIT_TREE};
use crate::store::conformance::{conformance_tests, Factory};
use crate::store::{Store, StoreError};
use std::path::Path;
use std::sync::Arc;

/// Fresh sled stores in temporary directories, kept until the factory is dropped.
#[derive(Default)]
struct Sled {
    dirs: Vec<tempfile::TempDir>,
}

impl Factory for Sled {
    fn fresh(&mut self) -> Arc<dyn Store> {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).unwrap();
        self.dirs.push(dir);
        store
    }

    fn reopen(&mut self, store: Arc<dyn Store>) -> Arc<dyn Store> {
        assert_eq!(
            Arc::strong_count(&store),
            1,
            "the test still holds the store"
        );
        drop(store);
        let dir = self.dirs.last().expect("a store was opened");
        open(dir.path()).unwrap()
    }
}

conformance_tests!(Sled::default());

#[test]
fn a_second_open_of_the_same_directory_says_it_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path()).unwrap();
    let err = open(dir.path()).err().expect("the second open must fail");
    assert!(matches!(err, StoreError::Locked(_)), "{err}");
    assert!(err.to_string().contains("stop it first"));
}

/// Replaces the stored bytes of audit entry `seq` of the (closed) store in `dir` with what `edit`
/// makes of them, the way someone with the files could: straight into sled, around the store.
pub(crate) fn rewrite_audit_entry(dir: &Path, seq: u64, edit: impl FnOnce(Vec<u8>) -> Vec<u8>) {
    let db = sled::open(dir).unwrap();
    let tree = db.open_tree(AUDIT_TREE).unwrap();
    let key = seq.to_be_bytes();
    let value = tree.get(key).unwrap().expect("the entry exists").to_vec();
    tree.insert(key, edit(value)).unwrap();
    db.flush().unwrap();
}

#[test]
fn an_audit_entry_changed_on_disk_is_named_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path()).unwrap();
        for i in 0..5 {
            crate::store::write(&*store, |t| {
                t.audit_append(crate::model::AuditRecord::new(
                    crate::model::AuditKind::Admin,
                    1000 + i,
                    serde_json::json!({"action": "org_add", "n": i}),
                ))
            })
            .unwrap();
        }
        assert_eq!(crate::audit::verify(&*store).unwrap(), 5);
        let shown = crate::audit::entries(&*store, Some(2)).unwrap();
        assert_eq!(shown.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
        store.flush().unwrap();
    }
    rewrite_audit_entry(dir.path(), 3, |value| {
        let value = String::from_utf8(value).unwrap();
        let changed = value.replace("\"n\":2", "\"n\":7");
        assert_ne!(value, changed);
        changed.into_bytes()
    });
    let store = SledStore::inspect(dir.path()).unwrap();
    match crate::audit::verify(&store).unwrap_err() {
        crate::audit::VerifyError::Broken(b) => assert_eq!(b.seq, 3, "{b}"),
        other => panic!("{other}"),
    }
}

/// Whether any file under `dir` holds `needle`.
fn files_hold(dir: &Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                return true;
            }
        }
    }
    false
}

/// A real Automerge change holding `text`: (bytes, hash).
fn change_with(text: &str) -> (Vec<u8>, casenote_protocol::wire::Hash) {
    use automerge::transaction::Transactable;
    let mut doc = automerge::AutoCommit::new();
    doc.put(automerge::ROOT, "text", text).unwrap();
    doc.commit();
    let mut c = doc.get_last_local_change().unwrap();
    (c.bytes().to_vec(), c.hash().into())
}

#[test]
fn an_erased_documents_bytes_leave_sleds_files_at_the_next_open_and_the_store_verifies() {
    use crate::model::{CaseRecord, DocRecord, NewChange};
    use casenote_protocol::{CaseId, DocId, OrgId};
    let dir = tempfile::tempdir().unwrap();
    let marker = "ERASE-ME-from-sled-files-3f9a1c";
    let case = CaseId::new_random();
    let record = |doc: DocId, head| DocRecord {
        heads: vec![head],
        ops: 1,
        ..crate::testkit::note_record(doc, case)
    };
    let (gone, kept) = (DocId::new_random(), DocId::new_random());
    {
        let store = open(dir.path()).unwrap();
        let (bad, bad_hash) = change_with(marker);
        let (good, good_hash) = change_with("stays");
        crate::store::write(&*store, |t| {
            t.put_case(&CaseRecord {
                case_id: case,
                owner_org: OrgId::new_random(),
                teams: vec![],
                created_ms: 0,
            })?;
            for (doc, bytes, hash) in [(gone, &bad, bad_hash), (kept, &good, good_hash)] {
                t.put_doc(&record(doc, hash))?;
                t.append_change(&NewChange {
                    doc_id: doc,
                    hash,
                    bytes: bytes.clone(),
                    received_at_ms: 1,
                })?;
            }
            Ok(())
        })
        .unwrap();
        store.flush().unwrap();
    }
    assert!(
        files_hold(dir.path(), marker.as_bytes()),
        "positive control: the change is in sled's files"
    );
    {
        let store = open(dir.path()).unwrap();
        crate::store::write(&*store, |t| t.erase_doc(gone)).unwrap();
        store.flush().unwrap();
        let due = store.compact().unwrap();
        assert!(!due.done, "sled says its files still hold the bytes");
    }
    assert!(
        files_hold(dir.path(), marker.as_bytes()),
        "positive control: erased rows stay in sled's files until the rewrite"
    );
    {
        let store = open(dir.path()).unwrap(); // rewrites its files first
        let done = store.compact().unwrap();
        assert!(done.done, "{}", done.detail);
        assert_eq!(store.doc_change_seqs(kept).unwrap().len(), 1);
    }
    assert!(
        !files_hold(dir.path(), marker.as_bytes()),
        "an erased change's bytes survived the rewrite"
    );
    let summary = SledStore::inspect(dir.path()).unwrap().verify();
    assert!(summary.is_ok(), "{:?}", summary.err());
}
