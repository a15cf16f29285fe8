//! The shape of each record kind as an Automerge document, and the typed edits on it.
//!
//! Both sides share this: the device writes through it, and the server (issue 4) validates
//! incoming changes against the same rules. Free text that several people edit (About Me, plan
//! narratives, a draft note's body) is Automerge `Text`, which merges character by character.
//! Short facts are scalars; when two people write the same scalar concurrently Automerge keeps
//! both, and [`conflicts`] reports every such field with all its values rather than letting one
//! silently win.

pub mod schema;
pub mod statutory;
pub mod vocab;

use crate::ids::{CaseId, DocId};
use crate::limits;
use automerge::transaction::Transactable;
use automerge::{AutoCommit, AutoSerde, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use serde::{Deserialize, Serialize};

/// Field names, in one place so the device, the server and the views agree.
pub mod field {
    pub const SCHEMA: &str = "schema";
    pub const CASE_ID: &str = "case_id";
    pub const NAME: &str = "name";
    pub const NHS_NUMBER: &str = "nhs_number";
    pub const DOB: &str = "dob";
    pub const ADDRESS: &str = "address";
    pub const ABOUT_ME: &str = "about_me";
    pub const ALERTS: &str = "alerts";
    pub const TEAM: &str = "team";
    pub const LEGAL_STATUS: &str = "legal_status";
    pub const CONTACTS: &str = "contacts";
    /// In a case document: the stubs of notes moved to another person's record (misfiled),
    /// keyed by a uuid; each `by`, `at_ms`, `category` and an optional `reason`. Written by the
    /// server only (`casenote-server admin note misfiled`).
    pub const MOVED_NOTES: &str = "moved_notes";
    pub const STATUS: &str = "status";
    pub const NOTE_KIND: &str = "note_kind";
    pub const OCCURRED_AT: &str = "occurred_at_ms";
    pub const RECORDED_AT: &str = "recorded_at_ms";
    pub const FILED_AT: &str = "filed_at_ms";
    pub const AUTHOR: &str = "author";
    pub const TEXT: &str = "text";
    pub const AMENDS: &str = "amends";
    pub const LATE_ENTRY_REASON: &str = "late_entry_reason";
    pub const NARRATIVE: &str = "narrative";
    pub const GOALS: &str = "goals";
    pub const ACTIONS: &str = "actions";
    pub const DISCHARGE_DATE: &str = "discharge_date";
    pub const PATHWAY: &str = "pathway";
    pub const RESOLUTIONS: &str = "resolutions";
    pub const AGREEMENT: &str = "agreement";
    // Fields of the entries of the maps above (an alert, a member of the team around the
    // person, a goal, an action). `by` is an action's "by when" (a date), as the CLI's `--by`.
    pub const WHAT: &str = "what";
    pub const WHO: &str = "who";
    pub const BY: &str = "by";
    pub const RAISED_BY: &str = "raised_by";
    /// When an alert was raised (ms since the epoch, the raising device's clock): the one
    /// integer in an entry map.
    pub const RAISED_AT: &str = "raised_at_ms";
    pub const ORG: &str = "org";
    pub const ROLE: &str = "role";
    pub const WORKER: &str = "worker";
    pub const STAFF_ID: &str = "staff_id";
}

/// Statuses an alert may have.
pub const ALERT_STATUSES: &[&str] = &["active", "resolved"];
/// Statuses a plan action or goal may have.
pub const ACTION_STATUSES: &[&str] = &["open", "in-progress", "done", "cancelled"];

/// The schema tag written into every document's root, per kind.
pub const CASE_SCHEMA: &str = "casenote/case/1";
pub const NOTE_SCHEMA: &str = "casenote/note/1";
pub const PLAN_SCHEMA: &str = "casenote/plan/1";

/// Why a record edit was refused before it touched the document.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(
        "note {0} is filed and can no longer change; add an amendment with `note amend` instead"
    )]
    FiledNoteImmutable(DocId),
    #[error(
        "assessment {0} is completed and can no longer change; add an amendment with \
         `assessment amend` instead"
    )]
    AssessmentCompleted(DocId),
    #[error("assessment {0} is still in progress; edit it instead of amending it")]
    AssessmentInProgress(DocId),
    #[error("a note needs some text: it is empty")]
    EmptyNote,
    #[error("{0}")]
    Refused(String),
    #[error("note {0} is still a draft; edit it instead of amending it")]
    NoteNotFiled(DocId),
    #[error("{field} is {len} bytes; the limit is {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{}", out_of_range(*pos, *del, *len))]
    OutOfRange { pos: usize, del: usize, len: usize },
    #[error("note {note} was written more than {hours} hours after it happened: file it with a late-entry reason (--late-entry-reason)")]
    LateEntryReasonRequired { note: DocId, hours: i64 },
    #[error("{what} {value:?} is not one of: {allowed}")]
    NotAllowed {
        what: &'static str,
        value: String,
        allowed: String,
    },
    #[error("no {0} with id {1} in this record")]
    NoEntry(&'static str, String),
    #[error("{0} holds no conflicting values; nothing to resolve")]
    NoConflict(String),
    #[error("the document is not a valid {0} record: {1}")]
    Invalid(&'static str, String),
    #[error(transparent)]
    Automerge(#[from] automerge::AutomergeError),
}

/// What a splice outside the text says: the position and count as given, and the text's length.
fn out_of_range(pos: usize, del: usize, len: usize) -> String {
    if pos > len {
        format!("position {pos} is past the end of the text ({len} characters)")
    } else {
        format!(
            "cannot delete {del} characters at position {pos}: the text has {len} characters, so \
             at most {} can go from there",
            len - pos
        )
    }
}

/// Checks a free-text field against its limit before it is written.
pub fn check_len(field: &'static str, text: &str, max: usize) -> Result<(), RecordError> {
    if text.len() > max {
        Err(RecordError::TooLong {
            field,
            len: text.len(),
            max,
        })
    } else {
        Ok(())
    }
}

/// A person's identity, as written when the case is opened.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub name: String,
    pub nhs_number: Option<String>,
    pub dob: Option<String>,
    pub address: Option<String>,
}

/// The kind of contact a note records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoteKind {
    Visit,
    Phone,
    Mdt,
    CaseNote,
}

