//! The sync envelope: one request, one response, CBOR on the wire.
//!
//! A device sends its cursor, its clock and, for each document with local edits, the server heads
//! it last saw (`base`) and the Automerge changes it made since, as Automerge's own compressed
//! change bytes. The server answers with what it stored, what the device lacks, and a new cursor.
//! See docs/design.md, "Sync".
//!
//! Decoding checks the size before parsing, the version before the shape, and every count after,
//! so nothing a peer sends can make the other side allocate beyond the limits in [`crate::limits`].

use crate::ids::{CaseId, DocId, DocKind, Seq, StaffId, TeamId};
use crate::limits;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The envelope version this build speaks. Bumped on any incompatible change of shape.
pub const PROTOCOL_VERSION: u16 = 1;

/// The media type of sync bodies.
pub const CBOR_MEDIA_TYPE: &str = "application/cbor";

/// A 32-byte Automerge change hash, as bytes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Hash {
    /// From a byte string (CBOR), read where the decoder holds it: a store's document record
    /// carries a head per writer who edited it since, and each used to be copied into a buffer
    /// of its own first. A sequence of 32 numbers (how JSON writes bytes) is taken too, one
    /// number at a time, so a longer one is refused without being read.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(HashVisitor)
    }
}

struct HashVisitor;

impl<'de> serde::de::Visitor<'de> for HashVisitor {
    type Value = Hash;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("32 bytes")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Hash, E> {
        let arr: [u8; 32] = v
            .try_into()
            .map_err(|_| E::invalid_length(v.len(), &self))?;
        Ok(Hash(arr))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Hash, E> {
        self.visit_bytes(v.as_bytes())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Hash, A::Error> {
        let mut arr = [0u8; 32];
        for (i, byte) in arr.iter_mut().enumerate() {
            *byte = seq
                .next_element()?
                .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
        }
        if seq.next_element::<u8>()?.is_some() {
            return Err(serde::de::Error::invalid_length(33, &self));
        }
        Ok(Hash(arr))
    }
}

impl From<automerge::ChangeHash> for Hash {
    fn from(h: automerge::ChangeHash) -> Self {
        Hash(h.0)
    }
}

impl From<Hash> for automerge::ChangeHash {
    fn from(h: Hash) -> Self {
        automerge::ChangeHash(h.0)
    }
}

/// Converts a list of Automerge heads to wire hashes.
pub fn to_wire_heads(heads: &[automerge::ChangeHash]) -> Vec<Hash> {
    heads.iter().copied().map(Hash::from).collect()
}

/// Converts wire hashes back to Automerge heads.
pub fn from_wire_heads(heads: &[Hash]) -> Vec<automerge::ChangeHash> {
    heads
        .iter()
        .copied()
        .map(automerge::ChangeHash::from)
        .collect()
}

/// Device to server: one sync cycle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub version: u16,
    /// The highest sequence this device has received; 0 for a new device.
    pub cursor: Seq,
    /// The device's clock (ms since the Unix epoch) when it built the request.
    pub device_clock_ms: i64,
    /// Documents with local edits the server has not acknowledged.
    pub docs: Vec<DocPush>,
    /// The server log the cursor counts in, as the last response named it (`None` for a new
    /// device). A server restored from backup gets a new log id, and answers a device still on
    /// the old one with `reset`.
    pub log_id: Option<uuid::Uuid>,
    /// The `reconcile_id` of the last response whose evictions and backfill this device has
    /// durably applied. Until the server sees it, it sends that reconciliation again, so a lost
    /// response never leaves evicted records on a device.
    pub confirmed_reconcile: Option<u64>,
    /// Views of records on the device (a case shown, exported) not yet in the server's audit
    /// chain, oldest first, at most [`limits::SYNC_VIEWS_MAX`]. Absent from older devices; an
    /// older server ignores it (and answers no `views_through`, so the device keeps them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub views: Vec<View>,
    /// The access lists of restricted sections this device created and pushes in this request
    /// for the first time, at most [`limits::PUSH_DOCS_MAX`]. The server reads one only when it
    /// creates the document; without one a new restricted section is hidden and restricted to
    /// its creator's teams, as before. Absent from older devices; an older server ignores it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restricted: Vec<NewRestricted>,
}

/// How a new restricted section (a `restricted` or `safeguarding` document) is to be kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRestricted {
    pub doc_id: DocId,
    /// The teams that may read and write it: each on the case, the creator's among them, at most
    /// [`limits::RESTRICTED_ACCESS_TEAMS_MAX`].
    pub teams: Vec<TeamId>,
    /// Sealed: staff on the case who are not on the list see that it exists and whom to ask.
    /// Hidden (false): they are not told it exists.
    pub sealed: bool,
}

