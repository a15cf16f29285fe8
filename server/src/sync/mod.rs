//! The sync: one request in, one response out, no HTTP (docs/design.md, "Sync").
//!
//! A device pushes, per document, the server heads it last saw (`base`) and the Automerge changes
//! it made since; the server checks and stores what is new under the next global sequence
//! numbers, makes it durable, and hands back every change the device may read above its cursor,
//! paged by bytes; a device's first sync (cursor 0) is handed the documents it may read found
//! through the indexes, not the log from its start ([`reconcile`]). [`handle`] does it in five
//! steps:
//!
//! 1. the Automerge validation of what was pushed, ahead of any write, under locks of the pushed
//!    documents only, reading committed state through a read transaction ([`push`]);
//! 2. write #1, the push: access, dedupe, authorship, the rules' judgements reused, the changes
//!    appended, refusals quarantined and audited, the pushed documents added to the device's
//!    holdings ([`push`]);
//! 3. outside any write transaction, from committed data: the device's state and the access
//!    epoch read, the access reconciliation decided ([`reconcile`]), the log scan and backfill
//!    pages collected ([`pull`]);
//! 4. write #2: the access epoch and the device's state verified to be what step 3 read (if
//!    either moved, a concurrent sync of the device or an access change landed: step 3 runs
//!    again), then the device's new state, its holdings and the sync's audit entry stored, and an
//!    audit entry for each view of a record the device reported ([`views`]);
//! 5. one flush, then the response and the live event ([`handle_announcing`]; on a store whose
//!    commits are durable the live event goes out once step 2 committed); an idle sync
//!    (nothing pushed or reported, nothing handed out, nothing about the device changed, its
//!    cursor within what is durable) asks for the flush and does not wait for it ([`is_idle`]).
//!
//! Durability: the one flush at the end covers everything the sync wrote and everything its pull
//! handed out. The pull may hand out changes committed but not yet flushed (this sync's own, or a
//! concurrent sync's), because the response leaves only after a flush that started after the
//! pull chose its upper bound; so no cursor ever points past what survives a crash. Concurrent
//! syncs share that flush (group commit). An idle sync's answer acknowledges and hands out
//! nothing and its cursor stays within the durable log, so it needs no flush; the audit entry it
//! wrote is durable at the next one, which it asks for.
//!
//! Log id: every response names the store's log id. A request that names another one (the store
//! was restored from backup, or healed a loss found at open), or names this one with a cursor
//! past the end of the log (a backup put back without `admin restored`), is answered with `reset`
//! and nothing else ([`reset`]). A request without one (a new device) is handled normally.
//!
//! It may use the store, the model, [`crate::access`], [`crate::auth`]'s principal and
//! [`crate::validate`]; it is handed the time.

pub mod doc_locks;
pub mod pull;
pub mod push;
pub mod reconcile;
pub mod views;

#[cfg(test)]
mod damage_tests;
#[cfg(test)]
mod first_sync_tests;
#[cfg(test)]
pub(crate) mod idle_tests;

pub use pull::{pull, Pulled};
pub use push::{push, push_with, PushOutcome};

use crate::auth::Principal;
use crate::model::{AuditKind, AuditRecord, DeviceSync};
use crate::store::{self, Store, StoreError, Txn};
use crate::validate::Rules;
use casenote_protocol::wire::{
    DocPull, SealedStub, SyncRequest, SyncResponse, View, PROTOCOL_VERSION,
};
use casenote_protocol::{limits, DocId, Seq};
use reconcile::{Basis, Holdings, Reconciled};
use serde_json::json;

/// What a sync stored, for the live channel: the documents that got changes new to the server
/// and the sequence that covers them (durable once the sync returned).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    pub upto: Seq,
    pub docs: Vec<DocId>,
    /// The access epoch, read in the push's write where the store gives it there (PostgreSQL),
    /// else once what was stored is durable, when something was: the live channel's listeners
    /// decide by it instead of reading it themselves (`feed::Changed::epoch`; a listener decides
    /// readability from the store as it is then, never older than this epoch). `None` when
    /// nothing was stored, or the read failed (a listener then reads it).
    pub epoch: Option<u64>,
}

