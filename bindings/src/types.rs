//! The records and enums that cross the boundary, and their conversions from client-core's types.
//!
//! Plain on purpose: ids are strings (uuids), counts are `u64` (UniFFI has no `usize`), times are
//! ms since the Unix epoch. Each record copies the client-core fields an app needs, so a field
//! client-core adds does not change the bindings until it is added here.

use crate::error::CasenoteError;
use casenote_client_core::device::{LeaseStatus, Refusal as CoreRefusal};
use casenote_protocol::record::{self, Identity};
use casenote_protocol::{wire, CaseId, DocId};
use std::str::FromStr;

/// Who the person is, when a case is opened.
#[derive(Clone, Debug, uniffi::Record)]
pub struct NewCase {
    pub name: String,
    #[uniffi(default = None)]
    pub nhs_number: Option<String>,
    /// Date of birth, `YYYY-MM-DD`.
    #[uniffi(default = None)]
    pub date_of_birth: Option<String>,
    #[uniffi(default = None)]
    pub address: Option<String>,
}

impl From<NewCase> for Identity {
    fn from(c: NewCase) -> Self {
        Identity {
            name: c.name,
            nhs_number: c.nhs_number,
            dob: c.date_of_birth,
            address: c.address,
        }
    }
}

/// A team the signed-in member of staff belongs to.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Team {
    pub team_id: String,
    pub name: String,
}

/// Who a store is signed in as.
#[derive(Clone, Debug, uniffi::Record)]
pub struct WhoAmI {
    pub staff_id: String,
    pub device_id: String,
    pub name: String,
    pub role: String,
    pub org: String,
    pub teams: Vec<Team>,
}

impl From<wire::WhoAmI> for WhoAmI {
    fn from(w: wire::WhoAmI) -> Self {
        WhoAmI {
            staff_id: w.staff_id.to_string(),
            device_id: w.device_id.to_string(),
            name: w.name,
            role: w.role,
            org: w.org,
            teams: w
                .teams
                .into_iter()
                .map(|t| Team {
                    team_id: t.team_id.to_string(),
                    name: t.name,
                })
                .collect(),
        }
    }
}

/// One case on the device, as a list shows it.
#[derive(Clone, Debug, uniffi::Record)]
pub struct CaseSummary {
    pub case_id: String,
    pub name: String,
    pub notes: u64,
    pub drafts: u64,
    /// Documents of this case with edits the server has not acknowledged yet.
    pub unsynced_docs: u64,
}

impl From<casenote_client_core::CaseSummary> for CaseSummary {
    fn from(c: casenote_client_core::CaseSummary) -> Self {
        CaseSummary {
            case_id: c.case_id.to_string(),
            name: c.name,
            notes: c.notes as u64,
            drafts: c.drafts as u64,
            unsynced_docs: c.unsynced_docs as u64,
        }
    }
}

/// The kind of contact a note records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum NoteKind {
    Visit,
    Phone,
    Mdt,
    CaseNote,
}

impl From<NoteKind> for record::NoteKind {
    fn from(k: NoteKind) -> Self {
        match k {
            NoteKind::Visit => record::NoteKind::Visit,
            NoteKind::Phone => record::NoteKind::Phone,
            NoteKind::Mdt => record::NoteKind::Mdt,
            NoteKind::CaseNote => record::NoteKind::CaseNote,
        }
    }
}

/// What an amendment to a filed note is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum AmendKind {
    /// Adds to the note.
    Addendum,
    /// Corrects it.
    Correction,
}

impl AmendKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AmendKind::Addendum => "addendum",
            AmendKind::Correction => "correction",
        }
    }
}

/// A document the server refused in a sync.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Refusal {
    pub doc_id: String,
    /// The server's stable error code (`forbidden`, `invalid_record`, ...).
    pub code: String,
    pub reason: String,
}

impl From<wire::Rejection> for Refusal {
    fn from(r: wire::Rejection) -> Self {
        Refusal {
            doc_id: r.doc_id.to_string(),
            code: r.code.to_string(),
            reason: r.reason,
        }
    }
}

impl From<CoreRefusal> for Refusal {
    fn from(r: CoreRefusal) -> Self {
        Refusal {
            doc_id: r.doc_id.to_string(),
            code: r.code,
            reason: r.reason,
        }
    }
}

