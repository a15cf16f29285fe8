//! Retention: how long a person's record is kept, and its disposal when that time is over
//! (docs/design.md, "Retention"). Health and social care records are kept by class, under the
//! NHS Records Management Code of Practice and the local authority's schedule:
//!
//! | class | kept until |
//! |---|---|
//! | `adult_social_care`, `health` | 8 years after the last contact |
//! | `children` | the 25th birthday, and never before the case closes |
//! | `mental_health` | 20 years after the last contact |
//!
//! The trigger is the case's closure: an administrator closes a case with its day of last contact
//! ([`close`]); until then the case is open and never due. Reopening it ([`reopen`]) clears the
//! trigger, and with it any approval, so the clock starts again at the next closure. A legal
//! hold ([`hold`]) blocks approval and disposal until it is released. Disposal takes two steps:
//! an administrator approves a due record ([`approve`]; refused while held, before it is due, or
//! when the case took a change after its last contact), then disposes of it ([`dispose`]), which
//! checks all of that again. Disposal takes every team off the case and erases each of its
//! documents from the server ([`crate::erase`]: the rows at once, the files rewritten after, by a
//! running sled server at its next start) in the transaction that bumps the access epoch, so every
//! device deletes the case's documents, files rewritten, at its next sync
//! ([`crate::sync::reconcile`]). What is left is the case's empty record and this module's
//! record for it: a stub of who approved and disposed, when, under which class, and how many
//! documents.
//!
//! Each case's retention is one meta value (`retention/{case_id}`, JSON), moved by `migrate` and
//! backups with its case ([`meta_key`], `crate::store::copy`). Every step is one transaction with an audit entry
//! (`retention`: ids, class, days and counts; never text), flushed before it answers. Dates are
//! days in London ([`crate::uk_time`]); "today" comes from the caller's clock, which the tests
//! move with libfaketime.

use crate::admin::AdminError;
use crate::model::{AuditKind, AuditRecord, By};
use crate::store::{read, write, Compaction, Store, StoreError, Txn};
use crate::subject_access::{parse_day, today};
use crate::uk_time;
use casenote_protocol::{limits, CaseId};
use jiff::civil::Date;
use jiff::ToSpan;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeSet;

/// A record's retention class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Class {
    AdultSocialCare,
    Health,
    Children,
    MentalHealth,
}

/// Why a record is held: the proceedings that may need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum HoldReason {
    Litigation,
    PublicInquiry,
    Complaint,
    PoliceInvestigation,
    SafeguardingReview,
}

/// A legal hold on a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub hold_id: uuid::Uuid,
    pub reason: HoldReason,
    pub placed_ms: i64,
    pub placed_by: By,
}

/// An administrator's approval of a due record's disposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub approved_ms: i64,
    pub approved_by: By,
    /// The day the record was due, as approved (`YYYY-MM-DD`).
    pub due: String,
}

/// The stub a disposal leaves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disposed {
    pub disposed_ms: i64,
    pub disposed_by: By,
    pub approved_by: By,
    /// How many documents the case held.
    pub documents: usize,
}

/// One case's retention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub case_id: CaseId,
    pub class: Class,
    /// The person's date of birth (`YYYY-MM-DD`), for the `children` class.
    #[serde(default)]
    pub born: Option<String>,
    /// The day of last contact, set when the case closed (`YYYY-MM-DD`); `None` while open.
    #[serde(default)]
    pub last_contact: Option<String>,
    #[serde(default)]
    pub holds: Vec<Hold>,
    #[serde(default)]
    pub approval: Option<Approval>,
    #[serde(default)]
    pub disposed: Option<Disposed>,
}

/// Where a record stands today.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// The case is open: the clock has not started.
    Open,
    /// Closed, and kept until its due day.
    Retained,
    /// Past its due day and not held: an administrator may approve its disposal.
    Due,
    /// Past its due day, or not, under at least one legal hold.
    Held,
    /// Disposal approved, not yet done.
    Approved,
    Disposed,
}

/// A case's retention as shown: the record, the day it is due (once closed) and its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    #[serde(flatten)]
    pub retention: Retention,
    pub due: Option<String>,
    pub state: State,
    /// After a disposal: whether the store's files hold no byte of the record now
    /// ([`crate::erase::finish`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<Compaction>,
}

