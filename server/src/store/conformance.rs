//! The store contract in tests: one suite, written once against `dyn Store`, that every backend
//! runs ([`conformance_tests!`]). A backend's test module gives it a [`Factory`] (a fresh store,
//! and the same store opened again) and the macro makes one `#[test]` per check, so a failure
//! names what the backend got wrong.
//!
//! What it holds a backend to: consecutive sequences that survive a reopen; reads that see the
//! transaction's own writes; a failed transaction leaves nothing, and [`crate::store::write`]
//! runs a conflicting one again whole; the indexes kept in step by `put_case` and `put_doc`; the
//! audit chain continued across transactions and a reopen; device sync state and holdings; a
//! quarantined change keeps its first entry; escrow put-if-absent; the access epoch; the log id;
//! read transactions refuse writes; and two threads writing at once get distinct, gap-free
//! sequences and one unforked audit chain.

use super::{read, read_each, write, PushAsk, PushFacts, Store, StoreError, SyncBasis, Txn};
use crate::model::audit::{AnchoredCheck, AuditKind, AuditRecord};
use crate::model::{
    ActorBinding, CaseRecord, Device, DeviceSync, DocHeader, DocRecord, NewChange, Org,
    PendingReconcile, QuarantineEntry, Staff, Team, TokenRecord,
};
use casenote_protocol::wire::Hash;
use casenote_protocol::{CaseId, DeviceId, DocId, DocKind, OrgId, Seq, StaffId, TeamId};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;

/// What a backend's tests hand the suite.
pub(crate) trait Factory {
    /// A new, empty store.
    fn fresh(&mut self) -> Arc<dyn Store>;
    /// `store` closed (the caller holds no other reference) and opened again on the same data.
    fn reopen(&mut self, store: Arc<dyn Store>) -> Arc<dyn Store>;
}

/// One `#[test]` per check of the suite, each on a fresh factory from `$factory`.
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::store::conformance::conformance_tests!(@each $factory;
            consecutive_sequences_survive_a_reopen,
            a_transaction_reads_its_own_writes,
            a_failed_transaction_leaves_nothing,
            a_conflicting_write_runs_again_whole,
            put_case_and_put_doc_keep_the_indexes_in_step,
            records_read_together_are_those_read_one_by_one,
            combined_reads_are_their_parts_read_one_after_the_other,
            many_writes_without_a_read_between_them_land_in_order,
            the_audit_chain_continues_across_transactions_and_a_reopen,
            device_sync_state_and_holdings_are_kept_per_device,
            a_quarantined_change_keeps_its_first_entry,
            escrow_keeps_the_first_key_until_it_is_removed,
            the_access_epoch_and_the_log_id_are_kept,
            the_directory_reads_back,
            credentials_are_the_records_read_one_by_one,
            a_read_transaction_refuses_writes,
            two_threads_writing_at_once_get_gap_free_sequences_and_one_audit_chain,
            an_erased_document_leaves_every_read_and_keeps_its_place_in_the_chain,
            a_transaction_reads_the_log_as_the_store_does_with_its_own_writes,
        );
    };
    (@each $factory:expr; $($check:ident),+ $(,)?) => {
        $(
            #[test]
            fn $check() {
                $crate::store::conformance::$check(&mut $factory);
            }
        )+
    };
}
pub(crate) use conformance_tests;

fn change(doc: DocId, n: u64) -> NewChange {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&n.to_be_bytes());
    hash[8..24].copy_from_slice(doc.as_bytes());
    NewChange {
        doc_id: doc,
        hash: Hash(hash),
        bytes: n.to_be_bytes().repeat(3),
        received_at_ms: 1_000 + n as i64,
    }
}

fn record(n: u64) -> AuditRecord {
    AuditRecord::new(AuditKind::Admin, 1_000, json!({"action": "test", "n": n}))
}

fn case(teams: Vec<TeamId>) -> CaseRecord {
    CaseRecord {
        case_id: CaseId::new_random(),
        owner_org: OrgId::new_random(),
        teams,
        created_ms: 0,
    }
}

fn doc_of(case: CaseId) -> DocRecord {
    DocRecord {
        header: DocHeader {
            doc_id: DocId::new_random(),
            case_id: case,
            kind: DocKind::Note,
            owner_org: OrgId::new_random(),
            access_teams: None,
            created_by: StaffId::new_random(),
            created_ms: 0,
            sealed: true,
            grants: vec![crate::model::Grant {
                grant_id: uuid::Uuid::new_v4(),
                staff_id: StaffId::new_random(),
                expires_ms: 7,
            }],
        },
        heads: Vec::new(),
        ops: 0,
        filed_ms: None,
    }
}

fn quarantine(doc: DocId, hash: Hash, reason: &str) -> QuarantineEntry {
    QuarantineEntry {
        doc_id: doc,
        hash,
        bytes: vec![1, 2, 3],
        reason: reason.into(),
        staff_id: StaffId::new_random(),
        device_id: DeviceId::new_random(),
        at_ms: 5,
    }
}

/// Every audit entry checked as a chain; the number of entries.
fn audit_chain(store: &dyn Store) -> usize {
    let mut check = AnchoredCheck::new(None);
    store
        .audit_scan(&mut |k, v| check.visit(k, v))
        .expect("the audit log scans");
    check.finish().expect("the audit chain is unbroken")
}

fn logged(store: &dyn Store) -> Vec<(Seq, DocId, Hash, Vec<u8>)> {
    let mut out = Vec::new();
    let last = store.last_seq().unwrap();
    store
        .scan_log(Seq(0), last, &mut |e| {
            out.push((e.seq, e.doc_id, e.hash, e.bytes.to_vec()));
            true
        })
        .unwrap();
    out
}

