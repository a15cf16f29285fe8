//! Tests of a new device's first sync (cursor 0), which is answered from the indexes as a
//! reconciliation ([`super::reconcile`]) rather than by walking the log ([`super::pull`]): that it
//! hands a device exactly what the log walk from the start hands it (every readable document's
//! history, the sealed sections it is told of, nothing erased), that it pages and re-sends a lost
//! response from where the device confirmed, and that a device that may read nothing is answered
//! in one request without the log being scanned at all.
//!
//! The stores are written row by row through the store's own transactions (cases, document
//! records, log entries with arbitrary bytes): relaying reads only those rows, never the
//! changes' content, so the same rows serve both ways of answering.

use crate::auth::Principal;
use crate::controllers::{self, Agreement, Objection, ObjectionReason, Sharing};
use crate::model::{By, CaseRecord, DocHeader, DocRecord, Grant, NewChange, Staff};
use crate::store::{self, Store};
use crate::testkit;
use crate::validate::Rules;
use casenote_protocol::wire::{DocPull, Hash, SyncRequest, SyncResponse, PROTOCOL_VERSION};
use casenote_protocol::{limits, CaseId, DocId, DocKind, OrgId, Seq, TeamId};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

/// Per document, the changes a device got (as bytes; each change's bytes are unique here).
type Got = BTreeMap<DocId, Vec<Vec<u8>>>;

/// A store with the directory of the tests: three organisations, five teams, and staff.
struct World {
    _dir: tempfile::TempDir,
    store: Arc<crate::store::sled::SledStore>,
    orgs: Vec<OrgId>,
    teams: Vec<TeamId>,
    staff: Vec<Staff>,
    rng: StdRng,
}

