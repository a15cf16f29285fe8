//! A note filed on the wrong person (`casenote-server admin note misfiled`): it leaves that
//! person's record on the server and on every device, a stub says who moved it, when and why,
//! and the note is re-filed on the right person.
//!
//! Provenance. The note's content is a chain of Automerge changes, each signed by its actor's
//! binding (`ActorBinding`: the member of staff and device that first used the actor). The
//! re-filed note is a new document on the right case carrying the same changes, byte for byte
//! (the same hashes, actors and times, so its history still names its author and every binding
//! stays valid), plus one change by the server that sets its `case_id` to the right case (every
//! document names its case, and the record rules hold a device to that). A new document rather
//! than a changed header, because a device that holds the note under the wrong person must drop
//! it whole: an eviction of the old id, which every device already knows how to carry out and
//! which rewrites its files. The server's changes (that one, and the stub's) use a fresh actor
//! bound to no member of staff: the history shows them as no one's, and the audit chain says
//! which administrator made them.
//!
//! The stub is an entry in the wrong person's case document, `moved_notes.<uuid>` with `by`,
//! `at_ms`, `category` and the optional `reason`: no byte of the note. Devices receive it with
//! the case document and show it; exports show it with the case.
//!
//! Everything happens in one write transaction: the re-filed note, the stub, the erasure of the
//! original ([`crate::erase::erase_in`]) and the two audit entries (ids, hashes, counts and the
//! category code). The case document's heads are checked in it against the ones the stub was
//! written on; a device's edit in between makes it try again.

use crate::admin::AdminError;
use crate::model::audit::{AuditKind, AuditRecord};
use crate::model::{By, DocHeader, DocRecord, NewChange};
use crate::store::{self, Compaction, Store, StoreError, Txn};
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, Change, ObjType, ReadDoc, ROOT};
use casenote_protocol::record::field;
use casenote_protocol::wire::Hash;
use casenote_protocol::{limits, CaseId, DocId, DocKind};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Why a note was moved: a code, shown on the stub.
pub const CATEGORIES: &[&str] = &[
    "wrong-person",
    "duplicate-record",
    "records-merged",
    "other",
];

/// Attempts when devices keep editing the wrong person's case document meanwhile.
const ATTEMPTS: usize = 5;

/// What to move where.
#[derive(Clone, Debug)]
pub struct Misfile<'a> {
    pub note: DocId,
    pub to_case: CaseId,
    pub category: &'a str,
    /// Shown on the stub to the staff of the wrong person's record.
    pub reason: Option<&'a str>,
}

/// What `misfile` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Misfiled {
    pub note_id: DocId,
    pub refiled_id: DocId,
    pub from_case: CaseId,
    pub to_case: CaseId,
    pub stub_id: uuid::Uuid,
    /// The note's changes carried to the re-filed note (and erased from the original).
    pub changes: usize,
    /// Whether the server's files are rid of the note's bytes yet, and how.
    pub compaction: Compaction,
}

/// The note's changes as stored, and its record.
struct Original {
    rec: DocRecord,
    changes: Vec<(Vec<u8>, Hash, i64)>,
}

/// Moves note `m.note` to case `m.to_case` as `by` (see the module docs), then makes the
/// store's files drop its bytes ([`crate::erase::finish`]).
pub fn misfile(
    store: &dyn Store,
    by: By,
    m: &Misfile<'_>,
    now_ms: i64,
) -> Result<Misfiled, AdminError> {
    check_words(m)?;
    let original = original(store, m)?;
    let from_case = original.rec.header.case_id;
    let refiled = refiled_note(&original, m.to_case)?;
    for _ in 0..ATTEMPTS {
        let Some(stub) = Stub::write(store, from_case, &by, m, now_ms)? else {
            continue;
        };
        match commit(store, &by, m, (&original, &refiled, &stub), now_ms)? {
            Step::Done(done) => {
                let compaction = crate::erase::finish(store, &[m.note])?;
                return Ok(Misfiled { compaction, ..done });
            }
            Step::Gone => return Err(AdminError::NoSuchDocument(m.note)),
            Step::Again => {}
        }
    }
    Err(AdminError::Failed(format!(
        "the record of case {from_case} kept changing while the stub was written; try again"
    )))
}

/// How the transaction ended.
enum Step {
    Done(Misfiled),
    /// The wrong person's case document moved on since the stub was written.
    Again,
    /// The note left meanwhile (moved by another administrator).
    Gone,
}

fn check_words(m: &Misfile<'_>) -> Result<(), AdminError> {
    if !CATEGORIES.contains(&m.category) {
        return Err(AdminError::Failed(format!(
            "unknown reason category {:?}: use one of {}",
            m.category,
            CATEGORIES.join(", ")
        )));
    }
    if let Some(r) = m.reason {
        if r.trim().is_empty() || r.len() > limits::SHORT_TEXT_BYTES_MAX {
            return Err(AdminError::Failed(format!(
                "a reason must not be empty or longer than {} bytes",
                limits::SHORT_TEXT_BYTES_MAX
            )));
        }
    }
    Ok(())
}

