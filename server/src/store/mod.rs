//! The server's storage contract: what every backend gives the rest of the server, and the only
//! way anything is written ([`write`]).
//!
//! Why a contract of transactions: the server must run as one process on an embedded sled store
//! and as many processes on one PostgreSQL database, and every guarantee that matters (gap-free
//! sequences, one unforked audit chain, a device's reconciliation state never lost to a race)
//! must hold in both. So every read that decides a write happens inside that write's
//! transaction ([`Txn`]), sequence numbers and the audit chain's head are read and advanced inside
//! it, and a transaction that another one invalidated fails with [`StoreError::Conflict`] and is
//! run again whole by [`write`]. Reads that would otherwise hold every writer up (a pull's log
//! scan) are done outside, from committed data ([`Store::scan_log`] and the other committed,
//! append-only reads), and what they depended on is verified inside the write that follows them
//! (`crate::sync`).
//!
//! Durability is separate from commit: a committed transaction is acknowledged to nobody until
//! [`Store::flush`] returned (group commit on sled; a no-op where commit is durable).
//!
//! This module may use the model and the protocol; it knows no backend. The backends live below
//! it: [`sled`] (the only module that knows the sled crate), and PostgreSQL later. Its
//! conformance suite (`conformance.rs`) is the contract in tests, run against every backend.

#[cfg(test)]
pub(crate) mod conformance;
pub mod copy;
pub(crate) mod outcomes;
pub mod postgres;
pub mod sled;

use crate::model::{
    ActorBinding, AuditEntry, AuditRecord, CaseRecord, Device, DeviceSync, LogEntry, LoggedChange,
    NewChange, Org, QuarantineEntry, Staff, Team, TokenRecord,
};
use casenote_protocol::wire::Hash;
use casenote_protocol::{limits, CaseId, DeviceId, DocId, OrgId, Seq, StaffId, TeamId};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

// Named here too for `validate/`, whose imports stay as they were (it is edited elsewhere).
pub use crate::model::{DocHeader, DocRecord};

/// What [`Txn::push_facts`] is asked about one document of a push.
#[derive(Clone, Copy, Debug)]
pub struct PushAsk<'a> {
    pub doc: DocId,
    /// Whether to read the document's record (not when the push has planned it already).
    pub record: bool,
    pub hashes: &'a [Hash],
    pub actors: &'a [Vec<u8>],
}

/// [`Txn::push_facts`]'s answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PushFacts {
    /// The record and its case's (`None`: not asked, or no such document).
    pub record: Option<(DocRecord, Option<CaseRecord>)>,
    pub held: HashSet<Hash>,
    pub refused: HashSet<Hash>,
    /// The asked actors that have a binding.
    pub actors: HashMap<Vec<u8>, ActorBinding>,
    /// The access epoch, where the backend reads it with the rest at no cost (PostgreSQL); `None`
    /// where it does not (the default).
    pub access_epoch: Option<u64>,
}

/// Why the store could not do what was asked: backend-neutral, so nothing above the store knows
/// which backend it runs on.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// Another transaction changed what this one read: the whole transaction may be run again
    /// ([`write`] does, up to `limits::STORE_WRITE_RETRIES` times).
    #[error("the store was busy with a conflicting write; nothing was written: try again")]
    Conflict,
    /// The store had no room for this call within its wait (every PostgreSQL connection stayed
    /// in use): the server is overloaded, nothing was done, and the caller may try again.
    #[error("the store is busy: {0}")]
    Busy(String),
    /// The data directory or database is held by another process (sled's lock).
    #[error("{0} is in use, probably by a running casenote-server; stop it first")]
    Locked(String),
    /// The store's disk is below its free-space floor: nothing was written; reads work.
    #[error("{0}")]
    Full(String),
    /// The store accepts no writes now (it failed a write, a flush is stuck, it is reopening, the
    /// database is read-only): nothing was acknowledged; reads work; it resumes by itself.
    #[error("the store cannot write now: {0}")]
    Unwritable(String),
    /// Stored data is damaged.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// The backend failed (I/O, connection): detail for the log, never for a device.
    #[error("storage error: {0}")]
    Backend(String),
    /// A storage task could not run (a thread could not start, a blocking task failed).
    #[error("a storage task failed: {0}")]
    Task(String),
}

