//! Moving a store to another backend (`casenote-server migrate --data DIR --postgres URL`):
//! everything, through the store contract alone, so it knows no backend and runs either way.
//!
//! What moves, and how it is found through the contract:
//! - the change log, every entry under the same sequence, with its received time, in order
//!   (`scan_log`); the target computes the same hash chain from (seq, doc, hash), and each
//!   append must land on the sequence it had, or the copy stops (someone else wrote to the
//!   target meanwhile);
//! - documents and cases: every document that has a change is in the log, and every case has
//!   its case document, so `doc` and `case` of each id the log names find them all;
//! - actor bindings: a binding is written with the first change under its actor, so the actors
//!   of the logged changes (read from each change's header) find them all;
//! - the directory (orgs, teams, staff, devices) and each device's token, sync state,
//!   holdings and escrowed key;
//! - quarantine; the access epoch (device sync states compare against it); the log id (devices
//!   keep their cursors: nothing to resend); the application's meta values ([`META_KEYS`]);
//! - the audit chain, entry by entry: each is sealed again on the target from the same record
//!   and must come out with the hash it had, so the target's chain is the source's, and a
//!   source whose chain does not verify is refused before anything is copied.
//!
//! The target must be empty. Writes go in transactions of a bounded size
//! ([`limits::STORE_COPY_BYTES_PER_TXN`]), so a large store is copied in bounded memory.

use super::{read, write, Store, StoreError, Txn};
use crate::model::{AuditEntry, AuditRecord, NewChange};
use casenote_protocol::{limits, CaseId, DocId, Seq};
use std::collections::BTreeSet;

/// The meta values of the application (not of a backend) that move with a store: the demo's
/// marker and the admin tokens. A new one must be added here.
pub const META_KEYS: &[&str] = &["demo", crate::model::directory::ADMIN_TOKENS_KEY];

/// What a copy moved.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
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

