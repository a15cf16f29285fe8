//! The sync algorithm: one request in, one response out, no HTTP.
//!
//! A device pushes, per document, the server heads it last saw (`base`) and the Automerge changes it
//! made since; the server checks access and headers, stores what is new under the next global
//! sequence numbers, makes it durable, and then hands back every change the device may read that
//! has a sequence above the device's cursor, paged by bytes. The server never materialises a
//! document to relay it: it keeps a log of (hash, dependencies, bytes) and the heads per
//! document, which is all that a relay needs (DESIGN.md, "Facts measured": applying changes one
//! by one is slow). It materialises a document only to validate new changes to it (below).
//!
//! See DESIGN.md, "Sync: one round trip". The demo loader pushes through [`push`] too, so demo
//! data reaches devices through exactly the path real edits take.
//!
//! Who may see what (DESIGN.md, "Who may see what"): [`may_read`] is the one rule. It depends on
//! relationship only (a team of the staff member on the case; for a restricted document, also on
//! its access list); the `admin` role grants no record access. A push to a document the device
//! may not read, or to a case it may not read or that does not exist, is answered with the same
//! `forbidden` rejection, so a refusal never tells whether a document exists.
//!
//! Authorship: automerge 0.12 writes the author into the first change (seq 1) of each actor only;
//! later changes of that actor are attributed through it. So for every change new to the server:
//! an author, when present, must be the pushing staff member's id bytes; the actor, when already
//! bound (the `actors` tree), must be bound to the same staff member and device; an unbound actor
//! is bound to the pusher by a change that carries the author (in the same transaction as the
//! changes), and refused on a change that carries none. A violation refuses the whole document
//! push with `forged_author`. Changes the server already holds are duplicates and not checked.
//!
//! Record rules: after access and authorship, every pushed document with changes new to the
//! server is checked against the rules of its kind ([`crate::validate`]): the stored document is
//! materialised (one batch) or taken from the cache of validated states, the new changes applied
//! (to a copy for notes, in place otherwise), before and after compared. That Automerge work is
//! done before the write lock where it can be (`prevalidate`, on several threads for a push of
//! many documents); the write uses a result only if the stored heads and the new changes are
//! still the ones it was computed from, and validates again itself otherwise. A
//! violation refuses the document's push with `rule_violation`, naming the change and the rule;
//! its new changes go to the `quarantine` tree, never to the log, so no device receives them.
//! Every stored change is stamped with the server's receipt time (`received` tree).
//!
//! Log id: every response names the store's log id. A request that names another one (the store
//! was restored from backup since, and `admin restored` gave it a new id, or the store found at
//! open that it had lost acknowledged writes, [`crate::store`]), or names this one with a cursor
//! past the end of the log (a backup put back without `admin restored`), is answered with
//! `reset` and nothing else: nothing pushed is applied, nothing is pulled. A request without one
//! (a new device) is handled normally.
//!
//! Access changes: the server remembers which documents it handed each device (`device_docs`)
//! and the access epoch the device was last reconciled at. When an admin changes access the epoch
//! moves, and the device's next sync is reconciled ([`handle`]): documents it holds but may no
//! longer read are sent as `evictions`; documents it may now read but never got are backfilled
//! from their full history, paged like a pull (the cursor does not move until the backfill is
//! done). The reconciliation is kept in `device_sync` ([`PendingReconcile`]) and every response
//! that carries part of it has a fresh random `reconcile_id`; nothing about the device's holdings
//! is committed until the device echoes that id as `confirmed_reconcile`. Without the
//! confirmation the next response carries the same evictions and the backfill again from where
//! the device last confirmed, so a lost response costs a re-send, never a device that keeps what
//! it should have deleted. A confirmation of the last page completes the reconciliation. If the
//! epoch moves again before that, a new reconciliation starts, counting as held both what was
//! committed and what the unconfirmed response may have delivered. With an unchanged epoch and
//! nothing pending a sync costs no per-document work.
//!
//! Every sync, every reset, and every `forbidden`, `forged_author` or `rule_violation` refusal is
//! written to the audit log, and the audit entry is flushed before the response leaves.

use crate::audit::{AuditKind, AuditRecord};
use crate::auth::Principal;
use crate::store::{
    ActorBinding, BackfillPos, CaseRecord, Commit, DeviceSync, DocHeader, DocRecord, NewChange,
    PendingReconcile, QuarantineEntry, Store, StoreError,
};
use crate::validate::{self, Rules};
use automerge::AutoCommit;
use casenote_protocol::limits;
use casenote_protocol::wire::{
    DocAck, DocPull, DocPush, Hash, Rejection, SyncRequest, SyncResponse, PROTOCOL_VERSION,
};
use casenote_protocol::{CaseId, DocId, DocKind, ErrorCode, Seq, TeamId};
use serde_bytes::ByteBuf;
use serde_json::json;
use std::collections::{BTreeSet, HashMap, HashSet};

use casenote_protocol::limits::PULL_SCAN_ENTRIES_MAX;

fn intersects(a: &[TeamId], b: &[TeamId]) -> bool {
    a.iter().any(|t| b.contains(t))
}

/// The role that manages the service and reads no records.
pub const ADMIN_ROLE: &str = "admin";

/// Whether `who` may hold a document of `case` with header `header` (`None`: a document not yet
/// created, judged by its case alone). The one place read access is decided.
pub fn may_read(who: &Principal, case: &CaseRecord, header: Option<&DocHeader>) -> bool {
    if who.staff.role == ADMIN_ROLE || who.staff.revoked {
        return false;
    }
    if !intersects(who.teams(), &case.teams) {
        return false;
    }
    match header.and_then(|h| h.access_teams.as_deref()) {
        Some(access) => intersects(who.teams(), access),
        None => true,
    }
}

