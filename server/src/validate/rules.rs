//! The rules of each record kind, checked on a document as it would be after a push against
//! what they read of it before ([`Prior`]).
//!
//! - every kind: the document keeps within the structure limits ([`casenote_protocol::shape`]);
//!   known root fields keep their types ([`fields`], one small table per kind); the `schema`
//!   field never changes; `case_id` always names the case in the server's header; required root
//!   fields are never deleted, and the objects they hold (texts, maps) are never replaced by new
//!   ones (which would wipe them); entries of the maps keyed by uuid (alerts, goals, actions, the
//!   team around the person) are maps of strings with statuses from the vocabulary (and an
//!   alert's `raised_at_ms`, an integer).
//! - who did it: a new alert's `raised_by`, a new resolution's `by` and a new agreement's `by`
//!   name the member of staff who pushes, and never change afterwards.
//! - note: a new note carries every required field and an author block that is the writer's own,
//!   as the directory knows them (staff id, role, organisation, one of their teams); the author
//!   never changes; `status` is `draft` or `filed`; a filed note never changes (the server's
//!   header refuses every change to one, see [`super::header_refusal`]; the content check here
//!   covers notes filed before the header recorded it); filing needs `filed_at_ms`, a
//!   `late_entry_reason` when the server receives the filing more than the configured window
//!   after `occurred_at` (or the device's own filing time says so), and nothing after it in the
//!   same push (the filing change must be a head).
//!
//! - the statutory tables ([`casenote_protocol::record::schema`]): every value a push writes in a
//!   case's identity, legal status and contacts, and anywhere in an assessment, discharge,
//!   referral or safeguarding document, stands where its table puts it, of its type, from its
//!   vocabulary (dates real calendar dates, a date of birth not before 1900 nor after the
//!   server's tomorrow, NHS numbers passing Modulus 11). Values already stored are not judged
//!   again, so records from before a rule keep working.
//! - assessment: its type never changes; a completed one never changes (the header refuses it
//!   first, see [`super::header_refusal`]); completing needs the completion rules
//!   ([`casenote_protocol::record::statutory::completion_problem`]), `completed_at_ms`, the
//!   writer's own staff id in `completed_by`, and nothing after it in the same push. A
//!   referral's `triaged_by` names the writer.
//! - note: its text is never empty (only whitespace counts as empty).
//!
//! Every reason is a fixed sentence naming schema fields; nothing in it comes from the document.

use super::Context;
use automerge::{AutoCommit, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use casenote_protocol::record::{self, field};
use casenote_protocol::record::{schema, statutory};
use casenote_protocol::DocKind;
use std::collections::HashSet;

/// The type a known root field must keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Str,
    Int,
    Text,
    Map,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Str => "a string",
            Ty::Int => "an integer",
            Ty::Text => "a text",
            Ty::Map => "a map",
        }
    }

    fn matches(self, v: &Value<'_>) -> bool {
        match (self, v) {
            (Ty::Text, Value::Object(ObjType::Text)) => true,
            (Ty::Map, Value::Object(ObjType::Map)) => true,
            (Ty::Str, Value::Scalar(s)) => matches!(s.as_ref(), ScalarValue::Str(_)),
            (Ty::Int, Value::Scalar(s)) => matches!(
                s.as_ref(),
                ScalarValue::Int(_) | ScalarValue::Uint(_) | ScalarValue::Timestamp(_)
            ),
            _ => false,
        }
    }
}