impl Stored {
    /// What `pushed` stored, with the access epoch its write read or, where the store did not
    /// give it, read now (call it once that is durable) if it stored anything: at most one read
    /// per sync that stored, where each listener woken by the event used to go to the blocking
    /// pool for it.
    fn of(store: &dyn Store, pushed: &PushOutcome) -> Self {
        let docs: Vec<DocId> = pushed
            .acks
            .iter()
            .filter(|a| a.stored > 0)
            .map(|a| a.doc_id)
            .collect();
        let epoch = match docs.is_empty() {
            true => None,
            false => pushed.epoch.or_else(|| store.access_epoch().ok()),
        };
        Stored {
            upto: pushed.upto,
            docs,
            epoch,
        }
    }
}

/// What the device asked, apart from its pushes.
#[derive(Clone, Copy, Debug)]
struct Asked {
    cursor: Seq,
    confirmed: Option<u64>,
    clock_offset_ms: i64,
    clock_flagged: bool,
}

impl Asked {
    fn of(req: &SyncRequest, who: &Principal, now_ms: i64) -> Self {
        let offset_ms = req.device_clock_ms.saturating_sub(now_ms);
        let flagged = offset_ms.saturating_abs() > limits::CLOCK_OFFSET_FLAG_MS;
        if flagged {
            tracing::warn!(device = %who.device_id, offset_ms, "device clock is off by more than the flag limit");
        }
        Asked {
            cursor: req.cursor,
            confirmed: req.confirmed_reconcile,
            clock_offset_ms: offset_ms,
            clock_flagged: flagged,
        }
    }
}

/// Handles one sync request from an authenticated device (the five steps above) and says what it
/// stored, for the live channel.
pub fn handle(
    store: &dyn Store,
    who: &Principal,
    req: SyncRequest,
    now_ms: i64,
    rules: &Rules,
) -> Result<(SyncResponse, Stored), StoreError> {
    let stored = std::cell::RefCell::new(Stored::default());
    let answer = handle_announcing(store, who, req, now_ms, rules, &|s| {
        *stored.borrow_mut() = s;
    })?;
    Ok((answer, stored.into_inner()))
}

/// [`handle`], telling `announce` what the sync stored as soon as it is durable: after the push's
/// commit on a store whose commits are durable ([`Store::durable_at_commit`]: the live event then
/// goes out while the pushing device's own pull is still being planned), else after the sync's
/// flush. Called at most once; not when the sync fails before what it stored is durable.
pub fn handle_announcing(
    store: &dyn Store,
    who: &Principal,
    mut req: SyncRequest,
    now_ms: i64,
    rules: &Rules,
    announce: &dyn Fn(Stored),
) -> Result<SyncResponse, StoreError> {
    let start = store.log_state(crate::break_glass::NEXT_LAPSE_KEY)?;
    let (log_id, next_lapse) = (
        start.log_id,
        start.meta.as_deref().and_then(crate::break_glass::lapse_at),
    );
    if let Some(theirs) = must_reset(who, &req, (log_id, start.last_seq)) {
        return reset(store, who, &req, (theirs, log_id), now_ms);
    }
    // A break-glass grant that lapsed is taken away first, so this sync already evicts it.
    if next_lapse.is_some_and(|at| at <= now_ms) {
        crate::break_glass::lapse(store, now_ms)?;
    }
    let asked = Asked::of(&req, who, now_ms);
    let pushed_docs = req.docs.len();
    let new_access = std::mem::take(&mut req.restricted);
    let docs = (std::mem::take(&mut req.docs), new_access);
    let pushed = push::push_with_access(store, who, docs, now_ms, rules)?;
    let early = store.durable_at_commit();
    if early && pushed.stored > 0 {
        announce(Stored::of(store, &pushed));
    }
    let (planned, views_through) =
        pull_and_commit(store, who, &asked, (&pushed, &req.views), now_ms)?;
    if is_idle(pushed_docs, &req.views, &planned, || store.durable_seq())? {
        store.flush_soon();
    } else {
        store.flush()?;
    }
    log_sync(who, &asked, pushed_docs, &pushed, &planned);
    count(&pushed, planned.pulled_changes);
    if !early && pushed.stored > 0 {
        announce(Stored::of(store, &pushed));
    }
    let mut answer = response(log_id, now_ms, pushed, planned);
    answer.views_through = views_through;
    Ok(answer)
}

