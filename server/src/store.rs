//! Durable storage for the server: the directory (orgs, teams, staff, devices, token hashes), the
//! global change log, document headers and case team lists.
//!
//! Everything sits behind the synchronous [`Store`] trait so that a PostgreSQL backend can replace
//! sled for deployments that outgrow one machine; async handlers call it through
//! `tokio::task::spawn_blocking`. The one write path for records is [`Store::write`]: it runs a
//! planner under the store's write lock and commits what the planner returns in one atomic
//! transaction, giving each new change the next sequence number. Sequence numbers become visible to
//! readers ([`Store::last_seq`]) only after their transaction committed and in order, so a reader
//! never sees seq N+1 before N.
//!
//! sled layout (one tree each; keys are raw bytes, values CBOR unless noted):
//! - `log`: seq (u64 big-endian) → doc_id (16) ‖ change hash (32) ‖ change bytes (raw)
//! - `hashes`: doc_id (16) ‖ change hash (32) → seq (u64 big-endian): dedupe and dependency checks
//! - `docs`: doc_id → [`DocRecord`] (server-side header and current heads)
//! - `cases`: case_id → [`CaseRecord`] (the teams around the person)
//! - `orgs`, `teams`, `staff`, `devices`: id → record
//! - `tokens`: sha256 of the token → [`TokenRecord`]
//! - `meta`: small named values (the demo marker; `access_epoch`, a u64 big-endian bumped by
//!   every access change; `index_v1`, set once the indexes below were built for an older store)
//! - `case_docs`: case_id (16) ‖ doc_id (16) → empty: the documents of a case (index, kept inside
//!   [`Store::write`])
//! - `team_cases`: team_id (16) ‖ case_id (16) → empty: the cases a team is on (index, kept inside
//!   [`Store::write`])
//! - `actors`: Automerge actor id bytes → [`ActorBinding`] (who first used the actor), written in
//!   the same transaction as the changes that bind it
//! - `device_docs`: device_id (16) ‖ doc_id (16) → empty: what the server has handed a device or
//!   accepted from it, so that it knows what to evict
//! - `device_sync`: device_id → [`DeviceSync`] (the access epoch the device was reconciled at,
//!   and the reconciliation it has been sent but not yet confirmed)
//! - `received`: seq (u64 big-endian) → i64 big-endian: the server's clock (ms since the Unix
//!   epoch) when it received the change stored under that seq, written in the same transaction
//!   as the log entry. Outside the CRDT, so no device can change it.
//! - `quarantine`: doc_id (16) ‖ change hash (32) → [`QuarantineEntry`]: changes refused by the
//!   record rules ([`crate::validate`]), kept with the reason, never relayed
//! - `audit`: the hash-chained audit log, JSON values; see [`crate::audit`]
//! - `escrow`: device_id → the 32-byte wrap key of that device's store ([`crate::escrow`])
//!
//! `meta` also holds `log_id` (16 bytes, a uuid v4): the identity of this change log. It is
//! created with the store (or on the first open of an older store) and replaced by
//! `admin restored` after a restore from backup, so that devices whose cursors count in the lost
//! future are told to reset ([`crate::sync`]).

use crate::audit::{self, AuditEntry, AuditRecord};
use crate::directory::{Device, Org, Staff, Team};
use casenote_protocol::wire::Hash;
use casenote_protocol::{CaseId, DeviceId, DocId, DocKind, OrgId, Seq, StaffId, TeamId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the data directory {0} is in use, probably by a running casenote-server; stop it first"
    )]
    Locked(PathBuf),
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("a storage task failed: {0}")]
    Task(String),
}

/// The server-side header of a document: fixed when the server first stores it, never inside the
/// CRDT, so no client can change it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocHeader {
    pub doc_id: DocId,
    pub case_id: CaseId,
    pub kind: DocKind,
    pub owner_org: OrgId,
    /// For `restricted` documents: the teams that may read and write it (in addition to the
    /// case's own team check). `None` for every other kind.
    pub access_teams: Option<Vec<TeamId>>,
    pub created_by: StaffId,
    pub created_ms: i64,
}

/// A document's header and the server's current heads for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocRecord {
    pub header: DocHeader,
    pub heads: Vec<Hash>,
}

/// A case: the person's record, and the teams around the person who may hold its documents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseRecord {
    pub case_id: CaseId,
    pub owner_org: OrgId,
    pub teams: Vec<TeamId>,
    pub created_ms: i64,
}

/// What a bearer token maps to. The token itself is never stored, only its sha256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub device_id: DeviceId,
    pub staff_id: StaffId,
    pub revoked: bool,
}

/// Who first used an Automerge actor id: every later change under it must come from the same
/// staff member on the same device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorBinding {
    pub staff_id: StaffId,
    pub device_id: DeviceId,
    pub first_seen_ms: i64,
}