impl NoteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoteKind::Visit => "visit",
            NoteKind::Phone => "phone",
            NoteKind::Mdt => "mdt",
            NoteKind::CaseNote => "case-note",
        }
    }
}

impl std::str::FromStr for NoteKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "visit" => Ok(NoteKind::Visit),
            "phone" => Ok(NoteKind::Phone),
            "mdt" => Ok(NoteKind::Mdt),
            "case-note" => Ok(NoteKind::CaseNote),
            other => Err(format!(
                "unknown note kind {other:?}: use visit, phone, mdt or case-note"
            )),
        }
    }
}

/// Who wrote a note, as recorded inside it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteAuthor {
    pub staff_id: String,
    pub role: String,
    pub org: String,
    pub team: String,
}

/// What an amendment note amends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amends {
    pub note_id: DocId,
    /// `addendum` or `correction`.
    pub kind: String,
    pub reason: String,
}

/// Everything a new note starts with.
#[derive(Clone, Debug)]
pub struct NewNote {
    pub case_id: CaseId,
    pub kind: NoteKind,
    pub author: NoteAuthor,
    pub occurred_at_ms: i64,
    pub recorded_at_ms: i64,
    pub text: String,
    pub amends: Option<Amends>,
    pub late_entry_reason: Option<String>,
}

/// Whether a note can still change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteStatus {
    Draft,
    Filed,
}

fn put_opt(
    doc: &mut AutoCommit,
    obj: &ObjId,
    key: &str,
    v: &Option<String>,
) -> Result<(), RecordError> {
    if let Some(v) = v {
        check_len(field_name(key), v, limits::SHORT_TEXT_BYTES_MAX)?;
        doc.put(obj, key, v.as_str())?;
    }
    Ok(())
}

fn field_name(key: &str) -> &'static str {
    // Error messages name fields; a static name keeps RecordError cheap and comparable.
    match key {
        field::NAME => "name",
        field::NHS_NUMBER => "NHS number",
        field::DOB => "date of birth",
        field::ADDRESS => "address",
        field::LATE_ENTRY_REASON => "late-entry reason",
        _ => "field",
    }
}

fn new_text(
    doc: &mut AutoCommit,
    obj: &ObjId,
    key: &str,
    text: &str,
) -> Result<ObjId, RecordError> {
    let id = doc.put_object(obj, key, ObjType::Text)?;
    if !text.is_empty() {
        doc.splice_text(&id, 0, 0, text)?;
    }
    Ok(id)
}

/// Writes a new case document's skeleton. Only the device that opens the case calls this, so the
/// objects inside (About Me text, alert and team maps) are created once and never conflict.
pub fn init_case(doc: &mut AutoCommit, case_id: CaseId, who: &Identity) -> Result<(), RecordError> {
    check_len("name", &who.name, limits::SHORT_TEXT_BYTES_MAX)?;
    doc.put(ROOT, field::SCHEMA, CASE_SCHEMA)?;
    doc.put(ROOT, field::CASE_ID, case_id.to_string())?;
    doc.put(ROOT, field::NAME, who.name.as_str())?;
    put_opt(doc, &ROOT, field::NHS_NUMBER, &who.nhs_number)?;
    put_opt(doc, &ROOT, field::DOB, &who.dob)?;
    put_opt(doc, &ROOT, field::ADDRESS, &who.address)?;
    new_text(doc, &ROOT, field::ABOUT_ME, "")?;
    doc.put_object(ROOT, field::ALERTS, ObjType::Map)?;
    doc.put_object(ROOT, field::TEAM, ObjType::Map)?;
    doc.put_object(ROOT, field::LEGAL_STATUS, ObjType::Map)?;
    doc.put_object(ROOT, field::CONTACTS, ObjType::Map)?;
    Ok(())
}

/// The schema name of a restricted section (a `restricted` document).
pub const RESTRICTED_SCHEMA: &str = "casenote/restricted/1";

/// Writes a new restricted section: its title and its text.
pub fn init_restricted(
    doc: &mut AutoCommit,
    case_id: CaseId,
    title: &str,
    text: &str,
) -> Result<(), RecordError> {
    if title.trim().is_empty() {
        return Err(RecordError::Refused(
            "a restricted section needs a title (--title)".into(),
        ));
    }
    check_len("title", title, limits::SHORT_TEXT_BYTES_MAX)?;
    check_len("text", text, limits::TEXT_BYTES_MAX)?;
    doc.put(ROOT, field::SCHEMA, RESTRICTED_SCHEMA)?;
    doc.put(ROOT, field::CASE_ID, case_id.to_string())?;
    doc.put(ROOT, "title", title)?;
    new_text(doc, &ROOT, field::NARRATIVE, text)?;
    Ok(())
}