/// Whether a sync is idle: it pushed nothing and reported no view (its answer acknowledges
/// nothing), it is handed nothing (no change, eviction, stub or reconciliation), the device's
/// state and holdings stay as they were, and its cursor moves only over what is durable already.
/// Its answer then depends on nothing that is not durable, so it waits for no flush (step 5):
/// the sync's audit entry, the one thing it wrote, becomes durable at the flush it asks for
/// without waiting, and a crash before that loses only the entry that says it asked and got
/// nothing. Any other sync waits.
///
/// `durable` is asked last, only of a sync that is idle by every other test (a store read: on
/// PostgreSQL a round trip that a sync which pushed used to make for nothing).
fn is_idle(
    pushed_docs: usize,
    views: &[View],
    planned: &Planned,
    durable: impl FnOnce() -> Result<Seq, StoreError>,
) -> Result<bool, StoreError> {
    let h = &planned.holdings;
    let otherwise = pushed_docs == 0
        && views.is_empty()
        && planned.docs.is_empty()
        && planned.evictions.is_empty()
        && planned.sealed.is_empty()
        && planned.reconcile_id.is_none()
        && !planned.confirmed
        && !h.clear
        && h.add.is_empty()
        && h.remove.is_empty()
        && Some(&planned.state) == planned.seen.as_ref();
    Ok(otherwise && planned.cursor <= durable()?)
}

/// A push that arrives outside a sync request (the automerge-repo endpoint, `GET /v1/repo`):
/// the same [`push_with`] as step 2 of [`handle`] (access, authorship, the record rules,
/// quarantine, refusals audited), then an audit entry for the push, then one flush; only then
/// may the caller acknowledge anything. `via` names the path in the audit entry.
pub fn push_durably(
    store: &dyn Store,
    who: &Principal,
    docs: Vec<casenote_protocol::wire::DocPush>,
    now_ms: i64,
    rules: &Rules,
    via: &'static str,
) -> Result<(PushOutcome, Stored), StoreError> {
    let pushed = push_with(store, who, docs, now_ms, rules)?;
    let accepted: Vec<DocId> = pushed.acks.iter().map(|a| a.doc_id).collect();
    let rejected: Vec<_> = pushed
        .rejections
        .iter()
        .map(|r| json!({"doc_id": r.doc_id, "code": r.code.as_str()}))
        .collect();
    let record = AuditRecord::new(
        AuditKind::Sync,
        now_ms,
        json!({
            "via": via,
            "pushed": accepted,
            "stored": pushed.stored,
            "duplicates": pushed.duplicates,
            "quarantined": pushed.quarantined,
            "need_full_history": pushed.need_full_history,
            "rejected": rejected,
        }),
    )
    .staff(who.staff_id())
    .device(who.device_id);
    store::write(store, |txn| txn.audit_append(record.clone()))?;
    store.flush()?;
    count(&pushed, 0);
    let stored = Stored::of(store, &pushed);
    Ok((pushed, stored))
}

/// The metrics of one durable push and the changes its answer pulled.
fn count(pushed: &PushOutcome, pulled_changes: usize) {
    crate::metrics::synced(
        pushed.stored,
        pulled_changes,
        pushed.quarantined,
        pushed.rejections.iter().map(|r| r.code),
    );
}

/// The device's log id, when it must reset: another log's, or this one's with a cursor past the
/// end of the log (the store lost what it handed the device: a backup put back without `admin
/// restored`).
fn must_reset(
    who: &Principal,
    req: &SyncRequest,
    (ours, last): (uuid::Uuid, Seq),
) -> Option<uuid::Uuid> {
    let theirs = req.log_id?;
    if theirs != ours {
        return Some(theirs);
    }
    if req.cursor > last {
        tracing::warn!(device = %who.device_id, cursor_in = req.cursor.0, last_seq = last.0, "the device's cursor is past this store's log");
        return Some(theirs);
    }
    None
}

