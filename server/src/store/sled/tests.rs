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