pub(crate) fn consecutive_sequences_survive_a_reopen(f: &mut dyn Factory) {
    let store = f.fresh();
    let doc = DocId::new_random();
    let first = write(&*store, |t| {
        Ok(vec![
            t.append_change(&change(doc, 1))?,
            t.append_change(&change(doc, 2))?,
        ])
    })
    .unwrap();
    let third = write(&*store, |t| t.append_change(&change(doc, 3))).unwrap();
    assert_eq!(first, vec![Seq(1), Seq(2)]);
    assert_eq!(third, Seq(3));
    assert_eq!(store.last_seq().unwrap(), Seq(3));
    store.flush().unwrap();
    assert_eq!(store.durable_seq().unwrap(), Seq(3));
    let store = f.reopen(store);
    assert_eq!(store.last_seq().unwrap(), Seq(3));
    let log = logged(&*store);
    let expected: Vec<_> = (1..=3)
        .map(|n| {
            let c = change(doc, n);
            (Seq(n), doc, c.hash, c.bytes)
        })
        .collect();
    assert_eq!(log, expected);
    assert_eq!(
        store.get_log(Seq(2)).unwrap(),
        Some((doc, change(doc, 2).hash, change(doc, 2).bytes))
    );
    assert_eq!(store.get_log(Seq(4)).unwrap(), None);
    assert_eq!(store.received_at(Seq(2)).unwrap(), Some(1_002));
    assert_eq!(
        store.doc_change_seqs(doc).unwrap(),
        vec![Seq(1), Seq(2), Seq(3)]
    );
    assert!(read(&*store, |t| t.has_change(doc, &change(doc, 3).hash)).unwrap());
    assert!(!read(&*store, |t| t.has_change(doc, &change(doc, 4).hash)).unwrap());
    let asked = [2, 4, 3].map(|n| change(doc, n).hash);
    let held = read(&*store, |t| t.held_changes(doc, &asked)).unwrap();
    assert_eq!(
        held,
        [2, 3].map(|n| change(doc, n).hash).into_iter().collect()
    );
    let other = DocId::new_random();
    assert!(read(&*store, |t| t.held_changes(other, &asked))
        .unwrap()
        .is_empty());
    let next = write(&*store, |t| t.append_change(&change(doc, 4))).unwrap();
    assert_eq!(next, Seq(4), "the sequence goes on after a reopen");
}

pub(crate) fn a_transaction_reads_its_own_writes(f: &mut dyn Factory) {
    let store = f.fresh();
    let team = TeamId::new_random();
    let device = DeviceId::new_random();
    let doc = DocId::new_random();
    write(&*store, |t| {
        let org = Org {
            org_id: OrgId::new_random(),
            name: "Council".into(),
        };
        t.put_org(&org)?;
        assert_eq!(t.org(org.org_id)?, Some(org.clone()));
        assert_eq!(t.orgs()?, vec![org]);
        let c = case(vec![team]);
        t.put_case(&c)?;
        assert_eq!(t.case(c.case_id)?, Some(c.clone()));
        assert_eq!(t.cases_of_team(team)?, vec![c.case_id]);
        let d = doc_of(c.case_id);
        t.put_doc(&d)?;
        assert_eq!(t.doc(d.header.doc_id)?, Some(d.clone()));
        assert_eq!(t.docs_of_case(c.case_id)?, vec![d.header.doc_id]);
        let seq = t.append_change(&change(doc, 1))?;
        assert_eq!(seq, Seq(1));
        assert!(t.has_change(doc, &change(doc, 1).hash)?);
        let asked = [change(doc, 1).hash, change(doc, 2).hash];
        assert_eq!(
            t.held_changes(doc, &asked)?,
            [asked[0]].into_iter().collect()
        );
        t.device_docs_add(device, &[doc])?;
        assert_eq!(t.device_docs(device)?, vec![doc]);
        t.device_docs_remove(device, &[doc])?;
        assert!(t.device_docs(device)?.is_empty());
        let a = t.audit_append(record(1))?;
        let b = t.audit_append(record(2))?;
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(b.prev_hash, a.hash);
        assert_eq!(t.bump_access_epoch()?, 1);
        assert_eq!(t.access_epoch()?, 1);
        t.put_meta("marker", b"x")?;
        assert_eq!(t.meta("marker")?, Some(b"x".to_vec()));
        Ok(())
    })
    .unwrap();
    assert_eq!(audit_chain(&*store), 2);
}

pub(crate) fn a_failed_transaction_leaves_nothing(f: &mut dyn Factory) {
    let store = f.fresh();
    let doc = DocId::new_random();
    let failed = write(&*store, |t| -> Result<(), StoreError> {
        t.put_org(&Org {
            org_id: OrgId::new_random(),
            name: "Gone".into(),
        })?;
        t.append_change(&change(doc, 1))?;
        t.audit_append(record(1))?;
        t.bump_access_epoch()?;
        t.put_case(&case(vec![TeamId::new_random()]))?;
        Err(StoreError::Corrupt("the work gave up".into()))
    });
    assert!(matches!(failed, Err(StoreError::Corrupt(_))));
    assert_eq!(store.last_seq().unwrap(), Seq(0));
    assert_eq!(audit_chain(&*store), 0);
    read(&*store, |t| {
        assert!(t.orgs()?.is_empty());
        assert_eq!(t.access_epoch()?, 0);
        assert!(!t.has_change(doc, &change(doc, 1).hash)?);
        Ok(())
    })
    .unwrap();
    let seq = write(&*store, |t| t.append_change(&change(doc, 2))).unwrap();
    assert_eq!(seq, Seq(1), "a failed transaction leaves no gap");
}

