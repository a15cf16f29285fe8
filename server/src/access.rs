//! Who may see what: the one place access is decided (docs/design.md, "Access"). Everything that
//! hands a device a record, or takes one from it, asks here: the push, the pull and the
//! reconciliation ([`crate::sync`]), the live channel, a document's history.
//!
//! The rule depends on relationship only: a member of staff may hold a document of a case when
//! one of their teams is in the case's team around the person and, for a restricted document,
//! also on its own access list. The `admin` role manages the service and reads no records; a
//! revoked member of staff reads nothing. A document another organisation controls is held only
//! under a data-sharing agreement and without a standing objection on its case
//! ([`crate::controllers::may_share`]). Writing follows the same rule as reading today.
//!
//! A sealed restricted document ([`DocHeader::sealed`]) is read by the same rule; staff who may
//! read its case but not it are told it exists ([`visible_docs`]'s `sealed`, sent as stubs), and
//! may break the glass on it ([`crate::break_glass`]): a grant lets that one member of staff read
//! it until it expires. The expiry is checked here against the server's clock, the one clock
//! read in this module, so that a lapsed grant is refused on every path (sync, live channel,
//! history, `/v1/repo`) at once, whether or not the sweep that evicts it from devices has run.
//!
//! It may read the store through a transaction ([`Txn`]) and use the model; it writes nothing.

use crate::auth::Principal;
use crate::model::{CaseRecord, DocHeader, DocRecord, Role};
use crate::store::{StoreError, Txn};
use casenote_protocol::{limits, CaseId, DocId};
use std::collections::{BTreeSet, HashMap, HashSet};

fn intersects<T: PartialEq>(a: &[T], b: &[T]) -> bool {
    a.iter().any(|t| b.contains(t))
}

/// Whether `who` reads records at all: not the admin role, not a revoked member of staff.
pub fn reads_records(who: &Principal) -> bool {
    who.staff.role != Role::Admin && !who.staff.revoked
}

/// Whether `who` may hold a document of `case` with header `header` (`None`: a document not yet
/// created, judged by its case alone).
pub fn may_read(who: &Principal, case: &CaseRecord, header: Option<&DocHeader>) -> bool {
    if !reads_records(who)
        || !intersects(who.teams(), &case.teams)
        || !crate::controllers::may_share(who, header)
    {
        return false;
    }
    let Some(header) = header else {
        return true;
    };
    match header.access_teams.as_deref() {
        Some(access) => intersects(who.teams(), access) || granted(who, header, crate::now_ms()),
        None => true,
    }
}

/// Whether a break-glass grant in force at `now_ms` lets `who` read the document.
pub fn granted(who: &Principal, header: &DocHeader, now_ms: i64) -> bool {
    header
        .grants
        .iter()
        .any(|g| g.staff_id == who.staff_id() && g.expires_ms > now_ms)
}

/// Whether `who` is to be told of the sealed section `header` without reading it: it is sealed,
/// they may read its case and its controller shares it with theirs, and only its access list
/// keeps them out. A section another controller does not share is not theirs to know of.
pub fn sees_sealed(who: &Principal, case: &CaseRecord, header: &DocHeader) -> bool {
    header.sealed
        && may_read(who, case, None)
        && crate::controllers::may_share(who, Some(header))
        && !may_read(who, case, Some(header))
}

/// Whether `who` may write a document of `case`. Today the same rule as reading.
pub fn may_write(who: &Principal, case: &CaseRecord, header: Option<&DocHeader>) -> bool {
    may_read(who, case, header)
}

/// The cases already looked up by one request, so a page of changes costs one read per case.
pub type Cases = HashMap<CaseId, Option<CaseRecord>>;

/// Document `doc`'s record, if it exists and `who` may read it (`None` either way, so a refusal
/// never tells whether a document exists). `cases` keeps the cases looked up.
pub fn readable_doc(
    txn: &mut dyn Txn,
    who: &Principal,
    doc: DocId,
    cases: &mut Cases,
) -> Result<Option<DocRecord>, StoreError> {
    doc_where(txn, doc, cases, |case, h| may_read(who, case, Some(h)))
}

/// Document `doc`'s record, if it exists, its case exists (looked up once per request through
/// `cases`) and `keep` holds of the two.
fn doc_where(
    txn: &mut dyn Txn,
    doc: DocId,
    cases: &mut Cases,
    keep: impl FnOnce(&CaseRecord, &DocHeader) -> bool,
) -> Result<Option<DocRecord>, StoreError> {
    let Some(rec) = txn.doc(doc)? else {
        return Ok(None);
    };
    Ok(holds(txn, &rec.header, cases, keep)?.then_some(rec))
}

