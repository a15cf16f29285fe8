//! The `casenote-server admin` actions: add orgs, teams and staff, issue and revoke device tokens,
//! revoke staff, change who may see what, list the directory and show a case.
//!
//! Each action works on an open store and returns the text to print, so the binary stays a thin
//! shell and tests can call the actions directly. Nothing here ever prints a token except the one
//! just issued; listings never show tokens or their hashes, and `case show` never shows content.
//!
//! Access changes ([`case_add_team`], [`case_remove_team`], [`staff_add_team`],
//! [`staff_remove_team`], [`restricted_grant`], [`restricted_revoke`]) take ids, are safe to call
//! on the store of a running server, write the change, then bump the access epoch (so every
//! device's next sync is reconciled: evictions and backfill) and audit it as `access_change`.
//! Changing nothing (adding a team already there) is a success that bumps and audits nothing.
//! Every directory action is audited too (`admin`, `enrol`, `token_revoke`, `staff_revoke`).

use crate::audit::{AuditKind, AuditRecord};
use crate::auth;
use crate::directory::{self, DirectoryError};
use crate::store::{Commit, Store, StoreError};
use anyhow::{bail, Context};
use casenote_protocol::{CaseId, DeviceId, DocId, DocKind, StaffId, TeamId};
use serde_json::json;
use std::collections::HashMap;

fn audit_admin(store: &dyn Store, details: serde_json::Value) -> Result<(), DirectoryError> {
    store.audit_append(AuditRecord::new(AuditKind::Admin, crate::now_ms(), details))?;
    Ok(())
}

/// The device name used when `token issue` is given none.
pub const DEFAULT_DEVICE_NAME: &str = "device";

/// `org add`: prints the new org id.
pub fn org_add(store: &dyn Store, name: &str) -> Result<String, DirectoryError> {
    let org = directory::add_org(store, name)?;
    audit_admin(store, json!({"action": "org_add", "org_id": org.org_id}))?;
    Ok(org.org_id.to_string())
}

/// `team add`: prints the new team id.
pub fn team_add(store: &dyn Store, org: &str, name: &str) -> Result<String, DirectoryError> {
    let team = directory::add_team(store, org, name)?;
    audit_admin(
        store,
        json!({"action": "team_add", "team_id": team.team_id, "org_id": team.org_id}),
    )?;
    Ok(team.team_id.to_string())
}

/// `staff add`: prints the new staff id.
pub fn staff_add(
    store: &dyn Store,
    name: &str,
    role: &str,
    org: &str,
    teams: &[String],
) -> Result<String, DirectoryError> {
    let staff = directory::add_staff(store, name, role, org, teams)?;
    store.audit_append(
        AuditRecord::new(
            AuditKind::Admin,
            crate::now_ms(),
            json!({"action": "staff_add", "role": staff.role, "org_id": staff.org_id,
                   "teams": staff.teams}),
        )
        .staff(staff.staff_id),
    )?;
    Ok(staff.staff_id.to_string())
}

/// `token issue`: prints the token alone, or `{"staff_id","device_id","token"}` with `json`.
pub fn token_issue(
    store: &dyn Store,
    staff: &str,
    device_name: Option<&str>,
    json: bool,
    now_ms: i64,
) -> Result<String, DirectoryError> {
    let staff = directory::find_staff(store, staff)?;
    let issued = auth::issue(
        store,
        &staff,
        device_name.unwrap_or(DEFAULT_DEVICE_NAME),
        now_ms,
    )?;
    store.flush()?;
    Ok(if json {
        json!({
            "staff_id": staff.staff_id,
            "device_id": issued.device.device_id,
            "token": issued.token,
        })
        .to_string()
    } else {
        issued.token
    })
}

/// `token revoke`: revokes a device's token.
pub fn token_revoke(store: &dyn Store, device: &str) -> Result<String, DirectoryError> {
    let device = auth::revoke(store, device, crate::now_ms())?;
    store.flush()?;
    Ok(format!("revoked device {}", device.device_id))
}