pub(crate) fn a_conflicting_write_runs_again_whole(f: &mut dyn Factory) {
    let store = f.fresh();
    let doc = DocId::new_random();
    let mut attempts = 0;
    let seq = write(&*store, |t| {
        attempts += 1;
        let seq = t.append_change(&change(doc, attempts))?;
        t.audit_append(record(attempts))?;
        if attempts < 3 {
            return Err(StoreError::Conflict);
        }
        Ok(seq)
    })
    .unwrap();
    assert_eq!(attempts, 3);
    assert_eq!(seq, Seq(1), "the attempts that conflicted left nothing");
    assert_eq!(logged(&*store).len(), 1);
    assert_eq!(audit_chain(&*store), 1);
    let mut forever = 0u32;
    let gave_up = write(&*store, |_| -> Result<(), StoreError> {
        forever += 1;
        Err(StoreError::Conflict)
    });
    assert!(matches!(gave_up, Err(StoreError::Conflict)));
    assert_eq!(
        forever,
        casenote_protocol::limits::STORE_WRITE_RETRIES + 1,
        "bounded retries"
    );
}

pub(crate) fn put_case_and_put_doc_keep_the_indexes_in_step(f: &mut dyn Factory) {
    let store = f.fresh();
    let [a, b, c] = [(); 3].map(|_| TeamId::new_random());
    let mut kase = case(vec![a, b]);
    let d = doc_of(kase.case_id);
    write(&*store, |t| {
        t.put_case(&kase)?;
        t.put_doc(&d)
    })
    .unwrap();
    kase.teams = vec![b, c];
    write(&*store, |t| t.put_case(&kase)).unwrap();
    read(&*store, |t| {
        assert!(t.cases_of_team(a)?.is_empty(), "a team that left drops out");
        assert_eq!(t.cases_of_team(b)?, vec![kase.case_id]);
        assert_eq!(t.cases_of_team(c)?, vec![kase.case_id]);
        assert_eq!(t.docs_of_case(kase.case_id)?, vec![d.header.doc_id]);
        assert_eq!(t.case(kase.case_id)?.unwrap().teams, vec![b, c]);
        Ok(())
    })
    .unwrap();
}

pub(crate) fn records_read_together_are_those_read_one_by_one(f: &mut dyn Factory) {
    let store = f.fresh();
    let cases: Vec<CaseRecord> = (0..3).map(|_| case(vec![TeamId::new_random()])).collect();
    let docs: Vec<DocRecord> = cases.iter().map(|c| doc_of(c.case_id)).collect();
    let sorted_docs = |mut d: Vec<DocRecord>| {
        d.sort_by_key(|r| r.header.doc_id);
        d
    };
    let sorted_cases = |mut c: Vec<CaseRecord>| {
        c.sort_by_key(|r| r.case_id);
        c
    };
    let missing = (DocId::new_random(), CaseId::new_random());
    let doc_ids = [docs[0].header.doc_id, missing.0, docs[2].header.doc_id];
    let case_ids = [cases[2].case_id, missing.1, cases[1].case_id];
    // Inside the transaction that wrote them (a write transaction reads its own writes), then
    // committed.
    write(&*store, |t| {
        for (c, d) in cases.iter().zip(&docs) {
            t.put_case(c)?;
            t.put_doc(d)?;
        }
        assert_eq!(
            sorted_docs(t.docs_in(&doc_ids)?),
            sorted_docs(vec![docs[0].clone(), docs[2].clone()])
        );
        Ok(())
    })
    .unwrap();
    read(&*store, |t| {
        let one_by_one: Vec<DocRecord> =
            doc_ids.iter().filter_map(|d| t.doc(*d).unwrap()).collect();
        assert_eq!(sorted_docs(t.docs_in(&doc_ids)?), sorted_docs(one_by_one));
        assert_eq!(
            sorted_cases(t.cases_in(&case_ids)?),
            sorted_cases(vec![cases[2].clone(), cases[1].clone()])
        );
        assert!(t.docs_in(&[])?.is_empty() && t.cases_in(&[missing.1])?.is_empty());
        // With their cases: at least those not known (here the first document's), never one
        // of a document not asked for.
        let known: HashSet<CaseId> = [cases[0].case_id].into();
        let (found, with) = t.docs_and_cases_in(&doc_ids, &known)?;
        assert_eq!(sorted_docs(found), sorted_docs(t.docs_in(&doc_ids)?));
        let with: Vec<CaseRecord> = sorted_cases(with)
            .into_iter()
            .filter(|c| !known.contains(&c.case_id))
            .collect();
        assert_eq!(with, vec![cases[2].clone()]);
        assert_eq!(
            t.docs_and_cases_in(&[missing.0], &known)?,
            Default::default()
        );
        Ok(())
    })
    .unwrap();
}

