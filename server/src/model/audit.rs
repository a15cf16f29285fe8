//! Audit entries and their hash chain, as pure functions: what an entry records, how it is
//! sealed into the chain, how it is stored, and the check of a sequence of stored entries. No I/O:
//! appending goes through a store transaction and verifying over a store is [`crate::audit`]'s.
//!
//! An entry is stored under its sequence number (the first is 1, no gaps) as one UTF-8 JSON
//! object ([`AuditEntry`]):
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
//! the next entry's `prev_hash`. Cutting entries off the end is not detectable from the chain
//! alone: see [`crate::audit::verify_anchored`]. `details` carries ids, counts and codes only:
//! never names, never record content.

use casenote_protocol::{DeviceId, StaffId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
    /// A member of staff viewed a record on a device (shown, exported), reported at the device's
    /// next sync: ids, the kind of view and the device's clock only.
    DeviceView,
    /// A subject access request was opened, or fulfilled, by an administrator.
    SubjectAccess,
    /// A record's retention changed: classified, closed, reopened, held, released, approved for
    /// disposal, disposed of ([`crate::retention`]).
    Retention,
    /// A note filed on the wrong person was moved (one entry at each end: ids and hashes).
    Misfiled,
    /// Break-glass on a sealed section: a grant (ids, the reason's category and the hash of its
    /// text, never the text), its lapse, the IG lead's review.
    BreakGlass,
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
            AuditKind::DeviceView => "device_view",
            AuditKind::SubjectAccess => "subject_access",
            AuditKind::Retention => "retention",
            AuditKind::Misfiled => "misfiled",
            AuditKind::BreakGlass => "break_glass",
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

/// Who did an administrative act (a directory change, an enrolment, a revocation, an access
/// change), as its audit entry records it under `details.by`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum By {
    /// `casenote-server admin ...` (or `export`, `demo`) run on the server's host: whoever can
    /// run it there, which the server cannot tell apart.
    Cli,
    /// A member of staff, from one of their devices (kept for entries written that way).
    Staff {
        staff_id: StaffId,
        device_id: DeviceId,
    },
    /// The holder of an admin token, through the admin API (`/v1/admin/...`): the token's id,
    /// never its name or the token ([`super::directory::AdminToken`]).
    Admin { admin_id: uuid::Uuid },
}

