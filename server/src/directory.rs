//! The directory: organisations, teams, staff with roles, and enrolled devices.
//!
//! It lives on the server only; it is what access decisions are made from. Names are unique where
//! people look things up by name (an org name; a team name within its org). These functions are
//! used by the admin CLI and the demo loader; the HTTP side only reads.

use crate::store::{Store, StoreError};
use casenote_protocol::{OrgId, StaffId, TeamId};

pub use crate::model::{Device, Org, Role, Staff, Team, UnknownRole};

/// Why a directory change was refused.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(transparent)]
    UnknownRole(#[from] UnknownRole),
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
    #[error("staff member {0} has been revoked; enrol no devices for them")]
    StaffRevoked(StaffId),
    #[error("no device with id {0:?}; see `admin list`")]
    NoSuchDevice(String),
    #[error("a name must not be empty or longer than {max} bytes")]
    BadName { max: usize },
    #[error("a member of staff needs at least one team (--team)")]
    NoTeams,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn check_name(name: &str) -> Result<&str, DirectoryError> {
    let max = casenote_protocol::limits::SHORT_TEXT_BYTES_MAX;
    let name = name.trim();
    if name.is_empty() || name.len() > max {
        Err(DirectoryError::BadName { max })
    } else {
        Ok(name)
    }
}

/// Validates a role name.
pub fn check_role(role: &str) -> Result<Role, DirectoryError> {
    Ok(role.parse::<Role>()?)
}

/// The organisation with this exact name.
pub fn find_org(store: &dyn Store, name: &str) -> Result<Option<Org>, DirectoryError> {
    Ok(store.list_orgs()?.into_iter().find(|o| o.name == name))
}

/// The team with this exact name in this organisation.
pub fn find_team(
    store: &dyn Store,
    org: OrgId,
    name: &str,
) -> Result<Option<Team>, DirectoryError> {
    Ok(store
        .list_teams()?
        .into_iter()
        .find(|t| t.org_id == org && t.name == name))
}

/// Adds an organisation.
pub fn add_org(store: &dyn Store, name: &str) -> Result<Org, DirectoryError> {
    let name = check_name(name)?;
    if find_org(store, name)?.is_some() {
        return Err(DirectoryError::OrgExists(name.into()));
    }
    let org = Org {
        org_id: OrgId::new_random(),
        name: name.into(),
    };
    store.put_org(&org)?;
    Ok(org)
}

/// Adds a team to the organisation named `org_name`.
pub fn add_team(store: &dyn Store, org_name: &str, name: &str) -> Result<Team, DirectoryError> {
    let name = check_name(name)?;
    let org =
        find_org(store, org_name)?.ok_or_else(|| DirectoryError::NoSuchOrg(org_name.into()))?;
    if find_team(store, org.org_id, name)?.is_some() {
        return Err(DirectoryError::TeamExists {
            org: org.name,
            team: name.into(),
        });
    }
    let team = Team {
        team_id: TeamId::new_random(),
        org_id: org.org_id,
        name: name.into(),
    };
    store.put_team(&team)?;
    Ok(team)
}

/// Adds a member of staff to teams of the organisation named `org_name`.
pub fn add_staff(
    store: &dyn Store,
    name: &str,
    role: &str,
    org_name: &str,
    team_names: &[String],
) -> Result<Staff, DirectoryError> {
    let name = check_name(name)?;
    let role = check_role(role)?;
    let org =
        find_org(store, org_name)?.ok_or_else(|| DirectoryError::NoSuchOrg(org_name.into()))?;
    if team_names.is_empty() {
        return Err(DirectoryError::NoTeams);
    }
    let mut teams = Vec::new();
    for t in team_names {
        let team = find_team(store, org.org_id, t)?.ok_or_else(|| DirectoryError::NoSuchTeam {
            org: org.name.clone(),
            team: t.clone(),
        })?;
        if !teams.contains(&team.team_id) {
            teams.push(team.team_id);
        }
    }
    let staff = Staff {
        staff_id: StaffId::new_random(),
        name: name.into(),
        role,
        org_id: org.org_id,
        teams,
        revoked: false,
    };
    store.put_staff(&staff)?;
    Ok(staff)
}

/// The team with this id, or else with exactly this name in any organisation (which must be
/// unique; use the id when two organisations have a team of the same name).
pub fn find_team_any(store: &dyn Store, id_or_name: &str) -> Result<Team, DirectoryError> {
    if let Ok(id) = id_or_name.parse::<TeamId>() {
        if let Some(t) = store.get_team(id)? {
            return Ok(t);
        }
    }
    let mut found: Vec<Team> = store
        .list_teams()?
        .into_iter()
        .filter(|t| t.name == id_or_name)
        .collect();
    match found.len() {
        0 => Err(DirectoryError::NoSuchTeamAnywhere(id_or_name.into())),
        1 => Ok(found.remove(0)),
        count => Err(DirectoryError::AmbiguousTeam {
            name: id_or_name.into(),
            count,
        }),
    }
}

/// The member of staff with this id, or else with exactly this name (which must be unique).
pub fn find_staff(store: &dyn Store, id_or_name: &str) -> Result<Staff, DirectoryError> {
    if let Ok(id) = id_or_name.parse::<StaffId>() {
        if let Some(s) = store.get_staff(id)? {
            return Ok(s);
        }
    }
    let mut found: Vec<Staff> = store
        .list_staff()?
        .into_iter()
        .filter(|s| s.name == id_or_name)
        .collect();
    match found.len() {
        0 => Err(DirectoryError::NoSuchStaff(id_or_name.into())),
        1 => Ok(found.remove(0)),
        count => Err(DirectoryError::AmbiguousStaff {
            name: id_or_name.into(),
            count,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_role_is_refused_with_the_list_of_valid_roles() {
        let err = check_role("wizard").unwrap_err().to_string();
        assert!(err.contains("wizard"));
        assert!(err.contains("social_worker") && err.contains("family_support_worker"));
    }

    #[test]
    fn staff_are_found_by_id_or_exact_name_and_need_known_teams() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        add_org(&*store, "Council").unwrap();
        assert!(matches!(
            add_org(&*store, "Council"),
            Err(DirectoryError::OrgExists(_))
        ));
        add_team(&*store, "Council", "North").unwrap();
        assert!(matches!(
            add_staff(&*store, "A B", "nurse", "Council", &["South".into()]),
            Err(DirectoryError::NoSuchTeam { .. })
        ));
        let s = add_staff(&*store, "A B", "nurse", "Council", &["North".into()]).unwrap();
        assert_eq!(find_staff(&*store, "A B").unwrap(), s);
        assert_eq!(find_staff(&*store, &s.staff_id.to_string()).unwrap(), s);
        add_staff(&*store, "A B", "gp", "Council", &["North".into()]).unwrap();
        assert!(matches!(
            find_staff(&*store, "A B"),
            Err(DirectoryError::AmbiguousStaff { count: 2, .. })
        ));
    }
}