/// `doc_and_case`, `held_or_refused`, `device_sync_at_epoch`, `sync_basis` and `push_facts`
/// (one statement each on PostgreSQL) answer what their parts answer, inside the transaction
/// that wrote and after it.
pub(crate) fn combined_reads_are_their_parts_read_one_after_the_other(f: &mut dyn Factory) {
    let store = f.fresh();
    let stored = case(vec![TeamId::new_random()]);
    let (doc, orphan) = (doc_of(stored.case_id), doc_of(CaseId::new_random()));
    let id = doc.header.doc_id;
    let [held, refused, unknown] = [1, 2, 3].map(|n| change(id, n).hash);
    let device = DeviceId::new_random();
    let state = DeviceSync {
        reconciled_epoch: Some(3),
        pending: None,
    };
    let binding = ActorBinding {
        staff_id: StaffId::new_random(),
        device_id: device,
        first_seen_ms: 9,
    };
    let staff = Staff {
        staff_id: binding.staff_id,
        name: "Ada".into(),
        role: crate::model::Role::Nurse,
        org_id: OrgId::new_random(),
        teams: vec![TeamId::new_random()],
        revoked: false,
    };
    let check = |t: &mut dyn Txn| -> Result<(), StoreError> {
        let found = t.doc_and_case(id)?;
        assert_eq!(found, Some((doc.clone(), Some(stored.clone()))));
        assert_eq!(
            found,
            t.doc(id)?.map(|d| (d, t.case(stored.case_id).unwrap()))
        );
        let missing_case = t.doc_and_case(orphan.header.doc_id)?;
        assert_eq!(
            missing_case,
            Some((orphan.clone(), None)),
            "a case the store lacks"
        );
        assert_eq!(t.doc_and_case(DocId::new_random())?, None);
        let (h, r) = t.held_or_refused(id, &[unknown, refused, held])?;
        assert_eq!((h, r), ([held].into(), [refused].into()));
        assert_eq!(
            t.held_changes(id, &[unknown, refused, held])?,
            [held].into()
        );
        let elsewhere = t.held_or_refused(orphan.header.doc_id, &[held, refused])?;
        assert_eq!(elsewhere, Default::default(), "another document's");
        let read = t.device_sync_at_epoch(device)?;
        assert_eq!(read, (Some(state.clone()), 1));
        assert_eq!(read, (t.device_sync(device)?, t.access_epoch()?));
        let none = t.device_sync_at_epoch(DeviceId::new_random())?;
        assert_eq!(none, (None, 1), "a device without a state, at the epoch");
        let basis = t.sync_basis(device, staff.staff_id, "basis")?;
        let parts = SyncBasis {
            last_seq: Seq(1),
            state: Some(state.clone()),
            access_epoch: 1,
            staff: Some(staff.clone()),
            meta: Some(b"agreed".to_vec()),
        };
        assert_eq!(basis, parts);
        assert_eq!(parts.staff, t.staff(staff.staff_id)?);
        assert_eq!(
            t.last_seq()?,
            Seq(1),
            "the one change, the transaction's own or committed"
        );
        let stranger = t.sync_basis(DeviceId::new_random(), StaffId::new_random(), "none")?;
        let unknown_all = SyncBasis {
            last_seq: Seq(1),
            state: None,
            access_epoch: 1,
            staff: None,
            meta: None,
        };
        assert_eq!(
            stranger, unknown_all,
            "nothing known but the log and the epoch"
        );
        let gone = t.sync_basis(device, StaffId::new_random(), "basis")?;
        let without_staff = SyncBasis {
            staff: None,
            ..parts.clone()
        };
        assert_eq!(gone, without_staff, "a member of staff the store lacks");
        check_push_facts(t, (&doc, &stored), [held, refused, unknown], &binding)
    };
    write(&*store, |t| {
        t.put_case(&stored)?;
        t.put_doc(&doc)?;
        t.put_doc(&orphan)?;
        t.append_change(&change(id, 1))?;
        t.quarantine_add(&[quarantine(id, refused, "refused")])?;
        t.put_device_sync(device, &state)?;
        t.put_actor(&[7; 16], &binding)?;
        t.put_staff(&staff)?;
        t.put_meta("basis", b"agreed")?;
        t.bump_access_epoch()?;
        check(t)
    })
    .unwrap();
    read(&*store, |t| check(t)).unwrap();
}

/// [`combined_reads_are_their_parts_read_one_after_the_other`]'s `push_facts`: `doc` (of case
/// `case`) holds change `held`, has `refused` in quarantine and not `unknown`; actor [7; 16] is
/// bound to `binding`, [8; 16] to no one. The access epoch, where a backend gives it, is the
/// transaction's.
fn check_push_facts(
    t: &mut dyn Txn,
    (doc, case): (&DocRecord, &CaseRecord),
    [held, refused, unknown]: [Hash; 3],
    binding: &ActorBinding,
) -> Result<(), StoreError> {
    let id = doc.header.doc_id;
    let epoch = t.access_epoch()?;
    // What the backend read, with the epoch checked and then left out of the comparison.
    let facts = |t: &mut dyn Txn, ask: &PushAsk<'_>| -> Result<PushFacts, StoreError> {
        let found = t.push_facts(ask)?;
        assert!(
            found.access_epoch.is_none_or(|e| e == epoch),
            "the epoch given is the transaction's ({epoch}): {:?}",
            found.access_epoch
        );
        Ok(PushFacts {
            access_epoch: None,
            ..found
        })
    };
    let actors = [vec![8; 16], vec![7; 16]];
    let mut ask = PushAsk {
        doc: id,
        record: true,
        hashes: &[unknown, refused, held],
        actors: &actors,
    };
    let expected = PushFacts {
        record: Some((doc.clone(), Some(case.clone()))),
        held: [held].into(),
        refused: [refused].into(),
        actors: [(vec![7; 16], binding.clone())].into(),
        access_epoch: None,
    };
    assert_eq!(facts(t, &ask)?, expected);
    assert_eq!(t.doc_and_case(id)?, expected.record);
    assert_eq!(t.actor(&[7; 16])?.as_ref(), Some(binding));
    ask.record = false;
    let unread = PushFacts {
        record: None,
        ..expected.clone()
    };
    assert_eq!(facts(t, &ask)?, unread, "the record not asked for");
    let nothing = PushAsk {
        doc: DocId::new_random(),
        record: true,
        hashes: &[held],
        actors: &[],
    };
    assert_eq!(
        facts(t, &nothing)?,
        PushFacts::default(),
        "a document the store lacks"
    );
    Ok(())
}

/// Writes that need no answer may be held back and sent together (PostgreSQL sends at most
/// `PG_HELD_STATEMENTS_MAX` at once): in a transaction of several times that many writes, each
/// record written twice is read back as written last, in the transaction and after it.
pub(crate) fn many_writes_without_a_read_between_them_land_in_order(f: &mut dyn Factory) {
    let store = f.fresh();
    let kase = case(vec![TeamId::new_random()]);
    let device = DeviceId::new_random();
    let n = 3 * casenote_protocol::limits::PG_HELD_STATEMENTS_MAX + 5;
    let docs: Vec<DocRecord> = (0..n).map(|_| doc_of(kase.case_id)).collect();
    let last = |d: &DocRecord| DocRecord {
        ops: 7,
        ..d.clone()
    };
    let ids: Vec<DocId> = docs.iter().map(|d| d.header.doc_id).collect();
    let check = |t: &mut dyn Txn| -> Result<(), StoreError> {
        for d in &docs {
            assert_eq!(t.doc(d.header.doc_id)?, Some(last(d)));
        }
        let mut held = t.device_docs(device)?;
        held.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(held, want);
        assert_eq!(t.case(kase.case_id)?, Some(kase.clone()));
        Ok(())
    };
    write(&*store, |t| {
        t.put_case(&kase)?;
        for d in &docs {
            t.put_doc(d)?;
            t.device_docs_add(device, &[d.header.doc_id])?;
            t.put_doc(&last(d))?;
        }
        check(t)
    })
    .unwrap();
    read(&*store, |t| check(t)).unwrap();
}