/// What one `sync` did. Payload sizes are the bytes of the request and response bodies.
#[derive(Clone, Debug, uniffi::Record)]
pub struct SyncReport {
    pub requests: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub docs_up: u64,
    pub changes_up: u64,
    pub changes_stored: u64,
    pub changes_duplicate: u64,
    pub docs_down: u64,
    pub changes_down: u64,
    pub full_history_resends: u64,
    /// Times the server said its log was restored from backup, so this device re-sent everything.
    pub resets: u64,
    pub refused: Vec<Refusal>,
    /// Documents removed from this device because its staff member may no longer read them.
    pub evicted: u64,
    /// Documents this device holds but cannot read (damage its store found): skipped, so that
    /// everything else synced.
    pub damaged: Vec<String>,
    pub cursor: u64,
    /// How far this device's clock is from the server's; `clock_flagged` when too far.
    pub clock_offset_ms: i64,
    pub clock_flagged: bool,
    pub elapsed_ms: u64,
    pub finished_at_ms: i64,
}

impl From<casenote_client_core::SyncReport> for SyncReport {
    fn from(r: casenote_client_core::SyncReport) -> Self {
        SyncReport {
            requests: r.requests as u64,
            bytes_up: r.bytes_up as u64,
            bytes_down: r.bytes_down as u64,
            docs_up: r.docs_up as u64,
            changes_up: r.changes_up as u64,
            changes_stored: r.changes_stored,
            changes_duplicate: r.changes_duplicate,
            docs_down: r.docs_down as u64,
            changes_down: r.changes_down as u64,
            full_history_resends: r.full_history_resends as u64,
            resets: r.resets as u64,
            refused: r.rejections.into_iter().map(Refusal::from).collect(),
            evicted: r.evicted as u64,
            damaged: r.damaged.iter().map(ToString::to_string).collect(),
            cursor: r.cursor.0,
            clock_offset_ms: r.clock_offset_ms,
            clock_flagged: r.clock_flagged,
            elapsed_ms: r.elapsed_ms,
            finished_at_ms: r.finished_at_ms,
        }
    }
}

/// The offline lease: when the device last reached the server, and when it locks and wipes
/// itself if it does not reach it again.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Lease {
    pub last_contact_ms: Option<i64>,
    pub locks_at_ms: Option<i64>,
    pub wipes_at_ms: Option<i64>,
    pub locked: bool,
}

impl From<LeaseStatus> for Lease {
    fn from(l: LeaseStatus) -> Self {
        Lease {
            last_contact_ms: l.last_contact_ms,
            locks_at_ms: l.locks_at_ms,
            wipes_at_ms: l.wipes_at_ms,
            locked: l.locked,
        }
    }
}

/// The device's state, for a status screen.
#[derive(Clone, Debug, uniffi::Record)]
pub struct DeviceStatus {
    pub server: Option<String>,
    pub staff_id: Option<String>,
    pub docs_held: u64,
    /// Work not yet acknowledged by the server: documents, changes, and their bytes.
    pub unsynced_docs: u64,
    pub unsynced_changes: u64,
    pub unsynced_bytes: u64,
    /// Documents the server refused; they stay on the device and are not sent again.
    pub refused: Vec<Refusal>,
    pub cursor: u64,
    pub store_bytes: u64,
    /// Payload sizes: bytes sent and received by the last sync, and by every sync of this store.
    pub bytes_up_last: u64,
    pub bytes_down_last: u64,
    pub bytes_up_total: u64,
    pub bytes_down_total: u64,
    pub last_sync: Option<SyncReport>,
    pub lease: Lease,
    /// How old the device's records are (since its last finished sync).
    pub freshness: Freshness,
    /// Views of records waiting to be recorded in the server's audit chain.
    pub views_queued: u64,
    /// Documents with unsent edits that this device cannot read (damage its store found).
    pub damaged: Vec<String>,
}

/// How old the device's records are: an app shows a warning when `stale`.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Freshness {
    /// When the device last finished a sync (its clock, ms since the epoch); none: never.
    pub synced_at_ms: Option<i64>,
    /// How long ago that was (ms); none: never synced.
    pub age_ms: Option<i64>,
    /// More than 12 hours old, or never synced: what the device shows may be out of date.
    pub stale: bool,
}

