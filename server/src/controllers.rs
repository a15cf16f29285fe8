//! Data controllers, data-sharing agreements and objections to sharing (issue 16): what decides
//! whether a member of one organisation may hold a document another organisation controls.
//!
//! A document's controller is its header's `owner_org`, the organisation of the member of staff
//! who created it ([`crate::sync::push`]). A member of staff may hold a document of another
//! controller only when the two organisations have a data-sharing agreement ([`Agreement`]), and
//! the person's case carries no objection to sharing ([`Objection`]) that stands without an
//! override ([`Override`]: safeguarding, vital interests, a legal duty, a court order). Documents
//! of one's own organisation are never affected. [`crate::access::may_read`] asks [`may_share`]
//! alongside its team rules; everything else here is the state that answer reads.
//!
//! The state is one meta value ([`META_KEY`], JSON [`Sharing`]), moved by `migrate` and backups
//! with the other meta values, bounded by `limits::AGREEMENTS_MAX` and `limits::OBJECTIONS_MAX`.
//! A member of staff's view of it ([`Shares`]: the organisations their own has an agreement with,
//! the cases whose sharing stands objected to) is loaded with their principal at authentication
//! ([`crate::auth`]), so every request decides from the state of its own moment, and a change
//! (written by [`crate::admin`] with an access epoch bump) reaches each device at its next sync.
//!
//! Stores written before agreements existed have no such value: their organisations all shared,
//! and they keep doing so. A store without the value reads as "every pair of its organisations
//! agreed" ([`current`]); the first open by this version records exactly that, explicitly and
//! audited (action `agreements_adopted`, [`adopt_at_open`]), and the first organisation added to
//! a store without the value records it too ([`ensure_recorded`]), so a new store starts with no
//! agreement and an upgraded one loses nothing.
//!
//! It may use the model and the store; it writes only through a caller's transaction.

use crate::auth::Principal;
use crate::model::{AuditKind, AuditRecord, By, DocHeader, Org};
use crate::store::{write, Store, StoreError, Txn};
use casenote_protocol::{CaseId, OrgId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The meta key of the agreements and objections.
pub const META_KEY: &str = "controllers";

/// Every agreement in force and every objection recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sharing {
    #[serde(default)]
    pub agreements: Vec<Agreement>,
    #[serde(default)]
    pub objections: Vec<Objection>,
}

/// A data-sharing agreement in force between two organisations (either may read the other's
/// documents of the cases their teams are on). Ending one removes it; the audit chain keeps its
/// history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    pub agreement_id: uuid::Uuid,
    /// The two organisations, the lesser id first.
    pub orgs: [OrgId; 2],
    /// What the sharing is for, as the admin wrote it (kept here; never audited or logged).
    #[serde(default)]
    pub purpose: Option<String>,
    pub since_ms: i64,
    pub by: By,
}

impl Agreement {
    /// Whether this agreement is between `a` and `b`.
    pub fn covers(&self, a: OrgId, b: OrgId) -> bool {
        self.orgs == pair(a, b)
    }
}

/// The two organisations of an agreement in its stored order.
pub fn pair(a: OrgId, b: OrgId) -> [OrgId; 2] {
    if a.0 <= b.0 {
        [a, b]
    } else {
        [b, a]
    }
}

/// Who raised an objection to sharing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ObjectionReason {
    /// The person themself.
    Person,
    /// Someone who may act for them: an attorney or deputy, a parent with parental
    /// responsibility.
    Representative,
}

/// Why an objection is set aside: the lawful grounds to share regardless.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OverrideReason {
    /// A safeguarding duty (Care Act 2014 s42, Children Act 1989 s47).
    Safeguarding,
    /// To protect someone's life (UK GDPR article 6(1)(d)).
    VitalInterests,
    /// A duty in law to share.
    LegalDuty,
    /// A court has ordered it.
    CourtOrder,
}

/// A person's objection to sharing their record between controllers: while it stands (no
/// override), each organisation's staff hold only their own organisation's documents of the case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Objection {
    pub case_id: CaseId,
    pub reason_category: ObjectionReason,
    pub recorded_ms: i64,
    pub by: By,
    /// An override recorded with its reason: sharing goes on under the agreements.
    #[serde(default, rename = "override")]
    pub overridden: Option<Override>,
}

