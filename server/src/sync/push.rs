//! Push: a device's new changes, checked and stored (docs/design.md, "Sync"): steps 1 and 2 of
//! a sync ([`crate::sync`]).
//!
//! First, before automerge parses anything a device sent, every change is bounded from its
//! encoded bytes ([`casenote_protocol::chunk`]: its columns' rows, its inflated size) and the
//! operations summed per document and per request (`DOC_OPS_MAX`, `PUSH_OPS_MAX`); a document
//! past them is refused `malformed_change`, unparsed. Then, for each pushed document: access
//! against the stored header (a document the device may not
//! write gets the same `forbidden` whether or not it exists, an empty push included), the header
//! the push claims, decoding, dedupe by hash, the dependency/base check (else
//! `need_full_history`), authorship (below), and the record rules ([`crate::validate`]).
//! Accepted changes are stored under the next global sequence numbers in one write transaction,
//! with the documents' new records, the actors they bind, the refused changes (quarantined, never
//! in the log, so no device receives them), the pushed documents added to the device's holdings,
//! and an audit entry per refusal.
//!
//! Authorship: automerge 0.12 writes the author into the first change (seq 1) of each actor only;
//! later changes of that actor are attributed through it. So for every change new to the server:
//! an author, when present, must be the pushing staff member's id bytes; the actor, when already
//! bound (the `actors` tree), must be bound to the same staff member and device; an unbound actor
//! is bound to the pusher by a change that carries the author (in the same transaction as the
//! changes), and refused on a change that carries none. Changes by someone else, new to the
//! server, and what depends on them, are withheld (`forged_author`): without signatures the
//! server cannot tell a relay from a forgery. Changes the server already holds are duplicates and
//! not checked.
//!
//! Where the time goes, and who pays for it: the Automerge work (applying the new changes to the
//! stored state and checking the rules, and on a refusal finding the change that broke the rule)
//! is done before the write transaction (step 1, [`Plan::ahead`], reading committed state through
//! a read transaction), under a lock of the pushed documents only ([`DocLocks`]), on up to
//! `limits::VALIDATE_THREADS_MAX` threads. So a push that costs seconds to validate (20,000
//! changes, the last one refused) holds up only pushes to the same documents, never another
//! device's sync to another case. The write (step 2, [`Plan::decide`]) re-runs the cheap checks
//! in the transaction and uses each validation whose inputs are still what the store holds (the
//! same header, heads and new changes). When they are not (another server node wrote the
//! document meanwhile) the write stores nothing and the push judges ahead again, up to
//! `limits::PUSH_AHEAD_RETRIES` times (reusing each judgement that still holds); only the last
//! attempt's write validates again itself, under the lock every node's writers wait on. Changes
//! already in quarantine are refused again at once, without validating them again.
//!
//! It may use the store (a read and a write transaction, committed log data to materialise ahead,
//! and the write transaction's own reads of the log to judge again there), the model,
//! [`crate::access`] and [`crate::validate`].

use super::doc_locks::DocLocks;
use crate::access::may_write;
use crate::auth::Principal;
use crate::model::{
    ActorBinding, AuditKind, AuditRecord, CaseRecord, DocHeader, DocRecord, NewChange,
    QuarantineEntry,
};
use crate::store::{read_each, write, PushAsk, Store, StoreError, Txn};
use crate::validate::{self, Context, Materialised, Refusal, Rules, Weighed, Writer};
use automerge::ReadDoc;
use casenote_protocol::wire::{DocAck, DocPush, Hash, NewRestricted, Rejection};
use casenote_protocol::{chunk, limits, CaseId, DocId, DocKind, ErrorCode, Seq, TeamId};
use serde_bytes::ByteBuf;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// One pushed change, decoded far enough to check it.
#[derive(Clone)]
struct Decoded {
    index: usize,
    hash: Hash,
    deps: Vec<Hash>,
    bytes: Vec<u8>,
    actor: Vec<u8>,
    author: Option<Vec<u8>>,
    change: automerge::Change,
}

/// One pushed document after decoding, before any store access.
struct Prepared {
    doc_id: DocId,
    case_id: CaseId,
    kind: DocKind,
    base: Vec<Hash>,
    changes: Result<Vec<Decoded>, String>,
    /// The access list the device asked for, if this is a new restricted section.
    restricted: Option<NewRestricted>,
}

/// A new document's access list (`None` but for restricted kinds) and whether it is sealed.
type AccessList = (Option<Vec<TeamId>>, bool);

/// What automerge may be asked to parse of one pushed change: a change chunk (plain or
/// compressed) whose every column is within `DOC_OPS_MAX` x 4 rows (predecessors have a row each)
/// and which inflates to at most `CHANGE_BYTES_MAX`, as a raw change may be
/// ([`casenote_protocol::chunk`]: a 140-byte change can claim 2^40 operations).
const CHANGE_PARSE_LIMITS: chunk::Limits = chunk::Limits {
    rows_max: 4 * limits::DOC_OPS_MAX,
    inflated_max: limits::CHANGE_BYTES_MAX,
};

/// The operations a document's pushed changes hold, read from their columns, or why they are
/// refused before automerge parses any of them: a change that is not one chunk within the parse
/// limits, or changes that hold more operations together than a document may.
fn bound_changes(changes: &[ByteBuf]) -> Result<u64, String> {
    let mut ops = 0u64;
    for (index, bytes) in changes.iter().enumerate() {
        let bound = match chunk::bound(bytes, CHANGE_PARSE_LIMITS) {
            Ok((b, rest)) if rest.is_empty() && b.kind != chunk::Kind::Document => b,
            Ok(_) => return Err(format!("change {index} is not one Automerge change")),
            Err(e) => return Err(format!("change {index} is refused unparsed: {e}")),
        };
        ops = ops.saturating_add(bound.ops);
        if ops > limits::DOC_OPS_MAX {
            return Err(format!(
                "the changes hold more than {} operations together",
                limits::DOC_OPS_MAX
            ));
        }
    }
    Ok(ops)
}

/// Each document's bound ([`bound_changes`]), within `limits::PUSH_OPS_MAX` for the whole
/// request: a document past it is refused unparsed, as are those after it.
fn bound_request(docs: &[DocPush]) -> Vec<Result<(), String>> {
    let mut total = 0u64;
    docs.iter()
        .map(|d| {
            let ops = bound_changes(&d.changes)?;
            total = total.saturating_add(ops);
            if total > limits::PUSH_OPS_MAX {
                return Err(format!(
                    "the request holds more than {} operations",
                    limits::PUSH_OPS_MAX
                ));
            }
            Ok(())
        })
        .collect()
}

