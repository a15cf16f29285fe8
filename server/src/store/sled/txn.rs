//! The sled backend's transaction ([`SledTxn`]): the contract's [`Txn`] over sled's trees.
//!
//! A write transaction runs under the store's write mutex (taken by `SledStore::write_txn`,
//! through [`super::writers`]), so it is serializable against every other; the writers that
//! queue up share one transaction, each going on from the state the one before it left. Its
//! writes go to an overlay, one ordered map per tree (a removal is kept as `None`); reads look
//! in the overlay first and prefix scans merge it, so the transaction reads its own writes. At
//! the end the overlay is committed as ONE sled transaction over the trees it touched, which
//! sled recovers atomically after a crash. The log's tip and the audit chain's head are read
//! from the trees (and then from the overlay) inside the transaction, never from a cache. A read
//! transaction is the same object with writes refused; it takes no lock.

use super::codec::{
    dec, enc, escrow_key, hash_key, pair_key, seq_from, ACCESS_EPOCH_KEY, LOG_ID_KEY,
};
use super::rewrite::PENDING_KEY;
use super::trees::{chain_next, log_value, parse_log, Sled, Tip, T, TREES};
use crate::model::audit::{self, AuditEntry, AuditRecord};
use crate::model::{
    ActorBinding, CaseRecord, Device, DeviceSync, DocRecord, LoggedChange, NewChange, Org,
    QuarantineEntry, Staff, Team, TokenRecord,
};
use crate::store::{StoreError, Txn};
use casenote_protocol::wire::Hash;
use casenote_protocol::{CaseId, DeviceId, DocId, OrgId, Seq, StaffId, TeamId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use std::collections::BTreeMap;

/// A tree's pending writes: key → new value, or `None` for a removal.
pub(super) type Pending = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A write transaction's state between two of the writers that share it
/// ([`super::writers`]): its overlay, the log's tip and the audit chain's head as it advanced them.
#[derive(Clone, Default)]
pub(super) struct TxnState {
    pending: [Pending; TREES],
    tip: Option<Tip>,
    audit_head: Option<(u64, String)>,
}

impl TxnState {
    /// The bytes of its pending keys and values.
    pub(super) fn bytes(&self) -> usize {
        self.pending
            .iter()
            .flat_map(|p| p.iter())
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum()
    }
}

/// One transaction over the trees of `s`.
pub(super) struct SledTxn<'a> {
    s: &'a Sled,
    writable: bool,
    pending: [Pending; TREES],
    /// The log's tip, read on the first append and advanced by each.
    tip: Option<Tip>,
    /// The audit chain's head (seq, hash), read on the first append and advanced by each.
    audit_head: Option<(u64, String)>,
}

impl<'a> SledTxn<'a> {
    /// A write transaction over `s` that goes on from `state` (the default state: a new one).
    pub(super) fn resume(s: &'a Sled, state: TxnState) -> Self {
        SledTxn {
            s,
            writable: true,
            pending: state.pending,
            tip: state.tip,
            audit_head: state.audit_head,
        }
    }

    /// What the transaction holds, for the next writer to go on from.
    pub(super) fn into_state(self) -> TxnState {
        TxnState {
            pending: self.pending,
            tip: self.tip,
            audit_head: self.audit_head,
        }
    }

    pub(super) fn new(s: &'a Sled, writable: bool) -> Self {
        SledTxn {
            writable,
            ..SledTxn::resume(s, TxnState::default())
        }
    }

    fn get(&self, t: T, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.pending[t as usize].get(key) {
            Some(v) => Ok(v.clone()),
            None => Ok(self.s.tree(t).get(key)?.map(|v| v.to_vec())),
        }
    }

    fn contains(&self, t: T, key: &[u8]) -> Result<bool, StoreError> {
        match self.pending[t as usize].get(key) {
            Some(v) => Ok(v.is_some()),
            None => Ok(self.s.tree(t).contains_key(key)?),
        }
    }