/// Why an act was refused: a record that is not in the state the act needs.
fn refused(case: CaseId, why: impl std::fmt::Display) -> AdminError {
    AdminError::Refused(format!("case {case}: {why}"))
}

/// The meta key of `case`'s retention.
pub fn meta_key(case: CaseId) -> String {
    format!("retention/{}", case.0)
}

/// The day a record of `class` closed on `last_contact` (for children, born on `born`) may be
/// disposed of.
pub fn due_day(class: Class, last_contact: Date, born: Option<Date>) -> Result<Date, AdminError> {
    let after = |years: i16| {
        last_contact.checked_add(years.years()).map_err(|e| {
            AdminError::Failed(format!("no day {years} years after {last_contact}: {e}"))
        })
    };
    match class {
        Class::AdultSocialCare | Class::Health => after(8),
        Class::MentalHealth => after(20),
        Class::Children => {
            let born = born.ok_or_else(|| {
                AdminError::Failed("a children's record needs the date of birth (--born)".into())
            })?;
            let birthday = born
                .checked_add(25.years())
                .map_err(|e| AdminError::Failed(format!("no 25th birthday after {born}: {e}")))?;
            Ok(birthday.max(last_contact))
        }
    }
}

impl Retention {
    /// The day it is due, once the case has closed.
    fn due(&self) -> Result<Option<Date>, AdminError> {
        let Some(last) = &self.last_contact else {
            return Ok(None);
        };
        let born = self.born.as_deref().map(parse_day).transpose()?;
        due_day(self.class, parse_day(last)?, born).map(Some)
    }

    /// Its state on `today`.
    fn state(&self, today: Date) -> Result<State, AdminError> {
        Ok(if self.disposed.is_some() {
            State::Disposed
        } else if !self.holds.is_empty() {
            State::Held
        } else if self.approval.is_some() {
            State::Approved
        } else {
            match self.due()? {
                None => State::Open,
                Some(due) if today >= due => State::Due,
                Some(_) => State::Retained,
            }
        })
    }

    fn status(self, today: Date) -> Result<Status, AdminError> {
        Ok(Status {
            due: self.due()?.map(|d| d.to_string()),
            state: self.state(today)?,
            retention: self,
            compaction: None,
        })
    }
}

/// Case `case`'s retention, if it has one.
pub fn stored(txn: &mut dyn Txn, case: CaseId) -> Result<Option<Retention>, StoreError> {
    let Some(v) = txn.meta(&meta_key(case))? else {
        return Ok(None);
    };
    serde_json::from_slice(&v)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("retention of case {case} does not decode: {e}")))
}

fn put(txn: &mut dyn Txn, r: &Retention) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(r).expect("plain data serialises");
    txn.put_meta(&meta_key(r.case_id), &bytes)
}

fn audit(r: &Retention, what: &str, now_ms: i64, by: By) -> AuditRecord {
    AuditRecord::new(
        AuditKind::Retention,
        now_ms,
        json!({
            "case_id": r.case_id,
            "what": what,
            "class": r.class,
            "last_contact": r.last_contact,
            "holds": r.holds.len(),
        }),
    )
    .by(by)
}

/// Runs `change` on case `case`'s retention (which `change` receives as `None` when the case has
/// none yet) in one transaction: stores what it returns and audits it as `what`, unless it
/// refuses. The case must exist.
fn change(
    store: &dyn Store,
    (by, now_ms): (By, i64),
    case: CaseId,
    what: &str,
    mut change: impl FnMut(&mut dyn Txn, Option<Retention>) -> Result<Retention, AdminError>,
) -> Result<Retention, AdminError> {
    let mut refusal = None;
    let mut done = None;
    write(store, |txn| {
        (refusal, done) = (None, None);
        if txn.case(case)?.is_none() {
            refusal = Some(AdminError::NoSuchCase(case));
            return Ok(());
        }
        let current = stored(txn, case)?;
        match change(txn, current) {
            Ok(r) => {
                put(txn, &r)?;
                txn.audit_append(audit(&r, what, now_ms, by))?;
                done = Some(r);
            }
            Err(AdminError::Store(e)) => return Err(e),
            Err(e) => refusal = Some(e),
        }
        Ok(())
    })?;
    if let Some(e) = refusal {
        return Err(e);
    }
    store.flush()?;
    done.ok_or_else(|| AdminError::Failed("the retention change did not run".into()))
}

