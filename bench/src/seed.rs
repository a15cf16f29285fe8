//! Fast server-side seeding: builds case records as real Automerge documents and stores them
//! through `casenote_server::sync::push`, the very path a device's push takes once the HTTP layer
//! has decoded it, but without a device store, an HTTP round trip or a flush per batch.
//!
//! W3 and W6 need a device holding 10,000 documents and a store holding 100,000 to 1,000,000;
//! building those through `Device` edits (one flushed write per edit) would take hours and
//! measure the wrong thing. The documents match what a device writes: a case document, a plan
//! with a ~2 KB narrative, and filed notes of ~400 characters, each change authored by the staff
//! member with one actor per seeding principal (as a device would have).
//!
//! [`bulk_cases`] (W6) stores the same documents without the server's validation: about half of
//! `sync::push`'s CPU is validating documents the seeder built itself, which at a million
//! documents is most of an hour. It writes, through the store's own transactions, exactly the
//! rows `sync::push` writes for a push of new documents (case records, document records with
//! heads, operation count and filing time, the changes under the next sequences with their
//! received times, the actor binding, the seeding device's holdings), many cases per
//! transaction; `tests::bulk_seeding_writes_what_a_push_writes` holds it to that, row by row.

use crate::harness::{prose, Rng};
use automerge::{ActorId, Author, AutoCommit, ReadDoc};
use casenote_protocol::record::{self, field, Identity, NewNote, NoteAuthor, NoteKind};
use casenote_protocol::wire::{DocPush, Hash};
use casenote_protocol::{CaseId, DocId, DocKind};
use casenote_server::auth::Principal;
use casenote_server::model::{ActorBinding, CaseRecord, DocHeader, DocRecord, NewChange};
use casenote_server::{Store, StoreError};
use serde_bytes::ByteBuf;
use std::sync::mpsc;

/// Cases pushed in one `sync::push` (one atomic store write). 50 cases of 22 documents is about
/// 1,100 documents, under the protocol's per-request document limit.
const CASES_PER_PUSH: usize = 50;

/// One seeding principal: who the cases belong to (their teams), the actor they write with, and
/// their organisation and first team as the directory names them (a note's author block must say
/// exactly that, or the server refuses it).
pub struct Seeder {
    pub who: Principal,
    actor: ActorId,
    org: String,
    team: String,
}

impl Seeder {
    pub fn new(store: &dyn Store, who: Principal) -> anyhow::Result<Self> {
        let (org, team) = crate::harness::names_of(store, &who)?;
        Ok(Self {
            who,
            actor: ActorId::random(),
            org,
            team,
        })
    }

    fn doc(&self) -> AutoCommit {
        let mut doc = AutoCommit::new();
        // set_author picks a fresh actor when the author changes, so the actor goes last.
        doc.set_author(Some(Author::from(
            self.who.staff.staff_id.as_bytes().to_vec(),
        )));
        doc.set_actor(self.actor.clone());
        doc
    }
}

/// One built document: the push a device would send, and what the server will record of it
/// (the changes' hashes and stored bytes in order, the heads, the operations in its history).
pub struct Built {
    pub push: DocPush,
    hashes: Vec<Hash>,
    /// Each change as the server stores it: Automerge's `bytes()`, which compresses a large
    /// change's columns (what a device sends is the uncompressed `raw_bytes()`).
    stored: Vec<Vec<u8>>,
    heads: Vec<Hash>,
    ops: u64,
}

fn built(doc_id: DocId, case_id: CaseId, kind: DocKind, doc: &mut AutoCommit) -> Built {
    let mut changes = doc.get_changes(&[]);
    let hashes = changes.iter().map(|c| Hash::from(c.hash())).collect();
    let stored = changes.iter_mut().map(|c| c.bytes().into_owned()).collect();
    let push = DocPush {
        doc_id,
        case_id,
        kind,
        base: Vec::new(),
        changes: changes
            .into_iter()
            .map(|c| ByteBuf::from(c.raw_bytes().to_vec()))
            .collect(),
    };
    let mut heads: Vec<Hash> = doc.get_heads().into_iter().map(Hash::from).collect();
    heads.sort();
    Built {
        push,
        hashes,
        stored,
        heads,
        ops: doc.stats().num_ops,
    }
}