/// Whether `who` may write a document of `case`. Today the same rule as reading.
pub fn may_write(who: &Principal, case: &CaseRecord, header: Option<&DocHeader>) -> bool {
    may_read(who, case, header)
}

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
}

fn decode_change(index: usize, bytes: &[u8]) -> Result<Decoded, String> {
    // Automerge parses untrusted bytes here; a panic inside it must cost this document, not the
    // request or the server.
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
        Ok(Err(e)) => Err(format!("change {index} is not an Automerge change: {e}")),
        Err(_) => Err(format!("change {index} could not be parsed")),
    }
}

fn prepare(push: DocPush) -> Prepared {
    let changes = push
        .changes
        .iter()
        .enumerate()
        .map(|(i, b)| decode_change(i, b))
        .collect();
    Prepared {
        doc_id: push.doc_id,
        case_id: push.case_id,
        kind: push.kind,
        base: push.base,
        changes,
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
        /// what depends on them (a relay after a restore, or a forgery: without signatures the
        /// server cannot tell which, so it stores only the pusher's own work).
        withheld: Option<String>,
    },
    NeedFullHistory,
    Rejected(ErrorCode, String),
}

/// The pending state of one request's push: what it will commit, overlaid on the store.
struct Plan<'a> {
    store: &'a dyn Store,
    who: &'a Principal,
    now_ms: i64,
    rules: Rules,
    cases: HashMap<CaseId, CaseRecord>,
    docs: HashMap<DocId, DocRecord>,
    hashes: HashSet<(DocId, Hash)>,
    actors: HashMap<Vec<u8>, ActorBinding>,
    commit: Commit,
    /// Documents validated in this request, in their state after the push (kept in the cache of
    /// loaded documents once the write committed).
    validated: HashMap<DocId, AutoCommit>,
    /// Changes refused by the record rules.
    quarantine: Vec<QuarantineEntry>,
    /// Validations done before the write lock was taken ([`prevalidate`]), used when their
    /// inputs are still what the store holds.
    prevalidated: HashMap<DocId, Prevalidated>,
    /// Set for the pass before the write lock: it validates nothing itself and commits nothing,
    /// it collects what to validate ahead.
    pre: Option<PrePass>,
}

/// What the pass before the write lock collects.
#[derive(Default)]
struct PrePass {
    seen: HashSet<DocId>,
    candidates: Vec<Candidate>,
}

/// A pushed document whose validation is worth doing before the write lock: new to the server
/// (nothing to load), or stored but not in the cache of validated states (loading it costs in
/// proportion to its history).
struct Candidate {
    doc_id: DocId,
    ctx: validate::Context,
    stored: bool,
    old_heads: Vec<Hash>,
    fresh: Vec<Hash>,
    changes: Vec<automerge::Change>,
}

/// A push validated before the write lock: the inputs that decide the result, and the state
/// after the push (only passes are kept; a refusal is worked out again under the lock).
struct Prevalidated {
    ctx: validate::Context,
    stored: bool,
    old_heads: Vec<Hash>,
    fresh: Vec<Hash>,
    after: AutoCommit,
}

impl Prevalidated {
    /// Whether this is the validation the write would do: the same rules and document header,
    /// the same stored state (the heads name the whole history) and the same new changes in the
    /// same order. Validation is a function of exactly these, so the result is the same.
    fn matches(
        &self,
        ctx: &validate::Context,
        stored: bool,
        old_heads: &[Hash],
        fresh: &[Hash],
    ) -> bool {
        self.ctx.kind == ctx.kind
            && self.ctx.case_id == ctx.case_id
            && self.ctx.pusher == ctx.pusher
            && self.ctx.rules == ctx.rules
            && self.stored == stored
            && same_heads(&self.old_heads, old_heads)
            && self.fresh == fresh
    }
}

fn same_heads(a: &[Hash], b: &[Hash]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort();
    b.sort();
    a == b
}

/// Validates `c` without the write lock: the stored state is loaded (and must still have the
/// heads the pass saw) or, for a document new to the server, there is none. `None` when the
/// state moved or the push does not pass (the write then validates it itself).
fn validate_ahead(
    store: &dyn Store,
    c: Candidate,
) -> Result<Option<(DocId, Prevalidated)>, StoreError> {
    let after = if c.stored {
        let mut doc = validate::materialise(store, c.doc_id)?;
        if !validate::has_heads(&mut doc, &c.old_heads) {
            return Ok(None);
        }
        if c.ctx.kind == DocKind::Note {
            validate::validate(&c.ctx, Some(&doc), &c.changes).ok()
        } else {
            validate::validate_in_place(&c.ctx, &mut doc, &c.changes).then_some(doc)
        }
    } else {
        validate::validate(&c.ctx, None, &c.changes).ok()
    };
    Ok(after.map(|after| {
        (
            c.doc_id,
            Prevalidated {
                ctx: c.ctx,
                stored: c.stored,
                old_heads: c.old_heads,
                fresh: c.fresh,
                after,
            },
        )
    }))
}