    fn get_as<V: DeserializeOwned>(&self, t: T, key: &[u8]) -> Result<Option<V>, StoreError> {
        self.get(t, key)?.map(|v| dec(&v)).transpose()
    }

    fn set(&mut self, t: T, key: &[u8], value: Option<Vec<u8>>) -> Result<(), StoreError> {
        if !self.writable {
            return Err(StoreError::Backend(
                "a read transaction refuses writes".into(),
            ));
        }
        self.pending[t as usize].insert(key.to_vec(), value);
        Ok(())
    }

    fn put(&mut self, t: T, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.set(t, key, Some(value))
    }

    fn put_as<V: Serialize>(&mut self, t: T, key: &[u8], value: &V) -> Result<(), StoreError> {
        self.put(t, key, enc(value))
    }

    fn del(&mut self, t: T, key: &[u8]) -> Result<(), StoreError> {
        self.set(t, key, None)
    }

    /// Every value of tree `t`, the pending writes merged in, in key order.
    fn all_as<V: DeserializeOwned>(&self, t: T) -> Result<Vec<V>, StoreError> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for item in self.s.tree(t).iter() {
            let (k, v) = item?;
            merged.insert(k.to_vec(), v.to_vec());
        }
        merge(&mut merged, &self.pending[t as usize], &[]);
        merged.values().map(|v| dec(v)).collect()
    }

    /// The keys of tree `t` under `prefix`, the pending writes merged in, in key order.
    fn keys_under(&self, t: T, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for item in self.s.tree(t).scan_prefix(prefix) {
            let (k, _) = item?;
            merged.insert(k.to_vec(), Vec::new());
        }
        merge(&mut merged, &self.pending[t as usize], prefix);
        Ok(merged.into_keys().collect())
    }

    /// The ids after a 16-byte prefix in the keys of index `t` under `prefix`.
    fn suffix_ids<I>(
        &self,
        t: T,
        prefix: &[u8; 16],
        make: fn(&[u8]) -> Option<I>,
    ) -> Result<Vec<I>, StoreError> {
        self.keys_under(t, prefix)?
            .iter()
            .map(|k| make(&k[16..]).ok_or_else(|| StoreError::Corrupt("an index key".into())))
            .collect()
    }

    fn meta_u64(&self, key: &str) -> Result<u64, StoreError> {
        match self.get(T::Meta, key.as_bytes())? {
            Some(v) => seq_from(&v),
            None => Ok(0),
        }
    }

    fn tip(&mut self) -> Result<Tip, StoreError> {
        match self.tip {
            Some(tip) => Ok(tip),
            None => self.s.tip(),
        }
    }

    fn head(&mut self) -> Result<(u64, String), StoreError> {
        match &self.audit_head {
            Some(head) => Ok(head.clone()),
            None => self.s.audit_tail(),
        }
    }

    /// Commits the pending writes as one sled transaction over the trees they touch. sled's own
    /// error is handed back as it is, so the store can tell a failed disk from the rest.
    pub(super) fn commit(self) -> Result<(), sled::Error> {
        let mut trees: Vec<&sled::Tree> = Vec::new();
        let mut batches: Vec<sled::Batch> = Vec::new();
        for t in T::ALL {
            let pending = &self.pending[t as usize];
            if pending.is_empty() {
                continue;
            }
            let mut batch = sled::Batch::default();
            for (k, v) in pending {
                match v {
                    Some(v) => batch.insert(&k[..], &v[..]),
                    None => batch.remove(&k[..]),
                }
            }
            trees.push(self.s.tree(t));
            batches.push(batch);
        }
        if trees.is_empty() {
            return Ok(());
        }
        trees[..]
            .transaction(|views| {
                for (view, batch) in views.iter().zip(&batches) {
                    view.apply_batch(batch)?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => e,
                TransactionError::Abort(()) => {
                    sled::Error::ReportableBug("a store commit aborted".into())
                }
            })?;
        self.s.directory.committed(&self.pending);
        Ok(())
    }
}

