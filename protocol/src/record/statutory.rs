//! The statutory record kinds on a document: assessments (mental capacity, Care Act needs and
//! carer's, early help), discharge, referral and safeguarding documents, and the legal status
//! and contacts inside the case document.
//!
//! Each kind is a table ([`super::schema`]); the device creates a document with every text and
//! named map of its table already in place (so concurrent edits never create the same object
//! twice), sets fields by path through [`set_field`] and adds entries through [`add_entry`],
//! each checked against the table as the server checks it. An assessment's completion rules
//! ([`completion_problem`]) are here too, so the device refuses what the server would.

use super::schema::{self, Field, Node, Table, Val};
use super::{check_len, get_obj, get_str, vocab, RecordError};
use crate::ids::{CaseId, DocId, DocKind};
use crate::limits;
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType, ReadDoc, ROOT};

pub const ASSESSMENT_SCHEMA: &str = "casenote/assessment/1";
pub const DISCHARGE_SCHEMA: &str = "casenote/discharge/1";
pub const REFERRAL_SCHEMA: &str = "casenote/referral/1";
pub const SAFEGUARDING_SCHEMA: &str = "casenote/safeguarding/1";

/// The table a document of `kind` is checked against (`None`: a kind with rules of its own
/// only: notes, plans, restricted sections). An assessment's depends on its `type`.
pub fn table_of(doc: &AutoCommit, kind: DocKind) -> Option<Table> {
    match kind {
        DocKind::Case => Some(schema::CASE_TABLE),
        DocKind::Assessment => Some(schema::assessment_table(
            get_str(doc, &ROOT, "type").as_deref(),
        )),
        DocKind::Discharge => Some(schema::table("discharge", schema::DISCHARGE)),
        DocKind::Referral => Some(schema::table("referral", schema::REFERRAL)),
        DocKind::Safeguarding => Some(schema::table("safeguarding", schema::SAFEGUARDING)),
        DocKind::Note | DocKind::Plan | DocKind::Restricted => None,
    }
}

/// Creates every text and named map of `fields` under `obj` (entries maps start empty).
fn skeleton(doc: &mut AutoCommit, fields: &'static [Field]) -> Result<(), RecordError> {
    let mut stack: Vec<(ObjId, &'static [Field])> = vec![(ROOT, fields)];
    while let Some((obj, fields)) = stack.pop() {
        for (key, node) in fields {
            match node {
                Node::V(Val::Text) => {
                    doc.put_object(&obj, *key, ObjType::Text)?;
                }
                Node::Map(sub) => {
                    let id = doc.put_object(&obj, *key, ObjType::Map)?;
                    stack.push((id, sub));
                }
                Node::Entries(_) => {
                    doc.put_object(&obj, *key, ObjType::Map)?;
                }
                Node::V(_) | Node::Any => {}
            }
        }
    }
    Ok(())
}

fn header(doc: &mut AutoCommit, schema: &str, case_id: CaseId) -> Result<(), RecordError> {
    doc.put(ROOT, super::field::SCHEMA, schema)?;
    doc.put(ROOT, super::field::CASE_ID, case_id.to_string())?;
    Ok(())
}

/// What an amending assessment amends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssessmentAmends {
    pub assessment_id: DocId,
    /// `addendum` or `correction`.
    pub kind: String,
    pub reason: String,
}

/// Writes a new assessment of type `ty`, in progress.
pub fn init_assessment(
    doc: &mut AutoCommit,
    case_id: CaseId,
    ty: &str,
    started_at_ms: i64,
    amends: Option<&AssessmentAmends>,
) -> Result<(), RecordError> {
    check_allowed("assessment type", ty, vocab::ASSESSMENT_TYPES)?;
    header(doc, ASSESSMENT_SCHEMA, case_id)?;
    doc.put(ROOT, "type", ty)?;
    doc.put(ROOT, "status", "in_progress")?;
    doc.put(ROOT, "started_at_ms", started_at_ms)?;
    let table = schema::assessment_table(Some(ty));
    skeleton(doc, table.parts[2])?;
    if let Some(a) = amends {
        check_allowed("amendment kind", &a.kind, vocab::AMEND_KINDS)?;
        if vocab::is_blank(&a.reason) {
            return Err(RecordError::Refused("an amendment needs a reason".into()));
        }
        check_len("amendment reason", &a.reason, limits::SHORT_TEXT_BYTES_MAX)?;
        let obj = doc.put_object(ROOT, "amends", ObjType::Map)?;
        doc.put(&obj, "assessment_id", a.assessment_id.to_string())?;
        doc.put(&obj, "kind", a.kind.as_str())?;
        doc.put(&obj, "reason", a.reason.as_str())?;
    }
    Ok(())
}

