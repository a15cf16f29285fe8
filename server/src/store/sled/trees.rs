//! sled's side of the store: the handle and its trees ([`Sled`], named by [`T`]), the upgrades an
//! older store gets at its first open, and the change log's value layout with its hash chain.
//!
//! A `log` value is doc id (16) ‖ change hash (32) ‖ chain (32) ‖ change bytes, where
//! `chain_n = sha256(chain_{n-1} ‖ n ‖ doc ‖ hash)` from 32 zero bytes; the chain at the tail
//! vouches for every entry before it. A store written before the chain existed has the shorter
//! layout without it; [`Sled::build_chain`] rewrites it once, at its first open.

use super::codec::{
    dec, pair_key, seq_from, CHAIN_BUILT_KEY, INDEX_KEY, LOG_ID_KEY, LOG_LAYOUT, LOG_LAYOUT_KEY,
};
use super::directory::Directory;
use crate::model::audit::{self, stored_hash};
use crate::model::{CaseRecord, DocRecord};
use crate::store::StoreError;
use casenote_protocol::limits;
use casenote_protocol::wire::Hash;
use casenote_protocol::DocId;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use std::path::Path;

/// The trees, by name, for code that handles any of them (the transaction's overlay).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum T {
    Log,
    Hashes,
    Docs,
    Cases,
    Orgs,
    Teams,
    Staff,
    Devices,
    Tokens,
    Meta,
    CaseDocs,
    TeamCases,
    Actors,
    DeviceDocs,
    DeviceSync,
    Received,
    Quarantine,
    Audit,
    Escrow,
}

/// How many trees there are ([`T`]).
pub(super) const TREES: usize = 19;

impl T {
    pub(super) const ALL: [T; TREES] = [
        T::Log,
        T::Hashes,
        T::Docs,
        T::Cases,
        T::Orgs,
        T::Teams,
        T::Staff,
        T::Devices,
        T::Tokens,
        T::Meta,
        T::CaseDocs,
        T::TeamCases,
        T::Actors,
        T::DeviceDocs,
        T::DeviceSync,
        T::Received,
        T::Quarantine,
        T::Audit,
        T::Escrow,
    ];
}

/// sled's handle and its trees. Replaced as a whole when the store reopens after sled failed a
/// write (sled refuses every write after one I/O error until it is opened again).
pub(super) struct Sled {
    pub(super) db: sled::Db,
    pub(super) log: sled::Tree,
    pub(super) hashes: sled::Tree,
    pub(super) docs: sled::Tree,
    pub(super) cases: sled::Tree,
    pub(super) orgs: sled::Tree,
    pub(super) teams: sled::Tree,
    pub(super) staff: sled::Tree,
    pub(super) devices: sled::Tree,
    pub(super) tokens: sled::Tree,
    pub(super) meta: sled::Tree,
    pub(super) case_docs: sled::Tree,
    pub(super) team_cases: sled::Tree,
    pub(super) actors: sled::Tree,
    pub(super) device_docs: sled::Tree,
    pub(super) device_sync: sled::Tree,
    pub(super) received: sled::Tree,
    pub(super) quarantine: sled::Tree,
    pub(super) audit: sled::Tree,
    /// device_id (16) → the device store's wrap key (32 bytes, `crate::escrow`).
    pub(super) escrow: sled::Tree,
    /// Credentials read lately, valid until a commit changes them ([`Directory`]).
    pub(super) directory: Directory,
}

impl Sled {
    /// Opens sled in `dir`; a directory held by another process is [`StoreError::Locked`].
    pub(super) fn open(dir: &Path) -> Result<Sled, StoreError> {
        let db = open_sled(dir).map_err(|e| match e {
            sled::Error::Io(ref io) if io.to_string().contains("could not acquire lock") => {
                StoreError::Locked(format!("the data directory {}", dir.display()))
            }
            other => StoreError::from(other),
        })?;
        let tree = |name: &str| db.open_tree(name);
        Ok(Sled {
            log: tree("log")?,
            hashes: tree("hashes")?,
            docs: tree("docs")?,
            cases: tree("cases")?,
            orgs: tree("orgs")?,
            teams: tree("teams")?,
            staff: tree("staff")?,
            devices: tree("devices")?,
            tokens: tree("tokens")?,
            meta: tree("meta")?,
            case_docs: tree("case_docs")?,
            team_cases: tree("team_cases")?,
            actors: tree("actors")?,
            device_docs: tree("device_docs")?,
            device_sync: tree("device_sync")?,
            received: tree("received")?,
            quarantine: tree("quarantine")?,
            audit: tree(AUDIT_TREE)?,
            escrow: tree("escrow")?,
            directory: Directory::default(),
            db,
        })
    }

