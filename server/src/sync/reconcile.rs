//! Access reconciliation: what a device must delete and what it must be given when who may see
//! what changed (docs/design.md, "Access"). Part of step 3 of a sync ([`crate::sync`]); what it
//! decides is committed by step 4 only if the device's state and the access epoch it read still
//! hold.
//!
//! The server remembers which documents it handed each device (its holdings) and the access
//! epoch the device was last reconciled at. When an admin changes access the epoch moves, and the
//! device's next sync is reconciled: documents it holds but may no longer read are sent as
//! `evictions`; documents it may now read but never got are backfilled from their full history,
//! paged like a pull (the cursor does not move until the backfill is done). The reconciliation is
//! kept in the device's state ([`PendingReconcile`]) and every response that carries part of it
//! has a fresh random `reconcile_id`; nothing about the device's holdings is committed until the
//! device echoes that id as `confirmed_reconcile`. Without the confirmation the next response
//! carries the same evictions and the backfill again from where the device last confirmed, so a
//! lost response costs a re-send, never a device that keeps what it should have deleted. A
//! confirmation of the last page completes the reconciliation. If the epoch moves again before
//! that, a new reconciliation starts, counting as held both what was committed and what the
//! unconfirmed response may have delivered. With an unchanged epoch and nothing pending a sync
//! costs no per-document work.
//!
//! A device's first sync is a reconciliation too. A device at cursor 0 with nothing of a first
//! sync to confirm starts from nothing (new, wiped, or started over on another log): its holdings
//! are cleared and it is reconciled from scratch, with `missing` every document it may read,
//! found through the team → cases → documents indexes ([`access::visible_docs`]), and `upto` the
//! end of the log as the sync sees it. The backfill pages with the cursor kept at 0; the response
//! that completes it moves the cursor to `upto` (and scans the log above it, for what was
//! committed meanwhile), so the log is never walked from the start. A device at cursor 0 that
//! echoes the confirmation before the last response lost that response and gets the backfill
//! again from what it confirmed ([`continues`]).

use super::pull::{backfill, Backfill};
use crate::access;
use crate::auth::Principal;
use crate::model::{BackfillPos, DeviceSync, PendingReconcile};
use crate::store::{StoreError, Txn};
use casenote_protocol::wire::{DocPull, Hash};
use casenote_protocol::{DocId, Seq};
use std::collections::{BTreeSet, HashSet};

/// Changes to a device's holdings that step 4 commits: cleared first (a device starting from
/// nothing), then `remove` taken out, then `add` put in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Holdings {
    pub(crate) clear: bool,
    pub(crate) remove: Vec<DocId>,
    pub(crate) add: Vec<DocId>,
}

impl Holdings {
    /// What the device holds once these changes are committed, from what is committed now.
    fn applied_to(&self, committed: Vec<DocId>) -> BTreeSet<DocId> {
        let mut held: BTreeSet<DocId> = if self.clear {
            BTreeSet::new()
        } else {
            committed.into_iter().collect()
        };
        for d in &self.remove {
            held.remove(d);
        }
        held.extend(self.add.iter().copied());
        held
    }
}

/// What the reconciliation puts in this response.
#[derive(Debug, Default)]
pub(crate) struct Reconciled {
    pub(crate) evictions: Vec<DocId>,
    /// The backfill's page.
    pub(crate) backfill: Backfill,
    pub(crate) reconcile_id: Option<u64>,
    /// The backfill filled the page: no log scan in this response, the cursor stays.
    pub(crate) page_full: bool,
    /// The sealed sections the device is told of, as of the reconciliation (sent with each of
    /// its responses, so a lost one costs nothing).
    pub(crate) sealed: Vec<DocId>,
    /// Where this response's log scan starts if later than the device's cursor: the position a
    /// first sync's backfill covered, once the backfill is complete ([`PendingReconcile::upto`];
    /// for any other reconciliation it is at most the device's cursor).
    pub(crate) scan_from: Seq,
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

/// When the device confirms `state`'s pending reconciliation (`confirmed` is its id): what the
/// last response carried goes into `holdings` (the evictions leave, the documents whose history
/// was sent in full join), and a reconciliation whose last page that was completes. Returns
/// whether the device confirmed.
pub(crate) fn confirm(
    state: &mut DeviceSync,
    confirmed: Option<u64>,
    holdings: &mut Holdings,
) -> bool {
    let Some(p) = state.pending.as_mut() else {
        return false;
    };
    if confirmed != Some(p.id) {
        return false;
    }
    holdings.remove.append(&mut p.evictions);
    let from = p.confirmed.index.min(p.missing.len());
    let to = p.sent.index.min(p.missing.len()).max(from);
    holdings.add.extend_from_slice(&p.missing[from..to]);
    p.confirmed = p.sent;
    p.confirmed_id = Some(p.id);
    if p.confirmed.index >= p.missing.len() {
        state.reconciled_epoch = Some(p.epoch);
        state.pending = None;
    }
    true
}

/// Whether a device at cursor 0 is part-way through its first sync rather than starting from
/// nothing: it confirms the last response of its pending reconciliation, or echoes the
/// confirmation before that one (that response was lost; what it confirmed, the device holds).
/// A device starting from nothing (new, wiped, or started over on another log) confirms nothing.
pub(crate) fn continues(state: Option<&DeviceSync>, confirmed: Option<u64>) -> bool {
    let Some(p) = state.and_then(|s| s.pending.as_ref()) else {
        return false;
    };
    confirmed.is_some() && (confirmed == Some(p.id) || confirmed == p.confirmed_id)
}

/// What a reconciliation reads: the access epoch, the device's cursor, the highest sequence the
/// response may hand out, and the changes the device just pushed (it has them).
pub(crate) struct Basis<'a> {
    pub(crate) epoch: u64,
    pub(crate) cursor: Seq,
    pub(crate) visible: Seq,
    pub(crate) skip: &'a HashSet<(DocId, Hash)>,
}