/// What a sync reads first ([`Store::log_state`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogState {
    pub log_id: uuid::Uuid,
    pub last_seq: Seq,
    pub meta: Option<Vec<u8>>,
}

/// What a sync's plan reads first ([`Txn::sync_basis`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SyncBasis {
    /// The change log's last sequence, read first: what the sync's pull may hand out.
    pub last_seq: Seq,
    /// The device's reconciliation state.
    pub state: Option<DeviceSync>,
    pub access_epoch: u64,
    /// The member of staff as stored now.
    pub staff: Option<Staff>,
    /// The meta value asked for.
    pub meta: Option<Vec<u8>>,
}

/// What checking a bearer token reads ([`Store::credentials`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub token: TokenRecord,
    pub device: Option<Device>,
    pub staff: Option<Staff>,
    pub meta: Option<Vec<u8>>,
}

/// [`Store::credentials`] through a read transaction: what a backend without a single read of
/// them all does.
pub fn credentials_in(
    txn: &mut dyn Txn,
    sha256: &[u8; 32],
    meta_key: &str,
) -> Result<Option<Credentials>, StoreError> {
    let Some(token) = txn.token(sha256)? else {
        return Ok(None);
    };
    Ok(Some(Credentials {
        device: txn.device(token.device_id)?,
        staff: txn.staff(token.staff_id)?,
        meta: txn.meta(meta_key)?,
        token,
    }))
}

/// Whether the store accepts writes now, for `/ready` and `/health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Writability {
    pub writable: bool,
    /// Why not, in plain words (no paths).
    pub reason: Option<String>,
    /// Free bytes where the store lives, when known.
    pub free_bytes: Option<u64>,
    /// The floor below which writes are refused.
    pub free_bytes_min: u64,
}

impl Writability {
    /// A store that takes writes and keeps no free-space floor.
    pub fn writable() -> Self {
        Writability {
            writable: true,
            reason: None,
            free_bytes: None,
            free_bytes_min: 0,
        }
    }
}