/// One known root field: its name, its type, and whether it is required (never deleted once
/// there; for a new note, present from the start).
pub type FieldRule = (&'static str, Ty, bool);

const COMMON: &[FieldRule] = &[
    (field::SCHEMA, Ty::Str, true),
    (field::CASE_ID, Ty::Str, true),
    (field::RESOLUTIONS, Ty::Map, false),
];

const CASE: &[FieldRule] = &[
    (field::NAME, Ty::Str, true),
    (field::NHS_NUMBER, Ty::Str, false),
    (field::DOB, Ty::Str, false),
    (field::ADDRESS, Ty::Str, false),
    (field::ABOUT_ME, Ty::Text, true),
    (field::ALERTS, Ty::Map, true),
    (field::TEAM, Ty::Map, true),
    (field::LEGAL_STATUS, Ty::Map, true),
    (field::CONTACTS, Ty::Map, true),
];

const NOTE: &[FieldRule] = &[
    (field::STATUS, Ty::Str, true),
    (field::NOTE_KIND, Ty::Str, true),
    (field::OCCURRED_AT, Ty::Int, true),
    (field::RECORDED_AT, Ty::Int, true),
    (field::FILED_AT, Ty::Int, false),
    (field::AUTHOR, Ty::Map, true),
    (field::TEXT, Ty::Text, true),
    (field::AMENDS, Ty::Map, false),
    (field::LATE_ENTRY_REASON, Ty::Str, false),
];

const PLAN: &[FieldRule] = &[
    (field::NARRATIVE, Ty::Text, true),
    (field::GOALS, Ty::Map, true),
    (field::ACTIONS, Ty::Map, true),
    (field::DISCHARGE_DATE, Ty::Str, false),
    (field::PATHWAY, Ty::Str, false),
    // Re-agreeing a plan writes a new agreement map, so it is not "never replaced".
    (field::AGREEMENT, Ty::Map, false),
];

const RESTRICTED: &[FieldRule] = &[(field::NARRATIVE, Ty::Text, true), ("title", Ty::Str, true)];

// The statutory kinds: what is required (never deleted, and its texts and maps never replaced,
// which would wipe them). Types and vocabularies are the tables' (`record::schema`).
const ASSESSMENT: &[FieldRule] = &[
    ("type", Ty::Str, true),
    (field::STATUS, Ty::Str, true),
    ("started_at_ms", Ty::Int, true),
    ("decision", Ty::Text, true),
    ("help_given", Ty::Text, true),
    ("stage1", Ty::Map, true),
    ("tests", Ty::Map, true),
    ("best_interests", Ty::Map, true),
    ("outcomes", Ty::Map, true),
    ("needs", Ty::Text, true),
    ("strengths", Ty::Text, true),
    ("plan", Ty::Text, true),
];

const DISCHARGE: &[FieldRule] = &[
    ("equipment", Ty::Map, true),
    ("day_one_welfare_check", Ty::Map, true),
];

const REFERRAL: &[FieldRule] = &[
    ("source", Ty::Str, true),
    ("urgency", Ty::Str, true),
    ("reason", Ty::Text, true),
    ("triage_decision", Ty::Str, true),
];

const SAFEGUARDING: &[FieldRule] = &[
    ("concern", Ty::Text, true),
    ("s42_reason", Ty::Text, true),
    ("desired_outcomes", Ty::Text, true),
    ("enquiry", Ty::Text, true),
    ("alleged_source_of_harm", Ty::Map, true),
    ("protection_plan", Ty::Text, true),
];

/// The known root fields of `kind` (the common ones first).
pub fn fields(kind: DocKind) -> impl Iterator<Item = &'static FieldRule> {
    let own: &'static [FieldRule] = match kind {
        DocKind::Case => CASE,
        DocKind::Note => NOTE,
        DocKind::Plan => PLAN,
        DocKind::Restricted => RESTRICTED,
        DocKind::Assessment => ASSESSMENT,
        DocKind::Safeguarding => SAFEGUARDING,
        DocKind::Discharge => DISCHARGE,
        DocKind::Referral => REFERRAL,
    };
    COMMON.iter().chain(own.iter())
}

/// The maps of entries keyed by uuid (alerts, goals, actions, the team around the person), with
/// the statuses each may hold (empty: no status field).
fn entry_maps(kind: DocKind) -> &'static [(&'static str, &'static [&'static str])] {
    match kind {
        DocKind::Case => &[(field::ALERTS, record::ALERT_STATUSES), (field::TEAM, &[])],
        DocKind::Plan => &[
            (field::GOALS, record::ACTION_STATUSES),
            (field::ACTIONS, record::ACTION_STATUSES),
        ],
        _ => &[],
    }
}

/// Root fields that name the member of staff who wrote them: a new value must be the writer's
/// own staff id.
fn signed_roots(kind: DocKind) -> &'static [&'static str] {
    match kind {
        DocKind::Assessment => &["completed_by"],
        DocKind::Referral => &["triaged_by"],
        _ => &[],
    }
}

