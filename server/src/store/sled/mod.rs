//! The sled backend of the store contract ([`crate::store`]): one process, an embedded sled
//! database in a data directory. The only module that knows the sled crate; nothing of sled (its
//! types, its errors) leaves it.
//!
//! Transactions ([`txn`]): a write transaction is the store's write mutex plus an overlay of its
//! writes, committed as one sled transaction over the trees it touched, through the free-space
//! and failed-sled guard ([`durable`]); the writers that queue up share one overlay and one
//! commit ([`writers`]). Sequence numbers and the audit chain's head are read
//! inside it from the trees, so nothing forks. A read transaction takes no lock. A commit that
//! writes what a token's credentials are made of moves on the generation of the credentials kept
//! in memory ([`directory`]), which answer [`Store::credentials_cached`] without a read.
//!
//! sled layout (one tree each; keys are raw bytes, values CBOR unless noted):
//! - `log`: seq (u64 big-endian) → doc_id (16) ‖ change hash (32) ‖ chain (32) ‖ change bytes
//!   (raw). `chain` is the log's hash chain, `sha256(previous chain ‖ seq ‖ doc_id ‖ hash)`
//!   ([`chain_next`], 32 zero bytes before the first entry), so the chain at the tail vouches for
//!   every entry before it. A store written before the chain existed gets it at its first open.
//! - `hashes`: doc_id (16) ‖ change hash (32) → seq (u64 big-endian): dedupe and dependency checks
//! - `docs`: doc_id → `DocRecord` (server-side header and current heads)
//! - `cases`: case_id → `CaseRecord` (the teams around the person)
//! - `orgs`, `teams`, `staff`, `devices`: id → record
//! - `tokens`: sha256 of the token → `TokenRecord`
//! - `meta`: small named values ([`codec`]: the demo marker; `access_epoch`; `log_id`, 16 bytes,
//!   the identity of this change log, created with the store and replaced after a restore or a
//!   healed loss; `index_v1`, set once the indexes below were built for an older store;
//!   `log_layout`, set once the log has its chain; `flush_gen`, a u64 big-endian that every
//!   flush bumps just before sled's flush; `marked`, set once the store has had a mark)
//! - `case_docs`: case_id (16) ‖ doc_id (16) → empty: the documents of a case (kept by `put_doc`)
//! - `team_cases`: team_id (16) ‖ case_id (16) → empty: the cases a team is on (kept by
//!   `put_case`)
//! - `actors`: Automerge actor id bytes → `ActorBinding` (who first used the actor)
//! - `device_docs`: device_id (16) ‖ doc_id (16) → empty: what the server has handed a device or
//!   accepted from it, so that it knows what to evict
//! - `device_sync`: device_id → `DeviceSync` (the access epoch the device was reconciled at,
//!   and the reconciliation it has been sent but not yet confirmed)
//! - `received`: seq (u64 big-endian) → i64 big-endian: the server's clock when it received the
//!   change under that seq, written with the log entry; outside the CRDT, so no device changes it
//! - `quarantine`: doc_id (16) ‖ change hash (32) → `QuarantineEntry`: changes refused by the
//!   record rules, kept with the reason, never relayed
//! - `audit` ([`AUDIT_TREE`]): the hash-chained audit log, JSON values ([`crate::model::audit`])
//! - `escrow`: device_id → the 32-byte wrap key of that device's store
//!
//! Writes outside a transaction: none by the server. The backend itself writes only its own
//! bookkeeping: the upgrades an older store gets at its first open ([`trees`]) and the flush
//! generation every flush writes ([`durable`]).
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
//! later write until it is opened again. So every write transaction first checks the data
//! directory's free space against a floor ([`limits::STORE_FREE_BYTES_MIN_DEFAULT`]) and is
//! refused with [`StoreError::Full`] below it; flushes run on a flusher thread and callers wait a
//! bounded time ([`limits::STORE_FLUSH_WAIT_MS_MAX`]); and a store whose sled failed reopens it
//! by itself once space is back ([`limits::STORE_REOPEN_INTERVAL_MS`]). [`Store::writability`]
//! says which, for `/ready`.

mod check;
mod codec;
mod directory;
mod durable;
pub mod mark;
mod rewrite;
mod trees;
mod txn;
pub mod verify;
mod writers;

use crate::model::audit::{AuditKind, AuditRecord};
use crate::model::{LogEntry, QuarantineEntry};
use crate::store::{Compaction, Credentials, Store, StoreError, Work, Writability};
use casenote_protocol::limits;
use casenote_protocol::wire::Hash;
use casenote_protocol::{DocId, Seq};
use codec::{all, seq_from, FLUSH_GEN_KEY, LOG_ID_KEY};
use durable::{GroupCommit, Health};
use mark::{Found, Mark};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use trees::{parse_log, Sled, Tip};
use txn::SledTxn;
use writers::Writers;

pub use trees::{chain_next, AUDIT_TREE, CHAIN_GENESIS};

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
    /// The write lock, held by every write transaction from its first read to the end of its
    /// work; the writers that queue up share one commit ([`writers`]).
    writers: Writers,
    /// The highest sequence the last flush made durable.
    durable: AtomicU64,
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
    /// How the rewrite this open ran went (see [`SledStore::rewritten`]).
    rewritten: Mutex<Option<Result<(), String>>>,
}

