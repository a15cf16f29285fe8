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
//! - `log`: seq (u64 big-endian) → doc_id (16) ‖ change hash (32) ‖ chain (32) ‖ change bytes
//!   (raw). `chain` is the log's hash chain, `sha256(previous chain ‖ seq ‖ doc_id ‖ hash)`
//!   ([`chain_next`], 32 zero bytes before the first entry), so the chain at the tail vouches for
//!   every entry before it. A store written before the chain existed gets it at its first open.
//! - `hashes`: doc_id (16) ‖ change hash (32) → seq (u64 big-endian): dedupe and dependency checks
//! - `docs`: doc_id → [`DocRecord`] (server-side header and current heads)
//! - `cases`: case_id → [`CaseRecord`] (the teams around the person)
//! - `orgs`, `teams`, `staff`, `devices`: id → record
//! - `tokens`: sha256 of the token → [`TokenRecord`]
//! - `meta`: small named values (the demo marker; `access_epoch`, a u64 big-endian bumped by
//!   every access change; `index_v1`, set once the indexes below were built for an older store;
//!   `log_layout`, set once the log has its chain; `flush_gen`, a u64 big-endian that every
//!   flush bumps just before sled's flush; `marked`, set once the store has had a mark)
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
//!
//! Damaged disks. sled 0.34 recovers its log up to the first entry that fails its checksum and
//! drops the rest without a word, so one flipped byte can cut off everything written since its
//! last snapshot. Every flush therefore ends by writing the acknowledged high-water mark
//! ([`mark`]) outside sled: the log's tip and chain, the audit log's tip and hash, and the flush
//! generation. Nothing is acknowledged before it is on disk. [`SledStore::open`] compares what
//! sled recovered with it in O(1) ([`check`]); on a shortfall it heals: the loss goes to the
//! error log and the audit log, and the log gets a new id exactly as `admin restored` gives it, so
//! every device starts over and sends back what it holds. `verify` ([`verify`]) checks a store
//! end to end.
//!
//! Full disks. A write that reaches sled with no space left fails, and sled then fails every
//! later write until it is opened again. So every write first checks the data directory's free
//! space against a floor ([`limits::STORE_FREE_BYTES_MIN_DEFAULT`]) and is refused with
//! [`StoreError::Full`] below it; flushes run on a flusher thread and callers wait a bounded time
//! ([`limits::STORE_FLUSH_WAIT_MS_MAX`]); and a store whose sled failed reopens it by itself once
//! space is back ([`limits::STORE_REOPEN_INTERVAL_MS`]). [`Store::writability`] says which,
//! for `/ready`.

mod check;
mod durable;
pub mod mark;
mod trees;
pub mod verify;

use super::{Commit, Planner, Store, StoreError, Writability, LOG_ID_KEY};
use crate::model::audit::{self, AuditEntry, AuditKind, AuditRecord};
use crate::model::{
    ActorBinding, CaseRecord, Device, DeviceSync, DocRecord, LogEntry, Org, QuarantineEntry, Staff,
    Team, TokenRecord,
};
use casenote_protocol::limits;
use casenote_protocol::wire::Hash;
use casenote_protocol::{CaseId, DeviceId, DocId, OrgId, Seq, StaffId, TeamId};
use mark::{Found, Mark};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use durable::{GroupCommit, Health};
pub use trees::AUDIT_TREE;
pub use trees::{chain_next, CHAIN_GENESIS};
use trees::{parse_log, Sled, Tip};

/// What the store found lost at open: what it had acknowledged, and what sled recovered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Each finding in plain words (sequences, counts; no content).
    pub findings: Vec<String>,
    /// The acknowledged high-water mark, when one was readable.
    pub mark: Option<Mark>,
    /// What sled recovered: the last change's sequence, the last audit entry's, the flush
    /// generation.
    pub found_log_seq: u64,
    pub found_audit_seq: u64,
    pub found_flush_gen: u64,
}