/// A record that exists and is not disposed of.
fn live(case: CaseId, r: Option<Retention>) -> Result<Retention, AdminError> {
    let r = r.ok_or_else(|| {
        refused(
            case,
            "it has no retention class; set one with `admin retention set`",
        )
    })?;
    if r.disposed.is_some() {
        return Err(refused(case, "it has been disposed of"));
    }
    Ok(r)
}

/// Sets case `case`'s retention class (and for `children`, the date of birth).
pub fn set(
    store: &dyn Store,
    by: By,
    case: CaseId,
    (class, born): (Class, Option<&str>),
    now_ms: i64,
) -> Result<Status, AdminError> {
    let today = today(now_ms)?;
    let born = born.map(parse_day).transpose()?;
    if class == Class::Children && born.is_none() {
        return Err(refused(
            case,
            "a children's record needs the date of birth (--born)",
        ));
    }
    if let Some(b) = born.filter(|b| *b > today) {
        return Err(AdminError::BadDate(b.to_string()));
    }
    let r = change(store, (by, now_ms), case, "set", |_, current| {
        if current.as_ref().is_some_and(|r| r.disposed.is_some()) {
            return Err(refused(case, "it has been disposed of"));
        }
        let mut r = current.unwrap_or(Retention {
            case_id: case,
            class,
            born: None,
            last_contact: None,
            holds: Vec::new(),
            approval: None,
            disposed: None,
        });
        r.class = class;
        r.born = born.map(|b| b.to_string());
        r.approval = None;
        Ok(r)
    })?;
    r.status(today)
}

/// Closes case `case` with its day of last contact (today if `None`): the retention clock starts.
pub fn close(
    store: &dyn Store,
    by: By,
    case: CaseId,
    last_contact: Option<&str>,
    now_ms: i64,
) -> Result<Status, AdminError> {
    let today = today(now_ms)?;
    let last = match last_contact {
        Some(day) => parse_day(day)?,
        None => today,
    };
    if last > today {
        return Err(AdminError::BadDate(last.to_string()));
    }
    let r = change(store, (by, now_ms), case, "closed", |_, current| {
        let mut r = live(case, current)?;
        r.last_contact = Some(last.to_string());
        r.approval = None;
        Ok(r)
    })?;
    r.status(today)
}

/// Reopens case `case`: the clock stops, and an approval lapses.
pub fn reopen(store: &dyn Store, by: By, case: CaseId, now_ms: i64) -> Result<Status, AdminError> {
    let r = change(store, (by, now_ms), case, "reopened", |_, current| {
        let mut r = live(case, current)?;
        if r.last_contact.is_none() {
            return Err(refused(case, "it is open"));
        }
        r.last_contact = None;
        r.approval = None;
        Ok(r)
    })?;
    r.status(today(now_ms)?)
}

/// Places a legal hold on case `case`'s record.
pub fn hold(
    store: &dyn Store,
    by: By,
    case: CaseId,
    reason: HoldReason,
    now_ms: i64,
) -> Result<Status, AdminError> {
    let r = change(store, (by, now_ms), case, "held", |_, current| {
        let mut r = live(case, current)?;
        if r.holds.len() >= limits::RETENTION_HOLDS_MAX {
            return Err(AdminError::Refused(format!(
                "case {case} already has {} legal holds, the most kept",
                r.holds.len()
            )));
        }
        r.holds.push(Hold {
            hold_id: uuid::Uuid::new_v4(),
            reason,
            placed_ms: now_ms,
            placed_by: by,
        });
        r.approval = None;
        Ok(r)
    })?;
    r.status(today(now_ms)?)
}

/// Releases legal hold `hold_id` on case `case`'s record.
pub fn release(
    store: &dyn Store,
    by: By,
    case: CaseId,
    hold_id: uuid::Uuid,
    now_ms: i64,
) -> Result<Status, AdminError> {
    let r = change(store, (by, now_ms), case, "released", |_, current| {
        let mut r = live(case, current)?;
        let before = r.holds.len();
        r.holds.retain(|h| h.hold_id != hold_id);
        if r.holds.len() == before {
            return Err(refused(case, format!("it has no legal hold {hold_id}")));
        }
        Ok(r)
    })?;
    r.status(today(now_ms)?)
}