/// Builds one case's documents: the case, its plan (two changes: created, narrative written) and
/// `notes` filed notes (two changes each: drafted, filed).
pub fn case_docs(
    seeder: &Seeder,
    rng: &mut Rng,
    index: usize,
    notes: usize,
) -> anyhow::Result<Vec<DocPush>> {
    Ok(case_built(seeder, rng, index, notes)?
        .into_iter()
        .map(|b| b.push)
        .collect())
}

/// [`case_docs`], with what the server will record of each document.
pub fn case_built(
    seeder: &Seeder,
    rng: &mut Rng,
    index: usize,
    notes: usize,
) -> anyhow::Result<Vec<Built>> {
    let case_id = CaseId::new_random();
    let now = casenote_server::now_ms();
    let mut out = Vec::with_capacity(notes + 2);

    let mut case = seeder.doc();
    record::init_case(
        &mut case,
        case_id,
        &Identity {
            name: format!("Seeded Person {index}"),
            dob: Some("1941-03-02".into()),
            ..Default::default()
        },
    )?;
    case.commit();
    out.push(built(DocId(case_id.0), case_id, DocKind::Case, &mut case));

    let mut plan = seeder.doc();
    record::init_plan(&mut plan, case_id)?;
    plan.commit();
    record::append_root_text(&mut plan, "plan", field::NARRATIVE, &prose(rng, 2000))?;
    plan.commit();
    out.push(built(
        DocId::new_random(),
        case_id,
        DocKind::Plan,
        &mut plan,
    ));

    let author = NoteAuthor {
        staff_id: seeder.who.staff.staff_id.to_string(),
        role: seeder.who.staff.role.to_string(),
        org: seeder.org.clone(),
        team: seeder.team.clone(),
    };
    for _ in 0..notes {
        let note_id = DocId::new_random();
        let mut note = seeder.doc();
        record::init_note(
            &mut note,
            &NewNote {
                case_id,
                kind: NoteKind::Visit,
                author: author.clone(),
                occurred_at_ms: now,
                recorded_at_ms: now,
                text: prose(rng, 400),
                amends: None,
                late_entry_reason: None,
            },
        )?;
        note.commit();
        record::file_note(&mut note, note_id, now)?;
        note.commit();
        out.push(built(note_id, case_id, DocKind::Note, &mut note));
    }
    Ok(out)
}

/// Stores `cases` cases of `notes` notes each for `seeder`, building on two threads while the
/// store writes, then flushes once. Returns the number of documents stored.
pub fn seed_cases(
    store: &dyn Store,
    seeder: &Seeder,
    cases: usize,
    notes: usize,
    seed: u64,
) -> anyhow::Result<usize> {
    let batches: Vec<(usize, usize)> = (0..cases)
        .step_by(CASES_PER_PUSH)
        .map(|start| (start, (start + CASES_PER_PUSH).min(cases)))
        .collect();
    let workers = 2;
    let stored = std::thread::scope(|s| -> anyhow::Result<usize> {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let batches = &batches;
                s.spawn(move || -> anyhow::Result<usize> {
                    let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(w as u64 + 1));
                    let mut docs = 0;
                    for (start, end) in batches.iter().skip(w).step_by(workers) {
                        let mut pushes = Vec::new();
                        for i in *start..*end {
                            pushes.extend(case_docs(seeder, &mut rng, i, notes)?);
                        }
                        let n = pushes.len();
                        let out = casenote_server::sync::push(
                            store,
                            &seeder.who,
                            pushes,
                            casenote_server::now_ms(),
                        )?;
                        if let Some(r) = out.rejections.first() {
                            anyhow::bail!("a seeded document was refused: {}", r.reason);
                        }
                        docs += n;
                    }
                    Ok(docs)
                })
            })
            .collect();
        let mut total = 0;
        for h in handles {
            total += h
                .join()
                .map_err(|_| anyhow::anyhow!("a seeding thread panicked"))??;
        }
        Ok(total)
    })?;
    store.flush()?;
    Ok(stored)
}

/// Cases [`bulk_cases`] writes in one transaction: 250 cases of 22 documents is 5,500 documents
/// and 11,000 changes, about 15 MB, so a transaction is a second or two of building.
const CASES_PER_BULK_TXN: usize = 250;

