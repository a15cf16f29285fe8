//! The record rules the server enforces on every incoming change (issue 4, server side).
//!
//! A device is trusted with its own edits, not with the record: the same rules the device's record
//! API keeps (`casenote_protocol::record`) are checked here, on the document as it would be after
//! the push. For each pushed document with changes new to the server, [`materialise`] loads the
//! document as stored (all its stored changes in ONE `apply_changes` batch: DESIGN.md, "Facts
//! measured"), the new changes are applied to a copy, and [`check`] compares before and after:
//!
//! - every kind: known root fields keep their types ([`fields`], one small table per kind); the
//!   `schema` field never changes; `case_id` always names the case in the server's header;
//!   required root fields are never deleted, and the objects they hold (texts, maps) are never
//!   replaced by new ones (which would wipe them).
//! - note: a new note carries every required field and an author whose `staff_id` is the pushing
//!   staff member; the author never changes afterwards; `status` is `draft` or `filed`; once filed
//!   nothing in the note changes (its content and its conflicts are compared) and it never goes
//!   back to draft; filing needs `filed_at_ms`, a `late_entry_reason` when it is filed more than
//!   the configured window after `occurred_at_ms`, and nothing after it in the same push (the
//!   filing change must be a head).
//!
//! When the push as a whole breaks a rule, [`first_violation`] finds the change at which it
//! started (a bisection over prefixes: O(log n) batches, only on the refusal path), so the
//! device is told which change broke which rule. Reasons name fields and rules, never content.
//!
//! Cost: per pushed document with new changes, one batch apply of the new changes: to the stored
//! state in place ([`validate_in_place`], after taking what the rules read of the state before,
//! [`Prior`]) for every kind but notes, to a copy of it for notes ([`validate`]); a refusal loads
//! the stored state again to name the change. Loading the stored state (in proportion to its
//! history: about 9 ms at 200 changes, about 120 ms at 2,000) is paid only when it is not in the
//! small cache of documents validated recently ([`DocCache`], at most
//! `limits::SERVER_DOC_CACHE_DOCS_MAX`), and then before the store's write lock
//! (`crate::sync`). A cached state is used only when its heads equal the stored heads, so it can
//! never be stale. Documents whose push holds only duplicates are not loaded at all.

use crate::store::{Store, StoreError};
use automerge::{AutoCommit, Change, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use casenote_protocol::record::{self, field};
use casenote_protocol::wire::{from_wire_heads, Hash};
use casenote_protocol::DocId;
use casenote_protocol::{limits, CaseId, DocKind, StaffId};
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, OnceLock};

/// Settings of the rules that are not fixed by the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Filing a note more than this long after it happened needs a late-entry reason.
    pub late_entry_after_ms: i64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            late_entry_after_ms: limits::LATE_ENTRY_AFTER_MS_DEFAULT,
        }
    }
}

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

/// The known root fields of `kind` (the common ones first).
pub fn fields(kind: DocKind) -> impl Iterator<Item = &'static FieldRule> {
    let own: &'static [FieldRule] = match kind {
        DocKind::Case => CASE,
        DocKind::Note => NOTE,
        DocKind::Plan => PLAN,
        DocKind::Restricted => RESTRICTED,
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
        DocKind::Note | DocKind::Restricted => &[],
    }
}

