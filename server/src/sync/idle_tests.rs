//! Tests of step 5 of a sync ([`super::handle`]): an idle sync (nothing pushed or reported,
//! nothing handed out, nothing about the device changed, its cursor within the durable log) is
//! answered without waiting for a flush, and its audit entry still becomes durable at the flush
//! it asks for; every other sync still waits for its flush. The flusher is held (no flush starts)
//! and the flush wait is short, so a sync that waits is answered `Unwritable`. And what the live
//! channel is told, and when: the access epoch with what was stored, once it is durable
//! ([`audit_at_announcement`] is run on PostgreSQL too, by its backend's tests).

use crate::auth::Principal;
use crate::model::{CaseRecord, DocHeader, DocRecord, NewChange};
use crate::store::sled::SledStore;
use crate::store::{self, Store, StoreError};
use crate::testkit;
use crate::validate::Rules;
use casenote_protocol::wire::{Hash, SyncRequest, SyncResponse, View, ViewKind, PROTOCOL_VERSION};
use casenote_protocol::{DocId, DocKind, Seq};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A store with one team, a member of staff and a device of theirs, and one case of the team.
struct Desk {
    _dir: tempfile::TempDir,
    store: Arc<SledStore>,
    who: Principal,
    case: CaseRecord,
}

impl Desk {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        let (who, case) = testkit::alice_with_case(&*store);
        Desk {
            _dir: dir,
            store,
            who,
            case,
        }
    }

    fn s(&self) -> &dyn Store {
        &*self.store
    }

    /// A new document of the case with one change (of arbitrary bytes: relaying never reads
    /// them), committed and not flushed.
    fn add_doc(&self) -> DocId {
        let doc_id = DocId::new_random();
        let hash = Hash(rand::random::<[u8; 32]>());
        let rec = DocRecord {
            header: DocHeader {
                doc_id,
                case_id: self.case.case_id,
                kind: DocKind::Plan,
                owner_org: self.case.owner_org,
                access_teams: None,
                created_by: self.who.staff_id(),
                created_ms: 0,
                sealed: false,
                grants: Vec::new(),
            },
            heads: vec![hash],
            ops: 0,
            filed_ms: None,
        };
        let change = NewChange {
            doc_id,
            hash,
            bytes: vec![7; 64],
            received_at_ms: 0,
        };
        store::write(self.s(), |t| {
            t.put_doc(&rec)?;
            t.append_change(&change).map(|_| ())
        })
        .unwrap();
        doc_id
    }

    fn sync(&self, cursor: Seq, views: Vec<View>) -> Result<SyncResponse, StoreError> {
        self.sync_confirming(cursor, None, views)
    }

    fn sync_confirming(
        &self,
        cursor: Seq,
        confirmed_reconcile: Option<u64>,
        views: Vec<View>,
    ) -> Result<SyncResponse, StoreError> {
        let now = crate::now_ms();
        let log_id = store::read(self.s(), |t| t.log_id()).unwrap();
        let req = SyncRequest {
            version: PROTOCOL_VERSION,
            cursor,
            device_clock_ms: now,
            docs: Vec::new(),
            log_id: Some(log_id),
            confirmed_reconcile,
            views,
            restricted: Vec::new(),
        };
        super::handle(self.s(), &self.who, req, now, &Rules::default()).map(|(r, _)| r)
    }

    /// The device's first sync (a reconciliation) and its confirmation, all flushed: from then on
    /// it holds everything and its state is settled.
    fn settled(&self) -> Seq {
        let first = self.sync(Seq(0), Vec::new()).unwrap();
        assert!(!first.more && first.reconcile_id.is_some());
        let confirmed = self
            .sync_confirming(first.cursor, first.reconcile_id, Vec::new())
            .unwrap();
        assert!(confirmed.reconcile_id.is_none() && confirmed.docs.is_empty());
        self.s().flush().unwrap();
        confirmed.cursor
    }

    /// Holds the flusher: a sync that waits for a flush is answered `Unwritable` after 200 ms.
    fn hold(&self) {
        self.store.set_flush_wait(Duration::from_millis(200));
        self.store.hold_flushes(true);
    }

    /// The audit chain's last entry.
    fn audit_last(&self) -> u64 {
        let mut last = 0;
        self.s()
            .audit_scan(&mut |seq, _| {
                last = seq;
                true
            })
            .unwrap();
        last
    }
}