/// A sealed section a device may not read: that it exists, its kind, when it was created and
/// whom to ask. Nothing of its content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedStub {
    pub doc_id: DocId,
    pub case_id: CaseId,
    pub kind: DocKind,
    /// The server's time when it created the section (ms since the Unix epoch).
    pub created_ms: i64,
    pub ask: AskWhom,
}

/// Whom to ask about a sealed section: its creator, by name, role and the team that holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AskWhom {
    pub staff_id: StaffId,
    pub name: String,
    pub role: String,
    pub team: String,
}

/// Why a member of staff breaks the glass on a sealed section: a fixed list, so that the IG
/// lead's review and the audit can count them; the free text says the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakGlassCategory {
    /// Someone's life or safety is at immediate risk.
    RiskToLife,
    /// A safeguarding concern that cannot wait for the section's team.
    SafeguardingEmergency,
    /// Urgent clinical or care decisions need what the section holds.
    UrgentCare,
    /// Out of hours, the section's team cannot be reached.
    OutOfHours,
}

impl BreakGlassCategory {
    /// Every category, in the order the CLI lists them.
    pub const ALL: [BreakGlassCategory; 4] = [
        BreakGlassCategory::RiskToLife,
        BreakGlassCategory::SafeguardingEmergency,
        BreakGlassCategory::UrgentCare,
        BreakGlassCategory::OutOfHours,
    ];

    /// The name on the wire and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakGlassCategory::RiskToLife => "risk_to_life",
            BreakGlassCategory::SafeguardingEmergency => "safeguarding_emergency",
            BreakGlassCategory::UrgentCare => "urgent_care",
            BreakGlassCategory::OutOfHours => "out_of_hours",
        }
    }
}

impl std::str::FromStr for BreakGlassCategory {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|c| c.as_str()).collect();
                format!(
                    "{s:?} is not a reason category; use one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Device to server (`POST /v1/break-glass`, JSON): urgent access to a sealed section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassRequest {
    pub doc_id: DocId,
    pub category: BreakGlassCategory,
    /// Why, in a few sentences (at most [`limits::BREAK_GLASS_REASON_BYTES_MAX`] bytes).
    pub reason: String,
}

/// Server to device: the grant, in force until `expires_ms` (server time); the section arrives
/// at the device's next sync and leaves it at the first sync after the grant ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassGranted {
    pub grant_id: uuid::Uuid,
    pub doc_id: DocId,
    pub expires_ms: i64,
}

/// One view of a record on a device, for the server's audit chain: ids, a kind and a time only,
/// never anything the record says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// A random id of the device store's count of views (a store made anew, by a sign-in to a
    /// new directory, starts a new count under a new id).
    pub stream: uuid::Uuid,
    /// The store's own count of its views, from 1: the server records each once, so a view
    /// re-sent after a lost answer is not audited twice.
    pub seq: u64,
    pub case_id: CaseId,
    pub kind: ViewKind,
    /// The device's clock when the record was shown (ms since the Unix epoch).
    pub device_time_ms: i64,
}

/// What a device did with a record it showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewKind {
    /// Shown as a page (`casenote show`, an app's case screen).
    Show,
    /// Given out whole as data (`show --json`, the bindings' `export`).
    Export,
    /// Its conflicting fields listed, with every value.
    Conflicts,
    /// Its alerts listed.
    Alerts,
    /// A kind a newer device sent that this build does not know: still audited.
    #[serde(other)]
    Other,
}