/// The case's retention, as it stands on `now_ms`'s day.
pub fn show(store: &dyn Store, case: CaseId, now_ms: i64) -> Result<Status, AdminError> {
    let r = read(store, |txn| {
        if txn.case(case)?.is_none() {
            return Ok(Err(AdminError::NoSuchCase(case)));
        }
        Ok(stored(txn, case)?.ok_or_else(|| refused(case, "it has no retention class")))
    })??;
    r.status(today(now_ms)?)
}

/// The records still held by a team, as [`list`] gives them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    /// The classified ones, the soonest due first.
    pub cases: Vec<Status>,
    /// The cases with no retention class yet: never due until one is set.
    pub unclassified: Vec<CaseId>,
}

/// Every case still held by a team: the classified ones with their state (`due_only`: only
/// those past their due day, whether due, held or approved), and those with no class. Walks
/// every team's cases, as an administrator's review does.
pub fn list(store: &dyn Store, due_only: bool, now_ms: i64) -> Result<Listed, AdminError> {
    let today = today(now_ms)?;
    let (found, unclassified) = read(store, |txn| {
        let mut cases = BTreeSet::new();
        for team in txn.teams()? {
            cases.extend(txn.cases_of_team(team.team_id)?);
        }
        let (mut found, mut unclassified) = (Vec::new(), Vec::new());
        for case in cases {
            match stored(txn, case)? {
                Some(r) => found.push(r),
                None => unclassified.push(case),
            }
        }
        Ok((found, unclassified))
    })?;
    let mut cases = Vec::new();
    for r in found {
        let due = r.due()?.is_some_and(|d| today >= d);
        let status = r.status(today)?;
        if !due_only || (due && status.state != State::Disposed) {
            cases.push(status);
        }
    }
    cases.sort_by(|a, b| (&a.due, a.retention.case_id).cmp(&(&b.due, b.retention.case_id)));
    Ok(Listed {
        cases,
        unclassified,
    })
}

/// Why a record may not be disposed of on `today`, if it may not: open, not yet due, held.
fn disposal_refusal(r: &Retention, today: Date) -> Result<Option<String>, AdminError> {
    if !r.holds.is_empty() {
        return Ok(Some(format!(
            "it is under {} legal hold(s); release them first",
            r.holds.len()
        )));
    }
    Ok(match r.due()? {
        None => Some("it is open; close it first".into()),
        Some(due) if today < due => Some(format!("it is kept until {due}")),
        Some(_) => None,
    })
}

/// The latest time the server received a change to any of case `case`'s documents.
fn last_change_ms(store: &dyn Store, case: CaseId) -> Result<Option<i64>, AdminError> {
    let docs = read(store, |txn| txn.docs_of_case(case))?;
    let mut latest = None;
    for doc in docs {
        if let Some(seq) = store.doc_change_seqs(doc)?.last() {
            latest = latest.max(store.received_at(*seq)?);
        }
    }
    Ok(latest)
}

/// Approves the disposal of case `case`'s record: it must be due and not held, and have taken no
/// change after its day of last contact (a later contact means the closure is out of date).
pub fn approve(store: &dyn Store, by: By, case: CaseId, now_ms: i64) -> Result<Status, AdminError> {
    let today = today(now_ms)?;
    let last_change = last_change_ms(store, case)?;
    let r = change(store, (by, now_ms), case, "approved", |_, current| {
        let mut r = live(case, current)?;
        if let Some(why) = disposal_refusal(&r, today)? {
            return Err(refused(case, why));
        }
        let last = parse_day(r.last_contact.as_deref().unwrap_or_default())?;
        let changed = last_change.and_then(uk_time::date_of);
        if changed.is_some_and(|day| day > last) {
            return Err(refused(
                case,
                format!(
                    "it took a change on {} after its last contact on {last}; reopen and close it again",
                    changed.map(|d| d.to_string()).unwrap_or_default()
                ),
            ));
        }
        let due = r.due()?.map(|d| d.to_string()).unwrap_or_default();
        r.approval = Some(Approval {
            approved_ms: now_ms,
            approved_by: by,
            due,
        });
        Ok(r)
    })?;
    r.status(today)
}