impl Damage {
    /// What sled recovered that falls short of the mark `found`, if anything.
    fn found(s: &Sled, tip: Tip, flush_gen: u64, found: Found) -> Result<Option<Self>, StoreError> {
        let findings = check::compare(s, tip, flush_gen, found)?;
        if findings.is_empty() {
            return Ok(None);
        }
        Ok(Some(Damage {
            findings,
            mark: match found {
                Found::Valid { mark, .. } => Some(mark),
                _ => None,
            },
            found_log_seq: tip.seq,
            found_audit_seq: s.audit_tail().map(|t| t.0).unwrap_or(0),
            found_flush_gen: flush_gen,
        }))
    }
}

/// The mark file: its writer (made at the first flush if the file is missing) and the last mark
/// written or read.
#[derive(Default)]
struct MarkState {
    writer: Option<mark::Writer>,
    last: Option<Mark>,
}

/// Everything the store and its flusher thread share.
struct Shared {
    dir: PathBuf,
    /// `None` only while the store reopens.
    sled: RwLock<Option<Arc<Sled>>>,
    write_lock: Mutex<()>,
    /// The committed tip of the log; updated with `committed`, under `write_lock`.
    tip: Mutex<Tip>,
    committed: AtomicU64,
    durable: AtomicU64,
    /// The last audit entry's (seq, hash), loaded on first use.
    audit_head: Mutex<Option<(u64, String)>>,
    /// The flush generation last made durable.
    flush_gen: AtomicU64,
    group: GroupCommit,
    mark: Mutex<MarkState>,
    health: Mutex<Health>,
    /// Whether the last free-space check found too little (to log the change once).
    space_low: AtomicBool,
    free_bytes_min: AtomicU64,
    flush_wait_ms: AtomicU64,
    /// Held while the store reopens.
    reopening: Mutex<()>,
    /// What the last open found lost (see [`SledStore::damage`]).
    damage: Mutex<Option<Damage>>,
}

