//! Pull: what a device is handed (docs/design.md, "Sync"): step 3 of a sync ([`crate::sync`]).
//!
//! The log scan hands out every change above the device's cursor that it may read
//! ([`crate::access`]), paged by bytes and by entries scanned; a backfill hands out the whole
//! history of documents an access change newly gave the device, or, for a device's first sync
//! (cursor 0), of every document it may read ([`super::reconcile`]): a new device is never
//! answered by a walk of the whole log, so its cost grows with what it may read rather than with
//! the store. The backfill is paged the same way, by bytes. Both read committed data outside
//! any write transaction, so a long pull holds no writer up, and all of it through one read
//! transaction: the log scan a batch of entries at a time (`Txn::log_page`, at most
//! `limits::PULL_SCAN_BATCH_ENTRIES` and a response's bytes), the documents' records and cases,
//! and the backfill runs of documents' records and histories (`Txn::docs_in`,
//! `Txn::docs_page`). Through the store, each of those reads took a second pooled connection
//! while the transaction held one, and on PostgreSQL syncs under load held every connection and
//! waited on each other. The server never materialises a document to relay it: it keeps a log
//! of (hash, dependencies, bytes) and each document's heads, which is all a relay needs.

use crate::access::{self, Cases};
use crate::auth::Principal;
use crate::model::{BackfillPos, DocRecord, LoggedChange};
use crate::store::{read, Store, StoreError, Txn};
use casenote_protocol::limits::{self, PULL_SCAN_ENTRIES_MAX};
use casenote_protocol::wire::{DocPull, Hash};
use casenote_protocol::{DocId, Seq};
use serde_bytes::ByteBuf;
use std::collections::{HashMap, HashSet};

/// One page of changes for a device.
#[derive(Debug, Default)]
pub struct Pulled {
    pub docs: Vec<DocPull>,
    pub cursor: Seq,
    pub more: bool,
    pub changes: usize,
    pub bytes: usize,
    /// Sealed sections met in the scan that the device is told of but may not read.
    pub sealed: Vec<DocId>,
    /// Log entries the scan read (audited with the sync, and counted in the metrics).
    pub scanned: usize,
}

/// Collects the changes above `cursor` that `who` may read, leaving out `skip`, up to the page
/// limit (of which `used` bytes are already taken). Only durable changes are handed out, so a
/// cursor never points past what survives a crash.
pub fn pull(
    store: &dyn Store,
    who: &Principal,
    cursor: Seq,
    skip: &HashSet<(DocId, Hash)>,
    used: usize,
) -> Result<Pulled, StoreError> {
    let upto = store.durable_seq()?;
    read(store, |txn| pull_upto(txn, who, (cursor, upto), skip, used))
}

/// The changes after the log scan's page so far, with the documents it keeps (by index into
/// `docs`) or leaves out.
struct Page {
    out: Pulled,
    slots: HashMap<DocId, Option<usize>>,
    cases: Cases,
    /// The records of the documents of the batch being scanned, read together
    /// ([`access::prefetch`]) and taken by [`Page::slot`].
    records: HashMap<DocId, Option<DocRecord>>,
    used: usize,
}

impl Page {
    /// The slot of `doc` in the page, looked up (and decided by access) on its first change.
    /// The document's heads are the record's as read then.
    fn slot(
        &mut self,
        txn: &mut dyn Txn,
        who: &Principal,
        doc: DocId,
    ) -> Result<Option<usize>, StoreError> {
        if let Some(slot) = self.slots.get(&doc) {
            return Ok(*slot);
        }
        let rec = match self.records.remove(&doc) {
            Some(rec) => rec,
            None => txn.doc(doc)?,
        };
        let mut slot = None;
        if let Some(rec) = rec {
            match access::readable_or_sealed(txn, who, &rec.header, &mut self.cases)? {
                (true, _) => {
                    self.out.docs.push(DocPull {
                        doc_id: doc,
                        case_id: rec.header.case_id,
                        kind: rec.header.kind,
                        changes: Vec::new(),
                        heads: rec.heads,
                    });
                    slot = Some(self.out.docs.len() - 1);
                }
                (false, true) => self.out.sealed.push(doc),
                (false, false) => {}
            }
        }
        self.slots.insert(doc, slot);
        Ok(slot)
    }

    /// Reads together the records (and cases) of the documents of `batch` not yet decided.
    fn prefetch(&mut self, txn: &mut dyn Txn, batch: &[LoggedChange]) -> Result<(), StoreError> {
        let mut new: Vec<DocId> = batch
            .iter()
            .map(|e| e.doc_id)
            .filter(|d| !self.slots.contains_key(d))
            .collect();
        new.sort_unstable();
        new.dedup();
        self.records = access::prefetch(txn, &new, &mut self.cases)?;
        Ok(())
    }

