//! One `/v1/repo` connection's state and its work, run on the blocking pool (store reads,
//! Automerge work, the push): what the connection knows of its token's access, and an Automerge
//! sync state per document the client syncs (bounded by `limits::REPO_DOCS_PER_CONNECTION_MAX`).
//!
//! Documents are not kept per connection. Each message materialises its document within the
//! server's resident budget ([`resident`], shared with validation: a cached state is reused when
//! its heads are the store's), does its work, and gives the state back to that cache; a thread
//! holds one reservation at a time and pushes only after giving it back, so the budget's wait
//! always ends.
//!
//! What arrives is never applied to the server's copy. A sync message that carries changes is
//! received into a copy of the stored document, and the changes new to it are pushed through
//! [`sync::push_durably`]: the device protocol's push (access, authorship binding, the record
//! rules, quarantine, refusals audited), an audit entry, one flush. Only then does the server
//! answer with a sync message whose heads cover them, which is automerge-repo's
//! acknowledgement. A refused push (a forged actor, a filed note changed, a rule broken, a
//! document the token may not write) answers `doc-unavailable`, and the connection serves that
//! document no more: the client would offer the same changes again for ever.
//!
//! Audit: every push is audited as the device protocol's are ([`sync::push_durably`]); the first
//! time a connection is handed changes of a document, an entry names it (`pulled`), written and
//! flushed before the changes leave.
//!
//! Access: every message and every tick re-reads the access epoch; when it moved, the token is
//! authenticated again (revoked: the connection ends) and every document served is checked, and
//! those no longer readable are dropped with `doc-unavailable`. Every message and every change
//! sent checks the document itself too. A document the token may not read answers exactly as one
//! that does not exist: a `request` gets `doc-unavailable`; a `sync` without changes gets an
//! empty document's answer (how a new document starts); changes that cannot be written get
//! `doc-unavailable`.

use super::message::{doc_id_to_repo, Outgoing};
use crate::access::{self, Cases};
use crate::auth::{self, Authenticated, Principal};
use crate::model::{AuditKind, AuditRecord, DocRecord};
use crate::store::{self, Store, StoreError};
use crate::sync::{self, Stored};
use crate::validate::{resident, Rules};
use automerge::sync::{Message, State, SyncDoc};
use automerge::{AutoCommit, ReadDoc, ScalarValue, Value, ROOT};
use casenote_protocol::record::{self, field, statutory};
use casenote_protocol::wire::DocPush;
use casenote_protocol::{limits, CaseId, DocId, DocKind};
use serde_bytes::ByteBuf;
use serde_json::json;
use std::collections::HashMap;

/// Why a connection ends.
#[derive(Debug)]
pub enum End {
    /// The token was revoked (its device or its member of staff).
    Revoked,
    /// The token is no longer known.
    Unauthorized,
    /// The client broke the protocol; the text is a fixed sentence for the `error` message.
    Protocol(&'static str),
    /// The store failed.
    Failed(String),
    /// The stored document does not load: only that document is refused ([`Session::unloadable`]),
    /// the connection goes on. Never ends a connection.
    Unloadable(DocId),
}

impl From<StoreError> for End {
    fn from(e: StoreError) -> Self {
        End::Failed(e.to_string())
    }
}

/// What one message or event produced: messages to send, and what a push stored (for the live
/// feed, once sent).
#[derive(Default)]
pub struct Reply {
    pub out: Vec<Outgoing>,
    pub stored: Option<Stored>,
}

impl Reply {
    fn of(out: Vec<Outgoing>) -> Self {
        Reply { out, stored: None }
    }
}

/// The sync state with the client of one document.
#[derive(Default)]
struct Peer {
    state: State,
    /// A push of this document was refused on this connection: it is served no more.
    refused: bool,
    /// Served from a stored record (so a loss of access is announced).
    served: bool,
    /// Changes of it were handed to this connection, and audited.
    audited: bool,
}

/// One connection.
pub struct Session {
    token: String,
    who: Principal,
    rules: Rules,
    /// The client's peer id, once it joined.
    client: Option<String>,
    epoch: Option<u64>,
    docs: HashMap<DocId, Peer>,
}

/// The longest peer id the server keeps (automerge-repo's are short random strings).
const PEER_ID_BYTES_MAX: usize = 256;

impl Session {
    pub fn new(token: String, who: Principal, rules: Rules) -> Self {
        Session {
            token,
            who,
            rules,
            client: None,
            epoch: None,
            docs: HashMap::new(),
        }
    }

