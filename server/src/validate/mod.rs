//! The record rules the server enforces on every incoming change (docs/design.md, "The record").
//!
//! A device is trusted with its own edits, not with the record. For each pushed document with
//! changes new to the server, [`run`] applies the new changes to the document as stored (taken
//! from the cache of validated states or materialised from the log, [`resident`]) and checks the
//! result against the rules of its kind ([`rules`]), comparing it with what the rules read of the
//! state before ([`rules::Prior`]). Some rules need no document at all and are checked on the
//! server's own header of the document first ([`header_refusal`]): a filed note gains nothing, a
//! draft is its author's, and no document grows past `limits::DOC_OPS_MAX` operations; before
//! automerge sees a push, no document grows past `limits::DOC_ACTORS_MAX` actors or
//! `limits::DOC_ACTOR_CHANGES_MAX` actors x changes.
//!
//! When the push breaks a rule, [`first_violation`] finds the change at which it started (a
//! bisection over prefixes: O(log n) batches, only on the refusal path, never under the store's
//! write lock), so the device is told which change broke which rule. Reasons are fixed sentences
//! with field names from the schema and numbers: never a key, a value or any other text the
//! device chose.
//!
//! Cost: per pushed document with new changes, one batch apply of the new changes to the stored
//! state, in place. Loading the stored state (in proportion to its history: about 9 ms at 200
//! changes, about 120 ms at 2,000) is paid only when the cache does not hold it. The structure
//! walk ([`casenote_protocol::shape`]) runs only for pushes that create objects: a push that
//! creates none cannot make the document deeper or hold more objects.

pub mod resident;
pub mod rules;

use crate::store::{DocRecord, StoreError};
use automerge::{AutoCommit, Change};
use casenote_protocol::{limits, CaseId, DocKind, StaffId};
use std::panic::AssertUnwindSafe;

#[cfg(test)]
pub use resident::is_cached;
pub use resident::{
    every_document_loads, forget, has_heads, load, load_from, load_with, materialise,
    materialise_after, materialise_in, reserve, reserve_for, Materialised, Reserved, Weighed,
};
pub use rules::Prior;

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

/// The member of staff who pushes, as the directory knows them: what a record may say about its
/// writer (a note's author block, who raised an alert) is checked against this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Writer {
    pub staff_id: StaffId,
    pub role: String,
    /// The name of their organisation.
    pub org: String,
    /// The names of their teams.
    pub teams: Vec<String>,
}

/// Who pushes, into which document, when the server received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    pub kind: DocKind,
    pub case_id: CaseId,
    pub writer: Writer,
    pub rules: Rules,
    /// The server's clock when it received the push: lateness is judged by it, never by a time
    /// the device wrote.
    pub received_ms: i64,
}

/// Why a push was refused: the new change at which the document first broke a rule (an index
/// into the new changes), and the rule in fixed words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub index: usize,
    pub rule: String,
}

/// A push that passed: the document's state after it, and what the server records about it.
pub struct Passed {
    pub after: AutoCommit,
    /// This push filed a note or completed an assessment.
    pub files: bool,
}

/// Refusals decided on the server's header of a document, before any Automerge work: a filed
/// note and a completed assessment take no change at all (not even a mark, which its text's content would not show), a
/// note is edited and filed only by its author, and a document stays under its size limit.
pub fn header_refusal(
    record: Option<&DocRecord>,
    writer: StaffId,
    changes: &[Change],
) -> Option<Refusal> {
    let refuse = |rule: &str| {
        Some(Refusal {
            index: 0,
            rule: rule.to_string(),
        })
    };
    if let Some(rec) = record {
        if rec.header.kind == DocKind::Assessment && rec.filed_ms.is_some() {
            return refuse(
                "the assessment is completed and can no longer change; add an amendment instead",
            );
        }
        if rec.header.kind == DocKind::Note {
            if rec.filed_ms.is_some() {
                return refuse(
                    "the note is filed and can no longer change; add an amendment instead",
                );
            }
            if rec.header.created_by != writer {
                return refuse(
                    "a draft note is its author's: only they may edit or file it; add a note of \
                     your own instead",
                );
            }
        }
    }
    let mut ops = record.map_or(0, |r| r.ops);
    for (index, change) in changes.iter().enumerate() {
        ops = ops.saturating_add(change.len() as u64);
        if ops > limits::DOC_OPS_MAX {
            return Some(Refusal {
                index,
                rule: format!(
                    "the document would hold more than {} operations; start a new one",
                    limits::DOC_OPS_MAX
                ),
            });
        }
    }
    None
}