/// `staff revoke`: revokes a member of staff and every device of theirs; their tokens answer
/// `device_revoked` from now on. Prints what was revoked.
pub fn staff_revoke_cmd(store: &dyn Store, staff: &str) -> anyhow::Result<String> {
    let s = directory::find_staff(store, staff)?;
    let devices = staff_revoke(store, s.staff_id, crate::now_ms())?;
    Ok(format!(
        "revoked staff member {} and {} device(s)",
        s.staff_id,
        devices.len()
    ))
}

/// Revokes a member of staff and all their devices (audited `staff_revoke`); returns the devices.
pub fn staff_revoke(
    store: &dyn Store,
    staff: StaffId,
    now_ms: i64,
) -> anyhow::Result<Vec<DeviceId>> {
    let devices = auth::revoke_staff(store, staff, now_ms)?;
    store.flush()?;
    Ok(devices)
}

fn team_exists(store: &dyn Store, team: TeamId) -> anyhow::Result<()> {
    if store.get_team(team)?.is_none() {
        bail!("no team with id {team}; see `admin list`");
    }
    Ok(())
}

/// Bumps the access epoch, audits the change and makes both durable.
fn access_changed(
    store: &dyn Store,
    now_ms: i64,
    staff: Option<StaffId>,
    details: serde_json::Value,
) -> anyhow::Result<()> {
    let epoch = store.bump_access_epoch()?;
    let mut details = details;
    details["access_epoch"] = json!(epoch);
    let mut record = AuditRecord::new(AuditKind::AccessChange, now_ms, details);
    record.staff_id = staff;
    store.audit_append(record)?;
    store.flush()?;
    Ok(())
}

/// Adds (`add`) or removes a team around the person of a case, under the write lock.
fn case_team(
    store: &dyn Store,
    case: CaseId,
    team: TeamId,
    add: bool,
    now_ms: i64,
) -> anyhow::Result<()> {
    team_exists(store, team)?;
    let mut missing = false;
    let mut changed = false;
    store.write(&mut || {
        let Some(mut rec) = store.get_case(case)? else {
            missing = true;
            return Ok(Commit::default());
        };
        let had = rec.teams.contains(&team);
        changed = had != add;
        if !changed {
            return Ok(Commit::default());
        }
        if add {
            rec.teams.push(team);
        } else {
            rec.teams.retain(|t| *t != team);
        }
        Ok(Commit {
            cases: vec![rec],
            ..Commit::default()
        })
    })?;
    if missing {
        bail!("no case with id {case}");
    }
    if changed {
        let action = if add {
            "case_add_team"
        } else {
            "case_remove_team"
        };
        access_changed(
            store,
            now_ms,
            None,
            json!({"action": action, "case_id": case, "team_id": team}),
        )?;
    }
    Ok(())
}

/// Puts `team` around the person of `case`: its members may now hold the case's documents.
pub fn case_add_team(
    store: &dyn Store,
    case: CaseId,
    team: TeamId,
    now_ms: i64,
) -> anyhow::Result<()> {
    case_team(store, case, team, true, now_ms)
}

/// Takes `team` off `case`: its members' devices are told to delete the case's documents.
pub fn case_remove_team(
    store: &dyn Store,
    case: CaseId,
    team: TeamId,
    now_ms: i64,
) -> anyhow::Result<()> {
    case_team(store, case, team, false, now_ms)
}

fn staff_team(
    store: &dyn Store,
    staff: StaffId,
    team: TeamId,
    add: bool,
    now_ms: i64,
) -> anyhow::Result<()> {
    team_exists(store, team)?;
    let mut s = store
        .get_staff(staff)?
        .with_context(|| format!("no staff member with id {staff}"))?;
    if s.teams.contains(&team) == add {
        return Ok(());
    }
    if add {
        s.teams.push(team);
    } else {
        s.teams.retain(|t| *t != team);
    }
    store.put_staff(&s)?;
    let action = if add {
        "staff_add_team"
    } else {
        "staff_remove_team"
    };
    access_changed(
        store,
        now_ms,
        Some(staff),
        json!({"action": action, "team_id": team}),
    )
}

