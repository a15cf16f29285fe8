//! The device API of restricted sections: creating one with its access list, sealed or hidden;
//! the stubs of sealed sections this device may not read (what `show` says of them); and
//! break-glass, the online-only request for urgent access to a sealed section.
//!
//! A new section's access list is stored before the section itself, under [`store::ACCESS`], and
//! sent with its pushes until the server acknowledges the section: a crash in between leaves a
//! list for nothing, never a section pushed without its list (which the server would make
//! hidden, restricted to the creator's teams). The server checks the list again (each team known
//! and on the case) and refuses the section, with the reason, if it does not hold.

use super::Device;
use crate::engine::Plan;
use crate::error::Error;
use crate::store::{self, Header, Writes};
use crate::transport::TransportError;
use casenote_protocol::record::{self, statutory};
use casenote_protocol::wire::{
    BreakGlassCategory, BreakGlassGranted, BreakGlassRequest, NewRestricted, SealedStub,
};
use casenote_protocol::{limits, CaseId, DocId, DocKind, TeamId};
use std::collections::HashSet;

/// Who may read a new restricted section, and whether staff on the case who may not are told
/// it exists (sealed) or not (hidden).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessList {
    pub teams: Vec<TeamId>,
    pub sealed: bool,
}

impl Device {
    /// Checks `access` as far as the device can: some teams, not too many, the creator's own
    /// among them. Whether each is on the case the server checks.
    fn check_access(&self, access: &AccessList) -> Result<(), Error> {
        if access.teams.is_empty() {
            return Err(Error::Invalid(
                "an access list names at least one team (--team)".into(),
            ));
        }
        if access.teams.len() > limits::RESTRICTED_ACCESS_TEAMS_MAX {
            return Err(Error::Invalid(format!(
                "an access list names at most {} teams; this one names {}",
                limits::RESTRICTED_ACCESS_TEAMS_MAX,
                access.teams.len()
            )));
        }
        let mine = self.whoami()?.teams;
        if !access
            .teams
            .iter()
            .any(|t| mine.iter().any(|m| m.team_id == *t))
        {
            let names: Vec<String> = mine
                .iter()
                .map(|m| format!("{} ({})", m.name, m.team_id))
                .collect();
            return Err(Error::Invalid(format!(
                "the access list must keep one of your own teams, or you could not read what you \
                 write: yours are {}",
                names.join(", ")
            )));
        }
        Ok(())
    }

    /// Creates a restricted section of `kind` on `case` with `init`, under `access` (or, without
    /// one, hidden and restricted to the creator's teams by the server).
    fn restricted_create(
        &self,
        case: CaseId,
        kind: DocKind,
        access: Option<&AccessList>,
        init: impl FnOnce(&mut automerge::AutoCommit) -> Result<(), record::RecordError>,
    ) -> Result<DocId, Error> {
        self.require_case(case)?;
        let id = DocId::new_random();
        if let Some(access) = access {
            self.check_access(access)?;
            let new = NewRestricted {
                doc_id: id,
                teams: access.teams.clone(),
                sealed: access.sealed,
            };
            let mut w = Writes::default();
            w.put(
                store::key(store::ACCESS, id),
                serde_json::to_vec(&new).expect("plain data serialises"),
            );
            self.store.commit(w)?;
        }
        let header = Header {
            case_id: case,
            kind,
        };
        self.edit(id, header, None, |d| Ok(init(d)?))?;
        Ok(id)
    }

    /// Creates a restricted section (a title and its text) on a case; returns its id.
    pub fn restricted_new(
        &self,
        case: CaseId,
        title: &str,
        text: &str,
        access: Option<&AccessList>,
    ) -> Result<DocId, Error> {
        self.restricted_create(case, DocKind::Restricted, access, |d| {
            record::init_restricted(d, case, title, text)
        })
    }

    /// Opens a safeguarding enquiry with its concern under `access` (see
    /// [`Device::safeguarding_new`] for the default list).
    pub fn safeguarding_new_with(
        &self,
        case: CaseId,
        concern: &str,
        access: Option<&AccessList>,
    ) -> Result<DocId, Error> {
        self.restricted_create(case, DocKind::Safeguarding, access, |d| {
            statutory::init_safeguarding(d, case, concern)
        })
    }

    /// The access list stored for a new section `doc`, if it has one the server has not taken.
    pub(super) fn access_of(&self, doc: DocId) -> Result<Option<NewRestricted>, Error> {
        Ok(self
            .store
            .get(store::ACCESS, doc)?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// The sealed sections of `case` this device is told of and does not hold.
    pub fn sealed_of(&self, case: CaseId) -> Result<Vec<SealedStub>, Error> {
        let mut out = Vec::new();
        for (doc, v) in self.store.ids_with(store::SEALED)? {
            let Ok(stub) = serde_json::from_slice::<SealedStub>(&v) else {
                continue;
            };
            if stub.case_id == case && self.store.header(doc)?.is_none() {
                out.push(stub);
            }
        }
        out.sort_by_key(|s| (s.created_ms, s.doc_id));
        Ok(out)
    }

    /// Adds to `w` what an answer says of sealed sections: the stubs of a case it evicts go, a
    /// section it hands over loses its stub, and the stubs it carries are kept.
    pub(super) fn stage_sealed(&self, w: &mut Writes, plan: &Plan) -> Result<(), Error> {
        let evicted: HashSet<DocId> = plan.evict.iter().copied().collect();
        let received: HashSet<DocId> = plan
            .docs
            .iter()
            .filter(|(_, u)| u.header.is_some())
            .map(|(d, _)| *d)
            .collect();
        for (doc, v) in self.store.ids_with(store::SEALED)? {
            let case_gone = serde_json::from_slice::<SealedStub>(&v)
                .map(|s| evicted.contains(&DocId(s.case_id.0)))
                .unwrap_or(true);
            if case_gone || received.contains(&doc) {
                w.remove(store::key(store::SEALED, doc));
            }
        }
        for stub in &plan.sealed {
            if received.contains(&stub.doc_id) {
                continue;
            }
            w.put(
                store::key(store::SEALED, stub.doc_id),
                serde_json::to_vec(stub).expect("plain data serialises"),
            );
        }
        Ok(())
    }

    /// Asks the server, now, for break-glass access to the sealed section `doc`: `category` from
    /// the fixed list and `reason` in a few sentences. Never queued: offline it is refused with
    /// [`Error::BreakGlassOffline`]. The section arrives at the next sync.
    pub fn break_glass(
        &self,
        doc: DocId,
        category: BreakGlassCategory,
        reason: &str,
    ) -> Result<BreakGlassGranted, Error> {
        self.whoami()?;
        if reason.trim().is_empty() {
            return Err(Error::Invalid("say why it cannot wait (--reason)".into()));
        }
        if reason.len() > limits::BREAK_GLASS_REASON_BYTES_MAX {
            return Err(Error::Invalid(format!(
                "the reason is {} bytes; the limit is {}",
                reason.len(),
                limits::BREAK_GLASS_REASON_BYTES_MAX
            )));
        }
        let req = BreakGlassRequest {
            doc_id: doc,
            category,
            reason: reason.to_string(),
        };
        match self.http_transport()?.break_glass(&req) {
            Ok(granted) => Ok(granted),
            Err(TransportError::Unreachable { detail, .. }) => {
                Err(Error::BreakGlassOffline(detail))
            }
            Err(e) => Err(e.into()),
        }
    }
}