/// The sled implementation of [`Store`].
pub struct SledStore {
    shared: Arc<Shared>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

/// Opens (or creates) the sled store in `data_dir`, checks it against its acknowledged
/// high-water mark and heals what it lost (see [`SledStore::open`]).
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
const INDEX_KEY: &str = "index_v1";
/// Set once the log is in the current layout (with its hash chain); its value is the layout.
const LOG_LAYOUT_KEY: &str = "log_layout";
const LOG_LAYOUT: u8 = 2;
/// While an older store's chain is being built: the last sequence rewritten.
const CHAIN_BUILT_KEY: &str = "chain_built";
/// The flush generation: written by every flush just before sled's flush.
const FLUSH_GEN_KEY: &str = "flush_gen";
/// Set once the store has had a high-water mark: from then on a missing mark file is damage.
const MARKED_KEY: &str = "marked";

fn seq_from(bytes: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("a sequence key is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(arr))
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked while holding it; what it guards is
    // consistent (sled's writes are transactions, counters are written whole).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn hex32(hex_str: &str) -> Result<[u8; 32], StoreError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut out)
        .map_err(|_| StoreError::Corrupt("an audit hash is not 32 bytes of hex".into()))?;
    Ok(out)
}

impl SledStore {
    /// How many sled flushes this store has run since it was opened. Group commit makes this
    /// smaller than the number of [`Store::flush`] calls when they overlap.
    pub fn flush_count(&self) -> u64 {
        self.shared.group.flushes.load(Ordering::Relaxed)
    }

    /// Tests only: while held, no flush starts (callers of [`Store::flush`] queue up).
    #[cfg(test)]
    pub(crate) fn hold_flushes(&self, hold: bool) {
        let group = &self.shared.group;
        lock(&group.state).held = hold;
        group.wake.notify_all();
    }

    /// Tests only: how many callers are inside [`Store::flush`] now.
    #[cfg(test)]
    pub(crate) fn flush_waiters(&self) -> usize {
        lock(&self.shared.group.state).waiting
    }

    /// Tests only: how long [`Store::flush`] waits for its flush.
    #[cfg(test)]
    pub(crate) fn set_flush_wait(&self, wait: std::time::Duration) {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        self.shared.flush_wait_ms.store(ms, Ordering::Relaxed);
    }

    /// Refuses writes while the data directory has fewer than `bytes` free (default
    /// [`limits::STORE_FREE_BYTES_MIN_DEFAULT`]; 0 turns the check off).
    pub fn set_free_bytes_min(&self, bytes: u64) {
        self.shared.free_bytes_min.store(bytes, Ordering::Relaxed);
    }

    /// What the last open found lost, if anything (it was healed unless the store was opened
    /// with [`SledStore::inspect`]).
    pub fn damage(&self) -> Option<Damage> {
        lock(&self.shared.damage).clone()
    }

    /// Opens (or creates) the store, checks what sled recovered against the acknowledged
    /// high-water mark, and heals a loss: logged, audited, a new log id so that every device
    /// starts over and sends back what it holds (exactly as after `admin restored`), the mark
    /// anchored anew. A directory held by another process is [`StoreError::Locked`].
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let store = Self::open_unhealed(data_dir)?;
        if let Some(damage) = store.damage() {
            store.heal(&damage)?;
        }
        store.flush()?;
        store.set_free_bytes_min(limits::STORE_FREE_BYTES_MIN_DEFAULT);
        Ok(store)
    }

    /// Opens the store to check it: what was lost is reported ([`SledStore::damage`]), not
    /// healed, and the mark is left as it was (`verify`, `audit verify`).
    pub fn inspect(data_dir: &Path) -> Result<Self, StoreError> {
        let store = Self::open_unhealed(data_dir)?;
        store.set_free_bytes_min(limits::STORE_FREE_BYTES_MIN_DEFAULT);
        Ok(store)
    }

    fn open_unhealed(dir: &Path) -> Result<Self, StoreError> {
        let sled = Sled::open(dir)?;
        sled.build_chain()?;
        sled.build_indexes()?;
        let tip = sled.tip()?;
        let flush_gen = sled.meta_u64(FLUSH_GEN_KEY)?;
        let found = mark::read(dir).map_err(|e| {
            StoreError::Unwritable(format!("the high-water mark could not be read: {e}"))
        })?;
        let new_store = sled.log_id()?.is_none();
        let damage = if new_store && found == Found::Missing {
            None
        } else {
            Damage::found(&sled, tip, flush_gen, found)?
        };
        if new_store {
            sled.meta
                .insert(LOG_ID_KEY, uuid::Uuid::new_v4().as_bytes())?;
        }
        let mark = match found {
            Found::Valid { mark, counter } => MarkState {
                writer: Some(mark::Writer::open(dir, counter).map_err(|e| {
                    StoreError::Unwritable(format!("the high-water mark could not be opened: {e}"))
                })?),
                last: Some(mark),
            },
            _ => MarkState::default(),
        };
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            sled: RwLock::new(Some(Arc::new(sled))),
            write_lock: Mutex::new(()),
            tip: Mutex::new(tip),
            committed: AtomicU64::new(tip.seq),
            durable: AtomicU64::new(tip.seq),
            audit_head: Mutex::new(None),
            flush_gen: AtomicU64::new(flush_gen),
            group: GroupCommit::default(),
            mark: Mutex::new(mark),
            health: Mutex::new(Health::Ok),
            space_low: AtomicBool::new(false),
            // No floor until the open has healed and anchored the mark: those writes are
            // small, and must not keep a server on a nearly full disk from starting.
            free_bytes_min: AtomicU64::new(0),
            flush_wait_ms: AtomicU64::new(limits::STORE_FLUSH_WAIT_MS_MAX),
            reopening: Mutex::new(()),
            damage: Mutex::new(damage),
        });
        let thread_shared = shared.clone();
        let flusher = std::thread::Builder::new()
            .name("casenote-flusher".into())
            .spawn(move || thread_shared.run_flusher())
            .map_err(|e| StoreError::Task(format!("could not start the flusher: {e}")))?;
        Ok(SledStore {
            shared,
            flusher: Some(flusher),
        })
    }

    /// Heals a loss found at open: logs it, records it in the audit log, and gives the log a
    /// new id, so that every device resets and re-sends what it holds. The flush that follows
    /// anchors the mark at what the store now holds.
    fn heal(&self, damage: &Damage) -> Result<(), StoreError> {
        let old = self.log_id()?;
        let new = self.new_log_id()?;
        tracing::error!(
            findings = ?damage.findings,
            old_log_id = %old,
            log_id = %new,
            "the store lost writes it had acknowledged (a damaged disk?); it keeps what it has \
             and starts a new log id, so that every device sends back what it holds"
        );
        let acknowledged = damage.mark.map(
            |m| json!({"log_seq": m.log_seq, "audit_seq": m.audit_seq, "flush_gen": m.flush_gen}),
        );
        self.audit_append(AuditRecord::new(
            AuditKind::Admin,
            crate::now_ms(),
            json!({
                "action": "store_damage_detected",
                "findings": damage.findings,
                "acknowledged": acknowledged,
                "found": {
                    "log_seq": damage.found_log_seq,
                    "audit_seq": damage.found_audit_seq,
                    "flush_gen": damage.found_flush_gen,
                },
                "old_log_id": old,
                "log_id": new,
            }),
        ))?;
        Ok(())
    }
}