impl ViewKind {
    /// The kind as the audit entry and the CLI name it.
    pub fn as_str(self) -> &'static str {
        match self {
            ViewKind::Show => "show",
            ViewKind::Export => "export",
            ViewKind::Conflicts => "conflicts",
            ViewKind::Alerts => "alerts",
            ViewKind::Other => "other",
        }
    }
}

/// One document's local edits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocPush {
    pub doc_id: DocId,
    /// Header fields; used when the server first sees the document, checked after that.
    pub case_id: CaseId,
    pub kind: DocKind,
    /// The server heads this device last saw for the document (empty: none, send everything).
    pub base: Vec<Hash>,
    /// Automerge change bytes made since `base`, in causal order.
    pub changes: Vec<ByteBuf>,
}

/// Server to device: the answer to one sync cycle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub version: u16,
    /// Resume from here next time.
    pub cursor: Seq,
    /// True when the response was cut at the page limit: sync again at once with the new cursor.
    pub more: bool,
    /// The server's clock when it answered (ms since the Unix epoch).
    pub server_time_ms: i64,
    /// Pushed documents the server stored durably, with its heads after storing.
    pub acks: Vec<DocAck>,
    /// Changes this device lacks, per document.
    pub docs: Vec<DocPull>,
    /// Documents whose base the server does not hold: re-send their whole history.
    pub need_full_history: Vec<DocId>,
    /// Pushed documents refused, with the reason; nothing of them was stored.
    pub rejections: Vec<Rejection>,
    /// Documents this device may no longer hold: delete them.
    pub evictions: Vec<DocId>,
    /// The server's log id; the device keeps it with its cursor and sends it back.
    pub log_id: uuid::Uuid,
    /// The device's log id is not the server's (the server was restored from backup): nothing
    /// else in this response applies. The device forgets its cursor and every base, marks every
    /// document it holds as unsent, and syncs again, re-sending everything (the server drops what
    /// it already has).
    pub reset: bool,
    /// Set when this response carries an access reconciliation (evictions or backfill after the
    /// device's access changed). The device echoes it as `confirmed_reconcile` once applied.
    pub reconcile_id: Option<u64>,
    /// The offline lease the server sets: how long the device may go without reaching it before
    /// it locks, and before it wipes itself. Absent from older servers (the device keeps its
    /// defaults).
    #[serde(default)]
    pub lease: Option<Lease>,
    /// The highest view `seq` of this device the server's audit chain holds (the views of the
    /// request included): the device drops its queued views up to it. Absent from older servers
    /// and from a reset answer (the device keeps its views).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub views_through: Option<u64>,
    /// Sealed sections of cases this device may read that it may not read itself: a stub each,
    /// at most [`limits::SYNC_SEALED_STUBS_MAX`]. The device keeps them until it is given the
    /// section or loses the case. Absent from older servers; an older device ignores it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sealed: Vec<SealedStub>,
}

/// How long a device may stay out of touch with the server (ms), counted from its last contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub lock_after_ms: i64,
    pub wipe_after_ms: i64,
}

impl Default for Lease {
    fn default() -> Self {
        Self {
            lock_after_ms: crate::limits::DEVICE_LOCK_AFTER_MS_DEFAULT,
            wipe_after_ms: crate::limits::DEVICE_WIPE_AFTER_MS_DEFAULT,
        }
    }
}

/// The server stored a pushed document's changes (or already had them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocAck {
    pub doc_id: DocId,
    pub heads: Vec<Hash>,
    /// Changes new to the server.
    pub stored: u32,
    /// Changes the server already had (a re-send; harmless).
    pub duplicates: u32,
}

/// Changes for one document that the device lacks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocPull {
    pub doc_id: DocId,
    pub case_id: CaseId,
    pub kind: DocKind,
    pub changes: Vec<ByteBuf>,
    /// The server's heads for the document when it answered.
    pub heads: Vec<Hash>,
}