fn decode_change(index: usize, bytes: &[u8]) -> Result<Decoded, String> {
    // Automerge parses untrusted bytes here; a panic inside it must cost this document, not the
    // request or the server. The reason never quotes Automerge's message (it may echo input).
    let parsed = std::panic::catch_unwind(|| automerge::Change::from_bytes(bytes.to_vec()));
    match parsed {
        Ok(Ok(mut change)) => Ok(Decoded {
            index,
            hash: change.hash().into(),
            deps: change.deps().iter().copied().map(Hash::from).collect(),
            actor: change.actor_id().to_bytes().to_vec(),
            author: change.author().map(|a| a.as_bytes().to_vec()),
            bytes: change.bytes().into_owned(),
            change,
        }),
        Ok(Err(_)) => Err(format!("change {index} is not an Automerge change")),
        Err(_) => Err(format!("change {index} could not be parsed")),
    }
}

fn prepare((push, bound): (DocPush, Result<(), String>)) -> Prepared {
    let changes = bound.and_then(|()| {
        push.changes
            .iter()
            .enumerate()
            .map(|(i, b)| decode_change(i, b))
            .collect()
    });
    Prepared {
        doc_id: push.doc_id,
        case_id: push.case_id,
        kind: push.kind,
        base: push.base,
        changes,
        restricted: None,
    }
}

/// New actor bindings: actor id bytes and who they are bound to.
type Bindings = Vec<(Vec<u8>, ActorBinding)>;

/// What happened to one pushed document.
enum Verdict {
    Accepted {
        heads: Vec<Hash>,
        stored: u32,
        duplicates: u32,
        /// Why some of the push was withheld: changes by someone else, new to the server, and
        /// what depends on them.
        withheld: Option<String>,
    },
    NeedFullHistory,
    Rejected(ErrorCode, String),
}

fn forbidden(doc_id: DocId) -> Verdict {
    Verdict::Rejected(
        ErrorCode::Forbidden,
        format!("none of your teams may write document {doc_id}"),
    )
}

/// The record rules' verdict on one document's new changes.
#[derive(Clone, Debug)]
enum Ruled {
    Pass {
        ops: u64,
        files: bool,
    },
    Refused(Refusal),
    /// The stored document does not load from its log (damaged, or written before the vendored
    /// automerge's check refused what it holds): nothing can be judged against it.
    Unloadable,
}

/// A document whose new changes the record rules must judge.
struct Candidate {
    doc_id: DocId,
    ctx: Context,
    stored: bool,
    old_heads: Vec<Hash>,
    fresh: Vec<Hash>,
    changes: Vec<automerge::Change>,
    /// The operations the validation will hold in memory (the stored history plus the new).
    ops: u64,
}

/// A judgement, with the inputs it was made from.
struct Checked {
    ctx: Context,
    stored: bool,
    old_heads: Vec<Hash>,
    fresh: Vec<Hash>,
    ruled: Ruled,
}

impl Checked {
    /// Whether this is the judgement the write would make: the same rules, writer and header,
    /// the same stored state (the heads name the whole history) and the same new changes in the
    /// same order. Validation is a function of exactly these.
    fn matches(&self, c: &Candidate) -> bool {
        self.ctx == c.ctx
            && self.stored == c.stored
            && same_heads(&self.old_heads, &c.old_heads)
            && self.fresh == c.fresh
    }
}

/// Reads a document as stored with the heads given, from its log: from the stale state given
/// (the cache's, with other heads), or from the start.
type Materialise<'a> =
    dyn FnMut(DocId, Option<Materialised>, &[Hash]) -> Result<Materialised, StoreError> + 'a;

fn same_heads(a: &[Hash], b: &[Hash]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort();
    b.sort();
    a == b
}

/// The judgement of `c` when its stored document does not load (`why`, automerge's words and
/// the document's id: no content). Logged for the operators; the device is told per document.
fn unloadable(c: Candidate, why: &str) -> Checked {
    tracing::error!(doc = %c.doc_id, %why, "a push to a stored document that does not load was refused for that document");
    Checked {
        ctx: c.ctx,
        stored: c.stored,
        old_heads: c.old_heads,
        fresh: c.fresh,
        ruled: Ruled::Unloadable,
    }
}

/// Judges `c`: the stored state (cached or materialised; it must still have the heads the
/// candidate saw) with the new changes applied, under the record rules. `None` when the stored
/// state moved on meanwhile. The states it produces go to the cache of validated states (keyed
/// by their heads, so a state that never gets stored is never used). `stored` materialises a
/// document from its log: through the store ahead, in the transaction when judged there.
fn judge(c: Candidate, stored: &mut Materialise<'_>) -> Result<Option<Checked>, StoreError> {
    let (doc_id, heads) = (c.doc_id, &c.old_heads);
    let (mut reserved, cached) = if c.stored {
        validate::reserve_for(doc_id, c.ops, heads)
    } else {
        (validate::reserve(c.ops), None)
    };
    let (before, through, weighed) = if c.stored {
        let loaded = validate::load_from(cached, heads, |stale| stored(doc_id, stale, heads));
        let mut held = match loaded {
            Err(StoreError::Corrupt(why)) => return Ok(Some(unloadable(c, &why))),
            other => other?,
        };
        if !validate::has_heads(&mut held.doc, heads) {
            return Ok(None);
        }
        (Some(held.doc), held.through, held.weighed)
    } else {
        (None, Seq(0), Weighed::default())
    };
    // The state after: the state before (which holds what the log holds up to `through`) and
    // the new changes, which will be stored later in the log.
    let kept = |doc, weighed| Materialised {
        doc,
        through,
        weighed,
    };
    // A refusal reads the document again from its log (the state before is dropped first),
    // whole: the reservation grows to hold it, and the state read weighs its operations.
    let mut reread = false;
    let outcome = validate::run(&c.ctx, before, &c.changes, &mut || {
        if c.stored {
            reserved.regrow(c.ops);
            reread = true;
            stored(doc_id, None, heads).map(|h| Some(h.doc))
        } else {
            Ok(None)
        }
    });
    let outcome = match outcome {
        Err(StoreError::Corrupt(why)) => return Ok(Some(unloadable(c, &why))),
        other => other?,
    };
    let ruled = match outcome {
        Ok(passed) => {
            let ops = passed.after.stats().num_ops;
            let files = passed.files;
            reserved.keep(doc_id, kept(passed.after, weighed));
            Ruled::Pass { ops, files }
        }
        Err((refusal, before)) => {
            if let Some(before) = before {
                let weighed = if reread { Weighed::default() } else { weighed };
                reserved.keep(doc_id, kept(before, weighed));
            }
            Ruled::Refused(refusal)
        }
    };
    Ok(Some(Checked {
        ctx: c.ctx,
        stored: c.stored,
        old_heads: c.old_heads,
        fresh: c.fresh,
        ruled,
    }))
}

