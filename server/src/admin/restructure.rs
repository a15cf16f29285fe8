//! Restructures: `admin team move --team T --to-org O --records stay|move` moves a team, with
//! every member of staff on it, to another organisation (a trust's mental health social workers
//! going back to the council), in one transaction, audited once with counts and ids only, with
//! the access epoch bumped so every device is reconciled at its next sync.
//!
//! What happens to the records' controller is the admin's explicit choice ([`Records`]):
//! - `stay`: every document keeps its `owner_org`. The moved team now reads the old
//!   organisation's documents only under an agreement between the two ([`crate::controllers`]).
//! - `move`: the documents of the cases the team is on, that a moved member of staff created and
//!   the old organisation controls, get the new organisation as their controller. Documents the
//!   members created on cases the team is not on, and every document of anyone else, stay.
//!
//! A member of staff sits only in teams of their own organisation, so the members move with the
//! team (their `org_id`). A member who is also on other teams of the old organisation is refused,
//! naming them by id, unless `--leave-other-teams` says to take them off those teams in the
//! same move (the lesser surprise: a split of a person's work is a decision, not a side effect).

use super::{access_changed, act, org_named, AdminError};
use crate::model::{By, Team};
use crate::store::Store;
use casenote_protocol::{OrgId, StaffId, TeamId};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What happens to the records' controller when a team moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Records {
    /// Every document keeps its controller.
    Stay,
    /// The team's members' documents of the team's cases go to the new organisation.
    Move,
}

/// A team move to make.
#[derive(Clone, Copy, Debug)]
pub struct Move<'a> {
    pub team: TeamId,
    pub to_org: &'a str,
    pub records: Records,
    /// Take moved members off their other teams of the old organisation instead of refusing.
    pub leave_other_teams: bool,
}

/// A team move made: what moved, counted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    pub team: Team,
    pub from_org: OrgId,
    pub records: Records,
    /// The members of staff who moved with the team.
    pub staff: Vec<StaffId>,
    /// How many of their other team memberships ended (`--leave-other-teams`).
    pub left_teams: usize,
    /// How many documents got the new organisation as their controller (`--records move`).
    pub docs_moved: usize,
}

/// Moves a team as `m` says.
pub fn team_move(store: &dyn Store, by: By, m: Move<'_>, now_ms: i64) -> Result<Moved, AdminError> {
    act(store, |txn| {
        let mut team = txn.team(m.team)?.ok_or(AdminError::NoSuchTeamId(m.team))?;
        let to = org_named(txn, m.to_org)?;
        let from_org = team.org_id;
        if from_org == to.org_id {
            return Err(AdminError::TeamAlreadyInOrg(team.team_id).into());
        }
        if super::find_team(txn, to.org_id, &team.name)?.is_some() {
            let (org, team) = (to.name.clone(), team.name.clone());
            return Err(AdminError::TeamExists { org, team }.into());
        }
        let members: Vec<_> = txn
            .staff_all()?
            .into_iter()
            .filter(|s| s.teams.contains(&team.team_id))
            .collect();
        let elsewhere: Vec<StaffId> = members
            .iter()
            .filter(|s| s.teams.iter().any(|t| *t != team.team_id))
            .map(|s| s.staff_id)
            .collect();
        if !elsewhere.is_empty() && !m.leave_other_teams {
            return Err(AdminError::MembersOnOtherTeams(elsewhere).into());
        }
        let mut left_teams = 0;
        for mut s in members.iter().cloned() {
            left_teams += s.teams.len() - 1;
            s.teams = vec![team.team_id];
            s.org_id = to.org_id;
            txn.put_staff(&s)?;
        }
        team.org_id = to.org_id;
        txn.put_team(&team)?;
        let staff: Vec<StaffId> = members.iter().map(|s| s.staff_id).collect();
        let mut docs_moved = 0;
        if m.records == Records::Move {
            for case in txn.cases_of_team(team.team_id)? {
                for doc in txn.docs_of_case(case)? {
                    let Some(mut rec) = txn.doc(doc)? else {
                        continue;
                    };
                    if rec.header.owner_org == from_org && staff.contains(&rec.header.created_by) {
                        rec.header.owner_org = to.org_id;
                        txn.put_doc(&rec)?;
                        docs_moved += 1;
                    }
                }
            }
        }
        let details = json!({"action": "team_move", "team_id": team.team_id,
            "from_org": from_org, "to_org": to.org_id, "records": m.records,
            "staff": staff.len(), "left_teams": left_teams, "docs_moved": docs_moved});
        access_changed(txn, now_ms, by, None, details)?;
        Ok(Moved {
            team: team.clone(),
            from_org,
            records: m.records,
            staff,
            left_teams,
            docs_moved,
        })
    })
}