    pub fn device(&self) -> casenote_protocol::DeviceId {
        self.who.device_id
    }

    /// The client's peer id (empty before it joined).
    pub fn client(&self) -> &str {
        self.client.as_deref().unwrap_or("")
    }

    /// Documents this connection syncs.
    pub fn docs(&self) -> Vec<DocId> {
        self.docs.keys().copied().collect()
    }

    /// Those of `docs` this connection syncs.
    pub fn holding(&self, docs: &[DocId]) -> Vec<DocId> {
        docs.iter()
            .filter(|d| self.docs.contains_key(d))
            .copied()
            .collect()
    }

    /// `join`: the client's peer id and protocol versions; answered with `peer`.
    pub fn join(&mut self, sender: Option<String>, versions: &[String]) -> Result<Reply, End> {
        if !versions.iter().any(|v| v == super::message::PROTOCOL_V1) {
            return Err(End::Protocol(
                "this server speaks automerge-repo protocol version 1 only",
            ));
        }
        let sender = sender
            .filter(|s| !s.is_empty() && s.len() <= PEER_ID_BYTES_MAX)
            .ok_or(End::Protocol("join needs a senderId of at most 256 bytes"))?;
        let answer = Outgoing::peer(&sender);
        self.client = Some(sender);
        Ok(Reply::of(vec![answer]))
    }

    /// `request` or `sync` for the document `repo_id` (automerge-repo's form).
    pub fn doc_message(
        &mut self,
        store: &dyn Store,
        repo_id: &str,
        data: &[u8],
        request: bool,
        now_ms: i64,
    ) -> Result<Reply, End> {
        if self.client.is_none() {
            return Err(End::Protocol("send join first"));
        }
        let mut out = self.check_access(store)?;
        let unavailable = Outgoing::unavailable(self.client(), repo_id);
        let Some(doc) = super::message::doc_id_from_repo(repo_id) else {
            out.push(unavailable);
            return Ok(Reply::of(out));
        };
        let msg = Message::decode(data)
            .map_err(|_| End::Protocol("a sync message that does not decode"))?;
        if !self.docs.contains_key(&doc) && self.docs.len() >= limits::REPO_DOCS_PER_CONNECTION_MAX
        {
            tracing::info!(device = %self.who.device_id, %doc, "repo connection holds the most documents it may");
            out.push(unavailable);
            return Ok(Reply::of(out));
        }
        if self.docs.get(&doc).is_some_and(|p| p.refused) {
            return Ok(Reply::of(out));
        }
        let mut reply = match self.readable(store, doc)? {
            Some(rec) => match self.sync_stored(store, doc, rec, msg, now_ms) {
                Err(End::Unloadable(d)) => self.unloadable(d),
                other => other?,
            },
            None if request => {
                self.docs.remove(&doc);
                Reply::of(vec![unavailable])
            }
            None => self.sync_unknown(store, doc, msg, now_ms)?,
        };
        out.append(&mut reply.out);
        reply.out = out;
        Ok(reply)
    }

    /// Changes stored by anyone: each document of `docs` this connection syncs gets what its
    /// client lacks.
    pub fn changed(&mut self, store: &dyn Store, docs: &[DocId]) -> Result<Reply, End> {
        let mut out = self.check_access(store)?;
        for doc in docs {
            if self.docs.get(doc).is_none_or(|p| p.refused) {
                continue;
            }
            match self.readable(store, *doc)? {
                Some(rec) => match self.answer(store, *doc, &rec) {
                    Err(End::Unloadable(d)) => out.extend(self.unloadable(d).out),
                    answered => out.extend(answered?),
                },
                None => out.extend(self.drop_doc(*doc)),
            }
        }
        Ok(Reply::of(out))
    }