    /// The tree named `t`.
    pub(super) fn tree(&self, t: T) -> &sled::Tree {
        match t {
            T::Log => &self.log,
            T::Hashes => &self.hashes,
            T::Docs => &self.docs,
            T::Cases => &self.cases,
            T::Orgs => &self.orgs,
            T::Teams => &self.teams,
            T::Staff => &self.staff,
            T::Devices => &self.devices,
            T::Tokens => &self.tokens,
            T::Meta => &self.meta,
            T::CaseDocs => &self.case_docs,
            T::TeamCases => &self.team_cases,
            T::Actors => &self.actors,
            T::DeviceDocs => &self.device_docs,
            T::DeviceSync => &self.device_sync,
            T::Received => &self.received,
            T::Quarantine => &self.quarantine,
            T::Audit => &self.audit,
            T::Escrow => &self.escrow,
        }
    }

    /// The last change's sequence and the chain at it (`(0, genesis)` for an empty log).
    pub(super) fn tip(&self) -> Result<Tip, StoreError> {
        match self.log.last()? {
            Some((k, v)) => Ok(Tip {
                seq: seq_from(&k)?,
                chain: parse_log(&v)?.chain,
            }),
            None => Ok(Tip::default()),
        }
    }

    /// The last audit entry's sequence and hash (`(0, genesis)` for an empty audit log).
    pub(super) fn audit_tail(&self) -> Result<(u64, String), StoreError> {
        match self.audit.last()? {
            Some((k, v)) => {
                let seq = seq_from(&k)?;
                let hash = stored_hash(&v).ok_or_else(|| {
                    StoreError::Corrupt(format!("audit entry {seq} has no readable hash"))
                })?;
                Ok((seq, hash))
            }
            None => Ok((0, audit::GENESIS_HASH.to_string())),
        }
    }

    pub(super) fn meta_u64(&self, key: &str) -> Result<u64, StoreError> {
        match self.meta.get(key)? {
            Some(v) => seq_from(&v),
            None => Ok(0),
        }
    }

    pub(super) fn log_id(&self) -> Result<Option<uuid::Uuid>, StoreError> {
        self.meta
            .get(LOG_ID_KEY)?
            .map(|v| {
                uuid::Uuid::from_slice(&v)
                    .map_err(|_| StoreError::Corrupt("the stored log id is not 16 bytes".into()))
            })
            .transpose()
    }

    /// Gives a store written before the log's hash chain existed its chain, once: every entry is
    /// rewritten in the current layout, a bounded number of bytes per transaction, with the
    /// progress kept in `meta` so that a crash part way resumes where it stopped.
    pub(super) fn build_chain(&self) -> Result<(), StoreError> {
        if self.meta.contains_key(LOG_LAYOUT_KEY)? {
            return Ok(());
        }
        let mut done = self.meta_u64(CHAIN_BUILT_KEY)?;
        let mut prev = match done {
            0 => CHAIN_GENESIS,
            n => match self.log.get(n.to_be_bytes())? {
                Some(v) => parse_log(&v)?.chain,
                None => return Err(StoreError::Corrupt(format!("log entry {n} vanished"))),
            },
        };
        loop {
            let mut batch: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut bytes = 0usize;
            for item in self.log.range((done + 1).to_be_bytes()..) {
                let (k, v) = item?;
                let seq = seq_from(&k)?;
                if v.len() < OLD_LOG_HEADER {
                    return Err(StoreError::Corrupt(format!("log entry {seq} is too short")));
                }
                let (doc, hash) = (
                    DocId::from_slice(&v[..16]).ok_or_else(|| corrupt_doc(seq))?,
                    hash_from(&v[16..48]),
                );
                prev = chain_next(&prev, seq, doc, &hash);
                bytes += v.len();
                batch.push((seq, log_value(doc, &hash, &prev, &v[OLD_LOG_HEADER..])));
                if bytes >= limits::STORE_CHAIN_BUILD_BYTES_MAX {
                    break;
                }
            }
            let Some(&(last, _)) = batch.last() else {
                break;
            };
            (&self.log, &self.meta)
                .transaction(|(log, meta)| {
                    for (seq, value) in &batch {
                        log.insert(&seq.to_be_bytes()[..], &value[..])?;
                    }
                    meta.insert(CHAIN_BUILT_KEY, &last.to_be_bytes()[..])?;
                    Ok::<(), ConflictableTransactionError<String>>(())
                })
                .map_err(transaction_error)?;
            done = last;
        }
        self.meta.insert(LOG_LAYOUT_KEY, &[LOG_LAYOUT][..])?;
        self.meta.remove(CHAIN_BUILT_KEY)?;
        self.db.flush()?;
        Ok(())
    }

