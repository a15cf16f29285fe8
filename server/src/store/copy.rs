//! One traversal of a whole store through the contract alone, feeding a [`Sink`]: another store
//! ([`StoreSink`]: `casenote-server migrate`, and `restore` from a backup file) or a backup
//! writer (`crate::backup`). It knows no backend, so it runs from and to either.
//!
//! What the traversal hands on, in this order, as [`Item`]s in bounded batches
//! ([`limits::STORE_COPY_BYTES_PER_TXN`], [`limits::STORE_COPY_RECORDS_PER_TXN`]), so a large
//! store moves in bounded memory:
//! - the change log up to the cut ([`Cut::upto`]), every entry under the same sequence, with its
//!   received time, in order (`scan_log`); a target computes the same hash chain from (seq, doc,
//!   hash), and each append must land on the sequence it had, or the copy stops; an erased
//!   entry (`Txn::erase_doc`) moves as it is, its place in the chain without bytes;
//! - documents and cases: every document that has a change is in the log, and every case has
//!   its case document, so `doc` and `case` of each id the log names find them all. A document's
//!   record may be newer than the cut (a push committed after it): its heads then name changes
//!   the copy lacks, so the record is rewound to the cut, its heads and operation count
//!   computed from the changes up to the cut (see [`Frontier`]);
//! - actor bindings: a binding is written with the first change under its actor, so the actors
//!   of the logged changes (read from each change's header) find them all;
//! - the access epoch, the log id and the application's meta values ([`META_KEYS`]);
//! - the directory (orgs, teams, staff, devices) and each device's token, sync state,
//!   holdings and escrowed key;
//! - quarantine;
//! - the audit chain up to [`Cut::audit_upto`], entry by entry as stored, checked link by link
//!   as it goes (a broken chain stops the traversal); a [`StoreSink`] seals each again from the
//!   same record, and it must come out with the hash it had.
//!
//! What a cut taken while devices sync guarantees: the log is append-only and sequences become
//! visible in order, so the log up to the cut is exactly what was committed up to it; no
//! document record claims a change the copy lacks (records newer than the cut are rewound);
//! the audit chain is a prefix of the live one. The directory, access epoch, cases' teams,
//! device states and holdings, quarantine and escrow are read after the cut, so they may be a
//! little newer than it: never older, which is the safe side (a revocation or an access change
//! made during the copy is in it; holdings only grow, so no eviction is missed), except that a
//! device's holdings keep only documents the copy holds, so that no access change evicts from a
//! device a document created after the cut before the device has re-sent it.

use super::{read, write, Store, StoreError, Txn};
use crate::model::audit::ChainCheck;
use crate::model::{
    ActorBinding, AuditEntry, AuditRecord, CaseRecord, Device, DeviceSync, DocRecord, NewChange,
    Org, QuarantineEntry, Staff, Team, TokenRecord,
};
use casenote_protocol::wire::Hash;
use casenote_protocol::{limits, CaseId, DeviceId, DocId, Seq};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The meta values of the application (not of a backend) that move with a store: the demo's
/// marker, the admin tokens, the open subject access requests, the data-sharing agreements and
/// objections, and the break-glass records with the next lapse. A new one must be added here.
/// (Each erased document's record, `crate::erase::meta_key`, moves with its erased entries.)
pub const META_KEYS: &[&str] = &[
    "demo",
    crate::model::directory::ADMIN_TOKENS_KEY,
    crate::model::directory::SUBJECT_ACCESS_OPEN_KEY,
    crate::controllers::META_KEY,
    crate::break_glass::META_KEY,
    crate::break_glass::NEXT_LAPSE_KEY,
];

/// One piece of a store, as the traversal hands it on (and as a backup file holds it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Item {
    Change {
        seq: Seq,
        doc_id: DocId,
        hash: Hash,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
        /// 0 for changes from before the server kept receipt times.
        received_at_ms: i64,
    },
    Doc(DocRecord),
    Case(CaseRecord),
    Actor {
        #[serde(with = "serde_bytes")]
        actor: Vec<u8>,
        binding: ActorBinding,
    },
    Meta {
        access_epoch: u64,
        log_id: uuid::Uuid,
        values: Vec<(String, serde_bytes::ByteBuf)>,
    },
    Org(Org),
    Team(Team),
    Staff(Staff),
    Device {
        device: Device,
        token: Option<TokenRecord>,
        sync: Option<DeviceSync>,
        escrow: Option<[u8; 32]>,
    },
    /// Part of a device's holdings (a long list comes in several items).
    Held {
        device: DeviceId,
        docs: Vec<DocId>,
    },
    Quarantined(QuarantineEntry),
    /// An audit entry as stored (its JSON, byte for byte, so its hash is the stored one).
    Audit {
        seq: u64,
        #[serde(with = "serde_bytes")]
        json: Vec<u8>,
    },
}