/// Disposes of case `case`'s record: approved, still due and not held. In one transaction every
/// team leaves the case and each of its documents is erased ([`crate::erase::erase_in`]: its
/// rows, the bytes of its changes; the access epoch moves, so devices delete it at their next
/// sync); the retention record becomes the stub. Then the store's files are rewritten
/// ([`crate::erase::finish`]; a running sled server does it at its next start).
pub fn dispose(store: &dyn Store, by: By, case: CaseId, now_ms: i64) -> Result<Status, AdminError> {
    let today = today(now_ms)?;
    let erased = std::cell::RefCell::new(Vec::new());
    let r = change(store, (by, now_ms), case, "disposed", |txn, current| {
        let mut r = live(case, current)?;
        let Some(approval) = r.approval.clone() else {
            return Err(refused(
                case,
                "its disposal has not been approved (`admin retention approve`)",
            ));
        };
        if let Some(why) = disposal_refusal(&r, today)? {
            return Err(refused(case, why));
        }
        let mut record = txn.case(case)?.ok_or(AdminError::NoSuchCase(case))?;
        record.teams.clear();
        txn.put_case(&record)?;
        let docs = txn.docs_of_case(case)?;
        for doc in &docs {
            crate::erase::erase_in(txn, *doc, "retention", now_ms)?;
        }
        erased.replace(docs.clone());
        let epoch = txn.bump_access_epoch()?;
        let details = json!({"action": "retention_disposal", "case_id": case,
                             "documents": docs.len(), "access_epoch": epoch});
        txn.audit_append(AuditRecord::new(AuditKind::AccessChange, now_ms, details).by(by))?;
        r.disposed = Some(Disposed {
            disposed_ms: now_ms,
            disposed_by: by,
            approved_by: approval.approved_by,
            documents: docs.len(),
        });
        Ok(r)
    })?;
    let compaction = crate::erase::finish(store, &erased.into_inner())?;
    let mut status = r.status(today)?;
    status.compaction = Some(compaction);
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        s.parse().unwrap()
    }

    #[test]
    fn adult_and_health_records_are_kept_eight_years_after_the_last_contact() {
        for class in [Class::AdultSocialCare, Class::Health] {
            assert_eq!(
                due_day(class, d("2026-03-04"), None).unwrap(),
                d("2034-03-04")
            );
        }
        // 29 February has no day eight years on in a year without one.
        assert_eq!(
            due_day(Class::Health, d("2028-02-29"), None).unwrap(),
            d("2036-02-29")
        );
        assert_eq!(
            due_day(Class::Health, d("2024-02-29"), None).unwrap(),
            d("2032-02-29")
        );
    }

    #[test]
    fn mental_health_records_are_kept_twenty_years() {
        assert_eq!(
            due_day(Class::MentalHealth, d("2026-03-04"), None).unwrap(),
            d("2046-03-04")
        );
    }

    #[test]
    fn a_childs_record_is_kept_to_the_25th_birthday_and_never_before_it_closes() {
        let born = Some(d("2010-06-01"));
        assert_eq!(
            due_day(Class::Children, d("2026-03-04"), born).unwrap(),
            d("2035-06-01")
        );
        // Closed after the 25th birthday: due at once, at its closure.
        assert_eq!(
            due_day(Class::Children, d("2036-01-10"), born).unwrap(),
            d("2036-01-10")
        );
        assert!(due_day(Class::Children, d("2026-03-04"), None).is_err());
    }

    fn record(last_contact: Option<&str>) -> Retention {
        Retention {
            case_id: CaseId(uuid::Uuid::nil()),
            class: Class::AdultSocialCare,
            born: None,
            last_contact: last_contact.map(str::to_string),
            holds: Vec::new(),
            approval: None,
            disposed: None,
        }
    }

    #[test]
    fn a_record_is_open_then_retained_then_due_and_a_hold_outranks_due() {
        assert_eq!(record(None).state(d("2040-01-01")).unwrap(), State::Open);
        let closed = record(Some("2026-03-04"));
        assert_eq!(closed.state(d("2034-03-03")).unwrap(), State::Retained);
        assert_eq!(closed.state(d("2034-03-04")).unwrap(), State::Due);
        let mut held = closed.clone();
        held.holds.push(Hold {
            hold_id: uuid::Uuid::nil(),
            reason: HoldReason::Litigation,
            placed_ms: 0,
            placed_by: By::Cli,
        });
        assert_eq!(held.state(d("2040-01-01")).unwrap(), State::Held);
        assert!(disposal_refusal(&held, d("2040-01-01")).unwrap().is_some());
        assert!(disposal_refusal(&closed, d("2034-03-03"))
            .unwrap()
            .is_some());
        assert_eq!(disposal_refusal(&closed, d("2034-03-04")).unwrap(), None);
    }
}
