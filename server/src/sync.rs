//! The sync algorithm: one request in, one response out, no HTTP.
//!
//! A device pushes, per document, the server heads it last saw (`base`) and the Automerge changes it
//! made since; the server checks access and headers, stores what is new under the next global
//! sequence numbers, makes it durable, and then hands back every change the device may read that
//! has a sequence above the device's cursor, paged by bytes. The server never materialises a
//! document to relay it: it keeps a log of (hash, dependencies, bytes) and the heads per
//! document, which is all that a relay needs (DESIGN.md, "Facts measured": applying changes one
//! by one is slow). It materialises a document only to validate new changes to it (below).
//!
//! See DESIGN.md, "Sync: one round trip". The demo loader pushes through [`push`] too, so demo
//! data reaches devices through exactly the path real edits take.
//!
//! Who may see what (DESIGN.md, "Who may see what"): [`may_read`] is the one rule. It depends on
//! relationship only (a team of the staff member on the case; for a restricted document, also on
//! its access list); the `admin` role grants no record access. A push to a document the device
//! may not read, or to a case it may not read or that does not exist, is answered with the same
//! `forbidden` rejection, so a refusal never tells whether a document exists.
//!
//! Push ([`crate::push`]): access, dedupe, dependencies, authorship and the record rules
//! ([`crate::validate`]) for each pushed document, then one atomic write. Every stored change is
//! stamped with the server's receipt time (`received` tree).
//!
//! Log id: every response names the store's log id. A request that names another one (the store
//! was restored from backup since, and `admin restored` gave it a new id, or the store found at
//! open that it had lost acknowledged writes, [`crate::store`]), or names this one with a cursor
//! past the end of the log (a backup put back without `admin restored`), is answered with
//! `reset` and nothing else: nothing pushed is applied, nothing is pulled. A request without one
//! (a new device) is handled normally.
//!
//! Access changes: the server remembers which documents it handed each device (`device_docs`)
//! and the access epoch the device was last reconciled at. When an admin changes access the epoch
//! moves, and the device's next sync is reconciled ([`handle`]): documents it holds but may no
//! longer read are sent as `evictions`; documents it may now read but never got are backfilled
//! from their full history, paged like a pull (the cursor does not move until the backfill is
//! done). The reconciliation is kept in `device_sync` ([`PendingReconcile`]) and every response
//! that carries part of it has a fresh random `reconcile_id`; nothing about the device's holdings
//! is committed until the device echoes that id as `confirmed_reconcile`. Without the
//! confirmation the next response carries the same evictions and the backfill again from where
//! the device last confirmed, so a lost response costs a re-send, never a device that keeps what
//! it should have deleted. A confirmation of the last page completes the reconciliation. If the
//! epoch moves again before that, a new reconciliation starts, counting as held both what was
//! committed and what the unconfirmed response may have delivered. With an unchanged epoch and
//! nothing pending a sync costs no per-document work.
//!
//! Every sync, every reset, and every `forbidden`, `forged_author` or `rule_violation` refusal is
//! written to the audit log, and the audit entry is flushed before the response leaves.

use crate::audit::{AuditKind, AuditRecord};
use crate::auth::Principal;
use crate::model::Role;
use crate::push::push_with;
use crate::store::{
    BackfillPos, CaseRecord, DeviceSync, DocHeader, PendingReconcile, Store, StoreError,
};
use crate::validate::Rules;
use casenote_protocol::limits;
use casenote_protocol::wire::{DocPull, Hash, SyncRequest, SyncResponse, PROTOCOL_VERSION};
use casenote_protocol::{CaseId, DocId, DocKind, ErrorCode, Seq, TeamId};

pub use crate::push::{push, PushOutcome};
use serde_bytes::ByteBuf;
use serde_json::json;
use std::collections::{BTreeSet, HashMap, HashSet};

use casenote_protocol::limits::PULL_SCAN_ENTRIES_MAX;

fn intersects(a: &[TeamId], b: &[TeamId]) -> bool {
    a.iter().any(|t| b.contains(t))
}