    /// Builds `case_docs` and `team_cases` for a store written before they existed (once).
    pub(super) fn build_indexes(&self) -> Result<(), StoreError> {
        if self.meta.contains_key(INDEX_KEY)? {
            return Ok(());
        }
        for item in self.docs.iter().values() {
            let rec: DocRecord = dec(&item?)?;
            self.case_docs.insert(
                pair_key(rec.header.case_id.as_bytes(), rec.header.doc_id.as_bytes()),
                &[],
            )?;
        }
        for item in self.cases.iter().values() {
            let case: CaseRecord = dec(&item?)?;
            for t in &case.teams {
                self.team_cases
                    .insert(pair_key(t.as_bytes(), case.case_id.as_bytes()), &[])?;
            }
        }
        self.meta.insert(INDEX_KEY, &[1])?;
        Ok(())
    }
}

pub(super) fn transaction_error(e: TransactionError<String>) -> StoreError {
    match e {
        TransactionError::Storage(e) => StoreError::from(e),
        TransactionError::Abort(reason) => {
            StoreError::Corrupt(format!("the write transaction aborted: {reason}"))
        }
    }
}

pub(super) fn corrupt_doc(seq: u64) -> StoreError {
    StoreError::Corrupt(format!("log entry {seq}: its doc id"))
}

pub(super) fn hash_from(bytes: &[u8]) -> Hash {
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&bytes[..32]);
    Hash(hash)
}

/// The end of the change log: the highest committed sequence and the chain at it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Tip {
    pub(super) seq: u64,
    pub(super) chain: [u8; 32],
}

/// The tree that holds the audit log ([`crate::model::audit`]).
pub const AUDIT_TREE: &str = "audit";

pub use crate::model::{chain_next, CHAIN_GENESIS};

/// A `log` value: doc id (16) ‖ change hash (32) ‖ chain (32) ‖ change bytes.
pub(super) fn log_value(doc: DocId, hash: &Hash, chain: &[u8; 32], bytes: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(LOG_HEADER + bytes.len());
    value.extend_from_slice(doc.as_bytes());
    value.extend_from_slice(&hash.0);
    value.extend_from_slice(chain);
    value.extend_from_slice(bytes);
    value
}

/// A parsed `log` value.
pub(super) struct LogValue<'a> {
    pub(super) doc_id: DocId,
    pub(super) hash: Hash,
    pub(super) chain: [u8; 32],
    pub(super) bytes: &'a [u8],
}

pub(super) fn parse_log(v: &[u8]) -> Result<LogValue<'_>, StoreError> {
    if v.len() < LOG_HEADER {
        return Err(StoreError::Corrupt(
            "a log entry is shorter than its header".into(),
        ));
    }
    let mut chain = [0u8; 32];
    chain.copy_from_slice(&v[48..80]);
    Ok(LogValue {
        doc_id: DocId::from_slice(&v[..16])
            .ok_or_else(|| StoreError::Corrupt("a log entry's doc id".into()))?,
        hash: hash_from(&v[16..48]),
        chain,
        bytes: &v[LOG_HEADER..],
    })
}

/// Bytes before the change in a `log` value, in the current layout and in the one before the
/// chain.
pub(super) const LOG_HEADER: usize = 80;
pub(super) const OLD_LOG_HEADER: usize = 48;

/// [`casenote_sled_recovery::open`] (partial snapshots removed first), with the page cache
/// bounded by [`limits::SERVER_SLED_CACHE_BYTES`] instead of sled's 1 GiB default, so the
/// server's memory does not grow with the size of its store.
pub(super) fn open_sled(data_dir: &Path) -> sled::Result<sled::Db> {
    casenote_sled_recovery::open_with(
        data_dir,
        sled::Config::new().cache_capacity(limits::SERVER_SLED_CACHE_BYTES),
    )
}