/// What a push may write under: the header, the stored record (none for a new document), and
/// the case it creates (for a new case document).
type Access = (DocHeader, Option<DocRecord>, Option<CaseRecord>);

/// A pushed document's new changes after access, dedupe, dependencies and authorship.
struct Fresh {
    header: DocHeader,
    record: Option<DocRecord>,
    new_case: Option<CaseRecord>,
    old_heads: Vec<Hash>,
    fresh: Vec<Decoded>,
    bindings: Bindings,
    withheld: Option<String>,
    duplicates: u32,
}

/// The pending state of one request's push, read through a transaction: what it will commit,
/// overlaid on what the transaction reads, so each document of the push sees the ones before it
/// (a new case, then its first note).
struct Plan<'a, 't> {
    txn: &'t mut dyn Txn,
    who: &'a Principal,
    writer: &'a Writer,
    now_ms: i64,
    rules: Rules,
    cases: HashMap<CaseId, CaseRecord>,
    docs: HashMap<DocId, DocRecord>,
    hashes: HashSet<(DocId, Hash)>,
    actors: HashMap<Vec<u8>, ActorBinding>,
    /// The store's binding of each actor looked up so far (`None`: unbound). A push names one
    /// actor in most of its changes, and each change asked the store again: 4,000 round trips
    /// under the write lock for a full push on PostgreSQL, every other writer waiting.
    stored_actors: HashMap<Vec<u8>, Option<ActorBinding>>,
    /// The store's record of each document read so far, with its case's (`None`: no such
    /// document).
    stored_docs: HashMap<DocId, Option<(DocRecord, Option<CaseRecord>)>>,
    /// The access epoch the store gave with the documents, if it did.
    epoch: Option<u64>,
    changes: Vec<NewChange>,
    /// Judgements made before the write, used when their inputs still hold.
    checked: &'a HashMap<DocId, Checked>,
    /// Whether a document whose judgement ahead no longer holds is judged here, in the write
    /// transaction; if not, the write gives up and the push judges ahead again
    /// ([`push_with_access`]).
    judge_here: bool,
    /// Changes refused by the record rules.
    quarantine: Vec<QuarantineEntry>,
    /// Documents this push has named so far.
    seen: HashSet<DocId>,
    /// The pushed changes the store holds in quarantine (refused before), found by [`Plan::known`]
    /// with the changes it holds.
    refused: HashSet<(DocId, Hash)>,
}

/// What a push's write committed: the last sequence it allocated (0: none) and how many changes
/// it refused into quarantine (new there or not).
struct Committed {
    upto: Seq,
    quarantined: usize,
}