impl World {
    fn new(seed: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        let s: &dyn Store = &*store;
        let mut orgs = Vec::new();
        for name in ["Council", "Trust", "Hospice"] {
            orgs.push(testkit::add_org(s, name).unwrap().org_id);
        }
        let mut teams = Vec::new();
        for (org, name) in [
            ("Council", "North"),
            ("Council", "South"),
            ("Council", "East"),
            ("Trust", "Ward"),
            ("Hospice", "Care"),
        ] {
            teams.push(testkit::add_team(s, org, name).unwrap().team_id);
        }
        let mut staff = Vec::new();
        for (name, role, org, teams) in [
            ("Alice", "social_worker", "Council", &["North"][..]),
            ("Dan", "nurse", "Council", &["North", "East"][..]),
            ("Carol", "gp", "Council", &["South"][..]),
            ("Tess", "nurse", "Trust", &["Ward"][..]),
            ("Hal", "nurse", "Hospice", &["Care"][..]),
            ("Ada", "admin", "Council", &["North"][..]),
        ] {
            let teams: Vec<String> = teams.iter().map(|t| t.to_string()).collect();
            staff.push(testkit::add_staff(s, name, role, org, &teams).unwrap());
        }
        World {
            _dir: dir,
            store,
            orgs,
            teams,
            staff,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    fn s(&self) -> &dyn Store {
        &*self.store
    }

    /// Council and Trust share; Hospice shares with no one; `objected` cases stand objected.
    fn share(&self, objected: &[CaseId]) {
        let sharing = Sharing {
            agreements: vec![Agreement {
                agreement_id: uuid::Uuid::new_v4(),
                orgs: controllers::pair(self.orgs[0], self.orgs[1]),
                purpose: None,
                since_ms: 0,
                by: By::Cli,
            }],
            objections: objected
                .iter()
                .map(|c| Objection {
                    case_id: *c,
                    reason_category: ObjectionReason::Person,
                    recorded_ms: 0,
                    by: By::Cli,
                    overridden: None,
                })
                .collect(),
        };
        store::write(self.s(), |t| controllers::put(t, &sharing)).unwrap();
    }

    fn case(&mut self) -> CaseId {
        let mut teams: Vec<TeamId> = self
            .teams
            .iter()
            .copied()
            .filter(|_| self.rng.gen_bool(0.35))
            .collect();
        if teams.is_empty() {
            teams.push(*self.teams.choose(&mut self.rng).unwrap());
        }
        let case = CaseRecord {
            case_id: CaseId::new_random(),
            owner_org: *self.orgs.choose(&mut self.rng).unwrap(),
            teams,
            created_ms: 0,
        };
        store::write(self.s(), |t| t.put_case(&case)).unwrap();
        case.case_id
    }

    /// A document of `case` with a random controller, access list, seal and grants.
    fn doc(&mut self, case: CaseId) -> DocRecord {
        let owner = store::read(self.s(), |t| t.case(case))
            .unwrap()
            .unwrap()
            .owner_org;
        let owner_org = if self.rng.gen_bool(0.8) {
            owner
        } else {
            *self.orgs.choose(&mut self.rng).unwrap()
        };
        let restricted = self.rng.gen_bool(0.35);
        let access_teams = restricted.then(|| {
            self.teams
                .iter()
                .copied()
                .filter(|_| self.rng.gen_bool(0.3))
                .collect()
        });
        let sealed = restricted && self.rng.gen_bool(0.6);
        let now = crate::now_ms();
        let grants = if sealed && self.rng.gen_bool(0.5) {
            let staff = self.staff.choose(&mut self.rng).unwrap().staff_id;
            let expires_ms = if self.rng.gen_bool(0.5) {
                now + 3_600_000
            } else {
                now - 1
            };
            vec![Grant {
                grant_id: uuid::Uuid::new_v4(),
                staff_id: staff,
                expires_ms,
            }]
        } else {
            Vec::new()
        };
        let kind = if restricted {
            DocKind::Restricted
        } else {
            *[DocKind::Note, DocKind::Plan, DocKind::Case]
                .choose(&mut self.rng)
                .unwrap()
        };
        DocRecord {
            header: DocHeader {
                doc_id: DocId::new_random(),
                case_id: case,
                kind,
                owner_org,
                access_teams,
                created_by: self.staff[0].staff_id,
                created_ms: 0,
                sealed,
                grants,
            },
            heads: Vec::new(),
            ops: 0,
            filed_ms: None,
        }
    }

    /// Stores `docs` with `changes` changes each, of `bytes` bytes, the documents' changes
    /// interleaved in the log.
    fn store_docs(&mut self, mut docs: Vec<DocRecord>, changes: usize, bytes: usize) {
        let mut order: Vec<usize> = (0..docs.len())
            .flat_map(|i| std::iter::repeat_n(i, changes))
            .collect();
        order.shuffle(&mut self.rng);
        let mut appended: Vec<NewChange> = Vec::new();
        for i in order {
            let mut hash = [0u8; 32];
            self.rng.fill(&mut hash[..]);
            let mut body = vec![0u8; bytes];
            self.rng.fill(&mut body[..]);
            body[..16].copy_from_slice(&hash[..16]);
            docs[i].heads = vec![Hash(hash)];
            appended.push(NewChange {
                doc_id: docs[i].header.doc_id,
                hash: Hash(hash),
                bytes: body,
                received_at_ms: 0,
            });
        }
        store::write(self.s(), |t| {
            for d in &docs {
                t.put_doc(d)?;
            }
            for c in &appended {
                t.append_change(c)?;
            }
            Ok(())
        })
        .unwrap();
    }

    fn erase(&self, doc: DocId) {
        store::write(self.s(), |t| {
            crate::erase::erase_in(t, doc, "misfiled", 0).map(|_| ())
        })
        .unwrap();
    }

    /// A new device of `staff`.
    fn device(&self, staff: &Staff) -> (String, Principal) {
        let token = testkit::issue(self.s(), staff, "test", 0).unwrap().token;
        let who = testkit::principal(self.s(), &token);
        (token, who)
    }
}

/// What one way of answering a new device gave it: the changes per document and the sealed
/// sections it was told of.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    got: Got,
    sealed: BTreeSet<DocId>,
}

impl Outcome {
    fn take(&mut self, docs: &[DocPull]) {
        for d in docs {
            let got = self.got.entry(d.doc_id).or_default();
            got.extend(d.changes.iter().map(|c| c.to_vec()));
        }
    }