/// The answer to a device whose log id is not the store's (or whose cursor is past its log):
/// reset, and nothing else; nothing pushed is applied, nothing pulled. Audited and flushed.
fn reset(
    store: &dyn Store,
    who: &Principal,
    req: &SyncRequest,
    (theirs, ours): (uuid::Uuid, uuid::Uuid),
    now_ms: i64,
) -> Result<SyncResponse, StoreError> {
    let record = AuditRecord::new(
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
    .device(who.device_id);
    store::write(store, |txn| txn.audit_append(record.clone()))?;
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
        views_through: None,
        sealed: Vec::new(),
    })
}

/// What step 3 read and decided, for step 4 to commit and the response to carry.
struct Planned {
    /// What step 3 read: the access epoch and the device's state.
    epoch: u64,
    seen: Option<DeviceSync>,
    /// The device's state to store.
    state: DeviceSync,
    holdings: Holdings,
    confirmed: bool,
    evictions: Vec<DocId>,
    reconcile_id: Option<u64>,
    /// Every document this response carries (backfill and log scan, merged).
    docs: Vec<DocPull>,
    cursor: Seq,
    more: bool,
    pulled_changes: usize,
    backfilled: usize,
    pulled_bytes: usize,
    /// Log entries the log scan read.
    log_scanned: usize,
    /// The stubs of the sealed sections this response tells the device of.
    sealed: Vec<SealedStub>,
}

/// Steps 3 and 4: plans the pull from committed data (through `Store::read_each_txn`: no one
/// snapshot is needed, as the commit checks again the epoch and the device's state the plan
/// read, and the log below the last sequence it read first does not move), then commits the
/// device's state (and the views it reported, [`views`]) if what the plan read still holds;
/// runs the plan again when it does not (up to `limits::STORE_WRITE_RETRIES` times). Returns the
/// plan and the highest view of the device now recorded.
fn pull_and_commit(
    store: &dyn Store,
    who: &Principal,
    asked: &Asked,
    (pushed, seen_views): (&PushOutcome, &[View]),
    now_ms: i64,
) -> Result<(Planned, Option<u64>), StoreError> {
    let mut attempt = 0;
    loop {
        let planned = store::read_each(store, |txn| plan(txn, who, asked, pushed))?;
        let record = sync_record(who, asked, pushed, &planned, now_ms);
        let committed = store::write(store, |txn| {
            match commit(txn, who, &planned, record.clone())? {
                Ok(()) => views::record(txn, who, seen_views, now_ms).map(Ok),
                Err(moved) => Ok(Err(moved)),
            }
        })?;
        match committed {
            Ok(through) => return Ok((planned, through)),
            Err(Moved) if attempt < limits::STORE_WRITE_RETRIES => {
                attempt += 1;
                store::back_off(attempt);
            }
            Err(Moved) => return Err(StoreError::Conflict),
        }
    }
}

/// What step 3 decided before the log scan: the epoch and state it read, the state and holdings
/// to commit, whether the device confirmed, and the reconciliation's part of the response.
struct Decided {
    epoch: u64,
    seen: Option<DeviceSync>,
    state: DeviceSync,
    holdings: Holdings,
    confirmed: bool,
    rec: Reconciled,
}

/// Step 3: reads how far the log goes (`visible`), the access epoch and the device's state,
/// decides the reconciliation, and collects the pages of changes (in `(cursor, visible]`) the
/// response hands out.
fn plan(
    txn: &mut dyn Txn,
    who: &Principal,
    asked: &Asked,
    pushed: &PushOutcome,
) -> Result<Planned, StoreError> {
    let basis = txn.sync_basis(who.device_id, who.staff_id(), crate::controllers::META_KEY)?;
    let (seen, epoch, visible) = (basis.state.clone(), basis.access_epoch, basis.last_seq);
    let who = &as_of_epoch(txn, who, basis)?;
    let fresh = asked.cursor == Seq(0) && !reconcile::continues(seen.as_ref(), asked.confirmed);
    let (mut state, mut holdings) = if fresh {
        fresh_start(pushed)
    } else {
        (seen.clone().unwrap_or_default(), Holdings::default())
    };
    let confirmed = !fresh && reconcile::confirm(&mut state, asked.confirmed, &mut holdings);
    let basis = Basis {
        epoch,
        cursor: asked.cursor,
        visible,
        skip: &pushed.pushed,
    };
    let rec = reconcile::reconcile(txn, who, &mut state, &basis, &holdings)?;
    let decided = Decided {
        epoch,
        seen,
        state,
        holdings,
        confirmed,
        rec,
    };
    finish_plan(txn, who, (asked, pushed, visible), decided)
}