impl Store for SledStore {
    fn put_org(&self, org: &Org) -> Result<(), StoreError> {
        self.writing(|s| put(&s.orgs, org.org_id.as_bytes(), org))
    }
    fn get_org(&self, id: OrgId) -> Result<Option<Org>, StoreError> {
        get(&self.sled()?.orgs, id.as_bytes())
    }
    fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        all(&self.sled()?.orgs)
    }
    fn put_team(&self, team: &Team) -> Result<(), StoreError> {
        self.writing(|s| put(&s.teams, team.team_id.as_bytes(), team))
    }
    fn get_team(&self, id: TeamId) -> Result<Option<Team>, StoreError> {
        get(&self.sled()?.teams, id.as_bytes())
    }
    fn list_teams(&self) -> Result<Vec<Team>, StoreError> {
        all(&self.sled()?.teams)
    }
    fn put_staff(&self, staff: &Staff) -> Result<(), StoreError> {
        self.writing(|s| put(&s.staff, staff.staff_id.as_bytes(), staff))
    }
    fn get_staff(&self, id: StaffId) -> Result<Option<Staff>, StoreError> {
        get(&self.sled()?.staff, id.as_bytes())
    }
    fn list_staff(&self) -> Result<Vec<Staff>, StoreError> {
        all(&self.sled()?.staff)
    }
    fn put_device(&self, device: &Device) -> Result<(), StoreError> {
        self.writing(|s| put(&s.devices, device.device_id.as_bytes(), device))
    }
    fn get_device(&self, id: DeviceId) -> Result<Option<Device>, StoreError> {
        get(&self.sled()?.devices, id.as_bytes())
    }
    fn list_devices(&self) -> Result<Vec<Device>, StoreError> {
        all(&self.sled()?.devices)
    }
    fn put_token(&self, sha256: &[u8; 32], record: &TokenRecord) -> Result<(), StoreError> {
        self.writing(|s| put(&s.tokens, sha256, record))
    }
    fn get_token(&self, sha256: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        get(&self.sled()?.tokens, sha256)
    }

    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.sled()?.meta.get(key.as_bytes())?.map(|v| v.to_vec()))
    }
    fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.writing(|s| {
            s.meta.insert(key.as_bytes(), value)?;
            Ok(())
        })
    }

    fn get_case(&self, id: CaseId) -> Result<Option<CaseRecord>, StoreError> {
        get(&self.sled()?.cases, id.as_bytes())
    }
    fn get_doc(&self, id: DocId) -> Result<Option<DocRecord>, StoreError> {
        get(&self.sled()?.docs, id.as_bytes())
    }
    fn has_change(&self, doc: DocId, hash: &Hash) -> Result<bool, StoreError> {
        Ok(self.sled()?.hashes.contains_key(hash_key(doc, hash))?)
    }

    fn cases_of_team(&self, team: TeamId) -> Result<Vec<CaseId>, StoreError> {
        suffix_ids(
            &self.sled()?.team_cases,
            team.as_bytes(),
            CaseId::from_slice,
        )
    }
    fn docs_of_case(&self, case: CaseId) -> Result<Vec<DocId>, StoreError> {
        suffix_ids(&self.sled()?.case_docs, case.as_bytes(), DocId::from_slice)
    }
    fn doc_change_seqs(&self, doc: DocId) -> Result<Vec<Seq>, StoreError> {
        let mut out = Vec::new();
        for item in self.sled()?.hashes.scan_prefix(doc.as_bytes()) {
            let (_, v) = item?;
            out.push(Seq(seq_from(&v)?));
        }
        out.sort();
        Ok(out)
    }
    fn get_log(&self, seq: Seq) -> Result<Option<(DocId, Hash, Vec<u8>)>, StoreError> {
        let Some(v) = self.sled()?.log.get(seq.0.to_be_bytes())? else {
            return Ok(None);
        };
        let e = parse_log(&v)?;
        Ok(Some((e.doc_id, e.hash, e.bytes.to_vec())))
    }
    fn get_actor(&self, actor: &[u8]) -> Result<Option<ActorBinding>, StoreError> {
        get(&self.sled()?.actors, actor)
    }
    fn received_at(&self, seq: Seq) -> Result<Option<i64>, StoreError> {
        match self.sled()?.received.get(seq.0.to_be_bytes())? {
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
        self.sled()?
            .escrow
            .get(device.as_bytes())?
            .map(|v| escrow_key(&v))
            .transpose()
    }
    fn escrow_get_or_put(&self, device: DeviceId, fresh: [u8; 32]) -> Result<[u8; 32], StoreError> {
        // Compare-and-swap: two first requests at once agree on one key.
        let swapped = self.writing(|s| {
            Ok(s.escrow.compare_and_swap(
                device.as_bytes(),
                None as Option<&[u8]>,
                Some(&fresh[..]),
            )?)
        })?;
        match swapped {
            Ok(()) => Ok(fresh),
            Err(current) => escrow_key(&current.current.unwrap_or_default()),
        }
    }
    fn escrow_remove(&self, device: DeviceId) -> Result<(), StoreError> {
        self.writing(|s| {
            s.escrow.remove(device.as_bytes())?;
            Ok(())
        })
    }

    fn quarantine_add(&self, entries: &[QuarantineEntry]) -> Result<usize, StoreError> {
        self.writing(|s| {
            let mut added = 0;
            for e in entries {
                let key = hash_key(e.doc_id, &e.hash);
                let swapped =
                    s.quarantine
                        .compare_and_swap(key, None as Option<&[u8]>, Some(enc(e)))?;
                if swapped.is_ok() {
                    added += 1;
                }
            }
            Ok(added)
        })
    }
    fn quarantine_list(&self) -> Result<Vec<QuarantineEntry>, StoreError> {
        all(&self.sled()?.quarantine)
    }
    fn quarantined(&self, doc: DocId, hash: &Hash) -> Result<Option<QuarantineEntry>, StoreError> {
        get(&self.sled()?.quarantine, &hash_key(doc, hash))
    }

    fn device_docs(&self, device: DeviceId) -> Result<Vec<DocId>, StoreError> {
        suffix_ids(
            &self.sled()?.device_docs,
            device.as_bytes(),
            DocId::from_slice,
        )
    }
    fn device_docs_add(&self, device: DeviceId, docs: &[DocId]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for d in docs {
            batch.insert(&pair_key(device.as_bytes(), d.as_bytes())[..], &[][..]);
        }
        self.writing(|s| Ok(s.device_docs.apply_batch(batch)?))
    }
    fn device_docs_remove(&self, device: DeviceId, docs: &[DocId]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for d in docs {
            batch.remove(&pair_key(device.as_bytes(), d.as_bytes())[..]);
        }
        self.writing(|s| Ok(s.device_docs.apply_batch(batch)?))
    }
    fn device_docs_clear(&self, device: DeviceId) -> Result<(), StoreError> {
        let held = self.device_docs(device)?;
        self.device_docs_remove(device, &held)
    }
    fn get_device_sync(&self, device: DeviceId) -> Result<Option<DeviceSync>, StoreError> {
        get(&self.sled()?.device_sync, device.as_bytes())
    }
    fn put_device_sync(&self, device: DeviceId, state: &DeviceSync) -> Result<(), StoreError> {
        self.writing(|s| put(&s.device_sync, device.as_bytes(), state))
    }

    fn access_epoch(&self) -> Result<u64, StoreError> {
        self.sled()?.meta_u64(ACCESS_EPOCH_KEY)
    }
    fn bump_access_epoch(&self) -> Result<u64, StoreError> {
        let new = self.writing(|s| {
            Ok(s.meta.update_and_fetch(ACCESS_EPOCH_KEY, |old| {
                let n = old
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                Some(n.wrapping_add(1).to_be_bytes().to_vec())
            })?)
        })?;
        match new {
            Some(v) => seq_from(&v),
            None => Err(StoreError::Corrupt("the access epoch vanished".into())),
        }
    }

    fn audit_append(&self, record: AuditRecord) -> Result<AuditEntry, StoreError> {
        self.writing(|s| {
            // One mutex over read-last, seal and insert: the chain never forks.
            let mut head = lock(&self.shared.audit_head);
            if head.is_none() {
                *head = Some(s.audit_tail()?);
            }
            let (last, prev) = head.clone().unwrap_or((0, audit::GENESIS_HASH.to_string()));
            let entry = audit::seal(last + 1, &prev, record);
            s.audit
                .insert(entry.seq.to_be_bytes(), audit::encode(&entry))?;
            *head = Some((entry.seq, entry.hash.clone()));
            Ok(entry)
        })
    }
    fn audit_scan(&self, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError> {
        for item in self.sled()?.audit.iter() {
            let (k, v) = item?;
            if !visit(seq_from(&k)?, &v) {
                break;
            }
        }
        Ok(())
    }
    fn audit_anchor(&self) -> Result<Option<(u64, String)>, StoreError> {
        Ok(lock(&self.shared.mark)
            .last
            .map(|m| (m.audit_seq, hex::encode(m.audit_hash))))
    }

    fn write(&self, plan: &mut Planner<'_>) -> Result<Seq, StoreError> {
        // The checks (which may reopen the store) before the write lock, and the handle after
        // it: a reopen holds the lock, and waits for handles to be let go.
        self.healthy()?;
        let sh = &self.shared;
        sh.check_space()?;
        let _guard = lock(&sh.write_lock);
        let s = sh.sled()?;
        let tip = *lock(&sh.tip);
        let commit = plan()?;
        if commit.is_empty() {
            return Ok(Seq(tip.seq));
        }
        let new_tip = s.apply(&commit, tip).map_err(|e| sh.failed(e))?;
        *lock(&sh.tip) = new_tip;
        sh.committed.store(new_tip.seq, Ordering::Release);
        Ok(Seq(new_tip.seq))
    }

    fn last_seq(&self) -> Seq {
        Seq(self.shared.committed.load(Ordering::Acquire))
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
        for item in self.sled()?.log.range(start..=end) {
            let (k, v) = item?;
            let e = parse_log(&v)?;
            let entry = LogEntry {
                seq: Seq(seq_from(&k)?),
                doc_id: e.doc_id,
                hash: e.hash,
                bytes: e.bytes,
            };
            if !visit(entry) {
                break;
            }
        }
        Ok(())
    }

    fn durable_seq(&self) -> Seq {
        Seq(self.shared.durable.load(Ordering::Acquire))
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.group_flush()
    }

    fn writability(&self) -> Writability {
        self.check_writable()
    }
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

#[cfg(test)]
mod durability_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NewChange;

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