    /// Takes log entry `e` into the page if the device may read it (and did not push it); says
    /// whether the page had room (if not, it ends just before `e`).
    fn take(
        &mut self,
        txn: &mut dyn Txn,
        who: &Principal,
        skip: &HashSet<(DocId, Hash)>,
        e: LoggedChange,
    ) -> Result<bool, StoreError> {
        let Some(slot) = self.slot(txn, who, e.doc_id)? else {
            return Ok(true);
        };
        if skip.contains(&(e.doc_id, e.hash)) {
            return Ok(true);
        }
        if !self.fits(e.bytes.len()) {
            self.out.cursor = Seq(e.seq.0 - 1);
            return Ok(false);
        }
        self.out.bytes += e.bytes.len();
        self.out.changes += 1;
        self.out.docs[slot].changes.push(ByteBuf::from(e.bytes));
        Ok(true)
    }

    /// Whether a change of `len` bytes still fits the page.
    fn fits(&self, len: usize) -> bool {
        let taken = self.used + self.out.bytes;
        taken == 0 || taken + len <= limits::RESPONSE_CHANGE_BYTES_SOFT_MAX
    }
}

/// [`pull`] of the changes in `(cursor, upto]`, which may not be durable yet: the caller flushes
/// before it hands the result out (a sync does, once, at its end).
pub(crate) fn pull_upto(
    txn: &mut dyn Txn,
    who: &Principal,
    (cursor, upto): (Seq, Seq),
    skip: &HashSet<(DocId, Hash)>,
    used: usize,
) -> Result<Pulled, StoreError> {
    let mut page = Page {
        out: Pulled {
            cursor: upto,
            ..Pulled::default()
        },
        slots: HashMap::new(),
        cases: Cases::new(),
        records: HashMap::new(),
        used,
    };
    if cursor >= upto {
        // Nothing new (the idle reconnect), or a cursor from before a restore: resume from here.
        return Ok(page.out);
    }
    let mut scanned = 0usize;
    let mut after = cursor;
    'scan: while after < upto {
        let want = (PULL_SCAN_ENTRIES_MAX - scanned).clamp(1, limits::PULL_SCAN_BATCH_ENTRIES);
        let batch = txn.log_page((after, upto), want, limits::RESPONSE_CHANGE_BYTES_SOFT_MAX)?;
        let Some(last) = batch.last().map(|e| e.seq) else {
            break;
        };
        page.prefetch(txn, &batch)?;
        for e in batch {
            if scanned >= PULL_SCAN_ENTRIES_MAX {
                page.out.cursor = Seq(e.seq.0 - 1);
                page.out.more = true;
                break 'scan;
            }
            scanned += 1;
            if !page.take(txn, who, skip, e)? {
                page.out.more = true;
                break 'scan;
            }
        }
        after = last;
    }
    page.out.scanned = scanned;
    crate::metrics::log_scanned(scanned);
    // The documents that got no change are dropped.
    page.out.docs.retain(|d| !d.changes.is_empty());
    Ok(page.out)
}

/// What one page of a backfill sends and where it ended.
#[derive(Debug, Default)]
pub(crate) struct Backfill {
    pub(crate) docs: Vec<DocPull>,
    pub(crate) bytes: usize,
    pub(crate) changes: usize,
    /// Where the page ended: `index == missing.len()` when the backfill is complete.
    pub(crate) end: BackfillPos,
}

/// Sends the history (up to `upto`) of `missing`, in order, from `start`, within the page budget:
/// a run of [`limits::RECORDS_PER_READ`] documents at a time, their records in one read
/// (`Txn::docs_in`) and their changes in batches of [`limits::PULL_SCAN_BATCH_ENTRIES`] that run
/// on from one document into the next (`Txn::docs_page`). On PostgreSQL a first sync was a round
/// trip or more per document it was handed.
pub(crate) fn backfill(
    txn: &mut dyn Txn,
    missing: &[DocId],
    (start, upto): (BackfillPos, Seq),
    skip: &HashSet<(DocId, Hash)>,
) -> Result<Backfill, StoreError> {
    let mut page = Filling::new(missing, start, skip);
    let mut index = start.index;
    while index < missing.len() {
        let run = &missing[index..missing.len().min(index + limits::RECORDS_PER_READ)];
        let after = if index == start.index {
            start.after_seq
        } else {
            0
        };
        if fill_from_run(txn, run, (Seq(after), upto), &mut page)? {
            break;
        }
        index += run.len();
    }
    Ok(page.finish())
}

