//! Admin acts as data: [`Act`] names one act of `casenote-server admin` (and `audit verify`,
//! `audit show`, `export`, the subject access requests `sar open`, `sar list`, `sar fulfil`, the
//! controllers' `agreement add|end|list`, `case object|object-withdraw|override|override-end`
//! and `team move`, the break-glass records `break-glass list|review`), [`perform`] runs it through the admin service and returns an
//! [`Outcome`], the typed value both the command line and the admin API hand on. The CLI builds an
//! `Act` from its arguments and either performs it on a stopped store or sends it to a running
//! server (`POST /v1/admin/{path}`, [`Act::path`]), which performs it and answers the `Outcome` as
//! JSON; the CLI renders an `Outcome` the same way whichever path produced it.
//!
//! Names (a staff member's, a team's) are resolved inside [`perform`], as the CLI always did.
//! Nothing here returns a token except one just issued, and nothing returns record content but
//! `export`, which is audited.

use super::restructure::{Move, Moved, Records};
use super::sharing::AgreementRow;
use super::{AdminError, CaseSummary, Directory, NewStaff, Restored};
use crate::controllers::{Agreement, Objection, ObjectionReason, OverrideReason};
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
    /// The break-glass grants not yet reviewed or still in force, with their reasons.
    BreakGlassList,
    /// Marks a break-glass grant reviewed by the IG lead.
    BreakGlassReview {
        id: uuid::Uuid,
    },
    /// Records a data-sharing agreement between two organisations (by exact name).
    AgreementAdd {
        between: String,
        and: String,
        #[serde(default)]
        purpose: Option<String>,
    },
    /// Ends the agreement in force between two organisations.
    AgreementEnd {
        between: String,
        and: String,
    },
    /// The agreements in force and the objections recorded.
    AgreementList,
    /// Records a person's objection to sharing their record between controllers.
    CaseObject {
        case: CaseId,
        #[serde(default = "person")]
        reason_category: ObjectionReason,
    },
    /// Withdraws the objection (and any override of it).
    CaseObjectWithdraw {
        case: CaseId,
    },
    /// Overrides the objection, with its reason: sharing goes on under the agreements.
    CaseOverride {
        case: CaseId,
        reason_category: OverrideReason,
    },
    /// Ends the override: the objection stands again.
    CaseOverrideEnd {
        case: CaseId,
    },
    /// Moves a team, with its staff, to another organisation.
    TeamMove {
        team: String,
        to_org: String,
        records: Records,
        #[serde(default)]
        leave_other_teams: bool,
    },
    /// Sets a case's retention class (`born`, `YYYY-MM-DD`, for `children`).
    RetentionSet {
        case: CaseId,
        class: crate::retention::Class,
        #[serde(default)]
        born: Option<String>,
    },
    /// Closes a case on its day of last contact (today if absent): the retention clock starts.
    RetentionClose {
        case: CaseId,
        #[serde(default)]
        last_contact: Option<String>,
    },
    /// Reopens a closed case: the retention clock stops.
    RetentionReopen {
        case: CaseId,
    },
    /// Places a legal hold on a case's record.
    RetentionHold {
        case: CaseId,
        reason: crate::retention::HoldReason,
    },
    /// Releases a legal hold.
    RetentionRelease {
        case: CaseId,
        hold: uuid::Uuid,
    },
    /// One case's retention.
    RetentionShow {
        case: CaseId,
    },
    /// The classified cases (`due`: only those past their due day).
    RetentionList {
        #[serde(default)]
        due: bool,
    },
    /// Approves the disposal of a due record.
    RetentionApprove {
        case: CaseId,
    },
    /// Disposes of an approved record: every device deletes it; a stub is left.
    RetentionDispose {
        case: CaseId,
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

fn person() -> ObjectionReason {
    ObjectionReason::Person
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
    ("break_glass_list", "break-glass/list"),
    ("break_glass_review", "break-glass/review"),
    ("agreement_add", "agreement/add"),
    ("agreement_end", "agreement/end"),
    ("agreement_list", "agreement/list"),
    ("case_object", "case/object"),
    ("case_object_withdraw", "case/object-withdraw"),
    ("case_override", "case/override"),
    ("case_override_end", "case/override-end"),
    ("team_move", "team/move"),
    ("retention_set", "retention/set"),
    ("retention_close", "retention/close"),
    ("retention_reopen", "retention/reopen"),
    ("retention_hold", "retention/hold"),
    ("retention_release", "retention/release"),
    ("retention_show", "retention/show"),
    ("retention_list", "retention/list"),
    ("retention_approve", "retention/approve"),
    ("retention_dispose", "retention/dispose"),
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
                | Act::BreakGlassList
                | Act::AgreementList
                | Act::RetentionShow { .. }
                | Act::RetentionList { .. }
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
    BreakGlassList {
        records: Vec<crate::break_glass::Record>,
    },
    BreakGlassReviewed(crate::break_glass::Record),
    /// The agreement in force between two organisations, and whether this act made it.
    Agreement {
        agreement: Agreement,
        changed: bool,
    },
    AgreementEnded {
        agreement: Agreement,
    },
    Agreements {
        agreements: Vec<AgreementRow>,
        objections: Vec<Objection>,
    },
    /// A case's objection as it now stands (`None`: none), and whether this act changed it.
    Objection {
        case_id: CaseId,
        objection: Option<Objection>,
        changed: bool,
    },
    TeamMoved(Moved),
    Retention(crate::retention::Status),
    RetentionList(crate::retention::Listed),
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
        Act::BreakGlassList => Outcome::BreakGlassList {
            records: crate::break_glass::list(store)?,
        },
        Act::BreakGlassReview { id } => {
            Outcome::BreakGlassReviewed(crate::break_glass::review(store, by, id, now_ms)?)
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
        Act::RetentionList { due } => {
            Outcome::RetentionList(crate::retention::list(store, due, now_ms)?)
        }
        act @ (Act::RetentionSet { .. }
        | Act::RetentionClose { .. }
        | Act::RetentionReopen { .. }
        | Act::RetentionHold { .. }
        | Act::RetentionRelease { .. }
        | Act::RetentionShow { .. }
        | Act::RetentionApprove { .. }
        | Act::RetentionDispose { .. }) => Outcome::Retention(retention(store, by, act, now_ms)?),
        act => controllers(store, by, act, now_ms)?,
    })
}