/// The sled implementation of [`Store`].
pub struct SledStore {
    shared: Arc<Shared>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

/// Whether `dir` holds a sled store (or one a crash left in the middle of swapping in its
/// rewritten files, which opening finishes).
pub fn exists(dir: &Path) -> bool {
    dir.join("db").is_file() || rewrite::swap_pending(dir)
}

/// Opens (or creates) the sled store in `data_dir`, checks it against its acknowledged
/// high-water mark and heals what it lost (see [`SledStore::open`]).
pub fn open(data_dir: &Path) -> Result<Arc<SledStore>, StoreError> {
    SledStore::open(data_dir).map(Arc::new)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked while holding it; what it guards is
    // consistent (sled's writes are transactions, counters are written whole).
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        let store = Self::open_unhealed(data_dir, true)?;
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
        let store = Self::open_unhealed(data_dir, false)?;
        store.set_free_bytes_min(limits::STORE_FREE_BYTES_MIN_DEFAULT);
        Ok(store)
    }

    /// Opens sled in `dir` after finishing or rolling back an interrupted rewrite of its files,
    /// and (`rewrite_due`) runs a rewrite that erasures left due ([`rewrite`]); says how that
    /// went (`None`: none was due). A failed rewrite does not stop the open: the erased rows
    /// are gone from every read, only their bytes wait in sled's files for the next open.
    fn open_unhealed_sled(
        dir: &Path,
        rewrite_due: bool,
    ) -> Result<(Sled, Option<Result<(), String>>), StoreError> {
        rewrite::recover(dir).map_err(|e| {
            StoreError::Unwritable(format!("an interrupted rewrite could not be finished: {e}"))
        })?;
        let sled = Sled::open(dir)?;
        if !(rewrite_due && rewrite::pending(&sled.db)?) {
            return Ok((sled, None));
        }
        drop(sled);
        let done = rewrite::rewrite(dir).map_err(|e| e.to_string());
        Ok((Sled::open(dir)?, Some(done)))
    }

    /// Whether this open rewrote the store's files for erasures (`None`: none was due), for the
    /// server's log, which starts after the store is open.
    pub fn rewritten(&self) -> Option<Result<(), String>> {
        lock(&self.shared.rewritten).clone()
    }