impl<'a, 't> Plan<'a, 't> {
    fn new(
        txn: &'t mut dyn Txn,
        who: &'a Principal,
        (writer, now_ms, rules): (&'a Writer, i64, Rules),
        checked: &'a HashMap<DocId, Checked>,
    ) -> Self {
        Plan {
            judge_here: true,
            txn,
            who,
            writer,
            now_ms,
            rules,
            cases: HashMap::new(),
            docs: HashMap::new(),
            hashes: HashSet::new(),
            actors: HashMap::new(),
            stored_actors: HashMap::new(),
            stored_docs: HashMap::new(),
            epoch: None,
            changes: Vec::new(),
            checked,
            quarantine: Vec::new(),
            seen: HashSet::new(),
            refused: HashSet::new(),
        }
    }

    fn case(&mut self, id: CaseId) -> Result<Option<CaseRecord>, StoreError> {
        match self.cases.get(&id) {
            Some(c) => Ok(Some(c.clone())),
            None => self.txn.case(id),
        }
    }

    /// Document `id`'s record and its case's, as this push has left them so far.
    fn doc_and_case(
        &mut self,
        id: DocId,
    ) -> Result<Option<(DocRecord, Option<CaseRecord>)>, StoreError> {
        let (doc, stored_case) = match self.docs.get(&id) {
            Some(d) => (d.clone(), None),
            None => match self.stored_doc(id)? {
                Some(found) => found,
                None => return Ok(None),
            },
        };
        let case = match (self.cases.get(&doc.header.case_id), stored_case) {
            (Some(c), _) => Some(c.clone()),
            (None, Some(c)) => Some(c),
            (None, None) => self.txn.case(doc.header.case_id)?,
        };
        Ok(Some((doc, case)))
    }

    fn stored_doc(
        &mut self,
        id: DocId,
    ) -> Result<Option<(DocRecord, Option<CaseRecord>)>, StoreError> {
        if let Some(found) = self.stored_docs.get(&id) {
            return Ok(found.clone());
        }
        let found = self.txn.doc_and_case(id)?;
        self.stored_docs.insert(id, found.clone());
        Ok(found)
    }

    /// Which of the hashes `p` names (its base, its changes and their dependencies) the server
    /// holds: stored, or stored by this push before. The store is asked in one read
    /// ([`Txn::push_facts`]) for everything screening `p` reads from it: those hashes, which
    /// of them are in quarantine (kept in `refused`, for [`Plan::refused_before`]), the
    /// document's record unless this push read or planned it, and the bindings of the changes'
    /// actors not looked up yet (kept for [`Plan::access`] and [`Plan::actor`]).
    fn known(&mut self, p: &Prepared, changes: &[Decoded]) -> Result<HashSet<Hash>, StoreError> {
        let named: HashSet<Hash> = p
            .base
            .iter()
            .chain(
                changes
                    .iter()
                    .flat_map(|c| std::iter::once(&c.hash).chain(&c.deps)),
            )
            .copied()
            .collect();
        let mut known = HashSet::new();
        let mut ask = Vec::new();
        for h in named {
            if self.hashes.contains(&(p.doc_id, h)) {
                known.insert(h);
            } else {
                ask.push(h);
            }
        }
        let mut actors: Vec<Vec<u8>> = Vec::new();
        for c in changes {
            let looked_up =
                self.actors.contains_key(&c.actor) || self.stored_actors.contains_key(&c.actor);
            if !looked_up && !actors.contains(&c.actor) {
                actors.push(c.actor.clone());
            }
        }
        let record =
            !self.docs.contains_key(&p.doc_id) && !self.stored_docs.contains_key(&p.doc_id);
        let ask = PushAsk {
            doc: p.doc_id,
            record,
            hashes: &ask,
            actors: &actors,
        };
        let facts = self.txn.push_facts(&ask)?;
        self.epoch = facts.access_epoch.or(self.epoch);
        if record {
            self.stored_docs.insert(p.doc_id, facts.record);
        }
        for a in actors {
            let binding = facts.actors.get(&a).cloned();
            self.stored_actors.insert(a, binding);
        }
        known.extend(facts.held);
        self.refused
            .extend(facts.refused.into_iter().map(|h| (p.doc_id, h)));
        Ok(known)
    }

    fn actor(&mut self, actor: &[u8]) -> Result<Option<ActorBinding>, StoreError> {
        if let Some(b) = self.actors.get(actor) {
            return Ok(Some(b.clone()));
        }
        if let Some(stored) = self.stored_actors.get(actor) {
            return Ok(stored.clone());
        }
        let stored = self.txn.actor(actor)?;
        self.stored_actors.insert(actor.to_vec(), stored.clone());
        Ok(stored)
    }

    /// The header a push may write under: the stored one, if the device may write it, or a new
    /// one for a new document of a case it may write (a new case for a new case document).
    /// Every refusal here is the same `forbidden`, whether or not the document exists.
    fn access(&mut self, p: &Prepared, empty: bool) -> Result<Result<Access, Verdict>, StoreError> {
        if let Some((rec, case)) = self.doc_and_case(p.doc_id)? {
            let writable = match case {
                Some(case) => may_write(self.who, &case, Some(&rec.header)),
                None => false,
            };
            if !writable {
                return Ok(Err(forbidden(p.doc_id)));
            }
            if rec.header.case_id != p.case_id || rec.header.kind != p.kind {
                return Ok(Err(Verdict::Rejected(
                    ErrorCode::HeaderMismatch,
                    format!(
                        "document {} is a {} of case {}, not a {} of case {}",
                        p.doc_id, rec.header.kind, rec.header.case_id, p.kind, p.case_id
                    ),
                )));
            }
            return Ok(Ok((rec.header.clone(), Some(rec), None)));
        }
        // Nothing to create, or a document erased (`crate::erase`) that a device sends again:
        // answered as a document that exists and may not be written is.
        if empty || crate::erase::is_erased(self.txn, p.doc_id)? {
            return Ok(Err(forbidden(p.doc_id)));
        }
        let new_case = match self.new_case(p)? {
            Ok(c) => c,
            Err(v) => return Ok(Err(v)),
        };
        let (access_teams, sealed) = match self.access_list(p)? {
            Ok(list) => list,
            Err(v) => return Ok(Err(v)),
        };
        let header = DocHeader {
            doc_id: p.doc_id,
            case_id: p.case_id,
            kind: p.kind,
            owner_org: self.who.staff.org_id,
            access_teams,
            created_by: self.who.staff_id(),
            created_ms: self.now_ms,
            sealed,
            grants: Vec::new(),
        };
        Ok(Ok((header, None, new_case)))
    }

    /// A new document's access list and whether it is sealed ([`AccessList`]): for a restricted kind, the list
    /// the device named (each team known and on the case, the creator's among them) or, without
    /// one, the creator's teams, hidden; for any other kind none, and naming one is refused.
    fn access_list(&mut self, p: &Prepared) -> Result<Result<AccessList, Verdict>, StoreError> {
        let invalid = |why: String| Ok(Err(Verdict::Rejected(ErrorCode::InvalidRequest, why)));
        let Some(asked) = &p.restricted else {
            return Ok(Ok((
                p.kind.is_restricted().then(|| self.who.teams().to_vec()),
                false,
            )));
        };
        if !p.kind.is_restricted() {
            return invalid(format!(
                "document {} is a {}: only restricted and safeguarding sections have an access list",
                p.doc_id, p.kind
            ));
        }
        let mut teams: Vec<TeamId> = Vec::new();
        for t in &asked.teams {
            if !teams.contains(t) {
                teams.push(*t);
            }
        }
        let case_teams = self.case(p.case_id)?.map(|c| c.teams).unwrap_or_default();
        for t in &teams {
            if self.txn.team(*t)?.is_none() {
                return invalid(format!(
                    "the access list of {} names team {t}, which does not exist",
                    p.doc_id
                ));
            }
            if !case_teams.contains(t) {
                return invalid(format!(
                    "the access list of {} names team {t}, which is not on case {}: add the team to the case first",
                    p.doc_id, p.case_id
                ));
            }
        }
        if !teams.iter().any(|t| self.who.teams().contains(t)) {
            return invalid(format!(
                "the access list of {} must keep one of your own teams, or you could not read what you wrote",
                p.doc_id
            ));
        }
        Ok(Ok((Some(teams), asked.sealed)))
    }

    /// For a new document: the case it joins may be written by the device, or, for a new case
    /// document, the case it creates (owned by the creator's organisation and teams).
    fn new_case(
        &mut self,
        p: &Prepared,
    ) -> Result<Result<Option<CaseRecord>, Verdict>, StoreError> {
        if p.kind != DocKind::Case {
            // An unknown case is answered like an unreadable one: a case id is a document id
            // too, and its existence is not the device's to learn.
            return Ok(match self.case(p.case_id)? {
                Some(case) if may_write(self.who, &case, None) => Ok(None),
                _ => Err(forbidden(p.doc_id)),
            });
        }
        if p.doc_id.0 != p.case_id.0 {
            return Ok(Err(Verdict::Rejected(
                ErrorCode::HeaderMismatch,
                format!(
                    "a case document's id must be its case id ({} is not {})",
                    p.doc_id, p.case_id
                ),
            )));
        }
        // A case record without its case document: never created by a push; refuse without
        // saying so.
        if self.case(p.case_id)?.is_some() {
            return Ok(Err(forbidden(p.doc_id)));
        }
        let case = CaseRecord {
            case_id: p.case_id,
            owner_org: self.who.staff.org_id,
            teams: self.who.teams().to_vec(),
            created_ms: self.now_ms,
        };
        if !may_write(self.who, &case, None) {
            return Ok(Err(forbidden(p.doc_id)));
        }
        Ok(Ok(Some(case)))
    }

    /// Access, the base and dependency checks, dedupe and authorship for one document.
    fn fresh(
        &mut self,
        p: &Prepared,
        changes: &[Decoded],
    ) -> Result<Result<Fresh, Verdict>, StoreError> {
        let known = self.known(p, changes)?;
        let (header, record, new_case) = match self.access(p, changes.is_empty())? {
            Ok(found) => found,
            Err(v) => return Ok(Err(v)),
        };
        if !p.base.iter().all(|h| known.contains(h)) {
            return Ok(Err(Verdict::NeedFullHistory));
        }
        let mut in_push: HashSet<Hash> = HashSet::new();
        let mut fresh: Vec<Decoded> = Vec::new();
        let mut duplicates = 0u32;
        for c in changes {
            if in_push.contains(&c.hash) || known.contains(&c.hash) {
                duplicates += 1;
                in_push.insert(c.hash);
                continue;
            }
            if c.deps
                .iter()
                .any(|d| !in_push.contains(d) && !known.contains(d))
            {
                return Ok(Err(Verdict::NeedFullHistory));
            }
            in_push.insert(c.hash);
            fresh.push(c.clone());
        }
        let (fresh, bindings, withheld) = self.check_authorship(fresh)?;
        let old_heads = record.as_ref().map(|r| r.heads.clone()).unwrap_or_default();
        Ok(Ok(Fresh {
            header,
            record,
            new_case,
            old_heads,
            fresh,
            bindings,
            withheld,
            duplicates,
        }))
    }

    /// Sorts the changes new to the server into the pusher's own, which it may store (with the
    /// actor bindings they add), and the rest: changes authored by someone else or under someone
    /// else's actor, and every change that depends on one of those. Returns the own changes, the
    /// bindings, and the reason anything was withheld.
    fn check_authorship(
        &mut self,
        fresh: Vec<Decoded>,
    ) -> Result<(Vec<Decoded>, Bindings, Option<String>), StoreError> {
        let staff = self.who.staff_id();
        let device = self.who.device_id;
        let mut new: Bindings = Vec::new();
        let mut withheld: HashSet<Hash> = HashSet::new();
        let mut reason: Option<String> = None;
        let mut own = Vec::new();
        for c in fresh {
            let why = if c.deps.iter().any(|d| withheld.contains(d)) {
                Some(format!(
                    "change {} depends on a change this device may not store",
                    c.index
                ))
            } else if c
                .author
                .as_ref()
                .is_some_and(|a| a.as_slice() != staff.as_bytes())
            {
                Some(format!(
                    "change {} is authored by someone other than the pushing staff member",
                    c.index
                ))
            } else {
                let bound = match new.iter().find(|(a, _)| *a == c.actor) {
                    Some((_, b)) => Some(b.clone()),
                    None => self.actor(&c.actor)?,
                };
                match (bound, &c.author) {
                    (Some(b), _) if b.staff_id == staff && b.device_id == device => None,
                    (Some(_), _) => Some(format!(
                        "change {} uses an actor id that belongs to another staff member or device",
                        c.index
                    )),
                    (None, Some(_)) => {
                        new.push((
                            c.actor.clone(),
                            ActorBinding {
                                staff_id: staff,
                                device_id: device,
                                first_seen_ms: self.now_ms,
                            },
                        ));
                        None
                    }
                    (None, None) => Some(format!(
                        "change {} carries no author and its actor is not known: set the \
                         document's author to your staff id",
                        c.index
                    )),
                }
            };
            match why {
                Some(why) => {
                    withheld.insert(c.hash);
                    reason.get_or_insert(why);
                }
                None => own.push(c),
            }
        }
        let reason =
            reason.map(|r| format!("{} of the changes were not stored: {r}", withheld.len()));
        Ok((own, new, reason))
    }

    /// What the rules need not be asked: every new change was refused before (the reason), or
    /// the server's header refuses them.
    fn prejudged(
        &mut self,
        p: &Prepared,
        f: &Fresh,
    ) -> Result<Option<Result<Ruled, String>>, StoreError> {
        if let Some(reason) = self.refused_before(p.doc_id, &f.fresh)? {
            return Ok(Some(Err(reason)));
        }
        let changes: Vec<automerge::Change> = f.fresh.iter().map(|c| c.change.clone()).collect();
        let refusal = validate::header_refusal(f.record.as_ref(), self.who.staff_id(), &changes);
        Ok(refusal.map(|r| Ok(Ruled::Refused(r))))
    }

    /// `f`'s new changes as the rules will judge them, with the inputs of the judgement.
    fn candidate(&self, p: &Prepared, f: &Fresh) -> Candidate {
        let changes: Vec<automerge::Change> = f.fresh.iter().map(|c| c.change.clone()).collect();
        Candidate {
            doc_id: p.doc_id,
            ctx: Context {
                kind: f.header.kind,
                case_id: f.header.case_id,
                writer: self.writer.clone(),
                rules: self.rules,
                received_ms: self.now_ms,
            },
            stored: f.record.is_some(),
            old_heads: f.old_heads.clone(),
            fresh: f.fresh.iter().map(|c| c.hash).collect(),
            ops: f.record.as_ref().map_or(0, |r| r.ops)
                + changes.iter().map(|c| c.len() as u64).sum::<u64>(),
            changes,
        }
    }

    /// The judgement of `c`: the one made ahead when its inputs still hold, else (another node
    /// wrote the document since the pass ahead) made now, in the transaction, where the stored
    /// state cannot move, reading the document's log there; or `None` when it is not to be
    /// judged here.
    fn judged(&mut self, c: Candidate) -> Result<Option<Ruled>, StoreError> {
        if let Some(ahead) = self.checked.get(&c.doc_id).filter(|a| a.matches(&c)) {
            return Ok(Some(ahead.ruled.clone()));
        }
        if !self.judge_here {
            return Ok(None);
        }
        #[cfg(test)]
        between_passes::judged_in_write();
        let doc = c.doc_id;
        let txn = &mut *self.txn;
        let head_count = c.old_heads.len();
        match judge(c, &mut |d, stale, heads| {
            validate::materialise_in(txn, d, stale, heads)
        })? {
            Some(now) => Ok(Some(now.ruled)),
            // Here the stored state cannot move: the record and the log disagree.
            None => {
                tracing::error!(doc = %doc, heads = head_count, "a push to a stored document whose log does not give its record's heads was refused for that document");
                Ok(Some(Ruled::Unloadable))
            }
        }
    }

    /// The reason every one of `fresh` was refused before, if each is in quarantine (the store
    /// is asked for the reason only then).
    fn refused_before(
        &mut self,
        doc: DocId,
        fresh: &[Decoded],
    ) -> Result<Option<String>, StoreError> {
        if !fresh.iter().all(|c| self.refused.contains(&(doc, c.hash))) {
            return Ok(None);
        }
        let mut reason = None;
        for c in fresh {
            match self.txn.quarantined(doc, &c.hash)? {
                Some(q) => {
                    reason.get_or_insert(q.reason);
                }
                None => return Ok(None),
            }
        }
        Ok(reason)
    }

    /// The checks both passes make before the rules: a change that is not Automerge, access,
    /// dependencies, dedupe, authorship, and a document named twice with new changes. Either a
    /// verdict, or the new changes the rules must judge.
    fn screen(&mut self, p: &Prepared) -> Result<Result<Fresh, Verdict>, StoreError> {
        let again = !self.seen.insert(p.doc_id);
        let changes = match &p.changes {
            Ok(c) => c,
            Err(reason) => {
                let reason = reason.clone();
                return Ok(Err(Verdict::Rejected(ErrorCode::MalformedChange, reason)));
            }
        };
        let f = match self.fresh(p, changes)? {
            Ok(f) => f,
            Err(v) => return Ok(Err(v)),
        };
        if f.fresh.is_empty() {
            return Ok(Err(match f.withheld {
                Some(reason) => Verdict::Rejected(ErrorCode::ForgedAuthor, reason),
                None => Verdict::Accepted {
                    heads: f.old_heads,
                    stored: 0,
                    duplicates: f.duplicates,
                    withheld: None,
                },
            }));
        }
        if again {
            // Each document's new changes are judged once per push, against the stored state.
            return Ok(Err(Verdict::Rejected(
                ErrorCode::MalformedChange,
                format!(
                    "document {} appears twice in this push with new changes; send them in one entry",
                    p.doc_id
                ),
            )));
        }
        Ok(Ok(f))
    }

    /// Step 1, the pass before the write: screens `p` and, when its new changes need the rules,
    /// returns them to be judged ahead; the plan goes on as if they passed, so that later
    /// documents of the push see this one (its case, its header). Writes nothing.
    fn ahead(&mut self, p: &Prepared) -> Result<Option<Candidate>, StoreError> {
        let Ok(f) = self.screen(p)? else {
            return Ok(None);
        };
        if self.prejudged(p, &f)?.is_some() {
            return Ok(None);
        }
        let candidate = self.candidate(p, &f);
        self.accept(p.doc_id, f, 0, false);
        Ok(Some(candidate))
    }

    /// Step 2, in the write transaction: screens `p`, rules on its new changes, and adds what
    /// passed (or what was refused, to quarantine) to the plan; `None` when its judgement ahead
    /// no longer holds and is not to be made here ([`Plan::judge_here`]).
    fn decide(&mut self, p: &Prepared) -> Result<Option<Verdict>, StoreError> {
        let f = match self.screen(p)? {
            Ok(f) => f,
            Err(verdict) => return Ok(Some(verdict)),
        };
        let ruled = match self.prejudged(p, &f)? {
            Some(ruled) => ruled,
            None => match self.judged(self.candidate(p, &f))? {
                Some(ruled) => Ok(ruled),
                None => return Ok(None),
            },
        };
        Ok(Some(match ruled {
            Err(reason) => Verdict::Rejected(ErrorCode::RuleViolation, reason),
            Ok(Ruled::Refused(r)) => self.refuse(p.doc_id, &f.fresh, r),
            Ok(Ruled::Pass { ops, files }) => self.accept(p.doc_id, f, ops, files),
            // Not the device's doing: nothing quarantined, the changes stay with the device.
            Ok(Ruled::Unloadable) => Verdict::Rejected(
                ErrorCode::Internal,
                format!(
                    "document {} as stored does not load, so nothing can be added to it; the \
                     device keeps its changes and sends them again once the service's operators \
                     have repaired it",
                    p.doc_id
                ),
            ),
        }))
    }

    /// Quarantines `fresh` with the reason for `r`.
    fn refuse(&mut self, doc_id: DocId, fresh: &[Decoded], r: Refusal) -> Verdict {
        let index = fresh.get(r.index).map_or(r.index, |c| c.index);
        let reason = format!("change {index} breaks a record rule: {}", r.rule);
        for c in fresh {
            self.quarantine.push(QuarantineEntry {
                doc_id,
                hash: c.hash,
                bytes: c.bytes.clone(),
                reason: reason.clone(),
                staff_id: self.who.staff_id(),
                device_id: self.who.device_id,
                at_ms: self.now_ms,
            });
        }
        Verdict::Rejected(ErrorCode::RuleViolation, reason)
    }

    /// Adds `f`'s new changes to the commit, with the document's new heads and record.
    fn accept(&mut self, doc_id: DocId, f: Fresh, ops: u64, files: bool) -> Verdict {
        for (actor, binding) in f.bindings {
            self.actors.insert(actor, binding);
        }
        let deps: HashSet<Hash> = f
            .fresh
            .iter()
            .flat_map(|c| c.deps.iter().copied())
            .collect();
        let mut heads: Vec<Hash> = f
            .old_heads
            .into_iter()
            .chain(f.fresh.iter().map(|c| c.hash))
            .filter(|h| !deps.contains(h))
            .collect();
        heads.sort();
        heads.dedup();
        let stored = f.fresh.len() as u32;
        for c in f.fresh {
            self.hashes.insert((doc_id, c.hash));
            self.changes.push(NewChange {
                doc_id,
                hash: c.hash,
                bytes: c.bytes,
                received_at_ms: self.now_ms,
            });
        }
        let filed_ms = f.record.as_ref().and_then(|r| r.filed_ms);
        self.docs.insert(
            doc_id,
            DocRecord {
                header: f.header,
                heads: heads.clone(),
                ops,
                filed_ms: filed_ms.or(files.then_some(self.now_ms)),
            },
        );
        if let Some(case) = f.new_case {
            self.cases.insert(case.case_id, case);
        }
        Verdict::Accepted {
            heads,
            stored,
            duplicates: f.duplicates,
            withheld: f.withheld,
        }
    }

    /// Writes the plan into its transaction: new cases, documents' records, the changes under
    /// the next sequences, the actors they bind, the quarantined changes.
    fn commit(self) -> Result<Committed, StoreError> {
        for case in self.cases.values() {
            self.txn.put_case(case)?;
        }
        for doc in self.docs.values() {
            self.txn.put_doc(doc)?;
        }
        let mut upto = Seq(0);
        for change in &self.changes {
            upto = self.txn.append_change(change)?;
        }
        for (actor, binding) in &self.actors {
            self.txn.put_actor(actor, binding)?;
        }
        if !self.quarantine.is_empty() {
            self.txn.quarantine_add(&self.quarantine)?;
        }
        Ok(Committed {
            upto,
            quarantined: self.quarantine.len(),
        })
    }
}

/// What a push did, per document.
#[derive(Debug, Default)]
pub struct PushOutcome {
    pub acks: Vec<DocAck>,
    pub need_full_history: Vec<DocId>,
    pub rejections: Vec<Rejection>,
    /// Every change hash of every accepted document (stored now or before): the device has them,
    /// so the pull that follows leaves them out.
    pub pushed: HashSet<(DocId, Hash)>,
    /// Changes new to the server.
    pub stored: usize,
    /// Changes the server already had.
    pub duplicates: usize,
    /// Changes refused by the record rules and put in quarantine (new there or not).
    pub quarantined: usize,
    /// The last sequence this push's write allocated (0 when it stored nothing).
    pub upto: Seq,
    /// The access epoch its write read with the documents, under the write lock, where the
    /// store gives it at no cost ([`crate::store::PushFacts::access_epoch`]).
    pub epoch: Option<u64>,
}

/// The directory's facts about the pusher that a record may state: role, organisation, teams.
fn writer_of(txn: &mut dyn Txn, who: &Principal) -> Result<Writer, StoreError> {
    let (org, teams) = txn.org_and_teams(who.staff.org_id, who.teams())?;
    Ok(Writer {
        staff_id: who.staff_id(),
        role: who.staff.role.to_string(),
        org: org.map(|o| o.name).unwrap_or_default(),
        teams: teams.into_iter().map(|t| t.name).collect(),
    })
}

/// Step 1: the pass before the write, on committed state through a read that needs no snapshot
/// (nothing is written, and the write screens every document again: `Store::read_each_txn`), to
/// find each document's new changes and the pusher's facts ([`writer_of`]); then every document
/// with new changes is judged, in parallel, outside any transaction, unless a judgement `before`
/// (an earlier attempt's) still holds for it.
fn judge_ahead(
    store: &dyn Store,
    who: &Principal,
    (now_ms, rules): (i64, Rules),
    prepared: &[Prepared],
    mut before: HashMap<DocId, Checked>,
) -> Result<(Writer, HashMap<DocId, Checked>), StoreError> {
    let none = HashMap::new();
    let (writer, candidates) = read_each(store, |txn| {
        let writer = writer_of(txn, who)?;
        let mut plan = Plan::new(txn, who, (&writer, now_ms, rules), &none);
        let mut out = Vec::new();
        for p in prepared {
            out.extend(plan.ahead(p)?);
        }
        Ok((writer, out))
    })?;
    let mut out = HashMap::new();
    // A judgement of an earlier attempt whose inputs still hold is not made again.
    let (kept, candidates): (Vec<_>, Vec<_>) = candidates
        .into_iter()
        .partition(|c| before.get(&c.doc_id).is_some_and(|b| b.matches(c)));
    for c in kept {
        out.extend(before.remove_entry(&c.doc_id));
    }
    let judged = par_map(candidates, |c| {
        (
            c.doc_id,
            judge(c, &mut |d, stale, heads| {
                validate::materialise_after(store, d, stale, heads)
            }),
        )
    });
    for (doc, done) in judged {
        if let Some(checked) = done? {
            out.insert(doc, checked);
        }
    }
    Ok((writer, out))
}

/// The cores this process may use, asked once: `available_parallelism` reads the cgroup's files
/// on every call (about 4% of the server's CPU in W5L when it was asked per request).
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `f` over `items` on up to [`limits::VALIDATE_THREADS_MAX`] threads (this one included), in order.
fn par_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let workers = cores().min(limits::VALIDATE_THREADS_MAX).min(items.len());
    if workers <= 1 {
        return items.into_iter().map(f).collect();
    }
    let slots: Vec<Mutex<(Option<T>, Option<R>)>> = items
        .into_iter()
        .map(|t| Mutex::new((Some(t), None)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || loop {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(slot) = slots.get(i) else { break };
        let item = slot.lock().unwrap_or_else(|e| e.into_inner()).0.take();
        if let Some(item) = item {
            let r = f(item);
            slot.lock().unwrap_or_else(|e| e.into_inner()).1 = Some(r);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..workers {
            s.spawn(work);
        }
        work();
    });
    slots
        .into_iter()
        .filter_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()).1)
        .collect()
}