/// The filed note and its changes, checked: a note, filed, not already on `to_case`, which
/// exists, and small enough to hold in memory.
fn original(store: &dyn Store, m: &Misfile<'_>) -> Result<Original, AdminError> {
    let (rec, to) = store::read(store, |t| Ok((t.doc(m.note)?, t.case(m.to_case)?)))?;
    let rec = rec.ok_or(AdminError::NoSuchDocument(m.note))?;
    if to.is_none() {
        return Err(AdminError::NoSuchCase(m.to_case));
    }
    if rec.header.kind != DocKind::Note {
        return Err(AdminError::Failed(format!(
            "document {} is a {}, not a note",
            m.note, rec.header.kind
        )));
    }
    if rec.filed_ms.is_none() {
        return Err(AdminError::Failed(format!(
            "note {} is a draft: only a filed note is moved (its author can correct a draft)",
            m.note
        )));
    }
    if rec.header.case_id == m.to_case {
        return Err(AdminError::Failed(format!(
            "note {} is already on case {}",
            m.note, m.to_case
        )));
    }
    if rec.ops > limits::SERVER_RESIDENT_OPS_MAX {
        return Err(AdminError::Failed(format!(
            "note {} is larger than the server holds in memory",
            m.note
        )));
    }
    let mut changes = Vec::new();
    for seq in store.doc_change_seqs(m.note)? {
        if let Some((_, hash, bytes)) = store.get_log(seq)? {
            let received = store.received_at(seq)?.unwrap_or(0);
            changes.push((bytes, hash, received));
        }
    }
    Ok(Original { rec, changes })
}

/// The server's change that names the right case in the note: (bytes, hash, operations).
type Made = (Vec<u8>, Hash, u64);

