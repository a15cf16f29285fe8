//! The admin acts on controllers ([`crate::controllers`]): data-sharing agreements between two
//! organisations (`admin agreement add|end|list`) and a person's objection to sharing with its
//! override (`admin case object|object-withdraw|override|override-end`).
//!
//! Each is one transaction that reads and rewrites the one stored value, audits the change
//! (`access_change`: ids and categories, never the purpose text) and bumps the access epoch, so
//! every device is reconciled at its next sync: a trust device evicts the council's documents
//! when their agreement ends, and is backfilled when one is made. Changing nothing (an agreement
//! already in force, an objection already recorded) is a success that writes nothing.

use super::{access_changed, act, org_named, AdminError, Refused};
use crate::controllers::{
    self, pair, Agreement, Objection, ObjectionReason, Override, OverrideReason, Sharing,
};
use crate::model::By;
use crate::store::{read, Store, Txn};
use casenote_protocol::{limits, CaseId, OrgId};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// An agreement as listed: with its organisations' names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgreementRow {
    #[serde(flatten)]
    pub agreement: Agreement,
    pub org_names: [String; 2],
}

/// The two organisations named, in an agreement's order, refused when they are one.
fn two_orgs(txn: &mut dyn Txn, (a, b): (&str, &str)) -> Result<[OrgId; 2], Refused> {
    let (a, b) = (org_named(txn, a)?.org_id, org_named(txn, b)?.org_id);
    if a == b {
        return Err(AdminError::SameOrg.into());
    }
    Ok(pair(a, b))
}

/// Records an agreement between the organisations named `orgs`; the agreement in force and
/// whether it is new.
pub fn agreement_add(
    store: &dyn Store,
    by: By,
    orgs: (&str, &str),
    purpose: Option<&str>,
    now_ms: i64,
) -> Result<(Agreement, bool), AdminError> {
    let purpose = match purpose {
        Some(p) => Some(
            super::check_name(p)
                .map_err(|_| AdminError::BadPurpose {
                    max: limits::SHORT_TEXT_BYTES_MAX,
                })?
                .to_string(),
        ),
        None => None,
    };
    act(store, |txn| {
        let ids = two_orgs(txn, orgs)?;
        let mut sharing = controllers::current(txn)?;
        if let Some(a) = sharing.agreements.iter().find(|a| a.orgs == ids) {
            return Ok((a.clone(), false));
        }
        if sharing.agreements.len() >= limits::AGREEMENTS_MAX {
            return Err(AdminError::TooManyAgreements(limits::AGREEMENTS_MAX).into());
        }
        let agreement = Agreement {
            agreement_id: uuid::Uuid::new_v4(),
            orgs: ids,
            purpose: purpose.clone(),
            since_ms: now_ms,
            by,
        };
        sharing.agreements.push(agreement.clone());
        controllers::put(txn, &sharing)?;
        let details = json!({"action": "agreement_add", "agreement_id": agreement.agreement_id,
                             "orgs": ids});
        access_changed(txn, now_ms, by, None, details)?;
        Ok((agreement, true))
    })
}

/// Ends the agreement in force between the organisations named `orgs`; the agreement ended.
pub fn agreement_end(
    store: &dyn Store,
    by: By,
    orgs: (&str, &str),
    now_ms: i64,
) -> Result<Agreement, AdminError> {
    act(store, |txn| {
        let ids = two_orgs(txn, orgs)?;
        let mut sharing = controllers::current(txn)?;
        let Some(at) = sharing.agreements.iter().position(|a| a.orgs == ids) else {
            let (a, b) = (orgs.0.to_string(), orgs.1.to_string());
            return Err(AdminError::NoSuchAgreement { a, b }.into());
        };
        let ended = sharing.agreements.remove(at);
        controllers::put(txn, &sharing)?;
        let details = json!({"action": "agreement_end", "agreement_id": ended.agreement_id,
                             "orgs": ids});
        access_changed(txn, now_ms, by, None, details)?;
        Ok(ended)
    })
}