    fn open_unhealed(dir: &Path, rewrite_due: bool) -> Result<Self, StoreError> {
        let (sled, rewritten) = Self::open_unhealed_sled(dir, rewrite_due)?;
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
            writers: Writers::new(),
            durable: AtomicU64::new(tip.seq),
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
            rewritten: Mutex::new(rewritten),
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

    /// Heals a loss found at open: records it in the audit log and gives the log a new id in one
    /// transaction, so that every device resets and re-sends what it holds, and logs it. The
    /// flush that follows anchors the mark at what the store now holds.
    fn heal(&self, damage: &Damage) -> Result<(), StoreError> {
        let new = uuid::Uuid::new_v4();
        let acknowledged = damage.mark.map(
            |m| json!({"log_seq": m.log_seq, "audit_seq": m.audit_seq, "flush_gen": m.flush_gen}),
        );
        let old = crate::store::write(self, |txn| {
            let old = txn.log_id()?;
            txn.set_log_id(new)?;
            txn.audit_append(AuditRecord::new(
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
            Ok(old)
        })?;
        tracing::error!(
            findings = ?damage.findings,
            old_log_id = %old,
            log_id = %new,
            "the store lost writes it had acknowledged (a damaged disk?); it keeps what it has \
             and starts a new log id, so that every device sends back what it holds"
        );
        Ok(())
    }
}

impl Store for SledStore {
    fn write_txn(&self, work: &mut Work<'_>) -> Result<(), StoreError> {
        // The checks (which may reopen the store) before the write lock, and the handle after
        // it: a reopen holds the lock, and waits for handles to be let go.
        self.healthy()?;
        self.shared.check_space()?;
        let mut turn = self.shared.writers.enter();
        let mine = self.shared.sled().and_then(|s| {
            turn.run(&s, work)
                .map_err(|e| self.shared.after_failed_work(e))
        });
        let outcome = turn.finish(|state| {
            let s = self.shared.sled()?;
            SledTxn::resume(&s, state)
                .commit()
                .map_err(|e| self.shared.failed(e))
        });
        mine.and(outcome)
    }

    fn read_txn(&self, work: &mut Work<'_>) -> Result<(), StoreError> {
        let s = self.sled()?;
        work(&mut SledTxn::new(&s, false)).map_err(|e| self.shared.after_failed_work(e))
    }

    fn scan_log(
        &self,
        after: Seq,
        upto: Seq,
        visit: &mut dyn FnMut(LogEntry<'_>) -> bool,
    ) -> Result<(), StoreError> {
        self.scan(after, upto, false, visit)
    }

    fn scan_log_with_erased(
        &self,
        after: Seq,
        upto: Seq,
        visit: &mut dyn FnMut(LogEntry<'_>) -> bool,
    ) -> Result<(), StoreError> {
        self.scan(after, upto, true, visit)
    }

    /// The files cannot be rewritten while sled has them open: the rewrite is due at the next
    /// open (see [`rewrite`]).
    fn compact(&self) -> Result<Compaction, StoreError> {
        let due = rewrite::pending(&self.sled()?.db)?;
        Ok(Compaction {
            done: !due,
            detail: if due {
                "the erased rows are gone from every read; sled's files still hold their bytes \
                 until the store is next opened, which rewrites them before serving (restart \
                 the server, or run `casenote-server compact --data DIR` on the stopped store)"
                    .into()
            } else {
                "nothing erased waits in the store's files".into()
            },
        })
    }

    fn get_log(&self, seq: Seq) -> Result<Option<(DocId, Hash, Vec<u8>)>, StoreError> {
        let got = self.sled()?.log.get(seq.0.to_be_bytes());
        let Some(v) = got.map_err(|e| self.shared.failed(e))? else {
            return Ok(None);
        };
        let e = parse_log(&v)?;
        if e.bytes.is_empty() {
            return Ok(None); // erased
        }
        Ok(Some((e.doc_id, e.hash, e.bytes.to_vec())))
    }

    fn doc_change_seqs(&self, doc: DocId) -> Result<Vec<Seq>, StoreError> {
        let mut out = Vec::new();
        for item in self.sled()?.hashes.scan_prefix(doc.as_bytes()) {
            let (_, v) = item.map_err(|e| self.shared.failed(e))?;
            out.push(Seq(seq_from(&v)?));
        }
        out.sort();
        Ok(out)
    }

    fn received_at(&self, seq: Seq) -> Result<Option<i64>, StoreError> {
        let got = self.sled()?.received.get(seq.0.to_be_bytes());
        match got.map_err(|e| self.shared.failed(e))? {
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

    fn last_seq(&self) -> Result<Seq, StoreError> {
        let tip = self.sled()?.tip();
        Ok(Seq(tip.map_err(|e| self.shared.after_failed_work(e))?.seq))
    }

    fn durable_seq(&self) -> Result<Seq, StoreError> {
        Ok(Seq(self.shared.durable.load(Ordering::Acquire)))
    }

    fn access_epoch(&self) -> Result<u64, StoreError> {
        crate::store::read(self, |txn| txn.access_epoch())
    }

    fn log_state(&self, meta_key: &str) -> Result<crate::store::LogState, StoreError> {
        let (log_id, meta) =
            crate::store::read(self, |txn| Ok((txn.log_id()?, txn.meta(meta_key)?)))?;
        Ok(crate::store::LogState {
            log_id,
            last_seq: self.last_seq()?,
            meta,
        })
    }

    fn credentials(
        &self,
        sha256: &[u8; 32],
        meta_key: &str,
    ) -> Result<Option<crate::store::Credentials>, StoreError> {
        // The generation before the read, from the handle the entry goes to: a store that
        // reopens meanwhile starts a new directory, and this entry goes with the old one.
        let sled = self.sled()?;
        let generation = sled.directory.generation();
        let found = crate::store::read(self, |txn| {
            crate::store::credentials_in(txn, sha256, meta_key)
        })?;
        if let Some(found) = &found {
            sled.directory.put(generation, sha256, meta_key, found);
        }
        Ok(found)
    }

    fn credentials_cached(&self, sha256: &[u8; 32], meta_key: &str) -> Option<Credentials> {
        self.sled().ok()?.directory.get(sha256, meta_key)
    }

    fn audit_scan(&self, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError> {
        for item in self.sled()?.audit.iter() {
            let (k, v) = item.map_err(|e| self.shared.failed(e))?;
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

    fn quarantine_list(&self) -> Result<Vec<QuarantineEntry>, StoreError> {
        all(&self.sled()?.quarantine).map_err(|e| self.shared.after_failed_work(e))
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.group_flush()
    }

    fn flush_soon(&self) {
        self.ask_flush();
    }

    fn writability(&self) -> Writability {
        self.check_writable()
    }

    /// sled's files on disk.
    fn size_bytes(&self) -> Option<u64> {
        self.shared.sled().ok()?.db.size_on_disk().ok()
    }
}

impl SledStore {
    /// The log entries with `after < seq <= upto`, erased ones (no bytes) only if `erased`.
    fn scan(
        &self,
        after: Seq,
        upto: Seq,
        erased: bool,
        visit: &mut dyn FnMut(LogEntry<'_>) -> bool,
    ) -> Result<(), StoreError> {
        if after >= upto {
            return Ok(());
        }
        let start = after.0.saturating_add(1).to_be_bytes();
        let end = upto.0.to_be_bytes();
        for item in self.sled()?.log.range(start..=end) {
            let (k, v) = item.map_err(|e| self.shared.failed(e))?;
            let e = parse_log(&v)?;
            if e.bytes.is_empty() && !erased {
                continue;
            }
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
}

#[cfg(test)]
mod durability_tests;
#[cfg(test)]
pub(crate) mod tests;
