//! The records of the case log and what the server keeps about each device: document headers
//! and heads, cases with their teams, actor bindings, each device's reconciliation state,
//! quarantined changes, and the change log's entries. Plain data, no I/O: the store keeps them
//! ([`crate::store`]), the domain decides with them.

use casenote_protocol::wire::Hash;
use casenote_protocol::{CaseId, DeviceId, DocId, DocKind, OrgId, Seq, StaffId, TeamId};
use serde::{Deserialize, Serialize};

/// The server-side header of a document: fixed when the server first stores it, never inside the
/// CRDT, so no client can change it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocHeader {
    pub doc_id: DocId,
    pub case_id: CaseId,
    pub kind: DocKind,
    pub owner_org: OrgId,
    /// For restricted kinds (`restricted`, `safeguarding`): the teams that may read and write it (in addition to the
    /// case's own team check). `None` for every other kind.
    pub access_teams: Option<Vec<TeamId>>,
    pub created_by: StaffId,
    pub created_ms: i64,
    /// For a restricted kind: sealed (staff on the case who are not on `access_teams` are told
    /// it exists and whom to ask, never its content) rather than hidden (not told). Fixed at
    /// creation; false for every record written before sealing existed.
    #[serde(default)]
    pub sealed: bool,
    /// Break-glass grants on a sealed section: each lets one member of staff read it until it
    /// expires ([`crate::break_glass`]). Lapsed ones are inert ([`crate::access::may_read`]
    /// checks the expiry) and are removed when the server notices them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Grant>,
}

/// One break-glass grant on a sealed section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub grant_id: uuid::Uuid,
    pub staff_id: StaffId,
    /// Server time (ms since the Unix epoch) when it ends.
    pub expires_ms: i64,
}

/// A document's header and the server's current heads for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocRecord {
    pub header: DocHeader,
    pub heads: Vec<Hash>,
    /// Operations in the document's history, as of `heads` (0 for a record written before the
    /// server counted them; the next accepted push counts them).
    #[serde(default)]
    pub ops: u64,
    /// For a note: the server's time when it received the filing; for an assessment, its
    /// completion. A filed note or completed assessment takes no change at all
    /// (`crate::validate::header_refusal`).
    #[serde(default)]
    pub filed_ms: Option<i64>,
}

/// A case: the person's record, and the teams around the person who may hold its documents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseRecord {
    pub case_id: CaseId,
    pub owner_org: OrgId,
    pub teams: Vec<TeamId>,
    pub created_ms: i64,
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
/// sent but has not confirmed yet (see [`crate::sync::reconcile`]).
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
    /// The `reconcile_id` the device last confirmed of this reconciliation (`None`: none yet). A
    /// device at cursor 0 that echoes it lost the response after it: it is sent the backfill
    /// again from `confirmed` rather than starting its first sync over.
    #[serde(default)]
    pub confirmed_id: Option<u64>,
    /// The access epoch the reconciliation was computed at.
    pub epoch: u64,
    /// Documents the device must delete (empty once a confirmation committed them).
    pub evictions: Vec<DocId>,
    /// Documents to backfill, in order (their history up to `upto`).
    pub missing: Vec<DocId>,
    /// The device's cursor when the reconciliation started: history above it comes from the log
    /// scan, history up to it from the backfill. For a first sync (cursor 0), the end of the log
    /// when it started: the response that completes the backfill moves the cursor there.
    pub upto: Seq,
    /// What the device has confirmed of the backfill.
    pub confirmed: BackfillPos,
    /// Where the last response's backfill ended (`index == missing.len()`: complete).
    pub sent: BackfillPos,
    /// The sealed sections the device is told of at `epoch` (stubs, sent with each response of
    /// the reconciliation). Empty in a reconciliation stored before sealing existed.
    #[serde(default)]
    pub sealed: Vec<DocId>,
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

/// One entry of the change log, as a scan sees it.
#[derive(Clone, Copy, Debug)]
pub struct LogEntry<'a> {
    pub seq: Seq,
    pub doc_id: DocId,
    pub hash: Hash,
    pub bytes: &'a [u8],
}

/// A log entry read into memory ([`crate::store::Txn::log_page`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedChange {
    pub seq: Seq,
    pub doc_id: DocId,
    pub hash: Hash,
    pub bytes: Vec<u8>,
}

/// The `prev` of the first link of the change log's hash chain.
pub const CHAIN_GENESIS: [u8; 32] = [0; 32];

/// The change log's hash chain, the same on every backend (so a store moved between backends
/// keeps its chain): `chain_n = sha256(chain_{n-1} ‖ n (u64 big-endian) ‖ doc ‖ hash)`.
pub fn chain_next(prev: &[u8; 32], seq: u64, doc: DocId, hash: &Hash) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(doc.as_bytes());
    h.update(hash.0);
    h.finalize().into()
}