/// A push that would take the document past `limits::DOC_ACTORS_MAX` actors or
/// `limits::DOC_ACTOR_CHANGES_MAX` actors x changes, refused before automerge sees it (what an
/// actor costs automerge grows with the whole history: see the limits). A change new to the
/// server brings a new actor exactly when it is its actor's first (seq 1): automerge's own check
/// refuses a first change of an actor the document holds, and any change of an actor neither
/// the document nor the push introduces.
fn actors_refusal(before: Option<&AutoCommit>, changes: &[Change]) -> Option<Refusal> {
    let stats = before.map(automerge::ReadDoc::stats);
    let (mut actors, held) = stats.map_or((0, 0), |s| (s.num_actors, s.num_changes));
    let mut new = std::collections::HashSet::new();
    for (index, change) in changes.iter().enumerate() {
        if change.seq() == 1 && new.insert(change.actor_id()) {
            actors += 1;
        }
        if let Some(rule) = over_actor_limits(actors, held + index as u64 + 1) {
            return Some(Refusal { index, rule });
        }
    }
    None
}

/// Why a document of `actors` actors and `changes` changes is over the limits on actors, if it
/// is: a fixed sentence.
pub fn over_actor_limits(actors: u64, changes: u64) -> Option<String> {
    if actors > limits::DOC_ACTORS_MAX {
        return Some(format!(
            "the document would hold more than {} actors (device stores and web sessions that \
             wrote to it); start a new one",
            limits::DOC_ACTORS_MAX
        ));
    }
    if actors.saturating_mul(changes) > limits::DOC_ACTOR_CHANGES_MAX {
        return Some(format!(
            "the document would hold more than {} actors x changes ({actors} actors); start a \
             new one",
            limits::DOC_ACTOR_CHANGES_MAX
        ));
    }
    None
}

/// How many objects `changes` create, or the index of a change that cannot be read.
fn objects_created(changes: &[Change]) -> Result<usize, usize> {
    let mut made = 0;
    for (index, change) in changes.iter().enumerate() {
        // The legacy expansion panics on inputs it does not expect; a panic costs this push.
        let expanded =
            std::panic::catch_unwind(AssertUnwindSafe(|| change.decode())).map_err(|_| index)?;
        made += expanded
            .operations
            .iter()
            .filter(|op| matches!(op.action, automerge::legacy::OpType::Make(_)))
            .count();
    }
    Ok(made)
}

/// Validates `changes` against `before` (the stored state, `None` for a new document), changing
/// it in place. On a refusal, `reload` gives the stored state again (the one passed in is
/// half-applied by then) so that the change that broke the rule can be found; the outcome then
/// carries that state, for the cache. Materialising may fail; the rules never do.
pub fn run(
    ctx: &Context,
    before: Option<AutoCommit>,
    changes: &[Change],
    reload: &mut dyn FnMut() -> Result<Option<AutoCommit>, StoreError>,
) -> Result<Result<Passed, (Refusal, Option<AutoCommit>)>, StoreError> {
    let structural = match objects_created(changes) {
        Ok(made) => made > 0 || before.is_none(),
        Err(index) => {
            let refusal = Refusal {
                index,
                rule: "the change could not be read".into(),
            };
            return Ok(Err((refusal, before)));
        }
    };
    if let Some(refusal) = actors_refusal(before.as_ref(), changes) {
        return Ok(Err((refusal, before)));
    }
    let prior = Prior::of(ctx.kind, before.as_ref());
    let mut doc = before.unwrap_or_default();
    let checked = match resident::apply(&mut doc, changes.to_vec()) {
        Ok(()) => rules::check(ctx, &prior, &mut doc, structural),
        Err(_) => Err("the changes do not apply to the document".to_string()),
    };
    match checked {
        Ok(files) => Ok(Ok(Passed { after: doc, files })),
        Err(rule) => {
            drop(doc);
            let before = reload()?;
            let refusal = first_violation(ctx, before.as_ref(), changes).unwrap_or(Refusal {
                index: changes.len().saturating_sub(1),
                rule,
            });
            Ok(Err((refusal, before)))
        }
    }
}

/// The state after applying `changes` to a copy of `before`.
fn after(before: Option<&AutoCommit>, changes: &[Change]) -> Result<AutoCommit, String> {
    let mut doc = before.cloned().unwrap_or_default();
    resident::apply(&mut doc, changes.to_vec())?;
    Ok(doc)
}

/// Bisects over prefixes of `changes` for the first one after which the rules fail: the prefix
/// of length `lo` passes (the empty prefix is the stored document, assumed to pass), `hi` fails.
pub fn first_violation(
    ctx: &Context,
    before: Option<&AutoCommit>,
    changes: &[Change],
) -> Option<Refusal> {
    let prior = Prior::of(ctx.kind, before);
    let probe = |n: usize| -> Result<bool, String> {
        let mut doc =
            after(before, &changes[..n]).map_err(|_| "the changes do not apply".to_string())?;
        rules::check(ctx, &prior, &mut doc, true)
    };
    let (mut lo, mut hi) = (0usize, changes.len());
    let mut rule = probe(hi).err()?;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match probe(mid) {
            Ok(_) => lo = mid,
            Err(r) => {
                hi = mid;
                rule = r;
            }
        }
    }
    Some(Refusal {
        index: hi - 1,
        rule,
    })
}

#[cfg(test)]
mod tests;
