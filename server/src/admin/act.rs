//! Admin acts as data: [`Act`] names one act of `casenote-server admin` (and `audit verify`,
//! `audit show`, `export`, the subject access requests `sar open`, `sar list`, `sar fulfil`), [`perform`] runs it through the admin service and returns an
//! [`Outcome`], the typed value both the command line and the admin API hand on. The CLI builds an
//! `Act` from its arguments and either performs it on a stopped store or sends it to a running
//! server (`POST /v1/admin/{path}`, [`Act::path`]), which performs it and answers the `Outcome` as
//! JSON; the CLI renders an `Outcome` the same way whichever path produced it.
//!
//! Names (a staff member's, a team's) are resolved inside [`perform`], as the CLI always did.
//! Nothing here returns a token except one just issued, and nothing returns record content but
//! `export`, which is audited.

use super::{AdminError, CaseSummary, Directory, NewStaff, Restored};
use crate::model::{AuditEntry, By, Org, QuarantineEntry, Role, Staff, Team};
use crate::store::Store;
use casenote_protocol::{CaseId, DeviceId, DocId, StaffId, TeamId};
use serde::{Deserialize, Serialize};

/// One admin act, tagged `act` in JSON (`{"act": "org_add", "name": "..."}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "act", rename_all = "snake_case", deny_unknown_fields)]
pub enum Act {
    OrgAdd {
        name: String,
    },
    TeamAdd {
        org: String,
        name: String,
    },
    StaffAdd {
        name: String,
        role: Role,
        org: String,
        teams: Vec<String>,
    },
    StaffAddTeam {
        staff: String,
        team: String,
    },
    StaffRemoveTeam {
        staff: String,
        team: String,
    },
    StaffRevoke {
        staff: String,
    },
    TokenIssue {
        staff: String,
        #[serde(default)]
        device_name: Option<String>,
    },
    TokenRevoke {
        device: String,
    },
    CaseAddTeam {
        case: CaseId,
        team: String,
    },
    CaseRemoveTeam {
        case: CaseId,
        team: String,
    },
    CaseShow {
        case: CaseId,
    },
    RestrictedGrant {
        doc: DocId,
        team: String,
    },
    RestrictedRevoke {
        doc: DocId,
        team: String,
    },
    List,
    Restored,
    QuarantineList,
    AdminTokenIssue {
        name: String,
    },
    AdminTokenRevoke {
        admin_id: uuid::Uuid,
    },
    AuditVerify,
    AuditShow {
        #[serde(default)]
        limit: Option<usize>,
    },
    Export {
        case: CaseId,
    },
    /// Opens a subject access request for a case, received on `received` (`YYYY-MM-DD`, London;
    /// today if absent).
    SarOpen {
        case: CaseId,
        #[serde(default)]
        received: Option<String>,
    },
    /// The open subject access requests with their due dates.
    SarList,
    /// Answers a subject access request with the person's record, and closes it.
    SarFulfil {
        request: uuid::Uuid,
    },
    /// Moves a filed note from the wrong person's record to `to_case` (`crate::misfile`).
    NoteMisfiled {
        note: DocId,
        to_case: CaseId,
        reason_category: String,
        #[serde(default)]
        reason: Option<String>,
    },
}

/// Each act's tag and its path under `/v1/admin/` (the CLI's subcommand words).
pub const PATHS: &[(&str, &str)] = &[
    ("org_add", "org/add"),
    ("team_add", "team/add"),
    ("staff_add", "staff/add"),
    ("staff_add_team", "staff/add-team"),
    ("staff_remove_team", "staff/remove-team"),
    ("staff_revoke", "staff/revoke"),
    ("token_issue", "token/issue"),
    ("token_revoke", "token/revoke"),
    ("case_add_team", "case/add-team"),
    ("case_remove_team", "case/remove-team"),
    ("case_show", "case/show"),
    ("restricted_grant", "restricted/grant"),
    ("restricted_revoke", "restricted/revoke"),
    ("list", "list"),
    ("restored", "restored"),
    ("quarantine_list", "quarantine/list"),
    ("admin_token_issue", "admin-token/issue"),
    ("admin_token_revoke", "admin-token/revoke"),
    ("audit_verify", "audit/verify"),
    ("audit_show", "audit/show"),
    ("export", "export"),
    ("sar_open", "sar/open"),
    ("sar_list", "sar/list"),
    ("sar_fulfil", "sar/fulfil"),
    ("note_misfiled", "note/misfiled"),
];