/// Per device: the access epoch it was last reconciled at, and the reconciliation it has been
/// sent but has not confirmed yet (see [`crate::sync`], "Access changes").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSync {
    pub reconciled_epoch: Option<u64>,
    #[serde(default)]
    pub pending: Option<PendingReconcile>,
}

/// Where a backfill stands: the index into [`PendingReconcile::missing`] of the next document to
/// send, and inside that document the last sequence already sent (0: none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillPos {
    pub index: usize,
    pub after_seq: u64,
}

/// An access reconciliation sent to a device and not yet confirmed by it. Nothing about the
/// device's holdings changes in `device_docs` until the device echoes `id` as
/// `confirmed_reconcile`; until then every response re-sends `evictions` and the backfill from
/// `confirmed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingReconcile {
    /// The `reconcile_id` of the last response that carried this reconciliation: a fresh random
    /// non-zero u64 per response, so a stale confirmation (or one from before a restore) never
    /// matches a later response.
    pub id: u64,
    /// The access epoch the reconciliation was computed at.
    pub epoch: u64,
    /// Documents the device must delete (empty once a confirmation committed them).
    pub evictions: Vec<DocId>,
    /// Documents to backfill, in order (their history up to `upto`).
    pub missing: Vec<DocId>,
    /// The device's cursor when the reconciliation started: history above it comes from the log
    /// scan, history up to it from the backfill.
    pub upto: Seq,
    /// What the device has confirmed of the backfill.
    pub confirmed: BackfillPos,
    /// Where the last response's backfill ended (`index == missing.len()`: complete).
    pub sent: BackfillPos,
}

/// A change refused by the record rules: kept for an administrator, never stored in the log and
/// never relayed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    pub doc_id: DocId,
    pub hash: Hash,
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    /// The rule broken, in plain words (never record content).
    pub reason: String,
    pub staff_id: StaffId,
    pub device_id: DeviceId,
    /// Server time of the (first) refusal.
    pub at_ms: i64,
}

/// One change to append to the log.
#[derive(Clone, Debug)]
pub struct NewChange {
    pub doc_id: DocId,
    pub hash: Hash,
    pub bytes: Vec<u8>,
    /// The server's clock when it received the change (stored in `received`).
    pub received_at_ms: i64,
}

/// Everything one write commits atomically. Changes get consecutive sequence numbers in order.
#[derive(Clone, Debug, Default)]
pub struct Commit {
    pub cases: Vec<CaseRecord>,
    pub docs: Vec<DocRecord>,
    pub changes: Vec<NewChange>,
    /// New actor bindings (actor id bytes, binding).
    pub actors: Vec<(Vec<u8>, ActorBinding)>,
}

impl Commit {
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
            && self.docs.is_empty()
            && self.changes.is_empty()
            && self.actors.is_empty()
    }
}

/// One entry of the change log, as a scan sees it.
#[derive(Clone, Copy, Debug)]
pub struct LogEntry<'a> {
    pub seq: Seq,
    pub doc_id: DocId,
    pub hash: Hash,
    pub bytes: &'a [u8],
}

/// The planner handed to [`Store::write`]: it reads the store and returns what to commit.
pub type Planner<'a> = dyn FnMut() -> Result<Commit, StoreError> + 'a;

