//! Fast server-side seeding: builds case records as real Automerge documents and stores them
//! through `casenote_server::sync::push`, the very path a device's push takes once the HTTP layer
//! has decoded it, but without a device store, an HTTP round trip or a flush per batch.
//!
//! W3 and W6 need a device holding 10,000 documents and a store holding 100,000; building those
//! through `Device` edits (one flushed write per edit) would take minutes and measure the wrong
//! thing. The documents match what a device writes: a case document, a plan with a ~2 KB
//! narrative, and filed notes of ~400 characters, each change authored by the staff member with
//! one actor per seeding principal (as a device would have).

use crate::harness::{prose, Rng};
use automerge::{ActorId, Author, AutoCommit};
use casenote_protocol::record::{self, field, Identity, NewNote, NoteAuthor, NoteKind};
use casenote_protocol::wire::DocPush;
use casenote_protocol::{CaseId, DocId, DocKind};
use casenote_server::auth::Principal;
use casenote_server::Store;
use serde_bytes::ByteBuf;

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

fn push_of(doc_id: DocId, case_id: CaseId, kind: DocKind, doc: &mut AutoCommit) -> DocPush {
    DocPush {
        doc_id,
        case_id,
        kind,
        base: Vec::new(),
        changes: doc
            .get_changes(&[])
            .into_iter()
            .map(|c| ByteBuf::from(c.raw_bytes().to_vec()))
            .collect(),
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
    out.push(push_of(DocId(case_id.0), case_id, DocKind::Case, &mut case));

    let mut plan = seeder.doc();
    record::init_plan(&mut plan, case_id)?;
    plan.commit();
    record::append_root_text(&mut plan, "plan", field::NARRATIVE, &prose(rng, 2000))?;
    plan.commit();
    out.push(push_of(
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
        out.push(push_of(note_id, case_id, DocKind::Note, &mut note));
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