/// Writes a new plan document's skeleton (created together with its case).
pub fn init_plan(doc: &mut AutoCommit, case_id: CaseId) -> Result<(), RecordError> {
    doc.put(ROOT, field::SCHEMA, PLAN_SCHEMA)?;
    doc.put(ROOT, field::CASE_ID, case_id.to_string())?;
    new_text(doc, &ROOT, field::NARRATIVE, "")?;
    doc.put_object(ROOT, field::GOALS, ObjType::Map)?;
    doc.put_object(ROOT, field::ACTIONS, ObjType::Map)?;
    Ok(())
}

/// Writes a new note, as a draft.
pub fn init_note(doc: &mut AutoCommit, note: &NewNote) -> Result<(), RecordError> {
    if vocab::is_blank(&note.text) {
        return Err(RecordError::EmptyNote);
    }
    check_len("note text", &note.text, limits::TEXT_BYTES_MAX)?;
    doc.put(ROOT, field::SCHEMA, NOTE_SCHEMA)?;
    doc.put(ROOT, field::CASE_ID, note.case_id.to_string())?;
    doc.put(ROOT, field::STATUS, "draft")?;
    doc.put(ROOT, field::NOTE_KIND, note.kind.as_str())?;
    doc.put(ROOT, field::OCCURRED_AT, note.occurred_at_ms)?;
    doc.put(ROOT, field::RECORDED_AT, note.recorded_at_ms)?;
    let author = doc.put_object(ROOT, field::AUTHOR, ObjType::Map)?;
    for (k, v) in [
        ("staff_id", &note.author.staff_id),
        ("role", &note.author.role),
        ("org", &note.author.org),
        ("team", &note.author.team),
    ] {
        doc.put(&author, k, v.as_str())?;
    }
    new_text(doc, &ROOT, field::TEXT, &note.text)?;
    put_opt(
        doc,
        &ROOT,
        field::LATE_ENTRY_REASON,
        &note.late_entry_reason,
    )?;
    if let Some(a) = &note.amends {
        check_len("amendment reason", &a.reason, limits::SHORT_TEXT_BYTES_MAX)?;
        let obj = doc.put_object(ROOT, field::AMENDS, ObjType::Map)?;
        doc.put(&obj, "note_id", a.note_id.to_string())?;
        doc.put(&obj, "kind", a.kind.as_str())?;
        doc.put(&obj, "reason", a.reason.as_str())?;
    }
    Ok(())
}