pub(crate) fn the_audit_chain_continues_across_transactions_and_a_reopen(f: &mut dyn Factory) {
    let store = f.fresh();
    for n in 1..=3 {
        let e = write(&*store, |t| t.audit_append(record(n))).unwrap();
        assert_eq!(e.seq, n);
    }
    store.flush().unwrap();
    let store = f.reopen(store);
    let e = write(&*store, |t| t.audit_append(record(4))).unwrap();
    assert_eq!(e.seq, 4);
    assert_eq!(audit_chain(&*store), 4);
}

pub(crate) fn device_sync_state_and_holdings_are_kept_per_device(f: &mut dyn Factory) {
    let store = f.fresh();
    let (one, other) = (DeviceId::new_random(), DeviceId::new_random());
    let docs: Vec<DocId> = (0..3).map(|_| DocId::new_random()).collect();
    let state = DeviceSync {
        reconciled_epoch: Some(4),
        pending: Some(PendingReconcile {
            id: 9,
            confirmed_id: Some(8),
            epoch: 5,
            evictions: vec![docs[0]],
            missing: vec![docs[1]],
            upto: Seq(7),
            confirmed: Default::default(),
            sealed: vec![docs[2]],
            sent: Default::default(),
        }),
    };
    write(&*store, |t| {
        t.put_device_sync(one, &state)?;
        t.device_docs_add(one, &docs)?;
        t.device_docs_add(other, &docs[..1])
    })
    .unwrap();
    write(&*store, |t| t.device_docs_remove(one, &docs[..1])).unwrap();
    read(&*store, |t| {
        assert_eq!(t.device_sync(one)?, Some(state.clone()));
        assert_eq!(t.device_sync(other)?, None);
        let mut held = t.device_docs(one)?;
        held.sort();
        let mut expected = docs[1..].to_vec();
        expected.sort();
        assert_eq!(held, expected);
        Ok(())
    })
    .unwrap();
    write(&*store, |t| {
        t.device_docs_clear(one)?;
        assert!(
            t.device_docs(one)?.is_empty(),
            "cleared within the transaction"
        );
        t.device_docs_add(one, &docs[2..])
    })
    .unwrap();
    read(&*store, |t| {
        assert_eq!(t.device_docs(one)?, docs[2..].to_vec());
        assert_eq!(
            t.device_docs(other)?,
            docs[..1].to_vec(),
            "another device's holdings"
        );
        Ok(())
    })
    .unwrap();
}

pub(crate) fn a_quarantined_change_keeps_its_first_entry(f: &mut dyn Factory) {
    let store = f.fresh();
    let doc = DocId::new_random();
    let (h1, h2) = (change(doc, 1).hash, change(doc, 2).hash);
    let entry = quarantine(doc, h1, "first");
    let first = write(&*store, |t| t.quarantine_add(std::slice::from_ref(&entry))).unwrap();
    let again = write(&*store, |t| {
        t.quarantine_add(&[quarantine(doc, h1, "second"), quarantine(doc, h2, "other")])
    })
    .unwrap();
    assert_eq!((first, again), (1, 1));
    let kept = read(&*store, |t| t.quarantined(doc, &h1)).unwrap().unwrap();
    assert_eq!(kept, entry, "every field as written");
    assert_eq!(store.quarantine_list().unwrap().len(), 2);
    // The same change twice in one call: the first is kept.
    let h3 = change(doc, 3).hash;
    let twice = write(&*store, |t| {
        t.quarantine_add(&[quarantine(doc, h3, "one"), quarantine(doc, h3, "two")])
    })
    .unwrap();
    assert_eq!(twice, 1);
    let kept = read(&*store, |t| t.quarantined(doc, &h3)).unwrap().unwrap();
    assert_eq!(kept.reason, "one");
}

pub(crate) fn escrow_keeps_the_first_key_until_it_is_removed(f: &mut dyn Factory) {
    let store = f.fresh();
    let device = DeviceId::new_random();
    let kept = write(&*store, |t| t.escrow_put_if_absent(device, [1; 32])).unwrap();
    let again = write(&*store, |t| t.escrow_put_if_absent(device, [2; 32])).unwrap();
    assert_eq!((kept, again), ([1; 32], [1; 32]));
    write(&*store, |t| t.escrow_remove(device)).unwrap();
    assert_eq!(read(&*store, |t| t.escrow(device)).unwrap(), None);
    let fresh = write(&*store, |t| t.escrow_put_if_absent(device, [3; 32])).unwrap();
    assert_eq!(fresh, [3; 32]);
}

pub(crate) fn the_access_epoch_and_the_log_id_are_kept(f: &mut dyn Factory) {
    let store = f.fresh();
    let original = read(&*store, |t| t.log_id()).unwrap();
    assert_eq!(read(&*store, |t| t.access_epoch()).unwrap(), 0);
    assert_eq!(store.access_epoch().unwrap(), 0);
    let bumped = write(&*store, |t| {
        Ok((t.bump_access_epoch()?, t.bump_access_epoch()?))
    })
    .unwrap();
    assert_eq!(bumped, (1, 2));
    assert_eq!(store.access_epoch().unwrap(), 2, "outside a transaction");
    let new = uuid::Uuid::new_v4();
    write(&*store, |t| t.set_log_id(new)).unwrap();
    assert_ne!(new, original);
    let state = |store: &dyn Store| store.log_state("lapse").unwrap();
    assert_eq!(
        state(&*store),
        super::LogState {
            log_id: new,
            last_seq: Seq(0),
            meta: None
        }
    );
    let doc = DocId::new_random();
    write(&*store, |t| {
        t.append_change(&change(doc, 1))?;
        t.put_meta("lapse", b"soon")
    })
    .unwrap();
    assert_eq!(
        state(&*store),
        super::LogState {
            log_id: new,
            last_seq: Seq(1),
            meta: Some(b"soon".to_vec())
        }
    );
    store.flush().unwrap();
    let store = f.reopen(store);
    read(&*store, |t| {
        assert_eq!(t.access_epoch()?, 2);
        assert_eq!(t.log_id()?, new);
        Ok(())
    })
    .unwrap();
}