    /// The periodic check: the token and the access epoch.
    pub fn tick(&mut self, store: &dyn Store) -> Result<Reply, End> {
        self.reauthenticate(store)?;
        self.check_access(store).map(Reply::of)
    }

    fn reauthenticate(&mut self, store: &dyn Store) -> Result<(), End> {
        match auth::authenticate(store, &self.token)? {
            Authenticated::Ok(who) => {
                self.who = who;
                Ok(())
            }
            Authenticated::Revoked { .. } => Err(End::Revoked),
            Authenticated::Unknown => Err(End::Unauthorized),
        }
    }

    /// When the access epoch moved: the token again, and every document served checked; those
    /// no longer readable are dropped with `doc-unavailable`.
    fn check_access(&mut self, store: &dyn Store) -> Result<Vec<Outgoing>, End> {
        let epoch = store::read(store, |txn| txn.access_epoch())?;
        if self.epoch == Some(epoch) {
            return Ok(Vec::new());
        }
        self.reauthenticate(store)?;
        self.epoch = Some(epoch);
        let held: Vec<DocId> = self.docs.keys().copied().collect();
        let who = &self.who;
        let gone = store::read(store, |txn| {
            let mut cases = Cases::new();
            let mut gone = Vec::new();
            for doc in &held {
                if access::readable_doc(txn, who, *doc, &mut cases)?.is_none() {
                    gone.push(*doc);
                }
            }
            Ok(gone)
        })?;
        Ok(gone.into_iter().flat_map(|d| self.drop_doc(d)).collect())
    }

    /// Forgets `doc`; `doc-unavailable` when it had been served.
    fn drop_doc(&mut self, doc: DocId) -> Option<Outgoing> {
        let peer = self.docs.remove(&doc)?;
        peer.served.then(|| {
            tracing::info!(device = %self.who.device_id, %doc, "repo connection stops serving a document it may no longer read");
            Outgoing::unavailable(self.client(), &doc_id_to_repo(doc))
        })
    }

    fn readable(&self, store: &dyn Store, doc: DocId) -> Result<Option<DocRecord>, StoreError> {
        store::read(store, |txn| {
            access::readable_doc(txn, &self.who, doc, &mut Cases::new())
        })
    }

    /// A message about a stored document the token may read.
    fn sync_stored(
        &mut self,
        store: &dyn Store,
        doc: DocId,
        rec: DocRecord,
        msg: Message,
        now_ms: i64,
    ) -> Result<Reply, End> {
        let peer = self.docs.entry(doc).or_default();
        peer.served = true;
        if msg.changes.is_empty() {
            with_doc(store, doc, &rec, 1, |d| {
                d.sync().receive_sync_message(&mut peer.state, msg)
            })?
            .map_err(|_| End::Protocol("a sync message that does not apply"))?;
            let out = self.answer(store, doc, &rec)?;
            return Ok(Reply::of(out));
        }
        let mut state = peer.state.clone();
        // Two copies in memory at once: the document and the fork the changes are received into.
        // Weighed before the stored document is materialised: a message refused unparsed costs
        // no load.
        let Some(weight) = super::chunks::weigh(&msg) else {
            return Ok(self.refuse(doc));
        };
        let changes = with_doc(store, doc, &rec, 2, |d| {
            if !weight.fits(d.stats().num_actors) {
                return Ok(None);
            }
            let mut fork = d.clone();
            fork.sync().receive_sync_message(&mut state, msg)?;
            if over_limits(&fork) {
                return Ok(None);
            }
            Ok::<_, automerge::AutomergeError>(Some(new_changes(&mut fork, &d.get_heads())))
        })?;
        let Ok(Some(changes)) = changes else {
            return Ok(self.refuse(doc));
        };
        let push = DocPush {
            doc_id: doc,
            case_id: rec.header.case_id,
            kind: rec.header.kind,
            base: rec.heads.clone(),
            changes,
        };
        self.push(store, doc, push, state, now_ms)
    }

