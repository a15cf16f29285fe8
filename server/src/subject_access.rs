//! Subject access requests (UK GDPR article 15): a person asks for their whole record, and the
//! controller must answer within one month of receipt (article 12(3)).
//!
//! An administrator opens a request for a case ([`open`]), saying the day it was received (today
//! by default); it is due one calendar month later, in London's calendar, and where the next
//! month has no such day, on its last day (the ICO's reading: received 31 January, due 28 or 29
//! February). [`list`] gives the open requests with their due dates, the days left, and whether
//! each is overdue. [`fulfil`] produces the person's record ([`crate::export::build`], audited
//! `export`) and closes the request. Opening and fulfilling are each one transaction with an
//! audit entry (`subject_access`: the request and case ids, the dates, who), flushed before they
//! answer.
//!
//! The open requests are one meta value (`subject_access_open`, JSON, moved by `migrate` and
//! backups with the other meta values), at most [`limits::SUBJECT_ACCESS_OPEN_MAX`]; a fulfilled
//! request leaves it, and the audit chain keeps its history.

use crate::admin::act::ExportedRecord;
use crate::admin::AdminError;
use crate::model::{AuditKind, AuditRecord, By};
use crate::store::{read, write, Store, StoreError, Txn};
use crate::uk_time;
use casenote_protocol::{limits, CaseId};
use jiff::civil::Date;
use jiff::ToSpan;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The meta key of the open requests.
pub const META_KEY: &str = crate::model::directory::SUBJECT_ACCESS_OPEN_KEY;

/// An open subject access request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub request_id: uuid::Uuid,
    pub case_id: CaseId,
    /// The day the controller received it (London), `YYYY-MM-DD`.
    pub received: String,
    /// The day the answer is due (London), `YYYY-MM-DD`.
    pub due: String,
    pub opened_at_ms: i64,
    pub opened_by: By,
}

/// An open request as listed: with the days left (negative once overdue).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    #[serde(flatten)]
    pub request: Request,
    pub days_left: i64,
    pub overdue: bool,
}

/// A fulfilled request and the record it produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fulfilled {
    pub request: Request,
    pub fulfilled_at_ms: i64,
    /// Whether it was answered after its due day.
    pub late: bool,
    pub export: ExportedRecord,
}

/// The day an answer to a request received on `received` is due: one calendar month later, or
/// the last day of that month where it has no such day.
pub fn due_date(received: Date) -> Result<Date, AdminError> {
    // jiff clamps to the month's last day (31 January + 1 month = the end of February).
    received
        .checked_add(1.month())
        .map_err(|e| AdminError::Failed(format!("no due date after {received}: {e}")))
}

/// A day given as `YYYY-MM-DD`, or [`AdminError::BadDate`].
pub(crate) fn parse_day(given: &str) -> Result<Date, AdminError> {
    given
        .parse::<Date>()
        .map_err(|_| AdminError::BadDate(given.to_string()))
}

/// The day in London that `now_ms` falls on.
pub(crate) fn today(now_ms: i64) -> Result<Date, AdminError> {
    uk_time::date_of(now_ms)
        .ok_or_else(|| AdminError::Failed("the server's clock is out of range".into()))
}

fn stored(txn: &mut dyn Txn) -> Result<Vec<Request>, StoreError> {
    match txn.meta(META_KEY)? {
        Some(v) => serde_json::from_slice(&v)
            .map_err(|e| StoreError::Corrupt(format!("{META_KEY} does not decode: {e}"))),
        None => Ok(Vec::new()),
    }
}

fn put(txn: &mut dyn Txn, open: &[Request]) -> Result<(), StoreError> {
    txn.put_meta(
        META_KEY,
        &serde_json::to_vec(open).expect("plain data serialises"),
    )
}

