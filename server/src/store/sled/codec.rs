//! How the sled backend lays its keys and values out: CBOR values, big-endian sequence keys,
//! composite id keys, the names of `meta` values, and sled's errors turned into the contract's
//! [`StoreError`]. Shared by the transaction ([`super::txn`]), the open-time checks and `verify`.

use crate::store::StoreError;
use casenote_protocol::wire::Hash;
use casenote_protocol::DocId;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// `meta`: the global access epoch, a u64 big-endian.
pub(super) const ACCESS_EPOCH_KEY: &str = "access_epoch";
/// `meta`: the log id, 16 bytes (a uuid v4).
pub(super) const LOG_ID_KEY: &str = "log_id";
/// `meta`: set once the indexes were built for a store written before they existed.
pub(super) const INDEX_KEY: &str = "index_v1";
/// `meta`: set once the log is in the current layout (with its hash chain); its value is the
/// layout.
pub(super) const LOG_LAYOUT_KEY: &str = "log_layout";
pub(super) const LOG_LAYOUT: u8 = 2;
/// `meta`: while an older store's chain is being built, the last sequence rewritten.
pub(super) const CHAIN_BUILT_KEY: &str = "chain_built";
/// `meta`: the flush generation, written by every flush just before sled's flush.
pub(super) const FLUSH_GEN_KEY: &str = "flush_gen";
/// `meta`: set once the store has had a high-water mark: from then on a missing mark file is
/// damage.
pub(super) const MARKED_KEY: &str = "marked";

impl From<sled::Error> for StoreError {
    /// sled's error as the contract's: its lock held by another process is found where sled is
    /// opened (`Sled::open`). An I/O error means sled can no longer write (sled keeps the first
    /// one its background flusher met and returns it from every later call, reads included):
    /// `Full` when the disk is full, else `Unwritable`, so a request is refused with a code and
    /// the store, told by the write that meets it, reopens once it can (`durable.rs`).
    /// Everything else is the backend's failure.
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
                StoreError::Full(format!("the store's disk is full ({io})"))
            }
            sled::Error::Io(io) => {
                StoreError::Unwritable(format!("the store failed a write ({io})"))
            }
            e => StoreError::Backend(e.to_string()),
        }
    }
}

pub(super) fn enc<T: Serialize>(value: &T) -> Vec<u8> {
    casenote_protocol::wire::encode(value)
}

pub(super) fn dec<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    ciborium::de::from_reader(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// `hashes` and `quarantine` keys: doc id (16) ‖ change hash (32).
pub(super) fn hash_key(doc: DocId, hash: &Hash) -> [u8; 48] {
    let mut key = [0u8; 48];
    key[..16].copy_from_slice(doc.as_bytes());
    key[16..].copy_from_slice(&hash.0);
    key
}

/// Index keys: one id (16) ‖ another (16).
pub(super) fn pair_key(a: &[u8; 16], b: &[u8; 16]) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(a);
    key[16..].copy_from_slice(b);
    key
}

/// A u64 stored big-endian (sequence keys, counters).
pub(super) fn seq_from(bytes: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("a sequence key is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(arr))
}

pub(super) fn escrow_key(v: &[u8]) -> Result<[u8; 32], StoreError> {
    v.try_into()
        .map_err(|_| StoreError::Corrupt("an escrowed key is not 32 bytes".into()))
}

pub(super) fn hex32(hex_str: &str) -> Result<[u8; 32], StoreError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut out)
        .map_err(|_| StoreError::Corrupt("an audit hash is not 32 bytes of hex".into()))?;
    Ok(out)
}

pub(super) fn get<T: DeserializeOwned>(
    tree: &sled::Tree,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    tree.get(key)?.map(|v| dec(&v)).transpose()
}

pub(super) fn all<T: DeserializeOwned>(tree: &sled::Tree) -> Result<Vec<T>, StoreError> {
    tree.iter().values().map(|v| dec(&v?)).collect()
}
