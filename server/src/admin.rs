//! The admin service: typed operations on the directory and on who may see what, each returning
//! a typed value. The CLI ([`crate::cli`]) and the HTTP admin API (`api/admin.rs`) both call it,
//! through [`act::perform`] (an act as data, its outcome as data), and the CLI renders what it
//! returns whichever path ran it.
//!
//! Every write is ONE store transaction that holds its own checks: a name's uniqueness is checked
//! in the transaction that adds it, a case's teams are read and changed in one, so two admins at
//! once (two processes on one database) can never add the same organisation twice or lose each
//! other's change. Every act is audited in that transaction with who did it ([`By`]) and made
//! durable before the operation returns. Access changes (a case's teams, a member of staff's
//! teams, a restricted document's access list) also bump the access epoch in that transaction,
//! so every device's next sync is reconciled (evictions and backfill); changing nothing (adding a
//! team already there) is a success that bumps and audits nothing.
//!
//! Nothing here returns a token except the one just issued, and nothing returns record content.
//! It may use the store (through [`write`] and [`read`]), the model and [`crate::auth`].

pub mod act;
pub mod restructure;
pub mod sharing;

use crate::auth::{self, Issued, IssuedAdmin};
use crate::model::{
    AdminToken, AuditKind, AuditRecord, By, Device, Org, QuarantineEntry, Role, Staff, Team,
};
use crate::store::{read, write, Store, StoreError, Txn};
use casenote_protocol::{limits, CaseId, DeviceId, DocId, DocKind, OrgId, StaffId, TeamId};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The device name used when `token issue` is given none.
pub const DEFAULT_DEVICE_NAME: &str = "device";

/// Why an admin operation was refused. Messages say what to do next.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("an organisation named {0:?} already exists")]
    OrgExists(String),
    #[error(
        "no organisation named {0:?}; add it with `admin org add --name ...` or see `admin list`"
    )]
    NoSuchOrg(String),
    #[error("organisation {org:?} already has a team named {team:?}")]
    TeamExists { org: String, team: String },
    #[error("organisation {org:?} has no team named {team:?}; add it with `admin team add` or see `admin list`")]
    NoSuchTeam { org: String, team: String },
    #[error("no staff member with id or exact name {0:?}; see `admin list`")]
    NoSuchStaff(String),
    #[error(
        "{count} staff members are named {name:?}; use the staff id instead (see `admin list`)"
    )]
    AmbiguousStaff { name: String, count: usize },
    #[error("no team with id or exact name {0:?}; see `admin list`")]
    NoSuchTeamAnywhere(String),
    #[error("{count} teams are named {name:?}; use the team id instead (see `admin list`)")]
    AmbiguousTeam { name: String, count: usize },
    #[error("no team with id {0}; see `admin list`")]
    NoSuchTeamId(TeamId),
    #[error("no staff member with id {0}")]
    NoSuchStaffId(StaffId),
    #[error("staff member {0} has been revoked; enrol no devices for them")]
    StaffRevoked(StaffId),
    #[error("no device with id {0:?}; see `admin list`")]
    NoSuchDevice(String),
    #[error("no case with id {0}")]
    NoSuchCase(CaseId),
    #[error("no document with id {0}")]
    NoSuchDocument(DocId),
    #[error("document {doc} is a {kind}, not restricted: who may see it follows its case's teams")]
    NotRestricted { doc: DocId, kind: DocKind },
    #[error("a name must not be empty or longer than {max} bytes")]
    BadName { max: usize },
    #[error("a member of staff needs at least one team (--team)")]
    NoTeams,
    #[error("no admin token with id {0}; see `admin list`")]
    NoSuchAdminToken(uuid::Uuid),
    #[error("no open subject access request with id {0}; see `admin sar list`")]
    NoSuchRequest(uuid::Uuid),
    #[error("no break-glass record with id {0}; see `admin break-glass list`")]
    NoSuchBreakGlass(uuid::Uuid),
    #[error("{0:?} is not a day on or before today: write it as YYYY-MM-DD")]
    BadDate(String),
    #[error("{0} subject access requests are open, the most kept: fulfil some first")]
    TooManyRequests(usize),
    #[error("an agreement's purpose must not be empty or longer than {max} bytes")]
    BadPurpose { max: usize },
    #[error("an agreement is between two different organisations")]
    SameOrg,
    #[error("there is no agreement in force between {a:?} and {b:?}; see `admin agreement list`")]
    NoSuchAgreement { a: String, b: String },
    #[error("{0} agreements are in force, the most kept: end some first")]
    TooManyAgreements(usize),
    #[error("case {0} has no objection to sharing recorded; see `admin agreement list`")]
    NoObjection(CaseId),
    #[error("{0} objections are recorded, the most kept")]
    TooManyObjections(usize),
    #[error(
        "team {team} belongs to another organisation than staff member {staff}: a member of staff \
         sits only in teams of their own organisation (`admin team move` moves a whole team)"
    )]
    TeamOfAnotherOrg { staff: StaffId, team: TeamId },
    #[error(
        "team {team:?} belongs to {other:?}, not to {org:?}: a member of staff sits only in teams \
         of their own organisation"
    )]
    TeamOfAnotherOrgNamed {
        org: String,
        team: String,
        other: String,
    },
    #[error("team {0} already belongs to that organisation")]
    TeamAlreadyInOrg(TeamId),
    #[error(
        "these members of the team are also on other teams of its organisation: {}; take them \
         off those teams first, or pass --leave-other-teams to have the move do it",
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    MembersOnOtherTeams(Vec<StaffId>),
    /// An act refused by the state of what it acts on (a retention step out of order).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A refusal found inside a transaction: the transaction ends (nothing is written) and the