/// Writes a new discharge document (one per hospital episode).
pub fn init_discharge(doc: &mut AutoCommit, case_id: CaseId) -> Result<(), RecordError> {
    header(doc, DISCHARGE_SCHEMA, case_id)?;
    skeleton(doc, schema::DISCHARGE)
}

/// Writes a new referral, pending triage.
pub fn init_referral(
    doc: &mut AutoCommit,
    case_id: CaseId,
    source: &str,
    urgency: &str,
    reason: &str,
) -> Result<(), RecordError> {
    check_allowed("referral source", source, vocab::REFERRAL_SOURCES)?;
    check_allowed("referral urgency", urgency, vocab::REFERRAL_URGENCIES)?;
    check_len("referral reason", reason, limits::TEXT_BYTES_MAX)?;
    header(doc, REFERRAL_SCHEMA, case_id)?;
    skeleton(doc, schema::REFERRAL)?;
    doc.put(ROOT, "source", source)?;
    doc.put(ROOT, "urgency", urgency)?;
    doc.put(ROOT, "triage_decision", "pending")?;
    let text = get_obj(doc, &ROOT, "reason", ObjType::Text)
        .ok_or_else(|| RecordError::Invalid("referral", "it has no reason text".into()))?;
    doc.update_text(&text, reason)?;
    Ok(())
}

/// Writes a new safeguarding enquiry with its concern. The alleged source of harm is marked as
/// third-party data from the start.
pub fn init_safeguarding(
    doc: &mut AutoCommit,
    case_id: CaseId,
    concern: &str,
) -> Result<(), RecordError> {
    if vocab::is_blank(concern) {
        return Err(RecordError::Refused(
            "a safeguarding enquiry starts with its concern".into(),
        ));
    }
    check_len("concern", concern, limits::TEXT_BYTES_MAX)?;
    header(doc, SAFEGUARDING_SCHEMA, case_id)?;
    skeleton(doc, schema::SAFEGUARDING)?;
    let text = get_obj(doc, &ROOT, "concern", ObjType::Text)
        .ok_or_else(|| RecordError::Invalid("safeguarding", "it has no concern text".into()))?;
    doc.update_text(&text, concern)?;
    let harm = get_obj(doc, &ROOT, "alleged_source_of_harm", ObjType::Map).ok_or_else(|| {
        RecordError::Invalid("safeguarding", "it has no alleged source of harm".into())
    })?;
    doc.put(&harm, "third_party", "yes")?;
    Ok(())
}

fn check_allowed(what: &'static str, value: &str, allowed: &[&str]) -> Result<(), RecordError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(RecordError::NotAllowed {
            what,
            value: value.to_string(),
            allowed: allowed.join(", "),
        })
    }
}

