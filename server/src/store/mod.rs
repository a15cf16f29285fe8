//! The server's storage contract: what every backend gives the rest of the server.
//!
//! [`Store`] is synchronous and object-safe; async handlers call it through
//! `tokio::task::spawn_blocking`. The sled backend is [`sled`] (the only module that knows the
//! sled crate).

pub mod sled;

use crate::audit::{AuditEntry, AuditRecord};
pub use crate::model::{
    ActorBinding, BackfillPos, CaseRecord, Device, DeviceSync, DocHeader, DocRecord, LogEntry,
    NewChange, Org, PendingReconcile, QuarantineEntry, Staff, Team, TokenRecord,
};
use casenote_protocol::wire::Hash;
use casenote_protocol::{CaseId, DeviceId, DocId, OrgId, Seq, StaffId, TeamId};
use serde::Serialize;
use std::path::PathBuf;

/// The meta key of the log id.
pub const LOG_ID_KEY: &str = "log_id";

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the data directory {0} is in use, probably by a running casenote-server; stop it first"
    )]
    Locked(PathBuf),
    #[error("storage error: {0}")]
    Sled(#[from] ::sled::Error),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("a storage task failed: {0}")]
    Task(String),
    /// The data directory has less free space than the floor: nothing was written.
    #[error(
        "the store's disk is nearly full ({} MiB free; writes need {} MiB)",
        free_bytes / (1024 * 1024),
        min_bytes / (1024 * 1024)
    )]
    Full { free_bytes: u64, min_bytes: u64 },
    /// The store cannot write now (sled failed a write, a flush is stuck, or the store is
    /// reopening): nothing was acknowledged.
    #[error("the store cannot write now: {0}")]
    Unwritable(String),
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

/// The planner handed to [`Store::write`]: it reads the store and returns what to commit.
pub type Planner<'a> = dyn FnMut() -> Result<Commit, StoreError> + 'a;

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
    pub fn writable() -> Self {
        Writability {
            writable: true,
            reason: None,
            free_bytes: None,
            free_bytes_min: 0,
        }
    }
}

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
    /// The quarantine entry of change `hash` of document `doc`, if it was refused before.
    fn quarantined(&self, doc: DocId, hash: &Hash) -> Result<Option<QuarantineEntry>, StoreError>;

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

    /// Whether the store accepts writes now (for `/ready`); may start a recovery that is due.
    fn writability(&self) -> Writability {
        Writability::writable()
    }
    /// The audit entry (seq, hex hash) the store last acknowledged durably, kept outside the
    /// store's own files; `audit verify` checks that the log reaches it. `None`: not kept.
    fn audit_anchor(&self) -> Result<Option<(u64, String)>, StoreError> {
        Ok(None)
    }

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