/// refusal is handed back as it is.
enum Refused {
    Admin(AdminError),
    Store(StoreError),
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Self {
        Refused::Store(e)
    }
}

impl From<AdminError> for Refused {
    fn from(e: AdminError) -> Self {
        Refused::Admin(e)
    }
}

/// [`write`] with refusals of the operation's own: `f` returns `Err(Refused::Admin(..))` to end
/// the transaction, writing nothing, then the store is flushed so the act is durable.
fn act<T>(
    store: &dyn Store,
    mut f: impl FnMut(&mut dyn Txn) -> Result<T, Refused>,
) -> Result<T, AdminError> {
    let mut refusal = None;
    let done = write(store, |txn| match f(txn) {
        Ok(v) => Ok(Some(v)),
        Err(Refused::Store(e)) => Err(e),
        Err(Refused::Admin(e)) => {
            refusal = Some(e);
            Err(StoreError::Task("refused".into()))
        }
    });
    if let Some(e) = refusal {
        return Err(e);
    }
    let value = done?.ok_or_else(|| StoreError::Task("the operation did not run".into()))?;
    store.flush()?;
    Ok(value)
}

fn check_name(name: &str) -> Result<&str, AdminError> {
    let max = limits::SHORT_TEXT_BYTES_MAX;
    let name = name.trim();
    if name.is_empty() || name.len() > max {
        Err(AdminError::BadName { max })
    } else {
        Ok(name)
    }
}

fn admin_record(now_ms: i64, by: By, details: serde_json::Value) -> AuditRecord {
    AuditRecord::new(AuditKind::Admin, now_ms, details).by(by)
}

/// The organisation with this exact name.
pub fn find_org(txn: &mut dyn Txn, name: &str) -> Result<Option<Org>, StoreError> {
    Ok(txn.orgs()?.into_iter().find(|o| o.name == name))
}

/// The team with this exact name in this organisation.
pub fn find_team(txn: &mut dyn Txn, org: OrgId, name: &str) -> Result<Option<Team>, StoreError> {
    Ok(txn
        .teams()?
        .into_iter()
        .find(|t| t.org_id == org && t.name == name))
}