/// Whether `value` may stand where `val` says, as the server judges it (a text always may).
fn check_value(
    table: &Table,
    names: &[&'static str],
    val: Val,
    value: &str,
    today_ms: i64,
) -> Result<(), RecordError> {
    let field = names.last().copied().unwrap_or("field");
    if let Val::One(allowed) = val {
        return check_allowed(field, value, allowed);
    }
    if val == Val::Int {
        return Err(RecordError::Refused(format!(
            "the {}'s {field} is kept by casenote; it is not set by hand",
            table.kind
        )));
    }
    if val == Val::Text {
        return check_len(field, value, limits::TEXT_BYTES_MAX);
    }
    check_len(field, value, limits::SHORT_TEXT_BYTES_MAX)?;
    let scalar = automerge::Value::Scalar(std::borrow::Cow::Owned(value.into()));
    match schema::val_problem(table.kind, field, val, &scalar, today_ms) {
        Some(why) => Err(RecordError::Refused(why)),
        None => Ok(()),
    }
}

/// The object holding the last key of `path`, following the table (an entry's id must name an
/// entry that exists).
fn parent_of(doc: &AutoCommit, table: &Table, path: &[&str]) -> Result<ObjId, RecordError> {
    let mut obj = ROOT;
    for (i, key) in path[..path.len().saturating_sub(1)].iter().enumerate() {
        let what = if i == 0 { "field" } else { "entry" };
        obj = get_obj(doc, &obj, key, ObjType::Map)
            .ok_or_else(|| RecordError::NoEntry(what, path[..=i].join(".")))?;
    }
    let _ = table;
    Ok(obj)
}

/// The path as the schema names it, with its node, or an error naming the kind.
fn resolve(table: &Table, path: &[&str]) -> Result<(Node, Vec<&'static str>), RecordError> {
    table.resolve(path).ok_or_else(|| {
        RecordError::Refused(format!(
            "{} is not a field of a {} record",
            path.join("."),
            table.kind
        ))
    })
}

/// Sets the field at `path` (`outcome`, `tests.understand.result`, `legal_status.ID.end`) to
/// `value`, checked against the table: a vocabulary, a date, an NHS number, or a text (replaced
/// with a minimal character diff so that concurrent edits still merge).
pub fn set_field(
    doc: &mut AutoCommit,
    table: &Table,
    path: &[&str],
    value: &str,
    today_ms: i64,
) -> Result<(), RecordError> {
    let (node, names) = resolve(table, path)?;
    let Node::V(val) = node else {
        return Err(RecordError::Refused(format!(
            "{} holds several fields: name one of them",
            names.join(".")
        )));
    };
    check_value(table, &names, val, value, today_ms)?;
    let parent = parent_of(doc, table, path)?;
    let key = *path.last().unwrap_or(&"");
    if val == Val::Text {
        let text = match get_obj(doc, &parent, key, ObjType::Text) {
            Some(t) => t,
            None => doc.put_object(&parent, key, ObjType::Text)?,
        };
        doc.update_text(&text, value)?;
    } else {
        doc.put(&parent, key, value)?;
    }
    Ok(())
}

/// Adds an entry keyed by a fresh uuid to the entries map at `path`, every field checked against
/// the table; returns its id.
pub fn add_entry(
    doc: &mut AutoCommit,
    table: &Table,
    path: &[&str],
    fields: &[(&str, &str)],
    today_ms: i64,
) -> Result<String, RecordError> {
    let (node, names) = resolve(table, path)?;
    let Node::Entries(spec) = node else {
        return Err(RecordError::Refused(format!(
            "{} is not a list of entries",
            names.join(".")
        )));
    };
    for (k, v) in fields {
        let (name, val) = spec.iter().find(|(n, _)| n == k).ok_or_else(|| {
            RecordError::Refused(format!("{k} is not a field of {}", names.join(".")))
        })?;
        let mut full = names.clone();
        full.push(name);
        check_value(table, &full, *val, v, today_ms)?;
    }
    let mut parent = parent_of(doc, table, path)?;
    let last = *path.last().unwrap_or(&"");
    parent = match get_obj(doc, &parent, last, ObjType::Map) {
        Some(m) => m,
        None => doc.put_object(&parent, last, ObjType::Map)?,
    };
    let id = uuid::Uuid::new_v4().to_string();
    let entry = doc.put_object(&parent, id.as_str(), ObjType::Map)?;
    for (k, v) in fields {
        doc.put(&entry, *k, *v)?;
    }
    Ok(id)
}

/// Whether an assessment is completed; a status missing or unknown counts as completed (the safe
/// side), as a note's does as filed.
pub fn assessment_completed(doc: &AutoCommit) -> bool {
    get_str(doc, &ROOT, "status").as_deref() != Some("in_progress")
}

/// Refuses any edit to a completed assessment.
pub fn ensure_in_progress(doc: &AutoCommit, id: DocId) -> Result<(), RecordError> {
    if assessment_completed(doc) {
        Err(RecordError::AssessmentCompleted(id))
    } else {
        Ok(())
    }
}

/// The string at a path of map keys.
fn str_at(doc: &AutoCommit, path: &[&str]) -> Option<String> {
    let (last, parents) = path.split_last()?;
    let mut obj = ROOT;
    for key in parents {
        obj = get_obj(doc, &obj, key, ObjType::Map)?;
    }
    get_str(doc, &obj, last)
}

/// Whether the text at a path of map keys holds something other than whitespace.
fn text_filled(doc: &AutoCommit, path: &[&str]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut obj = ROOT;
    for key in parents {
        match get_obj(doc, &obj, key, ObjType::Map) {
            Some(o) => obj = o,
            None => return false,
        }
    }
    get_obj(doc, &obj, last, ObjType::Text)
        .and_then(|t| doc.text(&t).ok())
        .is_some_and(|t| !vocab::is_blank(&t))
}

/// Why the assessment cannot be completed as it stands, if it cannot: a fixed sentence naming
/// schema fields. The device refuses `complete` with it, and the server a completion.
pub fn completion_problem(doc: &AutoCommit) -> Option<&'static str> {
    if !super::conflicts(doc).is_empty() {
        return Some("the assessment has conflicting values: resolve them before completing it");
    }
    if get_obj(doc, &ROOT, "amends", ObjType::Map).is_some()
        && str_at(doc, &["amends", "reason"]).is_none_or(|r| vocab::is_blank(&r))
    {
        return Some("an amending assessment needs the reason in amends.reason");
    }
    match get_str(doc, &ROOT, "type").as_deref() {
        Some("mca") => mca_problem(doc),
        Some("needs") => eligibility_problem(doc, vocab::NEEDS_OUTCOMES, false),
        Some("carers") => eligibility_problem(doc, vocab::CARERS_OUTCOMES, true),
        Some("early_help") => (!text_filled(doc, &["needs"]) || !text_filled(doc, &["plan"]))
            .then_some("an early help assessment is completed with its needs and its plan"),
        _ => Some("an assessment needs a type: mca, needs, carers or early_help"),
    }
}