/// Writes `docs`, new documents built by `seeder`, in `txn`, exactly as `sync::push` writes a
/// push of them that passed: case documents first (the case records they create), every
/// document's record (the header a push gives a new document, its heads and operations, a
/// note's filing time), the changes under the next sequences in push order, the seeder's actor
/// binding on first use, and the documents in the seeding device's holdings. No audit entry: a
/// push that refuses nothing writes none.
pub fn write_built(
    txn: &mut dyn casenote_server::store::Txn,
    seeder: &Seeder,
    docs: &[Built],
    now_ms: i64,
) -> Result<(), StoreError> {
    let who = &seeder.who;
    let ordered: Vec<&Built> = docs
        .iter()
        .filter(|b| b.push.kind == DocKind::Case)
        .chain(docs.iter().filter(|b| b.push.kind != DocKind::Case))
        .collect();
    for b in ordered.iter().filter(|b| b.push.kind == DocKind::Case) {
        txn.put_case(&CaseRecord {
            case_id: b.push.case_id,
            owner_org: who.staff.org_id,
            teams: who.teams().to_vec(),
            created_ms: now_ms,
        })?;
    }
    for b in &ordered {
        let kind = b.push.kind;
        txn.put_doc(&DocRecord {
            header: DocHeader {
                doc_id: b.push.doc_id,
                case_id: b.push.case_id,
                kind,
                owner_org: who.staff.org_id,
                access_teams: kind.is_restricted().then(|| who.teams().to_vec()),
                created_by: who.staff_id(),
                created_ms: now_ms,
                sealed: false,
                grants: Vec::new(),
            },
            heads: b.heads.clone(),
            ops: b.ops,
            // Every seeded note is filed in the push that creates it.
            filed_ms: (kind == DocKind::Note).then_some(now_ms),
        })?;
    }
    for b in &ordered {
        for (bytes, hash) in b.stored.iter().zip(&b.hashes) {
            txn.append_change(&NewChange {
                doc_id: b.push.doc_id,
                hash: *hash,
                bytes: bytes.clone(),
                received_at_ms: now_ms,
            })?;
        }
    }
    let actor = seeder.actor.to_bytes();
    if txn.actor(actor)?.is_none() {
        txn.put_actor(
            actor,
            &ActorBinding {
                staff_id: who.staff_id(),
                device_id: who.device_id,
                first_seen_ms: now_ms,
            },
        )?;
    }
    let held: Vec<DocId> = ordered.iter().map(|b| b.push.doc_id).collect();
    txn.device_docs_add(who.device_id, &held)
}

