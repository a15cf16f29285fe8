//! The audit log: append-only and hash-chained, so that a changed, removed or reordered entry is
//! found by [`verify`].
//!
//! Storage: the sled tree named [`TREE`] (`"audit"`) in the data directory. Key: the entry's
//! sequence number as a u64 big-endian (the first entry is 1, no gaps). Value: the entry as one
//! UTF-8 JSON object ([`AuditEntry`]):
//!
//! ```json
//! {"seq":1,"at_ms":1700000000000,"kind":"enrol","staff_id":"…","device_id":"…",
//!  "details":{…},"prev_hash":"00…00","hash":"ab…"}
//! ```
//!
//! `hash` is the lower-case hex sha256 of the ASCII `prev_hash` followed by the canonical JSON of
//! the entry without its `hash` field (the fields in the order above, `details` with its object
//! keys sorted, no whitespace). `prev_hash` is the previous entry's `hash`, or 64 zeros for the
//! first entry. Changing any byte of an entry breaks its own hash; recomputing that hash breaks
//! the next entry's `prev_hash`. (Cutting entries off the end is not detectable from the chain
//! alone; anchor the last hash elsewhere for that.)
//!
//! Appending goes through [`Store::audit_append`], which holds one mutex for the whole
//! read-last/compute/insert step, so the chain never forks. `details` carries ids, counts and
//! codes only: never names, never record content.
//!
//! Kinds ([`AuditKind`]): `enrol`, `token_revoke`, `staff_revoke`, `sync`, `access_change`,
//! `refused`, `admin`, `demo_load`, `read`, `export`.

use crate::store::{Store, StoreError};
use casenote_protocol::{DeviceId, StaffId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The sled tree that holds the audit log.
pub const TREE: &str = "audit";

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an audit entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A device was enrolled (a token issued).
    Enrol,
    /// A device's token was revoked.
    TokenRevoke,
    /// A member of staff and all their devices were revoked.
    StaffRevoke,
    /// A device synced: what it pushed and pulled, evictions, its clock offset.
    Sync,
    /// Who may see what changed (case teams, staff teams, restricted access lists).
    AccessChange,
    /// A request or a pushed document was refused (401, forbidden, forged_author).
    Refused,
    /// A directory change (org, team or staff added).
    Admin,
    /// The demo was loaded.
    DemoLoad,
    /// A record was read outside sync (a document's history).
    Read,
    /// A person's record was exported by an administrator.
    Export,
    /// A device asked for the escrowed key of a device store (its own, or a wiped store's).
    KeyEscrow,
}

impl AuditKind {
    /// The kind as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Enrol => "enrol",
            AuditKind::TokenRevoke => "token_revoke",
            AuditKind::StaffRevoke => "staff_revoke",
            AuditKind::Sync => "sync",
            AuditKind::AccessChange => "access_change",
            AuditKind::Refused => "refused",
            AuditKind::Admin => "admin",
            AuditKind::DemoLoad => "demo_load",
            AuditKind::Read => "read",
            AuditKind::Export => "export",
            AuditKind::KeyEscrow => "key_escrow",
        }
    }
}

/// What a caller asks to be recorded; the store adds the sequence and the chain.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    pub at_ms: i64,
    pub kind: AuditKind,
    pub staff_id: Option<StaffId>,
    pub device_id: Option<DeviceId>,
    /// A JSON object of ids, counts and codes.
    pub details: serde_json::Value,
}

impl AuditRecord {
    pub fn new(kind: AuditKind, at_ms: i64, details: serde_json::Value) -> Self {
        AuditRecord {
            at_ms,
            kind,
            staff_id: None,
            device_id: None,
            details,
        }
    }

    pub fn staff(mut self, staff: StaffId) -> Self {
        self.staff_id = Some(staff);
        self
    }

    pub fn device(mut self, device: DeviceId) -> Self {
        self.device_id = Some(device);
        self
    }
}

/// One stored entry, exactly as its JSON value in the `audit` tree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at_ms: i64,
    pub kind: AuditKind,
    pub staff_id: Option<StaffId>,
    pub device_id: Option<DeviceId>,
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// The hashed part of an entry: everything but `hash`, in this field order.
#[derive(Serialize)]
struct Unsealed<'a> {
    seq: u64,
    at_ms: i64,
    kind: AuditKind,
    staff_id: &'a Option<StaffId>,
    device_id: &'a Option<DeviceId>,
    details: &'a serde_json::Value,
    prev_hash: &'a str,
}

fn entry_hash(e: &AuditEntry) -> String {
    let unsealed = Unsealed {
        seq: e.seq,
        at_ms: e.at_ms,
        kind: e.kind,
        staff_id: &e.staff_id,
        device_id: &e.device_id,
        details: &e.details,
        prev_hash: &e.prev_hash,
    };
    // serde_json without `preserve_order` keeps object keys sorted, so this is canonical.
    let canonical = serde_json::to_vec(&unsealed).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(e.prev_hash.as_bytes());
    h.update(&canonical);
    hex::encode(h.finalize())
}