#[test]
fn an_idle_sync_is_answered_without_waiting_for_a_flush_and_its_audit_entry_becomes_durable() {
    let desk = Desk::new();
    desk.add_doc();
    let cursor = desk.settled();
    let anchored = desk.s().audit_anchor().unwrap().unwrap().0;
    let flushes = desk.store.flush_count();
    desk.hold();
    let started = Instant::now();
    let idle = desk
        .sync(cursor, Vec::new())
        .expect("an idle sync needs no flush");
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "the idle sync waited for the held flush: {:?}",
        started.elapsed()
    );
    assert!(idle.docs.is_empty() && idle.acks.is_empty() && !idle.more);
    assert_eq!(idle.cursor, cursor);
    let entry = desk.audit_last();
    assert!(entry > anchored, "the idle sync was audited");
    // The flush it asked for runs once the flusher may, with no other caller asking. (The
    // flusher counts a flush after writing its mark, so both are waited for.)
    desk.store.hold_flushes(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while desk.s().audit_anchor().unwrap().unwrap().0 < entry || desk.store.flush_count() == flushes
    {
        assert!(
            Instant::now() < deadline,
            "no flush made the idle sync's audit entry durable"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_sync_that_hands_out_a_change_or_acknowledges_a_view_still_waits_for_its_flush() {
    let desk = Desk::new();
    desk.add_doc();
    let cursor = desk.settled();
    desk.hold();
    // A change committed and not yet durable: handing it out needs the flush.
    desk.add_doc();
    let err = desk.sync(cursor, Vec::new()).unwrap_err();
    assert!(matches!(err, StoreError::Unwritable(_)), "{err}");
    desk.store.hold_flushes(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !desk.s().writability().writable {
        assert!(Instant::now() < deadline, "the store never became writable");
        std::thread::sleep(Duration::from_millis(10));
    }
    let got = desk.sync(cursor, Vec::new()).unwrap();
    assert_eq!(got.docs.len(), 1);
    desk.s().flush().unwrap();
    // A view reported: its acknowledgement (`views_through`) needs the flush.
    desk.hold();
    let view = View {
        stream: uuid::Uuid::new_v4(),
        seq: 1,
        case_id: desk.case.case_id,
        kind: ViewKind::Show,
        device_time_ms: 0,
    };
    let err = desk.sync(got.cursor, vec![view]).unwrap_err();
    assert!(matches!(err, StoreError::Unwritable(_)), "{err}");
}

/// What a sync tells the live channel carries the access epoch as it is after the sync (read
/// once, by the sync, rather than by each listener), and only when the sync stored something.
#[test]
fn what_a_sync_stored_carries_the_access_epoch_read_after_it() {
    let desk = Desk::new();
    desk.add_doc();
    let cursor = desk.settled();
    let bumped = store::write(desk.s(), |t| t.bump_access_epoch()).unwrap();
    let mut plan = testkit::new_plan(&desk.who, desk.case.case_id);
    let doc = DocId::new_random();
    let now = crate::now_ms();
    let request = |docs| SyncRequest {
        version: PROTOCOL_VERSION,
        cursor,
        device_clock_ms: now,
        docs,
        log_id: Some(store::read(desk.s(), |t| t.log_id()).unwrap()),
        confirmed_reconcile: None,
        views: Vec::new(),
        restricted: Vec::new(),
    };
    let push = testkit::plan_push(&mut plan, &[], (doc, desk.case.case_id));
    let (_, stored) = super::handle(
        desk.s(),
        &desk.who,
        request(vec![push]),
        now,
        &Rules::default(),
    )
    .unwrap();
    assert_eq!(stored.docs, vec![doc]);
    assert_eq!(stored.epoch, Some(bumped));
    let (_, idle) = super::handle(
        desk.s(),
        &desk.who,
        request(Vec::new()),
        now,
        &Rules::default(),
    )
    .unwrap();
    assert!(idle.docs.is_empty());
    assert_eq!(idle.epoch, None, "nothing stored, nothing read");
}

/// A new device's member of staff pushes a new plan through [`super::handle_announcing`]: the
/// audit entries there were when the live channel was told, the entries when the sync returned,
/// and the documents it was told of; checks the epoch it was told is the store's.
pub(crate) fn audit_at_announcement(store: &dyn crate::store::Store) -> (usize, usize, Vec<DocId>) {
    use std::cell::RefCell;
    let (who, case) = testkit::alice_with_case(store);
    let mut plan = testkit::new_plan(&who, case.case_id);
    let push = testkit::plan_push(&mut plan, &[], (DocId::new_random(), case.case_id));
    let req = SyncRequest {
        version: PROTOCOL_VERSION,
        cursor: Seq(0),
        device_clock_ms: 0,
        docs: vec![push],
        log_id: None,
        confirmed_reconcile: None,
        views: Vec::new(),
        restricted: Vec::new(),
    };
    let audited = || {
        let mut n = 0;
        store
            .audit_scan(&mut |_, _| {
                n += 1;
                true
            })
            .unwrap();
        n
    };
    let told = RefCell::new(None);
    let announce = |s: super::Stored| *told.borrow_mut() = Some((audited(), s.docs, s.epoch));
    super::handle_announcing(store, &who, req, 0, &Rules::default(), &announce).unwrap();
    let (at, docs, epoch) = told.into_inner().expect("the live channel was told");
    let now = crate::store::read(store, |t| t.access_epoch()).unwrap();
    assert_eq!(epoch, Some(now), "the live event carries the access epoch");
    (at, audited(), docs)
}

/// On sled a commit is durable only at the sync's flush: the live channel is told last, after
/// the sync's own audit entry.
#[test]
fn on_sled_the_live_channel_is_told_after_the_syncs_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::sled::open(dir.path()).unwrap();
    let (at, after, docs) = audit_at_announcement(&*store);
    assert_eq!(docs.len(), 1);
    assert_eq!(at, after, "told before the sync's audit entry");
}
