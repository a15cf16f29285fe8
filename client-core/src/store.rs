//! The device store: one sled tree on disk, every write flushed before it is acknowledged.
//!
//! Keys are a one-byte prefix then ids, so one atomic `apply_batch` can change a document, its
//! outbox mark and the sync cursor together: a crash leaves either all of an edit or none of it.
//!
//! | prefix | key after prefix | value |
//! |---|---|---|
//! | `m` | meta name | server, token, whoami (JSON), actor, cursor, last sync (JSON) |
//! | `h` | doc id | header `{case_id, kind}` (JSON) |
//! | `s` | doc id | snapshot (`Automerge::save`) |
//! | `c` | doc id, chunk number (u64 BE) | incremental save since the snapshot |
//! | `b` | doc id | base: the server heads last seen (32 bytes each) |
//! | `d` | doc id | outbox mark: local changes the server has not acknowledged |
//! | `r` | doc id | refusal: the server rejected this document's changes (JSON reason) |
//! | `x` | case id, doc id | index of a case's documents (empty value) |
//!
//! Deleting a key does not erase its bytes from sled's files: sled rewrites its log segments only
//! when it garbage-collects them. When documents must leave no trace (an eviction, a revoked
//! device), [`DeviceStore::rewrite`] copies the live keys into fresh files and deletes the old
//! ones, and [`DeviceStore::wipe`] deletes everything. Both are crash-safe: an interrupted rewrite
//! is finished or rolled back when the store is next opened, and a pending rewrite is recorded in
//! the same batch as the deletions that need it.

use crate::error::Error;
use automerge::{AutoCommit, ChangeHash};
use casenote_protocol::{limits, CaseId, DocId, DocKind};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};

pub const META: u8 = b'm';
pub const HEADER: u8 = b'h';
pub const SNAPSHOT: u8 = b's';
pub const CHUNK: u8 = b'c';
pub const BASE: u8 = b'b';
pub const DIRTY: u8 = b'd';
pub const REFUSED: u8 = b'r';
pub const CASE_INDEX: u8 = b'x';

/// What the device knows about a document without opening it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub case_id: CaseId,
    pub kind: DocKind,
}

/// The device's sled store.
pub struct DeviceStore {
    dir: PathBuf,
    inner: RwLock<Option<Inner>>,
}

struct Inner {
    db: sled::Db,
    tree: sled::Tree,
}

const TREE: &str = "casenote";
/// Meta key set in the same batch as deletions that must leave no trace in the files.
pub const META_REWRITE_PENDING: &str = "rewrite_pending";

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    dir.with_file_name(name)
}

fn open_inner(dir: &Path) -> Result<Inner, Error> {
    let db = casenote_sled_recovery::open(dir)?;
    let tree = db.open_tree(TREE)?;
    Ok(Inner { db, tree })
}

/// Finishes or rolls back a rewrite that a crash interrupted, and removes old files.
fn recover(dir: &Path) -> Result<(), Error> {
    let fresh = sibling(dir, ".rewrite");
    let old = sibling(dir, ".old");
    if !dir.exists() && fresh.exists() {
        // Crashed between the two renames: the fresh copy is complete.
        std::fs::rename(&fresh, dir).map_err(io)?;
    }
    if fresh.exists() {
        // Crashed while copying: the original is intact; drop the partial copy.
        std::fs::remove_dir_all(&fresh).map_err(io)?;
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io)?;
    }
    Ok(())
}

fn io(e: std::io::Error) -> Error {
    Error::Store(sled::Error::Io(e))
}

pub fn key(prefix: u8, doc: DocId) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(prefix);
    k.extend_from_slice(doc.as_bytes());
    k
}

/// The key of a meta value.
pub fn meta_key(name: &str) -> Vec<u8> {
    let mut k = vec![META];
    k.extend_from_slice(name.as_bytes());
    k
}

fn case_index_key(case: CaseId, doc: DocId) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(CASE_INDEX);
    k.extend_from_slice(case.as_bytes());
    k.extend_from_slice(doc.as_bytes());
    k
}

fn chunk_key(doc: DocId, n: u64) -> Vec<u8> {
    let mut k = key(CHUNK, doc);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// Encodes heads as concatenated 32-byte hashes (a base, an outbox mark).
pub fn encode_heads(heads: &[ChangeHash]) -> Vec<u8> {
    heads.iter().flat_map(|h| h.0).collect()
}

pub fn decode_heads(bytes: &[u8]) -> Result<Vec<ChangeHash>, Error> {
    if !bytes.len().is_multiple_of(32) {
        return Err(Error::Corrupt("a base record is not whole hashes".into()));
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|c| ChangeHash(c.try_into().expect("chunks_exact gives 32 bytes")))
        .collect())
}