fn org_named(txn: &mut dyn Txn, name: &str) -> Result<Org, Refused> {
    Ok(find_org(txn, name)?.ok_or_else(|| AdminError::NoSuchOrg(name.into()))?)
}

/// Adds an organisation (audited `admin`, action `org_add`).
pub fn add_org(store: &dyn Store, by: By, name: &str, now_ms: i64) -> Result<Org, AdminError> {
    let name = check_name(name)?;
    act(store, |txn| {
        if find_org(txn, name)?.is_some() {
            return Err(AdminError::OrgExists(name.into()).into());
        }
        let org = Org {
            org_id: OrgId::new_random(),
            name: name.into(),
        };
        // A store without recorded agreements records what was in force before this org.
        crate::controllers::ensure_recorded(txn, now_ms)?;
        txn.put_org(&org)?;
        let details = json!({"action": "org_add", "org_id": org.org_id});
        txn.audit_append(admin_record(now_ms, by, details))?;
        Ok(org)
    })
}

/// Adds a team to the organisation named `org_name` (audited `admin`, action `team_add`).
pub fn add_team(
    store: &dyn Store,
    by: By,
    org_name: &str,
    name: &str,
    now_ms: i64,
) -> Result<Team, AdminError> {
    let name = check_name(name)?;
    act(store, |txn| {
        let org = org_named(txn, org_name)?;
        if find_team(txn, org.org_id, name)?.is_some() {
            let (org, team) = (org.name, name.into());
            return Err(AdminError::TeamExists { org, team }.into());
        }
        let team = Team {
            team_id: TeamId::new_random(),
            org_id: org.org_id,
            name: name.into(),
        };
        txn.put_team(&team)?;
        let details = json!({"action": "team_add", "team_id": team.team_id, "org_id": org.org_id});
        txn.audit_append(admin_record(now_ms, by, details))?;
        Ok(team)
    })
}

/// A member of staff to add: their name, role, organisation and teams (by exact name).
#[derive(Clone, Copy, Debug)]
pub struct NewStaff<'a> {
    pub name: &'a str,
    pub role: Role,
    pub org: &'a str,
    pub teams: &'a [String],
}

/// Adds a member of staff to teams of their organisation (audited `admin`, action `staff_add`).
pub fn add_staff(
    store: &dyn Store,
    by: By,
    new: NewStaff<'_>,
    now_ms: i64,
) -> Result<Staff, AdminError> {
    let name = check_name(new.name)?;
    if new.teams.is_empty() {
        return Err(AdminError::NoTeams);
    }
    act(store, |txn| {
        let org = org_named(txn, new.org)?;
        let mut teams = Vec::new();
        for t in new.teams {
            let Some(team) = find_team(txn, org.org_id, t)? else {
                return Err(no_team_in(txn, &org, t)?.into());
            };
            if !teams.contains(&team.team_id) {
                teams.push(team.team_id);
            }
        }
        let staff = Staff {
            staff_id: StaffId::new_random(),
            name: name.into(),
            role: new.role,
            org_id: org.org_id,
            teams,
            revoked: false,
        };
        txn.put_staff(&staff)?;
        let details = json!({"action": "staff_add", "role": staff.role, "org_id": staff.org_id,
                             "teams": staff.teams});
        txn.audit_append(admin_record(now_ms, by, details).staff(staff.staff_id))?;
        Ok(staff)
    })
}

/// Why organisation `org` has no team named `name`: it belongs to another organisation, or to
/// none.
fn no_team_in(txn: &mut dyn Txn, org: &Org, name: &str) -> Result<AdminError, StoreError> {
    let elsewhere = txn.teams()?.into_iter().find(|t| t.name == name);
    Ok(match elsewhere {
        Some(t) => AdminError::TeamOfAnotherOrgNamed {
            org: org.name.clone(),
            team: name.into(),
            other: txn.org(t.org_id)?.map(|o| o.name).unwrap_or_default(),
        },
        None => AdminError::NoSuchTeam {
            org: org.name.clone(),
            team: name.into(),
        },
    })
}