fn mca_problem(doc: &AutoCommit) -> Option<&'static str> {
    if !text_filled(doc, &["decision"]) {
        return Some("a capacity assessment names its one decision in decision");
    }
    let impairment = str_at(doc, &["stage1", "impairment"]);
    if impairment.is_none() {
        return Some("a capacity assessment answers stage1.impairment");
    }
    let results: Vec<Option<String>> = vocab::MCA_TESTS
        .iter()
        .map(|t| str_at(doc, &["tests", t, "result"]))
        .collect();
    if results.iter().any(Option::is_none) {
        return Some(
            "every functional test (understand, retain, use_or_weigh, communicate) needs its \
             result",
        );
    }
    let cannot = results.iter().any(|r| r.as_deref() == Some("cannot"));
    match str_at(doc, &["outcome"]).as_deref() {
        Some("has_capacity") if cannot => {
            Some("has_capacity needs every functional test's result to be can")
        }
        Some("has_capacity") => None,
        Some("lacks_capacity") if impairment.as_deref() != Some("yes") || !cannot => Some(
            "lacks_capacity needs stage1.impairment yes and at least one functional test \
             result cannot",
        ),
        Some("lacks_capacity") => best_interests_problem(doc),
        _ => Some("a capacity assessment is completed with its outcome"),
    }
}

fn best_interests_problem(doc: &AutoCommit) -> Option<&'static str> {
    let bi = |f| ["best_interests", f];
    let complete = [
        "wishes_and_beliefs",
        "least_restrictive_option",
        "rationale",
        "decision",
    ]
    .iter()
    .all(|f| text_filled(doc, &bi(f)));
    let consulted = get_obj(doc, &ROOT, "best_interests", ObjType::Map)
        .and_then(|b| get_obj(doc, &b, "consulted", ObjType::Map))
        .is_some_and(|c| {
            doc.keys(&c).any(|id| {
                get_obj(doc, &c, &id, ObjType::Map)
                    .and_then(|e| get_str(doc, &e, "name"))
                    .is_some_and(|n| !vocab::is_blank(&n))
            })
        });
    (!complete || !consulted).then_some(
        "lacks_capacity needs a complete best-interests decision (wishes_and_beliefs, \
         least_restrictive_option, rationale, decision) with at least one person consulted",
    )
}