/// A set of writes that land together or not at all.
#[derive(Default)]
pub struct Writes {
    batch: sled::Batch,
}

impl Writes {
    pub fn put(&mut self, key: Vec<u8>, value: impl Into<sled::IVec>) {
        self.batch.insert(key, value.into());
    }
    pub fn remove(&mut self, key: Vec<u8>) {
        self.batch.remove(key);
    }
    pub fn put_meta(&mut self, name: &str, value: impl Into<sled::IVec>) {
        self.put(meta_key(name), value);
    }
}

impl DeviceStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        recover(dir)?;
        let store = Self {
            dir: dir.to_path_buf(),
            inner: RwLock::new(Some(open_inner(dir)?)),
        };
        if store.meta(META_REWRITE_PENDING)?.is_some() {
            store.rewrite()?;
        }
        Ok(store)
    }

    fn inner(&self) -> RwLockReadGuard<'_, Option<Inner>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn tree(&self) -> sled::Tree {
        self.inner()
            .as_ref()
            .expect("the store is reopened before rewrite or wipe returns")
            .tree
            .clone()
    }

    /// Applies writes atomically and makes them durable before returning.
    pub fn commit(&self, writes: Writes) -> Result<(), Error> {
        let guard = self.inner();
        let inner = guard.as_ref().expect("the store is open");
        inner.tree.apply_batch(writes.batch)?;
        inner.db.flush()?;
        Ok(())
    }

    /// Copies the live keys into fresh files and deletes the old ones, so that nothing deleted
    /// before survives anywhere in the store's files.
    pub fn rewrite(&self) -> Result<(), Error> {
        let mut guard = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let fresh = sibling(&self.dir, ".rewrite");
        let old = sibling(&self.dir, ".old");
        if fresh.exists() {
            std::fs::remove_dir_all(&fresh).map_err(io)?;
        }
        {
            let current = guard.as_ref().expect("the store is open");
            let copy = open_inner(&fresh)?;
            for item in current.tree.iter() {
                let (k, v) = item?;
                if k.as_ref() != meta_key(META_REWRITE_PENDING).as_slice() {
                    copy.tree.insert(k, v)?;
                }
            }
            copy.db.flush()?;
        }
        *guard = None; // closes the old files
        std::fs::rename(&self.dir, &old).map_err(io)?;
        std::fs::rename(&fresh, &self.dir).map_err(io)?;
        std::fs::remove_dir_all(&old).map_err(io)?;
        *guard = Some(open_inner(&self.dir)?);
        Ok(())
    }

    /// Deletes everything in the store, files included, and leaves an empty store in its place.
    pub fn wipe(&self) -> Result<(), Error> {
        let mut guard = self.inner.write().unwrap_or_else(|p| p.into_inner());
        *guard = None;
        std::fs::remove_dir_all(&self.dir).map_err(io)?;
        *guard = Some(open_inner(&self.dir)?);
        Ok(())
    }

    pub fn meta(&self, name: &str) -> Result<Option<sled::IVec>, Error> {
        Ok(self.tree().get(meta_key(name))?)
    }

    pub fn meta_string(&self, name: &str) -> Result<Option<String>, Error> {
        self.meta(name)?
            .map(|v| {
                String::from_utf8(v.to_vec()).map_err(|_| Error::Corrupt(format!("meta {name}")))
            })
            .transpose()
    }

    pub fn meta_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, Error> {
        self.meta(name)?
            .map(|v| serde_json::from_slice(&v).map_err(|_| Error::Corrupt(format!("meta {name}"))))
            .transpose()
    }

    pub fn header(&self, doc: DocId) -> Result<Option<Header>, Error> {
        self.tree()
            .get(key(HEADER, doc))?
            .map(|v| {
                serde_json::from_slice(&v).map_err(|_| Error::Corrupt(format!("header of {doc}")))
            })
            .transpose()
    }

    /// Every document header on the device.
    pub fn headers(&self) -> Result<Vec<(DocId, Header)>, Error> {
        self.ids_with(HEADER)?
            .into_iter()
            .map(|(doc, v)| {
                let h: Header = serde_json::from_slice(&v)
                    .map_err(|_| Error::Corrupt(format!("header of {doc}")))?;
                Ok((doc, h))
            })
            .collect()
    }

    /// Every document id under `prefix`, with its value.
    pub fn ids_with(&self, prefix: u8) -> Result<Vec<(DocId, sled::IVec)>, Error> {
        let mut out = Vec::new();
        for item in self.tree().scan_prefix([prefix]) {
            let (k, v) = item?;
            let doc = DocId::from_slice(&k[1..17.min(k.len())])
                .ok_or_else(|| Error::Corrupt("a key is not a document id".into()))?;
            out.push((doc, v));
        }
        Ok(out)
    }

    pub fn has(&self, prefix: u8, doc: DocId) -> Result<bool, Error> {
        Ok(self.tree().contains_key(key(prefix, doc))?)
    }

    pub fn get(&self, prefix: u8, doc: DocId) -> Result<Option<sled::IVec>, Error> {
        Ok(self.tree().get(key(prefix, doc))?)
    }

    pub fn base(&self, doc: DocId) -> Result<Vec<ChangeHash>, Error> {
        match self.tree().get(key(BASE, doc))? {
            Some(v) => decode_heads(&v),
            None => Ok(Vec::new()),
        }
    }

    /// Loads a document from its snapshot and chunks. `None` if the device does not hold it.
    pub fn load(&self, doc: DocId) -> Result<Option<(AutoCommit, u64)>, Error> {
        let snapshot = self.tree().get(key(SNAPSHOT, doc))?;
        let mut chunks = 0u64;
        let mut next = 0u64;
        let mut am = match &snapshot {
            Some(bytes) => AutoCommit::load(bytes)
                .map_err(|e| Error::Corrupt(format!("document {doc}: {e}")))?,
            None => AutoCommit::new(),
        };
        for item in self.tree().scan_prefix(key(CHUNK, doc)) {
            let (k, v) = item?;
            am.load_incremental(&v)
                .map_err(|e| Error::Corrupt(format!("document {doc}: {e}")))?;
            chunks += 1;
            let n: [u8; 8] = k[17..]
                .try_into()
                .map_err(|_| Error::Corrupt("a chunk key".into()))?;
            next = u64::from_be_bytes(n) + 1;
        }
        if snapshot.is_none() && chunks == 0 {
            return Ok(None);
        }
        Ok(Some((am, next)))
    }

    /// Adds to `writes` what it takes to persist `doc`'s changes since `heads_before`: one new
    /// chunk, or, once there are many chunks, one fresh snapshot replacing them all.
    pub fn stage_doc(
        &self,
        writes: &mut Writes,
        doc_id: DocId,
        doc: &mut AutoCommit,
        heads_before: &[ChangeHash],
        next_chunk: u64,
    ) -> Result<(), Error> {
        if next_chunk as usize >= limits::DEVICE_CHUNKS_BEFORE_COMPACT {
            for item in self.tree().scan_prefix(key(CHUNK, doc_id)) {
                let (k, _) = item?;
                writes.remove(k.to_vec());
            }
            writes.put(key(SNAPSHOT, doc_id), doc.save());
        } else {
            let bytes = doc.save_after(heads_before);
            if !bytes.is_empty() {
                writes.put(chunk_key(doc_id, next_chunk), bytes);
            }
        }
        Ok(())
    }

    /// Adds to `writes` a document's header, and its entry in the by-case index.
    pub fn stage_header(&self, writes: &mut Writes, doc: DocId, header: &Header) {
        writes.put(
            key(HEADER, doc),
            serde_json::to_vec(header).expect("header serialises"),
        );
        writes.put(case_index_key(header.case_id, doc), Vec::new());
    }

    /// Adds to `writes` one chunk of change bytes for `doc`.
    pub fn stage_chunk(&self, writes: &mut Writes, doc: DocId, n: u64, bytes: Vec<u8>) {
        writes.put(chunk_key(doc, n), bytes);
    }

    /// The documents of one case, by the by-case index.
    pub fn docs_of_case(&self, case: CaseId) -> Result<Vec<(DocId, Header)>, Error> {
        let mut prefix = vec![CASE_INDEX];
        prefix.extend_from_slice(case.as_bytes());
        let mut out = Vec::new();
        for item in self.tree().scan_prefix(&prefix) {
            let (k, _) = item?;
            let doc = DocId::from_slice(&k[17..])
                .ok_or_else(|| Error::Corrupt("a case index key".into()))?;
            if let Some(h) = self.header(doc)? {
                out.push((doc, h));
            }
        }
        Ok(out)
    }

    /// Adds to `writes` the removal of everything the device holds about `doc`.
    pub fn stage_forget(&self, writes: &mut Writes, doc: DocId) -> Result<(), Error> {
        if let Some(h) = self.header(doc)? {
            writes.remove(case_index_key(h.case_id, doc));
        }
        for prefix in [HEADER, SNAPSHOT, BASE, DIRTY, REFUSED] {
            writes.remove(key(prefix, doc));
        }
        for item in self.tree().scan_prefix(key(CHUNK, doc)) {
            let (k, _) = item?;
            writes.remove(k.to_vec());
        }
        Ok(())
    }

    /// How many bytes the store's files take on disk.
    pub fn size_on_disk(&self) -> Result<u64, Error> {
        Ok(self
            .inner()
            .as_ref()
            .expect("the store is open")
            .db
            .size_on_disk()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKER: &[u8] = b"UNIQUE-MARKER-7f3a9c";

    fn files_contain(dir: &Path, needle: &[u8]) -> bool {
        fn walk(dir: &Path, needle: &[u8]) -> bool {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        walk(&p, needle)
                    } else {
                        let bytes = std::fs::read(&p).unwrap_or_default();
                        bytes.windows(needle.len()).any(|w| w == needle)
                    }
                })
        }
        walk(dir, needle)
    }

    fn store_with_marker(dir: &Path) -> (DeviceStore, DocId) {
        let store = DeviceStore::open(dir).unwrap();
        let doc = DocId::new_random();
        let mut w = Writes::default();
        w.put(key(SNAPSHOT, doc), MARKER.to_vec());
        w.put(key(DIRTY, DocId::new_random()), b"kept".to_vec());
        store.commit(w).unwrap();
        (store, doc)
    }

    #[test]
    fn a_deleted_document_survives_in_sled_files_until_the_store_is_rewritten() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let (store, doc) = store_with_marker(&dir);
        let mut w = Writes::default();
        store.stage_forget(&mut w, doc).unwrap();
        store.commit(w).unwrap();
        assert!(
            files_contain(&dir, MARKER),
            "sled erased the bytes by itself; the rewrite is not what this test proves"
        );
        store.rewrite().unwrap();
        assert!(
            !files_contain(tmp.path(), MARKER),
            "the marker survived the rewrite"
        );
        assert_eq!(
            store.ids_with(DIRTY).unwrap().len(),
            1,
            "the rewrite lost live data"
        );
        assert!(store.get(SNAPSHOT, doc).unwrap().is_none());
    }

    #[test]
    fn a_wipe_leaves_an_empty_store_and_no_trace() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let (store, _) = store_with_marker(&dir);
        store.wipe().unwrap();
        assert!(!files_contain(tmp.path(), MARKER));
        assert!(store.ids_with(DIRTY).unwrap().is_empty());
        let mut w = Writes::default();
        w.put_meta("after", b"wipe".to_vec());
        store.commit(w).unwrap();
        assert!(
            store.meta("after").unwrap().is_some(),
            "the wiped store is not usable"
        );
    }

    #[test]
    fn a_rewrite_interrupted_between_its_renames_is_finished_on_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let (store, _) = store_with_marker(&dir);
        drop(store);
        // The state a crash between `rename(dir, old)` and `rename(fresh, dir)` leaves.
        std::fs::rename(&dir, sibling(&dir, ".rewrite")).unwrap();
        std::fs::create_dir_all(sibling(&dir, ".old")).unwrap();
        let store = DeviceStore::open(&dir).unwrap();
        assert_eq!(store.ids_with(DIRTY).unwrap().len(), 1);
        assert!(!sibling(&dir, ".old").exists() && !sibling(&dir, ".rewrite").exists());
    }

    #[test]
    fn a_pending_rewrite_recorded_before_a_crash_runs_on_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let (store, doc) = store_with_marker(&dir);
        let mut w = Writes::default();
        store.stage_forget(&mut w, doc).unwrap();
        w.put_meta(META_REWRITE_PENDING, Vec::new());
        store.commit(w).unwrap();
        drop(store); // the process dies before it rewrites
        let store = DeviceStore::open(&dir).unwrap();
        assert!(!files_contain(tmp.path(), MARKER));
        assert!(store.meta(META_REWRITE_PENDING).unwrap().is_none());
    }
}