/// Whether `who` may hold a document of `case` with header `header` (`None`: a document not yet
/// created, judged by its case alone). The one place read access is decided.
pub fn may_read(who: &Principal, case: &CaseRecord, header: Option<&DocHeader>) -> bool {
    if who.staff.role == Role::Admin || who.staff.revoked {
        return false;
    }
    if !intersects(who.teams(), &case.teams) {
        return false;
    }
    match header.and_then(|h| h.access_teams.as_deref()) {
        Some(access) => intersects(who.teams(), access),
        None => true,
    }
}

/// Whether `who` may write a document of `case`. Today the same rule as reading.
pub fn may_write(who: &Principal, case: &CaseRecord, header: Option<&DocHeader>) -> bool {
    may_read(who, case, header)
}

/// One page of changes for a device.
#[derive(Debug, Default)]
pub struct Pulled {
    pub docs: Vec<DocPull>,
    pub cursor: Seq,
    pub more: bool,
    pub changes: usize,
    pub bytes: usize,
}

/// Collects the changes above `cursor` that `who` may read, leaving out `skip`, up to the page
/// limit (of which `used` bytes are already taken by this response). Only durable changes are
/// handed out, so a cursor never points past what survives a crash.
pub fn pull(
    store: &dyn Store,
    who: &Principal,
    cursor: Seq,
    skip: &HashSet<(DocId, Hash)>,
    used: usize,
) -> Result<Pulled, StoreError> {
    pull_upto(store, who, cursor, skip, used, store.durable_seq())
}

/// [`pull`] of the changes up to `upto`, which may not be durable yet: the caller flushes
/// before it hands the result out ([`handle_with`] does, once for the whole sync).
fn pull_upto(
    store: &dyn Store,
    who: &Principal,
    cursor: Seq,
    skip: &HashSet<(DocId, Hash)>,
    used: usize,
    upto: Seq,
) -> Result<Pulled, StoreError> {
    if cursor >= upto {
        // Nothing new (the idle reconnect), or a cursor from before a restore: resume from here.
        return Ok(Pulled {
            cursor: upto,
            ..Pulled::default()
        });
    }
    let mut out = Pulled {
        cursor: upto,
        ..Pulled::default()
    };
    let mut readable: HashMap<DocId, Option<usize>> = HashMap::new();
    let mut cases: HashMap<CaseId, Option<CaseRecord>> = HashMap::new();
    let mut failure: Option<StoreError> = None;
    let mut scanned = 0usize;
    store.scan_log(cursor, upto, &mut |e| {
        if scanned >= PULL_SCAN_ENTRIES_MAX {
            out.more = true;
            out.cursor = Seq(e.seq.0 - 1);
            return false;
        }
        scanned += 1;
        let slot = match readable.get(&e.doc_id) {
            Some(s) => *s,
            None => {
                let decided = match readable_doc(store, who, e.doc_id, &mut cases) {
                    Ok(Some((case_id, kind))) => {
                        out.docs.push(DocPull {
                            doc_id: e.doc_id,
                            case_id,
                            kind,
                            changes: Vec::new(),
                            heads: Vec::new(),
                        });
                        Some(out.docs.len() - 1)
                    }
                    Ok(None) => None,
                    Err(err) => {
                        failure = Some(err);
                        return false;
                    }
                };
                readable.insert(e.doc_id, decided);
                decided
            }
        };
        let Some(slot) = slot else { return true };
        if skip.contains(&(e.doc_id, e.hash)) {
            return true;
        }
        let taken = used + out.bytes;
        if taken > 0 && taken + e.bytes.len() > limits::RESPONSE_CHANGE_BYTES_SOFT_MAX {
            out.more = true;
            out.cursor = Seq(e.seq.0 - 1);
            return false;
        }
        out.bytes += e.bytes.len();
        out.changes += 1;
        out.docs[slot].changes.push(ByteBuf::from(e.bytes.to_vec()));
        true
    })?;
    if let Some(err) = failure {
        return Err(err);
    }
    out.docs.retain(|d| !d.changes.is_empty());
    for d in &mut out.docs {
        if let Some(rec) = store.get_doc(d.doc_id)? {
            d.heads = rec.heads;
        }
    }
    Ok(out)
}