/// The only entry of `found` that `id_or_name` names.
fn one_named<T>(
    mut found: Vec<T>,
    none: impl FnOnce() -> AdminError,
    many: impl FnOnce(usize) -> AdminError,
) -> Result<T, AdminError> {
    match found.len() {
        0 => Err(none()),
        1 => Ok(found.remove(0)),
        count => Err(many(count)),
    }
}

/// The team with this id, or else with exactly this name in any organisation (which must be
/// unique; use the id when two organisations have a team of the same name).
pub fn find_team_any(store: &dyn Store, id_or_name: &str) -> Result<Team, AdminError> {
    let id = id_or_name.parse::<TeamId>().ok();
    let (by_id, all) = read(store, |txn| {
        let by_id = match id {
            Some(id) => txn.team(id)?,
            None => None,
        };
        Ok((by_id, txn.teams()?))
    })?;
    if let Some(team) = by_id {
        return Ok(team);
    }
    let named = all.into_iter().filter(|t| t.name == id_or_name).collect();
    let name = || id_or_name.to_string();
    one_named(
        named,
        || AdminError::NoSuchTeamAnywhere(name()),
        |count| AdminError::AmbiguousTeam {
            name: name(),
            count,
        },
    )
}

/// The member of staff with this id, or else with exactly this name (which must be unique).
pub fn find_staff(store: &dyn Store, id_or_name: &str) -> Result<Staff, AdminError> {
    let id = id_or_name.parse::<StaffId>().ok();
    let (by_id, all) = read(store, |txn| {
        let by_id = match id {
            Some(id) => txn.staff(id)?,
            None => None,
        };
        Ok((by_id, txn.staff_all()?))
    })?;
    if let Some(staff) = by_id {
        return Ok(staff);
    }
    let named = all.into_iter().filter(|s| s.name == id_or_name).collect();
    let name = || id_or_name.to_string();
    one_named(
        named,
        || AdminError::NoSuchStaff(name()),
        |count| AdminError::AmbiguousStaff {
            name: name(),
            count,
        },
    )
}

/// Enrols a device for a member of staff and returns its token (shown once, stored only as a
/// hash; audited `enrol`). A revoked member of staff gets none.
pub fn issue_token(
    store: &dyn Store,
    by: By,
    staff: StaffId,
    device_name: &str,
    now_ms: i64,
) -> Result<Issued, AdminError> {
    act(store, |txn| {
        let staff = txn.staff(staff)?.ok_or(AdminError::NoSuchStaffId(staff))?;
        if staff.revoked {
            return Err(AdminError::StaffRevoked(staff.staff_id).into());
        }
        Ok(auth::issue(txn, &staff, device_name, now_ms, by)?)
    })
}

/// Revokes a device's token (audited `token_revoke`); its escrowed key is destroyed.
pub fn revoke_device(
    store: &dyn Store,
    by: By,
    device: &str,
    now_ms: i64,
) -> Result<Device, AdminError> {
    let unknown = || AdminError::NoSuchDevice(device.into());
    let id: DeviceId = device.parse().map_err(|_| unknown())?;
    act(store, |txn| {
        Ok(auth::revoke(txn, id, now_ms, by)?.ok_or_else(unknown)?)
    })
}

/// Issues an admin token labelled `name` (shown once, stored only as a hash; audited `admin`,
/// action `admin_token_issue`).
pub fn issue_admin_token(
    store: &dyn Store,
    by: By,
    name: &str,
    now_ms: i64,
) -> Result<IssuedAdmin, AdminError> {
    let name = check_name(name)?;
    act(store, |txn| Ok(auth::issue_admin(txn, name, now_ms, by)?))
}

/// Revokes an admin token (audited `admin`, action `admin_token_revoke`): from now on it opens
/// nothing.
pub fn revoke_admin_token(
    store: &dyn Store,
    by: By,
    admin_id: uuid::Uuid,
    now_ms: i64,
) -> Result<AdminToken, AdminError> {
    act(store, |txn| {
        Ok(auth::revoke_admin(txn, admin_id, now_ms, by)?
            .ok_or(AdminError::NoSuchAdminToken(admin_id))?)
    })
}

