//! Sealed sections as their stubs: what a member of staff on a case who is not on a sealed
//! section's access list is told of it (docs/design.md, "Access"): that it exists, its kind,
//! when it was created and whom to ask (its creator, by name, role and the team of theirs that
//! holds it). Nothing of its content, not even its size: a stub is built from the server-side
//! header and the directory alone. [`crate::access`] decides who is told; the sync response
//! carries the stubs ([`crate::sync`]).

use crate::model::{DocHeader, Staff};
use crate::store::{StoreError, Txn};
use casenote_protocol::limits;
use casenote_protocol::wire::{AskWhom, SealedStub};
use casenote_protocol::DocId;

/// The stubs of `docs` (sealed sections, in order, each once), at most
/// [`limits::SYNC_SEALED_STUBS_MAX`]; a document gone since it was listed is left out.
pub fn stubs(txn: &mut dyn Txn, docs: &[DocId]) -> Result<Vec<SealedStub>, StoreError> {
    let mut out: Vec<SealedStub> = Vec::new();
    for doc in docs {
        if out.len() >= limits::SYNC_SEALED_STUBS_MAX {
            tracing::warn!(
                stubs = docs.len(),
                max = limits::SYNC_SEALED_STUBS_MAX,
                "more sealed sections than one response carries; the rest at a later reconciliation"
            );
            break;
        }
        if out.iter().any(|s| s.doc_id == *doc) {
            continue;
        }
        let Some(rec) = txn.doc(*doc)? else {
            continue;
        };
        if !rec.header.sealed {
            continue;
        }
        let ask = ask_whom(txn, &rec.header)?;
        out.push(SealedStub {
            doc_id: *doc,
            case_id: rec.header.case_id,
            kind: rec.header.kind,
            created_ms: rec.header.created_ms,
            ask,
        });
    }
    Ok(out)
}

/// Whom to ask about a sealed section: its creator, with the first of their teams on its access
/// list (or their first team, if they have left every team on it).
pub fn ask_whom(txn: &mut dyn Txn, header: &DocHeader) -> Result<AskWhom, StoreError> {
    let staff: Option<Staff> = txn.staff(header.created_by)?;
    let Some(staff) = staff else {
        return Ok(AskWhom {
            staff_id: header.created_by,
            name: String::new(),
            role: String::new(),
            team: String::new(),
        });
    };
    let access = header.access_teams.as_deref().unwrap_or_default();
    let team_id = staff
        .teams
        .iter()
        .find(|t| access.contains(t))
        .or(staff.teams.first())
        .copied();
    let team = match team_id {
        Some(t) => txn.team(t)?.map(|t| t.name).unwrap_or_default(),
        None => String::new(),
    };
    Ok(AskWhom {
        staff_id: staff.staff_id,
        name: staff.name,
        role: staff.role.as_str().to_string(),
        team,
    })
}