/// Entry maps whose entries name the member of staff who wrote them, in which field: the writer
/// of a new entry must be the one named, and the name never changes.
fn signed_maps(kind: DocKind) -> &'static [(&'static str, &'static str)] {
    match kind {
        DocKind::Case => &[(field::ALERTS, "raised_by"), (field::RESOLUTIONS, "by")],
        _ => &[(field::RESOLUTIONS, "by")],
    }
}

/// The author block's fields, in the order [`NoteFacts::author`] keeps them.
const AUTHOR_FIELDS: [&str; 4] = ["staff_id", "role", "org", "team"];

/// What the note rules read of a note before the push.
struct NoteFacts {
    status: Option<String>,
    author: [Option<String>; 4],
}

/// What the rules read of a document before a push: taken before the new changes are applied,
/// so that they can be applied to the stored state in place.
pub struct Prior {
    /// `None` for a document new to the server.
    existed: bool,
    fields: Vec<(&'static str, Vec<(Value<'static>, ObjId)>)>,
    schema: Option<String>,
    /// Per signed map: (entry id, the name in its signing field).
    signed: Vec<Vec<(String, Option<String>)>>,
    agreement: Option<ObjId>,
    note: Option<NoteFacts>,
    /// Every value the statutory table of the kind covers (judged when it was written).
    seen: HashSet<ObjId>,
    /// An assessment's type and status.
    assessment: Option<(Option<String>, Option<String>)>,
}

/// Every value `obj.key` holds (more than one when written concurrently).
fn values<'a>(doc: &'a AutoCommit, key: &str) -> Vec<(Value<'a>, ObjId)> {
    doc.get_all(ROOT, key).unwrap_or_default()
}

fn author_of(doc: &AutoCommit) -> [Option<String>; 4] {
    let author = record::get_obj(doc, &ROOT, field::AUTHOR, ObjType::Map);
    AUTHOR_FIELDS.map(|f| author.as_ref().and_then(|a| record::get_str(doc, a, f)))
}

/// (entry id, the string in `sign`) for every entry of root map `map`.
fn signatures(doc: &AutoCommit, map: &str, sign: &str) -> Vec<(String, Option<String>)> {
    let Some(parent) = record::get_obj(doc, &ROOT, map, ObjType::Map) else {
        return Vec::new();
    };
    doc.keys(&parent)
        .map(|id| {
            let by = record::get_obj(doc, &parent, &id, ObjType::Map)
                .and_then(|e| record::get_str(doc, &e, sign));
            (id, by)
        })
        .collect()
}

impl Prior {
    /// What the rules of `kind` read of `before` (`None`: a document new to the server).
    pub fn of(kind: DocKind, before: Option<&AutoCommit>) -> Prior {
        let empty = AutoCommit::new();
        let doc = before.unwrap_or(&empty);
        Prior {
            existed: before.is_some(),
            fields: fields(kind)
                .map(|(key, _, _)| {
                    let owned = values(doc, key)
                        .into_iter()
                        .map(|(v, id)| (v.into_owned(), id))
                        .collect();
                    (*key, owned)
                })
                .collect(),
            schema: record::get_str(doc, &ROOT, field::SCHEMA),
            signed: signed_maps(kind)
                .iter()
                .map(|(map, sign)| signatures(doc, map, sign))
                .collect(),
            agreement: record::get_obj(doc, &ROOT, field::AGREEMENT, ObjType::Map),
            note: (kind == DocKind::Note).then(|| NoteFacts {
                status: record::get_str(doc, &ROOT, field::STATUS),
                author: author_of(doc),
            }),
            seen: seen_values(kind, doc),
            assessment: (kind == DocKind::Assessment).then(|| {
                (
                    record::get_str(doc, &ROOT, "type"),
                    record::get_str(doc, &ROOT, field::STATUS),
                )
            }),
        }
    }