    /// A message about a document the store does not hold, or the token may not read (answered
    /// alike): a new document, if its changes declare a kind and case the token may write.
    fn sync_unknown(
        &mut self,
        store: &dyn Store,
        doc: DocId,
        msg: Message,
        now_ms: i64,
    ) -> Result<Reply, End> {
        let peer = self.docs.entry(doc).or_default();
        let mut scratch = AutoCommit::new();
        if msg.changes.is_empty() {
            scratch
                .sync()
                .receive_sync_message(&mut peer.state, msg)
                .map_err(|_| End::Protocol("a sync message that does not apply"))?;
            let out = scratch
                .sync()
                .generate_sync_message(&mut peer.state)
                .map(|m| Outgoing::sync(self.client(), doc, m.encode()));
            return Ok(Reply::of(out.into_iter().collect()));
        }
        if !super::chunks::weigh(&msg).is_some_and(|weight| weight.fits(0)) {
            return Ok(self.refuse(doc));
        }
        let mut state = peer.state.clone();
        let received = scratch.sync().receive_sync_message(&mut state, msg);
        let declared = declared(&scratch);
        let (Ok(()), Some((kind, case_id))) = (received, declared) else {
            return Ok(self.refuse(doc));
        };
        if over_limits(&scratch) {
            return Ok(self.refuse(doc));
        }
        let push = DocPush {
            doc_id: doc,
            case_id,
            kind,
            base: Vec::new(),
            changes: new_changes(&mut scratch, &[]),
        };
        self.push(store, doc, push, state, now_ms)
    }

    /// Pushes what a client sent through the device protocol's push, durably; answers with the
    /// stored state on success, `doc-unavailable` on any refusal.
    fn push(
        &mut self,
        store: &dyn Store,
        doc: DocId,
        push: DocPush,
        state: State,
        now_ms: i64,
    ) -> Result<Reply, End> {
        let changes = push.changes.len();
        let (outcome, stored) =
            sync::push_durably(store, &self.who, vec![push], now_ms, &self.rules, "repo")?;
        let refused = !outcome.rejections.is_empty() || !outcome.need_full_history.is_empty();
        tracing::debug!(device = %self.who.device_id, %doc, changes, stored = outcome.stored, refused, "repo push");
        if refused {
            let mut reply = self.refuse(doc);
            reply.stored = Some(stored);
            return Ok(reply);
        }
        let peer = self.docs.entry(doc).or_default();
        peer.state = state;
        peer.served = true;
        let out = match self.readable(store, doc)? {
            Some(rec) => self.answer(store, doc, &rec)?,
            None => self.drop_doc(doc).into_iter().collect(),
        };
        Ok(Reply {
            out,
            stored: Some(stored),
        })
    }

    /// `doc` as stored does not load (damaged, or written before the vendored automerge's check
    /// refused what it holds): served no more on this connection, logged by id for the
    /// operators; every other document of the connection goes on. Before, the connection closed,
    /// and the web app's every document with it, at each reconnection.
    fn unloadable(&mut self, doc: DocId) -> Reply {
        tracing::error!(device = %self.who.device_id, %doc, "repo connection met a stored document that does not load; it serves it no more");
        self.refuse(doc)
    }

    /// Serves `doc` no more on this connection, and says so.
    fn refuse(&mut self, doc: DocId) -> Reply {
        let peer = self.docs.entry(doc).or_default();
        peer.refused = true;
        tracing::info!(device = %self.who.device_id, %doc, "repo connection refused a document's changes; it serves it no more");
        Reply::of(vec![Outgoing::unavailable(
            self.client(),
            &doc_id_to_repo(doc),
        )])
    }