impl Act {
    /// The act's tag (`org_add`).
    pub fn tag(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v["act"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Its path under `/v1/admin/` (`org/add`).
    pub fn path(&self) -> &'static str {
        let tag = self.tag();
        PATHS
            .iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, p)| *p)
            .unwrap_or("unknown")
    }

    /// The act as the admin API runs it: `audit show` answers at most the last
    /// [`limits::ADMIN_AUDIT_SHOW_ENTRIES_MAX`] entries (the whole log of a busy server is
    /// millions of sync entries, too many for one answer held in memory).
    pub fn within_api_limits(self) -> Act {
        let max = casenote_protocol::limits::ADMIN_AUDIT_SHOW_ENTRIES_MAX;
        match self {
            Act::AuditShow { limit } => Act::AuditShow {
                limit: Some(limit.unwrap_or(max).min(max)),
            },
            other => other,
        }
    }

    /// Whether the act only reads: it writes nothing, not even an audit entry, so the CLI
    /// flushes nothing after it (`audit verify` inspects a store as it is).
    pub fn reads_only(&self) -> bool {
        matches!(
            self,
            Act::CaseShow { .. }
                | Act::List
                | Act::QuarantineList
                | Act::AuditVerify
                | Act::AuditShow { .. }
                | Act::SarList
        )
    }
}

/// A quarantined change as listed: ids, hash, size and reason; never its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRow {
    pub doc_id: DocId,
    /// The change's hash, lower-case hex.
    pub hash: String,
    pub bytes: usize,
    pub reason: String,
    pub staff_id: StaffId,
    pub device_id: DeviceId,
    pub at_ms: i64,
}

impl From<&QuarantineEntry> for QuarantineRow {
    fn from(e: &QuarantineEntry) -> Self {
        QuarantineRow {
            doc_id: e.doc_id,
            hash: hex::encode(e.hash.0),
            bytes: e.bytes.len(),
            reason: e.reason.clone(),
            staff_id: e.staff_id,
            device_id: e.device_id,
            at_ms: e.at_ms,
        }
    }
}

/// A person's whole record as `export` gives it ([`crate::export::build`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedRecord {
    /// What `record.json` holds.
    pub record: serde_json::Value,
    /// What `record.html` holds.
    pub html: String,
    pub documents: usize,
    pub notes: usize,
    pub restricted: usize,
    pub changes: usize,
}

/// What an act returns, tagged `outcome` in JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Org(Org),
    Team(Team),
    Staff(Staff),
    /// Whether a member of staff is now on a team (`on`), and whether that changed anything.
    StaffTeam {
        staff_id: StaffId,
        team_id: TeamId,
        on: bool,
        changed: bool,
    },
    StaffRevoked {
        staff_id: StaffId,
        devices: Vec<DeviceId>,
    },
    /// A device's token, shown once.
    TokenIssued {
        staff_id: StaffId,
        device_id: DeviceId,
        token: String,
    },
    DeviceRevoked {
        device_id: DeviceId,
    },
    CaseTeam {
        case_id: CaseId,
        team_id: TeamId,
        on: bool,
        changed: bool,
    },
    Case(CaseSummary),
    RestrictedAccess {
        doc_id: DocId,
        team_id: TeamId,
        granted: bool,
        changed: bool,
    },
    Directory(Directory),
    Restored(Restored),
    Quarantine {
        entries: Vec<QuarantineRow>,
    },
    /// An admin token, shown once.
    AdminTokenIssued {
        admin_id: uuid::Uuid,
        token: String,
    },
    AdminTokenRevoked {
        admin_id: uuid::Uuid,
    },
    AuditIntact {
        entries: usize,
    },
    /// The audit chain is broken: the message names the first broken entry.
    AuditBroken {
        message: String,
    },
    AuditEntries {
        entries: Vec<AuditEntry>,
    },
    Exported(ExportedRecord),
    SarOpened(crate::subject_access::Request),
    SarList {
        requests: Vec<crate::subject_access::Listed>,
    },
    SarFulfilled(crate::subject_access::Fulfilled),
    NoteMisfiled(crate::misfile::Misfiled),
}