impl Item {
    /// About how many bytes the item holds, for bounding a batch.
    pub fn size(&self) -> usize {
        const SMALL: usize = 256;
        match self {
            Item::Change { bytes, .. } => bytes.len() + SMALL,
            Item::Quarantined(q) => q.bytes.len() + SMALL,
            Item::Audit { json, .. } => json.len() + SMALL,
            Item::Held { docs, .. } => docs.len() * 16 + SMALL,
            _ => SMALL,
        }
    }
}

/// Where a traversal's items go: each batch is bounded and, for a store, one transaction.
pub trait Sink {
    fn put(&mut self, batch: Vec<Item>) -> Result<(), CopyError>;
}

/// Where the traversal stops: the log up to `upto`, the audit chain up to `audit_upto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    pub upto: Seq,
    pub audit_upto: u64,
}

impl Cut {
    /// Everything committed now (for a store no server is writing to).
    pub fn all(store: &dyn Store) -> Result<Cut, StoreError> {
        Ok(Cut {
            upto: store.last_seq()?,
            audit_upto: u64::MAX,
        })
    }
}

/// What a copy moved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copied {
    pub changes: u64,
    pub docs: u64,
    pub cases: u64,
    pub actors: u64,
    pub orgs: u64,
    pub teams: u64,
    pub staff: u64,
    pub devices: u64,
    pub quarantined: u64,
    pub audit_entries: u64,
    pub access_epoch: u64,
}

impl Copied {
    /// Counts `item` as moved.
    pub fn count(&mut self, item: &Item) {
        match item {
            Item::Change { .. } => self.changes += 1,
            Item::Doc(_) => self.docs += 1,
            Item::Case(_) => self.cases += 1,
            Item::Actor { .. } => self.actors += 1,
            Item::Meta { access_epoch, .. } => self.access_epoch = *access_epoch,
            Item::Org(_) => self.orgs += 1,
            Item::Team(_) => self.teams += 1,
            Item::Staff(_) => self.staff += 1,
            Item::Device { .. } => self.devices += 1,
            Item::Held { .. } => {}
            Item::Quarantined(_) => self.quarantined += 1,
            Item::Audit { .. } => self.audit_entries += 1,
        }
    }
}

/// Why a copy stopped.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the target store is not empty; migrate or restore into a new, empty store")]
    TargetNotEmpty,
    #[error(
        "the source's audit log does not verify (entry {seq}: {reason}); run `audit verify` on it"
    )]
    AuditBroken { seq: u64, reason: String },
    #[error("the copy diverged at {what}: another process wrote to the target meanwhile?")]
    Diverged { what: String },
    /// The sink could not take the items (a backup file's disk, a client that went away).
    #[error("{0}")]
    Sink(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Copies everything of `from` into the empty `to` (`migrate`): the source's audit chain is
/// verified first, so a broken one is refused before anything is copied.
pub fn copy(from: &dyn Store, to: &dyn Store) -> Result<Copied, CopyError> {
    if !is_empty(to)? {
        return Err(CopyError::TargetNotEmpty);
    }
    crate::audit::verify(from).map_err(|e| match e {
        crate::audit::VerifyError::Broken(b) => CopyError::AuditBroken {
            seq: b.seq,
            reason: b.reason,
        },
        other => CopyError::Store(StoreError::Corrupt(other.to_string())),
    })?;
    let mut sink = StoreSink::new(to);
    traverse(from, Cut::all(from)?, &mut sink)?;
    to.flush()?;
    Ok(sink.copied)
}

/// Whether `store` holds nothing: no change, no directory entry, no audit entry.
pub fn is_empty(store: &dyn Store) -> Result<bool, StoreError> {
    if store.last_seq()? != Seq(0) {
        return Ok(false);
    }
    let mut audited = false;
    store.audit_scan(&mut |_, _| {
        audited = true;
        false
    })?;
    let directory = read(store, |t| {
        Ok(!(t.orgs()?.is_empty() && t.staff_all()?.is_empty() && t.devices()?.is_empty()))
    })?;
    Ok(!audited && !directory)
}

/// Hands everything of `from` up to `cut` to `sink`, in the order of the module docs.
pub fn traverse(from: &dyn Store, cut: Cut, sink: &mut dyn Sink) -> Result<(), CopyError> {
    let mut out = Batcher::new(sink);
    let named = log(from, cut.upto, &mut out)?;
    let cases = records(from, &named, &mut out)?;
    meta(from, &named, &cases, &mut out)?;
    directory(from, &named, &mut out)?;
    for entry in from.quarantine_list()? {
        out.push(Item::Quarantined(entry))?;
    }
    audit(from, cut.audit_upto, &mut out)?;
    out.finish()
}

/// Gathers items into bounded batches for a sink (also what `restore` feeds a store through).
pub struct Batcher<'s> {
    sink: &'s mut dyn Sink,
    batch: Vec<Item>,
    bytes: usize,
}

