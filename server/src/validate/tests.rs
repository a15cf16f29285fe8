//! Unit tests of the record rules on documents built with the record API and with automerge
//! directly.

use super::*;
use automerge::transaction::Transactable;
use automerge::{ObjType, ROOT};
use casenote_protocol::record::{self, field};
use casenote_protocol::{CaseId, StaffId};

fn writer() -> Writer {
    Writer {
        staff_id: StaffId::new_random(),
        role: "social_worker".into(),
        org: "Castlebridge Council".into(),
        teams: vec!["Locality Team North".into()],
    }
}

fn ctx(kind: DocKind, case: CaseId, writer: &Writer) -> Context {
    Context {
        kind,
        case_id: case,
        writer: writer.clone(),
        rules: Rules::default(),
        received_ms: 0,
    }
}

fn plan_with_action() -> (AutoCommit, CaseId, String) {
    let case = CaseId::new_random();
    let mut doc = AutoCommit::new();
    record::init_plan(&mut doc, case).unwrap();
    let action = record::add_action(&mut doc, "Fit a key safe", "OT", "2026-12-01").unwrap();
    doc.commit();
    (doc, case, action)
}

/// Runs the rules on `edit` of `before`; the rule broken, if any.
fn push(
    before: &mut AutoCommit,
    ctx: &Context,
    edit: impl FnOnce(&mut AutoCommit),
) -> Result<(), Refusal> {
    let heads = before.get_heads();
    let mut after = before.fork();
    edit(&mut after);
    after.commit();
    let changes = after.get_changes(&heads);
    let stored = before.clone();
    let outcome = run(ctx, Some(before.clone()), &changes, &mut || {
        Ok(Some(stored.clone()))
    })
    .unwrap();
    match outcome {
        Ok(passed) => {
            *before = passed.after;
            Ok(())
        }
        Err((refusal, _)) => Err(refusal),
    }
}

#[test]
fn an_action_status_outside_the_vocabulary_is_refused() {
    let (mut doc, case, action) = plan_with_action();
    let c = ctx(DocKind::Plan, case, &writer());
    push(&mut doc, &c, |d| {
        record::set_action_status(d, field::ACTIONS, &action, "done").unwrap()
    })
    .unwrap();
    let err = push(&mut doc, &c, |d| {
        let actions = record::get_obj(d, &ROOT, field::ACTIONS, ObjType::Map).unwrap();
        let entry = record::get_obj(d, &actions, &action, ObjType::Map).unwrap();
        d.put(&entry, field::STATUS, "finished, probably").unwrap();
    })
    .unwrap_err();
    assert!(err.rule.contains("must be one of"), "{}", err.rule);
    assert!(!err.rule.contains("finished"), "the rule echoes the value");
}

#[test]
fn an_entry_field_that_stops_being_a_string_is_refused_without_echoing_its_key() {
    let (mut doc, case, action) = plan_with_action();
    let c = ctx(DocKind::Plan, case, &writer());
    let err = push(&mut doc, &c, |d| {
        let actions = record::get_obj(d, &ROOT, field::ACTIONS, ObjType::Map).unwrap();
        let entry = record::get_obj(d, &actions, &action, ObjType::Map).unwrap();
        d.put(&entry, "Peggy Doyle", 42).unwrap();
    })
    .unwrap_err();
    assert!(err.rule.contains("strings only"), "{}", err.rule);
    assert!(!err.rule.contains("Peggy"), "{}", err.rule);
    let err = push(&mut doc, &c, |d| {
        let actions = record::get_obj(d, &ROOT, field::ACTIONS, ObjType::Map).unwrap();
        d.put(&actions, "not-a-map", "text").unwrap();
    })
    .unwrap_err();
    assert!(err.rule.contains("must stay a map"), "{}", err.rule);
}

#[test]
fn a_push_that_creates_no_objects_skips_the_structure_walk_but_one_that_does_is_walked() {
    let (mut doc, case, _) = plan_with_action();
    let c = ctx(DocKind::Plan, case, &writer());
    // Objects nested past the limit inside a goal-like map: refused, and the index is the change.
    let err = push(&mut doc, &c, |d| {
        let mut obj = d.put_object(ROOT, "extra", ObjType::Map).unwrap();
        for _ in 0..casenote_protocol::limits::DOC_DEPTH_MAX + 1 {
            obj = d.put_object(&obj, "m", ObjType::Map).unwrap();
        }
    })
    .unwrap_err();
    assert!(err.rule.contains("structure limits"), "{}", err.rule);
    assert_eq!(err.index, 0);
    // A text edit creates nothing and passes.
    push(&mut doc, &c, |d| {
        record::append_root_text(d, "plan", field::NARRATIVE, "More.").unwrap()
    })
    .unwrap();
}

#[test]
fn the_bisection_names_the_change_that_broke_the_rule() {
    let (mut doc, case, action) = plan_with_action();
    let c = ctx(DocKind::Plan, case, &writer());
    let heads = doc.get_heads();
    let mut after = doc.fork();
    for i in 0..20 {
        record::append_root_text(&mut after, "plan", field::NARRATIVE, &format!("{i} ")).unwrap();
        after.commit();
    }
    let actions = record::get_obj(&after, &ROOT, field::ACTIONS, ObjType::Map).unwrap();
    let entry = record::get_obj(&after, &actions, &action, ObjType::Map).unwrap();
    after.put(&entry, field::STATUS, "nope").unwrap();
    after.commit();
    let changes = after.get_changes(&heads);
    assert_eq!(changes.len(), 21);
    let stored = doc.clone();
    let outcome = run(&c, Some(doc.clone()), &changes, &mut || {
        Ok(Some(stored.clone()))
    })
    .unwrap();
    let (refusal, before) = outcome.err().expect("refused");
    assert_eq!(refusal.index, 20);
    assert!(
        before.is_some(),
        "the stored state comes back for the cache"
    );
}