/// Opens a request for case `case`, received on `received` (`YYYY-MM-DD`; today if `None`).
pub fn open(
    store: &dyn Store,
    by: By,
    case: CaseId,
    received: Option<&str>,
    now_ms: i64,
) -> Result<Request, AdminError> {
    let today = today(now_ms)?;
    let received = match received {
        Some(day) => parse_day(day)?,
        None => today,
    };
    if received > today {
        return Err(AdminError::BadDate(received.to_string()));
    }
    let request = Request {
        request_id: uuid::Uuid::new_v4(),
        case_id: case,
        received: received.to_string(),
        due: due_date(received)?.to_string(),
        opened_at_ms: now_ms,
        opened_by: by,
    };
    let mut refusal = None;
    write(store, |txn| {
        refusal = None;
        if txn.case(case)?.is_none() {
            refusal = Some(AdminError::NoSuchCase(case));
            return Ok(());
        }
        let mut open = stored(txn)?;
        if open.len() >= limits::SUBJECT_ACCESS_OPEN_MAX {
            refusal = Some(AdminError::TooManyRequests(limits::SUBJECT_ACCESS_OPEN_MAX));
            return Ok(());
        }
        open.push(request.clone());
        put(txn, &open)?;
        txn.audit_append(audit(&request, "opened", now_ms, by))?;
        Ok(())
    })?;
    if let Some(e) = refusal {
        return Err(e);
    }
    store.flush()?;
    Ok(request)
}

fn audit(r: &Request, what: &str, now_ms: i64, by: By) -> AuditRecord {
    AuditRecord::new(
        AuditKind::SubjectAccess,
        now_ms,
        json!({
            "request_id": r.request_id,
            "case_id": r.case_id,
            "what": what,
            "received": r.received,
            "due": r.due,
        }),
    )
    .by(by)
}

/// The open requests, the soonest due first, each with its days left at `now_ms`.
pub fn list(store: &dyn Store, now_ms: i64) -> Result<Vec<Listed>, AdminError> {
    let today = today(now_ms)?;
    let mut out = Vec::new();
    for request in read(store, stored)? {
        let due = parse_day(&request.due)?;
        let days_left = today
            .until(due)
            .map_err(|e| AdminError::Failed(e.to_string()))?
            .get_days() as i64;
        out.push(Listed {
            overdue: today > due,
            days_left,
            request,
        });
    }
    out.sort_by(|a, b| {
        (&a.request.due, a.request.request_id).cmp(&(&b.request.due, b.request.request_id))
    });
    Ok(out)
}

/// Answers request `request_id`: builds the person's record (audited `export`), then closes the
/// request (audited `subject_access`, `fulfilled`).
pub fn fulfil(
    store: &dyn Store,
    by: By,
    request_id: uuid::Uuid,
    now_ms: i64,
) -> Result<Fulfilled, AdminError> {
    let found = read(store, stored)?
        .into_iter()
        .find(|r| r.request_id == request_id)
        .ok_or(AdminError::NoSuchRequest(request_id))?;
    let export = crate::export::build(store, by, found.case_id, now_ms)
        .map_err(|e| AdminError::Failed(format!("{e:#}")))?;
    let mut closed = None;
    write(store, |txn| {
        let mut open = stored(txn)?;
        let before = open.len();
        open.retain(|r| r.request_id != request_id);
        closed = (open.len() < before).then(|| found.clone());
        if closed.is_some() {
            put(txn, &open)?;
            txn.audit_append(audit(&found, "fulfilled", now_ms, by))?;
        }
        Ok(())
    })?;
    let request = closed.ok_or(AdminError::NoSuchRequest(request_id))?;
    store.flush()?;
    let late = today(now_ms)? > parse_day(&request.due)?;
    Ok(Fulfilled {
        request,
        fulfilled_at_ms: now_ms,
        late,
        export,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        s.parse().unwrap()
    }

    #[test]
    fn a_request_is_due_one_calendar_month_after_receipt() {
        assert_eq!(due_date(d("2026-09-03")).unwrap(), d("2026-10-03"));
        assert_eq!(due_date(d("2026-12-15")).unwrap(), d("2027-01-15"));
    }

    #[test]
    fn a_month_without_the_day_gives_its_last_day() {
        assert_eq!(due_date(d("2026-01-31")).unwrap(), d("2026-02-28"));
        assert_eq!(due_date(d("2028-01-31")).unwrap(), d("2028-02-29"));
        assert_eq!(due_date(d("2026-08-31")).unwrap(), d("2026-09-30"));
    }
}