/// A pushed document that was refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub doc_id: DocId,
    pub code: crate::ErrorCode,
    pub reason: String,
}

/// Who the bearer of a token is, as `GET /v1/whoami` answers (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    pub staff_id: crate::StaffId,
    pub device_id: crate::DeviceId,
    pub name: String,
    pub role: String,
    pub org: String,
    pub teams: Vec<TeamRef>,
}

/// A team as the device sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamRef {
    pub team_id: crate::TeamId,
    pub name: String,
}

/// The wrap key of a device store, as `POST /v1/escrow/{device_id}` answers (JSON). The device
/// keeps its store's data key sealed under it, so that a store its offline lease wiped comes back
/// when the same member of staff signs in again, and never once the device is revoked (the
/// server destroys the key). Never logged: `Debug` leaves the key out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowKey {
    pub device_id: crate::DeviceId,
    /// [`limits::ESCROW_KEY_BYTES`] random bytes, lower-case hex.
    pub wrap_key: String,
    /// The server's clock when it answered (ms since the Unix epoch): signing in is contact.
    pub server_time_ms: i64,
}

impl std::fmt::Debug for EscrowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EscrowKey")
            .field("device_id", &self.device_id)
            .field("server_time_ms", &self.server_time_ms)
            .finish_non_exhaustive()
    }
}

/// One change in a document's history, as `GET /v1/history/{doc_id}` answers (a JSON array in
/// server order, which is the order the server received the changes). Attribution comes from the
/// server's binding of the change's actor to the staff member and device that first used it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The server's sequence number of the change.
    pub seq: u64,
    /// The change hash, lower-case hex.
    pub hash: String,
    pub staff_id: Option<crate::StaffId>,
    pub staff_name: Option<String>,
    pub role: Option<String>,
    /// The staff member's organisation (its name).
    pub org: Option<String>,
    pub device_id: Option<crate::DeviceId>,
    /// The server's clock when it received the change (`None` for changes stored before the
    /// server kept it).
    pub received_at_ms: Option<i64>,
    /// The device's clock in the change (Automerge's change timestamp; may be 0 or wrong).
    pub device_time_ms: i64,
    /// How many operations the change holds.
    pub ops: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("body is {len} bytes; the limit is {max}")]
    TooLarge { len: usize, max: usize },
    #[error("body is not a valid casenote envelope: {0}")]
    Malformed(String),
    #[error("envelope version {0} is not supported (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u16),
    #[error("{what} is {len}; the limit is {max}")]
    OverLimit {
        what: &'static str,
        len: usize,
        max: usize,
    },
}

impl DecodeError {
    /// The stable code a server answers this error with.
    pub fn code(&self) -> crate::ErrorCode {
        match self {
            DecodeError::TooLarge { .. } => crate::ErrorCode::BodyTooLarge,
            DecodeError::Malformed(_) => crate::ErrorCode::MalformedBody,
            DecodeError::UnsupportedVersion(_) => crate::ErrorCode::UnsupportedVersion,
            DecodeError::OverLimit { .. } => crate::ErrorCode::LimitExceeded,
        }
    }
}

/// Encodes any envelope as CBOR.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail, and our types serialise infallibly.
    ciborium::into_writer(value, &mut out).expect("CBOR encoding into a Vec cannot fail");
    out
}

#[derive(Deserialize)]
struct VersionProbe {
    version: u16,
}

fn decode_raw<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    ciborium::de::from_reader_with_recursion_limit(bytes, limits::CBOR_DEPTH_MAX)
        .map_err(|e| DecodeError::Malformed(e.to_string()))
}

fn decode_versioned<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > limits::REQUEST_BYTES_MAX {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: limits::REQUEST_BYTES_MAX,
        });
    }
    let probe: VersionProbe = decode_raw(bytes)?;
    if probe.version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(probe.version));
    }
    decode_raw(bytes)
}