/// Decides the reconciliation this response carries, if `state` needs one (the epoch moved, or
/// one is pending): starts a new one when the epoch moved since the pending one was computed,
/// completes one with nothing left to send, else pages its backfill. `holdings` are the changes
/// this sync will commit (a confirmation's).
pub(crate) fn reconcile(
    txn: &mut dyn Txn,
    who: &Principal,
    state: &mut DeviceSync,
    basis: &Basis<'_>,
    holdings: &Holdings,
) -> Result<Reconciled, StoreError> {
    let needs = state.pending.is_some() || state.reconciled_epoch != Some(basis.epoch);
    if !needs {
        return Ok(Reconciled::default());
    }
    if state.pending.as_ref().map(|p| p.epoch) != Some(basis.epoch) {
        state.pending = Some(start(txn, who, state.pending.as_ref(), basis, holdings)?);
    }
    let Some(p) = state.pending.as_mut() else {
        return Ok(Reconciled::default());
    };
    if p.evictions.is_empty() && p.confirmed.index >= p.missing.len() {
        // Nothing to send and nothing to confirm but the stubs (a device told of a sealed
        // section twice keeps one).
        let sealed = std::mem::take(&mut p.sealed);
        let scan_from = p.upto;
        state.reconciled_epoch = Some(p.epoch);
        state.pending = None;
        return Ok(Reconciled {
            sealed,
            scan_from,
            ..Reconciled::default()
        });
    }
    let page = backfill(txn, &p.missing, (p.confirmed, p.upto), basis.skip)?;
    p.sent = page.end;
    p.id = new_reconcile_id();
    Ok(Reconciled {
        evictions: p.evictions.clone(),
        page_full: page.end.index < p.missing.len(),
        reconcile_id: Some(p.id),
        backfill: page,
        sealed: p.sealed.clone(),
        scan_from: p.upto,
    })
}

/// A new reconciliation at `basis.epoch`. What the device may hold: what was committed (with
/// this sync's `holdings` applied), plus whatever an unconfirmed earlier response (`earlier`) may
/// have given it.
fn start(
    txn: &mut dyn Txn,
    who: &Principal,
    earlier: Option<&PendingReconcile>,
    basis: &Basis<'_>,
    holdings: &Holdings,
) -> Result<PendingReconcile, StoreError> {
    let committed = holdings.applied_to(txn.device_docs(who.device_id)?);
    let mut held = committed.clone();
    if let Some(p) = earlier {
        held.extend(sent_unconfirmed(p).iter().copied());
    }
    let visible = access::visible_docs(txn, who)?;
    let may = visible.readable;
    // At cursor 0 (a first sync) no log scan has covered anything: every readable document's
    // history up to now is backfilled, even one the device holds (it pushed it, or got it in an
    // earlier first sync whose access epoch moved), and the cursor then moves to `upto`.
    let (missing, upto) = if basis.cursor == Seq(0) {
        (may.iter().copied().collect(), basis.visible)
    } else {
        let missing = may.difference(&committed).copied().collect();
        (missing, basis.cursor.min(basis.visible))
    };
    Ok(PendingReconcile {
        sealed: visible.sealed.into_iter().collect(),
        id: 0,
        confirmed_id: None,
        epoch: basis.epoch,
        evictions: held.difference(&may).copied().collect(),
        missing,
        upto,
        confirmed: BackfillPos::default(),
        sent: BackfillPos::default(),
    })
}

/// The documents a response hands out that the device holds from now on (holding more than the
/// server believes is harmless; less would not be), except documents whose backfill awaits
/// confirmation and documents it is told to delete.
pub(crate) fn held_now(docs: &[DocPull], state: &DeviceSync, evictions: &[DocId]) -> Vec<DocId> {
    let unconfirmed: HashSet<DocId> = state
        .pending
        .as_ref()
        .map(|p| p.missing.iter().copied().collect())
        .unwrap_or_default();
    docs.iter()
        .map(|d| d.doc_id)
        .filter(|d| !unconfirmed.contains(d) && !evictions.contains(d))
        .collect()
}