impl From<casenote_client_core::device::Freshness> for Freshness {
    fn from(f: casenote_client_core::device::Freshness) -> Self {
        Freshness {
            synced_at_ms: f.synced_at_ms,
            age_ms: f.age_ms,
            stale: f.stale,
        }
    }
}

/// An alert on a case, with its age.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Alert {
    pub alert_id: String,
    pub text: String,
    /// `active` or `resolved`.
    pub status: String,
    /// The staff id of who raised it.
    pub raised_by: String,
    /// When it was raised (the raising device's clock, ms since the epoch); none for alerts
    /// from before the record kept it.
    pub raised_at_ms: Option<i64>,
    /// How long ago that was, on this device's clock (ms).
    pub age_ms: Option<i64>,
}

impl From<casenote_client_core::device::Alert> for Alert {
    fn from(a: casenote_client_core::device::Alert) -> Self {
        Alert {
            alert_id: a.alert_id,
            text: a.text,
            status: a.status,
            raised_by: a.raised_by,
            raised_at_ms: a.raised_at_ms,
            age_ms: a.age_ms,
        }
    }
}

impl From<casenote_client_core::Status> for DeviceStatus {
    fn from(s: casenote_client_core::Status) -> Self {
        DeviceStatus {
            server: s.server,
            staff_id: s.staff_id,
            docs_held: s.docs_held as u64,
            unsynced_docs: s.unsynced_docs as u64,
            unsynced_changes: s.unsynced_changes as u64,
            unsynced_bytes: s.unsynced_bytes as u64,
            refused: s.refused.into_iter().map(Refusal::from).collect(),
            cursor: s.cursor.0,
            store_bytes: s.store_bytes,
            bytes_up_last: s.bytes_up_last as u64,
            bytes_down_last: s.bytes_down_last as u64,
            bytes_up_total: s.bytes_up_total,
            bytes_down_total: s.bytes_down_total,
            last_sync: s.last_sync.map(SyncReport::from),
            lease: s.lease.into(),
            freshness: s.freshness.map(Freshness::from).unwrap_or(Freshness {
                synced_at_ms: None,
                age_ms: None,
                stale: true,
            }),
            views_queued: s.views_queued as u64,
            damaged: s.damaged.iter().map(ToString::to_string).collect(),
        }
    }
}

/// A field of a case's documents that holds concurrent values, to be settled with `resolve`.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Conflict {
    pub doc_id: String,
    /// Path from the document root, e.g. `["alerts", "<uuid>", "status"]`.
    pub path: Vec<String>,
    /// Every concurrent value as JSON text, in a deterministic order (the first is the one shown).
    pub values_json: Vec<String>,
    /// Who wrote each value, in the same order: a staff id ("" when the change carries none).
    pub written_by: Vec<String>,
}

impl From<(DocId, record::Conflict)> for Conflict {
    fn from((doc_id, c): (DocId, record::Conflict)) -> Self {
        Conflict {
            doc_id: doc_id.to_string(),
            path: c.path,
            values_json: c.values.iter().map(|v| v.to_string()).collect(),
            written_by: c
                .written_by
                .into_iter()
                .map(|w| w.staff_id.unwrap_or_default())
                .collect(),
        }
    }
}

/// Parses a case id; anything but a uuid is `InvalidInput`.
pub(crate) fn parse_case_id(s: &str) -> Result<CaseId, CasenoteError> {
    CaseId::from_str(s).map_err(|_| CasenoteError::invalid(format!("not a case id: {s:?}")))
}

/// Parses a note or document id; anything but a uuid is `InvalidInput`.
pub(crate) fn parse_doc_id(s: &str, what: &str) -> Result<DocId, CasenoteError> {
    DocId::from_str(s).map_err(|_| CasenoteError::invalid(format!("not a {what} id: {s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_id_is_invalid_input_not_a_panic() {
        for bad in ["", "case-1", "not-a-uuid-at-all", "\u{0}"] {
            assert_eq!(parse_case_id(bad).unwrap_err().kind(), "invalid_input");
            assert_eq!(
                parse_doc_id(bad, "note").unwrap_err().kind(),
                "invalid_input"
            );
        }
        let id = CaseId::new_random();
        assert_eq!(parse_case_id(&id.to_string()).unwrap(), id);
    }
}