/// Adds a member of staff to a team.
pub fn staff_add_team(
    store: &dyn Store,
    staff: StaffId,
    team: TeamId,
    now_ms: i64,
) -> anyhow::Result<()> {
    staff_team(store, staff, team, true, now_ms)
}

/// Takes a member of staff off a team.
pub fn staff_remove_team(
    store: &dyn Store,
    staff: StaffId,
    team: TeamId,
    now_ms: i64,
) -> anyhow::Result<()> {
    staff_team(store, staff, team, false, now_ms)
}

fn restricted_access(
    store: &dyn Store,
    doc: DocId,
    team: TeamId,
    grant: bool,
    now_ms: i64,
) -> anyhow::Result<()> {
    team_exists(store, team)?;
    let mut problem: Option<String> = None;
    let mut changed = false;
    store.write(&mut || {
        let Some(mut rec) = store.get_doc(doc)? else {
            problem = Some(format!("no document with id {doc}"));
            return Ok(Commit::default());
        };
        if rec.header.kind != DocKind::Restricted {
            problem = Some(format!(
                "document {doc} is a {}, not restricted: who may see it follows its case's teams",
                rec.header.kind
            ));
            return Ok(Commit::default());
        }
        let list = rec.header.access_teams.get_or_insert_with(Vec::new);
        changed = list.contains(&team) != grant;
        if !changed {
            return Ok(Commit::default());
        }
        if grant {
            list.push(team);
        } else {
            list.retain(|t| *t != team);
        }
        Ok(Commit {
            docs: vec![rec],
            ..Commit::default()
        })
    })?;
    if let Some(p) = problem {
        bail!(p);
    }
    if changed {
        let action = if grant {
            "restricted_grant"
        } else {
            "restricted_revoke"
        };
        access_changed(
            store,
            now_ms,
            None,
            json!({"action": action, "doc_id": doc, "team_id": team}),
        )?;
    }
    Ok(())
}

/// Puts `team` on a restricted document's access list.
pub fn restricted_grant(
    store: &dyn Store,
    doc: DocId,
    team: TeamId,
    now_ms: i64,
) -> anyhow::Result<()> {
    restricted_access(store, doc, team, true, now_ms)
}

/// Takes `team` off a restricted document's access list.
pub fn restricted_revoke(
    store: &dyn Store,
    doc: DocId,
    team: TeamId,
    now_ms: i64,
) -> anyhow::Result<()> {
    restricted_access(store, doc, team, false, now_ms)
}

/// `restored`: run after restoring the data directory from a backup. Gives the store a new log
/// id, so that every device whose cursor and bases count in the lost future is told to reset on
/// its next sync and re-sends everything it holds (the server drops what it already has).
/// Audited (`admin`, action `restored`). Prints the old and new log ids.
pub fn restored(store: &dyn Store, now_ms: i64) -> anyhow::Result<String> {
    let old = store.log_id()?;
    let new = store.new_log_id()?;
    store.audit_append(AuditRecord::new(
        AuditKind::Admin,
        now_ms,
        json!({"action": "restored", "old_log_id": old, "log_id": new}),
    ))?;
    store.flush()?;
    Ok(format!(
        "log id is now {new} (was {old}): every device will reset and re-send what it holds on its next sync"
    ))
}

/// `quarantine list`: the changes refused by the record rules: document, change hash, size,
/// who pushed it, when, and the rule it broke; never content. JSON: an array of `{"doc_id",
/// "hash", "bytes", "reason", "staff_id", "device_id", "at_ms"}`, oldest first.
pub fn quarantine_list(store: &dyn Store, json: bool) -> anyhow::Result<String> {
    let mut entries = store.quarantine_list()?;
    entries.sort_by_key(|e| (e.at_ms, e.doc_id, e.hash));
    let rows: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            json!({
                "doc_id": e.doc_id, "hash": hex::encode(e.hash.0), "bytes": e.bytes.len(),
                "reason": e.reason, "staff_id": e.staff_id, "device_id": e.device_id,
                "at_ms": e.at_ms,
            })
        })
        .collect();
    if json {
        return Ok(serde_json::Value::Array(rows).to_string());
    }
    if rows.is_empty() {
        return Ok("no quarantined changes".into());
    }
    let mut out = format!("{} quarantined change(s):\n", rows.len());
    for e in &entries {
        out.push_str(&format!(
            "  {}  doc {}  change {}  {} bytes  staff {}  device {}\n    {}\n",
            e.at_ms,
            e.doc_id,
            &hex::encode(e.hash.0)[..16],
            e.bytes.len(),
            e.staff_id,
            e.device_id,
            e.reason
        ));
    }
    Ok(out.trim_end().to_string())
}