    /// Each document's changes as a set; panics if one came twice.
    fn once(&self) -> BTreeMap<DocId, BTreeSet<Vec<u8>>> {
        self.got
            .iter()
            .map(|(d, changes)| {
                let set: BTreeSet<Vec<u8>> = changes.iter().cloned().collect();
                assert_eq!(set.len(), changes.len(), "a change of {d} came twice");
                (*d, set)
            })
            .collect()
    }
}

/// The log walk from the start, as a device at cursor 0 was answered before ([`super::pull`]).
fn log_walk(store: &dyn Store, who: &Principal) -> Outcome {
    let mut out = Outcome::default();
    let mut cursor = Seq(0);
    for _ in 0..1000 {
        let page = super::pull(store, who, cursor, &HashSet::new(), 0).unwrap();
        out.take(&page.docs);
        out.sealed.extend(page.sealed);
        cursor = page.cursor;
        if !page.more {
            return out;
        }
    }
    panic!("the log walk never ended");
}

/// A device's syncs: its cursor, log id and the reconciliation it confirms, as a device keeps them.
struct Device {
    who: Principal,
    cursor: Seq,
    log_id: Option<uuid::Uuid>,
    confirm: Option<u64>,
}

impl Device {
    fn new(who: Principal) -> Self {
        Device {
            who,
            cursor: Seq(0),
            log_id: None,
            confirm: None,
        }
    }

    /// One request; the answer is not applied (a lost response).
    fn ask(&self, store: &dyn Store) -> SyncResponse {
        let now = crate::now_ms();
        let req = SyncRequest {
            version: PROTOCOL_VERSION,
            cursor: self.cursor,
            device_clock_ms: now,
            docs: Vec::new(),
            log_id: self.log_id,
            confirmed_reconcile: self.confirm,
            views: Vec::new(),
            restricted: Vec::new(),
        };
        super::handle(store, &self.who, req, now, &Rules::default())
            .unwrap()
            .0
    }

    /// What the device keeps of an answer.
    fn apply(&mut self, resp: &SyncResponse, out: &mut Outcome) {
        assert!(!resp.reset);
        assert!(resp.evictions.is_empty(), "a new device evicts nothing");
        out.take(&resp.docs);
        out.sealed.extend(resp.sealed.iter().map(|s| s.doc_id));
        self.cursor = resp.cursor;
        self.log_id = Some(resp.log_id);
        if let Some(id) = resp.reconcile_id {
            self.confirm = Some(id);
        }
    }

    /// Syncs until the server says no more; returns the requests made.
    fn sync_all(&mut self, store: &dyn Store, out: &mut Outcome) -> usize {
        for n in 1..=1000 {
            let resp = self.ask(store);
            self.apply(&resp, out);
            if !resp.more {
                return n;
            }
        }
        panic!("the server never stopped saying more");
    }
}

/// The changes of the log's entries with bytes, per document: what the store holds.
fn scanned_entries(store: &dyn Store) -> usize {
    let mut n = 0;
    store
        .scan_log(Seq(0), store.last_seq().unwrap(), &mut |_| {
            n += 1;
            true
        })
        .unwrap();
    n
}

/// The `log_scanned` of every sync audit entry of `device`.
fn log_scanned(store: &dyn Store, device: casenote_protocol::DeviceId) -> Vec<u64> {
    crate::audit::entries(store, None)
        .unwrap()
        .iter()
        .filter(|e| e.kind.as_str() == "sync" && e.device_id == Some(device))
        .map(|e| {
            e.details["log_scanned"]
                .as_u64()
                .expect("a sync's audit entry says how many log entries it scanned")
        })
        .collect()
}

/// A store of `cases` cases with documents of every sort: shared and unshared controllers, an
/// objection, restricted and sealed sections, grants in force and lapsed, erased documents.
fn varied_world(seed: u64, cases: usize) -> World {
    let mut w = World::new(seed);
    let case_ids: Vec<CaseId> = (0..cases).map(|_| w.case()).collect();
    w.share(&case_ids[..1]);
    let mut docs = Vec::new();
    for _ in 0..cases * 6 {
        let case = *case_ids.choose(&mut w.rng).unwrap();
        docs.push(w.doc(case));
    }
    let erased: Vec<DocId> = docs.iter().step_by(9).map(|d| d.header.doc_id).collect();
    let changes = w.rng.gen_range(1..4);
    w.store_docs(docs, changes, 64);
    for d in erased {
        w.erase(d);
    }
    w
}

#[test]
fn a_new_devices_first_sync_gives_exactly_what_the_log_walk_gives() {
    let (mut sealed_seen, mut hidden_seen, mut readable_seen) = (0, 0, 0);
    for seed in 0..8 {
        let w = varied_world(seed, 12);
        for staff in &w.staff {
            let (_, who) = w.device(staff);
            let walked = log_walk(w.s(), &who);
            let mut first = Outcome::default();
            let mut dev = Device::new(who.clone());
            dev.sync_all(w.s(), &mut first);
            assert_eq!(
                first.once(),
                walked.once(),
                "seed {seed}, {}: the documents and their changes",
                staff.name
            );
            assert_eq!(
                first.sealed, walked.sealed,
                "seed {seed}, {}: the sealed sections told of",
                staff.name
            );
            assert_eq!(dev.cursor, w.s().last_seq().unwrap());
            // The next sync confirms the last page and brings nothing.
            let mut idle = Outcome::default();
            let resp = dev.ask(w.s());
            dev.apply(&resp, &mut idle);
            assert!(idle.got.is_empty() && !resp.more && resp.reconcile_id.is_none());
            let state = store::read(w.s(), |t| t.device_sync(who.device_id)).unwrap();
            assert!(state.is_some_and(|s| s.pending.is_none()));
            readable_seen += walked.got.len();
            sealed_seen += walked.sealed.len();
            let all = store::read(w.s(), |t| crate::access::visible_docs(t, &who)).unwrap();
            hidden_seen += usize::from(all.readable.len() < w.docs_stored());
        }
    }
    // The worlds exercised what they were built for.
    assert!(readable_seen > 100 && sealed_seen > 5 && hidden_seen > 10);
}

impl World {
    fn docs_stored(&self) -> usize {
        let mut docs = HashSet::new();
        self.s()
            .scan_log(Seq(0), self.s().last_seq().unwrap(), &mut |e| {
                docs.insert(e.doc_id);
                true
            })
            .unwrap();
        docs.len()
    }