/// The acts on controllers, agreements, objections and restructures.
fn controllers(store: &dyn Store, by: By, act: Act, now_ms: i64) -> Result<Outcome, AdminError> {
    use super::sharing::{self as s, ObjectionAct as O};
    let objection = |case_id, what| {
        let (objection, changed) = s::objection(store, by, case_id, what, now_ms)?;
        Ok::<_, AdminError>(Outcome::Objection {
            case_id,
            objection,
            changed,
        })
    };
    Ok(match act {
        Act::AgreementAdd {
            between,
            and,
            purpose,
        } => {
            let orgs = (between.as_str(), and.as_str());
            let (agreement, changed) =
                s::agreement_add(store, by, orgs, purpose.as_deref(), now_ms)?;
            Outcome::Agreement { agreement, changed }
        }
        Act::AgreementEnd { between, and } => Outcome::AgreementEnded {
            agreement: s::agreement_end(store, by, (&between, &and), now_ms)?,
        },
        Act::AgreementList => {
            let (agreements, objections) = s::agreements(store)?;
            Outcome::Agreements {
                agreements,
                objections,
            }
        }
        Act::CaseObject {
            case,
            reason_category,
        } => objection(case, O::Record(reason_category))?,
        Act::CaseObjectWithdraw { case } => objection(case, O::Withdraw)?,
        Act::CaseOverride {
            case,
            reason_category,
        } => objection(case, O::Override(reason_category))?,
        Act::CaseOverrideEnd { case } => objection(case, O::EndOverride)?,
        Act::TeamMove {
            team,
            to_org,
            records,
            leave_other_teams,
        } => {
            let team = super::find_team_any(store, &team)?.team_id;
            let m = Move {
                team,
                to_org: &to_org,
                records,
                leave_other_teams,
            };
            Outcome::TeamMoved(super::restructure::team_move(store, by, m, now_ms)?)
        }
        other => {
            let tag = other.tag();
            return Err(AdminError::Failed(format!(
                "the act {tag} is not one of controllers"
            )));
        }
    })
}

/// The retention acts that answer one case's retention ([`crate::retention`]).
fn retention(
    store: &dyn Store,
    by: By,
    act: Act,
    now_ms: i64,
) -> Result<crate::retention::Status, AdminError> {
    use crate::retention as r;
    match act {
        Act::RetentionSet { case, class, born } => {
            r::set(store, by, case, (class, born.as_deref()), now_ms)
        }
        Act::RetentionClose { case, last_contact } => {
            r::close(store, by, case, last_contact.as_deref(), now_ms)
        }
        Act::RetentionReopen { case } => r::reopen(store, by, case, now_ms),
        Act::RetentionHold { case, reason } => r::hold(store, by, case, reason, now_ms),
        Act::RetentionRelease { case, hold } => r::release(store, by, case, hold, now_ms),
        Act::RetentionShow { case } => r::show(store, case, now_ms),
        Act::RetentionApprove { case } => r::approve(store, by, case, now_ms),
        Act::RetentionDispose { case } => r::dispose(store, by, case, now_ms),
        other => Err(AdminError::Failed(format!(
            "{} is not a retention act",
            other.tag()
        ))),
    }
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