pub(crate) fn the_directory_reads_back(f: &mut dyn Factory) {
    let store = f.fresh();
    let org = Org {
        org_id: OrgId::new_random(),
        name: "Trust".into(),
    };
    let team = Team {
        team_id: TeamId::new_random(),
        org_id: org.org_id,
        name: "Ward 7".into(),
    };
    let token = TokenRecord {
        device_id: DeviceId::new_random(),
        staff_id: StaffId::new_random(),
        revoked: false,
    };
    write(&*store, |t| {
        t.put_org(&org)?;
        t.put_team(&team)?;
        t.put_token(&[7; 32], &token)
    })
    .unwrap();
    let missing = TeamId::new_random();
    let other = Team {
        team_id: TeamId::new_random(),
        org_id: org.org_id,
        name: "Ward 8".into(),
    };
    write(&*store, |t| t.put_team(&other)).unwrap();
    read_each(&*store, |t| {
        let asked = [other.team_id, missing, team.team_id, team.team_id];
        let in_order = vec![other.clone(), team.clone(), team.clone()];
        let both = (Some(org.clone()), in_order);
        assert_eq!(t.org_and_teams(org.org_id, &asked)?, both);
        let nothing = t.org_and_teams(OrgId::new_random(), &[missing])?;
        assert_eq!(nothing, (None, Vec::new()), "neither exists");
        let no_teams = t.org_and_teams(org.org_id, &[])?;
        assert_eq!(no_teams, (Some(org.clone()), Vec::new()));
        Ok(())
    })
    .unwrap();
    read(&*store, |t| {
        let mut teams = vec![team.clone(), other.clone()];
        teams.sort_by_key(|t| t.team_id);
        assert_eq!(t.teams()?, teams);
        assert_eq!(t.team(team.team_id)?, Some(team.clone()));
        assert_eq!(t.token(&[7; 32])?, Some(token.clone()));
        assert_eq!(t.token(&[8; 32])?, None);
        assert!(t.staff_all()?.is_empty() && t.devices()?.is_empty());
        Ok(())
    })
    .unwrap();
}

pub(crate) fn credentials_are_the_records_read_one_by_one(f: &mut dyn Factory) {
    let store = f.fresh();
    let staff = Staff {
        staff_id: StaffId::new_random(),
        name: "Ada".into(),
        role: crate::model::Role::Nurse,
        org_id: OrgId::new_random(),
        teams: vec![TeamId::new_random(), TeamId::new_random()],
        revoked: false,
    };
    let device = Device {
        device_id: DeviceId::new_random(),
        staff_id: staff.staff_id,
        name: "ward pc".into(),
        created_ms: 5,
        revoked: true,
        token_sha256: "ab".repeat(32),
    };
    let token = TokenRecord {
        device_id: device.device_id,
        staff_id: staff.staff_id,
        revoked: false,
    };
    // A token whose device and member of staff the store does not hold.
    let orphan = TokenRecord {
        device_id: DeviceId::new_random(),
        staff_id: StaffId::new_random(),
        revoked: true,
    };
    write(&*store, |t| {
        t.put_staff(&staff)?;
        t.put_device(&device)?;
        t.put_token(&[1; 32], &token)?;
        t.put_token(&[2; 32], &orphan)
    })
    .unwrap();
    let found = store.credentials(&[1; 32], "sharing").unwrap();
    let one_by_one = read(&*store, |t| super::credentials_in(t, &[1; 32], "sharing")).unwrap();
    assert_eq!(found, one_by_one);
    let expected = super::Credentials {
        token: token.clone(),
        device: Some(device.clone()),
        staff: Some(staff.clone()),
        meta: None,
    };
    assert_eq!(found, Some(expected.clone()));
    write(&*store, |t| t.put_meta("sharing", b"{}")).unwrap();
    let with_meta = super::Credentials {
        meta: Some(b"{}".to_vec()),
        ..expected
    };
    assert_eq!(
        store.credentials(&[1; 32], "sharing").unwrap(),
        Some(with_meta)
    );
    let orphaned = store.credentials(&[2; 32], "sharing").unwrap().unwrap();
    assert_eq!(
        (orphaned.token, orphaned.device, orphaned.staff),
        (orphan, None, None)
    );
    assert_eq!(store.credentials(&[3; 32], "sharing").unwrap(), None);
}

pub(crate) fn a_read_transaction_refuses_writes(f: &mut dyn Factory) {
    let store = f.fresh();
    let refused = read(&*store, |t: &mut dyn Txn| t.audit_append(record(1)));
    assert!(refused.is_err());
    let refused = read_each(&*store, |t: &mut dyn Txn| t.audit_append(record(1)));
    assert!(refused.is_err(), "a read without a snapshot is a read");
    let refused = read(&*store, |t: &mut dyn Txn| {
        t.put_org(&Org {
            org_id: OrgId::new_random(),
            name: "No".into(),
        })
    });
    assert!(refused.is_err());
    assert_eq!(audit_chain(&*store), 0);
    assert!(read(&*store, |t| t.orgs()).unwrap().is_empty());
}