impl<'s> Batcher<'s> {
    pub fn new(sink: &'s mut dyn Sink) -> Self {
        Batcher {
            sink,
            batch: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds `item`; hands the batch on once it is full.
    pub fn push(&mut self, item: Item) -> Result<(), CopyError> {
        self.bytes += item.size();
        self.batch.push(item);
        if self.bytes >= limits::STORE_COPY_BYTES_PER_TXN
            || self.batch.len() >= limits::STORE_COPY_RECORDS_PER_TXN
        {
            self.finish()?;
        }
        Ok(())
    }

    /// Hands on what is left.
    pub fn finish(&mut self) -> Result<(), CopyError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.bytes = 0;
        self.sink.put(std::mem::take(&mut self.batch))
    }
}

/// A document's heads and operation count as of the cut, computed from its logged changes. The
/// log holds each change after its dependencies (a push with a missing dependency is refused),
/// so the frontier moves one change at a time. `known` is false when a change could not be
/// read: the stored record is then kept as it is.
struct Frontier {
    heads: BTreeSet<Hash>,
    ops: u64,
    known: bool,
}

impl Frontier {
    fn add(&mut self, hash: Hash, bytes: &[u8]) -> Option<Vec<u8>> {
        let Ok(change) = automerge::Change::from_bytes(bytes.to_vec()) else {
            self.known = false;
            return None;
        };
        for dep in change.deps() {
            self.heads.remove(&Hash::from(*dep));
        }
        self.heads.insert(hash);
        self.ops += change.len() as u64;
        Some(change.actor_id().to_bytes().to_vec())
    }