/// Runs `act` as `by` at `now_ms`.
pub fn perform(store: &dyn Store, by: By, act: Act, now_ms: i64) -> Result<Outcome, AdminError> {
    use super as a;
    Ok(match act {
        Act::OrgAdd { name } => Outcome::Org(a::add_org(store, by, &name, now_ms)?),
        Act::TeamAdd { org, name } => Outcome::Team(a::add_team(store, by, &org, &name, now_ms)?),
        Act::StaffAdd {
            name,
            role,
            org,
            teams,
        } => {
            let new = NewStaff {
                name: &name,
                role,
                org: &org,
                teams: &teams,
            };
            Outcome::Staff(a::add_staff(store, by, new, now_ms)?)
        }
        Act::StaffAddTeam { staff, team } => staff_team(store, by, (&staff, &team), true, now_ms)?,
        Act::StaffRemoveTeam { staff, team } => {
            staff_team(store, by, (&staff, &team), false, now_ms)?
        }
        Act::StaffRevoke { staff } => {
            let staff_id = a::find_staff(store, &staff)?.staff_id;
            let devices = a::revoke_staff(store, by, staff_id, now_ms)?;
            Outcome::StaffRevoked { staff_id, devices }
        }
        Act::TokenIssue { staff, device_name } => {
            let staff_id = a::find_staff(store, &staff)?.staff_id;
            let name = device_name.as_deref().unwrap_or(a::DEFAULT_DEVICE_NAME);
            let issued = a::issue_token(store, by, staff_id, name, now_ms)?;
            Outcome::TokenIssued {
                staff_id,
                device_id: issued.device.device_id,
                token: issued.token,
            }
        }
        Act::TokenRevoke { device } => Outcome::DeviceRevoked {
            device_id: a::revoke_device(store, by, &device, now_ms)?.device_id,
        },
        Act::CaseAddTeam { case, team } => case_team(store, by, (case, &team), true, now_ms)?,
        Act::CaseRemoveTeam { case, team } => case_team(store, by, (case, &team), false, now_ms)?,
        Act::CaseShow { case } => Outcome::Case(a::case_summary(store, case)?),
        Act::RestrictedGrant { doc, team } => restricted(store, by, (doc, &team), true, now_ms)?,
        Act::RestrictedRevoke { doc, team } => restricted(store, by, (doc, &team), false, now_ms)?,
        Act::List => Outcome::Directory(a::directory(store)?),
        Act::Restored => Outcome::Restored(a::restored(store, by, now_ms)?),
        Act::QuarantineList => Outcome::Quarantine {
            entries: a::quarantine(store)?
                .iter()
                .map(QuarantineRow::from)
                .collect(),
        },
        Act::AdminTokenIssue { name } => {
            let issued = a::issue_admin_token(store, by, &name, now_ms)?;
            Outcome::AdminTokenIssued {
                admin_id: issued.admin.admin_id,
                token: issued.token,
            }
        }
        Act::AdminTokenRevoke { admin_id } => Outcome::AdminTokenRevoked {
            admin_id: a::revoke_admin_token(store, by, admin_id, now_ms)?.admin_id,
        },
        Act::AuditVerify => match crate::audit::verify_anchored(store) {
            Ok(entries) => Outcome::AuditIntact { entries },
            Err(crate::audit::VerifyError::Store(e)) => return Err(e.into()),
            Err(broken) => Outcome::AuditBroken {
                message: broken.to_string(),
            },
        },
        Act::AuditShow { limit } => Outcome::AuditEntries {
            entries: crate::audit::entries(store, limit)?,
        },
        Act::Export { case } => Outcome::Exported(export(store, by, case, now_ms)?),
        Act::SarOpen { case, received } => Outcome::SarOpened(crate::subject_access::open(
            store,
            by,
            case,
            received.as_deref(),
            now_ms,
        )?),
        Act::SarList => Outcome::SarList {
            requests: crate::subject_access::list(store, now_ms)?,
        },
        Act::SarFulfil { request } => {
            Outcome::SarFulfilled(crate::subject_access::fulfil(store, by, request, now_ms)?)
        }
        Act::NoteMisfiled {
            note,
            to_case,
            reason_category,
            reason,
        } => {
            let m = crate::misfile::Misfile {
                note,
                to_case,
                category: &reason_category,
                reason: reason.as_deref(),
            };
            Outcome::NoteMisfiled(crate::misfile::misfile(store, by, &m, now_ms)?)
        }
    })
}

