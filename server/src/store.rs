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
//! - `meta`: small named values (the demo marker)

use crate::directory::{Device, Org, Staff, Team};
use casenote_protocol::wire::Hash;
use casenote_protocol::{CaseId, DeviceId, DocId, DocKind, OrgId, Seq, StaffId, TeamId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

/// One change to append to the log.
#[derive(Clone, Debug)]
pub struct NewChange {
    pub doc_id: DocId,
    pub hash: Hash,
    pub bytes: Vec<u8>,
}

/// Everything one write commits atomically. Changes get consecutive sequence numbers in order.
#[derive(Clone, Debug, Default)]
pub struct Commit {
    pub cases: Vec<CaseRecord>,
    pub docs: Vec<DocRecord>,
    pub changes: Vec<NewChange>,
}

impl Commit {
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty() && self.docs.is_empty() && self.changes.is_empty()
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
    /// Makes every write so far durable. Nothing is acknowledged to a device before this returns.
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
    write_lock: Mutex<()>,
    committed: AtomicU64,
    durable: AtomicU64,
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

fn seq_from(bytes: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("a sequence key is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(arr))
}

impl SledStore {
    /// Opens (or creates) the store; a directory held by another process is [`StoreError::Locked`].
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(data_dir)
            .open()
            .map_err(|e| match e {
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
        Ok(SledStore {
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
        })
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
        let result = (&self.log, &self.hashes, &self.docs, &self.cases).transaction(
            |(log, hashes, docs, cases)| {
                for case in &commit.cases {
                    cases.insert(&case.case_id.as_bytes()[..], enc(case))?;
                }
                for doc in &commit.docs {
                    docs.insert(&doc.header.doc_id.as_bytes()[..], enc(doc))?;
                }
                for (i, change) in commit.changes.iter().enumerate() {
                    let seq = (first + i as u64).to_be_bytes();
                    let mut value = Vec::with_capacity(48 + change.bytes.len());
                    value.extend_from_slice(change.doc_id.as_bytes());
                    value.extend_from_slice(&change.hash.0);
                    value.extend_from_slice(&change.bytes);
                    log.insert(&seq[..], value)?;
                    hashes.insert(&hash_key(change.doc_id, &change.hash)[..], &seq[..])?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            },
        );
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
            Err(TransactionError::Abort(())) => {
                Err(StoreError::Task("the write transaction aborted".into()))
            }
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
        let committed = self.committed.load(Ordering::Acquire);
        self.db.flush()?;
        self.durable.fetch_max(committed, Ordering::AcqRel);
        Ok(())
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