/// An override of an objection, with its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub reason_category: OverrideReason,
    pub recorded_ms: i64,
    pub by: By,
}

/// The stored value, `None` in a store never opened by a version with agreements.
pub fn stored(txn: &mut dyn Txn) -> Result<Option<Sharing>, StoreError> {
    txn.meta(META_KEY)?.as_deref().map(decode).transpose()
}

/// The stored value's bytes as [`Sharing`].
pub fn decode(bytes: &[u8]) -> Result<Sharing, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("{META_KEY} does not decode: {e}")))
}

/// The state in force: the stored value, or for a store without one, every pair of its
/// organisations agreed (what such a store always did).
pub fn current(txn: &mut dyn Txn) -> Result<Sharing, StoreError> {
    let stored = txn.meta(META_KEY)?;
    current_of(txn, stored)
}

/// [`current`], of the value of [`META_KEY`] read already (`stored`).
pub fn current_of(txn: &mut dyn Txn, stored: Option<Vec<u8>>) -> Result<Sharing, StoreError> {
    match stored {
        Some(bytes) => decode(&bytes),
        None => Ok(adopted(&txn.orgs()?, 0)),
    }
}

/// Stores `sharing`.
pub fn put(txn: &mut dyn Txn, sharing: &Sharing) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(sharing).expect("plain data serialises");
    txn.put_meta(META_KEY, &bytes)
}

/// An agreement for every pair of `orgs`, as at `now_ms`.
fn adopted(orgs: &[Org], now_ms: i64) -> Sharing {
    let mut agreements = Vec::new();
    for (i, a) in orgs.iter().enumerate() {
        for b in &orgs[i + 1..] {
            agreements.push(Agreement {
                agreement_id: uuid::Uuid::new_v4(),
                orgs: pair(a.org_id, b.org_id),
                purpose: Some("in force before agreements were recorded".into()),
                since_ms: now_ms,
                by: By::Cli,
            });
        }
    }
    Sharing {
        agreements,
        objections: Vec::new(),
    }
}

/// In the caller's transaction: records the state in force ([`current`]) if the store has none
/// yet, audited when it records any agreement. Whether it recorded anything.
pub fn ensure_recorded(txn: &mut dyn Txn, now_ms: i64) -> Result<bool, StoreError> {
    if stored(txn)?.is_some() {
        return Ok(false);
    }
    let sharing = adopted(&txn.orgs()?, now_ms);
    put(txn, &sharing)?;
    if !sharing.agreements.is_empty() {
        let ids: Vec<_> = sharing.agreements.iter().map(|a| a.agreement_id).collect();
        let details = json!({"action": "agreements_adopted", "agreements": ids});
        txn.audit_append(AuditRecord::new(AuditKind::Admin, now_ms, details).by(By::Cli))?;
    }
    Ok(true)
}

/// At a store's open by the command line or the server: a store with organisations and no
/// recorded state (written before agreements existed) records every pair of its organisations as
/// agreed, audited. A store without organisations is left alone (a restore into it must find it
/// empty); its first organisation records the state ([`crate::admin::add_org`]). Returns how many
/// agreements were recorded.
pub fn adopt_at_open(store: &dyn Store, now_ms: i64) -> Result<usize, StoreError> {
    let mut recorded = 0;
    write(store, |txn| {
        recorded = 0;
        if stored(txn)?.is_some() || txn.orgs()?.is_empty() {
            return Ok(());
        }
        ensure_recorded(txn, now_ms)?;
        recorded = stored(txn)?.map(|s| s.agreements.len()).unwrap_or(0);
        Ok(())
    })?;
    if recorded > 0 {
        store.flush()?;
    }
    Ok(recorded)
}

/// One member of staff's view of the sharing state: the organisations theirs has an agreement
/// with, and the cases whose sharing stands objected to (no override).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shares {
    pub agreed: BTreeSet<OrgId>,
    pub objected: BTreeSet<CaseId>,
}

/// The view of a member of staff of organisation `org`.
pub fn shares_of(txn: &mut dyn Txn, org: OrgId) -> Result<Arc<Shares>, StoreError> {
    Ok(shares_in(&current(txn)?, org))
}