/// Stores `cases` cases of `notes` notes each for `seeder` as [`seed_cases`] does, but written by
/// [`write_built`] without the server's validation, [`CASES_PER_BULK_TXN`] cases a transaction,
/// built on one thread per core while this one writes; then flushes once. `report` hears the
/// documents stored so far after each transaction. Returns the number of documents stored.
pub fn bulk_cases(
    store: &dyn Store,
    seeder: &Seeder,
    (cases, notes, seed): (usize, usize, u64),
    report: &mut dyn FnMut(usize),
) -> anyhow::Result<usize> {
    let batches: Vec<(usize, usize)> = (0..cases)
        .step_by(CASES_PER_BULK_TXN)
        .map(|start| (start, (start + CASES_PER_BULK_TXN).min(cases)))
        .collect();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let stored = std::thread::scope(|s| -> anyhow::Result<usize> {
        let (tx, rx) = mpsc::sync_channel::<anyhow::Result<Vec<Built>>>(workers);
        for w in 0..workers {
            let (tx, batches) = (tx.clone(), &batches);
            s.spawn(move || {
                let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(w as u64 + 1));
                for (start, end) in batches.iter().skip(w).step_by(workers) {
                    let mut built = Vec::new();
                    let mut made = Ok(());
                    for i in *start..*end {
                        match case_built(seeder, &mut rng, i, notes) {
                            Ok(docs) => built.extend(docs),
                            Err(e) => {
                                made = Err(e);
                                break;
                            }
                        }
                    }
                    // A send fails only once the writer stopped (it failed): stop too.
                    if tx.send(made.map(|()| built)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut stored = 0;
        for built in rx {
            let built = built?;
            let now = casenote_server::now_ms();
            casenote_server::store::write(store, |txn| write_built(txn, seeder, &built, now))?;
            stored += built.len();
            report(stored);
        }
        Ok(stored)
    })?;
    store.flush()?;
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use casenote_protocol::Seq;
    use casenote_server::store::{read, write};
    use std::path::Path;

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), &target).unwrap();
            }
        }
    }

    /// A short fingerprint of bytes, so a differing row stays readable.
    fn fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// Everything a store holds about `docs`, as the server reads it: the log (sequence,
    /// document, hash, bytes, received time), each document's record and case, the actor's
    /// binding, the seeding device's holdings, the audit log.
    fn rows(store: &dyn Store, seeder: &Seeder, docs: &[Built]) -> Vec<String> {
        let mut out = vec![format!("last_seq {:?}", store.last_seq().unwrap())];
        let mut log = Vec::new();
        store
            .scan_log(Seq(0), store.last_seq().unwrap(), &mut |e| {
                log.push((e.seq, e.doc_id, e.hash, e.bytes.to_vec()));
                true
            })
            .unwrap();
        for (seq, doc, hash, bytes) in log {
            let at = store.received_at(seq).unwrap();
            out.push(format!(
                "log {seq:?} {doc} {hash:?} {} bytes {:016x} {at:?}",
                bytes.len(),
                fnv1a(&bytes)
            ));
        }
        read(store, |txn| {
            for b in docs {
                let (doc, case) = (b.push.doc_id, b.push.case_id);
                out.push(format!("doc {:?}", txn.doc(doc)?));
                out.push(format!("case {:?}", txn.case(case)?));
                out.push(format!("case_docs {:?}", txn.docs_of_case(case)?));
            }
            out.push(format!("actor {:?}", txn.actor(seeder.actor.to_bytes())?));
            let mut held = txn.device_docs(seeder.who.device_id)?;
            held.sort();
            out.push(format!("held {held:?}"));
            for t in seeder.who.teams() {
                out.push(format!("team {t} {:?}", txn.cases_of_team(*t)?));
            }
            Ok(())
        })
        .unwrap();
        store
            .audit_scan(&mut |seq, bytes| {
                out.push(format!("audit {seq} {bytes:?}"));
                true
            })
            .unwrap();
        out
    }

    #[test]
    fn bulk_seeding_writes_what_a_push_writes() {
        let tmp = tempfile::tempdir().unwrap();
        let (pushed, bulk) = (tmp.path().join("pushed"), tmp.path().join("bulk"));
        let seeder = {
            let store = casenote_server::open(&pushed).unwrap();
            let s: &dyn Store = store.as_ref();
            casenote_server::cli::demo::load(s, casenote_server::now_ms()).unwrap();
            let token = crate::harness::issue_token(s, "Priya Shah", "seeder").unwrap();
            Seeder::new(s, crate::harness::principal(s, &token).unwrap()).unwrap()
        };
        copy_dir(&pushed, &bulk);
        let mut rng = Rng::new(7);
        let docs: Vec<Built> = (0..3)
            .flat_map(|i| case_built(&seeder, &mut rng, i, 2).unwrap())
            .collect();
        let now = casenote_server::now_ms();

        let a = casenote_server::open(&pushed).unwrap();
        let pushes = docs.iter().map(|b| b.push.clone()).collect();
        let out = casenote_server::sync::push(a.as_ref(), &seeder.who, pushes, now).unwrap();
        assert!(out.rejections.is_empty(), "{:?}", out.rejections);
        assert_eq!(
            out.stored,
            docs.iter().map(|b| b.hashes.len()).sum::<usize>()
        );
        a.flush().unwrap();

        let b = casenote_server::open(&bulk).unwrap();
        write(b.as_ref(), |txn| write_built(txn, &seeder, &docs, now)).unwrap();
        b.flush().unwrap();

        let (want, got) = (
            rows(a.as_ref(), &seeder, &docs),
            rows(b.as_ref(), &seeder, &docs),
        );
        assert!(want.len() > docs.len() * 3, "the comparison saw too little");
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w, g);
        }
        assert_eq!(want.len(), got.len());
    }
}
