//! The sync algorithm: one request in, one response out, no HTTP.
//!
//! A device pushes, per document, the server heads it last saw (`base`) and the Automerge changes it
//! made since; the server checks access and headers, stores what is new under the next global
//! sequence numbers, makes it durable, and then hands back every change the device may read that
//! has a sequence above the device's cursor, paged by bytes. The server never materialises a
//! document here: it keeps a log of (hash, dependencies, bytes) and the heads per document, which
//! is all that a relay needs (DESIGN.md, "Facts measured": applying changes one by one is slow).
//!
//! See DESIGN.md, "Sync: one round trip". The demo loader pushes through [`push`] too, so demo
//! data reaches devices through exactly the path real edits take.

use crate::auth::Principal;
use crate::store::{CaseRecord, Commit, DocHeader, DocRecord, NewChange, Store, StoreError};
use casenote_protocol::limits;
use casenote_protocol::wire::{
    DocAck, DocPull, DocPush, Hash, Rejection, SyncRequest, SyncResponse, PROTOCOL_VERSION,
};
use casenote_protocol::{CaseId, DocId, DocKind, ErrorCode, Seq, TeamId};
use serde_bytes::ByteBuf;
use std::collections::{HashMap, HashSet};

use casenote_protocol::limits::PULL_SCAN_ENTRIES_MAX;

fn intersects(a: &[TeamId], b: &[TeamId]) -> bool {
    a.iter().any(|t| b.contains(t))
}