/// [`push_with`] under the default [`Rules`].
pub fn push(
    store: &dyn Store,
    who: &Principal,
    docs: Vec<DocPush>,
    now_ms: i64,
) -> Result<PushOutcome, StoreError> {
    push_with(store, who, docs, now_ms, &Rules::default())
}

/// Decodes the pushes.
fn prepare_all(docs: Vec<DocPush>) -> Vec<Prepared> {
    let bounds = bound_request(&docs);
    let mut prepared: Vec<Prepared> = par_map(docs.into_iter().zip(bounds).collect(), prepare);
    // Case documents first, so that a new case and its first note can arrive in one request.
    prepared.sort_by_key(|p| p.kind != DocKind::Case);
    prepared
}

/// Applies one request's pushes (case documents first) in one write transaction, after checking
/// access, authorship and the record rules ([`validate`]); refused changes go to quarantine, the
/// accepted documents join the device's holdings, refusals are audited. Not yet durable: call
/// [`Store::flush`] before acknowledging anything.
pub fn push_with(
    store: &dyn Store,
    who: &Principal,
    docs: Vec<DocPush>,
    now_ms: i64,
    rules: &Rules,
) -> Result<PushOutcome, StoreError> {
    push_with_access(store, who, (docs, Vec::new()), now_ms, rules)
}