/// Whether the case of `header` exists (looked up once per request through `cases`) and `keep`
/// holds of the two.
fn holds(
    txn: &mut dyn Txn,
    header: &DocHeader,
    cases: &mut Cases,
    keep: impl FnOnce(&CaseRecord, &DocHeader) -> bool,
) -> Result<bool, StoreError> {
    let case = match cases.entry(header.case_id) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => e.insert(txn.case(header.case_id)?),
    };
    Ok(case.as_ref().is_some_and(|c| keep(c, header)))
}

/// Document `doc`'s record, if it is a sealed section `who` is to be told of ([`sees_sealed`]).
pub fn sealed_doc(
    txn: &mut dyn Txn,
    who: &Principal,
    doc: DocId,
    cases: &mut Cases,
) -> Result<Option<DocRecord>, StoreError> {
    doc_where(txn, doc, cases, |case, h| sees_sealed(who, case, h))
}

/// [`readable_doc`] and [`sealed_doc`] of a record already read ([`prefetch`]): whether `who`
/// may read it, and if not, whether they are told of it as a sealed section.
pub fn readable_or_sealed(
    txn: &mut dyn Txn,
    who: &Principal,
    header: &DocHeader,
    cases: &mut Cases,
) -> Result<(bool, bool), StoreError> {
    if holds(txn, header, cases, |case, h| may_read(who, case, Some(h)))? {
        return Ok((true, false));
    }
    let sealed = holds(txn, header, cases, |case, h| sees_sealed(who, case, h))?;
    Ok((false, sealed))
}

/// The records of `docs` (`None` for one that does not exist) with their cases put in `cases`:
/// one read ([`Txn::docs_and_cases_in`]) for what took two a document (on PostgreSQL, a round
/// trip each).
pub fn prefetch(
    txn: &mut dyn Txn,
    docs: &[DocId],
    cases: &mut Cases,
) -> Result<HashMap<DocId, Option<DocRecord>>, StoreError> {
    let mut out: HashMap<DocId, Option<DocRecord>> = docs.iter().map(|d| (*d, None)).collect();
    let known: HashSet<CaseId> = cases.keys().copied().collect();
    let (recs, found) = txn.docs_and_cases_in(docs, &known)?;
    // A case asked for and not found is known not to exist.
    for r in &recs {
        cases.entry(r.header.case_id).or_insert(None);
    }
    for c in found {
        cases.insert(c.case_id, Some(c));
    }
    for r in recs {
        out.insert(r.header.doc_id, Some(r));
    }
    Ok(out)
}

/// Every document `who` may read now ([`readable_docs`]).
pub fn readable_docs(txn: &mut dyn Txn, who: &Principal) -> Result<BTreeSet<DocId>, StoreError> {
    Ok(visible_docs(txn, who)?.readable)
}

/// What `who` may know of the documents of the cases they may read.
#[derive(Debug, Default)]
pub struct Visible {
    /// The documents they may read.
    pub readable: BTreeSet<DocId>,
    /// The sealed sections they may not read but are told of.
    pub sealed: BTreeSet<DocId>,
}

/// Every document `who` may read now, and every sealed section they are told of, found through
/// the team → cases and case → documents indexes and decided by [`may_read`]. Records are read
/// [`limits::RECORDS_PER_READ`] at a time (on PostgreSQL a round trip each was most of a first
/// sync's).
pub fn visible_docs(txn: &mut dyn Txn, who: &Principal) -> Result<Visible, StoreError> {
    let mut out = Visible::default();
    if !reads_records(who) {
        return Ok(out);
    }
    let mut seen: HashSet<CaseId> = HashSet::new();
    for team in who.teams() {
        let mut ids = txn.cases_of_team(*team)?;
        ids.retain(|c| seen.insert(*c));
        for chunk in ids.chunks(limits::RECORDS_PER_READ) {
            for case in txn.cases_in(chunk)? {
                if may_read(who, &case, None) {
                    let docs = txn.docs_of_case(case.case_id)?;
                    classify_docs(txn, who, &case, &docs, &mut out)?;
                }
            }
        }
    }
    Ok(out)
}

/// Puts those of `docs` (of `case`, which `who` may read) that `who` may read, or is told of
/// sealed, in `out`.
fn classify_docs(
    txn: &mut dyn Txn,
    who: &Principal,
    case: &CaseRecord,
    docs: &[DocId],
    out: &mut Visible,
) -> Result<(), StoreError> {
    for chunk in docs.chunks(limits::RECORDS_PER_READ) {
        for rec in txn.docs_in(chunk)? {
            if may_read(who, case, Some(&rec.header)) {
                out.readable.insert(rec.header.doc_id);
            } else if sees_sealed(who, case, &rec.header) {
                out.sealed.insert(rec.header.doc_id);
            }
        }
    }
    Ok(())
}