impl Plan<'_> {
    fn case(&self, id: CaseId) -> Result<Option<CaseRecord>, StoreError> {
        match self.cases.get(&id) {
            Some(c) => Ok(Some(c.clone())),
            None => self.store.get_case(id),
        }
    }

    fn doc(&self, id: DocId) -> Result<Option<DocRecord>, StoreError> {
        match self.docs.get(&id) {
            Some(d) => Ok(Some(d.clone())),
            None => self.store.get_doc(id),
        }
    }

    fn known(&self, doc: DocId, hash: &Hash) -> Result<bool, StoreError> {
        Ok(self.hashes.contains(&(doc, *hash)) || self.store.has_change(doc, hash)?)
    }

    fn actor(&self, actor: &[u8]) -> Result<Option<ActorBinding>, StoreError> {
        match self.actors.get(actor) {
            Some(b) => Ok(Some(b.clone())),
            None => self.store.get_actor(actor),
        }
    }

    /// Sorts the changes new to the server into the pusher's own, which it may store (with the
    /// actor bindings they add), and the rest: changes authored by someone else or under someone
    /// else's actor, and every change that depends on one of those. Returns the own changes, the
    /// bindings, and the reason anything was withheld.
    fn check_authorship(
        &self,
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

    fn doc_push(&mut self, p: &Prepared) -> Result<Verdict, StoreError> {
        use Verdict::Rejected;
        let changes = match &p.changes {
            Ok(c) => c,
            Err(reason) => return Ok(Rejected(ErrorCode::MalformedChange, reason.clone())),
        };
        let existing = self.doc(p.doc_id)?;
        let stored_before = existing.is_some();
        let mut new_case = None;
        let (header, old_heads) = match existing {
            Some(rec) => {
                // Access first, against the stored header: a document the device may not read
                // gets the same answer as one that does not exist, whatever the push claims.
                let readable = match self.case(rec.header.case_id)? {
                    Some(case) => may_write(self.who, &case, Some(&rec.header)),
                    None => false,
                };
                if !readable {
                    return Ok(forbidden(p.doc_id));
                }
                if rec.header.case_id != p.case_id || rec.header.kind != p.kind {
                    return Ok(Rejected(
                        ErrorCode::HeaderMismatch,
                        format!(
                            "document {} is a {} of case {}, not a {} of case {}",
                            p.doc_id, rec.header.kind, rec.header.case_id, p.kind, p.case_id
                        ),
                    ));
                }
                (rec.header, rec.heads)
            }
            None => {
                if p.kind == DocKind::Case {
                    if p.doc_id.0 != p.case_id.0 {
                        return Ok(Rejected(
                            ErrorCode::HeaderMismatch,
                            format!(
                                "a case document's id must be its case id ({} is not {})",
                                p.doc_id, p.case_id
                            ),
                        ));
                    }
                    // A case record without its case document: never created by a push; refuse
                    // without saying so.
                    if self.case(p.case_id)?.is_some() {
                        return Ok(forbidden(p.doc_id));
                    }
                    // A case created on a device belongs to its creator's teams.
                    let case = CaseRecord {
                        case_id: p.case_id,
                        owner_org: self.who.staff.org_id,
                        teams: self.who.teams().to_vec(),
                        created_ms: self.now_ms,
                    };
                    if !may_write(self.who, &case, None) {
                        return Ok(forbidden(p.doc_id));
                    }
                    new_case = Some(case);
                } else {
                    // An unknown case is answered like an unreadable one: a case id is a
                    // document id too, and its existence is not the device's to learn.
                    match self.case(p.case_id)? {
                        Some(case) if may_write(self.who, &case, None) => {}
                        _ => return Ok(forbidden(p.doc_id)),
                    }
                }
                let header = DocHeader {
                    doc_id: p.doc_id,
                    case_id: p.case_id,
                    kind: p.kind,
                    owner_org: self.who.staff.org_id,
                    access_teams: (p.kind == DocKind::Restricted)
                        .then(|| self.who.teams().to_vec()),
                    created_by: self.who.staff_id(),
                    created_ms: self.now_ms,
                };
                (header, Vec::new())
            }
        };

        for h in &p.base {
            if !self.known(p.doc_id, h)? {
                return Ok(Verdict::NeedFullHistory);
            }
        }
        let mut in_push: HashSet<Hash> = HashSet::new();
        let mut fresh: Vec<Decoded> = Vec::new();
        let mut duplicates = 0u32;
        for c in changes {
            if in_push.contains(&c.hash) || self.known(p.doc_id, &c.hash)? {
                duplicates += 1;
                in_push.insert(c.hash);
                continue;
            }
            let c = c.clone();
            for d in &c.deps {
                if !in_push.contains(d) && !self.known(p.doc_id, d)? {
                    return Ok(Verdict::NeedFullHistory);
                }
            }
            in_push.insert(c.hash);
            fresh.push(c);
        }
        if fresh.is_empty() {
            return Ok(Verdict::Accepted {
                heads: old_heads,
                stored: 0,
                duplicates,
                withheld: None,
            });
        }
        let (fresh, bindings, withheld) = self.check_authorship(fresh)?;
        if fresh.is_empty() {
            let reason = withheld.unwrap_or_default();
            return Ok(Rejected(ErrorCode::ForgedAuthor, reason));
        }
        // The record rules, on the document as it would be after this push.
        let ctx = validate::Context {
            kind: header.kind,
            case_id: header.case_id,
            pusher: self.who.staff_id(),
            rules: self.rules,
        };
        let new_changes: Vec<automerge::Change> = fresh.iter().map(|c| c.change.clone()).collect();
        let fresh_hashes: Vec<Hash> = fresh.iter().map(|c| c.hash).collect();
        if let Some(pre) = self.pre.as_mut() {
            // The pass before the write lock: note what to validate ahead, then carry on as if
            // the push were accepted, so that later documents of this push see it.
            if pre.seen.insert(p.doc_id)
                && (!stored_before || !validate::cached(p.doc_id, &old_heads))
            {
                pre.candidates.push(Candidate {
                    doc_id: p.doc_id,
                    ctx,
                    stored: stored_before,
                    old_heads: old_heads.clone(),
                    fresh: fresh_hashes,
                    changes: new_changes,
                });
            }
        } else {
            let prevalidated = self.prevalidated.remove(&p.doc_id).filter(|v| {
                v.matches(&ctx, stored_before, &old_heads, &fresh_hashes)
                    && !self.validated.contains_key(&p.doc_id)
            });
            let validated = match prevalidated {
                Some(v) => Ok(v.after),
                None => {
                    let (before, from_store) = match self.validated.remove(&p.doc_id) {
                        Some(doc) => (Some(doc), false),
                        None if stored_before => (
                            Some(validate::load(self.store, p.doc_id, &old_heads)?),
                            true,
                        ),
                        None => (None, false),
                    };
                    match before {
                        // The stored state, changed in place (no copy of its history); only a
                        // refusal pays for loading it again to name the change and the rule.
                        Some(mut doc) if from_store && ctx.kind != DocKind::Note => {
                            if validate::validate_in_place(&ctx, &mut doc, &new_changes) {
                                Ok(doc)
                            } else {
                                drop(doc);
                                let before = validate::materialise(self.store, p.doc_id)?;
                                validate::validate(&ctx, Some(&before), &new_changes)
                                    .map_err(|e| (e, Some(before)))
                            }
                        }
                        before => validate::validate(&ctx, before.as_ref(), &new_changes)
                            .map_err(|e| (e, before)),
                    }
                }
            };
            match validated {
                Ok(after) => {
                    self.validated.insert(p.doc_id, after);
                }
                Err(((at, rule), before)) => {
                    if let Some(before) = before {
                        self.validated.insert(p.doc_id, before);
                    }
                    let index = fresh.get(at).map_or(at, |c| c.index);
                    let reason = format!("change {index} breaks a record rule: {rule}");
                    for c in &fresh {
                        self.quarantine.push(QuarantineEntry {
                            doc_id: p.doc_id,
                            hash: c.hash,
                            bytes: c.bytes.clone(),
                            reason: reason.clone(),
                            staff_id: self.who.staff_id(),
                            device_id: self.who.device_id,
                            at_ms: self.now_ms,
                        });
                    }
                    return Ok(Rejected(ErrorCode::RuleViolation, reason));
                }
            }
        }
        for (actor, binding) in bindings {
            self.actors.insert(actor, binding);
        }

        let deps: HashSet<Hash> = fresh.iter().flat_map(|c| c.deps.iter().copied()).collect();
        let mut heads: Vec<Hash> = old_heads
            .into_iter()
            .chain(fresh.iter().map(|c| c.hash))
            .filter(|h| !deps.contains(h))
            .collect();
        heads.sort();
        heads.dedup();
        let stored = fresh.len() as u32;
        for c in fresh {
            self.hashes.insert((p.doc_id, c.hash));
            self.commit.changes.push(NewChange {
                doc_id: p.doc_id,
                hash: c.hash,
                bytes: c.bytes,
                received_at_ms: self.now_ms,
            });
        }
        self.docs.insert(
            p.doc_id,
            DocRecord {
                header,
                heads: heads.clone(),
            },
        );
        if let Some(case) = new_case {
            self.cases.insert(case.case_id, case);
        }
        Ok(Verdict::Accepted {
            heads,
            stored,
            duplicates,
            withheld,
        })
    }
}

