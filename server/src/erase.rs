//! Erasing a document from every store: the server's rows, the server's files, and every device
//! that holds it. One capability for every act that must make a record leave (a misfiled note,
//! `crate::misfile`; a disposed record, `crate::retention`), so each of them only decides what to erase and
//! what to leave in its place.
//!
//! How it reaches each store:
//! - the server's rows: [`erase_in`], in the caller's transaction (with the caller's stub and
//!   audit entries, so the erasure and its record commit together or not at all), erases the
//!   document's rows ([`Txn::erase_doc`]): its record and case index row, its quarantined
//!   changes, the bytes and received times of its log entries. Each log entry keeps its place
//!   in the log's hash chain (sequence, document id, change hash, chain link) and no byte of
//!   the change, so the chain still vouches for the whole log (`audit verify`, `verify`, copies,
//!   backups) while pulls, backfills and every read skip it. An erasure record
//!   ([`ErasedRecord`], meta [`meta_key`]: ids, kind, time, a reason code) stays, so that no push
//!   can bring the document back under its id (a device that missed the erasure and then
//!   re-sends what it holds after a reset is refused as for a document it may not write).
//! - the server's files: [`finish`], after the commit, flushes and asks the store to rewrite
//!   what still holds the bytes ([`Store::compact`]: PostgreSQL rewrites the tables and retires
//!   its write-ahead log at once; sled rewrites its files at its next open, before serving).
//! - devices: the transaction moves the access epoch, so every device reconciles at its next
//!   sync; the document is in its holdings and no longer readable, so it is evicted, and the
//!   device rewrites its files (client-core). Holdings rows (ids only) leave as each device
//!   confirms the eviction.
//! - the server's memory: the document's validated states, cached or saved
//!   ([`crate::validate::forget`]), in the transaction and again after its commit ([`finish`]):
//!   a push's validation of the same document that read it before the commit keeps nothing.

use crate::store::{Compaction, Store, StoreError, Txn};
use casenote_protocol::{CaseId, DocId, DocKind, Seq};
use serde::{Deserialize, Serialize};

/// The meta key of `doc`'s erasure record.
pub fn meta_key(doc: DocId) -> String {
    format!("erased:{doc}")
}

/// What is kept of an erased document: ids, kind, when, and why (a code). No content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasedRecord {
    pub doc_id: DocId,
    pub case_id: CaseId,
    pub kind: DocKind,
    pub at_ms: i64,
    /// Why, as a code (`misfiled`).
    pub why: String,
}

/// What [`erase_in`] erased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Erased {
    pub record: ErasedRecord,
    /// The log entries that lost their bytes.
    pub seqs: Vec<Seq>,
    /// The access epoch after the erasure.
    pub epoch: u64,
}

/// Erases `doc` in the caller's transaction (see the module docs): its rows, its erasure record
/// kept, the access epoch moved. `None` when there is no such document.
pub fn erase_in(
    txn: &mut dyn Txn,
    doc: DocId,
    why: &str,
    now_ms: i64,
) -> Result<Option<Erased>, StoreError> {
    let Some(rec) = txn.doc(doc)? else {
        return Ok(None);
    };
    let record = ErasedRecord {
        doc_id: doc,
        case_id: rec.header.case_id,
        kind: rec.header.kind,
        at_ms: now_ms,
        why: why.to_string(),
    };
    let seqs = txn.erase_doc(doc)?;
    // Its validated states too (dropping them early, should the transaction fail, costs only
    // a rebuild from the log).
    crate::validate::forget(doc);
    let value = serde_json::to_vec(&record)
        .map_err(|e| StoreError::Backend(format!("an erasure record: {e}")))?;
    txn.put_meta(&meta_key(doc), &value)?;
    let epoch = txn.bump_access_epoch()?;
    Ok(Some(Erased {
        record,
        seqs,
        epoch,
    }))
}

/// Whether `doc` was erased: a push under its id is refused.
pub fn is_erased(txn: &mut dyn Txn, doc: DocId) -> Result<bool, StoreError> {
    Ok(txn.meta(&meta_key(doc))?.is_some())
}

/// After the erasing transaction committed: drops the erased documents' states from the
/// server's memory again (a validation that read one before the commit may have kept it after
/// the first [`crate::validate::forget`]), makes the erasure durable, then asks the store to
/// rewrite what still holds the erased bytes ([`Store::compact`]). A compaction that fails does
/// not undo the erasure, which is done: it is reported as not done, to be run again
/// (`casenote-server compact`, or a sled server's next start).
pub fn finish(store: &dyn Store, erased: &[DocId]) -> Result<Compaction, StoreError> {
    for doc in erased {
        crate::validate::forget(*doc);
    }
    store.flush()?;
    Ok(store.compact().unwrap_or_else(|e| Compaction {
        done: false,
        detail: format!(
            "the rows are erased, but the store's files were not rewritten ({e}); run \
             `casenote-server compact` on the stopped store"
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{sled::SledStore, write};
    use crate::validate::{self, Materialised};

    /// A push's validation may read the document as stored before the erasing transaction
    /// commits and keep its state after that transaction's own forget; the erasure forgets it
    /// again once it committed.
    #[test]
    fn a_state_kept_while_the_erasure_was_committing_is_dropped_once_it_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let doc = DocId::new_random();
        let record = crate::testkit::note_record(doc, CaseId::new_random());
        write(&store, |t| t.put_doc(&record)).unwrap();
        write(&store, |t| {
            erase_in(t, doc, "misfiled", 0)?;
            // A validation reserved after that forget keeps the state it read (another test's
            // forget meanwhile makes a keep give way: it is tried again).
            for _ in 0..100 {
                let state = Materialised::new(automerge::AutoCommit::new(), Seq(0));
                validate::reserve(1).keep(doc, state);
                if validate::is_cached(doc) {
                    break;
                }
            }
            assert!(
                validate::is_cached(doc),
                "the state was kept before the commit"
            );
            Ok(())
        })
        .unwrap();
        finish(&store, &[doc]).unwrap();
        assert!(
            !validate::is_cached(doc),
            "the erased document's state stayed in memory"
        );
    }
}