/// Why a copy stopped.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the target store is not empty; migrate into a new, empty database")]
    TargetNotEmpty,
    #[error(
        "the source's audit log does not verify (entry {seq}: {reason}); run `audit verify` on it"
    )]
    AuditBroken { seq: u64, reason: String },
    #[error("the copy diverged at {what}: another process wrote to the target meanwhile?")]
    Diverged { what: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Copies everything of `from` into the empty `to` (see the module docs).
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
    let mut copied = Copied::default();
    let ids = copy_log(from, to, &mut copied)?;
    copy_records(from, to, &ids, &mut copied)?;
    copy_directory(from, to, &mut copied)?;
    copy_quarantine(from, to, &mut copied)?;
    copy_audit(from, to, &mut copied)?;
    to.flush()?;
    Ok(copied)
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

/// What the log names: its documents and the actors of its changes.
#[derive(Default)]
struct Named {
    docs: BTreeSet<DocId>,
    actors: BTreeSet<Vec<u8>>,
}

/// Copies the log in order, a bounded batch per transaction.
fn copy_log(from: &dyn Store, to: &dyn Store, copied: &mut Copied) -> Result<Named, CopyError> {
    let mut named = Named::default();
    let last = from.last_seq()?;
    let mut cursor = Seq(0);
    while cursor < last {
        let mut batch = Vec::new();
        let mut bytes = 0;
        from.scan_log(cursor, last, &mut |e| {
            bytes += e.bytes.len();
            batch.push((e.seq, e.doc_id, e.hash, e.bytes.to_vec()));
            bytes < limits::STORE_COPY_BYTES_PER_TXN
        })?;
        let Some(&(end, ..)) = batch.last() else {
            break;
        };
        let mut changes = Vec::with_capacity(batch.len());
        for (seq, doc_id, hash, bytes) in batch {
            named.docs.insert(doc_id);
            if let Ok(change) = automerge::Change::from_bytes(bytes.clone()) {
                named.actors.insert(change.actor_id().to_bytes().to_vec());
            }
            let received = from.received_at(seq)?;
            changes.push((
                seq,
                NewChange {
                    doc_id,
                    hash,
                    bytes,
                    // Changes from before the server kept receipt times had none: 0 says so.
                    received_at_ms: received.unwrap_or(0),
                },
            ));
        }
        let landed = write(to, |t| {
            changes
                .iter()
                .map(|(seq, c)| Ok((*seq, t.append_change(c)?)))
                .collect::<Result<Vec<_>, StoreError>>()
        })?;
        if let Some((want, got)) = landed.iter().find(|(want, got)| want != got) {
            return Err(CopyError::Diverged {
                what: format!("change {want}, which landed on {got}"),
            });
        }
        copied.changes += landed.len() as u64;
        cursor = end;
    }
    Ok(named)
}

/// Documents, their cases, actor bindings, the access epoch, the log id and meta values.
fn copy_records(
    from: &dyn Store,
    to: &dyn Store,
    named: &Named,
    copied: &mut Copied,
) -> Result<(), CopyError> {
    let docs: Vec<DocId> = named.docs.iter().copied().collect();
    let mut cases = BTreeSet::<CaseId>::new();
    for chunk in docs.chunks(limits::STORE_COPY_RECORDS_PER_TXN) {
        let records = read(from, |t| {
            chunk
                .iter()
                .filter_map(|d| t.doc(*d).transpose())
                .collect::<Result<Vec<_>, _>>()
        })?;
        cases.extend(records.iter().map(|r| r.header.case_id));
        write(to, |t| records.iter().try_for_each(|r| t.put_doc(r)))?;
        copied.docs += records.len() as u64;
    }
    let cases: Vec<CaseId> = cases.into_iter().collect();
    for chunk in cases.chunks(limits::STORE_COPY_RECORDS_PER_TXN) {
        let records = read(from, |t| {
            chunk
                .iter()
                .filter_map(|c| t.case(*c).transpose())
                .collect::<Result<Vec<_>, _>>()
        })?;
        write(to, |t| records.iter().try_for_each(|r| t.put_case(r)))?;
        copied.cases += records.len() as u64;
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
        write(to, |t| {
            bindings.iter().try_for_each(|(a, b)| t.put_actor(a, b))
        })?;
        copied.actors += bindings.len() as u64;
    }
    copy_meta(from, to, copied)
}

fn copy_meta(from: &dyn Store, to: &dyn Store, copied: &mut Copied) -> Result<(), CopyError> {
    let (epoch, log_id, meta) = read(from, |t| {
        let meta = META_KEYS
            .iter()
            .filter_map(|k| t.meta(k).transpose().map(|v| v.map(|v| (*k, v))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((t.access_epoch()?, t.log_id()?, meta))
    })?;
    write(to, |t| {
        while t.access_epoch()? < epoch {
            t.bump_access_epoch()?;
        }
        t.set_log_id(log_id)?;
        meta.iter().try_for_each(|(k, v)| t.put_meta(k, v))
    })?;
    copied.access_epoch = epoch;
    Ok(())
}

/// Orgs, teams, staff, and per device: its record, token, sync state, holdings and escrow.
fn copy_directory(from: &dyn Store, to: &dyn Store, copied: &mut Copied) -> Result<(), CopyError> {
    let (orgs, teams, staff, devices) = read(from, |t| {
        Ok((t.orgs()?, t.teams()?, t.staff_all()?, t.devices()?))
    })?;
    write(to, |t| {
        orgs.iter().try_for_each(|o| t.put_org(o))?;
        teams.iter().try_for_each(|x| t.put_team(x))?;
        staff.iter().try_for_each(|s| t.put_staff(s))
    })?;
    (copied.orgs, copied.teams, copied.staff) =
        (orgs.len() as u64, teams.len() as u64, staff.len() as u64);
    for device in &devices {
        let sha = token_sha256(&device.token_sha256)?;
        let (token, sync, holdings, escrow) = read(from, |t| {
            let token = match sha {
                Some(sha) => t.token(&sha)?,
                None => None,
            };
            let id = device.device_id;
            Ok((token, t.device_sync(id)?, t.device_docs(id)?, t.escrow(id)?))
        })?;
        write(to, |t| {
            copy_device(t, device, sha, &token, &sync, &holdings, escrow)
        })?;
        copied.devices += 1;
    }
    Ok(())
}

fn copy_device(
    t: &mut dyn Txn,
    device: &crate::model::Device,
    sha: Option<[u8; 32]>,
    token: &Option<crate::model::TokenRecord>,
    sync: &Option<crate::model::DeviceSync>,
    holdings: &[DocId],
    escrow: Option<[u8; 32]>,
) -> Result<(), StoreError> {
    let id = device.device_id;
    t.put_device(device)?;
    if let (Some(sha), Some(token)) = (sha, token) {
        t.put_token(&sha, token)?;
    }
    if let Some(sync) = sync {
        t.put_device_sync(id, sync)?;
    }
    t.device_docs_add(id, holdings)?;
    if let Some(key) = escrow {
        t.escrow_put_if_absent(id, key)?;
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

fn copy_quarantine(from: &dyn Store, to: &dyn Store, copied: &mut Copied) -> Result<(), CopyError> {
    let entries = from.quarantine_list()?;
    for chunk in entries.chunks(limits::STORE_COPY_RECORDS_PER_TXN) {
        copied.quarantined += write(to, |t| t.quarantine_add(chunk))? as u64;
    }
    Ok(())
}

/// The audit chain, sealed again entry by entry; each must keep its hash. One scan of the
/// source; each full batch is written from inside it.
fn copy_audit(from: &dyn Store, to: &dyn Store, copied: &mut Copied) -> Result<(), CopyError> {
    let mut batch: Vec<AuditEntry> = Vec::new();
    let mut failed: Option<CopyError> = None;
    from.audit_scan(&mut |seq, value| {
        match serde_json::from_slice::<AuditEntry>(value) {
            Ok(e) => batch.push(e),
            Err(e) => {
                failed = Some(CopyError::AuditBroken {
                    seq,
                    reason: e.to_string(),
                });
                return false;
            }
        }
        if batch.len() < limits::STORE_COPY_RECORDS_PER_TXN {
            return true;
        }
        match audit_batch(to, &mut batch) {
            Ok(n) => {
                copied.audit_entries += n;
                true
            }
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    copied.audit_entries += audit_batch(to, &mut batch)?;
    Ok(())
}

/// Seals `batch` again on `to` in one transaction and checks every hash; empties `batch`.
fn audit_batch(to: &dyn Store, batch: &mut Vec<AuditEntry>) -> Result<u64, CopyError> {
    if batch.is_empty() {
        return Ok(0);
    }
    let sealed = write(to, |t| {
        batch
            .iter()
            .map(|e| t.audit_append(record_of(e)))
            .collect::<Result<Vec<_>, _>>()
    })?;
    for (was, now) in batch.iter().zip(&sealed) {
        if was.seq != now.seq || was.hash != now.hash {
            return Err(CopyError::Diverged {
                what: format!("audit entry {}", was.seq),
            });
        }
    }
    batch.clear();
    Ok(sealed.len() as u64)
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