/// The server's storage. Synchronous; call it from async code through `spawn_blocking`.
pub trait Store: Send + Sync {
    fn put_org(&self, org: &Org) -> Result<(), StoreError>;
    fn get_org(&self, id: OrgId) -> Result<Option<Org>, StoreError>;
    fn list_orgs(&self) -> Result<Vec<Org>, StoreError>;
    fn put_team(&self, team: &Team) -> Result<(), StoreError>;
    fn get_team(&self, id: TeamId) -> Result<Option<Team>, StoreError>;
    fn list_teams(&self) -> Result<Vec<Team>, StoreError>;
    fn put_staff(&self, staff: &Staff) -> Result<(), StoreError>;
    fn get_staff(&self, id: StaffId) -> Result<Option<Staff>, StoreError>;
    fn list_staff(&self) -> Result<Vec<Staff>, StoreError>;
    fn put_device(&self, device: &Device) -> Result<(), StoreError>;
    fn get_device(&self, id: DeviceId) -> Result<Option<Device>, StoreError>;
    fn list_devices(&self) -> Result<Vec<Device>, StoreError>;
    fn put_token(&self, sha256: &[u8; 32], record: &TokenRecord) -> Result<(), StoreError>;
    fn get_token(&self, sha256: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError>;

    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;

    fn get_case(&self, id: CaseId) -> Result<Option<CaseRecord>, StoreError>;
    fn get_doc(&self, id: DocId) -> Result<Option<DocRecord>, StoreError>;
    /// Whether the server holds the change `hash` of document `doc`.
    fn has_change(&self, doc: DocId, hash: &Hash) -> Result<bool, StoreError>;

    /// The cases team `team` is on (index `team_cases`).
    fn cases_of_team(&self, team: TeamId) -> Result<Vec<CaseId>, StoreError>;
    /// The documents of case `case` (index `case_docs`).
    fn docs_of_case(&self, case: CaseId) -> Result<Vec<DocId>, StoreError>;
    /// The sequences of every stored change of `doc`, ascending.
    fn doc_change_seqs(&self, doc: DocId) -> Result<Vec<Seq>, StoreError>;
    /// The change stored under `seq`: its document, hash and bytes.
    fn get_log(&self, seq: Seq) -> Result<Option<(DocId, Hash, Vec<u8>)>, StoreError>;
    /// Who first used actor id `actor`.
    fn get_actor(&self, actor: &[u8]) -> Result<Option<ActorBinding>, StoreError>;
    /// The server time at which the change stored under `seq` was received (`None` for changes
    /// stored before the server kept it).
    fn received_at(&self, seq: Seq) -> Result<Option<i64>, StoreError>;

    // Key escrow ([`crate::escrow`]): one wrap key per device, in the `escrow` tree.
    /// The wrap key kept for `device`, if any.
    fn escrow_get(&self, device: DeviceId) -> Result<Option<[u8; 32]>, StoreError>;
    /// The wrap key of `device`: the one kept, or else `fresh`, kept from now on.
    fn escrow_get_or_put(&self, device: DeviceId, fresh: [u8; 32]) -> Result<[u8; 32], StoreError>;
    /// Destroys the wrap key of `device` (its revocation); harmless when there is none.
    fn escrow_remove(&self, device: DeviceId) -> Result<(), StoreError>;

    /// Keeps refused changes; a change already quarantined (the same document and hash, e.g. a
    /// device re-sending it) keeps its first entry. Returns how many were new.
    fn quarantine_add(&self, entries: &[QuarantineEntry]) -> Result<usize, StoreError>;
    /// Every quarantined change, in key order.
    fn quarantine_list(&self) -> Result<Vec<QuarantineEntry>, StoreError>;

    /// The id of this change log (see the module docs).
    fn log_id(&self) -> Result<uuid::Uuid, StoreError> {
        match self.meta_get(LOG_ID_KEY)? {
            Some(v) => uuid::Uuid::from_slice(&v)
                .map_err(|_| StoreError::Corrupt("the stored log id is not 16 bytes".into())),
            None => Err(StoreError::Corrupt("the store has no log id".into())),
        }
    }
    /// Gives the store a new random log id (after a restore from backup); returns it.
    fn new_log_id(&self) -> Result<uuid::Uuid, StoreError> {
        let id = uuid::Uuid::new_v4();
        self.meta_put(LOG_ID_KEY, id.as_bytes())?;
        Ok(id)
    }

    /// The documents the server believes `device` holds.
    fn device_docs(&self, device: DeviceId) -> Result<Vec<DocId>, StoreError>;
    fn device_docs_add(&self, device: DeviceId, docs: &[DocId]) -> Result<(), StoreError>;
    fn device_docs_remove(&self, device: DeviceId, docs: &[DocId]) -> Result<(), StoreError>;
    fn device_docs_clear(&self, device: DeviceId) -> Result<(), StoreError>;
    fn get_device_sync(&self, device: DeviceId) -> Result<Option<DeviceSync>, StoreError>;
    fn put_device_sync(&self, device: DeviceId, state: &DeviceSync) -> Result<(), StoreError>;

    /// The global access epoch (0 before any access change).
    fn access_epoch(&self) -> Result<u64, StoreError>;
    /// Bumps the access epoch atomically; returns the new value. Call it after the access change
    /// itself is written, so that a sync that sees the new epoch also sees the new access.
    fn bump_access_epoch(&self) -> Result<u64, StoreError>;

    /// Appends one audit entry to the hash chain (serialised by one mutex); returns it.
    fn audit_append(&self, record: AuditRecord) -> Result<AuditEntry, StoreError>;
    /// Visits every audit entry's key (its sequence) and raw value, in order, until `visit`
    /// returns false.
    fn audit_scan(&self, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError>;

    /// Runs `plan` under the write lock (so what it read is still true when its result is
    /// committed) and commits its result atomically. Returns the highest committed sequence after
    /// the write.
    fn write(&self, plan: &mut Planner<'_>) -> Result<Seq, StoreError>;
    /// The highest sequence whose transaction has committed (0 when the log is empty).
    fn last_seq(&self) -> Seq;
    /// The highest sequence known to be flushed to disk. Pulls hand out nothing above it, so a
    /// device's cursor never points past what survives a crash.
    fn durable_seq(&self) -> Seq;
    /// Visits log entries with `after < seq <= upto` in order until `visit` returns false.
    fn scan_log(
        &self,
        after: Seq,
        upto: Seq,
        visit: &mut dyn FnMut(LogEntry<'_>) -> bool,
    ) -> Result<(), StoreError>;
    /// Makes every write that completed before the call durable. Nothing is acknowledged to a
    /// device before this returns. Concurrent calls may share one flush (group commit).
    fn flush(&self) -> Result<(), StoreError>;
}

/// The sled implementation of [`Store`].
pub struct SledStore {
    db: sled::Db,
    log: sled::Tree,
    hashes: sled::Tree,
    docs: sled::Tree,
    cases: sled::Tree,
    orgs: sled::Tree,
    teams: sled::Tree,
    staff: sled::Tree,
    devices: sled::Tree,
    tokens: sled::Tree,
    meta: sled::Tree,
    case_docs: sled::Tree,
    team_cases: sled::Tree,
    actors: sled::Tree,
    device_docs: sled::Tree,
    device_sync: sled::Tree,
    received: sled::Tree,
    quarantine: sled::Tree,
    audit: sled::Tree,
    write_lock: Mutex<()>,
    /// The last audit entry's (seq, hash), loaded on first append.
    audit_head: Mutex<Option<(u64, String)>>,
    committed: AtomicU64,
    durable: AtomicU64,
    /// Group commit: concurrent [`Store::flush`] calls share sled flushes.
    group: GroupCommit,
}

/// Group commit (DESIGN.md, "Facts measured": one flush costs about as much as a hundred
/// inserts, so throughput comes from sharing flushes). A caller of [`Store::flush`] needs a
/// flush that *starts* after its call (one already running may have started before its writes).
/// If none is running, the caller runs one itself (the leader); otherwise it waits, and when
/// the running flush ends one waiter leads the next flush for everyone who arrived meanwhile.
/// So N concurrent syncs cost about two flushes, not N, while each still returns only once a
/// flush covering its own writes has completed. No thread of its own: the leader is always a
/// caller (on the server, a blocking-pool thread of the sync that is waiting anyway).
#[derive(Default)]
struct GroupCommit {
    state: Mutex<FlushState>,
    done: Condvar,
    /// sled flushes run so far (see [`SledStore::flush_count`]).
    flushes: AtomicU64,
}

#[derive(Default)]
struct FlushState {
    /// Tickets of flushes started and completed (successfully), in order; one runs at a time.
    started: u64,
    completed: u64,
    running: bool,
    /// Callers inside `flush` right now.
    waiting: usize,
    /// Tests only: no flush starts while set.
    held: bool,
}

/// Opens (or creates) the sled store in `data_dir`.
pub fn open(data_dir: &Path) -> Result<Arc<SledStore>, StoreError> {
    SledStore::open(data_dir).map(Arc::new)
}

fn enc<T: Serialize>(value: &T) -> Vec<u8> {
    casenote_protocol::wire::encode(value)
}

fn dec<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    ciborium::de::from_reader(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn hash_key(doc: DocId, hash: &Hash) -> [u8; 48] {
    let mut key = [0u8; 48];
    key[..16].copy_from_slice(doc.as_bytes());
    key[16..].copy_from_slice(&hash.0);
    key
}

fn pair_key(a: &[u8; 16], b: &[u8; 16]) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(a);
    key[16..].copy_from_slice(b);
    key
}

/// The ids stored after a 16-byte prefix in the keys of `tree` under `prefix`.
fn suffix_ids<T>(
    tree: &sled::Tree,
    prefix: &[u8; 16],
    make: fn(&[u8]) -> Option<T>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for item in tree.scan_prefix(prefix) {
        let (k, _) = item?;
        let id = make(&k[16..]).ok_or_else(|| StoreError::Corrupt("an index key".into()))?;
        out.push(id);
    }
    Ok(out)
}

const ACCESS_EPOCH_KEY: &str = "access_epoch";
/// The meta key of the log id.
pub const LOG_ID_KEY: &str = "log_id";
const INDEX_KEY: &str = "index_v1";

fn seq_from(bytes: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("a sequence key is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(arr))
}

/// The `escrow` tree: device_id (16) → the device store's wrap key (32 bytes, [`crate::escrow`]).
/// Opened where it is used, so that it needs nothing of [`SledStore::open`].
const ESCROW_TREE: &str = "escrow";

impl SledStore {
    fn escrow_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(ESCROW_TREE)?)
    }
}

fn escrow_key(v: &[u8]) -> Result<[u8; 32], StoreError> {
    v.try_into()
        .map_err(|_| StoreError::Corrupt("an escrowed key is not 32 bytes".into()))
}

/// [`casenote_sled_recovery::open`] (partial snapshots removed first), with the page cache
/// bounded by [`casenote_protocol::limits::SERVER_SLED_CACHE_BYTES`] instead of sled's 1 GiB
/// default, so the server's memory does not grow with the size of its store.
fn open_sled(data_dir: &Path) -> sled::Result<sled::Db> {
    casenote_sled_recovery::open_with(
        data_dir,
        sled::Config::new().cache_capacity(casenote_protocol::limits::SERVER_SLED_CACHE_BYTES),
    )
}

impl SledStore {
    /// How many sled flushes this store has run since it was opened. Group commit makes this
    /// smaller than the number of [`Store::flush`] calls when they overlap.
    pub fn flush_count(&self) -> u64 {
        self.group.flushes.load(Ordering::Relaxed)
    }

    /// Tests only: while held, no flush starts (callers of [`Store::flush`] queue up).
    #[cfg(test)]
    pub(crate) fn hold_flushes(&self, hold: bool) {
        let mut st = self.group.state.lock().unwrap_or_else(|e| e.into_inner());
        st.held = hold;
        drop(st);
        self.group.done.notify_all();
    }

    /// Tests only: how many callers are inside [`Store::flush`] now.
    #[cfg(test)]
    pub(crate) fn flush_waiters(&self) -> usize {
        let st = self.group.state.lock().unwrap_or_else(|e| e.into_inner());
        st.waiting
    }

    /// Opens (or creates) the store; a directory held by another process is [`StoreError::Locked`].
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let db = open_sled(data_dir).map_err(|e| match e {
            sled::Error::Io(ref io) if io.to_string().contains("could not acquire lock") => {
                StoreError::Locked(data_dir.to_path_buf())
            }
            other => StoreError::Sled(other),
        })?;
        let tree = |name: &str| db.open_tree(name);
        let log = tree("log")?;
        let committed = match log.last()? {
            Some((k, _)) => seq_from(&k)?,
            None => 0,
        };
        let store = SledStore {
            case_docs: tree("case_docs")?,
            team_cases: tree("team_cases")?,
            actors: tree("actors")?,
            device_docs: tree("device_docs")?,
            device_sync: tree("device_sync")?,
            received: tree("received")?,
            quarantine: tree("quarantine")?,
            audit: tree(audit::TREE)?,
            audit_head: Mutex::new(None),
            hashes: tree("hashes")?,
            docs: tree("docs")?,
            cases: tree("cases")?,
            orgs: tree("orgs")?,
            teams: tree("teams")?,
            staff: tree("staff")?,
            devices: tree("devices")?,
            tokens: tree("tokens")?,
            meta: tree("meta")?,
            log,
            db,
            write_lock: Mutex::new(()),
            committed: AtomicU64::new(committed),
            durable: AtomicU64::new(committed),
            group: GroupCommit::default(),
        };
        store.build_indexes()?;
        if !store.meta.contains_key(LOG_ID_KEY)? {
            store
                .meta
                .insert(LOG_ID_KEY, uuid::Uuid::new_v4().as_bytes())?;
            store.db.flush()?;
        }
        Ok(store)
    }

    /// Builds `case_docs` and `team_cases` for a store written before they existed (once).
    fn build_indexes(&self) -> Result<(), StoreError> {
        if self.meta.contains_key(INDEX_KEY)? {
            return Ok(());
        }
        for item in self.docs.iter().values() {
            let rec: DocRecord = dec(&item?)?;
            self.case_docs.insert(
                pair_key(rec.header.case_id.as_bytes(), rec.header.doc_id.as_bytes()),
                &[],
            )?;
        }
        for item in self.cases.iter().values() {
            let case: CaseRecord = dec(&item?)?;
            for t in &case.teams {
                self.team_cases
                    .insert(pair_key(t.as_bytes(), case.case_id.as_bytes()), &[])?;
            }
        }
        self.meta.insert(INDEX_KEY, &[1])?;
        Ok(())
    }

    fn get<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> Result<Option<T>, StoreError> {
        tree.get(key)?.map(|v| dec(&v)).transpose()
    }

    fn put<T: Serialize>(tree: &sled::Tree, key: &[u8], value: &T) -> Result<(), StoreError> {
        tree.insert(key, enc(value))?;
        Ok(())
    }

    fn all<T: DeserializeOwned>(tree: &sled::Tree) -> Result<Vec<T>, StoreError> {
        tree.iter().values().map(|v| dec(&v?)).collect()
    }

    fn apply(&self, commit: &Commit, first: u64) -> Result<(), StoreError> {
        let trees = (
            &self.log,
            &self.hashes,
            &self.docs,
            &self.cases,
            &self.case_docs,
            &self.team_cases,
            &self.actors,
            &self.received,
        );
        let result = trees.transaction(
            |(log, hashes, docs, cases, case_docs, team_cases, actors, received)| {
                for case in &commit.cases {
                    let key = case.case_id.as_bytes();
                    // Keep `team_cases` in step: drop the teams that left, add the ones on it now.
                    if let Some(old) = cases.get(&key[..])? {
                        let old: CaseRecord = dec(&old)
                            .map_err(|e| ConflictableTransactionError::Abort(e.to_string()))?;
                        for t in old.teams.iter().filter(|t| !case.teams.contains(t)) {
                            team_cases.remove(&pair_key(t.as_bytes(), key)[..])?;
                        }
                    }
                    for t in &case.teams {
                        team_cases.insert(&pair_key(t.as_bytes(), key)[..], &[][..])?;
                    }
                    cases.insert(&key[..], enc(case))?;
                }
                for doc in &commit.docs {
                    let h = &doc.header;
                    docs.insert(&h.doc_id.as_bytes()[..], enc(doc))?;
                    case_docs.insert(
                        &pair_key(h.case_id.as_bytes(), h.doc_id.as_bytes())[..],
                        &[][..],
                    )?;
                }
                for (i, change) in commit.changes.iter().enumerate() {
                    let seq = (first + i as u64).to_be_bytes();
                    let mut value = Vec::with_capacity(48 + change.bytes.len());
                    value.extend_from_slice(change.doc_id.as_bytes());
                    value.extend_from_slice(&change.hash.0);
                    value.extend_from_slice(&change.bytes);
                    log.insert(&seq[..], value)?;
                    hashes.insert(&hash_key(change.doc_id, &change.hash)[..], &seq[..])?;
                    received.insert(&seq[..], &change.received_at_ms.to_be_bytes()[..])?;
                }
                for (actor, binding) in &commit.actors {
                    actors.insert(&actor[..], enc(binding))?;
                }
                Ok::<(), ConflictableTransactionError<String>>(())
            },
        );
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
            Err(TransactionError::Abort(reason)) => Err(StoreError::Corrupt(format!(
                "the write transaction aborted: {reason}"
            ))),
        }
    }
}

impl Store for SledStore {
    fn put_org(&self, org: &Org) -> Result<(), StoreError> {
        Self::put(&self.orgs, org.org_id.as_bytes(), org)
    }
    fn get_org(&self, id: OrgId) -> Result<Option<Org>, StoreError> {
        Self::get(&self.orgs, id.as_bytes())
    }
    fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        Self::all(&self.orgs)
    }
    fn put_team(&self, team: &Team) -> Result<(), StoreError> {
        Self::put(&self.teams, team.team_id.as_bytes(), team)
    }
    fn get_team(&self, id: TeamId) -> Result<Option<Team>, StoreError> {
        Self::get(&self.teams, id.as_bytes())
    }
    fn list_teams(&self) -> Result<Vec<Team>, StoreError> {
        Self::all(&self.teams)
    }
    fn put_staff(&self, staff: &Staff) -> Result<(), StoreError> {
        Self::put(&self.staff, staff.staff_id.as_bytes(), staff)
    }
    fn get_staff(&self, id: StaffId) -> Result<Option<Staff>, StoreError> {
        Self::get(&self.staff, id.as_bytes())
    }
    fn list_staff(&self) -> Result<Vec<Staff>, StoreError> {
        Self::all(&self.staff)
    }
    fn put_device(&self, device: &Device) -> Result<(), StoreError> {
        Self::put(&self.devices, device.device_id.as_bytes(), device)
    }
    fn get_device(&self, id: DeviceId) -> Result<Option<Device>, StoreError> {
        Self::get(&self.devices, id.as_bytes())
    }
    fn list_devices(&self) -> Result<Vec<Device>, StoreError> {
        Self::all(&self.devices)
    }
    fn put_token(&self, sha256: &[u8; 32], record: &TokenRecord) -> Result<(), StoreError> {
        Self::put(&self.tokens, sha256, record)
    }
    fn get_token(&self, sha256: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        Self::get(&self.tokens, sha256)
    }

    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(key.as_bytes())?.map(|v| v.to_vec()))
    }
    fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(key.as_bytes(), value)?;
        Ok(())
    }

    fn get_case(&self, id: CaseId) -> Result<Option<CaseRecord>, StoreError> {
        Self::get(&self.cases, id.as_bytes())
    }
    fn get_doc(&self, id: DocId) -> Result<Option<DocRecord>, StoreError> {
        Self::get(&self.docs, id.as_bytes())
    }
    fn has_change(&self, doc: DocId, hash: &Hash) -> Result<bool, StoreError> {
        Ok(self.hashes.contains_key(hash_key(doc, hash))?)
    }

    fn cases_of_team(&self, team: TeamId) -> Result<Vec<CaseId>, StoreError> {
        suffix_ids(&self.team_cases, team.as_bytes(), CaseId::from_slice)
    }
    fn docs_of_case(&self, case: CaseId) -> Result<Vec<DocId>, StoreError> {
        suffix_ids(&self.case_docs, case.as_bytes(), DocId::from_slice)
    }
    fn doc_change_seqs(&self, doc: DocId) -> Result<Vec<Seq>, StoreError> {
        let mut out = Vec::new();
        for item in self.hashes.scan_prefix(doc.as_bytes()) {
            let (_, v) = item?;
            out.push(Seq(seq_from(&v)?));
        }
        out.sort();
        Ok(out)
    }
    fn get_log(&self, seq: Seq) -> Result<Option<(DocId, Hash, Vec<u8>)>, StoreError> {
        let Some(v) = self.log.get(seq.0.to_be_bytes())? else {
            return Ok(None);
        };
        if v.len() < 48 {
            return Err(StoreError::Corrupt(
                "a log entry is shorter than its header".into(),
            ));
        }
        let doc = DocId::from_slice(&v[..16])
            .ok_or_else(|| StoreError::Corrupt("a log entry's doc id".into()))?;
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&v[16..48]);
        Ok(Some((doc, Hash(hash), v[48..].to_vec())))
    }
    fn get_actor(&self, actor: &[u8]) -> Result<Option<ActorBinding>, StoreError> {
        Self::get(&self.actors, actor)
    }
    fn received_at(&self, seq: Seq) -> Result<Option<i64>, StoreError> {
        match self.received.get(seq.0.to_be_bytes())? {
            Some(v) => {
                let arr: [u8; 8] = v
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("a received time is not 8 bytes".into()))?;
                Ok(Some(i64::from_be_bytes(arr)))
            }
            None => Ok(None),
        }
    }

    fn escrow_get(&self, device: DeviceId) -> Result<Option<[u8; 32]>, StoreError> {
        self.escrow_tree()?
            .get(device.as_bytes())?
            .map(|v| escrow_key(&v))
            .transpose()
    }
    fn escrow_get_or_put(&self, device: DeviceId, fresh: [u8; 32]) -> Result<[u8; 32], StoreError> {
        // Compare-and-swap: two first requests at once agree on one key.
        match self.escrow_tree()?.compare_and_swap(
            device.as_bytes(),
            None as Option<&[u8]>,
            Some(&fresh[..]),
        )? {
            Ok(()) => Ok(fresh),
            Err(current) => escrow_key(&current.current.unwrap_or_default()),
        }
    }
    fn escrow_remove(&self, device: DeviceId) -> Result<(), StoreError> {
        self.escrow_tree()?.remove(device.as_bytes())?;
        Ok(())
    }

    fn quarantine_add(&self, entries: &[QuarantineEntry]) -> Result<usize, StoreError> {
        let mut added = 0;
        for e in entries {
            let key = hash_key(e.doc_id, &e.hash);
            let swapped =
                self.quarantine
                    .compare_and_swap(key, None as Option<&[u8]>, Some(enc(e)))?;
            if swapped.is_ok() {
                added += 1;
            }
        }
        Ok(added)
    }
    fn quarantine_list(&self) -> Result<Vec<QuarantineEntry>, StoreError> {
        Self::all(&self.quarantine)
    }

    fn device_docs(&self, device: DeviceId) -> Result<Vec<DocId>, StoreError> {
        suffix_ids(&self.device_docs, device.as_bytes(), DocId::from_slice)
    }
    fn device_docs_add(&self, device: DeviceId, docs: &[DocId]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for d in docs {
            batch.insert(&pair_key(device.as_bytes(), d.as_bytes())[..], &[][..]);
        }
        Ok(self.device_docs.apply_batch(batch)?)
    }
    fn device_docs_remove(&self, device: DeviceId, docs: &[DocId]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for d in docs {
            batch.remove(&pair_key(device.as_bytes(), d.as_bytes())[..]);
        }
        Ok(self.device_docs.apply_batch(batch)?)
    }
    fn device_docs_clear(&self, device: DeviceId) -> Result<(), StoreError> {
        let held = self.device_docs(device)?;
        self.device_docs_remove(device, &held)
    }
    fn get_device_sync(&self, device: DeviceId) -> Result<Option<DeviceSync>, StoreError> {
        Self::get(&self.device_sync, device.as_bytes())
    }
    fn put_device_sync(&self, device: DeviceId, state: &DeviceSync) -> Result<(), StoreError> {
        Self::put(&self.device_sync, device.as_bytes(), state)
    }

    fn access_epoch(&self) -> Result<u64, StoreError> {
        match self.meta.get(ACCESS_EPOCH_KEY)? {
            Some(v) => seq_from(&v),
            None => Ok(0),
        }
    }
    fn bump_access_epoch(&self) -> Result<u64, StoreError> {
        let new = self.meta.update_and_fetch(ACCESS_EPOCH_KEY, |old| {
            let n = old
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            Some(n.wrapping_add(1).to_be_bytes().to_vec())
        })?;
        match new {
            Some(v) => seq_from(&v),
            None => Err(StoreError::Corrupt("the access epoch vanished".into())),
        }
    }

    fn audit_append(&self, record: AuditRecord) -> Result<AuditEntry, StoreError> {
        // One mutex over read-last, seal and insert: the chain never forks.
        let mut head = self.audit_head.lock().unwrap_or_else(|e| e.into_inner());
        if head.is_none() {
            *head = Some(match self.audit.last()? {
                Some((k, v)) => {
                    let seq = seq_from(&k)?;
                    let hash = serde_json::from_slice::<AuditEntry>(&v)
                        .map(|e| e.hash)
                        .map_err(|e| StoreError::Corrupt(format!("audit entry {seq}: {e}")))?;
                    (seq, hash)
                }
                None => (0, audit::GENESIS_HASH.to_string()),
            });
        }
        let (last, prev) = head.clone().unwrap_or((0, audit::GENESIS_HASH.to_string()));
        let entry = audit::seal(last + 1, &prev, record);
        self.audit
            .insert(entry.seq.to_be_bytes(), audit::encode(&entry))?;
        *head = Some((entry.seq, entry.hash.clone()));
        Ok(entry)
    }
    fn audit_scan(&self, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError> {
        for item in self.audit.iter() {
            let (k, v) = item?;
            if !visit(seq_from(&k)?, &v) {
                break;
            }
        }
        Ok(())
    }

    fn write(&self, plan: &mut Planner<'_>) -> Result<Seq, StoreError> {
        // A poisoned lock only means another writer panicked; the store itself is consistent
        // because its writes are transactions.
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let last = self.committed.load(Ordering::Acquire);
        let commit = plan()?;
        if commit.is_empty() {
            return Ok(Seq(last));
        }
        self.apply(&commit, last + 1)?;
        let new_last = last + commit.changes.len() as u64;
        self.committed.store(new_last, Ordering::Release);
        Ok(Seq(new_last))
    }

    fn last_seq(&self) -> Seq {
        Seq(self.committed.load(Ordering::Acquire))
    }

    fn scan_log(
        &self,
        after: Seq,
        upto: Seq,
        visit: &mut dyn FnMut(LogEntry<'_>) -> bool,
    ) -> Result<(), StoreError> {
        if after >= upto {
            return Ok(());
        }
        let start = after.0.saturating_add(1).to_be_bytes();
        let end = upto.0.to_be_bytes();
        for item in self.log.range(start..=end) {
            let (k, v) = item?;
            if v.len() < 48 {
                return Err(StoreError::Corrupt(
                    "a log entry is shorter than its header".into(),
                ));
            }
            let doc_id = DocId::from_slice(&v[..16])
                .ok_or_else(|| StoreError::Corrupt("a log entry's doc id".into()))?;
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&v[16..48]);
            let entry = LogEntry {
                seq: Seq(seq_from(&k)?),
                doc_id,
                hash: Hash(hash),
                bytes: &v[48..],
            };
            if !visit(entry) {
                break;
            }
        }
        Ok(())
    }

    fn durable_seq(&self) -> Seq {
        Seq(self.durable.load(Ordering::Acquire))
    }

    fn flush(&self) -> Result<(), StoreError> {
        let group = &self.group;
        let mut st = group.state.lock().unwrap_or_else(|e| e.into_inner());
        // A flush running now may have started before this caller's writes; the next one to
        // start covers them.
        let target = st.started + 1;
        st.waiting += 1;
        loop {
            if st.completed >= target {
                st.waiting -= 1;
                return Ok(());
            }
            if !st.running && !st.held {
                st.running = true;
                st.started += 1;
                let ticket = st.started;
                drop(st);
                let committed = self.committed.load(Ordering::Acquire);
                let result = self.db.flush();
                group.flushes.fetch_add(1, Ordering::Relaxed);
                if result.is_ok() {
                    self.durable.fetch_max(committed, Ordering::AcqRel);
                }
                st = group.state.lock().unwrap_or_else(|e| e.into_inner());
                st.running = false;
                if result.is_ok() {
                    st.completed = ticket;
                }
                group.done.notify_all();
                if let Err(e) = result {
                    // The others stay unacknowledged: one of them leads a fresh flush.
                    st.waiting -= 1;
                    return Err(e.into());
                }
                continue;
            }
            st = group.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(doc: DocId, n: u8) -> NewChange {
        NewChange {
            doc_id: doc,
            hash: Hash([n; 32]),
            bytes: vec![n; 10],
            received_at_ms: 1_000 + i64::from(n),
        }
    }

    #[test]
    fn a_write_assigns_consecutive_sequences_that_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let doc = DocId::new_random();
        {
            let store = open(dir.path()).unwrap();
            let last = store
                .write(&mut || {
                    Ok(Commit {
                        changes: vec![change(doc, 1), change(doc, 2)],
                        ..Commit::default()
                    })
                })
                .unwrap();
            assert_eq!(last, Seq(2));
            store.flush().unwrap();
        }
        let store = open(dir.path()).unwrap();
        assert_eq!(store.last_seq(), Seq(2));
        assert!(store.has_change(doc, &Hash([2; 32])).unwrap());
        let mut seen = Vec::new();
        store
            .scan_log(Seq(0), Seq(2), &mut |e| {
                seen.push((e.seq, e.hash, e.bytes.to_vec()));
                true
            })
            .unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1], (Seq(2), Hash([2; 32]), vec![2; 10]));
        assert_eq!(store.received_at(Seq(2)).unwrap(), Some(1_002));
    }

    #[test]
    fn a_second_open_of_the_same_directory_says_it_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path()).unwrap();
        let err = open(dir.path()).err().expect("the second open must fail");
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
        assert!(err.to_string().contains("stop it first"));
    }
}