fn forbidden(doc_id: DocId) -> Verdict {
    Verdict::Rejected(
        ErrorCode::Forbidden,
        format!("none of your teams may write document {doc_id}"),
    )
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
    /// The highest committed sequence after this push's write (it covers every stored change).
    pub upto: Seq,
}

impl<'a> Plan<'a> {
    fn new(store: &'a dyn Store, who: &'a Principal, now_ms: i64, rules: Rules) -> Self {
        Plan {
            store,
            who,
            now_ms,
            rules,
            cases: HashMap::new(),
            docs: HashMap::new(),
            hashes: HashSet::new(),
            actors: HashMap::new(),
            commit: Commit::default(),
            validated: HashMap::new(),
            quarantine: Vec::new(),
            prevalidated: HashMap::new(),
            pre: None,
        }
    }
}

/// The Automerge work of a push, done before the write lock so that it neither holds up other
/// writers nor runs on one core only: the same checks as the write, on what the store holds now
/// (nothing is committed), to find each document's new changes; then those worth it (see
/// [`Candidate`]) are validated, in parallel. The write uses a result only if its inputs are
/// still the same ([`Prevalidated::matches`]); otherwise it validates again itself.
fn prevalidate(
    store: &dyn Store,
    who: &Principal,
    now_ms: i64,
    rules: &Rules,
    prepared: &[Prepared],
) -> Result<HashMap<DocId, Prevalidated>, StoreError> {
    let mut plan = Plan::new(store, who, now_ms, *rules);
    plan.pre = Some(PrePass::default());
    for p in prepared {
        plan.doc_push(p)?;
    }
    let candidates = plan.pre.take().map(|p| p.candidates).unwrap_or_default();
    let mut out = HashMap::new();
    for done in par_map(candidates, |c| validate_ahead(store, c)) {
        if let Some((doc, v)) = done? {
            out.insert(doc, v);
        }
    }
    Ok(out)
}

/// `f` over `items` on up to [`limits::VALIDATE_THREADS_MAX`] threads (this one included), in order.
fn par_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = cores.min(limits::VALIDATE_THREADS_MAX).min(items.len());
    if workers <= 1 {
        return items.into_iter().map(f).collect();
    }
    let slots: Vec<std::sync::Mutex<(Option<T>, Option<R>)>> = items
        .into_iter()
        .map(|t| std::sync::Mutex::new((Some(t), None)))
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