fn readable_doc(
    store: &dyn Store,
    who: &Principal,
    doc_id: DocId,
    cases: &mut HashMap<CaseId, Option<CaseRecord>>,
) -> Result<Option<(CaseId, DocKind)>, StoreError> {
    let Some(rec) = store.get_doc(doc_id)? else {
        return Ok(None);
    };
    let case_id = rec.header.case_id;
    if let std::collections::hash_map::Entry::Vacant(slot) = cases.entry(case_id) {
        slot.insert(store.get_case(case_id)?);
    }
    Ok(match cases.get(&case_id) {
        Some(Some(case)) if may_read(who, case, Some(&rec.header)) => {
            Some((case_id, rec.header.kind))
        }
        _ => None,
    })
}

/// Every document `who` may read now, found through the `team_cases` and `case_docs` indexes
/// and decided by [`may_read`].
pub fn readable_docs(store: &dyn Store, who: &Principal) -> Result<BTreeSet<DocId>, StoreError> {
    let mut out = BTreeSet::new();
    if who.staff.role == Role::Admin || who.staff.revoked {
        return Ok(out);
    }
    let mut seen: HashSet<CaseId> = HashSet::new();
    for team in who.teams() {
        for case_id in store.cases_of_team(*team)? {
            if !seen.insert(case_id) {
                continue;
            }
            let Some(case) = store.get_case(case_id)? else {
                continue;
            };
            if !may_read(who, &case, None) {
                continue;
            }
            for doc_id in store.docs_of_case(case_id)? {
                if let Some(rec) = store.get_doc(doc_id)? {
                    if may_read(who, &case, Some(&rec.header)) {
                        out.insert(doc_id);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// What one page of a backfill sends and where it ended.
#[derive(Debug, Default)]
struct Backfill {
    docs: Vec<DocPull>,
    bytes: usize,
    changes: usize,
    /// Where the page ended: `index == missing.len()` when the backfill is complete.
    end: BackfillPos,
}

/// Sends the history (up to `upto`) of `missing`, in order, from `start`, within the page budget.
fn backfill(
    store: &dyn Store,
    missing: &[DocId],
    start: BackfillPos,
    upto: Seq,
    skip: &HashSet<(DocId, Hash)>,
) -> Result<Backfill, StoreError> {
    let mut out = Backfill {
        end: BackfillPos {
            index: missing.len(),
            after_seq: 0,
        },
        ..Backfill::default()
    };
    for (index, doc_id) in missing.iter().enumerate().skip(start.index) {
        let Some(rec) = store.get_doc(*doc_id)? else {
            continue;
        };
        let after = if index == start.index {
            start.after_seq
        } else {
            0
        };
        let mut pull = DocPull {
            doc_id: *doc_id,
            case_id: rec.header.case_id,
            kind: rec.header.kind,
            changes: Vec::new(),
            heads: rec.heads.clone(),
        };
        let mut last_sent = after;
        let mut full = false;
        for seq in store.doc_change_seqs(*doc_id)? {
            if seq.0 <= after || seq > upto {
                continue;
            }
            let Some((_, hash, bytes)) = store.get_log(seq)? else {
                continue;
            };
            if skip.contains(&(*doc_id, hash)) {
                last_sent = seq.0;
                continue;
            }
            if out.bytes > 0 && out.bytes + bytes.len() > limits::RESPONSE_CHANGE_BYTES_SOFT_MAX {
                full = true;
                break;
            }
            out.bytes += bytes.len();
            out.changes += 1;
            last_sent = seq.0;
            pull.changes.push(ByteBuf::from(bytes));
        }
        if !pull.changes.is_empty() {
            out.docs.push(pull);
        }
        if full {
            out.end = BackfillPos {
                index,
                after_seq: last_sent,
            };
            break;
        }
    }
    Ok(out)
}

/// Puts the changes of `extra` into `docs`, one entry per document.
fn merge_pulls(docs: &mut Vec<DocPull>, extra: Vec<DocPull>) {
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

/// A fresh reconcile id: random, non-zero, so that no stale confirmation (an older response's,
/// or one from before a restore) ever matches a later response.
fn new_reconcile_id() -> u64 {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return id;
        }
    }
}

/// The documents whose history the last (unconfirmed) response of `p` carried, in whole or in
/// part: the device may hold them, whatever the server has committed.
fn sent_unconfirmed(p: &PendingReconcile) -> &[DocId] {
    let from = p.confirmed.index.min(p.missing.len());
    let to = p
        .sent
        .index
        .saturating_add(1)
        .min(p.missing.len())
        .max(from);
    &p.missing[from..to]
}

/// Commits what the last response of `p` carried, now that the device confirmed it: the
/// evictions leave `device_docs`, the documents whose history was sent in full join it. Returns
/// whether the reconciliation is complete.
fn commit_confirmed(
    store: &dyn Store,
    device: casenote_protocol::DeviceId,
    p: &mut PendingReconcile,
) -> Result<bool, StoreError> {
    if !p.evictions.is_empty() {
        store.device_docs_remove(device, &p.evictions)?;
        p.evictions.clear();
    }
    let from = p.confirmed.index.min(p.missing.len());
    let to = p.sent.index.min(p.missing.len()).max(from);
    if to > from {
        store.device_docs_add(device, &p.missing[from..to])?;
    }
    p.confirmed = p.sent;
    Ok(p.confirmed.index >= p.missing.len())
}

/// [`handle_with`] under the default [`Rules`].
pub fn handle(
    store: &dyn Store,
    who: &Principal,
    req: SyncRequest,
    now_ms: i64,
) -> Result<SyncResponse, StoreError> {
    handle_with(store, who, req, now_ms, &Rules::default())
}

/// The answer to a device whose log id is not the store's: reset, and nothing else.
fn reset(
    store: &dyn Store,
    who: &Principal,
    req: &SyncRequest,
    theirs: uuid::Uuid,
    ours: uuid::Uuid,
    now_ms: i64,
) -> Result<SyncResponse, StoreError> {
    store.audit_append(
        AuditRecord::new(
            AuditKind::Sync,
            now_ms,
            json!({
                "reset": true,
                "device_log_id": theirs,
                "log_id": ours,
                "cursor_in": req.cursor.0,
                "pushed_docs": req.docs.len(),
            }),
        )
        .staff(who.staff_id())
        .device(who.device_id),
    )?;
    store.flush()?;
    tracing::info!(device = %who.device_id, cursor_in = req.cursor.0, "sync reset: the device's log id is not this store's");
    Ok(SyncResponse {
        version: PROTOCOL_VERSION,
        cursor: Seq(0),
        more: false,
        server_time_ms: now_ms,
        acks: Vec::new(),
        docs: Vec::new(),
        need_full_history: Vec::new(),
        rejections: Vec::new(),
        evictions: Vec::new(),
        log_id: ours,
        reset: true,
        reconcile_id: None,
        lease: None, // set by the HTTP layer from the server's configuration
    })
}

/// What a sync stored, for the live channel: the documents that got changes new to the server
/// and the sequence that covers them (durable once the sync returned).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    pub upto: Seq,
    pub docs: Vec<DocId>,
}

/// Handles one sync request from an authenticated device: check the log id, push, commit a
/// confirmed reconciliation, reconcile its access if needed, pull, audit, make durable.
pub fn handle_with(
    store: &dyn Store,
    who: &Principal,
    req: SyncRequest,
    now_ms: i64,
    rules: &Rules,
) -> Result<SyncResponse, StoreError> {
    handle_stored(store, who, req, now_ms, rules).map(|(resp, _)| resp)
}

/// [`handle_with`], also saying what the sync stored (for [`crate::live`]).
///
/// Durability: one flush, at the end, covers everything the sync wrote (its changes, what the
/// device was handed, its audit entry) and everything its pull handed out. The pull may hand
/// out changes that are committed but not yet flushed (this sync's own, or a concurrent
/// sync's), because the response leaves only after a flush that started after the pull chose
/// its upper bound; so no cursor ever points past what survives a crash. Concurrent syncs share
/// that flush ([`Store::flush`] is a group commit).
pub fn handle_stored(
    store: &dyn Store,
    who: &Principal,
    req: SyncRequest,
    now_ms: i64,
    rules: &Rules,
) -> Result<(SyncResponse, Stored), StoreError> {
    let device = who.device_id;
    let log_id = store.log_id()?;
    if let Some(theirs) = req.log_id {
        // A cursor past the log: the store lost what it handed this device (a backup put back
        // without `admin restored`). Like a foreign log id, the device starts over.
        let past = theirs == log_id && req.cursor > store.last_seq();
        if past {
            tracing::warn!(device = %who.device_id, cursor_in = req.cursor.0, last_seq = store.last_seq().0, "the device's cursor is past this store's log");
        }
        if theirs != log_id || past {
            return reset(store, who, &req, theirs, log_id, now_ms)
                .map(|resp| (resp, Stored::default()));
        }
    }
    // The epoch before anything else: an access change after this point bumps it again, so the
    // next sync reconciles once more.
    let epoch = store.access_epoch()?;
    let state = store.get_device_sync(device)?.unwrap_or_default();
    let mut new_state = state.clone();
    let fresh = req.cursor == Seq(0);
    if fresh {
        // A device starting from nothing holds nothing the server handed it; the normal log scan
        // gives it everything it may read.
        store.device_docs_clear(device)?;
        new_state = DeviceSync {
            reconciled_epoch: Some(epoch),
            pending: None,
        };
    }

    let offset_ms = req.device_clock_ms.saturating_sub(now_ms);
    let clock_flagged = offset_ms.saturating_abs() > limits::CLOCK_OFFSET_FLAG_MS;
    if clock_flagged {
        tracing::warn!(device = %who.device_id, offset_ms, "device clock is off by more than the flag limit");
    }
    let pushed_docs = req.docs.len();
    let pushed = push_with(store, who, req.docs, now_ms, rules)?;
    let accepted: Vec<DocId> = pushed.acks.iter().map(|a| a.doc_id).collect();
    if !accepted.is_empty() {
        store.device_docs_add(device, &accepted)?;
    }
    // Everything committed so far, this push included; handed out only after the flush at the
    // end (which also makes a push of duplicates durable before it is acknowledged).
    let visible = store.last_seq();
    let stored = Stored {
        upto: pushed.upto,
        docs: pushed
            .acks
            .iter()
            .filter(|a| a.stored > 0)
            .map(|a| a.doc_id)
            .collect(),
    };

    // A reconciliation the device confirms is committed first.
    let mut confirmed = false;
    if let Some(p) = new_state.pending.as_mut() {
        if req.confirmed_reconcile == Some(p.id) {
            confirmed = true;
            if commit_confirmed(store, device, p)? {
                new_state.reconciled_epoch = Some(p.epoch);
                new_state.pending = None;
            }
        }
    }

    let mut evictions: Vec<DocId> = Vec::new();
    let mut docs: Vec<DocPull> = Vec::new();
    let mut used = 0usize;
    let mut backfilled = 0usize;
    let mut reconciled = true;
    let mut reconcile_id = None;
    let needs = new_state.pending.is_some() || new_state.reconciled_epoch != Some(epoch);
    if !fresh && needs {
        let stale = new_state.pending.as_ref().map(|p| p.epoch) != Some(epoch);
        if stale {
            // A new reconciliation. What the device may hold: what was committed, plus whatever
            // an unconfirmed earlier response may have given it.
            let committed: BTreeSet<DocId> = store.device_docs(device)?.into_iter().collect();
            let mut held = committed.clone();
            if let Some(p) = &new_state.pending {
                held.extend(sent_unconfirmed(p).iter().copied());
            }
            let may = readable_docs(store, who)?;
            new_state.pending = Some(PendingReconcile {
                id: 0,
                epoch,
                evictions: held.difference(&may).copied().collect(),
                missing: may.difference(&committed).copied().collect(),
                upto: req.cursor.min(visible),
                confirmed: BackfillPos::default(),
                sent: BackfillPos::default(),
            });
        }
        if let Some(p) = new_state.pending.as_mut() {
            if p.evictions.is_empty() && p.confirmed.index >= p.missing.len() {
                // Nothing to send and nothing to confirm.
                new_state.reconciled_epoch = Some(p.epoch);
                new_state.pending = None;
            } else {
                let bf = backfill(store, &p.missing, p.confirmed, p.upto, &pushed.pushed)?;
                p.sent = bf.end;
                p.id = new_reconcile_id();
                reconcile_id = Some(p.id);
                evictions = p.evictions.clone();
                used = bf.bytes;
                backfilled = bf.changes;
                docs = bf.docs;
                reconciled = bf.end.index >= p.missing.len();
            }
        }
    }

    let pulled = if reconciled {
        pull_upto(store, who, req.cursor, &pushed.pushed, used, visible)?
    } else {
        // The backfill filled the page: the cursor stays, the device asks again at once.
        Pulled {
            cursor: req.cursor.min(visible),
            more: true,
            ..Pulled::default()
        }
    };
    let pulled_changes = pulled.changes + backfilled;
    // What the log scan hands out is held from now on (holding more than the server believes is
    // harmless; less would not be), except documents whose backfill awaits confirmation.
    let unconfirmed: HashSet<DocId> = new_state
        .pending
        .as_ref()
        .map(|p| p.missing.iter().copied().collect())
        .unwrap_or_default();
    let held_now: Vec<DocId> = pulled
        .docs
        .iter()
        .map(|d| d.doc_id)
        .filter(|d| !unconfirmed.contains(d) && !evictions.contains(d))
        .collect();
    merge_pulls(&mut docs, pulled.docs);
    // A document evicted in this response is never also sent in it.
    if !evictions.is_empty() {
        docs.retain(|d| !evictions.contains(&d.doc_id));
    }
    let pulled_ids: Vec<DocId> = docs.iter().map(|d| d.doc_id).collect();
    if !held_now.is_empty() {
        store.device_docs_add(device, &held_now)?;
    }
    if new_state != state {
        store.put_device_sync(device, &new_state)?;
    }

    for r in &pushed.rejections {
        if matches!(
            r.code,
            ErrorCode::Forbidden | ErrorCode::ForgedAuthor | ErrorCode::RuleViolation
        ) {
            store.audit_append(
                AuditRecord::new(
                    AuditKind::Refused,
                    now_ms,
                    json!({ "doc_id": r.doc_id, "code": r.code.as_str(), "reason": r.reason }),
                )
                .staff(who.staff_id())
                .device(device),
            )?;
        }
    }
    store.audit_append(
        AuditRecord::new(
            AuditKind::Sync,
            now_ms,
            json!({
                "cursor_in": req.cursor.0,
                "cursor_out": pulled.cursor.0,
                "more": pulled.more,
                "pushed": accepted,
                "stored": pushed.stored,
                "duplicates": pushed.duplicates,
                "quarantined": pushed.quarantined,
                "need_full_history": pushed.need_full_history,
                "rejected": pushed.rejections.iter()
                    .map(|r| json!({"doc_id": r.doc_id, "code": r.code.as_str()}))
                    .collect::<Vec<_>>(),
                "pulled": pulled_ids,
                "pulled_changes": pulled_changes,
                "backfilled_changes": backfilled,
                "evictions": evictions,
                "reconcile_id": reconcile_id,
                "confirmed_reconcile": confirmed.then_some(req.confirmed_reconcile).flatten(),
                "access_epoch": epoch,
                "clock_offset_ms": offset_ms,
                "clock_flagged": clock_flagged,
            }),
        )
        .staff(who.staff_id())
        .device(device),
    )?;
    // The audit entry (and what the device was handed, what it must delete, what it confirmed)
    // is as durable as the answer: one flush even for a pull-only sync.
    store.flush()?;

    tracing::info!(
        device = %who.device_id,
        staff = %who.staff_id(),
        cursor_in = req.cursor.0,
        cursor_out = pulled.cursor.0,
        pushed_docs,
        stored = pushed.stored,
        need_full_history = pushed.need_full_history.len(),
        rejections = pushed.rejections.len(),
        quarantined = pushed.quarantined,
        pulled_docs = pulled_ids.len(),
        pulled_changes,
        backfilled,
        evictions = evictions.len(),
        reconciling = reconcile_id.is_some(),
        confirmed,
        pulled_bytes = used + pulled.bytes,
        more = pulled.more,
        "sync"
    );
    let response = SyncResponse {
        version: PROTOCOL_VERSION,
        cursor: pulled.cursor,
        more: pulled.more,
        server_time_ms: now_ms,
        acks: pushed.acks,
        docs,
        need_full_history: pushed.need_full_history,
        rejections: pushed.rejections,
        evictions,
        log_id,
        reset: false,
        reconcile_id,
        lease: None, // set by the HTTP layer from the server's configuration
    };
    Ok((response, stored))
}