/// Builds the entry that follows `prev_hash` as number `seq`.
pub fn seal(seq: u64, prev_hash: &str, record: AuditRecord) -> AuditEntry {
    let mut entry = AuditEntry {
        seq,
        at_ms: record.at_ms,
        kind: record.kind,
        staff_id: record.staff_id,
        device_id: record.device_id,
        details: record.details,
        prev_hash: prev_hash.to_string(),
        hash: String::new(),
    };
    entry.hash = entry_hash(&entry);
    entry
}

/// The stored bytes of an entry (the tree value).
pub fn encode(entry: &AuditEntry) -> Vec<u8> {
    serde_json::to_vec(entry).unwrap_or_default()
}

/// The first entry that does not verify, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log broken: entry {seq} is the first broken entry: {reason}")]
pub struct AuditBroken {
    pub seq: u64,
    pub reason: String,
}

/// Why verification could not finish.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Broken(#[from] AuditBroken),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Walks the whole log and checks every link; returns the number of entries.
pub fn verify(store: &dyn Store) -> Result<usize, VerifyError> {
    let mut expected_seq = 1u64;
    let mut prev = GENESIS_HASH.to_string();
    let mut broken: Option<AuditBroken> = None;
    store.audit_scan(&mut |key, value| {
        let fail = |reason: String| AuditBroken { seq: key, reason };
        if key != expected_seq {
            broken = Some(AuditBroken {
                seq: expected_seq,
                reason: format!("entry {expected_seq} is missing (next key is {key})"),
            });
            return false;
        }
        let entry: AuditEntry = match serde_json::from_slice(value) {
            Ok(e) => e,
            Err(e) => {
                broken = Some(fail(format!("the entry is not a valid audit entry: {e}")));
                return false;
            }
        };
        if entry.seq != key {
            broken = Some(fail(format!(
                "the entry says it is number {}, but is stored as {key}",
                entry.seq
            )));
            return false;
        }
        if entry.prev_hash != prev {
            broken = Some(fail(
                "its prev_hash is not the previous entry's hash".to_string(),
            ));
            return false;
        }
        if entry_hash(&entry) != entry.hash {
            broken = Some(fail(
                "its hash does not match its content (the entry was changed)".to_string(),
            ));
            return false;
        }
        prev = entry.hash;
        expected_seq += 1;
        true
    })?;
    match broken {
        Some(b) => Err(b.into()),
        None => Ok((expected_seq - 1) as usize),
    }
}

/// The last `limit` entries (all with `None`), oldest first. Entries that do not parse are
/// skipped here; [`verify`] reports them.
pub fn entries(store: &dyn Store, limit: Option<usize>) -> Result<Vec<AuditEntry>, StoreError> {
    let mut all: std::collections::VecDeque<AuditEntry> = std::collections::VecDeque::new();
    store.audit_scan(&mut |_, value| {
        if let Ok(e) = serde_json::from_slice::<AuditEntry>(value) {
            all.push_back(e);
            if let Some(n) = limit {
                while all.len() > n {
                    all.pop_front();
                }
            }
        }
        true
    })?;
    Ok(all.into_iter().collect())
}

/// `audit show`: one line per entry, or a JSON array with `json`.
pub fn render(entries: &[AuditEntry], json: bool) -> String {
    if json {
        return serde_json::to_string(entries).unwrap_or_else(|_| "[]".into());
    }
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    entries
        .iter()
        .map(|e| {
            format!(
                "{:>6}  {}  {:<13}  staff={}  device={}  {}",
                e.seq,
                e.at_ms,
                e.kind.as_str(),
                opt(e.staff_id.map(|s| s.to_string())),
                opt(e.device_id.map(|d| d.to_string())),
                e.details
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Appends `record`, logging instead of failing: used where an audit failure must not turn a
/// refusal into a different answer (the 401 path). Everything else propagates the error.
pub fn append_or_log(store: &dyn Store, record: AuditRecord) {
    if let Err(e) = store.audit_append(record) {
        tracing::error!(error = %e, "could not append to the audit log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_chain_of_entries_verifies_and_a_changed_byte_names_its_entry() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = crate::store::open(dir.path()).unwrap();
            for i in 0..5 {
                store
                    .audit_append(AuditRecord::new(
                        AuditKind::Admin,
                        1000 + i,
                        json!({"action": "org_add", "n": i}),
                    ))
                    .unwrap();
            }
            assert_eq!(verify(&*store).unwrap(), 5);
            let shown = entries(&*store, Some(2)).unwrap();
            assert_eq!(shown.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
            store.flush().unwrap();
        }
        // Tamper with entry 3 the way an e2e test would: open sled directly.
        {
            let db = sled::open(dir.path()).unwrap();
            let tree = db.open_tree(TREE).unwrap();
            let key = 3u64.to_be_bytes();
            let value = String::from_utf8(tree.get(key).unwrap().unwrap().to_vec()).unwrap();
            let changed = value.replace("\"n\":2", "\"n\":7");
            assert_ne!(value, changed);
            tree.insert(key, changed.as_bytes()).unwrap();
            db.flush().unwrap();
        }
        let store = crate::store::open(dir.path()).unwrap();
        let err = verify(&*store).unwrap_err();
        match err {
            VerifyError::Broken(b) => assert_eq!(b.seq, 3, "{b}"),
            other => panic!("{other}"),
        }
    }
}