    /// `record` as of the cut. A record whose heads are the frontier's is the cut's; any other
    /// was written by a push after the cut, so it is rewound: the frontier's heads and count,
    /// and not filed (a filed note takes no change, so its filing was that later push).
    fn rewind(&self, record: DocRecord) -> DocRecord {
        let heads: Vec<Hash> = self.heads.iter().copied().collect();
        let mut theirs = record.heads.clone();
        theirs.sort();
        if !self.known || theirs == heads {
            return record;
        }
        DocRecord {
            heads,
            ops: self.ops,
            filed_ms: None,
            ..record
        }
    }
}

/// What the log names: its documents (with their frontiers) and the actors of its changes.
#[derive(Default)]
struct Named {
    docs: BTreeMap<DocId, Frontier>,
    /// The documents whose erased entries the log holds (their erasure records move too).
    erased: BTreeSet<DocId>,
    actors: BTreeSet<Vec<u8>>,
}

/// The log up to `upto` in order, a bounded batch per scan.
fn log(from: &dyn Store, upto: Seq, out: &mut Batcher) -> Result<Named, CopyError> {
    let mut named = Named::default();
    let mut cursor = Seq(0);
    while cursor < upto {
        let mut batch = Vec::new();
        let mut bytes = 0;
        from.scan_log_with_erased(cursor, upto, &mut |e| {
            bytes += e.bytes.len();
            batch.push((e.seq, e.doc_id, e.hash, e.bytes.to_vec()));
            bytes < limits::STORE_COPY_BYTES_PER_TXN
        })?;
        let Some(&(end, ..)) = batch.last() else {
            break;
        };
        for (seq, doc_id, hash, bytes) in batch {
            if bytes.is_empty() {
                // Erased: its place in the chain moves, and nothing else; it names no document.
                named.erased.insert(doc_id);
                out.push(Item::Change {
                    seq,
                    doc_id,
                    hash,
                    bytes,
                    received_at_ms: 0,
                })?;
                continue;
            }
            let frontier = named.docs.entry(doc_id).or_insert(Frontier {
                heads: BTreeSet::new(),
                ops: 0,
                known: true,
            });
            if let Some(actor) = frontier.add(hash, &bytes) {
                named.actors.insert(actor);
            }
            out.push(Item::Change {
                seq,
                doc_id,
                hash,
                bytes,
                received_at_ms: from.received_at(seq)?.unwrap_or(0),
            })?;
        }
        cursor = end;
    }
    Ok(named)
}

/// Documents (rewound to the cut), their cases, and the actor bindings.
/// The records of the documents the log names, their cases (and the cases of erased documents,
/// whose records stay as stubs), and the actors' bindings; returns the cases.
fn records(from: &dyn Store, named: &Named, out: &mut Batcher) -> Result<Vec<CaseId>, CopyError> {
    let docs: Vec<DocId> = named.docs.keys().copied().collect();
    let mut cases = erased_cases(from, named)?;
    for chunk in docs.chunks(limits::STORE_COPY_RECORDS_PER_TXN) {
        let records = read(from, |t| {
            chunk
                .iter()
                .filter_map(|d| t.doc(*d).transpose())
                .collect::<Result<Vec<_>, _>>()
        })?;
        for record in records {
            cases.insert(record.header.case_id);
            let rewound = match named.docs.get(&record.header.doc_id) {
                Some(frontier) => frontier.rewind(record),
                None => record,
            };
            out.push(Item::Doc(rewound))?;
        }
    }
    let cases: Vec<CaseId> = cases.into_iter().collect();
    for chunk in cases.chunks(limits::STORE_COPY_RECORDS_PER_TXN) {
        let records = read(from, |t| {
            chunk
                .iter()
                .filter_map(|c| t.case(*c).transpose())
                .collect::<Result<Vec<_>, _>>()
        })?;
        records
            .into_iter()
            .try_for_each(|c| out.push(Item::Case(c)))?;
    }
    let actors: Vec<&Vec<u8>> = named.actors.iter().collect();
    for chunk in actors.chunks(limits::STORE_COPY_RECORDS_PER_TXN) {
        let bindings = read(from, |t| {
            let mut found = Vec::new();
            for a in chunk {
                if let Some(b) = t.actor(a)? {
                    found.push(((*a).clone(), b));
                }
            }
            Ok(found)
        })?;
        for (actor, binding) in bindings {
            out.push(Item::Actor { actor, binding })?;
        }
    }
    Ok(cases)
}

/// The cases of the erased documents the log names (from their erasure records).
fn erased_cases(from: &dyn Store, named: &Named) -> Result<BTreeSet<CaseId>, CopyError> {
    let erased: Vec<DocId> = named.erased.iter().copied().collect();
    let mut cases = BTreeSet::new();
    for chunk in erased.chunks(limits::STORE_COPY_RECORDS_PER_TXN) {
        read(from, |t| {
            for doc in chunk {
                if let Some(v) = t.meta(&crate::erase::meta_key(*doc))? {
                    let record: crate::erase::ErasedRecord =
                        serde_json::from_slice(&v).map_err(|e| {
                            StoreError::Corrupt(format!("erasure record of {doc}: {e}"))
                        })?;
                    cases.insert(record.case_id);
                }
            }
            Ok(())
        })?;
    }
    Ok(cases)
}

/// The meta values that move: [`META_KEYS`], the erased documents' records and the cases'
/// retention ([`crate::retention::meta_key`]).
fn meta(
    from: &dyn Store,
    named: &Named,
    cases: &[CaseId],
    out: &mut Batcher,
) -> Result<(), CopyError> {
    let item = read(from, |t| {
        let mut values = Vec::new();
        let erased = named.erased.iter().map(|d| crate::erase::meta_key(*d));
        let retention = cases.iter().map(|c| crate::retention::meta_key(*c));
        let keys = META_KEYS.iter().map(|k| k.to_string());
        for k in keys.chain(erased).chain(retention) {
            if let Some(v) = t.meta(&k)? {
                values.push((k, serde_bytes::ByteBuf::from(v)));
            }
        }
        Ok(Item::Meta {
            access_epoch: t.access_epoch()?,
            log_id: t.log_id()?,
            values,
        })
    })?;
    out.push(item)
}

/// Orgs, teams, staff, and per device: its record, token, sync state, holdings (of the documents
/// the copy holds) and escrow.
fn directory(from: &dyn Store, named: &Named, out: &mut Batcher) -> Result<(), CopyError> {
    let (orgs, teams, staff, devices) = read(from, |t| {
        Ok((t.orgs()?, t.teams()?, t.staff_all()?, t.devices()?))
    })?;
    orgs.into_iter().try_for_each(|o| out.push(Item::Org(o)))?;
    teams
        .into_iter()
        .try_for_each(|x| out.push(Item::Team(x)))?;
    staff
        .into_iter()
        .try_for_each(|s| out.push(Item::Staff(s)))?;
    for device in devices {
        let sha = token_sha256(&device.token_sha256)?;
        let id = device.device_id;
        let (token, sync, holdings, escrow) = read(from, |t| {
            let token = match sha {
                Some(sha) => t.token(&sha)?,
                None => None,
            };
            Ok((token, t.device_sync(id)?, t.device_docs(id)?, t.escrow(id)?))
        })?;
        out.push(Item::Device {
            device,
            token,
            sync,
            escrow,
        })?;
        // Only documents the copy holds: one created after the cut is not the server's any more
        // until its device re-sends it, and an access change must not evict it meanwhile.
        let holdings: Vec<DocId> = holdings
            .into_iter()
            .filter(|d| named.docs.contains_key(d))
            .collect();
        for docs in holdings.chunks(limits::STORE_COPY_RECORDS_PER_TXN) {
            let docs = docs.to_vec();
            out.push(Item::Held { device: id, docs })?;
        }
    }
    Ok(())
}

fn token_sha256(hex_str: &str) -> Result<Option<[u8; 32]>, StoreError> {
    if hex_str.is_empty() {
        return Ok(None);
    }
    let mut sha = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut sha)
        .map_err(|_| StoreError::Corrupt("a device's token hash is not 32 bytes of hex".into()))?;
    Ok(Some(sha))
}