/// A page of the log being read ([`Txn::log_page`]): entries taken until `max` of them or
/// `max_bytes` of their bytes.
struct LogPage {
    out: Vec<LoggedChange>,
    bytes: usize,
    max: usize,
    max_bytes: usize,
}

impl LogPage {
    fn new(max: usize, max_bytes: usize) -> Self {
        LogPage {
            out: Vec::new(),
            bytes: 0,
            max,
            max_bytes,
        }
    }

    /// Takes the entry under key `k` (none: removed; no bytes: erased), and says whether the
    /// page has room for more.
    fn take(&mut self, k: &[u8], value: Option<&[u8]>) -> Result<bool, StoreError> {
        if let Some(v) = value {
            let e = parse_log(v)?;
            if !e.bytes.is_empty() {
                self.bytes += e.bytes.len();
                self.out.push(LoggedChange {
                    seq: Seq(seq_from(k)?),
                    doc_id: e.doc_id,
                    hash: e.hash,
                    bytes: e.bytes.to_vec(),
                });
            }
        }
        Ok(self.out.len() < self.max && self.bytes < self.max_bytes)
    }
}

/// Applies `pending` (under `prefix`) to `merged`: new values in, removals out.
fn merge(merged: &mut BTreeMap<Vec<u8>, Vec<u8>>, pending: &Pending, prefix: &[u8]) {
    let under = pending
        .range(prefix.to_vec()..)
        .take_while(|(k, _)| k.starts_with(prefix));
    for (k, v) in under {
        match v {
            Some(v) => merged.insert(k.clone(), v.clone()),
            None => merged.remove(k),
        };
    }
}