fn check(what: &'static str, len: usize, max: usize) -> Result<(), DecodeError> {
    if len > max {
        Err(DecodeError::OverLimit { what, len, max })
    } else {
        Ok(())
    }
}

/// Decodes and checks a sync request against every limit.
pub fn decode_request(bytes: &[u8]) -> Result<SyncRequest, DecodeError> {
    let req: SyncRequest = decode_versioned(bytes)?;
    check("documents pushed", req.docs.len(), limits::PUSH_DOCS_MAX)?;
    let changes: usize = req.docs.iter().map(|d| d.changes.len()).sum();
    check("changes pushed", changes, limits::PUSH_CHANGES_MAX)?;
    check("views", req.views.len(), limits::SYNC_VIEWS_MAX)?;
    check(
        "restricted access lists",
        req.restricted.len(),
        limits::PUSH_DOCS_MAX,
    )?;
    for r in &req.restricted {
        check(
            "teams on an access list",
            r.teams.len(),
            limits::RESTRICTED_ACCESS_TEAMS_MAX,
        )?;
    }
    for doc in &req.docs {
        check("base heads", doc.base.len(), limits::HEADS_MAX)?;
        for change in &doc.changes {
            check("one change's bytes", change.len(), limits::CHANGE_BYTES_MAX)?;
        }
    }
    Ok(req)
}