/// Revokes a member of staff (a leaver) and every device of theirs (audited `staff_revoke`);
/// their tokens answer `device_revoked` from now on. Returns the devices.
pub fn revoke_staff(
    store: &dyn Store,
    by: By,
    staff: StaffId,
    now_ms: i64,
) -> Result<Vec<DeviceId>, AdminError> {
    act(store, |txn| {
        let devices = auth::revoke_staff(txn, staff, now_ms, by)?;
        Ok(devices.ok_or(AdminError::NoSuchStaffId(staff))?)
    })
}

fn team_exists(txn: &mut dyn Txn, team: TeamId) -> Result<(), Refused> {
    match txn.team(team)? {
        Some(_) => Ok(()),
        None => Err(AdminError::NoSuchTeamId(team).into()),
    }
}

/// In the transaction of an access change: bumps the access epoch and audits the change
/// (`access_change`, with the new epoch).
fn access_changed(
    txn: &mut dyn Txn,
    now_ms: i64,
    by: By,
    staff: Option<StaffId>,
    mut details: serde_json::Value,
) -> Result<(), StoreError> {
    details["access_epoch"] = json!(txn.bump_access_epoch()?);
    let mut record = AuditRecord::new(AuditKind::AccessChange, now_ms, details).by(by);
    record.staff_id = staff;
    txn.audit_append(record)?;
    Ok(())
}

/// Adds (`add`) or removes a team around the person of a case; whether anything changed.
fn case_team(
    store: &dyn Store,
    by: By,
    (case, team): (CaseId, TeamId),
    add: bool,
    now_ms: i64,
) -> Result<bool, AdminError> {
    act(store, |txn| {
        team_exists(txn, team)?;
        let mut rec = txn.case(case)?.ok_or(AdminError::NoSuchCase(case))?;
        if rec.teams.contains(&team) == add {
            return Ok(false);
        }
        if add {
            rec.teams.push(team);
        } else {
            rec.teams.retain(|t| *t != team);
        }
        txn.put_case(&rec)?;
        let action = if add {
            "case_add_team"
        } else {
            "case_remove_team"
        };
        let details = json!({"action": action, "case_id": case, "team_id": team});
        access_changed(txn, now_ms, by, None, details)?;
        Ok(true)
    })
}

/// Puts `team` around the person of `case`: its members may now hold the case's documents.
pub fn case_add_team(
    store: &dyn Store,
    by: By,
    case: CaseId,
    team: TeamId,
    now_ms: i64,
) -> Result<bool, AdminError> {
    case_team(store, by, (case, team), true, now_ms)
}

/// Takes `team` off `case`: its members' devices are told to delete the case's documents.
pub fn case_remove_team(
    store: &dyn Store,
    by: By,
    case: CaseId,
    team: TeamId,
    now_ms: i64,
) -> Result<bool, AdminError> {
    case_team(store, by, (case, team), false, now_ms)
}

/// Adds (`add`) or removes a member of staff from a team; whether anything changed.
fn staff_team(
    store: &dyn Store,
    by: By,
    (staff, team): (StaffId, TeamId),
    add: bool,
    now_ms: i64,
) -> Result<bool, AdminError> {
    act(store, |txn| {
        let found = txn.team(team)?.ok_or(AdminError::NoSuchTeamId(team))?;
        let mut s = txn.staff(staff)?.ok_or(AdminError::NoSuchStaffId(staff))?;
        if s.teams.contains(&team) == add {
            return Ok(false);
        }
        if add && found.org_id != s.org_id {
            return Err(AdminError::TeamOfAnotherOrg { staff, team }.into());
        }
        if add {
            s.teams.push(team);
        } else {
            s.teams.retain(|t| *t != team);
        }
        txn.put_staff(&s)?;
        let action = if add {
            "staff_add_team"
        } else {
            "staff_remove_team"
        };
        let details = json!({"action": action, "team_id": team});
        access_changed(txn, now_ms, by, Some(staff), details)?;
        Ok(true)
    })
}