/// [`push_with`], with the access lists a sync request named for new restricted sections.
pub fn push_with_access(
    store: &dyn Store,
    who: &Principal,
    (docs, restricted): (Vec<DocPush>, Vec<NewRestricted>),
    now_ms: i64,
    rules: &Rules,
) -> Result<PushOutcome, StoreError> {
    if docs.is_empty() {
        return Ok(PushOutcome::default());
    }
    let mut prepared = prepare_all(docs);
    for p in &mut prepared {
        p.restricted = restricted.iter().find(|r| r.doc_id == p.doc_id).cloned();
    }
    let _held = DocLocks::global().hold(prepared.iter().map(|p| p.doc_id));
    let mut checked = HashMap::new();
    let mut attempt = 0;
    loop {
        let writer;
        (writer, checked) = judge_ahead(store, who, (now_ms, *rules), &prepared, checked)?;
        #[cfg(test)]
        between_passes::run();
        let judge_here = attempt >= limits::PUSH_AHEAD_RETRIES;
        let settings = (&writer, now_ms, *rules);
        let written = write(store, |txn| {
            write_push(txn, who, (settings, &checked, judge_here), &prepared)
        })?;
        if let Some(outcome) = written {
            return Ok(outcome);
        }
        attempt += 1;
    }
}