/// The audit chain up to `upto`, checked link by link, in one scan (the contract's audit scan
/// has no start, so each full batch is handed on from inside it).
fn audit(from: &dyn Store, upto: u64, out: &mut Batcher) -> Result<(), CopyError> {
    let mut check = ChainCheck::default();
    let mut failed: Option<CopyError> = None;
    from.audit_scan(&mut |seq, json| {
        if seq > upto {
            return false;
        }
        let next = check
            .next(seq, json)
            .map_err(|b| CopyError::AuditBroken {
                seq: b.seq,
                reason: b.reason,
            })
            .and_then(|()| {
                out.push(Item::Audit {
                    seq,
                    json: json.to_vec(),
                })
            });
        match next {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    })?;
    failed.map_or(Ok(()), Err)
}

/// A sink that writes into a store: each batch one transaction, every change landing on its
/// sequence and every audit entry sealed again to its hash, or the copy stops.
pub struct StoreSink<'a> {
    to: &'a dyn Store,
    pub copied: Copied,
}

impl<'a> StoreSink<'a> {
    pub fn new(to: &'a dyn Store) -> Self {
        StoreSink {
            to,
            copied: Copied::default(),
        }
    }
}

impl Sink for StoreSink<'_> {
    fn put(&mut self, batch: Vec<Item>) -> Result<(), CopyError> {
        let landed = write(self.to, |t| {
            batch
                .iter()
                .map(|item| apply(t, item))
                .collect::<Result<Vec<_>, _>>()
        })?;
        for (item, landed) in batch.iter().zip(landed) {
            check_landed(item, landed)?;
            self.copied.count(item);
        }
        Ok(())
    }
}

/// What a write put where: a change's sequence, an audit entry as sealed again.
enum Landed {
    Nothing,
    Change(Seq),
    Audit(Box<AuditEntry>),
}