#[test]
fn a_new_alert_names_its_raiser_and_the_name_never_changes() {
    let case = CaseId::new_random();
    let w = writer();
    let c = ctx(DocKind::Case, case, &w);
    let mut doc = AutoCommit::new();
    record::init_case(&mut doc, case, &record::Identity::default()).unwrap();
    doc.commit();
    let me = w.staff_id.to_string();
    let mut alert = String::new();
    push(&mut doc, &c, |d| {
        alert = record::add_alert(d, "Visit in pairs", &me, 1_700_000_000_000).unwrap();
    })
    .unwrap();
    let err = push(&mut doc, &c, |d| {
        record::add_alert(d, "Dog", &StaffId::new_random().to_string(), 0).unwrap();
    })
    .unwrap_err();
    assert!(err.rule.contains("raised_by"), "{}", err.rule);
    let err = push(&mut doc, &c, |d| {
        let alerts = record::get_obj(d, &ROOT, field::ALERTS, ObjType::Map).unwrap();
        let entry = record::get_obj(d, &alerts, &alert, ObjType::Map).unwrap();
        d.put(&entry, "raised_by", "someone else").unwrap();
    })
    .unwrap_err();
    assert!(err.rule.contains("never changes"), "{}", err.rule);
}

#[test]
fn an_alert_keeps_its_raise_time_as_an_integer() {
    let case = CaseId::new_random();
    let w = writer();
    let c = ctx(DocKind::Case, case, &w);
    let mut doc = AutoCommit::new();
    record::init_case(&mut doc, case, &record::Identity::default()).unwrap();
    doc.commit();
    let me = w.staff_id.to_string();
    let mut alert = String::new();
    push(&mut doc, &c, |d| {
        alert = record::add_alert(d, "Visit in pairs", &me, 1_700_000_000_000).unwrap();
    })
    .unwrap();
    let err = push(&mut doc, &c, |d| {
        let alerts = record::get_obj(d, &ROOT, field::ALERTS, ObjType::Map).unwrap();
        let entry = record::get_obj(d, &alerts, &alert, ObjType::Map).unwrap();
        d.put(&entry, field::RAISED_AT, "yesterday").unwrap();
    })
    .unwrap_err();
    assert!(
        err.rule.contains("raised_at_ms must be an integer"),
        "{}",
        err.rule
    );
    // Only the raise time may be an integer: the alert's other fields stay strings.
    let err = push(&mut doc, &c, |d| {
        let alerts = record::get_obj(d, &ROOT, field::ALERTS, ObjType::Map).unwrap();
        let entry = record::get_obj(d, &alerts, &alert, ObjType::Map).unwrap();
        d.put(&entry, "text", 5).unwrap();
    })
    .unwrap_err();
    assert!(err.rule.contains("hold strings only"), "{}", err.rule);
}

#[test]
fn the_header_refuses_a_filed_note_a_colleagues_draft_and_an_oversized_document() {
    use crate::store::{DocHeader, DocRecord};
    let author = StaffId::new_random();
    let mut rec = DocRecord {
        header: DocHeader {
            doc_id: casenote_protocol::DocId::new_random(),
            case_id: CaseId::new_random(),
            kind: DocKind::Note,
            owner_org: casenote_protocol::OrgId::new_random(),
            access_teams: None,
            created_by: author,
            created_ms: 0,
            sealed: false,
            grants: Vec::new(),
        },
        heads: vec![],
        ops: 0,
        filed_ms: None,
    };
    let mut doc = AutoCommit::new();
    doc.put(ROOT, "x", 1).unwrap();
    doc.commit();
    let changes = doc.get_changes(&[]);
    assert_eq!(header_refusal(Some(&rec), author, &changes), None);
    assert!(header_refusal(Some(&rec), StaffId::new_random(), &changes)
        .unwrap()
        .rule
        .contains("author"));
    rec.filed_ms = Some(1);
    assert!(header_refusal(Some(&rec), author, &changes)
        .unwrap()
        .rule
        .contains("filed"));
    rec.filed_ms = None;
    rec.ops = casenote_protocol::limits::DOC_OPS_MAX;
    assert!(header_refusal(Some(&rec), author, &changes)
        .unwrap()
        .rule
        .contains("operations"));
}

#[test]
fn a_document_is_bounded_by_its_actors_and_by_actors_times_changes() {
    use casenote_protocol::limits::{DOC_ACTORS_MAX, DOC_ACTOR_CHANGES_MAX, DOC_OPS_MAX};
    assert_eq!(over_actor_limits(1, DOC_OPS_MAX), None);
    assert_eq!(
        over_actor_limits(512, DOC_OPS_MAX),
        None,
        "512 writers reach DOC_OPS_MAX first"
    );
    assert_eq!(
        over_actor_limits(DOC_ACTORS_MAX, DOC_ACTOR_CHANGES_MAX / DOC_ACTORS_MAX),
        None
    );
    let rule = over_actor_limits(DOC_ACTORS_MAX + 1, DOC_ACTORS_MAX + 1).unwrap();
    assert!(rule.contains("more than 4096 actors"), "{rule}");
    let rule = over_actor_limits(DOC_ACTORS_MAX, DOC_ACTOR_CHANGES_MAX / DOC_ACTORS_MAX + 1);
    assert!(rule.unwrap().contains("actors x changes"));
    let rule = over_actor_limits(1_000, DOC_ACTOR_CHANGES_MAX / 1_000 + 1);
    assert!(rule.unwrap().contains("(1000 actors)"));
}