pub(crate) fn two_threads_writing_at_once_get_gap_free_sequences_and_one_audit_chain(
    f: &mut dyn Factory,
) {
    const ROUNDS: u64 = 200;
    let store = f.fresh();
    let writer = |store: Arc<dyn Store>| {
        std::thread::spawn(move || {
            let doc = DocId::new_random();
            let mut seqs = Vec::new();
            for n in 0..ROUNDS {
                let got = write(&*store, |t| {
                    let mut got = vec![t.append_change(&change(doc, 2 * n))?];
                    if n % 3 == 0 {
                        got.push(t.append_change(&change(doc, 2 * n + 1))?);
                    }
                    t.audit_append(record(n))?;
                    Ok(got)
                })
                .unwrap();
                seqs.extend(got);
            }
            seqs
        })
    };
    let (a, b) = (writer(store.clone()), writer(store.clone()));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    let mut all: Vec<u64> = a.iter().chain(&b).map(|s| s.0).collect();
    all.sort();
    let total = all.len() as u64;
    assert_eq!(
        all,
        (1..=total).collect::<Vec<_>>(),
        "distinct and gap-free"
    );
    for seqs in [&a, &b] {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in commit order");
    }
    assert_eq!(logged(&*store).len() as u64, total);
    assert_eq!(
        audit_chain(&*store),
        2 * ROUNDS as usize,
        "one unforked chain"
    );
}

/// Every entry of the log, erased ones included (their bytes empty).
fn logged_with_erased(store: &dyn Store) -> Vec<(Seq, DocId, Vec<u8>)> {
    let mut out = Vec::new();
    let last = store.last_seq().unwrap();
    store
        .scan_log_with_erased(Seq(0), last, &mut |e| {
            out.push((e.seq, e.doc_id, e.bytes.to_vec()));
            true
        })
        .unwrap();
    out
}

pub(crate) fn an_erased_document_leaves_every_read_and_keeps_its_place_in_the_chain(
    f: &mut dyn Factory,
) {
    let store = f.fresh();
    let kase = case(vec![TeamId::new_random()]);
    let (kept, gone) = (doc_of(kase.case_id), doc_of(kase.case_id));
    let (k, g) = (kept.header.doc_id, gone.header.doc_id);
    let bad = change(g, 99);
    write(&*store, |t| {
        t.put_case(&kase)?;
        t.put_doc(&kept)?;
        t.put_doc(&gone)?;
        for (doc, n) in [(k, 1), (g, 2), (k, 3), (g, 4), (k, 5)] {
            t.append_change(&change(doc, n))?;
        }
        t.quarantine_add(&[
            quarantine(g, bad.hash, "refused"),
            quarantine(k, bad.hash, "x"),
        ])?;
        Ok(())
    })
    .unwrap();
    let erased = write(&*store, |t| t.erase_doc(g)).unwrap();
    assert_eq!(erased, vec![Seq(2), Seq(4)]);
    store.flush().unwrap();
    let store = f.reopen(store);
    read(&*store, |t| {
        assert!(t.doc(g)?.is_none(), "the record is gone");
        assert_eq!(t.docs_of_case(kase.case_id)?, vec![k]);
        Ok(())
    })
    .unwrap();
    assert!(store.doc_change_seqs(g).unwrap().is_empty());
    assert_eq!(
        store.doc_change_seqs(k).unwrap(),
        vec![Seq(1), Seq(3), Seq(5)]
    );
    assert!(store.get_log(Seq(2)).unwrap().is_none());
    assert!(store.received_at(Seq(4)).unwrap().is_none());
    assert_eq!(
        logged(&*store).iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![Seq(1), Seq(3), Seq(5)],
        "reads of the log skip erased entries"
    );
    let all = logged_with_erased(&*store);
    assert_eq!(all.len(), 5, "erased entries keep their place");
    assert!(all
        .iter()
        .all(|(_, doc, bytes)| (*doc == g) == bytes.is_empty()));
    let quarantined: Vec<DocId> = store
        .quarantine_list()
        .unwrap()
        .iter()
        .map(|q| q.doc_id)
        .collect();
    assert_eq!(quarantined, vec![k]);
    let next = write(&*store, |t| t.append_change(&change(k, 6))).unwrap();
    assert_eq!(next, Seq(6), "the log goes on after its erased entries");
    store.flush().unwrap();
    let store = f.reopen(store);
    assert_eq!(store.last_seq().unwrap(), Seq(6));
    let compaction = store.compact().unwrap();
    assert!(compaction.done, "{}", compaction.detail);
}

/// `(seq, doc)` of each entry of a page.
fn seqs_docs(page: &[crate::model::LoggedChange]) -> Vec<(u64, DocId)> {
    page.iter().map(|e| (e.seq.0, e.doc_id)).collect()
}