/// Whether `who` may hold a document of `case` with header `header` (`None`: a document not yet
/// created, judged by its case alone). The one place read access is decided.
pub fn may_read(who: &Principal, case: &CaseRecord, header: Option<&DocHeader>) -> bool {
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
struct Decoded {
    hash: Hash,
    deps: Vec<Hash>,
    bytes: Vec<u8>,
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
            hash: change.hash().into(),
            deps: change.deps().iter().copied().map(Hash::from).collect(),
            bytes: change.bytes().into_owned(),
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

/// What happened to one pushed document.
enum Verdict {
    Accepted {
        heads: Vec<Hash>,
        stored: u32,
        duplicates: u32,
    },
    NeedFullHistory,
    Rejected(ErrorCode, String),
}

/// The pending state of one request's push: what it will commit, overlaid on the store.
struct Plan<'a> {
    store: &'a dyn Store,
    who: &'a Principal,
    now_ms: i64,
    cases: HashMap<CaseId, CaseRecord>,
    docs: HashMap<DocId, DocRecord>,
    hashes: HashSet<(DocId, Hash)>,
    commit: Commit,
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

    fn doc_push(&mut self, p: Prepared) -> Result<Verdict, StoreError> {
        use Verdict::Rejected;
        let changes = match p.changes {
            Ok(c) => c,
            Err(reason) => return Ok(Rejected(ErrorCode::MalformedChange, reason)),
        };
        let existing = self.doc(p.doc_id)?;
        let mut new_case = None;
        let (header, old_heads) = match existing {
            Some(rec) => {
                if rec.header.case_id != p.case_id || rec.header.kind != p.kind {
                    return Ok(Rejected(
                        ErrorCode::HeaderMismatch,
                        format!(
                            "document {} is a {} of case {}, not a {} of case {}",
                            p.doc_id, rec.header.kind, rec.header.case_id, p.kind, p.case_id
                        ),
                    ));
                }
                let Some(case) = self.case(rec.header.case_id)? else {
                    return Ok(Rejected(
                        ErrorCode::UnknownCase,
                        format!("case {} is not known to the server", p.case_id),
                    ));
                };
                if !may_write(self.who, &case, Some(&rec.header)) {
                    return Ok(forbidden(p.doc_id));
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
                    if self.case(p.case_id)?.is_some() {
                        return Ok(Rejected(
                            ErrorCode::HeaderMismatch,
                            format!("case {} already exists", p.case_id),
                        ));
                    }
                    if self.who.teams().is_empty() {
                        return Ok(forbidden(p.doc_id));
                    }
                    // A case created on a device belongs to its creator's teams.
                    new_case = Some(CaseRecord {
                        case_id: p.case_id,
                        owner_org: self.who.staff.org_id,
                        teams: self.who.teams().to_vec(),
                        created_ms: self.now_ms,
                    });
                } else {
                    let Some(case) = self.case(p.case_id)? else {
                        return Ok(Rejected(
                            ErrorCode::UnknownCase,
                            format!("case {} is not known to the server", p.case_id),
                        ));
                    };
                    if !may_write(self.who, &case, None) {
                        return Ok(forbidden(p.doc_id));
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
            });
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
}

/// Applies one request's pushes (case documents first) in one atomic write. Not yet durable: call
/// [`Store::flush`] before acknowledging anything.
pub fn push(
    store: &dyn Store,
    who: &Principal,
    docs: Vec<DocPush>,
    now_ms: i64,
) -> Result<PushOutcome, StoreError> {
    let mut outcome = PushOutcome::default();
    if docs.is_empty() {
        return Ok(outcome);
    }
    let mut prepared: Vec<Prepared> = docs.into_iter().map(prepare).collect();
    // Case documents first, so that a new case and its first note can arrive in one request.
    prepared.sort_by_key(|p| p.kind != DocKind::Case);
    let mut pending = Some(prepared);
    let mut verdicts: Vec<(DocId, Vec<Hash>, Verdict)> = Vec::new();
    store.write(&mut || {
        let mut plan = Plan {
            store,
            who,
            now_ms,
            cases: HashMap::new(),
            docs: HashMap::new(),
            hashes: HashSet::new(),
            commit: Commit::default(),
        };
        verdicts.clear();
        for p in pending.take().unwrap_or_default() {
            let doc_id = p.doc_id;
            let hashes = match &p.changes {
                Ok(c) => c.iter().map(|c| c.hash).collect(),
                Err(_) => Vec::new(),
            };
            let verdict = plan.doc_push(p)?;
            verdicts.push((doc_id, hashes, verdict));
        }
        let mut commit = plan.commit;
        commit.cases = plan.cases.into_values().collect();
        commit.docs = plan.docs.into_values().collect();
        Ok(commit)
    })?;
    for (doc_id, hashes, verdict) in verdicts {
        match verdict {
            Verdict::Accepted {
                heads,
                stored,
                duplicates,
            } => {
                outcome.stored += stored as usize;
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
/// limit. Only durable changes are handed out, so a cursor never points past what survives a crash.
pub fn pull(
    store: &dyn Store,
    who: &Principal,
    cursor: Seq,
    skip: &HashSet<(DocId, Hash)>,
) -> Result<Pulled, StoreError> {
    let upto = store.durable_seq();
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
        if out.bytes > 0 && out.bytes + e.bytes.len() > limits::RESPONSE_CHANGE_BYTES_SOFT_MAX {
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

/// Handles one sync request from an authenticated device: push, make durable, pull.
pub fn handle(
    store: &dyn Store,
    who: &Principal,
    req: SyncRequest,
    now_ms: i64,
) -> Result<SyncResponse, StoreError> {
    let offset_ms = req.device_clock_ms.saturating_sub(now_ms);
    if offset_ms.saturating_abs() > limits::CLOCK_OFFSET_FLAG_MS {
        tracing::warn!(device = %who.device_id, offset_ms, "device clock is off by more than the flag limit");
    }
    let pushed_docs = req.docs.len();
    let pushed = push(store, who, req.docs, now_ms)?;
    if pushed_docs > 0 {
        // Even a push of duplicates is acknowledged only once what it duplicates is durable.
        store.flush()?;
    }
    let pulled = pull(store, who, req.cursor, &pushed.pushed)?;
    tracing::info!(
        device = %who.device_id,
        staff = %who.staff_id(),
        cursor_in = req.cursor.0,
        cursor_out = pulled.cursor.0,
        pushed_docs,
        stored = pushed.stored,
        need_full_history = pushed.need_full_history.len(),
        rejections = pushed.rejections.len(),
        pulled_docs = pulled.docs.len(),
        pulled_changes = pulled.changes,
        pulled_bytes = pulled.bytes,
        more = pulled.more,
        "sync"
    );
    Ok(SyncResponse {
        version: PROTOCOL_VERSION,
        cursor: pulled.cursor,
        more: pulled.more,
        server_time_ms: now_ms,
        acks: pushed.acks,
        docs: pulled.docs,
        need_full_history: pushed.need_full_history,
        rejections: pushed.rejections,
        evictions: Vec::new(),
    })
}