impl Txn for SledTxn<'_> {
    fn org(&mut self, id: OrgId) -> Result<Option<Org>, StoreError> {
        self.get_as(T::Orgs, id.as_bytes())
    }
    fn orgs(&mut self) -> Result<Vec<Org>, StoreError> {
        self.all_as(T::Orgs)
    }
    fn team(&mut self, id: TeamId) -> Result<Option<Team>, StoreError> {
        self.get_as(T::Teams, id.as_bytes())
    }
    fn teams(&mut self) -> Result<Vec<Team>, StoreError> {
        self.all_as(T::Teams)
    }
    fn staff(&mut self, id: StaffId) -> Result<Option<Staff>, StoreError> {
        self.get_as(T::Staff, id.as_bytes())
    }
    fn staff_all(&mut self) -> Result<Vec<Staff>, StoreError> {
        self.all_as(T::Staff)
    }
    fn device(&mut self, id: DeviceId) -> Result<Option<Device>, StoreError> {
        self.get_as(T::Devices, id.as_bytes())
    }
    fn devices(&mut self) -> Result<Vec<Device>, StoreError> {
        self.all_as(T::Devices)
    }
    fn token(&mut self, sha256: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        self.get_as(T::Tokens, sha256)
    }
    fn put_org(&mut self, org: &Org) -> Result<(), StoreError> {
        self.put_as(T::Orgs, org.org_id.as_bytes(), org)
    }
    fn put_team(&mut self, team: &Team) -> Result<(), StoreError> {
        self.put_as(T::Teams, team.team_id.as_bytes(), team)
    }
    fn put_staff(&mut self, staff: &Staff) -> Result<(), StoreError> {
        self.put_as(T::Staff, staff.staff_id.as_bytes(), staff)
    }
    fn put_device(&mut self, device: &Device) -> Result<(), StoreError> {
        self.put_as(T::Devices, device.device_id.as_bytes(), device)
    }
    fn put_token(&mut self, sha256: &[u8; 32], record: &TokenRecord) -> Result<(), StoreError> {
        self.put_as(T::Tokens, sha256, record)
    }

    fn case(&mut self, id: CaseId) -> Result<Option<CaseRecord>, StoreError> {
        self.get_as(T::Cases, id.as_bytes())
    }
    fn put_case(&mut self, case: &CaseRecord) -> Result<(), StoreError> {
        let key = case.case_id.as_bytes();
        if let Some(old) = self.case(case.case_id)? {
            for t in old.teams.iter().filter(|t| !case.teams.contains(t)) {
                self.del(T::TeamCases, &pair_key(t.as_bytes(), key))?;
            }
        }
        for t in &case.teams {
            self.put(T::TeamCases, &pair_key(t.as_bytes(), key), Vec::new())?;
        }
        self.put_as(T::Cases, key, case)
    }
    fn doc(&mut self, id: DocId) -> Result<Option<DocRecord>, StoreError> {
        self.get_as(T::Docs, id.as_bytes())
    }
    fn change_seqs_of(&mut self, doc: DocId) -> Result<Vec<Seq>, StoreError> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for item in self.s.tree(T::Hashes).scan_prefix(doc.as_bytes()) {
            let (k, v) = item?;
            merged.insert(k.to_vec(), v.to_vec());
        }
        merge(
            &mut merged,
            &self.pending[T::Hashes as usize],
            doc.as_bytes(),
        );
        let mut seqs = merged
            .values()
            .map(|v| seq_from(v).map(Seq))
            .collect::<Result<Vec<_>, _>>()?;
        seqs.sort();
        Ok(seqs)
    }
    fn change_at(&mut self, seq: Seq) -> Result<Option<(DocId, Hash, Vec<u8>)>, StoreError> {
        let Some(v) = self.get(T::Log, &seq.0.to_be_bytes())? else {
            return Ok(None);
        };
        let e = parse_log(&v)?;
        if e.bytes.is_empty() {
            return Ok(None); // erased
        }
        Ok(Some((e.doc_id, e.hash, e.bytes.to_vec())))
    }
    fn log_page(
        &mut self,
        (after, upto): (Seq, Seq),
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<LoggedChange>, StoreError> {
        let mut page = LogPage::new(max, max_bytes);
        if after >= upto || max == 0 {
            return Ok(page.out);
        }
        let (start, end) = (
            after.0.saturating_add(1).to_be_bytes(),
            upto.0.to_be_bytes(),
        );
        // Committed entries, each as this transaction left it (an erasure rewrites one); then
        // the ones it appended, all above the committed tip. A read transaction has neither.
        let pending = &self.pending[T::Log as usize];
        let mut last: Option<Vec<u8>> = None;
        for item in self.s.tree(T::Log).range(start..=end) {
            let (k, v) = item?;
            let room = match pending.get(&k[..]) {
                Some(mine) => page.take(&k, mine.as_deref())?,
                None => page.take(&k, Some(&v))?,
            };
            last = Some(k.to_vec());
            if !room {
                return Ok(page.out);
            }
        }
        let appended = pending
            .range(start.to_vec()..=end.to_vec())
            .filter(|(k, _)| last.as_ref().is_none_or(|l| *k > l));
        for (k, v) in appended {
            if !page.take(k, v.as_deref())? {
                break;
            }
        }
        Ok(page.out)
    }
    fn put_doc(&mut self, doc: &DocRecord) -> Result<(), StoreError> {
        let h = &doc.header;
        let index = pair_key(h.case_id.as_bytes(), h.doc_id.as_bytes());
        self.put(T::CaseDocs, &index, Vec::new())?;
        self.put_as(T::Docs, h.doc_id.as_bytes(), doc)
    }
    fn has_change(&mut self, doc: DocId, hash: &Hash) -> Result<bool, StoreError> {
        self.contains(T::Hashes, &hash_key(doc, hash))
    }
    fn append_change(&mut self, change: &NewChange) -> Result<Seq, StoreError> {
        let tip = self.tip()?;
        let seq = tip.seq + 1;
        let chain = chain_next(&tip.chain, seq, change.doc_id, &change.hash);
        let key = seq.to_be_bytes();
        let value = log_value(change.doc_id, &change.hash, &chain, &change.bytes);
        self.put(T::Log, &key, value)?;
        self.tip = Some(Tip { seq, chain });
        if change.bytes.is_empty() {
            // An erased entry, copied (`store::copy`): its place in the chain, nothing else.
            return Ok(Seq(seq));
        }
        self.put(
            T::Hashes,
            &hash_key(change.doc_id, &change.hash),
            key.to_vec(),
        )?;
        let received = change.received_at_ms.to_be_bytes().to_vec();
        self.put(T::Received, &key, received)?;
        Ok(Seq(seq))
    }
    fn actor(&mut self, actor: &[u8]) -> Result<Option<ActorBinding>, StoreError> {
        self.get_as(T::Actors, actor)
    }
    fn put_actor(&mut self, actor: &[u8], binding: &ActorBinding) -> Result<(), StoreError> {
        self.put_as(T::Actors, actor, binding)
    }
    fn cases_of_team(&mut self, team: TeamId) -> Result<Vec<CaseId>, StoreError> {
        self.suffix_ids(T::TeamCases, team.as_bytes(), CaseId::from_slice)
    }
    fn docs_of_case(&mut self, case: CaseId) -> Result<Vec<DocId>, StoreError> {
        self.suffix_ids(T::CaseDocs, case.as_bytes(), DocId::from_slice)
    }

    fn device_sync(&mut self, device: DeviceId) -> Result<Option<DeviceSync>, StoreError> {
        self.get_as(T::DeviceSync, device.as_bytes())
    }
    fn put_device_sync(&mut self, device: DeviceId, state: &DeviceSync) -> Result<(), StoreError> {
        self.put_as(T::DeviceSync, device.as_bytes(), state)
    }
    fn device_docs(&mut self, device: DeviceId) -> Result<Vec<DocId>, StoreError> {
        self.suffix_ids(T::DeviceDocs, device.as_bytes(), DocId::from_slice)
    }
    fn device_docs_add(&mut self, device: DeviceId, docs: &[DocId]) -> Result<(), StoreError> {
        for d in docs {
            let key = pair_key(device.as_bytes(), d.as_bytes());
            // A device's every sync names the documents it pulled, nearly all held already: a
            // read is cheap, a write is not (each one goes to sled's log; in W5L these were 8.6
            // of the 15 writes of a one-edit sync).
            if !self.contains(T::DeviceDocs, &key)? {
                self.put(T::DeviceDocs, &key, Vec::new())?;
            }
        }
        Ok(())
    }
    fn device_docs_remove(&mut self, device: DeviceId, docs: &[DocId]) -> Result<(), StoreError> {
        for d in docs {
            self.del(T::DeviceDocs, &pair_key(device.as_bytes(), d.as_bytes()))?;
        }
        Ok(())
    }
    fn device_docs_clear(&mut self, device: DeviceId) -> Result<(), StoreError> {
        for key in self.keys_under(T::DeviceDocs, device.as_bytes())? {
            self.del(T::DeviceDocs, &key)?;
        }
        Ok(())
    }

    fn quarantined(
        &mut self,
        doc: DocId,
        hash: &Hash,
    ) -> Result<Option<QuarantineEntry>, StoreError> {
        self.get_as(T::Quarantine, &hash_key(doc, hash))
    }
    fn quarantine_add(&mut self, entries: &[QuarantineEntry]) -> Result<usize, StoreError> {
        let mut added = 0;
        for e in entries {
            let key = hash_key(e.doc_id, &e.hash);
            if !self.contains(T::Quarantine, &key)? {
                self.put_as(T::Quarantine, &key, e)?;
                added += 1;
            }
        }
        Ok(added)
    }

    fn audit_append(&mut self, record: AuditRecord) -> Result<AuditEntry, StoreError> {
        let (last, prev) = self.head()?;
        let entry = audit::seal(last + 1, &prev, record);
        self.put(T::Audit, &entry.seq.to_be_bytes(), audit::encode(&entry))?;
        self.audit_head = Some((entry.seq, entry.hash.clone()));
        Ok(entry)
    }

    fn access_epoch(&mut self) -> Result<u64, StoreError> {
        self.meta_u64(ACCESS_EPOCH_KEY)
    }
    fn bump_access_epoch(&mut self) -> Result<u64, StoreError> {
        let next = self.meta_u64(ACCESS_EPOCH_KEY)?.wrapping_add(1);
        self.put(
            T::Meta,
            ACCESS_EPOCH_KEY.as_bytes(),
            next.to_be_bytes().to_vec(),
        )?;
        Ok(next)
    }
    fn last_seq(&mut self) -> Result<Seq, StoreError> {
        let tip = match self.tip {
            Some(tip) => tip,
            None => self.s.tip()?,
        };
        Ok(Seq(tip.seq))
    }
    fn log_id(&mut self) -> Result<uuid::Uuid, StoreError> {
        match self.get(T::Meta, LOG_ID_KEY.as_bytes())? {
            Some(v) => uuid::Uuid::from_slice(&v)
                .map_err(|_| StoreError::Corrupt("the stored log id is not 16 bytes".into())),
            None => Err(StoreError::Corrupt("the store has no log id".into())),
        }
    }
    fn set_log_id(&mut self, id: uuid::Uuid) -> Result<(), StoreError> {
        self.put(T::Meta, LOG_ID_KEY.as_bytes(), id.as_bytes().to_vec())
    }
    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(T::Meta, key.as_bytes())
    }
    fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.put(T::Meta, key.as_bytes(), value.to_vec())
    }

    fn escrow(&mut self, device: DeviceId) -> Result<Option<[u8; 32]>, StoreError> {
        self.get(T::Escrow, device.as_bytes())?
            .map(|v| escrow_key(&v))
            .transpose()
    }
    fn escrow_put_if_absent(
        &mut self,
        device: DeviceId,
        key: [u8; 32],
    ) -> Result<[u8; 32], StoreError> {
        if let Some(kept) = self.escrow(device)? {
            return Ok(kept);
        }
        self.put(T::Escrow, device.as_bytes(), key.to_vec())?;
        Ok(key)
    }
    fn escrow_remove(&mut self, device: DeviceId) -> Result<(), StoreError> {
        self.del(T::Escrow, device.as_bytes())
    }

    fn erase_doc(&mut self, doc: DocId) -> Result<Vec<Seq>, StoreError> {
        let mut seqs = Vec::new();
        for key in self.keys_under(T::Hashes, doc.as_bytes())? {
            let Some(at) = self.get(T::Hashes, &key)? else {
                continue;
            };
            if let Some(v) = self.get(T::Log, &at)? {
                let e = parse_log(&v)?;
                let kept = log_value(e.doc_id, &e.hash, &e.chain, &[]);
                self.put(T::Log, &at, kept)?;
            }
            self.del(T::Received, &at)?;
            self.del(T::Hashes, &key)?;
            seqs.push(Seq(seq_from(&at)?));
        }
        seqs.sort();
        if let Some(rec) = self.doc(doc)? {
            let index = pair_key(rec.header.case_id.as_bytes(), doc.as_bytes());
            self.del(T::CaseDocs, &index)?;
            self.del(T::Docs, doc.as_bytes())?;
        }
        for key in self.keys_under(T::Quarantine, doc.as_bytes())? {
            self.del(T::Quarantine, &key)?;
        }
        self.put(T::Meta, PENDING_KEY.as_bytes(), vec![1])?;
        Ok(seqs)
    }
}