pub(crate) fn a_transaction_reads_the_log_as_the_store_does_with_its_own_writes(
    f: &mut dyn Factory,
) {
    let store = f.fresh();
    let kase = case(vec![TeamId::new_random()]);
    let (a, b) = (doc_of(kase.case_id), doc_of(kase.case_id));
    let (a, b) = (a.header.doc_id, b.header.doc_id);
    write(&*store, |t| {
        for (doc, n) in [(a, 1), (b, 2), (a, 3), (b, 4), (a, 5), (b, 6)] {
            t.append_change(&change(doc, n))?;
        }
        Ok(())
    })
    .unwrap();
    write(&*store, |t| t.erase_doc(b).map(|_| ())).unwrap();
    let entry = 24; // `change`'s bytes: 8 bytes three times
    read(&*store, |t| {
        let all = t.log_page((Seq(0), Seq(6)), 100, usize::MAX)?;
        assert_eq!(
            seqs_docs(&all),
            vec![(1, a), (3, a), (5, a)],
            "erased left out"
        );
        let from_store = logged(&*store);
        assert_eq!(all.len(), from_store.len());
        for (mine, theirs) in all.iter().zip(&from_store) {
            assert_eq!(
                (mine.seq, mine.doc_id, mine.hash),
                (theirs.0, theirs.1, theirs.2)
            );
            assert_eq!(mine.bytes, theirs.3);
        }
        let two = t.log_page((Seq(0), Seq(6)), 2, usize::MAX)?;
        assert_eq!(seqs_docs(&two), vec![(1, a), (3, a)], "at most max");
        let by_bytes = t.log_page((Seq(0), Seq(6)), 100, entry + 1)?;
        assert_eq!(
            seqs_docs(&by_bytes),
            vec![(1, a), (3, a)],
            "none after the one that reaches max_bytes"
        );
        assert_eq!(
            seqs_docs(&t.log_page((Seq(3), Seq(5)), 100, usize::MAX)?),
            vec![(5, a)]
        );
        assert!(t.log_page((Seq(5), Seq(5)), 100, usize::MAX)?.is_empty());
        // A page of one document: its entries of the log's, within the same bounds.
        let of_a = t.docs_page(&[a], (Seq(0), Seq(6)), 100, usize::MAX)?;
        assert_eq!(of_a, all, "every entry of `a`, whole, and nothing of `b`");
        let two = t.docs_page(&[a], (Seq(0), Seq(6)), 2, usize::MAX)?;
        assert_eq!(seqs_docs(&two), vec![(1, a), (3, a)], "at most max");
        let by_bytes = t.docs_page(&[a], (Seq(0), Seq(6)), 100, entry + 1)?;
        assert_eq!(
            seqs_docs(&by_bytes),
            vec![(1, a), (3, a)],
            "none after the one that reaches max_bytes"
        );
        let within = t.docs_page(&[a], (Seq(1), Seq(3)), 100, usize::MAX)?;
        assert_eq!(
            seqs_docs(&within),
            vec![(3, a)],
            "after excluded, upto included"
        );
        assert!(t
            .docs_page(&[a], (Seq(5), Seq(6)), 100, usize::MAX)?
            .is_empty());
        assert!(
            t.docs_page(&[b], (Seq(0), Seq(6)), 100, usize::MAX)?
                .is_empty(),
            "erased"
        );
        assert_eq!(t.change_seqs_of(a)?, vec![Seq(1), Seq(3), Seq(5)]);
        assert!(t.change_seqs_of(b)?.is_empty());
        assert_eq!(t.change_at(Seq(3))?.map(|c| c.0), Some(a));
        assert!(t.change_at(Seq(4))?.is_none(), "erased");
        let after = |n: u64| (Seq(n), change(a, n).bytes);
        assert_eq!(t.changes_of_after(a, Seq(1))?, vec![after(3), after(5)]);
        assert!(t.changes_of_after(b, Seq(0))?.is_empty(), "erased");
        Ok(())
    })
    .unwrap();
    let after = |n: u64| (Seq(n), change(a, n).bytes);
    assert_eq!(
        store.doc_changes_after(a, Seq(0)).unwrap(),
        vec![after(1), after(3), after(5)]
    );
    assert!(store.doc_changes_after(a, Seq(5)).unwrap().is_empty());
    assert!(
        store.doc_changes_after(b, Seq(0)).unwrap().is_empty(),
        "erased"
    );
    // A write transaction reads its own appends and erasures.
    write(&*store, |t| {
        t.append_change(&change(b, 7))?;
        t.append_change(&change(a, 8))?;
        let page = t.log_page((Seq(4), Seq(8)), 100, usize::MAX)?;
        assert_eq!(seqs_docs(&page), vec![(5, a), (7, b), (8, a)]);
        let of_a = t.docs_page(&[a], (Seq(3), Seq(8)), 100, usize::MAX)?;
        assert_eq!(
            seqs_docs(&of_a),
            vec![(5, a), (8, a)],
            "its own append included"
        );
        assert_eq!(of_a[1].bytes, change(a, 8).bytes);
        // Several documents: one after the other, in the order asked, `after` the first's alone.
        let both = t.docs_page(&[b, a], (Seq(3), Seq(8)), 100, usize::MAX)?;
        let in_order = vec![(7, b), (1, a), (3, a), (5, a), (8, a)];
        assert_eq!(seqs_docs(&both), in_order);
        let other_way = t.docs_page(&[a, b], (Seq(3), Seq(7)), 100, usize::MAX)?;
        assert_eq!(seqs_docs(&other_way), vec![(5, a), (7, b)], "upto for all");
        let three = t.docs_page(&[b, a], (Seq(3), Seq(8)), 3, usize::MAX)?;
        assert_eq!(
            seqs_docs(&three),
            in_order[..3],
            "at most max, across documents"
        );
        let by_bytes = t.docs_page(&[b, a], (Seq(3), Seq(8)), 100, entry * 2)?;
        assert_eq!(seqs_docs(&by_bytes), in_order[..2], "and max_bytes");
        let none_of_a = t.docs_page(&[a, b], (Seq(8), Seq(8)), 100, usize::MAX)?;
        assert_eq!(
            seqs_docs(&none_of_a),
            vec![(7, b)],
            "the first done, the next read"
        );
        assert_eq!(t.change_seqs_of(a)?, vec![Seq(1), Seq(3), Seq(5), Seq(8)]);
        assert_eq!(t.change_at(Seq(7))?.map(|c| c.0), Some(b));
        assert_eq!(
            t.changes_of_after(a, Seq(3))?,
            vec![(Seq(5), change(a, 5).bytes), (Seq(8), change(a, 8).bytes)]
        );
        t.erase_doc(a)?;
        let page = t.log_page((Seq(0), Seq(8)), 100, usize::MAX)?;
        assert_eq!(seqs_docs(&page), vec![(7, b)]);
        assert!(t
            .docs_page(&[a], (Seq(0), Seq(8)), 100, usize::MAX)?
            .is_empty());
        let of_b = t.docs_page(&[b], (Seq(0), Seq(8)), 100, usize::MAX)?;
        assert_eq!(seqs_docs(&of_b), vec![(7, b)]);
        Ok(())
    })
    .unwrap();
}