/// The agreements in force (oldest first, with their organisations' names) and the objections
/// recorded.
pub fn agreements(store: &dyn Store) -> Result<(Vec<AgreementRow>, Vec<Objection>), AdminError> {
    let (sharing, orgs) = read(store, |txn| Ok((controllers::current(txn)?, txn.orgs()?)))?;
    let name = |id: OrgId| {
        orgs.iter()
            .find(|o| o.org_id == id)
            .map(|o| o.name.clone())
            .unwrap_or_default()
    };
    let mut rows: Vec<_> = sharing
        .agreements
        .into_iter()
        .map(|a| AgreementRow {
            org_names: a.orgs.map(name),
            agreement: a,
        })
        .collect();
    rows.sort_by_key(|r| (r.agreement.since_ms, r.agreement.agreement_id));
    let mut objections = sharing.objections;
    objections.sort_by_key(|o| (o.recorded_ms, o.case_id.to_string()));
    Ok((rows, objections))
}

/// What an objection act does to the objection of a case.
#[derive(Clone, Copy, Debug)]
pub enum ObjectionAct {
    Record(ObjectionReason),
    Withdraw,
    Override(OverrideReason),
    EndOverride,
}

impl ObjectionAct {
    fn action(self) -> &'static str {
        match self {
            ObjectionAct::Record(_) => "case_object",
            ObjectionAct::Withdraw => "case_object_withdraw",
            ObjectionAct::Override(_) => "case_override",
            ObjectionAct::EndOverride => "case_override_end",
        }
    }

    /// Applies the act to `sharing`; whether it changed anything.
    fn apply(
        self,
        sharing: &mut Sharing,
        case_id: CaseId,
        (by, now_ms): (By, i64),
    ) -> Result<bool, AdminError> {
        let at = sharing.objections.iter().position(|o| o.case_id == case_id);
        let Some(at) = at else {
            let ObjectionAct::Record(reason_category) = self else {
                return Err(AdminError::NoObjection(case_id));
            };
            if sharing.objections.len() >= limits::OBJECTIONS_MAX {
                return Err(AdminError::TooManyObjections(limits::OBJECTIONS_MAX));
            }
            sharing.objections.push(Objection {
                case_id,
                reason_category,
                recorded_ms: now_ms,
                by,
                overridden: None,
            });
            return Ok(true);
        };
        let objection = &mut sharing.objections[at];
        Ok(match self {
            ObjectionAct::Record(_) => false,
            ObjectionAct::Withdraw => {
                sharing.objections.remove(at);
                true
            }
            ObjectionAct::Override(reason_category) => {
                let was = objection.overridden.map(|o| o.reason_category);
                objection.overridden = Some(Override {
                    reason_category,
                    recorded_ms: now_ms,
                    by,
                });
                was != Some(reason_category)
            }
            ObjectionAct::EndOverride => objection.overridden.take().is_some(),
        })
    }
}

/// Runs `what` on the objection of case `case_id`; the objection as it now stands (`None`: none)
/// and whether anything changed.
pub fn objection(
    store: &dyn Store,
    by: By,
    case_id: CaseId,
    what: ObjectionAct,
    now_ms: i64,
) -> Result<(Option<Objection>, bool), AdminError> {
    act(store, |txn| {
        if txn.case(case_id)?.is_none() {
            return Err(AdminError::NoSuchCase(case_id).into());
        }
        let mut sharing = controllers::current(txn)?;
        let changed = what.apply(&mut sharing, case_id, (by, now_ms))?;
        let now = sharing
            .objections
            .iter()
            .find(|o| o.case_id == case_id)
            .cloned();
        if changed {
            controllers::put(txn, &sharing)?;
            let mut details = json!({"action": what.action(), "case_id": case_id});
            match what {
                ObjectionAct::Record(r) => details["reason_category"] = json!(r),
                ObjectionAct::Override(r) => details["reason_category"] = json!(r),
                _ => {}
            }
            access_changed(txn, now_ms, by, None, details)?;
        }
        Ok((now, changed))
    })
}