fn refiled_note(o: &Original, to_case: CaseId) -> Result<Made, AdminError> {
    let mut doc = AutoCommit::new();
    let changes = o
        .changes
        .iter()
        .map(|(b, _, _)| Change::from_bytes(b.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AdminError::Failed(format!("a stored change does not load: {e}")))?;
    doc.apply_changes(changes)
        .map_err(|e| AdminError::Failed(format!("the note does not load: {e}")))?;
    doc.set_actor(ActorId::random());
    doc.put(ROOT, field::CASE_ID, to_case.to_string())
        .map_err(automerge_error)?;
    made(&mut doc)
}

/// The change `doc`'s last commit made.
fn made(doc: &mut AutoCommit) -> Result<Made, AdminError> {
    doc.commit();
    let mut change = doc
        .get_last_local_change()
        .ok_or_else(|| AdminError::Failed("the server's change was not made".into()))?;
    let hash = Hash::from(change.hash());
    let ops = change.len() as u64;
    Ok((change.bytes().to_vec(), hash, ops))
}

fn automerge_error(e: automerge::AutomergeError) -> AdminError {
    AdminError::Failed(format!("the server's change could not be made: {e}"))
}

/// The stub's change on the wrong person's case document, and the record (heads) it was
/// written on.
struct Stub {
    id: uuid::Uuid,
    case_doc: DocRecord,
    change: Made,
}

impl Stub {
    fn write(
        store: &dyn Store,
        case: CaseId,
        by: &By,
        m: &Misfile<'_>,
        now_ms: i64,
    ) -> Result<Option<Stub>, AdminError> {
        let case_doc_id = DocId(case.0);
        let case_doc = store::read(store, |t| t.doc(case_doc_id))?
            .ok_or(AdminError::NoSuchDocument(case_doc_id))?;
        if case_doc.ops > limits::SERVER_RESIDENT_OPS_MAX {
            return Err(AdminError::Failed(format!(
                "the record of case {case} is larger than the server holds in memory"
            )));
        }
        let mut doc = crate::validate::materialise(store, case_doc_id)?;
        if !crate::validate::has_heads(&mut doc, &case_doc.heads) {
            return Ok(None); // a push landed between the two reads
        }
        doc.set_actor(ActorId::random());
        let id = uuid::Uuid::new_v4();
        let stubs = match doc.get(ROOT, field::MOVED_NOTES).map_err(automerge_error)? {
            Some((automerge::Value::Object(ObjType::Map), obj)) => obj,
            _ => doc
                .put_object(ROOT, field::MOVED_NOTES, ObjType::Map)
                .map_err(automerge_error)?,
        };
        let entry = doc
            .put_object(&stubs, id.to_string(), ObjType::Map)
            .map_err(automerge_error)?;
        doc.put(&entry, "by", who(by)).map_err(automerge_error)?;
        doc.put(&entry, "at_ms", now_ms).map_err(automerge_error)?;
        doc.put(&entry, "category", m.category)
            .map_err(automerge_error)?;
        if let Some(reason) = m.reason {
            doc.put(&entry, "reason", reason).map_err(automerge_error)?;
        }
        let change = made(&mut doc)?;
        Ok(Some(Stub {
            id,
            case_doc,
            change,
        }))
    }
}

/// Who moved it, as the stub shows it.
fn who(by: &By) -> String {
    match by {
        By::Admin { admin_id } => format!("administrator {admin_id}"),
        By::Cli => "an administrator on the server".into(),
        By::Staff { staff_id, .. } => format!("staff {staff_id}"),
    }
}

/// The one transaction (see the module docs).
fn commit(
    store: &dyn Store,
    by: &By,
    m: &Misfile<'_>,
    (o, refiled, stub): (&Original, &Made, &Stub),
    now_ms: i64,
) -> Result<Step, AdminError> {
    let refiled_id = DocId::new_random();
    let done = store::write(store, |t| {
        let case_doc_id = stub.case_doc.header.doc_id;
        match t.doc(case_doc_id)? {
            Some(now) if now.heads == stub.case_doc.heads => {}
            _ => return Ok(Step::Again),
        }
        if t.doc(m.note)?.is_none() {
            return Ok(Step::Gone);
        }
        refile(t, o, refiled, (refiled_id, m.to_case))?;
        let (bytes, hash, ops) = &stub.change;
        t.append_change(&NewChange {
            doc_id: case_doc_id,
            hash: *hash,
            bytes: bytes.clone(),
            received_at_ms: now_ms,
        })?;
        t.put_doc(&DocRecord {
            heads: vec![*hash],
            ops: stub.case_doc.ops + ops,
            ..stub.case_doc.clone()
        })?;
        let erased = crate::erase::erase_in(t, m.note, "misfiled", now_ms)?
            .ok_or_else(|| StoreError::Corrupt("the note left while it was moved".into()))?;
        let ids = (refiled_id, refiled.1);
        audit(t, by, m, (o, ids, stub, erased.seqs.len()), now_ms)?;
        Ok(Step::Done(Misfiled {
            note_id: m.note,
            refiled_id,
            from_case: o.rec.header.case_id,
            to_case: m.to_case,
            stub_id: stub.id,
            changes: o.changes.len(),
            compaction: Compaction {
                done: false,
                detail: String::new(),
            },
        }))
    });
    match done {
        Ok(done) => Ok(done),
        Err(StoreError::Conflict) => Ok(Step::Again),
        Err(e) => Err(e.into()),
    }
}

/// The re-filed note: the original's changes under `id` on `case`, then the server's change.
fn refile(
    t: &mut dyn Txn,
    o: &Original,
    refiled: &Made,
    (id, case): (DocId, CaseId),
) -> Result<(), StoreError> {
    for (bytes, hash, received) in &o.changes {
        t.append_change(&NewChange {
            doc_id: id,
            hash: *hash,
            bytes: bytes.clone(),
            received_at_ms: *received,
        })?;
    }
    let (bytes, hash, ops) = refiled;
    t.append_change(&NewChange {
        doc_id: id,
        hash: *hash,
        bytes: bytes.clone(),
        received_at_ms: o.changes.last().map_or(0, |c| c.2),
    })?;
    t.put_doc(&DocRecord {
        header: DocHeader {
            doc_id: id,
            case_id: case,
            ..o.rec.header.clone()
        },
        heads: vec![*hash],
        ops: o.rec.ops + ops,
        filed_ms: o.rec.filed_ms,
    })
}

/// One entry at each end: ids, the changes' hashes (as one sha256), counts, the category.
fn audit(
    t: &mut dyn Txn,
    by: &By,
    m: &Misfile<'_>,
    (o, (refiled_id, refile_change), stub, erased): (&Original, (DocId, Hash), &Stub, usize),
    now_ms: i64,
) -> Result<(), StoreError> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (_, hash, _) in &o.changes {
        h.update(hash.0);
    }
    let changes_sha256 = hex::encode(h.finalize());
    let from = json!({
        "end": "from",
        "case_id": o.rec.header.case_id,
        "note_id": m.note,
        "stub_id": stub.id,
        "stub_change": hex::encode(stub.change.1 .0),
        "erased_changes": erased,
        "changes_sha256": changes_sha256,
        "category": m.category,
    });
    let to = json!({
        "end": "to",
        "case_id": m.to_case,
        "note_id": refiled_id,
        "moved_from_note": m.note,
        "changes": o.changes.len(),
        "changes_sha256": changes_sha256,
        "refile_change": hex::encode(refile_change.0),
        "category": m.category,
    });
    for details in [from, to] {
        t.audit_append(AuditRecord::new(AuditKind::Misfiled, now_ms, details).by(*by))?;
    }
    Ok(())
}