/// Adds the histories of `run` (the first document's from after `after`) to `page`; whether the
/// page filled.
fn fill_from_run(
    txn: &mut dyn Txn,
    run: &[DocId],
    (after, upto): (Seq, Seq),
    page: &mut Filling<'_>,
) -> Result<bool, StoreError> {
    let records = txn.docs_in(run)?;
    page.records = records.into_iter().map(|r| (r.header.doc_id, r)).collect();
    // A document gone since the reconciliation began is passed over.
    let present: Vec<DocId> = run
        .iter()
        .copied()
        .filter(|d| page.records.contains_key(d))
        .collect();
    let mut from = if present.first() == run.first() {
        after
    } else {
        Seq(0)
    };
    let mut rest = &present[..];
    while !rest.is_empty() {
        let (batch, room) = (limits::PULL_SCAN_BATCH_ENTRIES, page.room());
        let changes = txn.docs_page(rest, (from, upto), batch, room)?;
        let read: usize = changes.iter().map(|c| c.bytes.len()).sum();
        let cut = changes.len() >= batch || read >= room;
        let resume = changes.last().map(|c| (c.doc_id, c.seq));
        for c in changes {
            if page.add(c)? {
                return Ok(true);
            }
        }
        // A batch cut by neither bound covered every document left.
        let Some((doc, seq)) = resume.filter(|_| cut) else {
            break;
        };
        let at = rest.iter().position(|d| *d == doc).unwrap_or(rest.len());
        (rest, from) = (&rest[at..], seq);
    }
    Ok(false)
}

/// A backfill page being filled, one change at a time, document after document.
struct Filling<'a> {
    missing: &'a [DocId],
    start: BackfillPos,
    skip: &'a HashSet<(DocId, Hash)>,
    /// The records of the run being read.
    records: HashMap<DocId, DocRecord>,
    out: Backfill,
    /// The document being added, at `index` in `missing`, and the last sequence sent of it.
    pull: Option<DocPull>,
    index: usize,
    last_sent: u64,
}

impl<'a> Filling<'a> {
    fn new(missing: &'a [DocId], start: BackfillPos, skip: &'a HashSet<(DocId, Hash)>) -> Self {
        let end = BackfillPos {
            index: missing.len(),
            after_seq: 0,
        };
        Filling {
            missing,
            start,
            skip,
            records: HashMap::new(),
            out: Backfill {
                end,
                ..Backfill::default()
            },
            pull: None,
            index: start.index,
            last_sent: start.after_seq,
        }
    }

    /// The bytes the page has room for (at least one change's: a page holds one however large).
    fn room(&self) -> usize {
        limits::RESPONSE_CHANGE_BYTES_SOFT_MAX
            .saturating_sub(self.out.bytes)
            .max(1)
    }

    /// Adds `c` (of the document being added, or of one after it in `missing`); whether the
    /// page is full instead (then it ends where `c` would have gone).
    fn add(&mut self, c: LoggedChange) -> Result<bool, StoreError> {
        if self.pull.as_ref().map(|p| p.doc_id) != Some(c.doc_id) {
            self.begin(c.doc_id)?;
        }
        if self.skip.contains(&(c.doc_id, c.hash)) {
            self.last_sent = c.seq.0;
            return Ok(false);
        }
        let bytes = self.out.bytes;
        if bytes > 0 && bytes + c.bytes.len() > limits::RESPONSE_CHANGE_BYTES_SOFT_MAX {
            self.out.end = BackfillPos {
                index: self.index,
                after_seq: self.last_sent,
            };
            return Ok(true);
        }
        self.out.bytes += c.bytes.len();
        self.out.changes += 1;
        self.last_sent = c.seq.0;
        if let Some(pull) = self.pull.as_mut() {
            pull.changes.push(ByteBuf::from(c.bytes));
        }
        Ok(false)
    }

    /// Moves on to document `doc`, the next in `missing` that has changes to send.
    fn begin(&mut self, doc: DocId) -> Result<(), StoreError> {
        self.close();
        let ahead = self.missing.get(self.index..).unwrap_or_default();
        let found = ahead.iter().position(|d| *d == doc);
        // Each document of a run is begun once: its record leaves the run's.
        let (Some(offset), Some(rec)) = (found, self.records.remove(&doc)) else {
            return Err(StoreError::Backend(
                "a backfill read changes of a document it did not ask for".into(),
            ));
        };
        self.index += offset;
        self.last_sent = if self.index == self.start.index {
            self.start.after_seq
        } else {
            0
        };
        self.pull = Some(DocPull {
            doc_id: doc,
            case_id: rec.header.case_id,
            kind: rec.header.kind,
            changes: Vec::new(),
            heads: rec.heads,
        });
        Ok(())
    }

    /// Puts the document being added into the page, if it got a change.
    fn close(&mut self) {
        if let Some(pull) = self.pull.take().filter(|p| !p.changes.is_empty()) {
            self.out.docs.push(pull);
        }
    }

    fn finish(mut self) -> Backfill {
        self.close();
        self.out
    }
}

/// Puts the changes of `extra` into `docs`, one entry per document.
pub(crate) fn merge_pulls(docs: &mut Vec<DocPull>, extra: Vec<DocPull>) {
    for p in extra {
        match docs.iter_mut().find(|d| d.doc_id == p.doc_id) {
            Some(d) => {
                d.changes.extend(p.changes);
                d.heads = p.heads;
            }
            None => docs.push(p),
        }
    }
}