/// Adds a member of staff to a team.
pub fn staff_add_team(
    store: &dyn Store,
    by: By,
    staff: StaffId,
    team: TeamId,
    now_ms: i64,
) -> Result<bool, AdminError> {
    staff_team(store, by, (staff, team), true, now_ms)
}

/// Takes a member of staff off a team.
pub fn staff_remove_team(
    store: &dyn Store,
    by: By,
    staff: StaffId,
    team: TeamId,
    now_ms: i64,
) -> Result<bool, AdminError> {
    staff_team(store, by, (staff, team), false, now_ms)
}

/// Grants (`grant`) or revokes `team`'s access to a restricted document; whether anything
/// changed.
fn restricted_access(
    store: &dyn Store,
    by: By,
    (doc, team): (DocId, TeamId),
    grant: bool,
    now_ms: i64,
) -> Result<bool, AdminError> {
    act(store, |txn| {
        team_exists(txn, team)?;
        let mut rec = txn.doc(doc)?.ok_or(AdminError::NoSuchDocument(doc))?;
        if !rec.header.kind.is_restricted() {
            let kind = rec.header.kind;
            return Err(AdminError::NotRestricted { doc, kind }.into());
        }
        let list = rec.header.access_teams.get_or_insert_with(Vec::new);
        if list.contains(&team) == grant {
            return Ok(false);
        }
        if grant {
            list.push(team);
        } else {
            list.retain(|t| *t != team);
        }
        txn.put_doc(&rec)?;
        let action = if grant {
            "restricted_grant"
        } else {
            "restricted_revoke"
        };
        let details = json!({"action": action, "doc_id": doc, "team_id": team});
        access_changed(txn, now_ms, by, None, details)?;
        Ok(true)
    })
}

/// Puts `team` on a restricted document's access list.
pub fn restricted_grant(
    store: &dyn Store,
    by: By,
    doc: DocId,
    team: TeamId,
    now_ms: i64,
) -> Result<bool, AdminError> {
    restricted_access(store, by, (doc, team), true, now_ms)
}

/// Takes `team` off a restricted document's access list.
pub fn restricted_revoke(
    store: &dyn Store,
    by: By,
    doc: DocId,
    team: TeamId,
    now_ms: i64,
) -> Result<bool, AdminError> {
    restricted_access(store, by, (doc, team), false, now_ms)
}

/// The log ids before and after `restored`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    pub old: uuid::Uuid,
    pub new: uuid::Uuid,
}

/// After restoring the data from a backup: gives the store a new log id, so that every device
/// whose cursor and bases count in the lost future is told to reset on its next sync and
/// re-sends everything it holds (the server drops what it already has). Audited (`admin`,
/// action `restored`).
pub fn restored(store: &dyn Store, by: By, now_ms: i64) -> Result<Restored, AdminError> {
    let new = uuid::Uuid::new_v4();
    act(store, |txn| {
        let old = txn.log_id()?;
        txn.set_log_id(new)?;
        let details = json!({"action": "restored", "old_log_id": old, "log_id": new});
        txn.audit_append(admin_record(now_ms, by, details))?;
        Ok(Restored { old, new })
    })
}

/// The changes refused by the record rules, oldest first (ids, reasons, sizes; the bytes are
/// kept for an administrator's tools, never shown).
pub fn quarantine(store: &dyn Store) -> Result<Vec<QuarantineEntry>, AdminError> {
    let mut entries = store.quarantine_list()?;
    entries.sort_by_key(|e| (e.at_ms, e.doc_id, e.hash));
    Ok(entries)
}

