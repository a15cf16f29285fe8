//! A stored document that no longer loads (its log damaged, or written before the vendored
//! automerge's check refused what it holds) stops only that document: a push to it is refused
//! `internal` for that document, its changes left with the device to send again, and the rest of
//! the push is stored. Before, the whole sync failed (500) and the device could sync nothing.

use crate::auth::Principal;
use crate::model::{CaseRecord, NewChange};
use crate::store::sled::SledStore;
use crate::store::{self, Store};
use crate::testkit;
use automerge::AutoCommit;
use casenote_protocol::record::{self, field};
use casenote_protocol::wire::{DocPush, Hash};
use casenote_protocol::{CaseId, DocId, ErrorCode};
use std::sync::Arc;

struct Desk {
    _dir: tempfile::TempDir,
    store: Arc<SledStore>,
    who: Principal,
    team: casenote_protocol::TeamId,
}

impl Desk {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        let s: &dyn Store = &*store;
        let (who, team) = testkit::alice_of_north(s);
        Desk {
            _dir: dir,
            store,
            who,
            team: team.team_id,
        }
    }

    /// A new case of the team with its plan, pushed and stored.
    fn plan(&self) -> (DocId, CaseId, AutoCommit) {
        let case = CaseRecord {
            case_id: CaseId::new_random(),
            owner_org: self.who.staff.org_id,
            teams: vec![self.team],
            created_ms: 0,
        };
        store::write(&*self.store, |t| t.put_case(&case)).unwrap();
        let mut plan = testkit::new_plan(&self.who, case.case_id);
        let doc = DocId::new_random();
        let pushed = self.push(vec![testkit::plan_push(
            &mut plan,
            &[],
            (doc, case.case_id),
        )]);
        assert!(pushed.rejections.is_empty(), "{:?}", pushed.rejections);
        (doc, case.case_id, plan)
    }

    fn push(&self, docs: Vec<DocPush>) -> crate::sync::PushOutcome {
        crate::sync::push(&*self.store, &self.who, docs, 0).expect("the push is answered")
    }

    /// Damages `doc` as stored: `logged`, a change that is not Automerge is logged and named a
    /// head; else its record names a head its log does not hold.
    fn damage(&self, doc: DocId, logged: bool) {
        store::write(&*self.store, |t| {
            let hash = Hash([0xda; 32]);
            if logged {
                t.append_change(&NewChange {
                    doc_id: doc,
                    hash,
                    bytes: b"not an automerge change".to_vec(),
                    received_at_ms: 1,
                })?;
            }
            let mut rec = t.doc(doc)?.expect("the plan is stored");
            rec.heads.push(hash);
            t.put_doc(&rec)
        })
        .unwrap();
    }
}

/// An append to `plan`'s narrative, as a push from the heads it had.
fn edit(plan: &mut AutoCommit, ids: (DocId, CaseId)) -> DocPush {
    let base = plan.get_heads();
    record::append_root_text(plan, "plan", field::NARRATIVE, "Seen at home.").unwrap();
    plan.commit();
    testkit::plan_push(plan, &base, ids)
}

#[test]
fn a_push_to_a_document_that_no_longer_loads_is_refused_for_it_alone() {
    refused_alone(true);
}

#[test]
fn a_push_to_a_document_whose_log_does_not_give_its_heads_is_refused_for_it_alone() {
    refused_alone(false);
}

fn refused_alone(logged: bool) {
    let desk = Desk::new();
    let (damaged, damaged_case, mut one) = desk.plan();
    let (healthy, healthy_case, mut other) = desk.plan();
    desk.damage(damaged, logged);
    let pushed = desk.push(vec![
        edit(&mut one, (damaged, damaged_case)),
        edit(&mut other, (healthy, healthy_case)),
    ]);
    let refused: Vec<_> = pushed
        .rejections
        .iter()
        .map(|r| (r.doc_id, r.code))
        .collect();
    assert_eq!(refused, vec![(damaged, ErrorCode::Internal)]);
    assert!(
        pushed.rejections[0].reason.contains("does not load"),
        "{}",
        pushed.rejections[0].reason
    );
    let acked: Vec<_> = pushed.acks.iter().map(|a| (a.doc_id, a.stored)).collect();
    assert_eq!(acked, vec![(healthy, 1)]);
    // Nothing of the refused document's push was stored or put in quarantine: it stays with the
    // device, to be sent again once the document is repaired.
    let logged = if logged { 2 } else { 1 };
    assert_eq!(desk.store.doc_change_seqs(damaged).unwrap().len(), logged);
    assert!(desk.store.quarantine_list().unwrap().is_empty());
}
