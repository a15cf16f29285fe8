//! Break-glass: urgent access to a sealed section (docs/design.md, "Access").
//!
//! A member of staff on a case who is not on a sealed section's access list, and is told of it
//! by its stub ([`crate::sealed`]), may ask for it in an emergency (`POST /v1/break-glass`, online
//! only), with a reason category from a fixed list and a few sentences of reason. [`grant`]
//! gives that one member of staff read access until [`limits::BREAK_GLASS_GRANT_MS`] later: a
//! [`Grant`] on the document's header, which [`crate::access::may_read`] honours until it
//! expires, and an access-epoch bump so the grantee's device is given the section at its next
//! sync ([`crate::sync::reconcile`]). A hidden section, one they may already read, one of a case
//! they may not read, and one that does not exist are all refused alike (`forbidden`).
//!
//! When a grant lapses, reads are refused at once (the expiry is checked against the server's
//! clock wherever access is decided); [`lapse_due`], run at the start of every sync (the next
//! lapse's time read in the sync's first read transaction, with the log id), notices the lapse, removes the grant from the header and bumps the access epoch, so the device evicts the
//! section at its next sync and is sent its stub again. The next lapse's time is one small meta
//! value, so a sync with nothing due costs one more key in a read it makes anyway.
//!
//! Each grant is a [`Record`] the IG lead reads through the admin interface ([`list`]) and marks
//! reviewed ([`review`]); the records not yet reviewed or still in force are one meta value
//! (`break_glass`, JSON, at most [`limits::BREAK_GLASS_OPEN_MAX`], moved by backups and
//! `migrate`); a record both lapsed and reviewed leaves it, and the audit chain keeps its
//! history. The grant, the lapse and the review are each audited (`break_glass`: ids, the
//! category, the SHA-256 of the reason text, never the text); the text itself is only in the
//! record, for the IG lead.

use crate::access;
use crate::auth::Principal;
use crate::model::{AuditKind, AuditRecord, By, Grant};
use crate::store::{read, write, Store, StoreError, Txn};
use casenote_protocol::limits;
use casenote_protocol::wire::{BreakGlassCategory, BreakGlassGranted, BreakGlassRequest};
use casenote_protocol::{CaseId, DeviceId, DocId, DocKind, StaffId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The meta key of the open records.
pub const META_KEY: &str = "break_glass";
/// The meta key of the next lapse's time (ms, big-endian i64); absent when no grant is in force.
pub const NEXT_LAPSE_KEY: &str = "break_glass_next_lapse_ms";

/// One break-glass grant, as the IG lead reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: uuid::Uuid,
    pub doc_id: DocId,
    pub case_id: CaseId,
    pub kind: DocKind,
    pub staff_id: StaffId,
    pub device_id: DeviceId,
    pub category: BreakGlassCategory,
    /// The reason as the member of staff wrote it: for the IG lead, never logged or audited.
    pub reason: String,
    /// SHA-256 of the reason's text, lower-case hex: what the audit entry carries.
    pub reason_sha256: String,
    pub granted_ms: i64,
    pub expires_ms: i64,
    /// The server noticed the grant had expired and took it away.
    pub lapsed: bool,
    pub reviewed: Option<Reviewed>,
}

/// The IG lead's review of a grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reviewed {
    pub at_ms: i64,
    pub by: By,
}