/// Every entry of an entry map is a map of strings, and its status is one of the vocabulary.
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
                let values = after.get_all(&entry, key.as_str()).unwrap_or_default();
                for (v, _) in &values {
                    if !Ty::Str.matches(v) {
                        return Err(format!(
                            "{map} entries hold strings only ({key} is not one)"
                        ));
                    }
                    if key == field::STATUS && !statuses.is_empty() {
                        let Value::Scalar(s) = v else { continue };
                        if !s.as_str().is_some_and(|st| statuses.contains(&st)) {
                            return Err(format!(
                                "a status in {map} must be one of: {}",
                                statuses.join(", ")
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Who pushes, into which document.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    pub kind: DocKind,
    pub case_id: CaseId,
    pub pusher: StaffId,
    pub rules: Rules,
}

/// Why the stored document could not be materialised (a server-side problem, not the device's).
fn corrupt(doc: impl std::fmt::Display, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("document {doc} does not load from its log: {e}"))
}

/// Loads document `doc` as stored: every stored change, applied in one batch.
pub fn materialise(
    store: &dyn Store,
    doc: casenote_protocol::DocId,
) -> Result<AutoCommit, StoreError> {
    let seqs = store.doc_change_seqs(doc)?;
    let mut changes = Vec::with_capacity(seqs.len());
    for seq in seqs {
        if let Some((_, _, bytes)) = store.get_log(seq)? {
            changes.push(Change::from_bytes(bytes).map_err(|e| corrupt(doc, e))?);
        }
    }
    let mut out = AutoCommit::new();
    if !changes.is_empty() {
        apply(&mut out, changes).map_err(|e| corrupt(doc, e))?;
    }
    Ok(out)
}

/// Recently validated documents, as they are stored: a process-wide, bounded cache. An entry is
/// used only if its heads equal the heads the store holds for the document (the same heads mean
/// the same changes, so the same state), whichever store it came from.
#[derive(Default)]
pub struct DocCache {
    docs: HashMap<DocId, (u64, AutoCommit)>,
    tick: u64,
}

fn cache() -> &'static Mutex<DocCache> {
    static CACHE: OnceLock<Mutex<DocCache>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(DocCache::default()))
}

fn sorted(mut heads: Vec<automerge::ChangeHash>) -> Vec<automerge::ChangeHash> {
    heads.sort();
    heads
}

/// Document `doc` as stored with `heads`: from the cache when it holds that state, else
/// [`materialise`]d.
pub fn load(store: &dyn Store, doc: DocId, heads: &[Hash]) -> Result<AutoCommit, StoreError> {
    let cached = cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .docs
        .remove(&doc);
    if let Some((_, mut state)) = cached {
        if sorted(state.get_heads()) == sorted(from_wire_heads(heads)) {
            return Ok(state);
        }
    }
    materialise(store, doc)
}

/// Whether the cache holds document `doc` as stored with `heads` (it is then cheap to load).
pub fn cached(doc: DocId, heads: &[Hash]) -> bool {
    let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
    match c.docs.get_mut(&doc) {
        Some((_, state)) => sorted(state.get_heads()) == sorted(from_wire_heads(heads)),
        None => false,
    }
}

/// Whether `doc` has exactly the heads `heads`.
pub fn has_heads(doc: &mut AutoCommit, heads: &[Hash]) -> bool {
    sorted(doc.get_heads()) == sorted(from_wire_heads(heads))
}

/// Keeps `state` as document `doc`'s latest validated state, evicting the least recently kept
/// entry beyond the limit.
pub fn keep(doc: DocId, state: AutoCommit) {
    let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
    c.tick += 1;
    let tick = c.tick;
    c.docs.insert(doc, (tick, state));
    while c.docs.len() > limits::SERVER_DOC_CACHE_DOCS_MAX {
        let oldest = c.docs.iter().min_by_key(|(_, (t, _))| *t).map(|(d, _)| *d);
        match oldest {
            Some(d) => c.docs.remove(&d),
            None => break,
        };
    }
}

/// Applies `changes` in one batch; a panic inside Automerge becomes an error.
pub fn apply(doc: &mut AutoCommit, changes: Vec<Change>) -> Result<(), String> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| doc.apply_changes(changes))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("applying the changes failed".into()),
    }
}

/// The state after applying `changes` to a copy of `before`.
fn after(before: &AutoCommit, changes: &[Change]) -> Result<AutoCommit, String> {
    let mut doc = before.clone();
    apply(&mut doc, changes.to_vec())?;
    Ok(doc)
}

/// Checks the whole push; on a violation, names the change at which it started and the rule.
/// `before` is `None` for a document new to the server. Returns the state after the push.
pub fn validate(
    ctx: &Context,
    before: Option<&AutoCommit>,
    changes: &[Change],
) -> Result<AutoCommit, (usize, String)> {
    let empty = AutoCommit::new();
    let base = before.unwrap_or(&empty);
    let mut full =
        after(base, changes).map_err(|e| (0, format!("the changes do not apply: {e}")))?;
    match check(ctx, before, &mut full) {
        Ok(()) => Ok(full),
        Err(reason) => Err(first_violation(ctx, before, changes)
            .unwrap_or((changes.len().saturating_sub(1), reason))),
    }
}

/// Bisects over prefixes of `changes` for the first one after which the rules fail: the prefix
/// of length `lo` passes (the empty prefix is the stored document, assumed to pass), `hi` fails.
fn first_violation(
    ctx: &Context,
    before: Option<&AutoCommit>,
    changes: &[Change],
) -> Option<(usize, String)> {
    let empty = AutoCommit::new();
    let base = before.unwrap_or(&empty);
    let probe = |n: usize| -> Result<(), String> {
        let mut doc = after(base, &changes[..n])?;
        check(ctx, before, &mut doc)
    };
    let (mut lo, mut hi) = (0usize, changes.len());
    let mut reason = probe(hi).err()?;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match probe(mid) {
            Ok(()) => lo = mid,
            Err(r) => {
                hi = mid;
                reason = r;
            }
        }
    }
    Some((hi - 1, reason))
}