    /// A new case of `team` alone, stored.
    fn team_case(&mut self, team: TeamId) -> CaseRecord {
        let case = CaseRecord {
            case_id: CaseId::new_random(),
            owner_org: self.orgs[0],
            teams: vec![team],
            created_ms: 0,
        };
        store::write(self.s(), |t| t.put_case(&case)).unwrap();
        case
    }

    /// A document of `case` open to its teams: neither restricted nor sealed.
    fn plain_doc(&mut self, case: CaseId) -> DocRecord {
        let mut d = self.doc(case);
        d.header.access_teams = None;
        d.header.sealed = false;
        d
    }
}

/// A backfill reads documents' records `RECORDS_PER_READ` at a time and a document's
/// history `PULL_SCAN_BATCH_ENTRIES` changes at a time: pages that hold more documents than one
/// read of records and end inside one, and a history longer than a batch, lose and repeat
/// nothing.
#[test]
fn a_first_sync_across_record_reads_batches_and_pages_gives_exactly_the_log_walk() {
    let mut w = World::new(3);
    let case = w.team_case(w.teams[0]);
    // About 12 MB of single changes of 12 KB (some of another organisation's, unreadable):
    // three pages of about 340 documents each.
    let docs: Vec<DocRecord> = (0..limits::RECORDS_PER_READ * 4)
        .map(|_| w.plain_doc(case.case_id))
        .collect();
    w.store_docs(docs, 1, 12 * 1024);
    let long = w.plain_doc(case.case_id);
    w.store_docs(
        vec![long.clone()],
        limits::PULL_SCAN_BATCH_ENTRIES + 100,
        64,
    );
    let alice = w.staff[0].clone();
    let (_, who) = w.device(&alice);
    let walked = log_walk(w.s(), &who);
    let mut first = Outcome::default();
    let mut dev = Device::new(who);
    let pages = dev.sync_all(w.s(), &mut first);
    assert!(pages >= 3, "{pages} pages");
    let readable = walked.got.len();
    assert!(
        readable > limits::RECORDS_PER_READ * 3,
        "{readable} documents"
    );
    let long_history = first.once().get(&long.header.doc_id).map(BTreeSet::len);
    assert_eq!(long_history, Some(limits::PULL_SCAN_BATCH_ENTRIES + 100));
    assert_eq!(first.once(), walked.once());
}

#[test]
fn a_new_device_that_may_read_nothing_is_answered_at_once_without_scanning_the_log() {
    let mut w = World::new(1);
    // Cases of North only: Hal (Hospice, Care) may read none of them.
    let north = w.teams[0];
    let mut docs = Vec::new();
    for _ in 0..100 {
        let case = w.team_case(north);
        for _ in 0..30 {
            docs.push(w.plain_doc(case.case_id));
        }
    }
    w.store_docs(docs, 2, 32);
    assert_eq!(scanned_entries(w.s()), 6000);
    let hal = w.staff[4].clone();
    let (_, who) = w.device(&hal);
    let mut dev = Device::new(who.clone());
    let mut out = Outcome::default();
    let requests = dev.sync_all(w.s(), &mut out);
    assert_eq!(requests, 1);
    assert!(out.got.is_empty() && out.sealed.is_empty());
    assert_eq!(dev.cursor, w.s().last_seq().unwrap());
    assert_eq!(
        log_scanned(w.s(), who.device_id),
        vec![0],
        "the first sync read no log entry"
    );
    // The device is reconciled: its next sync is an idle one.
    let resp = dev.ask(w.s());
    assert!(resp.docs.is_empty() && !resp.more && resp.reconcile_id.is_none());
    assert_eq!(log_scanned(w.s(), who.device_id), vec![0, 0]);
}

#[test]
fn a_first_sync_pages_keeps_the_cursor_and_resends_a_lost_page_from_the_last_confirmed() {
    let mut w = World::new(2);
    let north = w.teams[0];
    let case = w.team_case(north);
    // 30 documents of 2 changes of 300 KB: about 18 MB, five pages of 4 MB.
    let docs: Vec<DocRecord> = (0..30).map(|_| w.plain_doc(case.case_id)).collect();
    let first_doc = docs[0].clone();
    w.store_docs(docs, 2, 300 * 1024);
    let planned_at = w.s().last_seq().unwrap();
    let alice = w.staff[0].clone();
    let (_, who) = w.device(&alice);
    let mut dev = Device::new(who.clone());
    let mut out = Outcome::default();

    let page1 = dev.ask(w.s());
    assert!(page1.more && page1.reconcile_id.is_some());
    assert_eq!(
        page1.cursor,
        Seq(0),
        "the cursor stays while the first sync pages"
    );
    dev.apply(&page1, &mut out);

    // Meanwhile a colleague writes: a new document, and a change to one already sent.
    let late = w.plain_doc(case.case_id);
    let late_id = late.header.doc_id;
    w.store_docs(vec![late], 1, 100);
    let again = first_doc;
    w.store_docs(vec![again], 1, 100);

    // Page 2 is lost; the device asks again confirming page 1 and gets page 2 again.
    let lost = dev.ask(w.s());
    assert!(lost.more);
    let resent = dev.ask(w.s());
    assert_ne!(lost.reconcile_id, resent.reconcile_id);
    let changes = |r: &SyncResponse| {
        let mut o = Outcome::default();
        o.take(&r.docs);
        o.once()
    };
    assert_eq!(
        changes(&resent),
        changes(&lost),
        "the lost page is sent again"
    );
    assert!(!changes(&resent).is_empty());
    dev.apply(&resent, &mut out);

    let mut pages = 3;
    loop {
        let resp = dev.ask(w.s());
        if !resp.more {
            // The last page is lost too: sent again, the same.
            let again = dev.ask(w.s());
            assert_eq!(changes(&again), changes(&resp));
            assert_eq!(again.cursor, resp.cursor);
            dev.apply(&again, &mut out);
            break;
        }
        assert_eq!(
            resp.cursor,
            Seq(0),
            "the cursor stays while the first sync pages"
        );
        dev.apply(&resp, &mut out);
        pages += 1;
        assert!(pages < 20);
    }
    assert!(pages >= 4, "the first sync was paged ({pages} pages)");
    assert!(dev.cursor >= planned_at);
    // Then the normal log scan; everything arrives exactly once.
    let mut tail = Outcome::default();
    dev.sync_all(w.s(), &mut tail);
    for (d, changes) in tail.got {
        out.got.entry(d).or_default().extend(changes);
    }
    assert_eq!(dev.cursor, w.s().last_seq().unwrap());
    let walked = log_walk(w.s(), &who);
    assert_eq!(out.once(), walked.once());
    assert!(out.got.contains_key(&late_id));
}

#[test]
fn a_device_back_at_cursor_zero_without_a_confirmation_starts_its_first_sync_over() {
    let mut w = varied_world(3, 6);
    let _ = &mut w;
    let alice = w.staff[0].clone();
    let (_, who) = w.device(&alice);
    let mut dev = Device::new(who.clone());
    let mut out = Outcome::default();
    dev.sync_all(w.s(), &mut out);
    // The device is wiped (or reset): cursor 0, nothing to confirm. It gets everything again.
    let mut wiped = Device::new(who.clone());
    let mut again = Outcome::default();
    wiped.sync_all(w.s(), &mut again);
    assert_eq!(again.once(), log_walk(w.s(), &who).once());
    assert_eq!(again.sealed, out.sealed);
}