/// Why a break-glass request was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Not a sealed section this member of staff is told of (hidden, not theirs to know of, or
    /// no such document): answered alike, so a refusal never tells whether it exists.
    #[error("document {0} is not a sealed section of a case you may read")]
    NotSealed(DocId),
    #[error("you may already read document {0}; break-glass is for sealed sections you may not")]
    AlreadyReadable(DocId),
    #[error("the reason is empty; say in a few sentences why this cannot wait")]
    EmptyReason,
    #[error("the reason is {len} bytes; the limit is {max}")]
    ReasonTooLong { len: usize, max: usize },
    #[error("{0} break-glass records await the IG lead's review, the most kept: ask them to review (`admin break-glass list`)")]
    TooMany(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// SHA-256 of a reason's text, lower-case hex.
pub fn reason_hash(reason: &str) -> String {
    hex::encode(Sha256::digest(reason.as_bytes()))
}

fn stored(txn: &mut dyn Txn) -> Result<Vec<Record>, StoreError> {
    match txn.meta(META_KEY)? {
        Some(v) => serde_json::from_slice(&v)
            .map_err(|e| StoreError::Corrupt(format!("{META_KEY} does not decode: {e}"))),
        None => Ok(Vec::new()),
    }
}

/// Stores the open records (lapsed and reviewed ones leave) and the next lapse's time.
fn put(txn: &mut dyn Txn, records: &mut Vec<Record>) -> Result<(), StoreError> {
    records.retain(|r| !(r.lapsed && r.reviewed.is_some()));
    let bytes = serde_json::to_vec(records).expect("plain data serialises");
    txn.put_meta(META_KEY, &bytes)?;
    let next = records
        .iter()
        .filter(|r| !r.lapsed)
        .map(|r| r.expires_ms)
        .min()
        .unwrap_or(i64::MAX);
    txn.put_meta(NEXT_LAPSE_KEY, &next.to_be_bytes())
}

fn audit(r: &Record, event: &str, at_ms: i64) -> AuditRecord {
    AuditRecord::new(
        AuditKind::BreakGlass,
        at_ms,
        json!({
            "event": event,
            "break_glass_id": r.id,
            "doc_id": r.doc_id,
            "case_id": r.case_id,
            "category": r.category.as_str(),
            "reason_sha256": r.reason_sha256,
            "expires_ms": r.expires_ms,
        }),
    )
    .staff(r.staff_id)
    .device(r.device_id)
}

fn check_reason(reason: &str) -> Result<(), Refusal> {
    if reason.trim().is_empty() {
        return Err(Refusal::EmptyReason);
    }
    if reason.len() > limits::BREAK_GLASS_REASON_BYTES_MAX {
        return Err(Refusal::ReasonTooLong {
            len: reason.len(),
            max: limits::BREAK_GLASS_REASON_BYTES_MAX,
        });
    }
    Ok(())
}

/// Grants `who` read access to the sealed section `req.doc_id` until
/// [`limits::BREAK_GLASS_GRANT_MS`] after `now_ms`: the grant, its record and its audit entry in
/// one transaction, with an access-epoch bump. Not durable until the caller flushes.
pub fn grant(
    store: &dyn Store,
    who: &Principal,
    req: &BreakGlassRequest,
    now_ms: i64,
) -> Result<BreakGlassGranted, Refusal> {
    check_reason(&req.reason)?;
    let mut refusal = None;
    let mut granted = None;
    write(store, |txn| {
        (refusal, granted) = (None, None);
        match grant_in(txn, who, req, now_ms)? {
            Ok(g) => granted = Some(g),
            Err(r) => refusal = Some(r),
        }
        Ok(())
    })?;
    match (granted, refusal) {
        (Some(g), _) => Ok(g),
        (None, Some(r)) => Err(r),
        (None, None) => Err(Refusal::NotSealed(req.doc_id)),
    }
}

fn grant_in(
    txn: &mut dyn Txn,
    who: &Principal,
    req: &BreakGlassRequest,
    now_ms: i64,
) -> Result<Result<BreakGlassGranted, Refusal>, StoreError> {
    let Some(mut rec) = txn.doc(req.doc_id)? else {
        return Ok(Err(Refusal::NotSealed(req.doc_id)));
    };
    let Some(case) = txn.case(rec.header.case_id)? else {
        return Ok(Err(Refusal::NotSealed(req.doc_id)));
    };
    if access::may_read(who, &case, Some(&rec.header)) {
        return Ok(Err(Refusal::AlreadyReadable(req.doc_id)));
    }
    if !access::sees_sealed(who, &case, &rec.header) {
        return Ok(Err(Refusal::NotSealed(req.doc_id)));
    }
    let mut records = stored(txn)?;
    if records.len() >= limits::BREAK_GLASS_OPEN_MAX {
        return Ok(Err(Refusal::TooMany(limits::BREAK_GLASS_OPEN_MAX)));
    }
    let record = Record {
        id: uuid::Uuid::new_v4(),
        doc_id: req.doc_id,
        case_id: case.case_id,
        kind: rec.header.kind,
        staff_id: who.staff_id(),
        device_id: who.device_id,
        category: req.category,
        reason: req.reason.clone(),
        reason_sha256: reason_hash(&req.reason),
        granted_ms: now_ms,
        expires_ms: now_ms.saturating_add(limits::BREAK_GLASS_GRANT_MS),
        lapsed: false,
        reviewed: None,
    };
    rec.header.grants.retain(|g| g.expires_ms > now_ms);
    rec.header.grants.push(Grant {
        grant_id: record.id,
        staff_id: record.staff_id,
        expires_ms: record.expires_ms,
    });
    txn.put_doc(&rec)?;
    txn.audit_append(audit(&record, "granted", now_ms))?;
    let answer = BreakGlassGranted {
        grant_id: record.id,
        doc_id: record.doc_id,
        expires_ms: record.expires_ms,
    };
    records.push(record);
    put(txn, &mut records)?;
    txn.bump_access_epoch()?;
    Ok(Ok(answer))
}

/// When the next grant in force runs out (`None`: none is in force), for a caller that reads it
/// in a transaction it already has (a sync reads it with the log id).
pub fn next_lapse(txn: &mut dyn Txn) -> Result<Option<i64>, StoreError> {
    Ok(txn.meta(NEXT_LAPSE_KEY)?.as_deref().and_then(lapse_at))
}

/// The stored value of [`NEXT_LAPSE_KEY`] as a time.
pub fn lapse_at(value: &[u8]) -> Option<i64> {
    let bytes: [u8; 8] = value.try_into().ok()?;
    Some(i64::from_be_bytes(bytes))
}

/// If a grant has expired by `now_ms` and the server has not yet taken it away: takes it off the
/// document's header, marks its record lapsed (audited) and bumps the access epoch, so every
/// device reconciles and the grantee's evicts the section. Returns how many lapsed.
pub fn lapse_due(store: &dyn Store, now_ms: i64) -> Result<usize, StoreError> {
    match read(store, next_lapse)? {
        Some(next) if next <= now_ms => lapse(store, now_ms),
        _ => Ok(0),
    }
}

/// [`lapse_due`]'s write, for a caller that has read [`next_lapse`] and found one due.
pub fn lapse(store: &dyn Store, now_ms: i64) -> Result<usize, StoreError> {
    write(store, |txn| {
        let mut records = stored(txn)?;
        let mut lapsed = 0;
        for r in records
            .iter_mut()
            .filter(|r| !r.lapsed && r.expires_ms <= now_ms)
        {
            if let Some(mut rec) = txn.doc(r.doc_id)? {
                rec.header.grants.retain(|g| g.grant_id != r.id);
                txn.put_doc(&rec)?;
            }
            r.lapsed = true;
            txn.audit_append(audit(r, "lapsed", now_ms))?;
            lapsed += 1;
        }
        put(txn, &mut records)?;
        if lapsed > 0 {
            txn.bump_access_epoch()?;
            tracing::info!(lapsed, "break-glass grants lapsed");
        }
        Ok(lapsed)
    })
}

/// The open records (not yet reviewed, or still in force), the oldest first.
pub fn list(store: &dyn Store) -> Result<Vec<Record>, StoreError> {
    read(store, stored)
}

/// Marks record `id` reviewed by `by` (audited); a lapsed one then leaves the open records.
pub fn review(
    store: &dyn Store,
    by: By,
    id: uuid::Uuid,
    now_ms: i64,
) -> Result<Record, crate::admin::AdminError> {
    let mut found = None;
    write(store, |txn| {
        found = None;
        let mut records = stored(txn)?;
        let Some(r) = records.iter_mut().find(|r| r.id == id) else {
            return Ok(());
        };
        if r.reviewed.is_none() {
            r.reviewed = Some(Reviewed { at_ms: now_ms, by });
            let mut entry = audit(r, "reviewed", now_ms);
            entry.details["by"] = serde_json::to_value(by).expect("plain data serialises");
            txn.audit_append(entry)?;
        }
        found = Some(r.clone());
        put(txn, &mut records)
    })?;
    store.flush()?;
    found.ok_or(crate::admin::AdminError::NoSuchBreakGlass(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CaseRecord, DocHeader, DocRecord};
    use crate::testkit;
    use casenote_protocol::OrgId;

    /// A store with Alice and Bob (North) and Carol (South) on a case of both teams, and a
    /// section of North's only: sealed or hidden.
    fn world(
        sealed: bool,
    ) -> (
        tempfile::TempDir,
        std::sync::Arc<crate::SledStore>,
        [Principal; 3],
        DocId,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        let people = testkit::people(&*store);
        let who = people
            .clone()
            .map(|(_, token)| testkit::principal(&*store, &token));
        let case = CaseRecord {
            case_id: CaseId::new_random(),
            owner_org: who[0].staff.org_id,
            teams: vec![who[0].teams()[0], who[2].teams()[0]],
            created_ms: 0,
        };
        let doc = DocRecord {
            header: DocHeader {
                doc_id: DocId::new_random(),
                case_id: case.case_id,
                kind: DocKind::Restricted,
                owner_org: case.owner_org,
                access_teams: Some(vec![who[0].teams()[0]]),
                created_by: who[0].staff_id(),
                created_ms: 0,
                sealed,
                grants: Vec::new(),
            },
            heads: Vec::new(),
            ops: 0,
            filed_ms: None,
        };
        write(&*store, |t| {
            t.put_case(&case)?;
            t.put_doc(&doc)
        })
        .unwrap();
        (dir, store, who, doc.header.doc_id)
    }

    fn asks(doc: DocId, reason: &str) -> BreakGlassRequest {
        BreakGlassRequest {
            doc_id: doc,
            category: BreakGlassCategory::RiskToLife,
            reason: reason.into(),
        }
    }

    fn reads(store: &dyn Store, who: &Principal, doc: DocId) -> bool {
        read(store, |t| {
            access::readable_doc(t, who, doc, &mut access::Cases::new())
        })
        .unwrap()
        .is_some()
    }

    #[test]
    fn a_grant_lets_its_holder_read_until_it_lapses_and_the_lapse_moves_the_epoch() {
        let (_dir, store, [_, _, carol], doc) = world(true);
        assert!(!reads(&*store, &carol, doc));
        let now = crate::now_ms();
        let epoch = read(&*store, |t| t.access_epoch()).unwrap();
        let g = grant(&*store, &carol, &asks(doc, "collapsed at home"), now).unwrap();
        assert_eq!(g.expires_ms, now + limits::BREAK_GLASS_GRANT_MS);
        assert!(reads(&*store, &carol, doc));
        assert_eq!(read(&*store, |t| t.access_epoch()).unwrap(), epoch + 1);
        // Nothing due yet: the sweep reads one value and writes nothing.
        assert_eq!(lapse_due(&*store, now + 1).unwrap(), 0);
        assert_eq!(read(&*store, |t| t.access_epoch()).unwrap(), epoch + 1);
        // Due: the grant leaves the header, the record is lapsed, the epoch moves again.
        assert_eq!(lapse_due(&*store, g.expires_ms).unwrap(), 1);
        assert_eq!(read(&*store, |t| t.access_epoch()).unwrap(), epoch + 2);
        let header = read(&*store, |t| t.doc(doc)).unwrap().unwrap().header;
        assert!(header.grants.is_empty());
        let records = list(&*store).unwrap();
        assert!(records[0].lapsed && records[0].reviewed.is_none());
        assert_eq!(lapse_due(&*store, g.expires_ms + 1).unwrap(), 0);
        // Reviewed and lapsed: it leaves the open records.
        let r = review(&*store, By::Cli, g.grant_id, now).unwrap();
        assert!(r.reviewed.is_some());
        assert!(list(&*store).unwrap().is_empty());
        assert!(matches!(
            review(&*store, By::Cli, g.grant_id, now),
            Err(crate::admin::AdminError::NoSuchBreakGlass(_))
        ));
    }

    #[test]
    fn a_sealed_section_of_a_controller_that_does_not_share_is_neither_told_of_nor_broken_into() {
        let (_dir, store, [_, _, carol], doc) = world(true);
        write(&*store, |t| {
            let mut rec = t.doc(doc)?.unwrap();
            rec.header.owner_org = OrgId::new_random();
            t.put_doc(&rec)
        })
        .unwrap();
        let visible = read(&*store, |t| access::visible_docs(t, &carol)).unwrap();
        assert!(!visible.sealed.contains(&doc));
        assert!(matches!(
            grant(&*store, &carol, &asks(doc, "why"), crate::now_ms()),
            Err(Refusal::NotSealed(_))
        ));
    }

    #[test]
    fn a_lapsed_grant_reads_nothing_even_before_the_sweep_takes_it_away() {
        let (_dir, store, [_, _, carol], doc) = world(true);
        // Granted long enough ago that it has already run out.
        let then = crate::now_ms() - limits::BREAK_GLASS_GRANT_MS - 1;
        grant(&*store, &carol, &asks(doc, "out of hours"), then).unwrap();
        assert!(!reads(&*store, &carol, doc));
    }

    #[test]
    fn a_hidden_section_one_already_readable_and_a_bad_reason_are_refused_and_store_nothing() {
        let (_dir, store, [alice, _, carol], hidden) = world(false);
        let now = crate::now_ms();
        assert!(matches!(
            grant(&*store, &carol, &asks(hidden, "why"), now),
            Err(Refusal::NotSealed(_))
        ));
        assert!(matches!(
            grant(&*store, &carol, &asks(DocId::new_random(), "why"), now),
            Err(Refusal::NotSealed(_))
        ));
        assert!(matches!(
            grant(&*store, &alice, &asks(hidden, "why"), now),
            Err(Refusal::AlreadyReadable(_))
        ));
        assert!(matches!(
            grant(&*store, &carol, &asks(hidden, " \n"), now),
            Err(Refusal::EmptyReason)
        ));
        let long = "x".repeat(limits::BREAK_GLASS_REASON_BYTES_MAX + 1);
        assert!(matches!(
            grant(&*store, &carol, &asks(hidden, &long), now),
            Err(Refusal::ReasonTooLong { .. })
        ));
        assert!(list(&*store).unwrap().is_empty());
    }

    #[test]
    fn the_audit_entry_carries_the_reason_by_its_hash_only() {
        let (_dir, store, [_, _, carol], doc) = world(true);
        let reason = "Reason-text-QQ-81 with a name in it";
        grant(&*store, &carol, &asks(doc, reason), crate::now_ms()).unwrap();
        let mut found = Vec::new();
        store
            .audit_scan(&mut |_, bytes| {
                found.push(String::from_utf8_lossy(bytes).into_owned());
                true
            })
            .unwrap();
        let all = found.join("\n");
        assert!(all.contains(&reason_hash(reason)), "{all}");
        assert!(!all.contains("QQ-81"), "{all}");
    }
}