/// The eligibility test of the Care and Support (Eligibility Criteria) Regulations 2014: for an
/// adult (reg 2), needs arising from an impairment, two or more outcomes not achieved and a
/// significant impact on wellbeing; for a carer (reg 3), needs arising from caring, their health
/// at risk or one or more outcomes not achieved, and a significant impact.
fn eligibility_problem(doc: &AutoCommit, outcomes: &[&str], carer: bool) -> Option<&'static str> {
    let answers: Vec<Option<String>> = outcomes
        .iter()
        .map(|o| str_at(doc, &["outcomes", o, "unable_to_achieve"]))
        .collect();
    if answers.iter().any(Option::is_none) {
        return Some("every outcome needs its unable_to_achieve answered");
    }
    let unable = answers
        .iter()
        .filter(|a| a.as_deref() == Some("yes"))
        .count();
    let arise_field = if carer {
        "needs_arise_from_caring"
    } else {
        "needs_arise_from_impairment"
    };
    let arise = str_at(doc, &[arise_field]);
    let health = if carer {
        str_at(doc, &["health_at_risk"])
    } else {
        Some("no".into())
    };
    let wellbeing = str_at(doc, &["wellbeing_impact"]);
    let eligible = str_at(doc, &["eligible"]);
    let (Some(arise), Some(health), Some(wellbeing), Some(eligible)) =
        (arise, health, wellbeing, eligible)
    else {
        return Some(if carer {
            "a carer's assessment answers needs_arise_from_caring, health_at_risk, \
             wellbeing_impact and eligible"
        } else {
            "a needs assessment answers needs_arise_from_impairment, wellbeing_impact and \
             eligible"
        });
    };
    let effect = if carer {
        health == "yes" || unable >= 1
    } else {
        unable >= 2
    };
    let meets = arise == "yes" && effect && wellbeing == "significant";
    (meets != (eligible == "yes")).then_some(if carer {
        "eligible must follow the regulations: yes exactly when needs arise from caring, the \
         carer's health is at risk or one or more outcomes cannot be achieved, and the impact on \
         wellbeing is significant"
    } else {
        "eligible must follow the regulations: yes exactly when needs arise from an impairment, \
         two or more outcomes cannot be achieved, and the impact on wellbeing is significant"
    })
}

/// Completes an assessment: checks the completion rules, then records who completed it and
/// when. From then on it never changes.
pub fn complete_assessment(
    doc: &mut AutoCommit,
    id: DocId,
    by: &str,
    at_ms: i64,
) -> Result<(), RecordError> {
    ensure_in_progress(doc, id)?;
    if let Some(why) = completion_problem(doc) {
        return Err(RecordError::Refused(why.into()));
    }
    doc.put(ROOT, "completed_by", by)?;
    doc.put(ROOT, "completed_at_ms", at_ms)?;
    doc.put(ROOT, "status", "completed")?;
    Ok(())
}