fn apply(t: &mut dyn Txn, item: &Item) -> Result<Landed, StoreError> {
    match item {
        Item::Change {
            doc_id,
            hash,
            bytes,
            received_at_ms,
            ..
        } => {
            let change = NewChange {
                doc_id: *doc_id,
                hash: *hash,
                bytes: bytes.clone(),
                received_at_ms: *received_at_ms,
            };
            return Ok(Landed::Change(t.append_change(&change)?));
        }
        Item::Doc(d) => t.put_doc(d)?,
        Item::Case(c) => t.put_case(c)?,
        Item::Actor { actor, binding } => t.put_actor(actor, binding)?,
        Item::Meta {
            access_epoch,
            log_id,
            values,
        } => {
            while t.access_epoch()? < *access_epoch {
                t.bump_access_epoch()?;
            }
            t.set_log_id(*log_id)?;
            values.iter().try_for_each(|(k, v)| t.put_meta(k, v))?;
        }
        Item::Org(o) => t.put_org(o)?,
        Item::Team(x) => t.put_team(x)?,
        Item::Staff(s) => t.put_staff(s)?,
        Item::Device {
            device,
            token,
            sync,
            escrow,
        } => put_device(t, device, token, sync, *escrow)?,
        Item::Held { device, docs } => t.device_docs_add(*device, docs)?,
        Item::Quarantined(q) => {
            t.quarantine_add(std::slice::from_ref(q))?;
        }
        Item::Audit { seq, json } => {
            let e: AuditEntry = serde_json::from_slice(json).map_err(|e| {
                StoreError::Corrupt(format!("audit entry {seq} does not parse: {e}"))
            })?;
            return Ok(Landed::Audit(Box::new(t.audit_append(record_of(&e))?)));
        }
    }
    Ok(Landed::Nothing)
}

fn put_device(
    t: &mut dyn Txn,
    device: &Device,
    token: &Option<TokenRecord>,
    sync: &Option<DeviceSync>,
    escrow: Option<[u8; 32]>,
) -> Result<(), StoreError> {
    let id = device.device_id;
    t.put_device(device)?;
    if let (Some(sha), Some(token)) = (token_sha256(&device.token_sha256)?, token) {
        t.put_token(&sha, token)?;
    }
    if let Some(sync) = sync {
        t.put_device_sync(id, sync)?;
    }
    if let Some(key) = escrow {
        t.escrow_put_if_absent(id, key)?;
    }
    Ok(())
}

fn check_landed(item: &Item, landed: Landed) -> Result<(), CopyError> {
    match (item, landed) {
        (Item::Change { seq, .. }, Landed::Change(got)) if got != *seq => {
            Err(CopyError::Diverged {
                what: format!("change {seq}, which landed on {got}"),
            })
        }
        (Item::Audit { seq, json }, Landed::Audit(now)) => {
            let was = crate::model::audit::stored_hash(json);
            if now.seq != *seq || was.as_deref() != Some(now.hash.as_str()) {
                return Err(CopyError::Diverged {
                    what: format!("audit entry {seq}"),
                });
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn record_of(e: &AuditEntry) -> AuditRecord {
    AuditRecord {
        at_ms: e.at_ms,
        kind: e.kind,
        staff_id: e.staff_id,
        device_id: e.device_id,
        details: e.details.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The demo store, and a cut just after the first change of a document that has later ones:
    /// that document's stored record is newer than the cut.
    fn demo_and_cut(dir: &std::path::Path) -> (std::sync::Arc<crate::SledStore>, Cut, DocId) {
        let store = crate::store::sled::open(&dir.join("from")).unwrap();
        crate::cli::demo::load(&*store, crate::now_ms()).unwrap();
        let mut firsts: HashMap<DocId, Seq> = HashMap::new();
        let mut later = None;
        store
            .scan_log(Seq(0), store.last_seq().unwrap(), &mut |e| {
                match firsts.get(&e.doc_id) {
                    Some(first) => later = later.or(Some((e.doc_id, *first))),
                    None => {
                        firsts.insert(e.doc_id, e.seq);
                    }
                }
                true
            })
            .unwrap();
        let (doc, first) = later.expect("the demo has a document with several changes");
        let cut = Cut {
            upto: first,
            audit_upto: u64::MAX,
        };
        (store, cut, doc)
    }

    #[test]
    fn a_record_newer_than_the_cut_is_rewound_so_the_copy_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (from, cut, doc) = demo_and_cut(dir.path());
        let to = crate::store::sled::open(&dir.path().join("to")).unwrap();
        let mut sink = StoreSink::new(&*to);
        traverse(&*from, cut, &mut sink).unwrap();
        to.flush().unwrap();
        assert_eq!(to.last_seq().unwrap(), cut.upto);
        let (was, now) = (
            read(&*from, |t| t.doc(doc)).unwrap().unwrap(),
            read(&*to, |t| t.doc(doc)).unwrap().unwrap(),
        );
        assert_ne!(was.heads, now.heads, "the record was not rewound");
        for head in &now.heads {
            assert!(
                read(&*to, |t| t.has_change(doc, head)).unwrap(),
                "the copied record names a change the copy lacks"
            );
        }
        if let Err(e) = to.verify() {
            panic!("the copy does not verify: {e}");
        }
    }
}