impl AuditRecord {
    /// This record with `by` in its details (which must be a JSON object).
    pub fn by(mut self, by: By) -> Self {
        if let Some(map) = self.details.as_object_mut() {
            map.insert(
                "by".into(),
                serde_json::to_value(by).unwrap_or(serde_json::Value::Null),
            );
        }
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

/// The chain check, fed one stored entry at a time in key order (a store hands them out by
/// scanning, so the check never holds the whole log).
#[derive(Clone, Debug)]
pub struct ChainCheck {
    expected_seq: u64,
    prev: String,
}

impl Default for ChainCheck {
    fn default() -> Self {
        ChainCheck {
            expected_seq: 1,
            prev: GENESIS_HASH.to_string(),
        }
    }
}

impl ChainCheck {
    /// Checks the entry stored under `key` as `value` against the ones before it.
    pub fn next(&mut self, key: u64, value: &[u8]) -> Result<(), AuditBroken> {
        let fail = |reason: String| AuditBroken { seq: key, reason };
        if key != self.expected_seq {
            return Err(AuditBroken {
                seq: self.expected_seq,
                reason: format!("entry {} is missing (next key is {key})", self.expected_seq),
            });
        }
        let entry: AuditEntry = serde_json::from_slice(value)
            .map_err(|e| fail(format!("the entry is not a valid audit entry: {e}")))?;
        if entry.seq != key {
            return Err(fail(format!(
                "the entry says it is number {}, but is stored as {key}",
                entry.seq
            )));
        }
        if entry.prev_hash != self.prev {
            return Err(fail(
                "its prev_hash is not the previous entry's hash".to_string(),
            ));
        }
        if entry_hash(&entry) != entry.hash {
            return Err(fail(
                "its hash does not match its content (the entry was changed)".to_string(),
            ));
        }
        self.prev = entry.hash;
        self.expected_seq += 1;
        Ok(())
    }

    /// How many entries checked out so far.
    pub fn count(&self) -> usize {
        (self.expected_seq - 1) as usize
    }
}

/// The chain check and its anchor: the log must also reach the entry the store last acknowledged
/// (seq, hash), kept outside the log, so that a log cut short is found too, which the chain alone
/// cannot show. Fed like [`ChainCheck`]; [`AnchoredCheck::finish`] gives the verdict.
#[derive(Clone, Debug, Default)]
pub struct AnchoredCheck {
    chain: ChainCheck,
    anchor: Option<(u64, String)>,
    /// The stored hash of the anchored entry, once the scan passed it.
    at_anchor: Option<String>,
    broken: Option<AuditBroken>,
}

impl AnchoredCheck {
    pub fn new(anchor: Option<(u64, String)>) -> Self {
        AnchoredCheck {
            anchor,
            ..AnchoredCheck::default()
        }
    }

    /// Feeds one stored entry; false once the chain broke (stop scanning).
    pub fn visit(&mut self, key: u64, value: &[u8]) -> bool {
        match self.chain.next(key, value) {
            Ok(()) => {
                if self.anchor.as_ref().is_some_and(|(seq, _)| *seq == key) {
                    self.at_anchor = Some(self.chain.prev.clone());
                }
                true
            }
            Err(b) => {
                self.broken = Some(b);
                false
            }
        }
    }

    /// The number of entries, or the first broken one.
    pub fn finish(self) -> Result<usize, AuditBroken> {
        if let Some(b) = self.broken {
            return Err(b);
        }
        let n = self.chain.count();
        let Some((seq, hash)) = self.anchor else {
            return Ok(n);
        };
        if seq > n as u64 {
            return Err(AuditBroken {
                seq: n as u64 + 1,
                reason: format!(
                    "the log ends at entry {n}, but entries up to {seq} were acknowledged (it was cut short)"
                ),
            });
        }
        if seq > 0 && self.at_anchor.as_deref() != Some(hash.as_str()) {
            return Err(AuditBroken {
                seq,
                reason: "it is not the entry acknowledged there (its hash differs)".into(),
            });
        }
        Ok(n)
    }
}

/// Checks a whole sequence of stored entries (key, value) in key order; returns how many there
/// are.
pub fn check_chain<'a>(
    entries: impl IntoIterator<Item = (u64, &'a [u8])>,
) -> Result<usize, AuditBroken> {
    let mut check = ChainCheck::default();
    for (key, value) in entries {
        check.next(key, value)?;
    }
    Ok(check.count())
}

/// The hash of a stored entry, read without parsing its details (the chain's head, read at
/// every append).
pub fn stored_hash(value: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct HashOnly {
        hash: String,
    }
    serde_json::from_slice::<HashOnly>(value)
        .ok()
        .map(|h| h.hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: u64) -> Vec<(u64, Vec<u8>)> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let record =
                    AuditRecord::new(AuditKind::Admin, 1_000, json!({"action": "x", "n": seq}));
                let entry = seal(seq, &prev, record);
                prev = entry.hash.clone();
                (seq, encode(&entry))
            })
            .collect()
    }

    fn check(entries: &[(u64, Vec<u8>)]) -> Result<usize, AuditBroken> {
        check_chain(entries.iter().map(|(k, v)| (*k, v.as_slice())))
    }

    #[test]
    fn a_chain_checks_out_and_a_changed_removed_or_reordered_entry_is_named() {
        let good = chain(4);
        assert_eq!(check(&good).unwrap(), 4);
        assert_eq!(
            stored_hash(&good[3].1),
            Some(
                serde_json::from_slice::<AuditEntry>(&good[3].1)
                    .unwrap()
                    .hash
            )
        );

        let mut changed = good.clone();
        changed[2].1 = String::from_utf8(changed[2].1.clone())
            .unwrap()
            .replace("\"n\":3", "\"n\":7")
            .into_bytes();
        assert_eq!(check(&changed).unwrap_err().seq, 3);

        let mut removed = good.clone();
        removed.remove(1);
        let err = check(&removed).unwrap_err();
        assert_eq!(err.seq, 2, "{err}");

        let mut swapped = good.clone();
        let (a, b) = (swapped[1].1.clone(), swapped[2].1.clone());
        swapped[1].1 = b;
        swapped[2].1 = a;
        assert_eq!(check(&swapped).unwrap_err().seq, 2);
    }
}