/// A string scalar at `key` in `obj`, if there is one.
pub fn get_str(doc: &AutoCommit, obj: &ObjId, key: &str) -> Option<String> {
    match doc.get(obj, key).ok()?? {
        (Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// An integer scalar at `key` in `obj`, if there is one.
pub fn get_i64(doc: &AutoCommit, obj: &ObjId, key: &str) -> Option<i64> {
    match doc.get(obj, key).ok()?? {
        (Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Int(i) => Some(*i),
            ScalarValue::Uint(u) => i64::try_from(*u).ok(),
            ScalarValue::Timestamp(t) => Some(*t),
            _ => None,
        },
        _ => None,
    }
}

/// The id of the object at `key`, if it is an object of type `ty`.
pub fn get_obj(doc: &AutoCommit, obj: &ObjId, key: &str, ty: ObjType) -> Option<ObjId> {
    match doc.get(obj, key).ok()?? {
        (Value::Object(t), id) if t == ty => Some(id),
        _ => None,
    }
}

/// A note's status; a note whose status is missing or unknown counts as filed (the safe side).
pub fn note_status(doc: &AutoCommit) -> NoteStatus {
    match get_str(doc, &ROOT, field::STATUS).as_deref() {
        Some("draft") => NoteStatus::Draft,
        _ => NoteStatus::Filed,
    }
}

/// Files a draft note. Filing twice is an error: the note is already immutable.
pub fn file_note(
    doc: &mut AutoCommit,
    note_id: DocId,
    filed_at_ms: i64,
) -> Result<(), RecordError> {
    file_note_late(
        doc,
        note_id,
        filed_at_ms,
        None,
        limits::LATE_ENTRY_AFTER_MS_DEFAULT,
    )
}

/// Files a draft note; one filed more than `late_after_ms` after it happened needs a late-entry
/// reason, given now or written when it was drafted.
pub fn file_note_late(
    doc: &mut AutoCommit,
    note_id: DocId,
    filed_at_ms: i64,
    late_entry_reason: Option<&str>,
    late_after_ms: i64,
) -> Result<(), RecordError> {
    ensure_draft(doc, note_id)?;
    if let Some(reason) = late_entry_reason {
        check_len("late-entry reason", reason, limits::SHORT_TEXT_BYTES_MAX)?;
        doc.put(ROOT, field::LATE_ENTRY_REASON, reason)?;
    }
    let occurred = get_i64(doc, &ROOT, field::OCCURRED_AT).unwrap_or(filed_at_ms);
    let has_reason =
        get_str(doc, &ROOT, field::LATE_ENTRY_REASON).is_some_and(|r| !r.trim().is_empty());
    if filed_at_ms.saturating_sub(occurred) > late_after_ms && !has_reason {
        return Err(RecordError::LateEntryReasonRequired {
            note: note_id,
            hours: late_after_ms / 3_600_000,
        });
    }
    doc.put(ROOT, field::STATUS, "filed")?;
    doc.put(ROOT, field::FILED_AT, filed_at_ms)?;
    Ok(())
}

/// Refuses any edit to a filed note.
pub fn ensure_draft(doc: &AutoCommit, note_id: DocId) -> Result<(), RecordError> {
    match note_status(doc) {
        NoteStatus::Draft => Ok(()),
        NoteStatus::Filed => Err(RecordError::FiledNoteImmutable(note_id)),
    }
}

/// Replaces a draft note's text (a minimal character diff, so concurrent edits still merge).
pub fn set_note_text(doc: &mut AutoCommit, note_id: DocId, text: &str) -> Result<(), RecordError> {
    ensure_draft(doc, note_id)?;
    if vocab::is_blank(text) {
        return Err(RecordError::EmptyNote);
    }
    check_len("note text", text, limits::TEXT_BYTES_MAX)?;
    let obj = get_obj(doc, &ROOT, field::TEXT, ObjType::Text)
        .ok_or_else(|| RecordError::Invalid("note", "it has no text".into()))?;
    doc.update_text(&obj, text)?;
    Ok(())
}

/// Splices a Text field at the root (`about_me` on a case, `narrative` on a plan): delete `del`
/// characters at `pos`, then insert `text` there. Positions count Unicode code points.
pub fn splice_root_text(
    doc: &mut AutoCommit,
    kind: &'static str,
    key: &str,
    pos: usize,
    del: usize,
    text: &str,
) -> Result<(), RecordError> {
    check_len("inserted text", text, limits::TEXT_BYTES_MAX)?;
    let obj = get_obj(doc, &ROOT, key, ObjType::Text)
        .ok_or_else(|| RecordError::Invalid(kind, format!("it has no {key} text")))?;
    let len = doc.length(&obj);
    match pos.checked_add(del) {
        Some(end) if end <= len => {}
        _ => return Err(RecordError::OutOfRange { pos, del, len }),
    }
    let del = isize::try_from(del).map_err(|_| RecordError::OutOfRange { pos, del, len })?;
    doc.splice_text(&obj, pos, del, text)?;
    Ok(())
}

/// Appends to a root Text field.
pub fn append_root_text(
    doc: &mut AutoCommit,
    kind: &'static str,
    key: &str,
    text: &str,
) -> Result<(), RecordError> {
    let obj = get_obj(doc, &ROOT, key, ObjType::Text)
        .ok_or_else(|| RecordError::Invalid(kind, format!("it has no {key} text")))?;
    let len = doc.length(&obj);
    splice_root_text(doc, kind, key, len, 0, text)
}

/// Sets a root scalar string field (discharge date, pathway on a plan).
pub fn set_root_str(doc: &mut AutoCommit, key: &str, value: &str) -> Result<(), RecordError> {
    check_len("value", value, limits::SHORT_TEXT_BYTES_MAX)?;
    doc.put(ROOT, key, value)?;
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

fn root_map(doc: &AutoCommit, key: &str, kind: &'static str) -> Result<ObjId, RecordError> {
    get_obj(doc, &ROOT, key, ObjType::Map)
        .ok_or_else(|| RecordError::Invalid(kind, format!("it has no {key} map")))
}

/// Adds an entry keyed by a fresh uuid to a root map, with string fields; returns its id.
fn add_entry(
    doc: &mut AutoCommit,
    kind: &'static str,
    map: &str,
    fields: &[(&str, &str)],
) -> Result<String, RecordError> {
    let parent = root_map(doc, map, kind)?;
    let id = uuid::Uuid::new_v4().to_string();
    let entry = doc.put_object(&parent, id.as_str(), ObjType::Map)?;
    for (k, v) in fields {
        check_len("field", v, limits::TEXT_BYTES_MAX)?;
        doc.put(&entry, *k, *v)?;
    }
    Ok(id)
}

/// Sets `status` on the entry `id` of a root map, if it exists.
fn set_entry_status(
    doc: &mut AutoCommit,
    kind: &'static str,
    map: &str,
    what: &'static str,
    id: &str,
    status: &str,
) -> Result<(), RecordError> {
    let parent = root_map(doc, map, kind)?;
    let entry = get_obj(doc, &parent, id, ObjType::Map)
        .ok_or_else(|| RecordError::NoEntry(what, id.to_string()))?;
    doc.put(&entry, field::STATUS, status)?;
    Ok(())
}

/// Raises an alert on a case ("visit in pairs") at `raised_at_ms` (the device's clock);
/// returns its id.
pub fn add_alert(
    doc: &mut AutoCommit,
    text: &str,
    raised_by: &str,
    raised_at_ms: i64,
) -> Result<String, RecordError> {
    check_len("alert", text, limits::SHORT_TEXT_BYTES_MAX)?;
    let id = add_entry(
        doc,
        "case",
        field::ALERTS,
        &[
            ("text", text),
            (field::STATUS, "active"),
            (field::RAISED_BY, raised_by),
        ],
    )?;
    let alerts = root_map(doc, field::ALERTS, "case")?;
    let entry = get_obj(doc, &alerts, &id, ObjType::Map)
        .ok_or_else(|| RecordError::NoEntry("alert", id.clone()))?;
    doc.put(&entry, field::RAISED_AT, raised_at_ms)?;
    Ok(id)
}

/// Adds a member to the team around the person (informational, inside the record: who is
/// involved and how to reach them; which teams may hold the case is decided on the server).
pub fn add_team_member(
    doc: &mut AutoCommit,
    org: &str,
    team: &str,
    role: &str,
    worker: &str,
) -> Result<String, RecordError> {
    for v in [org, team, role, worker] {
        check_len("team member field", v, limits::SHORT_TEXT_BYTES_MAX)?;
    }
    add_entry(
        doc,
        "case",
        field::TEAM,
        &[
            (field::ORG, org),
            (field::TEAM, team),
            (field::ROLE, role),
            (field::WORKER, worker),
        ],
    )
}

/// Sets an alert's status (a safety-critical field: concurrent writes show as conflicts).
pub fn set_alert_status(
    doc: &mut AutoCommit,
    alert_id: &str,
    status: &str,
) -> Result<(), RecordError> {
    check_allowed("alert status", status, ALERT_STATUSES)?;
    set_entry_status(doc, "case", field::ALERTS, "alert", alert_id, status)
}

/// Adds a goal to a plan (in the person's words); returns its id.
pub fn add_goal(doc: &mut AutoCommit, text: &str) -> Result<String, RecordError> {
    add_entry(
        doc,
        "plan",
        field::GOALS,
        &[("text", text), (field::STATUS, "open")],
    )
}

/// Adds an action to a plan: what, who, by when; returns its id.
pub fn add_action(
    doc: &mut AutoCommit,
    what: &str,
    who: &str,
    by_when: &str,
) -> Result<String, RecordError> {
    add_entry(
        doc,
        "plan",
        field::ACTIONS,
        &[
            (field::WHAT, what),
            (field::WHO, who),
            (field::BY, by_when),
            (field::STATUS, "open"),
        ],
    )
}

/// Sets an action's or a goal's status (safety-critical: concurrent writes show as conflicts).
pub fn set_action_status(
    doc: &mut AutoCommit,
    map: &str,
    id: &str,
    status: &str,
) -> Result<(), RecordError> {
    check_allowed("status", status, ACTION_STATUSES)?;
    let what = if map == field::GOALS {
        "goal"
    } else {
        "action"
    };
    set_entry_status(doc, "plan", map, what, id, status)
}

/// Settles a conflicted field: writes `value` (which supersedes every concurrent value, since it
/// comes after all of them) and records the resolution, with the values it replaced, by whom and
/// when, in the document's `resolutions` map.
pub fn resolve(
    doc: &mut AutoCommit,
    path: &[String],
    value: &str,
    by: &str,
    at_ms: i64,
) -> Result<(), RecordError> {
    let shown = path.join(".");
    let (last, parents) = path
        .split_last()
        .ok_or_else(|| RecordError::NoConflict(shown.clone()))?;
    let mut obj = ROOT;
    for key in parents {
        obj = get_obj(doc, &obj, key, ObjType::Map)
            .ok_or_else(|| RecordError::NoEntry("field", shown.clone()))?;
    }
    let before: Vec<serde_json::Value> = doc
        .get_all(&obj, last.as_str())?
        .iter()
        .map(|(v, _)| match v {
            Value::Scalar(s) => scalar_json(s),
            Value::Object(t) => serde_json::json!({ "object": format!("{t:?}") }),
        })
        .collect();
    if before.len() < 2 {
        return Err(RecordError::NoConflict(shown));
    }
    check_len("value", value, limits::SHORT_TEXT_BYTES_MAX)?;
    doc.put(&obj, last.as_str(), value)?;
    let log = match get_obj(doc, &ROOT, field::RESOLUTIONS, ObjType::Map) {
        Some(m) => m,
        None => doc.put_object(ROOT, field::RESOLUTIONS, ObjType::Map)?,
    };
    let entry = doc.put_object(&log, uuid::Uuid::new_v4().to_string(), ObjType::Map)?;
    doc.put(&entry, "field", shown.as_str())?;
    doc.put(&entry, "chosen", value)?;
    doc.put(
        &entry,
        "replaced",
        serde_json::Value::Array(before).to_string(),
    )?;
    doc.put(&entry, "by", by)?;
    doc.put(&entry, "at_ms", at_ms)?;
    Ok(())
}

/// Records that the plan was agreed with the person, at the plan's current heads.
pub fn agree_plan(
    doc: &mut AutoCommit,
    with: &str,
    by: &str,
    at_ms: i64,
) -> Result<(), RecordError> {
    check_len("agreed with", with, limits::SHORT_TEXT_BYTES_MAX)?;
    let heads: Vec<String> = doc.get_heads().iter().map(|h| h.to_string()).collect();
    let agreement = doc.put_object(ROOT, field::AGREEMENT, ObjType::Map)?;
    doc.put(&agreement, "with", with)?;
    doc.put(&agreement, "by", by)?;
    doc.put(&agreement, "at_ms", at_ms)?;
    doc.put(&agreement, "heads", heads.join(","))?;
    Ok(())
}

/// The plan's agreement, if any, and whether anything changed since: the plan is unchanged only
/// while the change that recorded the agreement is its one head.
pub fn agreement_status(doc: &mut AutoCommit) -> Option<serde_json::Value> {
    let obj = get_obj(doc, &ROOT, field::AGREEMENT, ObjType::Map)?;
    let recorded_in = doc.hash_for_opid(&obj)?;
    let changed = doc.get_heads() != vec![recorded_in];
    Some(serde_json::json!({
        "with": get_str(doc, &obj, "with"),
        "by": get_str(doc, &obj, "by"),
        "at_ms": get_i64(doc, &obj, "at_ms"),
        "heads": get_str(doc, &obj, "heads"),
        "changed_since_agreed": changed,
    }))
}

/// One field that holds more than one value because people wrote it concurrently.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// Path from the root, e.g. `["alerts", "<uuid>", "status"]`.
    pub path: Vec<String>,
    /// Every concurrent value, in Automerge's deterministic order (the first is the one shown).
    pub values: Vec<serde_json::Value>,
    /// Who wrote each value, in the same order: the author of the change that wrote it.
    #[serde(default)]
    pub written_by: Vec<Writer>,
}

/// Who wrote one value: the author the change carries (a staff id, bound to its writer by the
/// server, which refuses a change under someone else's author) and the writer's device clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    /// `None` for a change without an author (written before authors were recorded).
    pub staff_id: Option<String>,
    /// The writing device's clock when the change was made (ms since the epoch; it may be
    /// wrong: the server keeps its own receipt time).
    pub device_time_ms: i64,
}

/// The writer of the value whose operation is `op`.
fn writer_of(doc: &AutoCommit, op: &ObjId) -> Writer {
    let change = doc
        .hash_for_opid(op)
        .and_then(|h| ReadDoc::get_change_by_hash(doc, &h));
    // Automerge writes the author into each actor's first change only; later changes of the
    // actor are attributed through the document's actor-to-author map.
    let author = change.as_ref().and_then(|c| {
        c.author().map(|a| a.as_bytes().to_vec()).or_else(|| {
            doc.get_author_for_actor(c.actor_id())
                .map(|a| a.as_bytes().to_vec())
        })
    });
    Writer {
        staff_id: author
            .and_then(|a| uuid::Uuid::from_slice(&a).ok())
            .map(|u| u.to_string()),
        device_time_ms: change.as_ref().map_or(0, |c| c.timestamp()),
    }
}

fn scalar_json(v: &ScalarValue) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Every map field anywhere in the document that holds concurrent values. A document that
/// breaks the structure limits ([`crate::shape`]) is not walked: it reports none, and
/// [`content_json`] withholds it.
pub fn conflicts(doc: &AutoCommit) -> Vec<Conflict> {
    match crate::shape::check(doc) {
        Ok(_) => conflicts_within_limits(doc),
        Err(_) => Vec::new(),
    }
}

/// A document's content ([`content_json`]) and its conflicts ([`conflicts`]), with the document
/// walked once for the structure limits where the two would walk it once each: every walk reads
/// every element of every text, and a device shows a record, each of its documents, at every
/// sync that changed it (in W5, the two checks were an eighth of the process's samples).
pub fn view(doc: &AutoCommit) -> (serde_json::Value, Vec<Conflict>) {
    match crate::shape::check(doc) {
        Ok(_) => (content_within_limits(doc), conflicts_within_limits(doc)),
        Err(e) => (withheld(&e), Vec::new()),
    }
}

/// [`conflicts`] of a document known to be within the structure limits.
fn conflicts_within_limits(doc: &AutoCommit) -> Vec<Conflict> {
    let mut out = Vec::new();
    // An explicit stack of (map, its path), in the order a depth-first walk would visit them.
    let mut stack: Vec<(ObjId, Vec<String>)> = vec![(ROOT, Vec::new())];
    while let Some((obj, path)) = stack.pop() {
        let mut children = Vec::new();
        for key in doc.keys(&obj).collect::<Vec<String>>() {
            let Ok(all) = doc.get_all(&obj, key.as_str()) else {
                continue;
            };
            let mut here = path.clone();
            here.push(key);
            if all.len() > 1 {
                let values: Vec<serde_json::Value> = all
                    .iter()
                    .map(|(v, _)| match v {
                        Value::Scalar(s) => scalar_json(s),
                        Value::Object(t) => serde_json::json!({ "object": format!("{t:?}") }),
                    })
                    .collect();
                // The same value written twice is agreement, not a conflict for a person to settle.
                if values.iter().any(|v| *v != values[0]) {
                    out.push(Conflict {
                        path: here.clone(),
                        values,
                        written_by: all.iter().map(|(_, op)| writer_of(doc, op)).collect(),
                    });
                }
            }
            if let Some((Value::Object(ObjType::Map | ObjType::Table), child)) = all.first() {
                children.push((child.clone(), here));
            }
        }
        stack.extend(children.into_iter().rev());
    }
    out
}

/// What [`content_json`] shows in place of a document that breaks the structure limits.
pub const WITHHELD: &str = "withheld";

/// The document's content as JSON: identical on every device holding the same changes. A
/// document that breaks the structure limits ([`crate::shape`]; only one stored before the
/// server checked them could) is never walked: the view is `{"withheld": why}` instead.
pub fn content_json(doc: &AutoCommit) -> serde_json::Value {
    match crate::shape::check(doc) {
        Ok(_) => content_within_limits(doc),
        Err(e) => withheld(&e),
    }
}

/// [`content_json`] of a document known to be within the structure limits (the serializer
/// recurses, which only a document within them makes safe).
fn content_within_limits(doc: &AutoCommit) -> serde_json::Value {
    serde_json::to_value(AutoSerde::from(doc)).unwrap_or(serde_json::Value::Null)
}

/// What is shown in place of a document that breaks the structure limits.
fn withheld(e: &crate::shape::ShapeError) -> serde_json::Value {
    serde_json::json!({
        WITHHELD: format!("this document breaks the structure limits ({e}); it is not shown")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fork_pair(doc: &mut AutoCommit) -> AutoCommit {
        doc.fork().with_actor(automerge::ActorId::random())
    }

    #[test]
    fn concurrent_about_me_edits_keep_every_character() {
        let mut a = AutoCommit::new();
        init_case(
            &mut a,
            CaseId::new_random(),
            &Identity {
                name: "Test Person".into(),
                ..Default::default()
            },
        )
        .unwrap();
        append_root_text(&mut a, "case", field::ABOUT_ME, "Call me Peggy.").unwrap();
        let mut b = fork_pair(&mut a);
        append_root_text(&mut a, "case", field::ABOUT_ME, " I feed the birds at 7am.").unwrap();
        splice_root_text(&mut b, "case", field::ABOUT_ME, 0, 0, "[B] ").unwrap();
        a.merge(&mut b).unwrap();
        let text = content_json(&a)[field::ABOUT_ME]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(text, "[B] Call me Peggy. I feed the birds at 7am.");
    }

    /// A plan whose discharge date two devices wrote at once.
    fn discharge_dates_written_at_once() -> AutoCommit {
        let mut a = AutoCommit::new();
        init_plan(&mut a, CaseId::new_random()).unwrap();
        let mut b = fork_pair(&mut a);
        set_root_str(&mut a, field::DISCHARGE_DATE, "2026-11-30").unwrap();
        set_root_str(&mut b, field::DISCHARGE_DATE, "2026-12-02").unwrap();
        a.merge(&mut b).unwrap();
        a
    }

    #[test]
    fn the_view_is_the_content_and_the_conflicts_each_would_give_and_withholds_what_they_withhold()
    {
        let a = discharge_dates_written_at_once();
        let (content, found) = view(&a);
        assert_eq!(found, conflicts(&a));
        assert_eq!(found.len(), 1);
        assert_eq!(content, content_json(&a));
        assert!(content.get(field::DISCHARGE_DATE).is_some(), "{content}");
        // Objects nested past the limit, and a root field two devices wrote at once.
        let mut deep = AutoCommit::new();
        let mut obj = ROOT;
        for _ in 0..=crate::limits::DOC_DEPTH_MAX {
            obj = deep.put_object(&obj, "m", ObjType::Map).unwrap();
        }
        let mut other = fork_pair(&mut deep);
        deep.put(&ROOT, "x", "one").unwrap();
        other.put(&ROOT, "x", "two").unwrap();
        deep.merge(&mut other).unwrap();
        let (content, found) = view(&deep);
        assert_eq!(content, content_json(&deep));
        assert!(content.get(WITHHELD).is_some(), "{content}");
        assert!(found.is_empty() && conflicts(&deep).is_empty());
    }

    #[test]
    fn concurrent_scalar_writes_are_reported_with_both_values() {
        let a = discharge_dates_written_at_once();
        let found = conflicts(&a);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, vec![field::DISCHARGE_DATE.to_string()]);
        let mut values: Vec<String> = found[0]
            .values
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        values.sort();
        assert_eq!(values, vec!["2026-11-30", "2026-12-02"]);
    }

    #[test]
    fn a_conflict_says_who_wrote_each_value_even_after_a_save_and_load() {
        let (priya, mark) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let mut a = AutoCommit::new();
        init_plan(&mut a, CaseId::new_random()).unwrap();
        a.commit();
        let mut b = fork_pair(&mut a);
        a.set_author(Some(automerge::Author::from(priya.as_bytes().to_vec())));
        b.set_author(Some(automerge::Author::from(mark.as_bytes().to_vec())));
        // Two changes by the same actor: only the first carries the author.
        set_root_str(&mut a, field::DISCHARGE_DATE, "2026-11-29").unwrap();
        a.commit_with(automerge::transaction::CommitOptions::default().with_time(500));
        set_root_str(&mut a, field::DISCHARGE_DATE, "2026-11-30").unwrap();
        a.commit_with(automerge::transaction::CommitOptions::default().with_time(1_000));
        set_root_str(&mut b, field::DISCHARGE_DATE, "2026-12-02").unwrap();
        b.commit_with(automerge::transaction::CommitOptions::default().with_time(2_000));
        a.merge(&mut b).unwrap();
        let loaded = AutoCommit::load(&a.save()).unwrap();
        for doc in [&a, &loaded] {
            let found = conflicts(doc);
            assert_eq!(found.len(), 1);
            let c = &found[0];
            assert_eq!(c.written_by.len(), 2);
            for (value, w) in c.values.iter().zip(&c.written_by) {
                let (who, at) = if value == "2026-11-30" {
                    (priya, 1_000)
                } else {
                    (mark, 2_000)
                };
                assert_eq!(
                    w.staff_id.as_deref(),
                    Some(who.to_string().as_str()),
                    "{c:?}"
                );
                assert_eq!(w.device_time_ms, at);
            }
        }
    }

    #[test]
    fn the_same_value_written_concurrently_is_not_a_conflict() {
        let mut a = AutoCommit::new();
        init_plan(&mut a, CaseId::new_random()).unwrap();
        let mut b = fork_pair(&mut a);
        set_root_str(&mut a, field::PATHWAY, "1").unwrap();
        set_root_str(&mut b, field::PATHWAY, "1").unwrap();
        a.merge(&mut b).unwrap();
        assert!(conflicts(&a).is_empty());
    }

    #[test]
    fn a_filed_note_refuses_every_edit() {
        let mut doc = AutoCommit::new();
        let id = DocId::new_random();
        init_note(
            &mut doc,
            &NewNote {
                case_id: CaseId::new_random(),
                kind: NoteKind::Visit,
                author: NoteAuthor::default(),
                occurred_at_ms: 1,
                recorded_at_ms: 2,
                text: "Seen at home.".into(),
                amends: None,
                late_entry_reason: None,
            },
        )
        .unwrap();
        set_note_text(&mut doc, id, "Seen at home; well.").unwrap();
        file_note(&mut doc, id, 3).unwrap();
        assert!(matches!(
            set_note_text(&mut doc, id, "changed"),
            Err(RecordError::FiledNoteImmutable(_))
        ));
        assert!(matches!(
            file_note(&mut doc, id, 4),
            Err(RecordError::FiledNoteImmutable(_))
        ));
        assert_eq!(content_json(&doc)[field::TEXT], "Seen at home; well.");
    }

    #[test]
    fn a_resolution_settles_a_conflict_and_is_itself_recorded() {
        let mut a = AutoCommit::new();
        init_plan(&mut a, CaseId::new_random()).unwrap();
        let mut b = fork_pair(&mut a);
        set_root_str(&mut a, field::PATHWAY, "1").unwrap();
        set_root_str(&mut b, field::PATHWAY, "2").unwrap();
        a.merge(&mut b).unwrap();
        assert!(matches!(
            resolve(&mut a, &["narrative".into()], "x", "s", 1),
            Err(RecordError::NoConflict(_))
        ));
        resolve(&mut a, &[field::PATHWAY.into()], "1", "staff-1", 5).unwrap();
        assert!(conflicts(&a).is_empty());
        let content = content_json(&a);
        assert_eq!(content[field::PATHWAY], "1");
        let log: Vec<&serde_json::Value> = content[field::RESOLUTIONS]
            .as_object()
            .unwrap()
            .values()
            .collect();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0]["field"], field::PATHWAY);
        assert_eq!(log[0]["by"], "staff-1");
        assert!(log[0]["replaced"].as_str().unwrap().contains('2'));
    }

    #[test]
    fn an_agreed_plan_shows_changed_since_agreed_after_any_later_edit() {
        let mut doc = AutoCommit::new();
        init_plan(&mut doc, CaseId::new_random()).unwrap();
        append_root_text(&mut doc, "plan", field::NARRATIVE, "Home with support.").unwrap();
        assert!(agreement_status(&mut doc).is_none());
        agree_plan(&mut doc, "Peggy and her son", "staff-1", 10).unwrap();
        doc.commit();
        assert_eq!(
            agreement_status(&mut doc).unwrap()["changed_since_agreed"],
            false
        );
        append_root_text(&mut doc, "plan", field::NARRATIVE, " Key safe fitted.").unwrap();
        doc.commit();
        assert_eq!(
            agreement_status(&mut doc).unwrap()["changed_since_agreed"],
            true
        );
        agree_plan(&mut doc, "Peggy", "staff-1", 20).unwrap();
        doc.commit();
        assert_eq!(
            agreement_status(&mut doc).unwrap()["changed_since_agreed"],
            false
        );
    }

    #[test]
    fn filing_a_day_late_needs_a_reason() {
        let mut doc = AutoCommit::new();
        let id = DocId::new_random();
        let day = limits::LATE_ENTRY_AFTER_MS_DEFAULT;
        init_note(
            &mut doc,
            &NewNote {
                case_id: CaseId::new_random(),
                kind: NoteKind::Visit,
                author: NoteAuthor::default(),
                occurred_at_ms: 0,
                recorded_at_ms: day + 6 * 3_600_000,
                text: "Visited.".into(),
                amends: None,
                late_entry_reason: None,
            },
        )
        .unwrap();
        assert!(matches!(
            file_note(&mut doc, id, day + 1),
            Err(RecordError::LateEntryReasonRequired { .. })
        ));
        file_note_late(&mut doc, id, day + 1, Some("no signal at the farm"), day).unwrap();
        assert_eq!(note_status(&doc), NoteStatus::Filed);
    }

    #[test]
    fn statuses_outside_the_vocabulary_are_refused() {
        let mut doc = AutoCommit::new();
        init_case(&mut doc, CaseId::new_random(), &Identity::default()).unwrap();
        let alert = add_alert(&mut doc, "Visit in pairs", "staff-1", 1_700_000_000_000).unwrap();
        assert!(matches!(
            set_alert_status(&mut doc, &alert, "gone"),
            Err(RecordError::NotAllowed { .. })
        ));
        assert!(matches!(
            set_alert_status(&mut doc, "nope", "resolved"),
            Err(RecordError::NoEntry(..))
        ));
        set_alert_status(&mut doc, &alert, "resolved").unwrap();
        assert_eq!(
            content_json(&doc)[field::ALERTS][&alert][field::STATUS],
            "resolved"
        );
    }

    #[test]
    fn a_splice_past_the_end_is_an_error_not_a_panic() {
        let mut doc = AutoCommit::new();
        init_plan(&mut doc, CaseId::new_random()).unwrap();
        append_root_text(&mut doc, "plan", field::NARRATIVE, "abc").unwrap();
        assert!(matches!(
            splice_root_text(&mut doc, "plan", field::NARRATIVE, 2, 5, "x"),
            Err(RecordError::OutOfRange { .. })
        ));
        assert!(splice_root_text(
            &mut doc,
            "plan",
            field::NARRATIVE,
            usize::MAX,
            usize::MAX,
            "x"
        )
        .is_err());
    }
}