/// `who` as the transaction that read the access epoch sees them. The request was authenticated
/// before that read, and an access change in between (a team left, an organisation's agreements)
/// must not be reconciled at the new epoch with the permissions from before it: the device would
/// keep what it may no longer read until the next change. A member of staff gone from the store
/// reads nothing. `basis` is what the transaction read first: the member of staff and the
/// controllers' state, with the epoch.
fn as_of_epoch(
    txn: &mut dyn Txn,
    who: &Principal,
    basis: store::SyncBasis,
) -> Result<Principal, StoreError> {
    let staff = match basis.staff {
        Some(staff) => staff,
        None => crate::model::Staff {
            revoked: true,
            ..who.staff.clone()
        },
    };
    let sharing = crate::controllers::current_of(txn, basis.meta)?;
    Ok(Principal {
        device_id: who.device_id,
        shares: crate::controllers::shares_in(&sharing, staff.org_id),
        staff,
    })
}

/// A device starting from nothing (cursor 0, nothing of a first sync to confirm) holds nothing
/// the server handed it but what it just pushed, and has never been reconciled: its first sync
/// is a reconciliation ([`reconcile`]) that backfills every document it may read, found through
/// the indexes, rather than a walk of the whole log.
fn fresh_start(pushed: &PushOutcome) -> (DeviceSync, Holdings) {
    let holdings = Holdings {
        clear: true,
        remove: Vec::new(),
        add: pushed.acks.iter().map(|a| a.doc_id).collect(),
    };
    (DeviceSync::default(), holdings)
}

/// The rest of step 3: the log scan (unless the backfill filled the page), and what the device
/// holds from now on.
fn finish_plan(
    txn: &mut dyn Txn,
    who: &Principal,
    (asked, pushed, visible): (&Asked, &PushOutcome, Seq),
    d: Decided,
) -> Result<Planned, StoreError> {
    let Decided {
        epoch,
        seen,
        state,
        mut holdings,
        confirmed,
        rec,
    } = d;
    let pulled = if rec.page_full {
        // The backfill filled the page: the cursor stays, the device asks again at once.
        Pulled {
            cursor: asked.cursor.min(visible),
            more: true,
            ..Pulled::default()
        }
    } else {
        // A first sync's completed backfill covered the log up to `scan_from`.
        let range = (asked.cursor.max(rec.scan_from), visible);
        pull::pull_upto(txn, who, range, &pushed.pushed, rec.backfill.bytes)?
    };
    holdings
        .add
        .extend(reconcile::held_now(&pulled.docs, &state, &rec.evictions));
    let mut docs = rec.backfill.docs;
    pull::merge_pulls(&mut docs, pulled.docs);
    // A document evicted in this response is never also sent in it.
    docs.retain(|d| !rec.evictions.contains(&d.doc_id));
    let mut sealed_ids = rec.sealed;
    sealed_ids.extend(pulled.sealed);
    sealed_ids.retain(|s| !docs.iter().any(|d| d.doc_id == *s));
    let sealed = crate::sealed::stubs(txn, &sealed_ids)?;
    Ok(Planned {
        epoch,
        seen,
        state,
        holdings,
        confirmed,
        evictions: rec.evictions,
        reconcile_id: rec.reconcile_id,
        docs,
        cursor: pulled.cursor,
        more: pulled.more,
        pulled_changes: pulled.changes + rec.backfill.changes,
        backfilled: rec.backfill.changes,
        pulled_bytes: rec.backfill.bytes + pulled.bytes,
        log_scanned: pulled.scanned,
        sealed,
    })
}

/// What step 3 read moved before step 4 could commit it.
struct Moved;