/// Decodes a sync response (the device side; the server is trusted for shape, not for size).
pub fn decode_response(bytes: &[u8]) -> Result<SyncResponse, DecodeError> {
    let resp: SyncResponse = decode_versioned(bytes)?;
    check(
        "sealed stubs",
        resp.sealed.len(),
        limits::SYNC_SEALED_STUBS_MAX,
    )?;
    for doc in &resp.docs {
        check("heads", doc.heads.len(), limits::HEADS_MAX)?;
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_hash() -> impl Strategy<Value = Hash> {
        any::<[u8; 32]>().prop_map(Hash)
    }

    #[test]
    fn a_hash_is_read_from_32_bytes_as_cbor_or_json_writes_them_and_from_nothing_else() {
        let h = Hash(std::array::from_fn(|i| i as u8 * 7));
        let cbor: Hash = ciborium::de::from_reader(encode(&h).as_slice()).unwrap();
        assert_eq!(cbor, h);
        let json: Hash = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(json, h);
        for len in [0, 31, 33, 4096] {
            let bytes = encode(&ByteBuf::from(vec![1u8; len]));
            let err = ciborium::de::from_reader::<Hash, _>(bytes.as_slice()).unwrap_err();
            assert!(err.to_string().contains("32 bytes"), "{len}: {err}");
            let numbers = serde_json::to_string(&vec![1u8; len]).unwrap();
            let err = serde_json::from_str::<Hash>(&numbers).unwrap_err();
            assert!(err.to_string().contains("32 bytes"), "{len}: {err}");
        }
        assert!(serde_json::from_str::<Hash>("[1, 2, 300]").is_err());
    }

    fn arb_push() -> impl Strategy<Value = DocPush> {
        (
            any::<u128>(),
            any::<u128>(),
            prop::sample::select(vec![
                DocKind::Case,
                DocKind::Note,
                DocKind::Plan,
                DocKind::Restricted,
            ]),
            prop::collection::vec(arb_hash(), 0..4),
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..4),
        )
            .prop_map(|(d, c, kind, base, changes)| DocPush {
                doc_id: DocId(uuid::Uuid::from_u128(d)),
                case_id: CaseId(uuid::Uuid::from_u128(c)),
                kind,
                base,
                changes: changes.into_iter().map(ByteBuf::from).collect(),
            })
    }

    proptest! {
        #[test]
        fn every_request_survives_an_encode_decode_round_trip(
            cursor in any::<u64>(),
            clock in any::<i64>(),
            docs in prop::collection::vec(arb_push(), 0..5),
        ) {
            let req = SyncRequest { version: PROTOCOL_VERSION, cursor: Seq(cursor), device_clock_ms: clock, docs, log_id: None, confirmed_reconcile: Some(cursor), views: Vec::new(), restricted: Vec::new() };
            prop_assert_eq!(decode_request(&encode(&req)).unwrap(), req);
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoders(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_request(&bytes);
            let _ = decode_response(&bytes);
        }

        #[test]
        fn every_truncation_of_a_valid_request_is_an_error(docs in prop::collection::vec(arb_push(), 1..3), cut in 0usize..1000) {
            let req = SyncRequest { version: PROTOCOL_VERSION, cursor: Seq(1), device_clock_ms: 0, docs, log_id: None, confirmed_reconcile: None, views: Vec::new(), restricted: Vec::new() };
            let bytes = encode(&req);
            let cut = cut % bytes.len();
            prop_assert!(decode_request(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn a_request_from_another_version_is_refused_by_version_not_by_shape() {
        let req = SyncRequest {
            version: 99,
            cursor: Seq(0),
            device_clock_ms: 0,
            docs: vec![],
            log_id: None,
            confirmed_reconcile: None,
            views: Vec::new(),
            restricted: Vec::new(),
        };
        assert_eq!(
            decode_request(&encode(&req)),
            Err(DecodeError::UnsupportedVersion(99))
        );
    }

    fn a_view(seq: u64) -> View {
        View {
            stream: uuid::Uuid::from_u128(7),
            seq,
            case_id: CaseId(uuid::Uuid::from_u128(9)),
            kind: ViewKind::Export,
            device_time_ms: 1_700_000_000_000,
        }
    }

    fn a_request(views: Vec<View>) -> SyncRequest {
        SyncRequest {
            version: PROTOCOL_VERSION,
            cursor: Seq(3),
            device_clock_ms: 0,
            docs: vec![],
            log_id: None,
            confirmed_reconcile: None,
            views,
            restricted: Vec::new(),
        }
    }

    #[test]
    fn views_travel_with_a_request_and_an_older_peer_reads_around_them() {
        let req = a_request(vec![a_view(1), a_view(2)]);
        assert_eq!(decode_request(&encode(&req)).unwrap(), req);
        // An older server's request type, without views, still decodes a newer device's request.
        #[derive(Deserialize)]
        struct Older {
            cursor: Seq,
            docs: Vec<DocPush>,
        }
        let older: Older = decode_raw(&encode(&req)).unwrap();
        assert_eq!((older.cursor, older.docs.len()), (Seq(3), 0));
        // A request without views (an older device's) decodes with none, and is encoded without
        // the field at all.
        let none = encode(&a_request(vec![]));
        assert_eq!(decode_request(&none).unwrap().views, vec![]);
        assert!(!none.windows(5).any(|w| w == b"views"));
    }

    #[test]
    fn access_lists_and_sealed_stubs_travel_and_older_peers_read_around_them() {
        let team = TeamId(uuid::Uuid::from_u128(5));
        let mut req = a_request(vec![]);
        req.restricted = vec![NewRestricted {
            doc_id: DocId(uuid::Uuid::from_u128(1)),
            teams: vec![team],
            sealed: true,
        }];
        assert_eq!(decode_request(&encode(&req)).unwrap(), req);
        // An older server's request type, without access lists, still decodes it.
        #[derive(Deserialize)]
        struct Older {
            cursor: Seq,
        }
        let older: Older = decode_raw(&encode(&req)).unwrap();
        assert_eq!(older.cursor, Seq(3));
        // A request without any is encoded without the field (an older device's is the same).
        assert!(!encode(&a_request(vec![]))
            .windows(10)
            .any(|w| w == b"restricted"));
        let stub = SealedStub {
            doc_id: DocId(uuid::Uuid::from_u128(1)),
            case_id: CaseId(uuid::Uuid::from_u128(2)),
            kind: DocKind::Safeguarding,
            created_ms: 7,
            ask: AskWhom {
                staff_id: StaffId(uuid::Uuid::from_u128(3)),
                name: "A. Person".into(),
                role: "social_worker".into(),
                team: "North".into(),
            },
        };
        let read: SealedStub = decode_raw(&encode(&stub)).unwrap();
        assert_eq!(read, stub);
    }

    #[test]
    fn an_access_list_longer_than_the_limit_is_refused_by_count() {
        let mut req = a_request(vec![]);
        req.restricted = vec![NewRestricted {
            doc_id: DocId(uuid::Uuid::from_u128(1)),
            teams: (0..=limits::RESTRICTED_ACCESS_TEAMS_MAX as u128)
                .map(|i| TeamId(uuid::Uuid::from_u128(i)))
                .collect(),
            sealed: false,
        }];
        assert!(matches!(
            decode_request(&encode(&req)),
            Err(DecodeError::OverLimit {
                what: "teams on an access list",
                ..
            })
        ));
    }

    #[test]
    fn a_reason_category_is_read_by_name_and_an_unknown_one_is_refused_with_the_list() {
        for c in BreakGlassCategory::ALL {
            assert_eq!(c.as_str().parse::<BreakGlassCategory>(), Ok(c));
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
        }
        assert_eq!(
            "risk-to-life".parse::<BreakGlassCategory>(),
            Ok(BreakGlassCategory::RiskToLife)
        );
        let err = "boredom".parse::<BreakGlassCategory>().unwrap_err();
        assert!(err.contains("out_of_hours"), "{err}");
    }

    #[test]
    fn a_view_kind_this_build_does_not_know_is_other_not_an_error() {
        #[derive(Serialize)]
        struct Newer {
            stream: uuid::Uuid,
            seq: u64,
            case_id: CaseId,
            kind: &'static str,
            device_time_ms: i64,
        }
        let v = a_view(1);
        let newer = Newer {
            stream: v.stream,
            seq: 1,
            case_id: v.case_id,
            kind: "printed",
            device_time_ms: 0,
        };
        let read: View = decode_raw(&encode(&newer)).unwrap();
        assert_eq!(read.kind, ViewKind::Other);
    }

    #[test]
    fn more_views_than_a_request_may_carry_are_refused_by_count() {
        let req = a_request(
            (1..=limits::SYNC_VIEWS_MAX as u64 + 1)
                .map(a_view)
                .collect(),
        );
        assert!(matches!(
            decode_request(&encode(&req)),
            Err(DecodeError::OverLimit { what: "views", .. })
        ));
    }

    #[test]
    fn a_body_over_the_limit_is_refused_before_parsing() {
        let bytes = vec![0u8; limits::REQUEST_BYTES_MAX + 1];
        assert!(matches!(
            decode_request(&bytes),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn too_many_documents_is_an_over_limit_error() {
        let doc = DocPush {
            doc_id: DocId(uuid::Uuid::nil()),
            case_id: CaseId(uuid::Uuid::nil()),
            kind: DocKind::Note,
            base: vec![],
            changes: vec![],
        };
        let req = SyncRequest {
            version: PROTOCOL_VERSION,
            cursor: Seq(0),
            device_clock_ms: 0,
            docs: vec![doc; limits::PUSH_DOCS_MAX + 1],
            log_id: None,
            confirmed_reconcile: None,
            views: Vec::new(),
            restricted: Vec::new(),
        };
        let err = decode_request(&encode(&req)).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::LimitExceeded);
    }

    #[test]
    fn more_changes_than_the_limit_over_all_documents_is_an_over_limit_error() {
        let doc = |n: usize| DocPush {
            doc_id: DocId(uuid::Uuid::nil()),
            case_id: CaseId(uuid::Uuid::nil()),
            kind: DocKind::Note,
            base: vec![],
            changes: vec![ByteBuf::from(vec![1u8]); n],
        };
        let half = limits::PUSH_CHANGES_MAX / 2;
        let req = |docs| SyncRequest {
            version: PROTOCOL_VERSION,
            cursor: Seq(0),
            device_clock_ms: 0,
            docs,
            log_id: None,
            confirmed_reconcile: None,
            views: Vec::new(),
            restricted: Vec::new(),
        };
        assert!(decode_request(&encode(&req(vec![doc(half), doc(half)]))).is_ok());
        let err = decode_request(&encode(&req(vec![doc(half), doc(half + 1)]))).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::LimitExceeded);
    }

    #[test]
    fn a_byte_string_claiming_four_gigabytes_is_malformed_not_an_allocation() {
        // {"version": 1, "docs": [{"changes": [bytes(2^32 - 1) with one byte present]}]}: the
        // decoder must fail on the missing bytes, not reserve 4 GiB up front.
        let mut bytes = vec![0xa2, 0x67];
        bytes.extend_from_slice(b"version");
        bytes.extend_from_slice(&[0x01, 0x64]);
        bytes.extend_from_slice(b"docs");
        bytes.extend_from_slice(&[0x81, 0xa1, 0x67]);
        bytes.extend_from_slice(b"changes");
        bytes.extend_from_slice(&[0x81, 0x5a, 0xff, 0xff, 0xff, 0xff, 0x00]);
        assert!(decode_request(&bytes).is_err());
    }
}

/// The version of [`LiveEvent`] this build speaks.
pub const LIVE_VERSION: u16 = 1;

/// One message from the server on the live channel (`GET /v1/live`, a WebSocket; each event is
/// one binary message holding this as CBOR). It means "the server holds changes up to `seq`;
/// sync": it carries no record content, so a device that misses one loses nothing (it syncs on
/// the next, or on reconnect).
///
/// The first event after the connection opens has an empty `docs` and the server's current
/// `seq`: a device whose cursor is below it should sync at once (it may have missed changes
/// while it was not connected). Every later event follows a sync that stored changes to
/// documents this device may read, and names them; an empty `docs` there means more than
/// [`limits::LIVE_EVENT_DOCS_MAX`] changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveEvent {
    pub version: u16,
    /// Every change up to this sequence is durable on the server.
    pub seq: Seq,
    /// The changed documents this device may read (empty: the hello, or too many to name).
    pub docs: Vec<DocId>,
}

/// The close reason the server gives a live connection that fell behind (it resyncs over HTTP).
pub const LIVE_CLOSE_LAGGED: &str = "lagged";
/// The close reason for a device whose token was revoked (it wipes its store on its next sync).
pub const LIVE_CLOSE_REVOKED: &str = "device_revoked";
/// The close reason for a connection that made room for a newer one of the same device (a
/// device holds at most `limits::LIVE_CONNECTIONS_PER_DEVICE_MAX`; it reconnects if it still
/// wants this one).
pub const LIVE_CLOSE_REPLACED: &str = "replaced";

/// Decodes a live event, checking its size, version and document count.
pub fn decode_live_event(bytes: &[u8]) -> Result<LiveEvent, DecodeError> {
    if bytes.len() > limits::LIVE_MESSAGE_BYTES_MAX {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: limits::LIVE_MESSAGE_BYTES_MAX,
        });
    }
    let probe: VersionProbe = decode_raw(bytes)?;
    if probe.version != LIVE_VERSION {
        return Err(DecodeError::UnsupportedVersion(probe.version));
    }
    let event: LiveEvent = decode_raw(bytes)?;
    check(
        "documents in a live event",
        event.docs.len(),
        limits::LIVE_EVENT_DOCS_MAX,
    )?;
    Ok(event)
}

#[cfg(test)]
mod live_tests {
    use super::*;

    #[test]
    fn a_live_event_with_the_most_documents_fits_in_one_message_and_round_trips() {
        let event = LiveEvent {
            version: LIVE_VERSION,
            seq: Seq(u64::MAX),
            docs: (0..limits::LIVE_EVENT_DOCS_MAX)
                .map(|i| DocId(uuid::Uuid::from_u128(u128::MAX - i as u128)))
                .collect(),
        };
        let bytes = encode(&event);
        assert!(
            bytes.len() <= limits::LIVE_MESSAGE_BYTES_MAX,
            "{}",
            bytes.len()
        );
        assert_eq!(decode_live_event(&bytes).unwrap(), event);
    }
}