/// Step 2: the push's write, judging again what another node's write made stale when
/// `judge_here`; `None` (nothing written) when it is not to.
fn write_push(
    txn: &mut dyn Txn,
    who: &Principal,
    (settings, checked, judge_here): ((&Writer, i64, Rules), &HashMap<DocId, Checked>, bool),
    prepared: &[Prepared],
) -> Result<Option<PushOutcome>, StoreError> {
    let now_ms = settings.1;
    let mut plan = Plan::new(txn, who, settings, checked);
    plan.judge_here = judge_here;
    let mut outcome = PushOutcome::default();
    for p in prepared {
        let Some(verdict) = plan.decide(p)? else {
            return Ok(None);
        };
        tally(&mut outcome, p.doc_id, hashes_of(p), verdict);
    }
    outcome.epoch = plan.epoch;
    let committed = plan.commit()?;
    outcome.upto = committed.upto;
    outcome.quarantined = committed.quarantined;
    let accepted: Vec<DocId> = outcome.acks.iter().map(|a| a.doc_id).collect();
    txn.device_docs_add(who.device_id, &accepted)?;
    audit_refusals(txn, who, &outcome.rejections, now_ms)?;
    Ok(Some(outcome))
}

/// The hashes of every change pushed for `p` (none when they could not be decoded).
fn hashes_of(p: &Prepared) -> Vec<Hash> {
    match &p.changes {
        Ok(c) => c.iter().map(|c| c.hash).collect(),
        Err(_) => Vec::new(),
    }
}