/// Applies one request's pushes (case documents first) in one atomic write, after checking
/// access, authorship and the record rules ([`validate`]); refused changes go to quarantine. Not
/// yet durable: call [`Store::flush`] before acknowledging anything.
pub fn push_with(
    store: &dyn Store,
    who: &Principal,
    docs: Vec<DocPush>,
    now_ms: i64,
    rules: &Rules,
) -> Result<PushOutcome, StoreError> {
    let mut outcome = PushOutcome::default();
    if docs.is_empty() {
        return Ok(outcome);
    }
    let mut prepared: Vec<Prepared> = par_map(docs, prepare);
    // Case documents first, so that a new case and its first note can arrive in one request.
    prepared.sort_by_key(|p| p.kind != DocKind::Case);
    let prevalidated = prevalidate(store, who, now_ms, rules, &prepared)?;
    let mut prevalidated = Some(prevalidated);
    let mut verdicts: Vec<(DocId, Vec<Hash>, Verdict)> = Vec::new();
    let mut quarantine: Vec<QuarantineEntry> = Vec::new();
    outcome.upto = store.write(&mut || {
        let mut plan = Plan::new(store, who, now_ms, *rules);
        plan.prevalidated = prevalidated.take().unwrap_or_default();
        verdicts.clear();
        for p in &prepared {
            let hashes = match &p.changes {
                Ok(c) => c.iter().map(|c| c.hash).collect(),
                Err(_) => Vec::new(),
            };
            let verdict = plan.doc_push(p)?;
            verdicts.push((p.doc_id, hashes, verdict));
        }
        // These are the stored states once the commit below is done; kept before the lock is
        // released so that the next writer finds them (an entry whose heads are not what is
        // stored, should the commit fail, is never used).
        for (doc, state) in plan.validated.drain() {
            validate::keep(doc, state);
        }
        let mut commit = plan.commit;
        commit.cases = plan.cases.into_values().collect();
        commit.docs = plan.docs.into_values().collect();
        commit.actors = plan.actors.into_iter().collect();
        quarantine = plan.quarantine;
        Ok(commit)
    })?;
    if !quarantine.is_empty() {
        outcome.quarantined = quarantine.len();
        store.quarantine_add(&quarantine)?;
    }
    for (doc_id, hashes, verdict) in verdicts {
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
    Ok(outcome)
}

/// One page of changes for a device.
#[derive(Debug, Default)]
pub struct Pulled {
    pub docs: Vec<DocPull>,
    pub cursor: Seq,
    pub more: bool,
    pub changes: usize,
    pub bytes: usize,
}

/// Collects the changes above `cursor` that `who` may read, leaving out `skip`, up to the page
/// limit (of which `used` bytes are already taken by this response). Only durable changes are
/// handed out, so a cursor never points past what survives a crash.
pub fn pull(
    store: &dyn Store,
    who: &Principal,
    cursor: Seq,
    skip: &HashSet<(DocId, Hash)>,
    used: usize,
) -> Result<Pulled, StoreError> {
    pull_upto(store, who, cursor, skip, used, store.durable_seq())
}

/// [`pull`] of the changes up to `upto`, which may not be durable yet: the caller flushes
/// before it hands the result out ([`handle_with`] does, once for the whole sync).
fn pull_upto(
    store: &dyn Store,
    who: &Principal,
    cursor: Seq,
    skip: &HashSet<(DocId, Hash)>,
    used: usize,
    upto: Seq,
) -> Result<Pulled, StoreError> {
    if cursor >= upto {
        // Nothing new (the idle reconnect), or a cursor from before a restore: resume from here.
        return Ok(Pulled {
            cursor: upto,
            ..Pulled::default()
        });
    }
    let mut out = Pulled {
        cursor: upto,
        ..Pulled::default()
    };
    let mut readable: HashMap<DocId, Option<usize>> = HashMap::new();
    let mut cases: HashMap<CaseId, Option<CaseRecord>> = HashMap::new();
    let mut failure: Option<StoreError> = None;
    let mut scanned = 0usize;
    store.scan_log(cursor, upto, &mut |e| {
        if scanned >= PULL_SCAN_ENTRIES_MAX {
            out.more = true;
            out.cursor = Seq(e.seq.0 - 1);
            return false;
        }
        scanned += 1;
        let slot = match readable.get(&e.doc_id) {
            Some(s) => *s,
            None => {
                let decided = match readable_doc(store, who, e.doc_id, &mut cases) {
                    Ok(Some((case_id, kind))) => {
                        out.docs.push(DocPull {
                            doc_id: e.doc_id,
                            case_id,
                            kind,
                            changes: Vec::new(),
                            heads: Vec::new(),
                        });
                        Some(out.docs.len() - 1)
                    }
                    Ok(None) => None,
                    Err(err) => {
                        failure = Some(err);
                        return false;
                    }
                };
                readable.insert(e.doc_id, decided);
                decided
            }
        };
        let Some(slot) = slot else { return true };
        if skip.contains(&(e.doc_id, e.hash)) {
            return true;
        }
        let taken = used + out.bytes;
        if taken > 0 && taken + e.bytes.len() > limits::RESPONSE_CHANGE_BYTES_SOFT_MAX {
            out.more = true;
            out.cursor = Seq(e.seq.0 - 1);
            return false;
        }
        out.bytes += e.bytes.len();
        out.changes += 1;
        out.docs[slot].changes.push(ByteBuf::from(e.bytes.to_vec()));
        true
    })?;
    if let Some(err) = failure {
        return Err(err);
    }
    out.docs.retain(|d| !d.changes.is_empty());
    for d in &mut out.docs {
        if let Some(rec) = store.get_doc(d.doc_id)? {
            d.heads = rec.heads;
        }
    }
    Ok(out)
}

fn readable_doc(
    store: &dyn Store,
    who: &Principal,
    doc_id: DocId,
    cases: &mut HashMap<CaseId, Option<CaseRecord>>,
) -> Result<Option<(CaseId, DocKind)>, StoreError> {
    let Some(rec) = store.get_doc(doc_id)? else {
        return Ok(None);
    };
    let case_id = rec.header.case_id;
    if let std::collections::hash_map::Entry::Vacant(slot) = cases.entry(case_id) {
        slot.insert(store.get_case(case_id)?);
    }
    Ok(match cases.get(&case_id) {
        Some(Some(case)) if may_read(who, case, Some(&rec.header)) => {
            Some((case_id, rec.header.kind))
        }
        _ => None,
    })
}

/// Every document `who` may read now, found through the `team_cases` and `case_docs` indexes
/// and decided by [`may_read`].
pub fn readable_docs(store: &dyn Store, who: &Principal) -> Result<BTreeSet<DocId>, StoreError> {
    let mut out = BTreeSet::new();
    if who.staff.role == ADMIN_ROLE || who.staff.revoked {
        return Ok(out);
    }
    let mut seen: HashSet<CaseId> = HashSet::new();
    for team in who.teams() {
        for case_id in store.cases_of_team(*team)? {
            if !seen.insert(case_id) {
                continue;
            }
            let Some(case) = store.get_case(case_id)? else {
                continue;
            };
            if !may_read(who, &case, None) {
                continue;
            }
            for doc_id in store.docs_of_case(case_id)? {
                if let Some(rec) = store.get_doc(doc_id)? {
                    if may_read(who, &case, Some(&rec.header)) {
                        out.insert(doc_id);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// What one page of a backfill sends and where it ended.
#[derive(Debug, Default)]
struct Backfill {
    docs: Vec<DocPull>,
    bytes: usize,
    changes: usize,
    /// Where the page ended: `index == missing.len()` when the backfill is complete.
    end: BackfillPos,
}

/// Sends the history (up to `upto`) of `missing`, in order, from `start`, within the page budget.
fn backfill(
    store: &dyn Store,
    missing: &[DocId],
    start: BackfillPos,
    upto: Seq,
    skip: &HashSet<(DocId, Hash)>,
) -> Result<Backfill, StoreError> {
    let mut out = Backfill {
        end: BackfillPos {
            index: missing.len(),
            after_seq: 0,
        },
        ..Backfill::default()
    };
    for (index, doc_id) in missing.iter().enumerate().skip(start.index) {
        let Some(rec) = store.get_doc(*doc_id)? else {
            continue;
        };
        let after = if index == start.index {
            start.after_seq
        } else {
            0
        };
        let mut pull = DocPull {
            doc_id: *doc_id,
            case_id: rec.header.case_id,
            kind: rec.header.kind,
            changes: Vec::new(),
            heads: rec.heads.clone(),
        };
        let mut last_sent = after;
        let mut full = false;
        for seq in store.doc_change_seqs(*doc_id)? {
            if seq.0 <= after || seq > upto {
                continue;
            }
            let Some((_, hash, bytes)) = store.get_log(seq)? else {
                continue;
            };
            if skip.contains(&(*doc_id, hash)) {
                last_sent = seq.0;
                continue;
            }
            if out.bytes > 0 && out.bytes + bytes.len() > limits::RESPONSE_CHANGE_BYTES_SOFT_MAX {
                full = true;
                break;
            }
            out.bytes += bytes.len();
            out.changes += 1;
            last_sent = seq.0;
            pull.changes.push(ByteBuf::from(bytes));
        }
        if !pull.changes.is_empty() {
            out.docs.push(pull);
        }
        if full {
            out.end = BackfillPos {
                index,
                after_seq: last_sent,
            };
            break;
        }
    }
    Ok(out)
}

/// Puts the changes of `extra` into `docs`, one entry per document.
fn merge_pulls(docs: &mut Vec<DocPull>, extra: Vec<DocPull>) {
    for p in extra {
        match docs.iter_mut().find(|d| d.doc_id == p.doc_id) {
            Some(d) => {
                d.changes.extend(p.changes);
                d.heads = p.heads;
            }
            None => docs.push(p),
        }
    }
}

/// A fresh reconcile id: random, non-zero, so that no stale confirmation (an older response's,
/// or one from before a restore) ever matches a later response.
fn new_reconcile_id() -> u64 {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return id;
        }
    }
}

/// The documents whose history the last (unconfirmed) response of `p` carried, in whole or in
/// part: the device may hold them, whatever the server has committed.
fn sent_unconfirmed(p: &PendingReconcile) -> &[DocId] {
    let from = p.confirmed.index.min(p.missing.len());
    let to = p
        .sent
        .index
        .saturating_add(1)
        .min(p.missing.len())
        .max(from);
    &p.missing[from..to]
}

/// Commits what the last response of `p` carried, now that the device confirmed it: the
/// evictions leave `device_docs`, the documents whose history was sent in full join it. Returns
/// whether the reconciliation is complete.
fn commit_confirmed(
    store: &dyn Store,
    device: casenote_protocol::DeviceId,
    p: &mut PendingReconcile,
) -> Result<bool, StoreError> {
    if !p.evictions.is_empty() {
        store.device_docs_remove(device, &p.evictions)?;
        p.evictions.clear();
    }
    let from = p.confirmed.index.min(p.missing.len());
    let to = p.sent.index.min(p.missing.len()).max(from);
    if to > from {
        store.device_docs_add(device, &p.missing[from..to])?;
    }
    p.confirmed = p.sent;
    Ok(p.confirmed.index >= p.missing.len())
}

/// [`handle_with`] under the default [`Rules`].
pub fn handle(
    store: &dyn Store,
    who: &Principal,
    req: SyncRequest,
    now_ms: i64,
) -> Result<SyncResponse, StoreError> {
    handle_with(store, who, req, now_ms, &Rules::default())
}

/// The answer to a device whose log id is not the store's: reset, and nothing else.
fn reset(
    store: &dyn Store,
    who: &Principal,
    req: &SyncRequest,
    theirs: uuid::Uuid,
    ours: uuid::Uuid,
    now_ms: i64,
) -> Result<SyncResponse, StoreError> {
    store.audit_append(
        AuditRecord::new(
            AuditKind::Sync,
            now_ms,
            json!({
                "reset": true,
                "device_log_id": theirs,
                "log_id": ours,
                "cursor_in": req.cursor.0,
                "pushed_docs": req.docs.len(),
            }),
        )
        .staff(who.staff_id())
        .device(who.device_id),
    )?;
    store.flush()?;
    tracing::info!(device = %who.device_id, cursor_in = req.cursor.0, "sync reset: the device's log id is not this store's");
    Ok(SyncResponse {
        version: PROTOCOL_VERSION,
        cursor: Seq(0),
        more: false,
        server_time_ms: now_ms,
        acks: Vec::new(),
        docs: Vec::new(),
        need_full_history: Vec::new(),
        rejections: Vec::new(),
        evictions: Vec::new(),
        log_id: ours,
        reset: true,
        reconcile_id: None,
        lease: None, // set by the HTTP layer from the server's configuration
    })
}

/// What a sync stored, for the live channel: the documents that got changes new to the server
/// and the sequence that covers them (durable once the sync returned).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    pub upto: Seq,
    pub docs: Vec<DocId>,
}

/// Handles one sync request from an authenticated device: check the log id, push, commit a
/// confirmed reconciliation, reconcile its access if needed, pull, audit, make durable.
pub fn handle_with(
    store: &dyn Store,
    who: &Principal,
    req: SyncRequest,
    now_ms: i64,
    rules: &Rules,
) -> Result<SyncResponse, StoreError> {
    handle_stored(store, who, req, now_ms, rules).map(|(resp, _)| resp)
}

/// [`handle_with`], also saying what the sync stored (for [`crate::live`]).
///
/// Durability: one flush, at the end, covers everything the sync wrote (its changes, what the
/// device was handed, its audit entry) and everything its pull handed out. The pull may hand
/// out changes that are committed but not yet flushed (this sync's own, or a concurrent
/// sync's), because the response leaves only after a flush that started after the pull chose
/// its upper bound; so no cursor ever points past what survives a crash. Concurrent syncs share
/// that flush ([`Store::flush`] is a group commit).
pub fn handle_stored(
    store: &dyn Store,
    who: &Principal,
    req: SyncRequest,
    now_ms: i64,
    rules: &Rules,
) -> Result<(SyncResponse, Stored), StoreError> {
    let device = who.device_id;
    let log_id = store.log_id()?;
    if let Some(theirs) = req.log_id {
        // A cursor past the log: the store lost what it handed this device (a backup put back
        // without `admin restored`). Like a foreign log id, the device starts over.
        let past = theirs == log_id && req.cursor > store.last_seq();
        if past {
            tracing::warn!(device = %who.device_id, cursor_in = req.cursor.0, last_seq = store.last_seq().0, "the device's cursor is past this store's log");
        }
        if theirs != log_id || past {
            return reset(store, who, &req, theirs, log_id, now_ms)
                .map(|resp| (resp, Stored::default()));
        }
    }
    // The epoch before anything else: an access change after this point bumps it again, so the
    // next sync reconciles once more.
    let epoch = store.access_epoch()?;
    let state = store.get_device_sync(device)?.unwrap_or_default();
    let mut new_state = state.clone();
    let fresh = req.cursor == Seq(0);
    if fresh {
        // A device starting from nothing holds nothing the server handed it; the normal log scan
        // gives it everything it may read.
        store.device_docs_clear(device)?;
        new_state = DeviceSync {
            reconciled_epoch: Some(epoch),
            pending: None,
        };
    }

    let offset_ms = req.device_clock_ms.saturating_sub(now_ms);
    let clock_flagged = offset_ms.saturating_abs() > limits::CLOCK_OFFSET_FLAG_MS;
    if clock_flagged {
        tracing::warn!(device = %who.device_id, offset_ms, "device clock is off by more than the flag limit");
    }
    let pushed_docs = req.docs.len();
    let pushed = push_with(store, who, req.docs, now_ms, rules)?;
    let accepted: Vec<DocId> = pushed.acks.iter().map(|a| a.doc_id).collect();
    if !accepted.is_empty() {
        store.device_docs_add(device, &accepted)?;
    }
    // Everything committed so far, this push included; handed out only after the flush at the
    // end (which also makes a push of duplicates durable before it is acknowledged).
    let visible = store.last_seq();
    let stored = Stored {
        upto: pushed.upto,
        docs: pushed
            .acks
            .iter()
            .filter(|a| a.stored > 0)
            .map(|a| a.doc_id)
            .collect(),
    };

    // A reconciliation the device confirms is committed first.
    let mut confirmed = false;
    if let Some(p) = new_state.pending.as_mut() {
        if req.confirmed_reconcile == Some(p.id) {
            confirmed = true;
            if commit_confirmed(store, device, p)? {
                new_state.reconciled_epoch = Some(p.epoch);
                new_state.pending = None;
            }
        }
    }

    let mut evictions: Vec<DocId> = Vec::new();
    let mut docs: Vec<DocPull> = Vec::new();
    let mut used = 0usize;
    let mut backfilled = 0usize;
    let mut reconciled = true;
    let mut reconcile_id = None;
    let needs = new_state.pending.is_some() || new_state.reconciled_epoch != Some(epoch);
    if !fresh && needs {
        let stale = new_state.pending.as_ref().map(|p| p.epoch) != Some(epoch);
        if stale {
            // A new reconciliation. What the device may hold: what was committed, plus whatever
            // an unconfirmed earlier response may have given it.
            let committed: BTreeSet<DocId> = store.device_docs(device)?.into_iter().collect();
            let mut held = committed.clone();
            if let Some(p) = &new_state.pending {
                held.extend(sent_unconfirmed(p).iter().copied());
            }
            let may = readable_docs(store, who)?;
            new_state.pending = Some(PendingReconcile {
                id: 0,
                epoch,
                evictions: held.difference(&may).copied().collect(),
                missing: may.difference(&committed).copied().collect(),
                upto: req.cursor.min(visible),
                confirmed: BackfillPos::default(),
                sent: BackfillPos::default(),
            });
        }
        if let Some(p) = new_state.pending.as_mut() {
            if p.evictions.is_empty() && p.confirmed.index >= p.missing.len() {
                // Nothing to send and nothing to confirm.
                new_state.reconciled_epoch = Some(p.epoch);
                new_state.pending = None;
            } else {
                let bf = backfill(store, &p.missing, p.confirmed, p.upto, &pushed.pushed)?;
                p.sent = bf.end;
                p.id = new_reconcile_id();
                reconcile_id = Some(p.id);
                evictions = p.evictions.clone();
                used = bf.bytes;
                backfilled = bf.changes;
                docs = bf.docs;
                reconciled = bf.end.index >= p.missing.len();
            }
        }
    }

    let pulled = if reconciled {
        pull_upto(store, who, req.cursor, &pushed.pushed, used, visible)?
    } else {
        // The backfill filled the page: the cursor stays, the device asks again at once.
        Pulled {
            cursor: req.cursor.min(visible),
            more: true,
            ..Pulled::default()
        }
    };
    let pulled_changes = pulled.changes + backfilled;
    // What the log scan hands out is held from now on (holding more than the server believes is
    // harmless; less would not be), except documents whose backfill awaits confirmation.
    let unconfirmed: HashSet<DocId> = new_state
        .pending
        .as_ref()
        .map(|p| p.missing.iter().copied().collect())
        .unwrap_or_default();
    let held_now: Vec<DocId> = pulled
        .docs
        .iter()
        .map(|d| d.doc_id)
        .filter(|d| !unconfirmed.contains(d) && !evictions.contains(d))
        .collect();
    merge_pulls(&mut docs, pulled.docs);
    // A document evicted in this response is never also sent in it.
    if !evictions.is_empty() {
        docs.retain(|d| !evictions.contains(&d.doc_id));
    }
    let pulled_ids: Vec<DocId> = docs.iter().map(|d| d.doc_id).collect();
    if !held_now.is_empty() {
        store.device_docs_add(device, &held_now)?;
    }
    if new_state != state {
        store.put_device_sync(device, &new_state)?;
    }

    for r in &pushed.rejections {
        if matches!(
            r.code,
            ErrorCode::Forbidden | ErrorCode::ForgedAuthor | ErrorCode::RuleViolation
        ) {
            store.audit_append(
                AuditRecord::new(
                    AuditKind::Refused,
                    now_ms,
                    json!({ "doc_id": r.doc_id, "code": r.code.as_str(), "reason": r.reason }),
                )
                .staff(who.staff_id())
                .device(device),
            )?;
        }
    }
    store.audit_append(
        AuditRecord::new(
            AuditKind::Sync,
            now_ms,
            json!({
                "cursor_in": req.cursor.0,
                "cursor_out": pulled.cursor.0,
                "more": pulled.more,
                "pushed": accepted,
                "stored": pushed.stored,
                "duplicates": pushed.duplicates,
                "quarantined": pushed.quarantined,
                "need_full_history": pushed.need_full_history,
                "rejected": pushed.rejections.iter()
                    .map(|r| json!({"doc_id": r.doc_id, "code": r.code.as_str()}))
                    .collect::<Vec<_>>(),
                "pulled": pulled_ids,
                "pulled_changes": pulled_changes,
                "backfilled_changes": backfilled,
                "evictions": evictions,
                "reconcile_id": reconcile_id,
                "confirmed_reconcile": confirmed.then_some(req.confirmed_reconcile).flatten(),
                "access_epoch": epoch,
                "clock_offset_ms": offset_ms,
                "clock_flagged": clock_flagged,
            }),
        )
        .staff(who.staff_id())
        .device(device),
    )?;
    // The audit entry (and what the device was handed, what it must delete, what it confirmed)
    // is as durable as the answer: one flush even for a pull-only sync.
    store.flush()?;

    tracing::info!(
        device = %who.device_id,
        staff = %who.staff_id(),
        cursor_in = req.cursor.0,
        cursor_out = pulled.cursor.0,
        pushed_docs,
        stored = pushed.stored,
        need_full_history = pushed.need_full_history.len(),
        rejections = pushed.rejections.len(),
        quarantined = pushed.quarantined,
        pulled_docs = pulled_ids.len(),
        pulled_changes,
        backfilled,
        evictions = evictions.len(),
        reconciling = reconcile_id.is_some(),
        confirmed,
        pulled_bytes = used + pulled.bytes,
        more = pulled.more,
        "sync"
    );
    let response = SyncResponse {
        version: PROTOCOL_VERSION,
        cursor: pulled.cursor,
        more: pulled.more,
        server_time_ms: now_ms,
        acks: pushed.acks,
        docs,
        need_full_history: pushed.need_full_history,
        rejections: pushed.rejections,
        evictions,
        log_id,
        reset: false,
        reconcile_id,
        lease: None, // set by the HTTP layer from the server's configuration
    };
    Ok((response, stored))
}