/// Checks a person's identity as the server would: an NHS number passing Modulus 11, a date of
/// birth that is a real date, not before 1900 and not after `today_ms`.
pub fn check_identity(who: &super::Identity, today_ms: i64) -> Result<(), RecordError> {
    if let Some(n) = &who.nhs_number {
        if !crate::nhs::nhs_number_is_valid(n) {
            return Err(RecordError::Refused(
                "the NHS number must be ten digits passing the Modulus 11 check".into(),
            ));
        }
    }
    if let Some(d) = &who.dob {
        if let Some(why) = vocab::dob_problem(d, today_ms) {
            return Err(RecordError::Refused(why.into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assessment(ty: &str) -> (AutoCommit, Table) {
        let mut doc = AutoCommit::new();
        init_assessment(&mut doc, CaseId::new_random(), ty, 1, None).unwrap();
        let table = table_of(&doc, DocKind::Assessment).unwrap();
        (doc, table)
    }

    fn set(doc: &mut AutoCommit, table: &Table, path: &str, value: &str) {
        let path: Vec<&str> = path.split('.').collect();
        set_field(doc, table, &path, value, 0).unwrap();
    }

    #[test]
    fn capacity_outcomes_follow_the_tests() {
        let (mut doc, t) = assessment("mca");
        set(&mut doc, &t, "decision", "Whether to move");
        set(&mut doc, &t, "stage1.impairment", "yes");
        for test in vocab::MCA_TESTS {
            set(&mut doc, &t, &format!("tests.{test}.result"), "can");
        }
        set(&mut doc, &t, "outcome", "lacks_capacity");
        assert!(completion_problem(&doc).unwrap().contains("at least one"));
        set(&mut doc, &t, "outcome", "has_capacity");
        assert_eq!(completion_problem(&doc), None);
        set(&mut doc, &t, "tests.retain.result", "cannot");
        assert!(completion_problem(&doc)
            .unwrap()
            .contains("every functional"));
        set(&mut doc, &t, "outcome", "lacks_capacity");
        assert!(completion_problem(&doc).unwrap().contains("best-interests"));
        for f in [
            "wishes_and_beliefs",
            "least_restrictive_option",
            "rationale",
            "decision",
        ] {
            set(&mut doc, &t, &format!("best_interests.{f}"), "x");
        }
        assert!(completion_problem(&doc).unwrap().contains("consulted"));
        add_entry(
            &mut doc,
            &t,
            &["best_interests", "consulted"],
            &[("name", "Tom")],
            0,
        )
        .unwrap();
        assert_eq!(completion_problem(&doc), None);
        complete_assessment(&mut doc, DocId::new_random(), "staff", 5).unwrap();
        assert!(matches!(
            ensure_in_progress(&doc, DocId::new_random()),
            Err(RecordError::AssessmentCompleted(_))
        ));
    }

    #[test]
    fn eligibility_follows_the_regulations() {
        let (mut doc, t) = assessment("needs");
        for o in vocab::NEEDS_OUTCOMES {
            set(
                &mut doc,
                &t,
                &format!("outcomes.{o}.unable_to_achieve"),
                "no",
            );
        }
        set(&mut doc, &t, "needs_arise_from_impairment", "yes");
        set(&mut doc, &t, "wellbeing_impact", "significant");
        set(&mut doc, &t, "outcomes.nutrition.unable_to_achieve", "yes");
        set(&mut doc, &t, "eligible", "yes");
        assert!(completion_problem(&doc).unwrap().contains("two or more"));
        set(&mut doc, &t, "outcomes.clothing.unable_to_achieve", "yes");
        assert_eq!(completion_problem(&doc), None);
        set(&mut doc, &t, "wellbeing_impact", "not_significant");
        assert!(completion_problem(&doc).is_some());
        set(&mut doc, &t, "eligible", "no");
        assert_eq!(completion_problem(&doc), None);

        // A carer: one outcome, or their health at risk, is enough.
        let (mut doc, t) = assessment("carers");
        for o in vocab::CARERS_OUTCOMES {
            set(
                &mut doc,
                &t,
                &format!("outcomes.{o}.unable_to_achieve"),
                "no",
            );
        }
        set(&mut doc, &t, "needs_arise_from_caring", "yes");
        set(&mut doc, &t, "health_at_risk", "yes");
        set(&mut doc, &t, "wellbeing_impact", "significant");
        set(&mut doc, &t, "eligible", "no");
        assert!(completion_problem(&doc).unwrap().contains("carer's health"));
        set(&mut doc, &t, "eligible", "yes");
        assert_eq!(completion_problem(&doc), None);
    }

    #[test]
    fn values_outside_the_tables_are_refused_before_they_are_written() {
        let mut doc = AutoCommit::new();
        init_discharge(&mut doc, CaseId::new_random()).unwrap();
        let t = table_of(&doc, DocKind::Discharge).unwrap();
        for (path, value) in [
            (&["pathway"][..], "4"),
            (&["expected_discharge_date"], "2026-02-30"),
            (&["day_one_welfare_check", "due"], "tomorrow"),
            (&["equipment"], "x"),
            (&["colour"], "red"),
        ] {
            assert!(set_field(&mut doc, &t, path, value, 0).is_err(), "{path:?}");
        }
        assert!(add_entry(&mut doc, &t, &["equipment"], &[("status", "lost")], 0).is_err());
        let before = doc.get_heads();
        doc.commit();
        assert_eq!(doc.get_heads(), before, "nothing was written");
        let mut case = AutoCommit::new();
        super::super::init_case(&mut case, CaseId::new_random(), &Default::default()).unwrap();
        let c = schema::CASE_TABLE;
        assert!(add_entry(&mut case, &c, &["contacts"], &[("may_decide", "all")], 0).is_err());
        assert!(set_field(
            &mut case,
            &c,
            &["legal_status", "nope", "end"],
            "2026-01-01",
            0
        )
        .is_err());
    }
}