/// An audit entry per refusal that says something about who pushed (`forbidden`,
/// `forged_author`, `rule_violation`).
fn audit_refusals(
    txn: &mut dyn Txn,
    who: &Principal,
    rejections: &[Rejection],
    now_ms: i64,
) -> Result<(), StoreError> {
    let audited = [
        ErrorCode::Forbidden,
        ErrorCode::ForgedAuthor,
        ErrorCode::RuleViolation,
    ];
    for r in rejections.iter().filter(|r| audited.contains(&r.code)) {
        let details = json!({ "doc_id": r.doc_id, "code": r.code.as_str(), "reason": r.reason });
        txn.audit_append(
            AuditRecord::new(AuditKind::Refused, now_ms, details)
                .staff(who.staff_id())
                .device(who.device_id),
        )?;
    }
    Ok(())
}

/// Adds one document's verdict to the outcome.
fn tally(outcome: &mut PushOutcome, doc_id: DocId, hashes: Vec<Hash>, verdict: Verdict) {
    match verdict {
        Verdict::Accepted {
            heads,
            stored,
            duplicates,
            withheld,
        } => {
            if let Some(reason) = withheld {
                outcome.rejections.push(Rejection {
                    doc_id,
                    code: ErrorCode::ForgedAuthor,
                    reason,
                });
            }
            outcome.stored += stored as usize;
            outcome.duplicates += duplicates as usize;
            outcome
                .pushed
                .extend(hashes.into_iter().map(|h| (doc_id, h)));
            outcome.acks.push(DocAck {
                doc_id,
                heads,
                stored,
                duplicates,
            });
        }
        Verdict::NeedFullHistory => outcome.need_full_history.push(doc_id),
        Verdict::Rejected(code, reason) => outcome.rejections.push(Rejection {
            doc_id,
            code,
            reason,
        }),
    }
}

/// A test's stand-in for another server node that writes between a push's two passes, and a
/// count of the judgements its write transactions made themselves.
#[cfg(test)]
pub(crate) mod between_passes {
    use std::cell::{Cell, RefCell};

    type Hook = Box<dyn FnMut() -> bool>;

    thread_local! {
        static HOOK: RefCell<Option<Hook>> = RefCell::new(None);
        static JUDGED_IN_WRITE: Cell<usize> = const { Cell::new(0) };
    }

    /// Runs `f` between the passes of this thread's pushes (every attempt of each) until it
    /// returns false.
    pub fn set_while(f: impl FnMut() -> bool + 'static) {
        HOOK.with(|h| *h.borrow_mut() = Some(Box::new(f)));
    }

    pub(super) fn run() {
        if let Some(mut f) = HOOK.with(|h| h.borrow_mut().take()) {
            if f() {
                HOOK.with(|h| *h.borrow_mut() = Some(f));
            }
        }
    }

    pub(super) fn judged_in_write() {
        JUDGED_IN_WRITE.with(|n| n.set(n.get() + 1));
    }

    /// Judgements this thread's write transactions made themselves so far.
    pub fn judged_in_writes() -> usize {
        JUDGED_IN_WRITE.with(Cell::get)
    }
}