/// One transaction. Reads see the transaction's own writes. A write transaction commits all its
/// writes atomically or none, isolated from every other write transaction (serializable); a read
/// transaction refuses writes ([`StoreError::Backend`]).
///
/// Which methods are hot (every sync calls them): `sync_basis`, `device_sync_at_epoch`,
/// `put_device_sync`, `device_docs_add`, `audit_append`, `log_id`, `log_page`,
/// `docs_and_cases_in`; every push adds `org_and_teams`, `push_facts` (once per pushed
/// document, in each of its two passes), `append_change`, `put_doc`.
pub trait Txn {
    // The directory.
    fn org(&mut self, id: OrgId) -> Result<Option<Org>, StoreError>;
    fn orgs(&mut self) -> Result<Vec<Org>, StoreError>;
    fn team(&mut self, id: TeamId) -> Result<Option<Team>, StoreError>;
    fn teams(&mut self) -> Result<Vec<Team>, StoreError>;
    /// Organisation `org` and those of `teams` that exist, in `teams`' order. One statement on
    /// PostgreSQL, where a push's pass ahead named its writer's organisation and teams in one
    /// each; the default reads them one after the other.
    fn org_and_teams(
        &mut self,
        org: OrgId,
        teams: &[TeamId],
    ) -> Result<(Option<Org>, Vec<Team>), StoreError> {
        let org = self.org(org)?;
        let mut found = Vec::new();
        for t in teams {
            found.extend(self.team(*t)?);
        }
        Ok((org, found))
    }
    fn staff(&mut self, id: StaffId) -> Result<Option<Staff>, StoreError>;
    fn staff_all(&mut self) -> Result<Vec<Staff>, StoreError>;
    fn device(&mut self, id: DeviceId) -> Result<Option<Device>, StoreError>;
    fn devices(&mut self) -> Result<Vec<Device>, StoreError>;
    /// The token whose sha256 is `sha256`.
    fn token(&mut self, sha256: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError>;
    fn put_org(&mut self, org: &Org) -> Result<(), StoreError>;
    fn put_team(&mut self, team: &Team) -> Result<(), StoreError>;
    fn put_staff(&mut self, staff: &Staff) -> Result<(), StoreError>;
    fn put_device(&mut self, device: &Device) -> Result<(), StoreError>;
    fn put_token(&mut self, sha256: &[u8; 32], record: &TokenRecord) -> Result<(), StoreError>;

    // Records.
    fn case(&mut self, id: CaseId) -> Result<Option<CaseRecord>, StoreError>;
    /// Stores a case, keeping the team → cases index in step (teams that left it drop out).
    fn put_case(&mut self, case: &CaseRecord) -> Result<(), StoreError>;
    fn doc(&mut self, id: DocId) -> Result<Option<DocRecord>, StoreError>;
    /// Document `id`'s record with its case's (`None` for a case the store lacks). One
    /// statement on PostgreSQL, where a push's access check read one and then the other, in
    /// both of its passes; the default reads them one after the other.
    fn doc_and_case(
        &mut self,
        id: DocId,
    ) -> Result<Option<(DocRecord, Option<CaseRecord>)>, StoreError> {
        let Some(doc) = self.doc(id)? else {
            return Ok(None);
        };
        let case = self.case(doc.header.case_id)?;
        Ok(Some((doc, case)))
    }
    /// The records of those of `ids` that exist, in no particular order. One statement on
    /// PostgreSQL, where the pull's read of each document and each case was a round trip of
    /// its own (about thirty a W5L sync); the default reads them one by one.
    fn docs_in(&mut self, ids: &[DocId]) -> Result<Vec<DocRecord>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.doc(*id)?);
        }
        Ok(out)
    }
    /// [`Txn::docs_in`] for cases.
    fn cases_in(&mut self, ids: &[CaseId]) -> Result<Vec<CaseRecord>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.case(*id)?);
        }
        Ok(out)
    }
    /// [`Txn::docs_in`], and the cases of the documents found that are not in `known` (a
    /// backend may return those too). One statement on PostgreSQL, where a pull's page read
    /// its documents and then their cases; the default reads one and then the other.
    fn docs_and_cases_in(
        &mut self,
        ids: &[DocId],
        known: &HashSet<CaseId>,
    ) -> Result<(Vec<DocRecord>, Vec<CaseRecord>), StoreError> {
        let docs = self.docs_in(ids)?;
        let mut wanted: Vec<CaseId> = docs
            .iter()
            .map(|d| d.header.case_id)
            .filter(|c| !known.contains(c))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let cases = self.cases_in(&wanted)?;
        Ok((docs, cases))
    }
    /// Stores a document's record, keeping the case → documents index in step.
    fn put_doc(&mut self, doc: &DocRecord) -> Result<(), StoreError>;
    /// Whether the store holds change `hash` of document `doc`.
    fn has_change(&mut self, doc: DocId, hash: &Hash) -> Result<bool, StoreError>;
    /// Those of `hashes` that the store holds as changes of `doc` ([`Txn::has_change`] of each):
    /// one statement on PostgreSQL, where a push's base, its changes and their dependencies were
    /// a round trip each; the default asks one by one.
    fn held_changes(&mut self, doc: DocId, hashes: &[Hash]) -> Result<HashSet<Hash>, StoreError> {
        let mut held = HashSet::new();
        for h in hashes {
            if self.has_change(doc, h)? {
                held.insert(*h);
            }
        }
        Ok(held)
    }
    /// [`Txn::held_changes`] of `hashes`, and those of the rest that are in quarantine for `doc`
    /// (refused before, [`Txn::quarantined`]). One statement on PostgreSQL, where a push's
    /// dedupe and its look for changes refused before were one each, in both of its passes; the
    /// default asks [`Txn::quarantined`] of each change not held.
    fn held_or_refused(
        &mut self,
        doc: DocId,
        hashes: &[Hash],
    ) -> Result<(HashSet<Hash>, HashSet<Hash>), StoreError> {
        let held = self.held_changes(doc, hashes)?;
        let mut refused = HashSet::new();
        for h in hashes.iter().filter(|h| !held.contains(*h)) {
            if self.quarantined(doc, h)?.is_some() {
                refused.insert(*h);
            }
        }
        Ok((held, refused))
    }
    /// [`Store::doc_change_seqs`] and [`Store::get_log`], read in this transaction (what
    /// [`Txn::docs_page`]'s default reads). A backfill reads documents' histories inside its read
    /// transaction: through the store, each read took a second pooled connection while the
    /// transaction held one, and on PostgreSQL enough concurrent first syncs held every
    /// connection and waited on each other (the load suite).
    fn change_seqs_of(&mut self, doc: DocId) -> Result<Vec<Seq>, StoreError>;
    fn change_at(&mut self, seq: Seq) -> Result<Option<(DocId, Hash, Vec<u8>)>, StoreError>;
    /// [`Store::doc_changes_after`], read in this transaction.
    fn changes_of_after(
        &mut self,
        doc: DocId,
        after: Seq,
    ) -> Result<Vec<(Seq, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for seq in self.change_seqs_of(doc)? {
            if seq > after {
                if let Some((_, _, bytes)) = self.change_at(seq)? {
                    out.push((seq, bytes));
                }
            }
        }
        Ok(out)
    }
    /// The log entries in `(after, upto]`, in order, erased ones left out: at most `max` of them,
    /// and none after the one that brings their bytes to `max_bytes`. Read in this transaction,
    /// for the same reason as [`Txn::change_at`]: the pull's log scan runs inside its read
    /// transaction, and through the store every sync took a second pooled connection.
    fn log_page(
        &mut self,
        range: (Seq, Seq),
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<LoggedChange>, StoreError>;
    /// The changes of `docs` (each named once), document by document in the order given and
    /// each document's in order, erased ones left out: the first document's in `(after, upto]`,
    /// the others' in `(0, upto]`; within [`Txn::log_page`]'s bounds: at most `max`, and none
    /// after the one that brings their bytes to `max_bytes`. What a backfill reads of a run of
    /// documents. The default reads [`Txn::change_seqs_of`] and then [`Txn::change_at`] of
    /// each; one statement on PostgreSQL, where a device's first sync was a round trip per
    /// change of every document it was handed.
    fn docs_page(
        &mut self,
        docs: &[DocId],
        (after, upto): (Seq, Seq),
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<LoggedChange>, StoreError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for (i, doc) in docs.iter().enumerate() {
            if out.len() >= max || bytes >= max_bytes {
                break;
            }
            let from = if i == 0 { after } else { Seq(0) };
            for seq in self.change_seqs_of(*doc)? {
                if out.len() >= max || bytes >= max_bytes {
                    return Ok(out);
                }
                if seq <= from || seq > upto {
                    continue;
                }
                if let Some((doc_id, hash, b)) = self.change_at(seq)? {
                    bytes += b.len();
                    out.push(LoggedChange {
                        seq,
                        doc_id,
                        hash,
                        bytes: b,
                    });
                }
            }
        }
        Ok(out)
    }
    /// Appends a change to the log under the next sequence, allocated in this transaction (with
    /// its received time and the log's hash chain); returns the sequence.
    fn append_change(&mut self, change: &NewChange) -> Result<Seq, StoreError>;
    /// The change log's last sequence as this transaction sees it (its own appends included).
    fn last_seq(&mut self) -> Result<Seq, StoreError>;
    /// Who first used Automerge actor id `actor`.
    fn actor(&mut self, actor: &[u8]) -> Result<Option<ActorBinding>, StoreError>;
    /// Everything a push's screening of one document reads, at once: the document's record
    /// with its case's ([`Txn::doc_and_case`], when `ask.record`), which of `ask.hashes` are
    /// held or refused ([`Txn::held_or_refused`]) and the bindings of those of `ask.actors`
    /// that have one ([`Txn::actor`]). One statement on PostgreSQL, where these were three round
    /// trips in each of a push's two passes, the second under the write lock; the default
    /// reads them one after the other.
    fn push_facts(&mut self, ask: &PushAsk<'_>) -> Result<PushFacts, StoreError> {
        let record = match ask.record {
            true => self.doc_and_case(ask.doc)?,
            false => None,
        };
        let (held, refused) = self.held_or_refused(ask.doc, ask.hashes)?;
        let mut actors = HashMap::new();
        for a in ask.actors {
            if let Some(b) = self.actor(a)? {
                actors.insert(a.clone(), b);
            }
        }
        Ok(PushFacts {
            record,
            held,
            refused,
            actors,
            access_epoch: None,
        })
    }
    fn put_actor(&mut self, actor: &[u8], binding: &ActorBinding) -> Result<(), StoreError>;
    /// The cases team `team` is on.
    fn cases_of_team(&mut self, team: TeamId) -> Result<Vec<CaseId>, StoreError>;
    /// The documents of case `case`.
    fn docs_of_case(&mut self, case: CaseId) -> Result<Vec<DocId>, StoreError>;

    // Per device.
    /// The access epoch `device` was reconciled at and its pending reconciliation.
    fn device_sync(&mut self, device: DeviceId) -> Result<Option<DeviceSync>, StoreError>;
    /// [`Txn::device_sync`] and [`Txn::access_epoch`] together: a sync reads both when it plans
    /// its pull and again when it commits it. One statement on PostgreSQL; the default reads one
    /// and then the other.
    fn device_sync_at_epoch(
        &mut self,
        device: DeviceId,
    ) -> Result<(Option<DeviceSync>, u64), StoreError> {
        let state = self.device_sync(device)?;
        Ok((state, self.access_epoch()?))
    }
    /// [`Txn::last_seq`], then [`Txn::device_sync_at_epoch`] of `device`, member of staff
    /// `staff` and meta value `meta_key`, together: what a sync's plan reads first (how far the
    /// log goes, the device's state, and who its user is at that epoch). One statement on
    /// PostgreSQL; the default reads each.
    fn sync_basis(
        &mut self,
        device: DeviceId,
        staff: StaffId,
        meta_key: &str,
    ) -> Result<SyncBasis, StoreError> {
        let last_seq = self.last_seq()?;
        let (state, access_epoch) = self.device_sync_at_epoch(device)?;
        Ok(SyncBasis {
            last_seq,
            state,
            access_epoch,
            staff: self.staff(staff)?,
            meta: self.meta(meta_key)?,
        })
    }
    fn put_device_sync(&mut self, device: DeviceId, state: &DeviceSync) -> Result<(), StoreError>;
    /// The documents the server believes `device` holds.
    fn device_docs(&mut self, device: DeviceId) -> Result<Vec<DocId>, StoreError>;
    fn device_docs_add(&mut self, device: DeviceId, docs: &[DocId]) -> Result<(), StoreError>;
    fn device_docs_remove(&mut self, device: DeviceId, docs: &[DocId]) -> Result<(), StoreError>;
    fn device_docs_clear(&mut self, device: DeviceId) -> Result<(), StoreError>;

    // Refused changes.
    /// The quarantine entry of change `hash` of document `doc`, if it was refused before.
    fn quarantined(
        &mut self,
        doc: DocId,
        hash: &Hash,
    ) -> Result<Option<QuarantineEntry>, StoreError>;
    /// Keeps refused changes; a change already quarantined (the same document and hash) keeps its
    /// first entry. Returns how many were new.
    fn quarantine_add(&mut self, entries: &[QuarantineEntry]) -> Result<usize, StoreError>;

    // The audit chain.
    /// Appends one entry to the audit chain; the head is read in this transaction, or handed on
    /// by the writer before it in a shared one under the same lock (never cached per process),
    /// so two writers can never fork the chain. Returns the sealed entry.
    fn audit_append(&mut self, record: AuditRecord) -> Result<AuditEntry, StoreError>;

    // Meta.
    /// The global access epoch (0 before any access change).
    fn access_epoch(&mut self) -> Result<u64, StoreError>;
    /// Moves the access epoch on; returns the new value. Bump it in the transaction that
    /// changes access, so a sync that sees the new epoch also sees the new access.
    fn bump_access_epoch(&mut self) -> Result<u64, StoreError>;
    /// The identity of this change log (replaced after a restore, or when a loss was healed).
    fn log_id(&mut self) -> Result<uuid::Uuid, StoreError>;
    fn set_log_id(&mut self, id: uuid::Uuid) -> Result<(), StoreError>;
    /// A small named value (the demo's marker).
    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError>;

    // Key escrow (`crate::escrow`).
    /// The wrap key kept for `device`, if any.
    fn escrow(&mut self, device: DeviceId) -> Result<Option<[u8; 32]>, StoreError>;
    /// The wrap key of `device`: the one kept, or else `key`, kept from now on.
    fn escrow_put_if_absent(
        &mut self,
        device: DeviceId,
        key: [u8; 32],
    ) -> Result<[u8; 32], StoreError>;
    /// Destroys the wrap key of `device`; harmless when there is none.
    fn escrow_remove(&mut self, device: DeviceId) -> Result<(), StoreError>;

    // Erasure (`crate::erase`).
    /// Erases document `doc`'s rows: its record and case index row, its quarantined changes,
    /// and the bytes and received times of its logged changes. Each log entry keeps its place
    /// in the log's hash chain (sequence, document id, change hash, chain link) with no bytes:
    /// an erased entry, which [`Store::scan_log`], [`Store::get_log`] and
    /// [`Store::doc_change_seqs`] never return. Devices' holdings are left to reconciliation,
    /// which evicts the document from each device and then drops the row. A backend whose
    /// files keep deleted bytes until rewritten records that a rewrite is due
    /// ([`Store::compact`]). Returns the sequences erased, ascending.
    fn erase_doc(&mut self, doc: DocId) -> Result<Vec<Seq>, StoreError>;
}