/// Step 4: if the access epoch and the device's state are still what step 3 read, stores the
/// device's new state and holdings and the sync's audit entry.
fn commit(
    txn: &mut dyn Txn,
    who: &Principal,
    planned: &Planned,
    record: AuditRecord,
) -> Result<Result<(), Moved>, StoreError> {
    let device = who.device_id;
    let (seen, epoch) = txn.device_sync_at_epoch(device)?;
    if epoch != planned.epoch || seen != planned.seen {
        return Ok(Err(Moved));
    }
    let h = &planned.holdings;
    if h.clear {
        txn.device_docs_clear(device)?;
    }
    if !h.remove.is_empty() {
        txn.device_docs_remove(device, &h.remove)?;
    }
    if !h.add.is_empty() {
        txn.device_docs_add(device, &h.add)?;
    }
    if planned.state != planned.seen.clone().unwrap_or_default() {
        txn.put_device_sync(device, &planned.state)?;
    }
    txn.audit_append(record)?;
    Ok(Ok(()))
}

/// The sync's audit entry: what was pushed and pulled, the reconciliation, the clock.
fn sync_record(
    who: &Principal,
    asked: &Asked,
    pushed: &PushOutcome,
    planned: &Planned,
    now_ms: i64,
) -> AuditRecord {
    let accepted: Vec<DocId> = pushed.acks.iter().map(|a| a.doc_id).collect();
    let pulled: Vec<DocId> = planned.docs.iter().map(|d| d.doc_id).collect();
    let rejected: Vec<_> = pushed
        .rejections
        .iter()
        .map(|r| json!({"doc_id": r.doc_id, "code": r.code.as_str()}))
        .collect();
    AuditRecord::new(
        AuditKind::Sync,
        now_ms,
        json!({
            "cursor_in": asked.cursor.0,
            "cursor_out": planned.cursor.0,
            "more": planned.more,
            "pushed": accepted,
            "stored": pushed.stored,
            "duplicates": pushed.duplicates,
            "quarantined": pushed.quarantined,
            "need_full_history": pushed.need_full_history,
            "rejected": rejected,
            "pulled": pulled,
            "pulled_changes": planned.pulled_changes,
            "backfilled_changes": planned.backfilled,
            "log_scanned": planned.log_scanned,
            "evictions": planned.evictions,
            "reconcile_id": planned.reconcile_id,
            "confirmed_reconcile": planned.confirmed.then_some(asked.confirmed).flatten(),
            "access_epoch": planned.epoch,
            "clock_offset_ms": asked.clock_offset_ms,
            "clock_flagged": asked.clock_flagged,
        }),
    )
    .staff(who.staff_id())
    .device(who.device_id)
}

fn log_sync(
    who: &Principal,
    asked: &Asked,
    pushed_docs: usize,
    pushed: &PushOutcome,
    planned: &Planned,
) {
    tracing::info!(
        device = %who.device_id,
        staff = %who.staff_id(),
        cursor_in = asked.cursor.0,
        cursor_out = planned.cursor.0,
        pushed_docs,
        stored = pushed.stored,
        need_full_history = pushed.need_full_history.len(),
        rejections = pushed.rejections.len(),
        quarantined = pushed.quarantined,
        pulled_docs = planned.docs.len(),
        pulled_changes = planned.pulled_changes,
        backfilled = planned.backfilled,
        evictions = planned.evictions.len(),
        reconciling = planned.reconcile_id.is_some(),
        confirmed = planned.confirmed,
        pulled_bytes = planned.pulled_bytes,
        log_scanned = planned.log_scanned,
        more = planned.more,
        "sync"
    );
}

fn response(
    log_id: uuid::Uuid,
    now_ms: i64,
    pushed: PushOutcome,
    planned: Planned,
) -> SyncResponse {
    SyncResponse {
        version: PROTOCOL_VERSION,
        cursor: planned.cursor,
        more: planned.more,
        server_time_ms: now_ms,
        acks: pushed.acks,
        docs: planned.docs,
        need_full_history: pushed.need_full_history,
        rejections: pushed.rejections,
        evictions: planned.evictions,
        log_id,
        reset: false,
        reconcile_id: planned.reconcile_id,
        lease: None, // set by the HTTP layer from the server's configuration
        views_through: None,
        sealed: planned.sealed,
    }
}