    /// The sync message the client needs for `doc` as stored, if any. Flushes first when it
    /// carries changes: nothing is handed out before it is durable.
    fn answer(
        &mut self,
        store: &dyn Store,
        doc: DocId,
        rec: &DocRecord,
    ) -> Result<Vec<Outgoing>, End> {
        let Some(peer) = self.docs.get_mut(&doc) else {
            return Ok(Vec::new());
        };
        let msg = with_doc(store, doc, rec, 1, |d| {
            d.sync().generate_sync_message(&mut peer.state)
        })?;
        let Some(msg) = msg else {
            return Ok(Vec::new());
        };
        if !msg.changes.is_empty() {
            if !peer.audited {
                self.audit_handed_out(store, doc)?;
            }
            store.flush()?;
        }
        if let Some(peer) = self.docs.get_mut(&doc) {
            peer.audited |= !msg.changes.is_empty();
        }
        Ok(vec![Outgoing::sync(self.client(), doc, msg.encode())])
    }

    /// The first time a connection is handed changes of `doc`: an audit entry, as a CBOR sync's
    /// entry names the documents it pulled (flushed with what it hands out).
    fn audit_handed_out(&self, store: &dyn Store, doc: DocId) -> Result<(), StoreError> {
        let record = AuditRecord::new(
            AuditKind::Sync,
            crate::now_ms(),
            json!({ "via": "repo", "pulled": [doc] }),
        )
        .staff(self.who.staff_id())
        .device(self.who.device_id);
        store::write(store, |txn| txn.audit_append(record.clone())).map(|_| ())
    }
}

/// Runs `f` on document `doc` as stored, within the resident budget, which pays for `copies` of
/// the document (`f` may hold a copy of its own while it runs).
fn with_doc<T>(
    store: &dyn Store,
    doc: DocId,
    rec: &DocRecord,
    copies: u64,
    f: impl FnOnce(&mut AutoCommit) -> T,
) -> Result<T, End> {
    let reserved = resident::reserve(rec.ops.max(1).saturating_mul(copies));
    let mut state = match resident::load(store, doc, &rec.heads) {
        Err(StoreError::Corrupt(_)) => return Err(End::Unloadable(doc)),
        loaded => loaded?,
    };
    let out = f(&mut state.doc);
    reserved.keep(doc, state);
    Ok(out)
}

/// The changes of `doc` not covered by `heads`, as change bytes for a push.
fn new_changes(doc: &mut AutoCommit, heads: &[automerge::ChangeHash]) -> Vec<ByteBuf> {
    doc.get_changes(heads)
        .into_iter()
        .map(|mut c| ByteBuf::from(c.bytes().into_owned()))
        .collect()
}

/// The kind and case a new document declares in its content, as the record schema writes them:
/// the root's `schema` and `case_id`, both scalar strings.
fn declared(doc: &AutoCommit) -> Option<(DocKind, CaseId)> {
    let scalar = |key: &str| match doc.get(ROOT, key).ok()?? {
        (Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    };
    let kind = match scalar(field::SCHEMA)?.as_str() {
        record::CASE_SCHEMA => DocKind::Case,
        record::NOTE_SCHEMA => DocKind::Note,
        record::PLAN_SCHEMA => DocKind::Plan,
        statutory::ASSESSMENT_SCHEMA => DocKind::Assessment,
        statutory::DISCHARGE_SCHEMA => DocKind::Discharge,
        statutory::REFERRAL_SCHEMA => DocKind::Referral,
        _ => return None,
    };
    let case = scalar(field::CASE_ID)?.parse().ok()?;
    Some((kind, case))
}

/// Whether a document a message was received into is over the limits of operations or actors.
fn over_limits(doc: &AutoCommit) -> bool {
    let stats = doc.stats();
    stats.num_ops > limits::DOC_OPS_MAX
        || crate::validate::over_actor_limits(stats.num_actors, stats.num_changes).is_some()
}