/// The work a transaction runs: reads and writes through the [`Txn`], nothing outside it.
pub type Work<'a> = dyn FnMut(&mut dyn Txn) -> Result<(), StoreError> + 'a;

/// The server's storage. Synchronous and object-safe: the server is handed an `Arc<dyn Store>`.
pub trait Store: Send + Sync {
    /// Runs `work` in one write transaction, isolated from every other write transaction of every
    /// process on the same store (serializable), and commits it; on an error nothing is written.
    /// Committed is not yet durable: call [`Store::flush`] before acknowledging anything. Call it
    /// through [`write`], which runs it again on [`StoreError::Conflict`].
    fn write_txn(&self, work: &mut Work<'_>) -> Result<(), StoreError>;
    /// Runs `work` on committed state; writes are refused. Each read sees committed data; a
    /// backend may give the whole transaction one snapshot, but nothing may rely on it: a read
    /// that decides a write belongs in that write's transaction.
    fn read_txn(&self, work: &mut Work<'_>) -> Result<(), StoreError>;
    /// [`Store::read_txn`] that asks for no snapshot, for a read each of whose conclusions a
    /// write checks again (a push's pass ahead, a sync's plan). The default is `read_txn`; on
    /// PostgreSQL its statements run each on its own, which saves a transaction's `BEGIN` and
    /// `COMMIT`.
    fn read_each_txn(&self, work: &mut Work<'_>) -> Result<(), StoreError> {
        self.read_txn(work)
    }

    // Committed, append-only data, read outside transactions.
    /// Visits log entries with `after < seq <= upto` in order until `visit` returns false.
    fn scan_log(
        &self,
        after: Seq,
        upto: Seq,
        visit: &mut dyn FnMut(LogEntry<'_>) -> bool,
    ) -> Result<(), StoreError>;
    /// The change stored under `seq`: its document, hash and bytes.
    fn get_log(&self, seq: Seq) -> Result<Option<(DocId, Hash, Vec<u8>)>, StoreError>;
    /// The sequences of every stored change of `doc`, ascending.
    fn doc_change_seqs(&self, doc: DocId) -> Result<Vec<Seq>, StoreError>;
    /// Every stored change of `doc` with a sequence above `after`, ascending, with its bytes
    /// (erased ones left out): [`Store::doc_change_seqs`] and [`Store::get_log`] of each, which
    /// is what the default does; one statement on PostgreSQL, where materialising a document
    /// was a round trip per change of its history.
    fn doc_changes_after(&self, doc: DocId, after: Seq) -> Result<Vec<(Seq, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for seq in self.doc_change_seqs(doc)? {
            if seq > after {
                if let Some((_, _, bytes)) = self.get_log(seq)? {
                    out.push((seq, bytes));
                }
            }
        }
        Ok(out)
    }
    /// The server time at which the change under `seq` was received (`None` for changes stored
    /// before the server kept it).
    fn received_at(&self, seq: Seq) -> Result<Option<i64>, StoreError>;
    /// The highest committed sequence (0 when the log is empty). Sequences become visible in
    /// order: no reader sees N+1 before N.
    fn last_seq(&self) -> Result<Seq, StoreError>;
    /// What checking a bearer token reads, in one consistent read: the token's record (by the
    /// sha256 of the token), its device's and its member of staff's (`None` where missing), and
    /// the meta value `meta_key` (the organisations' sharing). One statement on PostgreSQL,
    /// where the check was a read transaction of four reads, six round trips, on every request.
    fn credentials(
        &self,
        sha256: &[u8; 32],
        meta_key: &str,
    ) -> Result<Option<Credentials>, StoreError>;
    /// [`Store::credentials`] from memory, when this store can say without reading that they are
    /// what it holds now (the sled store keeps what it read until a commit changes it); `None`
    /// otherwise (the caller then reads them). Never blocks: callers run it on an async thread.
    fn credentials_cached(&self, _sha256: &[u8; 32], _meta_key: &str) -> Option<Credentials> {
        None
    }
    /// What a sync reads before anything else, in one consistent read: the log's id
    /// ([`Txn::log_id`]), its last sequence ([`Store::last_seq`]) and the meta value `meta_key`
    /// (when the next break-glass grant lapses). One statement on PostgreSQL, where it was a read
    /// transaction and a statement more, five round trips, on every sync.
    fn log_state(&self, meta_key: &str) -> Result<LogState, StoreError>;
    /// [`Txn::access_epoch`], committed, outside a transaction: one statement on PostgreSQL,
    /// where a read transaction around it made three round trips (the live channel reads it
    /// once for every event).
    fn access_epoch(&self) -> Result<u64, StoreError>;
    /// The highest sequence known to be durable. Pulls hand out nothing above it unless they
    /// flush first, so a device's cursor never points past what survives a crash.
    fn durable_seq(&self) -> Result<Seq, StoreError>;
    /// Visits every audit entry's sequence and stored bytes, in order, until `visit` returns
    /// false.
    fn audit_scan(&self, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError>;
    /// The audit entry (seq, hex hash) the store last acknowledged durably, kept outside the
    /// audit log itself; `audit verify` checks that the log reaches it. `None`: none kept.
    fn audit_anchor(&self) -> Result<Option<(u64, String)>, StoreError>;
    /// Every quarantined change, in key order.
    fn quarantine_list(&self) -> Result<Vec<QuarantineEntry>, StoreError>;

    /// Makes every transaction that committed before the call durable. Nothing is acknowledged
    /// before this returns. Concurrent calls may share one flush (group commit).
    fn flush(&self) -> Result<(), StoreError>;
    /// Asks for a flush and returns at once: what committed before the call becomes durable at
    /// the next flush, which starts without waiting for another caller. For a write that
    /// acknowledges nothing and hands nothing out (an idle sync's audit entry, see
    /// `sync::handle`); never instead of [`Store::flush`] before an acknowledgement.
    fn flush_soon(&self);
    /// Whether a commit is durable when it returns ([`Store::flush`] then does nothing): a sync
    /// may announce what it stored once its push committed (`crate::sync::handle_announcing`).
    fn durable_at_commit(&self) -> bool {
        false
    }
    /// Whether the store accepts writes now (for `/ready`); may start a recovery that is due.
    fn writability(&self) -> Writability;

    /// [`Store::scan_log`], erased entries included (their `bytes` empty): for a copy of the
    /// whole store, which keeps every sequence and the hash chain through erased entries.
    fn scan_log_with_erased(
        &self,
        after: Seq,
        upto: Seq,
        visit: &mut dyn FnMut(LogEntry<'_>) -> bool,
    ) -> Result<(), StoreError>;

    /// Makes what was erased ([`Txn::erase_doc`]) leave the store's files: PostgreSQL rewrites
    /// the affected tables and retires the write-ahead log that held the rows; sled cannot
    /// rewrite its files while open, so it says the rewrite is due at its next open (which
    /// does it before serving anything).
    fn compact(&self) -> Result<Compaction, StoreError>;

    /// The store's size in bytes, for `/metrics` (`None`: unknown).
    fn size_bytes(&self) -> Option<u64> {
        None
    }

    /// A watch on what other processes commit to this store, for a backend that several server
    /// nodes share (PostgreSQL); `None` where this process is the only writer (sled).
    fn watch(&self) -> Option<Box<dyn Watch>> {
        None
    }
}

/// What [`Store::compact`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Compaction {
    /// Whether the store's files hold no erased byte now.
    pub done: bool,
    /// What was done, or what remains and when it happens, in plain words.
    pub detail: String,
}

/// Changes another process committed: the highest sequence read, the documents changed, and the
/// access epoch read with them (for the live channel's listeners, as a sync's own event carries
/// it: `crate::sync::Stored::epoch`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub upto: Seq,
    pub docs: Vec<DocId>,
    pub epoch: Option<u64>,
}

/// What other processes commit to a shared store, as they commit it (a wake-up: the changes
/// themselves are read from the log as usual).
pub trait Watch: Send {
    /// Waits at most `timeout` for changes other processes committed past this watch's cursor;
    /// `Ok(None)` when none came. After an error the next call reconnects and reads from its
    /// cursor, so nothing is missed.
    fn wait(&mut self, timeout: std::time::Duration) -> Result<Option<Committed>, StoreError>;
}

/// Runs `f` in a read transaction and returns what it returned.
pub fn read<T>(
    store: &dyn Store,
    f: impl FnMut(&mut dyn Txn) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    read_through(|work| store.read_txn(work), f)
}

/// [`read`] through [`Store::read_each_txn`].
pub fn read_each<T>(
    store: &dyn Store,
    f: impl FnMut(&mut dyn Txn) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    read_through(|work| store.read_each_txn(work), f)
}

/// What `f` returned, run by `run` (one of the store's read transactions).
fn read_through<T>(
    run: impl FnOnce(&mut Work<'_>) -> Result<(), StoreError>,
    mut f: impl FnMut(&mut dyn Txn) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut out = None;
    run(&mut |txn| {
        out = Some(f(txn)?);
        Ok(())
    })?;
    out.ok_or_else(|| StoreError::Task("the read transaction did not run".into()))
}

/// Runs `f` in a write transaction, commits it and returns what `f` returned. On
/// [`StoreError::Conflict`] the whole transaction runs again (up to
/// `limits::STORE_WRITE_RETRIES` times, after a short jittered back-off), so `f` must have no
/// effect outside the transaction.
pub fn write<T>(
    store: &dyn Store,
    mut f: impl FnMut(&mut dyn Txn) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut attempt = 0;
    loop {
        let mut out = None;
        let done = store.write_txn(&mut |txn| {
            out = Some(f(txn)?);
            Ok(())
        });
        match done {
            Ok(()) => {
                return out
                    .ok_or_else(|| StoreError::Task("the write transaction did not run".into()))
            }
            Err(StoreError::Conflict) if attempt < limits::STORE_WRITE_RETRIES => {
                attempt += 1;
                back_off(attempt);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Waits before retry `attempt` of a conflicting transaction: jittered, growing with attempts.
pub fn back_off(attempt: u32) {
    let max_ms = u64::from(attempt) * limits::STORE_WRITE_RETRY_BACKOFF_MS;
    let ms = rand::random::<u64>() % (max_ms + 1);
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// Why a store does not verify (`casenote-server verify`, on either backend).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The first problem found.
    #[error("store damaged: {0}")]
    Damaged(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(crate) fn damaged(msg: impl Into<String>) -> VerifyError {
    VerifyError::Damaged(msg.into())
}