/// The whole directory, each list sorted as `admin list` shows it (never tokens, nor their
/// hashes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directory {
    pub orgs: Vec<Org>,
    pub teams: Vec<Team>,
    pub staff: Vec<Staff>,
    pub devices: Vec<DeviceSummary>,
    #[serde(default)]
    pub admins: Vec<AdminSummary>,
}

/// An enrolled device as listed (not its token's hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSummary {
    pub device_id: DeviceId,
    pub staff_id: StaffId,
    pub name: String,
    pub created_ms: i64,
    pub revoked: bool,
}

/// An admin token as listed (not its hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminSummary {
    pub admin_id: uuid::Uuid,
    pub name: String,
    pub created_ms: i64,
    pub revoked: bool,
}

impl From<AdminToken> for AdminSummary {
    fn from(a: AdminToken) -> Self {
        AdminSummary {
            admin_id: a.admin_id,
            name: a.name,
            created_ms: a.created_ms,
            revoked: a.revoked,
        }
    }
}

/// Every organisation, team, member of staff and device.
pub fn directory(store: &dyn Store) -> Result<Directory, AdminError> {
    let mut dir = read(store, |txn| {
        let devices = txn.devices()?.into_iter().map(|d| DeviceSummary {
            device_id: d.device_id,
            staff_id: d.staff_id,
            name: d.name,
            created_ms: d.created_ms,
            revoked: d.revoked,
        });
        Ok(Directory {
            orgs: txn.orgs()?,
            teams: txn.teams()?,
            staff: txn.staff_all()?,
            devices: devices.collect(),
            admins: auth::admin_tokens(txn)?
                .into_iter()
                .map(Into::into)
                .collect(),
        })
    })?;
    dir.orgs.sort_by(|a, b| a.name.cmp(&b.name));
    dir.teams.sort_by(|a, b| a.name.cmp(&b.name));
    dir.staff.sort_by(|a, b| a.name.cmp(&b.name));
    dir.devices.sort_by_key(|d| d.created_ms);
    dir.admins.sort_by_key(|a| a.created_ms);
    Ok(dir)
}

/// A team as a case shows it: its id and name (empty when the team is gone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamName {
    pub team_id: TeamId,
    pub name: String,
}

/// One document of a case as `case show` shows it: never content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocSummary {
    pub doc_id: DocId,
    pub kind: DocKind,
    pub created_ms: i64,
    /// A restricted document's access list.
    pub access_teams: Option<Vec<TeamName>>,
    /// Its controller: the organisation whose staff created it.
    #[serde(default)]
    pub owner_org: Option<OrgId>,
    /// A restricted section whose existence case staff off its list are told of.
    #[serde(default)]
    pub sealed: bool,
}

/// A case's teams and documents, in the order created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseSummary {
    pub case_id: CaseId,
    pub owner_org: OrgId,
    pub teams: Vec<TeamName>,
    pub docs: Vec<DocSummary>,
    /// The person's objection to sharing between controllers, with any override.
    #[serde(default)]
    pub objection: Option<crate::controllers::Objection>,
    /// The record's retention (class, closure, holds, approval, disposal).
    #[serde(default)]
    pub retention: Option<crate::retention::Retention>,
}

fn team_name(txn: &mut dyn Txn, team_id: TeamId) -> Result<TeamName, StoreError> {
    let name = txn.team(team_id)?.map(|t| t.name).unwrap_or_default();
    Ok(TeamName { team_id, name })
}