/// What `org` may read of other controllers' documents under `sharing`.
pub fn shares_in(sharing: &Sharing, org: OrgId) -> Arc<Shares> {
    let agreed = sharing
        .agreements
        .iter()
        .filter(|a| a.orgs.contains(&org))
        .flat_map(|a| a.orgs)
        .filter(|o| *o != org)
        .collect();
    let objected = sharing
        .objections
        .iter()
        .filter(|o| o.overridden.is_none())
        .map(|o| o.case_id)
        .collect();
    Arc::new(Shares { agreed, objected })
}

/// Whether `who` may hold the document with `header` as far as controllers go (`None`: a
/// document not yet created, which its creator's organisation will control): always when their
/// organisation controls it; else only under an agreement between the two organisations and
/// without a standing objection on its case.
pub fn may_share(who: &Principal, header: Option<&DocHeader>) -> bool {
    let Some(h) = header else { return true };
    h.owner_org == who.staff.org_id
        || (who.shares.agreed.contains(&h.owner_org) && !who.shares.objected.contains(&h.case_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::read;
    use crate::testkit::add_org;

    fn org(name: &str) -> Org {
        Org {
            org_id: OrgId::new_random(),
            name: name.into(),
        }
    }

    #[test]
    fn a_store_written_before_agreements_keeps_sharing_and_records_it_once_audited() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        // As an older version wrote it: organisations, no agreements value.
        let orgs = [org("Council"), org("Trust"), org("Hospice")];
        write(&*store, |t| orgs.iter().try_for_each(|o| t.put_org(o))).unwrap();
        let view = read(&*store, |t| shares_of(t, orgs[0].org_id)).unwrap();
        assert_eq!(
            view.agreed.len(),
            2,
            "before the open, it reads as all agreed"
        );

        assert_eq!(adopt_at_open(&*store, 7).unwrap(), 3);
        assert_eq!(adopt_at_open(&*store, 8).unwrap(), 0, "once");
        let s = read(&*store, stored).unwrap().unwrap();
        assert_eq!(s.agreements.len(), 3);
        for (i, a) in orgs.iter().enumerate() {
            for b in &orgs[i + 1..] {
                assert!(s.agreements.iter().any(|g| g.covers(b.org_id, a.org_id)));
            }
        }
        let entries = crate::audit::entries(&*store, None).unwrap();
        let adopted: Vec<_> = entries
            .iter()
            .filter(|e| e.details["action"] == "agreements_adopted")
            .collect();
        assert_eq!(adopted.len(), 1);
        assert_eq!(
            adopted[0].details["agreements"].as_array().unwrap().len(),
            3
        );
    }

    #[test]
    fn agreements_move_with_a_store_copied_for_migrate_or_backup() {
        let dir = tempfile::tempdir().unwrap();
        let from = crate::store::sled::open(&dir.path().join("from")).unwrap();
        add_org(&*from, "Council").unwrap();
        add_org(&*from, "Trust").unwrap();
        let orgs = ("Council", "Trust");
        crate::admin::sharing::agreement_add(&*from, By::Cli, orgs, Some("care"), 3).unwrap();
        let to = crate::store::sled::open(&dir.path().join("to")).unwrap();
        crate::store::copy::copy(&*from, &*to).unwrap();
        let (was, now) = (read(&*from, stored).unwrap(), read(&*to, stored).unwrap());
        assert_eq!(was.as_ref().map(|s| s.agreements.len()), Some(1));
        assert_eq!(was, now);
    }

    #[test]
    fn a_new_store_starts_without_agreements_and_an_empty_one_is_left_alone_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        assert_eq!(adopt_at_open(&*store, 1).unwrap(), 0);
        assert!(read(&*store, stored).unwrap().is_none());
        assert!(crate::store::copy::is_empty(&*store).unwrap());
        let council = add_org(&*store, "Council").unwrap();
        add_org(&*store, "Trust").unwrap();
        let s = read(&*store, stored).unwrap().unwrap();
        assert!(s.agreements.is_empty());
        let view = read(&*store, |t| shares_of(t, council.org_id)).unwrap();
        assert!(view.agreed.is_empty());
    }
}