/// Every value `obj.key` holds (more than one when written concurrently).
fn values<'a>(doc: &'a AutoCommit, key: &str) -> Vec<(Value<'a>, automerge::ObjId)> {
    doc.get_all(ROOT, key).unwrap_or_default()
}

/// What the rules read of a document before a push, outside the note rules: every value (with
/// its object id) of each known root field of the kind, and the schema. Taken before the new
/// changes are applied, so that they can be applied to the stored state in place.
pub struct Prior {
    fields: Vec<(&'static str, Vec<(Value<'static>, automerge::ObjId)>)>,
    schema: Option<String>,
}

impl Prior {
    /// What the rules of `kind` read of `before`.
    pub fn of(kind: DocKind, before: &AutoCommit) -> Prior {
        Prior {
            fields: fields(kind)
                .map(|(key, _, _)| {
                    let owned = values(before, key)
                        .into_iter()
                        .map(|(v, id)| (v.into_owned(), id))
                        .collect();
                    (*key, owned)
                })
                .collect(),
            schema: record::get_str(before, &ROOT, field::SCHEMA),
        }
    }

    fn values(&self, key: &str) -> &[(Value<'static>, automerge::ObjId)] {
        self.fields
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(&[], |(_, v)| v.as_slice())
    }
}

/// Applies `changes` to `doc` (the stored state) in place and checks the result, when the rules
/// of the kind need no more of the state before than a [`Prior`] holds (every kind but notes,
/// whose filed content is compared whole). `true`: `doc` is the state after the push and it
/// passes, exactly as [`validate`] would have found. `false`: the kind needs the whole state
/// before, the changes do not apply, or a rule fails; `doc` may be half-applied and must be
/// dropped, and [`validate`] run on the stored state to name the change and the rule. Saves the
/// copy of the whole document that [`validate`] makes, which grows with its history.
pub fn validate_in_place(ctx: &Context, doc: &mut AutoCommit, changes: &[Change]) -> bool {
    if ctx.kind == DocKind::Note {
        return false;
    }
    let prior = Prior::of(ctx.kind, doc);
    if apply(doc, changes.to_vec()).is_err() {
        return false;
    }
    check_root(ctx, &prior, doc).is_ok()
}

/// Checks `after` against `before` (`None`: a new document) under the rules of `ctx.kind`.
pub fn check(
    ctx: &Context,
    before: Option<&AutoCommit>,
    after: &mut AutoCommit,
) -> Result<(), String> {
    let empty = AutoCommit::new();
    let prior = before.unwrap_or(&empty);
    check_root(ctx, &Prior::of(ctx.kind, prior), after)?;
    if ctx.kind == DocKind::Note {
        check_note(ctx, before, after)?;
    }
    Ok(())
}

/// The rules of every kind (types, required fields, entries, schema, case id), against what
/// [`Prior`] kept of the state before.
fn check_root(ctx: &Context, prior: &Prior, after: &mut AutoCommit) -> Result<(), String> {
    let kind = ctx.kind.as_str();
    for (key, ty, required) in fields(ctx.kind) {
        let old = prior.values(key);
        let new = values(after, key);
        let old_ids: HashSet<&automerge::ObjId> = old.iter().map(|(_, id)| id).collect();
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
            let new_ids: HashSet<&automerge::ObjId> = new.iter().map(|(_, id)| id).collect();
            if old.iter().any(|(_, id)| !new_ids.contains(id)) {
                return Err(format!(
                    "the {kind}'s {key} may not be replaced by a new {}: edit it in place",
                    if *ty == Ty::Text { "text" } else { "map" }
                ));
            }
        }
    }
    check_entries(ctx.kind, after)?;
    if let Some(schema) = &prior.schema {
        let same = values(after, field::SCHEMA)
            .iter()
            .all(|(v, _)| matches!(v, Value::Scalar(s) if s.as_str() == Some(schema.as_str())));
        if !same {
            return Err(format!("the {kind}'s schema never changes"));
        }
    }
    let case = ctx.case_id.to_string();
    let old_case_ids: HashSet<&automerge::ObjId> = prior
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

fn status(doc: &AutoCommit) -> Option<String> {
    record::get_str(doc, &ROOT, field::STATUS)
}

fn check_note(
    ctx: &Context,
    before: Option<&AutoCommit>,
    after: &mut AutoCommit,
) -> Result<(), String> {
    let status_after = status(after);
    for (v, _) in values(after, field::STATUS) {
        let s = match &v {
            Value::Scalar(s) => s.as_str().map(str::to_string),
            _ => None,
        };
        if !matches!(s.as_deref(), Some("draft" | "filed")) {
            return Err("a note's status is either draft or filed".into());
        }
    }
    let was_filed = before.is_some_and(|b| status(b).as_deref() == Some("filed"));
    match before {
        Some(before) => {
            if was_filed {
                if status_after.as_deref() != Some("filed") {
                    return Err("a filed note never goes back to draft".into());
                }
                if record::content_json(before) != record::content_json(after)
                    || record::conflicts(before) != record::conflicts(after)
                {
                    return Err(
                        "the note is filed and can no longer change; add an amendment instead"
                            .into(),
                    );
                }
                return Ok(());
            }
            let author = |d: &AutoCommit| record::content_json(d)[field::AUTHOR].clone();
            if author(before) != author(after) {
                return Err("a note's author never changes".into());
            }
        }
        None => {
            for (key, _, required) in fields(DocKind::Note) {
                if *required && values(after, key).is_empty() {
                    return Err(format!("a new note needs its {key}"));
                }
            }
            let author = record::get_obj(after, &ROOT, field::AUTHOR, ObjType::Map)
                .and_then(|a| record::get_str(after, &a, "staff_id"));
            if author.as_deref() != Some(ctx.pusher.to_string().as_str()) {
                return Err("a new note's author must be the staff member who writes it".into());
            }
        }
    }
    if status_after.as_deref() == Some("filed") {
        let Some(filed) = record::get_i64(after, &ROOT, field::FILED_AT) else {
            return Err("a filed note needs filed_at_ms".into());
        };
        let occurred = record::get_i64(after, &ROOT, field::OCCURRED_AT).unwrap_or(filed);
        let has_reason = record::get_str(after, &ROOT, field::LATE_ENTRY_REASON)
            .is_some_and(|r| !r.trim().is_empty());
        if filed.saturating_sub(occurred) > ctx.rules.late_entry_after_ms && !has_reason {
            return Err(format!(
                "the note was filed more than {} hours after it happened: it needs a late-entry \
                 reason",
                ctx.rules.late_entry_after_ms / 3_600_000
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
    }
    Ok(())
}

#[cfg(test)]
mod entry_tests {
    use super::*;
    use automerge::transaction::Transactable;
    use casenote_protocol::{CaseId, StaffId};

    fn plan_with_action() -> (AutoCommit, CaseId, String) {
        let case = CaseId::new_random();
        let mut doc = AutoCommit::new();
        record::init_plan(&mut doc, case).unwrap();
        let action = record::add_action(&mut doc, "Fit a key safe", "OT", "2026-12-01").unwrap();
        doc.commit();
        (doc, case, action)
    }

    fn push(
        before: &mut AutoCommit,
        case: CaseId,
        edit: impl FnOnce(&mut AutoCommit),
    ) -> Result<AutoCommit, (usize, String)> {
        let heads = before.get_heads();
        let mut after = before.fork();
        edit(&mut after);
        after.commit();
        let ctx = Context {
            kind: DocKind::Plan,
            case_id: case,
            pusher: StaffId::new_random(),
            rules: Rules::default(),
        };
        validate(&ctx, Some(before), &after.get_changes(&heads))
    }

    #[test]
    fn an_action_status_outside_the_vocabulary_is_refused() {
        let (mut doc, case, action) = plan_with_action();
        assert!(push(&mut doc, case, |d| record::set_action_status(
            d,
            field::ACTIONS,
            &action,
            "done"
        )
        .unwrap())
        .is_ok());
        let err = push(&mut doc, case, |d| {
            let actions = record::get_obj(d, &ROOT, field::ACTIONS, ObjType::Map).unwrap();
            let entry = record::get_obj(d, &actions, &action, ObjType::Map).unwrap();
            d.put(&entry, field::STATUS, "finished, probably").unwrap();
        })
        .unwrap_err();
        assert!(err.1.contains("must be one of"), "{}", err.1);
    }

    #[test]
    fn an_entry_field_that_stops_being_a_string_is_refused() {
        let (mut doc, case, action) = plan_with_action();
        let err = push(&mut doc, case, |d| {
            let actions = record::get_obj(d, &ROOT, field::ACTIONS, ObjType::Map).unwrap();
            let entry = record::get_obj(d, &actions, &action, ObjType::Map).unwrap();
            d.put(&entry, "what", 42).unwrap();
        })
        .unwrap_err();
        assert!(err.1.contains("strings only"), "{}", err.1);
        let err = push(&mut doc, case, |d| {
            let actions = record::get_obj(d, &ROOT, field::ACTIONS, ObjType::Map).unwrap();
            d.put(&actions, "not-a-map", "text").unwrap();
        })
        .unwrap_err();
        assert!(err.1.contains("must stay a map"), "{}", err.1);
    }
}