/// Resolves a team given by id or exact (unique) name.
pub fn resolve_team(store: &dyn Store, team: &str) -> anyhow::Result<TeamId> {
    Ok(directory::find_team_any(store, team)?.team_id)
}

/// Resolves a member of staff given by id or exact (unique) name.
pub fn resolve_staff(store: &dyn Store, staff: &str) -> anyhow::Result<StaffId> {
    Ok(directory::find_staff(store, staff)?.staff_id)
}

/// `case show`: the case's teams and its documents with kind and access list; never content.
/// JSON: `{"case_id","owner_org","teams":[{"team_id","name"}],"docs":[{"doc_id","kind",
/// "created_ms","access_teams":[{"team_id","name"}]|null}]}`.
pub fn case_show(store: &dyn Store, case: CaseId, json: bool) -> anyhow::Result<String> {
    let rec = store
        .get_case(case)?
        .with_context(|| format!("no case with id {case}"))?;
    let team = |id: &TeamId| -> Result<serde_json::Value, StoreError> {
        let name = store.get_team(*id)?.map(|t| t.name).unwrap_or_default();
        Ok(json!({"team_id": id, "name": name}))
    };
    let teams = rec.teams.iter().map(team).collect::<Result<Vec<_>, _>>()?;
    let mut docs = Vec::new();
    for id in store.docs_of_case(case)? {
        let Some(d) = store.get_doc(id)? else {
            continue;
        };
        let access = match &d.header.access_teams {
            Some(list) => Some(list.iter().map(team).collect::<Result<Vec<_>, _>>()?),
            None => None,
        };
        docs.push(json!({
            "doc_id": id, "kind": d.header.kind.as_str(),
            "created_ms": d.header.created_ms, "access_teams": access,
        }));
    }
    docs.sort_by_key(|d| (d["created_ms"].as_i64(), d["doc_id"].to_string()));
    let value = json!({
        "case_id": case, "owner_org": rec.owner_org, "teams": teams, "docs": docs,
    });
    if json {
        return Ok(value.to_string());
    }
    let names = |list: &[serde_json::Value]| {
        list.iter()
            .map(|t| {
                format!(
                    "{} ({})",
                    t["name"].as_str().unwrap_or(""),
                    t["team_id"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = format!("Case {case}\nTeams: {}\nDocuments:\n", names(&teams));
    for d in &docs {
        out.push_str(&format!(
            "  {}  {}",
            d["doc_id"].as_str().unwrap_or(""),
            d["kind"].as_str().unwrap_or("")
        ));
        if let Some(list) = d["access_teams"].as_array() {
            out.push_str(&format!("  access: {}", names(list)));
        }
        out.push('\n');
    }
    Ok(out.trim_end().to_string())
}

/// `list`: orgs, teams, staff and devices, as text or one JSON object.
pub fn list(store: &dyn Store, json: bool) -> Result<String, DirectoryError> {
    let mut orgs = store.list_orgs()?;
    orgs.sort_by(|a, b| a.name.cmp(&b.name));
    let mut teams = store.list_teams()?;
    teams.sort_by(|a, b| a.name.cmp(&b.name));
    let mut staff = store.list_staff()?;
    staff.sort_by(|a, b| a.name.cmp(&b.name));
    let mut devices = store.list_devices()?;
    devices.sort_by_key(|d| d.created_ms);
    let org_name: HashMap<_, _> = orgs.iter().map(|o| (o.org_id, o.name.clone())).collect();
    let team_name: HashMap<_, _> = teams.iter().map(|t| (t.team_id, t.name.clone())).collect();
    let staff_name: HashMap<_, _> = staff.iter().map(|s| (s.staff_id, s.name.clone())).collect();
    let names = |ids: &[casenote_protocol::TeamId]| -> Vec<String> {
        ids.iter()
            .map(|t| team_name.get(t).cloned().unwrap_or_else(|| t.to_string()))
            .collect()
    };
    let org_of = |id| org_name.get(&id).cloned().unwrap_or_default();
    if json {
        let value = json!({
            "orgs": orgs.iter().map(|o| json!({"org_id": o.org_id, "name": o.name})).collect::<Vec<_>>(),
            "teams": teams.iter().map(|t| json!({
                "team_id": t.team_id, "org_id": t.org_id, "org": org_of(t.org_id), "name": t.name,
            })).collect::<Vec<_>>(),
            "staff": staff.iter().map(|s| json!({
                "staff_id": s.staff_id, "name": s.name, "role": s.role, "revoked": s.revoked,
                "org_id": s.org_id, "org": org_of(s.org_id), "teams": names(&s.teams),
            })).collect::<Vec<_>>(),
            "devices": devices.iter().map(|d| json!({
                "device_id": d.device_id, "staff_id": d.staff_id,
                "staff": staff_name.get(&d.staff_id).cloned().unwrap_or_default(),
                "name": d.name, "created_ms": d.created_ms, "revoked": d.revoked,
            })).collect::<Vec<_>>(),
        });
        return Ok(value.to_string());
    }
    let mut out = String::new();
    out.push_str("Organisations:\n");
    for o in &orgs {
        out.push_str(&format!("  {}  {}\n", o.org_id, o.name));
    }
    out.push_str("Teams:\n");
    for t in &teams {
        out.push_str(&format!(
            "  {}  {} ({})\n",
            t.team_id,
            t.name,
            org_of(t.org_id)
        ));
    }
    out.push_str("Staff:\n");
    for s in &staff {
        out.push_str(&format!(
            "  {}  {}, {}, {} [{}]{}\n",
            s.staff_id,
            s.name,
            s.role,
            org_of(s.org_id),
            names(&s.teams).join(", "),
            if s.revoked { " (revoked)" } else { "" }
        ));
    }
    out.push_str("Devices:\n");
    for d in &devices {
        out.push_str(&format!(
            "  {}  {} for {}{}\n",
            d.device_id,
            d.name,
            staff_name.get(&d.staff_id).cloned().unwrap_or_default(),
            if d.revoked { " (revoked)" } else { "" }
        ));
    }
    Ok(out.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_shows_every_device_but_never_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        org_add(&*store, "Council").unwrap();
        team_add(&*store, "Council", "North").unwrap();
        let id = staff_add(
            &*store,
            "Pat Example",
            "nurse",
            "Council",
            &["North".into()],
        )
        .unwrap();
        let token = token_issue(&*store, &id, Some("tablet"), false, 1).unwrap();
        let issued: serde_json::Value =
            serde_json::from_str(&token_issue(&*store, "Pat Example", None, true, 2).unwrap())
                .unwrap();
        let device = issued["device_id"].as_str().unwrap().to_string();
        token_revoke(&*store, &device).unwrap();
        let text = list(&*store, false).unwrap();
        let json = list(&*store, true).unwrap();
        for shown in [&text, &json] {
            assert!(!shown.contains(&token));
            assert!(!shown.contains(issued["token"].as_str().unwrap()));
            assert!(shown.contains("tablet") && shown.contains(&device));
        }
        assert!(text.contains("(revoked)"));
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["devices"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn an_unknown_role_names_the_valid_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        org_add(&*store, "Council").unwrap();
        team_add(&*store, "Council", "North").unwrap();
        let err = staff_add(&*store, "X", "surgeon", "Council", &["North".into()]).unwrap_err();
        assert!(err.to_string().contains("occupational_therapist"));
    }
}
