//! `casenote restricted new`, `safeguarding new --team/--sealed` and `casenote break-glass`:
//! restricted sections with their access lists, and urgent access to a sealed one. Thin calls
//! into client-core ([`casenote_client_core::device`]), which checks what the device can and
//! refuses break-glass offline.

use crate::args::{AccessArgs, RestrictedCmd};
use anyhow::{Context, Result};
use casenote_client_core::device::{AccessList, Device};
use casenote_protocol::wire::BreakGlassCategory;
use casenote_protocol::{DocId, TeamId};

/// The access list `args` names: none when neither --team nor --sealed is given (the server's
/// default, the creator's teams, hidden); teams by id or by the name of one of the user's own.
pub fn access_list(device: &Device, args: &AccessArgs) -> Result<Option<AccessList>> {
    if args.teams.is_empty() && !args.sealed {
        return Ok(None);
    }
    let mine = device.whoami()?.teams;
    let teams: Vec<TeamId> = if args.teams.is_empty() {
        mine.iter().map(|t| t.team_id).collect()
    } else {
        args.teams
            .iter()
            .map(|given| match given.parse::<TeamId>() {
                Ok(id) => Ok(id),
                Err(_) => mine
                    .iter()
                    .find(|t| t.name == *given)
                    .map(|t| t.team_id)
                    .with_context(|| {
                        format!("{given:?} is neither a team id nor the name of one of your teams")
                    }),
            })
            .collect::<Result<_>>()?
    };
    Ok(Some(AccessList {
        teams,
        sealed: args.sealed,
    }))
}

pub fn restricted(device: &Device, cmd: RestrictedCmd) -> Result<()> {
    match cmd {
        RestrictedCmd::New {
            case_id,
            title,
            text,
            access,
        } => {
            let access = access_list(device, &access)?;
            out!(
                "{}",
                device.restricted_new(case_id, &title, &text, access.as_ref())?
            )
        }
    }
    Ok(())
}

pub fn break_glass(
    device: &Device,
    doc: DocId,
    category: BreakGlassCategory,
    reason: &str,
) -> Result<()> {
    let granted = device.break_glass(doc, category, reason)?;
    out!(
        "break-glass access to {} granted (grant {}) until {}: sync to receive it. The IG lead is told and reviews it.",
        granted.doc_id,
        granted.grant_id,
        crate::page::when(granted.expires_ms)
    );
    Ok(())
}
