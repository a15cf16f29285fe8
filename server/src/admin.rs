//! The `casenote-server admin` actions: add orgs, teams and staff, issue and revoke device tokens,
//! list the directory.
//!
//! Each action works on an open store and returns the text to print, so the binary stays a thin
//! shell and tests can call the actions directly. Nothing here ever prints a token except the one
//! just issued; listings never show tokens or their hashes.

use crate::auth;
use crate::directory::{self, DirectoryError};
use crate::store::Store;
use serde_json::json;
use std::collections::HashMap;

/// The device name used when `token issue` is given none.
pub const DEFAULT_DEVICE_NAME: &str = "device";

/// `org add`: prints the new org id.
pub fn org_add(store: &dyn Store, name: &str) -> Result<String, DirectoryError> {
    Ok(directory::add_org(store, name)?.org_id.to_string())
}

/// `team add`: prints the new team id.
pub fn team_add(store: &dyn Store, org: &str, name: &str) -> Result<String, DirectoryError> {
    Ok(directory::add_team(store, org, name)?.team_id.to_string())
}

/// `staff add`: prints the new staff id.
pub fn staff_add(
    store: &dyn Store,
    name: &str,
    role: &str,
    org: &str,
    teams: &[String],
) -> Result<String, DirectoryError> {
    Ok(directory::add_staff(store, name, role, org, teams)?
        .staff_id
        .to_string())
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
    let device = auth::revoke(store, device)?;
    store.flush()?;
    Ok(format!("revoked device {}", device.device_id))
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
                "staff_id": s.staff_id, "name": s.name, "role": s.role,
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
            "  {}  {}, {}, {} [{}]\n",
            s.staff_id,
            s.name,
            s.role,
            org_of(s.org_id),
            names(&s.teams).join(", ")
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
        let store = crate::store::open(dir.path()).unwrap();
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
        let store = crate::store::open(dir.path()).unwrap();
        org_add(&*store, "Council").unwrap();
        team_add(&*store, "Council", "North").unwrap();
        let err = staff_add(&*store, "X", "surgeon", "Council", &["North".into()]).unwrap_err();
        assert!(err.to_string().contains("occupational_therapist"));
    }
}