    fn values(&self, key: &str) -> &[(Value<'static>, ObjId)] {
        self.fields
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(&[], |(_, v)| v.as_slice())
    }
}

/// Checks `after` against `prior` under the rules of `ctx.kind`; `structural`: the push created
/// objects, so the structure limits are checked too. Returns whether the push filed a note.
pub fn check(
    ctx: &Context,
    prior: &Prior,
    after: &mut AutoCommit,
    structural: bool,
) -> Result<bool, String> {
    if structural {
        casenote_protocol::shape::check(&*after)
            .map_err(|e| format!("the document breaks the structure limits: {e}"))?;
    }
    check_root(ctx, prior, after)?;
    check_entries(ctx.kind, after)?;
    check_signed(ctx, prior, after)?;
    check_tables(ctx, prior, after)?;
    match ctx.kind {
        DocKind::Note => check_note(ctx, prior, after),
        DocKind::Assessment => check_assessment(ctx, prior, after),
        _ => Ok(false),
    }
}

/// The ids of every value the statutory table of `kind` covers in `doc`. The table's walk keeps
/// an explicit stack and descends only where the table says a map stands.
fn seen_values(kind: DocKind, doc: &AutoCommit) -> HashSet<ObjId> {
    let mut seen = HashSet::new();
    if let Some(table) = statutory::table_of(doc, kind) {
        let _ = schema::walk(doc, &table, &mut |v| {
            seen.insert(v.id.clone());
            Ok(())
        });
    }
    seen
}

/// A day of slack on "not in the future" for a date of birth: a device ahead of UTC writes
/// tomorrow's UTC date as today.
const DOB_SLACK_MS: i64 = 86_400_000;

/// Every value the push wrote where a statutory table reaches stands where the table says, of
/// its type and vocabulary; root signatures (`completed_by`, `triaged_by`) are the writer's.
fn check_tables(ctx: &Context, prior: &Prior, after: &AutoCommit) -> Result<(), String> {
    let Some(table) = statutory::table_of(after, ctx.kind) else {
        return Ok(());
    };
    let today = ctx.received_ms.saturating_add(DOB_SLACK_MS);
    schema::walk(after, &table, &mut |v| {
        if prior.seen.contains(v.id) {
            return Ok(());
        }
        match schema::visit_problem(table.kind, &v, today) {
            Some(why) => Err(why),
            None => Ok(()),
        }
    })?;
    let writer = ctx.writer.staff_id.to_string();
    for key in signed_roots(ctx.kind) {
        for (v, id) in values(after, key) {
            let new = !prior.seen.contains(&id);
            if new && !matches!(&v, Value::Scalar(s) if s.as_str() == Some(writer.as_str())) {
                return Err(format!(
                    "the {}'s {key} must name its writer (your staff id)",
                    table.kind
                ));
            }
        }
    }
    Ok(())
}

/// The assessment rules; returns whether the push completes the assessment.
fn check_assessment(ctx: &Context, prior: &Prior, after: &mut AutoCommit) -> Result<bool, String> {
    let (old_type, old_status) = prior.assessment.clone().unwrap_or((None, None));
    if prior.existed && old_status.as_deref() != Some("in_progress") {
        return Err(
            "the assessment is completed and can no longer change; add an amendment instead".into(),
        );
    }
    let ty = record::get_str(after, &ROOT, "type");
    if old_type.is_some() && ty != old_type {
        return Err("an assessment's type never changes".into());
    }
    if !prior.existed {
        for key in [
            field::SCHEMA,
            field::CASE_ID,
            "type",
            field::STATUS,
            "started_at_ms",
        ] {
            if values(after, key).is_empty() {
                return Err(format!("a new assessment needs its {key}"));
            }
        }
    }
    if status(after).as_deref() != Some("completed") {
        return Ok(false);
    }
    if let Some(why) = statutory::completion_problem(after) {
        return Err(why.into());
    }
    let writer = ctx.writer.staff_id.to_string();
    if record::get_i64(after, &ROOT, "completed_at_ms").is_none()
        || record::get_str(after, &ROOT, "completed_by").as_deref() != Some(writer.as_str())
    {
        return Err(
            "a completed assessment needs completed_at_ms and completed_by (your staff id)".into(),
        );
    }
    if !status_is_head(after) {
        return Err(
            "the assessment was changed after it was completed; add an amendment instead".into(),
        );
    }
    Ok(true)
}

/// Whether the change that wrote the root `status` is a head (nothing follows it).
fn status_is_head(after: &mut AutoCommit) -> bool {
    let Ok(Some((_, id))) = after.get(ROOT, field::STATUS) else {
        return true;
    };
    let heads = after.get_heads();
    after
        .hash_for_opid(&id)
        .is_none_or(|hash| heads.contains(&hash))
}

/// Types, required fields, the schema and the case id.
fn check_root(ctx: &Context, prior: &Prior, after: &AutoCommit) -> Result<(), String> {
    let kind = ctx.kind.as_str();
    for (key, ty, required) in fields(ctx.kind) {
        let old = prior.values(key);
        let new = values(after, key);
        let old_ids: HashSet<&ObjId> = old.iter().map(|(_, id)| id).collect();
        for (v, id) in &new {
            if !old_ids.contains(id) && !ty.matches(v) {
                return Err(format!("the {kind}'s {key} must stay {}", ty.name()));
            }
        }
        if *required && !old.is_empty() && new.is_empty() {
            return Err(format!(
                "the {kind}'s {key} is required and may not be deleted"
            ));
        }
        if *required && matches!(ty, Ty::Text | Ty::Map) {
            let new_ids: HashSet<&ObjId> = new.iter().map(|(_, id)| id).collect();
            if old.iter().any(|(_, id)| !new_ids.contains(id)) {
                return Err(format!(
                    "the {kind}'s {key} may not be replaced by a new {}: edit it in place",
                    if *ty == Ty::Text { "text" } else { "map" }
                ));
            }
        }
    }
    if let Some(schema) = &prior.schema {
        let same = values(after, field::SCHEMA)
            .iter()
            .all(|(v, _)| matches!(v, Value::Scalar(s) if s.as_str() == Some(schema.as_str())));
        if !same {
            return Err(format!("the {kind}'s schema never changes"));
        }
    }
    let case = ctx.case_id.to_string();
    let old_case_ids: HashSet<&ObjId> = prior
        .values(field::CASE_ID)
        .iter()
        .map(|(_, id)| id)
        .collect();
    for (v, id) in values(after, field::CASE_ID) {
        let ok = matches!(&v, Value::Scalar(s) if s.as_str() == Some(case.as_str()));
        if !old_case_ids.contains(&id) && !ok {
            return Err(format!(
                "the {kind}'s case_id must be the case the document belongs to"
            ));
        }
    }
    Ok(())
}

/// Every entry of an entry map is a map of strings (but an alert's `raised_at_ms`, an integer),
/// and its status is one of the vocabulary.
fn check_entries(kind: DocKind, after: &AutoCommit) -> Result<(), String> {
    for (map, statuses) in entry_maps(kind) {
        let Some(parent) = record::get_obj(after, &ROOT, map, ObjType::Map) else {
            continue;
        };
        for id in after.keys(&parent).collect::<Vec<_>>() {
            let Some(entry) = record::get_obj(after, &parent, &id, ObjType::Map) else {
                return Err(format!("every entry of {map} must stay a map"));
            };
            for key in after.keys(&entry).collect::<Vec<_>>() {
                for (v, _) in after.get_all(&entry, key.as_str()).unwrap_or_default() {
                    if *map == field::ALERTS && key == field::RAISED_AT {
                        if !Ty::Int.matches(&v) {
                            return Err(format!("{} must be an integer", field::RAISED_AT));
                        }
                        continue;
                    }
                    if !Ty::Str.matches(&v) {
                        return Err(format!("{map} entries hold strings only"));
                    }
                    let bad_status = key == field::STATUS
                        && !statuses.is_empty()
                        && !matches!(&v, Value::Scalar(s) if s.as_str().is_some_and(|st| statuses.contains(&st)));
                    if bad_status {
                        return Err(format!(
                            "a status in {map} must be one of: {}",
                            statuses.join(", ")
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// New signed entries name the writer; no entry's signature changes; a new agreement is the
/// writer's.
fn check_signed(ctx: &Context, prior: &Prior, after: &AutoCommit) -> Result<(), String> {
    let writer = ctx.writer.staff_id.to_string();
    for ((map, sign), before) in signed_maps(ctx.kind).iter().zip(&prior.signed) {
        for (id, by) in signatures(after, map, sign) {
            match before.iter().find(|(old, _)| *old == id) {
                Some((_, old_by)) if *old_by != by => {
                    return Err(format!("the {sign} of an entry of {map} never changes"));
                }
                Some(_) => {}
                None if by.as_deref() != Some(writer.as_str()) => {
                    return Err(format!(
                        "a new entry of {map} must name its writer in {sign} (your staff id)"
                    ));
                }
                None => {}
            }
        }
    }
    let agreement = record::get_obj(after, &ROOT, field::AGREEMENT, ObjType::Map);
    if let Some(new) = agreement.filter(|a| Some(a) != prior.agreement.as_ref()) {
        if record::get_str(after, &new, "by").as_deref() != Some(writer.as_str()) {
            return Err("a new agreement must name its writer in by (your staff id)".into());
        }
    }
    Ok(())
}

fn status(doc: &AutoCommit) -> Option<String> {
    record::get_str(doc, &ROOT, field::STATUS)
}

/// The note rules; returns whether the push files the note.
fn check_note(ctx: &Context, prior: &Prior, after: &mut AutoCommit) -> Result<bool, String> {
    for (v, _) in values(after, field::STATUS) {
        if !matches!(&v, Value::Scalar(s) if matches!(s.as_str(), Some("draft" | "filed"))) {
            return Err("a note's status is either draft or filed".into());
        }
    }
    let facts = prior.note.as_ref();
    let was_filed = facts.is_some_and(|f| f.status.as_deref() == Some("filed"));
    if was_filed {
        return Err("the note is filed and can no longer change; add an amendment instead".into());
    }
    let text =
        record::get_obj(after, &ROOT, field::TEXT, ObjType::Text).and_then(|t| after.text(&t).ok());
    if text.is_some_and(|t| record::vocab::is_blank(&t)) {
        return Err("a note's text may not be empty".into());
    }
    if prior.existed {
        if facts.map(|f| &f.author) != Some(&author_of(after)) {
            return Err("a note's author never changes".into());
        }
    } else {
        check_new_note(ctx, after)?;
    }
    if status(after).as_deref() != Some("filed") {
        return Ok(false);
    }
    check_filing(ctx, after)?;
    Ok(true)
}

/// A new note has every required field, and its author block is the writer's own.
fn check_new_note(ctx: &Context, after: &AutoCommit) -> Result<(), String> {
    for (key, _, required) in fields(DocKind::Note) {
        if *required && values(after, key).is_empty() {
            return Err(format!("a new note needs its {key}"));
        }
    }
    let [staff, role, org, team] = author_of(after);
    let w = &ctx.writer;
    if staff.as_deref() != Some(w.staff_id.to_string().as_str()) {
        return Err("a new note's author must be the staff member who writes it".into());
    }
    // An empty team claims nothing; a team named must be one of the writer's.
    let team_ok = team
        .as_deref()
        .is_some_and(|t| t.is_empty() || w.teams.iter().any(|mine| mine == t));
    if role.as_deref() != Some(w.role.as_str())
        || org.as_deref() != Some(w.org.as_str())
        || !team_ok
    {
        return Err(
            "a new note's author block must give the writer's own role and organisation, and at \
             most one of their teams, as the directory has them"
                .into(),
        );
    }
    Ok(())
}

/// Filing: a time, a late-entry reason when the server receives it late, nothing after it.
fn check_filing(ctx: &Context, after: &mut AutoCommit) -> Result<(), String> {
    let Some(filed) = record::get_i64(after, &ROOT, field::FILED_AT) else {
        return Err("a filed note needs filed_at_ms".into());
    };
    let occurred = record::get_i64(after, &ROOT, field::OCCURRED_AT).unwrap_or(filed);
    let has_reason = record::get_str(after, &ROOT, field::LATE_ENTRY_REASON)
        .is_some_and(|r| !r.trim().is_empty());
    let window = ctx.rules.late_entry_after_ms;
    let late = ctx.received_ms.saturating_sub(occurred) > window
        || filed.saturating_sub(occurred) > window;
    if late && !has_reason {
        return Err(format!(
            "the note reached the server more than {} hours after it happened: it needs a \
             late-entry reason",
            window / 3_600_000
        ));
    }
    // Nothing may follow the filing in the same push: the filing change must be a head.
    if let Ok(Some((_, id))) = after.get(ROOT, field::STATUS) {
        let heads = after.get_heads();
        if let Some(hash) = after.hash_for_opid(&id) {
            if !heads.contains(&hash) {
                return Err(
                    "the note was changed after it was filed; add an amendment instead".into(),
                );
            }
        }
    }
    Ok(())
}