fn staff_team(
    store: &dyn Store,
    by: By,
    (staff, team): (&str, &str),
    on: bool,
    now_ms: i64,
) -> Result<Outcome, AdminError> {
    let staff_id = super::find_staff(store, staff)?.staff_id;
    let team_id = super::find_team_any(store, team)?.team_id;
    let changed = if on {
        super::staff_add_team(store, by, staff_id, team_id, now_ms)?
    } else {
        super::staff_remove_team(store, by, staff_id, team_id, now_ms)?
    };
    Ok(Outcome::StaffTeam {
        staff_id,
        team_id,
        on,
        changed,
    })
}

fn case_team(
    store: &dyn Store,
    by: By,
    (case_id, team): (CaseId, &str),
    on: bool,
    now_ms: i64,
) -> Result<Outcome, AdminError> {
    let team_id = super::find_team_any(store, team)?.team_id;
    let changed = if on {
        super::case_add_team(store, by, case_id, team_id, now_ms)?
    } else {
        super::case_remove_team(store, by, case_id, team_id, now_ms)?
    };
    Ok(Outcome::CaseTeam {
        case_id,
        team_id,
        on,
        changed,
    })
}

fn restricted(
    store: &dyn Store,
    by: By,
    (doc_id, team): (DocId, &str),
    granted: bool,
    now_ms: i64,
) -> Result<Outcome, AdminError> {
    let team_id = super::find_team_any(store, team)?.team_id;
    let changed = if granted {
        super::restricted_grant(store, by, doc_id, team_id, now_ms)?
    } else {
        super::restricted_revoke(store, by, doc_id, team_id, now_ms)?
    };
    Ok(Outcome::RestrictedAccess {
        doc_id,
        team_id,
        granted,
        changed,
    })
}

fn export(
    store: &dyn Store,
    by: By,
    case: CaseId,
    now_ms: i64,
) -> Result<ExportedRecord, AdminError> {
    if crate::store::read(store, |t| t.case(case))?.is_none() {
        return Err(AdminError::NoSuchCase(case));
    }
    crate::export::build(store, by, case, now_ms).map_err(|e| AdminError::Failed(format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_show_over_the_api_is_bounded_and_a_smaller_limit_kept() {
        let max = casenote_protocol::limits::ADMIN_AUDIT_SHOW_ENTRIES_MAX;
        let bounded = |limit| match (Act::AuditShow { limit }).within_api_limits() {
            Act::AuditShow { limit } => limit,
            other => panic!("{other:?}"),
        };
        assert_eq!(bounded(None), Some(max));
        assert_eq!(bounded(Some(max + 1)), Some(max));
        assert_eq!(bounded(Some(7)), Some(7));
        assert_eq!(Act::List.within_api_limits(), Act::List);
    }

    #[test]
    fn every_act_has_a_path_and_every_path_an_act() {
        let acts = [
            Act::List,
            Act::Restored,
            Act::QuarantineList,
            Act::AuditVerify,
            Act::AuditShow { limit: None },
            Act::OrgAdd { name: "x".into() },
        ];
        for act in acts {
            assert_ne!(act.path(), "unknown", "{act:?}");
        }
        for (tag, _) in PATHS {
            let parsed: Result<Act, _> = serde_json::from_value(serde_json::json!({"act": tag}));
            // Acts with required fields fail on a missing field, never on an unknown tag.
            if let Err(e) = parsed {
                assert!(e.to_string().contains("missing field"), "{tag}: {e}");
            }
        }
    }
}