/// The teams and documents of `case` (kinds and access lists; never content).
pub fn case_summary(store: &dyn Store, case: CaseId) -> Result<CaseSummary, AdminError> {
    let summary = read(store, |txn| {
        let Some(rec) = txn.case(case)? else {
            return Ok(None);
        };
        let teams = rec
            .teams
            .iter()
            .map(|t| team_name(txn, *t))
            .collect::<Result<_, _>>()?;
        let mut docs = Vec::new();
        for id in txn.docs_of_case(case)? {
            let Some(d) = txn.doc(id)? else { continue };
            let access_teams = match &d.header.access_teams {
                Some(list) => Some(
                    list.iter()
                        .map(|t| team_name(txn, *t))
                        .collect::<Result<_, _>>()?,
                ),
                None => None,
            };
            docs.push(DocSummary {
                doc_id: id,
                kind: d.header.kind,
                created_ms: d.header.created_ms,
                access_teams,
                owner_org: Some(d.header.owner_org),
                sealed: d.header.sealed,
            });
        }
        docs.sort_by_key(|d| (d.created_ms, d.doc_id.to_string()));
        let objection = crate::controllers::current(txn)?
            .objections
            .into_iter()
            .find(|o| o.case_id == case);
        Ok(Some(CaseSummary {
            case_id: case,
            owner_org: rec.owner_org,
            teams,
            docs,
            objection,
            retention: crate::retention::stored(txn, case)?,
        }))
    })?;
    summary.ok_or(AdminError::NoSuchCase(case))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{add_org, add_staff, add_team};

    #[test]
    fn staff_are_found_by_id_or_exact_name_and_need_known_teams() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        add_org(&*store, "Council").unwrap();
        assert!(matches!(
            add_org(&*store, "Council"),
            Err(AdminError::OrgExists(_))
        ));
        add_team(&*store, "Council", "North").unwrap();
        assert!(matches!(
            add_staff(&*store, "A B", "nurse", "Council", &["South".into()]),
            Err(AdminError::NoSuchTeam { .. })
        ));
        let s = add_staff(&*store, "A B", "nurse", "Council", &["North".into()]).unwrap();
        assert_eq!(find_staff(&*store, "A B").unwrap(), s);
        assert_eq!(find_staff(&*store, &s.staff_id.to_string()).unwrap(), s);
        add_staff(&*store, "A B", "gp", "Council", &["North".into()]).unwrap();
        assert!(matches!(
            find_staff(&*store, "A B"),
            Err(AdminError::AmbiguousStaff { count: 2, .. })
        ));
    }

    #[test]
    fn every_act_is_audited_with_who_did_it_and_a_refused_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        let via = By::Staff {
            staff_id: StaffId::new_random(),
            device_id: DeviceId::new_random(),
        };
        add_org(&*store, "Council").unwrap();
        add_team(&*store, "Council", "North").unwrap();
        let org = add_org(&*store, "Trust").unwrap();
        let team = admin_team(&*store, via, &org);
        assert!(matches!(
            add_team(&*store, "Trust", "Ward 7"),
            Err(AdminError::TeamExists { .. })
        ));
        let entries = crate::audit::entries(&*store, None).unwrap();
        assert_eq!(entries.len(), 4, "the refused act wrote nothing");
        assert!(entries[..3]
            .iter()
            .all(|e| e.details["by"] == json!({"via": "cli"})));
        let last = &entries[3].details;
        assert_eq!(last["action"], "team_add");
        assert_eq!(last["team_id"], json!(team.team_id));
        assert_eq!(last["by"]["via"], "staff");
        let dir = directory(&*store).unwrap();
        assert_eq!(dir.teams.len(), 2);
    }

    fn admin_team(store: &dyn Store, by: By, org: &Org) -> Team {
        super::add_team(store, by, &org.name, "Ward 7", 5).unwrap()
    }

    #[test]
    fn two_admins_adding_the_same_name_at_once_add_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: std::sync::Arc<dyn Store> = crate::store::sled::open(dir.path()).unwrap();
        for round in 0..20 {
            let name = format!("Council {round}");
            let added: Vec<bool> = std::thread::scope(|s| {
                let tries: Vec<_> = (0..4)
                    .map(|_| s.spawn(|| super::add_org(&*store, By::Cli, &name, 0).is_ok()))
                    .collect();
                tries.into_iter().map(|t| t.join().unwrap()).collect()
            });
            assert_eq!(added.iter().filter(|a| **a).count(), 1, "{name}");
        }
        let orgs = directory(&*store).unwrap().orgs;
        assert_eq!(orgs.len(), 20);
    }
}
