//! The device store: one sled tree on disk, encrypted, every write flushed before it returns,
//! bar one kind: the bookkeeping of a sync that brought nothing ([`DeviceStore::commit_lazily`]).
//!
//! Keys are a one-byte prefix then ids, so one atomic `apply_batch` can change a document, its
//! outbox mark and the sync cursor together: a crash leaves either all of an edit or none of it.
//! The code above this module works with these *logical* keys; on disk each id or name in a key
//! is replaced by its keyed hash and each value is sealed with the logical key inside it
//! ([`crate::crypto`]), so the files say nothing about anyone without the key.
//!
//! | prefix | logical key after prefix | on disk after prefix | value |
//! |---|---|---|---|
//! | `m` | meta name | hash(name) | server, token, whoami (JSON), actor, cursor, last sync (JSON) |
//! | `h` | doc id | hash(doc) | header `{case_id, kind}` (JSON) |
//! | `s` | doc id | hash(doc) | snapshot (`Automerge::save`) |
//! | `c` | doc id, chunk number (u64 BE) | hash(doc), chunk number | incremental save since the snapshot |
//! | `b` | doc id | hash(doc) | base: the server heads last seen (32 bytes each) |
//! | `d` | doc id | hash(doc) | outbox mark: the heads of local changes not yet acknowledged |
//! | `r` | doc id | hash(doc) | refusal: the server rejected this document's changes (JSON reason) |
//! | `x` | case id, doc id | hash(case), hash(doc) | index of a case's documents (empty value) |
//! | `q` | doc id | hash(doc) | outbox list base: the heads the `o` list is relative to |
//! | `o` | doc id, number (u64 BE) | hash(doc), number | one unacknowledged change's bytes, in order |
//! | `!` | (none) | (none) | in the clear: the key envelope ([`crate::keyring`]): format, salt, the data key wrapped under the host's key and under the server's escrow key, the escrow's device id |
//!
//! What the files still show: how many records of each kind there are, their sizes, and how many
//! chunks a document has; never an id, a name, or a word of a record.
//!
//! Deleting a key does not erase its bytes from sled's files: sled rewrites its log segments only
//! when it garbage-collects them. When documents must leave no trace (an eviction, a revoked
//! device), [`DeviceStore::rewrite`] copies the live keys into fresh files and deletes the old
//! ones, and [`DeviceStore::wipe`] deletes everything. Both are crash-safe: an interrupted rewrite
//! is finished or rolled back when the store is next opened, and a pending rewrite is recorded in
//! the same batch as the deletions that need it.

use crate::crypto::{Sealer, StoreKey, KEY_BYTES, SALT_BYTES};
use crate::disk;
use crate::doc_cache::{DocCache, Kept};
use crate::error::Error;
use crate::keyring::{self, Envelope};
use crate::lock;
use automerge::{AutoCommit, ChangeHash};
use casenote_protocol::{limits, CaseId, DeviceId, DocId, DocKind};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

pub const META: u8 = b'm';
pub const HEADER: u8 = b'h';
pub const SNAPSHOT: u8 = b's';
pub const CHUNK: u8 = b'c';
pub const BASE: u8 = b'b';
pub const DIRTY: u8 = b'd';
pub const REFUSED: u8 = b'r';
pub const CASE_INDEX: u8 = b'x';
pub const OUTBOX_BASE: u8 = b'q';
pub const OUTBOX_CHANGE: u8 = b'o';
/// A view of a record waiting for the server's audit chain, under its number (big-endian, kept
/// in the clear so the queue scans in order; the view itself is sealed like every value).
pub const VIEW: u8 = b'v';
/// The access list a new restricted section was created with (JSON
/// [`casenote_protocol::wire::NewRestricted`]), sent with its pushes until the server has it.
pub const ACCESS: u8 = b'a';
/// A sealed section this device may not read: its stub (JSON
/// [`casenote_protocol::wire::SealedStub`]), under the section's id.
pub const SEALED: u8 = b'z';
/// The prefixes of a document's single records (its numbered ones are `CHUNK` and `OUTBOX_CHANGE`).
const DOC_RECORDS: [u8; 7] = [HEADER, SNAPSHOT, BASE, DIRTY, REFUSED, OUTBOX_BASE, ACCESS];
/// The key check record's key: outside every prefix, so no scan meets it.
const KEY_CHECK: &[u8] = b"!";

/// What the device knows about a document without opening it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub case_id: CaseId,
    pub kind: DocKind,
}

/// A document's outbox list: the base it follows and its unacknowledged changes' bytes.
pub type OutboxList = (Vec<ChangeHash>, Vec<Vec<u8>>);

/// A record opened: its logical key and its value.
pub type Record = (Vec<u8>, Vec<u8>);

/// How a store is unlocked: with a key the host app holds, a passphrase (Argon2id under the
/// store's own salt), or a key the host finds once it knows which store it is.
#[derive(Clone, Copy)]
pub enum Unlock<'a> {
    Key(&'a StoreKey),
    Passphrase(&'a str),
    /// Called once the store is open, with what it says of itself ([`Opening`]): its id, which
    /// names it wherever it is moved (the CLI's key file is named by it). For a new store the
    /// finder makes the key (and keeps it where it will find it again).
    Find(&'a KeyFinder<'a>),
}

/// A host's way to find (or, for a new store, make) the key of the store being opened.
pub type KeyFinder<'a> = dyn Fn(&Opening<'_>) -> Result<StoreKey, Error> + 'a;

/// What a [`KeyFinder`] is told about the store being opened.
pub struct Opening<'a> {
    /// The store's id, from its key envelope (`None`: a store from before ids, or one from
    /// before key envelopes).
    pub id: Option<&'a str>,
    /// The store is being created: the finder makes its key.
    pub new: bool,
    envelope: Option<&'a Envelope>,
}

impl Opening<'_> {
    /// Whether `key` is the host key that opens this store (false for a new store, a wiped one,
    /// and one from before key envelopes). Cheap: no passphrase derivation.
    pub fn opens(&self, key: &StoreKey) -> bool {
        self.envelope
            .is_some_and(|env| matches!(env.open_host(key), Ok(Some(_))))
    }
}

/// The device's sled store.
pub struct DeviceStore {
    dir: PathBuf,
    sealer: Sealer,
    /// The data key, to wrap it for the escrow at sign-in.
    data_key: StoreKey,
    /// The host key that opened the store, to open it again after [`DeviceStore::release`].
    host_key: StoreKey,
    /// The store's id ([`crate::keyring`]).
    id: Option<String>,
    inner: RwLock<Option<Inner>>,
    /// Set once the offline lease wiped the store through this handle: calls fail with
    /// [`Error::Wiped`].
    wiped: AtomicBool,
    /// Set while the store is let go of between uses: the next use opens it again.
    released: AtomicBool,
    /// Documents kept in memory once loaded ([`crate::doc_cache`]).
    docs: Mutex<DocCache>,
    /// How many times a commit waited for the disk since the store was opened.
    flushes: AtomicU64,
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

/// Opens sled in `dir`, with room to do so on a full disk ([`crate::disk`]), waiting up to
/// `DEVICE_STORE_BUSY_WAIT_MS` for another process (or handle) to let go of it ([`crate::lock`]).
fn open_inner(dir: &Path) -> Result<Inner, Error> {
    let since = Instant::now();
    let deadline = since + Duration::from_millis(limits::DEVICE_STORE_BUSY_WAIT_MS);
    loop {
        lock::wait_until(dir, since, deadline)?;
        disk::before_open(dir);
        match casenote_sled_recovery::open(dir) {
            Ok(db) => {
                disk::keep_reserve(dir);
                let tree = db.open_tree(TREE)?;
                return Ok(Inner { db, tree });
            }
            // Another process took it between the wait and the open: wait again.
            Err(_) if lock::held(dir) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether `dir` holds a device store (or one a crash left mid-rewrite, which opening finishes).
pub fn exists(dir: &Path) -> bool {
    dir.join("db").is_file() || sibling(dir, ".rewrite").join("db").is_file()
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
    Error::from(sled::Error::Io(e))
}

pub fn key(prefix: u8, doc: DocId) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(prefix);
    k.extend_from_slice(doc.as_bytes());
    k
}

/// The key of a queued view.
pub fn view_key(seq: u64) -> Vec<u8> {
    let mut k = vec![VIEW];
    k.extend_from_slice(&seq.to_be_bytes());
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
    numbered_key(CHUNK, doc, n)
}

fn numbered_key(prefix: u8, doc: DocId, n: u64) -> Vec<u8> {
    let mut k = key(prefix, doc);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// The number at the end of a chunk or outbox change key.
fn chunk_number(k: &[u8]) -> Result<u64, Error> {
    let n: [u8; 8] = k
        .get(17..)
        .unwrap_or_default()
        .try_into()
        .map_err(|_| Error::Corrupt("a numbered key".into()))?;
    Ok(u64::from_be_bytes(n))
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

/// Whether a commit waits for the disk ([`DeviceStore::commit_lazily`] says when it need not).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    Flushed,
    Lazy,
}

/// A set of writes, by logical key, that land together or not at all. The last write to a key
/// wins. Documents these writes store may go with them, to be kept in memory once they have
/// landed ([`crate::doc_cache`]).
#[derive(Default)]
pub struct Writes {
    ops: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    kept: Vec<Kept>,
}

/// What [`DeviceStore::stage_doc`] wrote for a document.
#[derive(Clone, Copy)]
pub struct Staged {
    /// The chunk number the document's next save takes.
    pub next_chunk: u64,
    written: usize,
    replaced: bool,
}

impl Staged {
    /// Nothing written: the document as loaded, whose next chunk is `next_chunk`.
    pub fn unchanged(next_chunk: u64) -> Self {
        Self {
            next_chunk,
            written: 0,
            replaced: false,
        }
    }
}

impl Writes {
    pub fn put(&mut self, key: Vec<u8>, value: impl Into<Vec<u8>>) {
        self.ops.insert(key, Some(value.into()));
    }
    pub fn remove(&mut self, key: Vec<u8>) {
        self.ops.insert(key, None);
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.kept.is_empty()
    }
    pub fn put_meta(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.put(meta_key(name), value);
    }
    /// Keeps `doc`, as [`DeviceStore::stage_doc`] staged it, in memory once these writes land.
    pub fn keep(&mut self, id: DocId, doc: AutoCommit, staged: Staged) {
        self.kept.push(Kept {
            id,
            doc,
            next_chunk: staged.next_chunk,
            written: staged.written,
            replaced: staged.replaced,
        });
    }
    /// The documents whose content records (header, snapshot, chunks) these writes change.
    fn docs_touched(&self) -> Vec<DocId> {
        let mut out: Vec<DocId> = self
            .ops
            .keys()
            .filter(|k| matches!(k.first(), Some(&(HEADER | SNAPSHOT | CHUNK))))
            .filter_map(|k| DocId::from_slice(k.get(1..17)?))
            .collect();
        out.dedup();
        out
    }
    /// About how many bytes these writes put on disk (keys and values, before sealing).
    fn bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + 64)
            .sum()
    }
}

/// The host's key: the app's own, one derived from a passphrase under the store's salt, or the
/// one the host finds for the store `opening` describes.
fn host_key(
    unlock: Unlock<'_>,
    salt: &[u8; SALT_BYTES],
    opening: &Opening<'_>,
) -> Result<StoreKey, Error> {
    match unlock {
        Unlock::Key(k) => Ok(k.clone()),
        Unlock::Passphrase(p) => StoreKey::from_passphrase(p, salt),
        Unlock::Find(find) => find(opening),
    }
}

/// The salt and check tag of a format 1 key check record (from before key envelopes), if `v` is
/// one.
fn parse_v1(v: &[u8]) -> Option<([u8; SALT_BYTES], &[u8])> {
    if v.len() != 1 + SALT_BYTES + KEY_BYTES || v[0] != keyring::FORMAT_V1 {
        return None;
    }
    let salt = v[1..1 + SALT_BYTES].try_into().ok()?;
    Some((salt, &v[1 + SALT_BYTES..]))
}

/// The key of a logical key on disk under `sealer`: each id or name replaced by its keyed hash.
/// A logical key prefix maps to a physical key prefix, so prefix scans work unchanged.
fn physical_key(sealer: &Sealer, logical: &[u8]) -> Vec<u8> {
    let Some((&prefix, rest)) = logical.split_first() else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(1 + 2 * crate::crypto::NAME_BYTES + 8);
    out.push(prefix);
    if rest.is_empty() {
        return out;
    }
    match prefix {
        CHUNK | OUTBOX_CHANGE if rest.len() > 16 => {
            out.extend_from_slice(&sealer.name(&rest[..16]));
            out.extend_from_slice(&rest[16..]); // the chunk number, kept in order
        }
        VIEW => out.extend_from_slice(rest), // the view's number: a count, not an id
        CASE_INDEX if rest.len() > 16 => {
            out.extend_from_slice(&sealer.name(&rest[..16]));
            out.extend_from_slice(&sealer.name(&rest[16..]));
        }
        _ => out.extend_from_slice(&sealer.name(rest)),
    }
    out
}

/// What a copy does with one record: `(physical key, stored value)` in, what to write (or
/// nothing) out.
type CopyRecord<'a> = dyn FnMut(&[u8], &[u8]) -> Result<Option<Record>, Error> + 'a;

/// Writes a copy of the store's records into fresh files, through `each` (which may re-seal
/// them, or leave one out by returning `None`), with `envelope` as the key envelope if given,
/// and swaps the copy in crash-safely (see [`recover`]). `guard` holds the store's open handle
/// and gets the fresh one.
fn copy_into_fresh(
    dir: &Path,
    guard: &mut Option<Inner>,
    envelope: Option<Vec<u8>>,
    each: &mut CopyRecord<'_>,
) -> Result<(), Error> {
    let fresh = sibling(dir, ".rewrite");
    let old = sibling(dir, ".old");
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh).map_err(io)?;
    }
    {
        let current = guard.as_ref().ok_or(Error::StoreClosed)?;
        let copy = open_inner(&fresh)?;
        for item in current.tree.iter() {
            let (k, v) = item?;
            let record = if k.as_ref() == KEY_CHECK {
                Some((k.to_vec(), envelope.clone().unwrap_or_else(|| v.to_vec())))
            } else {
                each(&k, &v)?
            };
            if let Some((k, v)) = record {
                copy.tree.insert(k, v)?;
            }
        }
        copy.db.flush()?;
    }
    *guard = None; // closes the old files
    std::fs::rename(dir, &old).map_err(io)?;
    std::fs::rename(&fresh, dir).map_err(io)?;
    std::fs::remove_dir_all(&old).map_err(io)?;
    *guard = Some(open_inner(dir)?);
    Ok(())
}

/// Re-seals a format 1 store (sealed under the host's key itself) under a fresh data key, with
/// an envelope: one pass over every record into fresh files, swapped in crash-safely (a crash
/// leaves the format 1 store, migrated again at the next open). Returns the data key.
fn migrate_v1(
    dir: &Path,
    guard: &mut Option<Inner>,
    host: &StoreKey,
    salt: &[u8; SALT_BYTES],
) -> Result<StoreKey, Error> {
    let old_sealer = Sealer::new(host);
    let data = StoreKey::generate();
    let new_sealer = Sealer::new(&data);
    let envelope = Envelope::new(salt, &data, host).encode();
    copy_into_fresh(dir, guard, Some(envelope), &mut |physical, stored| {
        let (logical, value) = old_sealer.open(physical, stored)?;
        let moved = physical_key(&new_sealer, &logical);
        let sealed = new_sealer.seal(&moved, &logical, &value);
        Ok(Some((moved, sealed)))
    })?;
    tracing::info!("the device store was re-sealed under a data key of its own (format 2)");
    Ok(data)
}

/// A store opened: its data key, the host key that opened it, and its id.
struct Opened {
    data: StoreKey,
    host: StoreKey,
    id: Option<String>,
}

/// Reads the key envelope of the open store, migrating a format 1 store, or making one for a new
/// store when `create` says so (else a store without one is [`Error::NoStore`]); returns what
/// opened it if the host's key does (`None`: the offline lease wiped the store).
fn read_envelope(
    dir: &Path,
    guard: &mut Option<Inner>,
    unlock: Unlock<'_>,
    create: bool,
) -> Result<Option<Opened>, Error> {
    let tree = guard.as_ref().ok_or(Error::StoreClosed)?.tree.clone();
    let Some(v) = tree.get(KEY_CHECK)? else {
        if !tree.is_empty() {
            return Err(Error::Unencrypted(dir.display().to_string()));
        }
        if !create {
            return Err(Error::NoStore(dir.display().to_string()));
        }
        return create_envelope(guard, unlock).map(Some);
    };
    if let Some((salt, tag)) = parse_v1(&v) {
        let opening = Opening {
            id: None,
            new: false,
            envelope: None,
        };
        let host = host_key(unlock, &salt, &opening)?;
        if !Sealer::new(&host).is_own_tag(tag) {
            return Err(Error::WrongKey);
        }
        let data = migrate_v1(dir, guard, &host, &salt)?;
        let id = read_id(guard)?;
        return Ok(Some(Opened { data, host, id }));
    }
    let mut env = Envelope::parse(&v)?;
    if env.scrub {
        // A wipe stopped before its rewrite: finish it, so that no old host wrap survives.
        env.scrub = false;
        copy_into_fresh(dir, guard, Some(env.encode()), &mut |k, v| {
            Ok(Some((k.to_vec(), v.to_vec())))
        })?;
    }
    let opening = Opening {
        id: env.id(),
        new: false,
        envelope: Some(&env),
    };
    let host = host_key(unlock, &env.salt()?, &opening)?;
    let Some(data) = env.open_host(&host)? else {
        return Ok(None);
    };
    if env.ensure_id() {
        give_id(dir, guard, &env);
    }
    let id = env.id().map(str::to_string);
    Ok(Some(Opened { data, host, id }))
}

/// A new store's envelope: a fresh salt, data key and id, the host's key from `unlock`.
fn create_envelope(guard: &mut Option<Inner>, unlock: Unlock<'_>) -> Result<Opened, Error> {
    let inner = guard.as_ref().ok_or(Error::StoreClosed)?;
    let mut salt = [0u8; SALT_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let data = StoreKey::generate();
    // The id is made first, so that the host can keep the key under it before the store exists.
    let probe = Envelope::new(&salt, &data, &data);
    let opening = Opening {
        id: probe.id(),
        new: true,
        envelope: None,
    };
    let host = host_key(unlock, &salt, &opening)?;
    let mut env = probe;
    env.seal_host(&data, &host);
    inner.tree.insert(KEY_CHECK, env.encode())?;
    inner.db.flush()?;
    Ok(Opened {
        data,
        host,
        id: env.id().map(str::to_string),
    })
}

/// The id in the open store's envelope.
fn read_id(guard: &Option<Inner>) -> Result<Option<String>, Error> {
    let inner = guard.as_ref().ok_or(Error::StoreClosed)?;
    let v = inner.tree.get(KEY_CHECK)?.unwrap_or_default();
    Ok(Envelope::parse(&v)?.id().map(str::to_string))
}

/// Writes the id a store from before ids was just given. Best effort: on a full disk the store
/// still opens and reads, and gets its id at a later open.
fn give_id(dir: &Path, guard: &Option<Inner>, env: &Envelope) {
    let write = || -> Result<(), Error> {
        let inner = guard.as_ref().ok_or(Error::StoreClosed)?;
        let bytes = env.encode();
        disk::check_room(dir, bytes.len())?;
        inner.tree.insert(KEY_CHECK, bytes)?;
        inner.db.flush()?;
        Ok(())
    };
    match write() {
        Ok(()) => tracing::info!("the device store was given an id of its own"),
        Err(e) => tracing::warn!(error = %e, "could not give the device store an id; later"),
    }
}

impl DeviceStore {
    /// Opens (or creates) the store in `dir`, encrypted under `key`.
    pub fn open(dir: &Path, key: &StoreKey) -> Result<Self, Error> {
        Self::open_with(dir, Unlock::Key(key))
    }

    /// Opens (or creates) the store in `dir`. A key other than the one the store was created
    /// with (or last brought back with) is [`Error::WrongKey`], before anything is read; a store
    /// the offline lease wiped is [`Error::Wiped`] until its user signs in again
    /// ([`DeviceStore::bring_back`]). A store from before key envelopes is re-sealed here, and
    /// one from before store ids is given its id. A store another process holds is waited for,
    /// up to `DEVICE_STORE_BUSY_WAIT_MS` ([`Error::Busy`]).
    pub fn open_with(dir: &Path, unlock: Unlock<'_>) -> Result<Self, Error> {
        Self::open_mode(dir, unlock, true)
    }

    /// Opens the store in `dir` as [`DeviceStore::open_with`] does, but never creates one: a
    /// directory without a store is [`Error::NoStore`], and nothing is written to it.
    pub fn open_existing(dir: &Path, unlock: Unlock<'_>) -> Result<Self, Error> {
        if !exists(dir) {
            return Err(Error::NoStore(dir.display().to_string()));
        }
        Self::open_mode(dir, unlock, false)
    }

    fn open_mode(dir: &Path, unlock: Unlock<'_>, create: bool) -> Result<Self, Error> {
        recover(dir)?;
        let mut inner = Some(open_inner(dir)?);
        let opened = read_envelope(dir, &mut inner, unlock, create)?.ok_or(Error::Wiped)?;
        let store = Self {
            dir: dir.to_path_buf(),
            sealer: Sealer::new(&opened.data),
            data_key: opened.data,
            host_key: opened.host,
            id: opened.id,
            inner: RwLock::new(inner),
            wiped: Default::default(),
            released: Default::default(),
            docs: Default::default(),
            flushes: Default::default(),
        };
        store.finish_pending_rewrite()?;
        Ok(store)
    }

    /// Finishes the rewrite a crash interrupted (recorded with the deletions that needed it).
    fn finish_pending_rewrite(&self) -> Result<(), Error> {
        if self.meta(META_REWRITE_PENDING)?.is_some() {
            self.rewrite()?;
        }
        Ok(())
    }

    /// The store's id: it names the store wherever it is moved ([`crate::keyring`]). `None`
    /// only for a store from before ids that could not be given one (a full disk).
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// Lets go of the store's files (and sled's lock on them) until the next call, which opens
    /// them again, waiting for another process that holds them meanwhile. A host that keeps a
    /// store open for long but uses it only now and then (`sync --watch`, an app's background
    /// sync) calls this between uses, so that other processes can use the store. Everything
    /// committed is already on disk: letting go loses nothing.
    pub fn release(&self) {
        let mut guard = self.inner.write().unwrap_or_else(|p| p.into_inner());
        // Another process may change the store meanwhile.
        self.docs().clear();
        if guard.take().is_some() {
            self.released.store(true, Ordering::SeqCst);
        }
    }

    /// Opens the store again after [`DeviceStore::release`]. Another process may have used it
    /// meanwhile: it must still be there, open under the same host key to the same data key,
    /// and a rewrite it left unfinished is finished.
    fn reacquire(&self) -> Result<(), Error> {
        {
            let mut guard = self.inner.write().unwrap_or_else(|p| p.into_inner());
            if guard.is_some() || !self.released.load(Ordering::SeqCst) {
                return Ok(());
            }
            recover(&self.dir)?;
            if !exists(&self.dir) {
                return Err(Error::NoStore(self.dir.display().to_string()));
            }
            let mut inner = Some(open_inner(&self.dir)?);
            let opened = read_envelope(&self.dir, &mut inner, Unlock::Key(&self.host_key), false)?;
            match opened {
                None => {
                    self.wiped.store(true, Ordering::SeqCst);
                    self.released.store(false, Ordering::SeqCst);
                    return Err(Error::Wiped);
                }
                Some(o) if o.data.as_bytes() != self.data_key.as_bytes() => {
                    return Err(Error::WrongKey)
                }
                Some(_) => {}
            }
            *guard = inner;
            self.released.store(false, Ordering::SeqCst);
        }
        self.finish_pending_rewrite()
    }

    /// The enrolled device whose escrow key opens the wiped store in `dir` (`None`: the store is
    /// not wiped, or has no escrow).
    pub fn wiped_escrow_device(dir: &Path) -> Result<Option<DeviceId>, Error> {
        recover(dir)?;
        let inner = open_inner(dir)?;
        let Some(v) = inner.tree.get(KEY_CHECK)? else {
            return Ok(None);
        };
        if parse_v1(&v).is_some() {
            return Ok(None);
        }
        let env = Envelope::parse(&v)?;
        let wiped = env.is_wiped();
        Ok(env.escrow.filter(|_| wiped).map(|e| e.device_id))
    }

    /// Brings back a store the offline lease wiped, with the escrow key the server handed out
    /// for it: the data key is wrapped under the host's key again (which may be a new one, a new
    /// passphrase say), and the store opens as it was before the wipe. A key that does not open
    /// the escrow is [`Error::Unrecoverable`].
    pub fn bring_back(dir: &Path, unlock: Unlock<'_>, escrow_key: &[u8]) -> Result<Self, Error> {
        recover(dir)?;
        {
            let inner = open_inner(dir)?;
            let v = inner.tree.get(KEY_CHECK)?.ok_or(Error::Unrecoverable)?;
            let mut env = Envelope::parse(&v)?;
            if env.is_wiped() {
                let data = env.open_escrow(escrow_key).ok_or(Error::Unrecoverable)?;
                let opening = Opening {
                    id: env.id(),
                    new: false,
                    envelope: None,
                };
                let host = host_key(unlock, &env.salt()?, &opening)?;
                env.seal_host(&data, &host);
                inner.tree.insert(KEY_CHECK, env.encode())?;
                inner.db.flush()?;
            }
        }
        Self::open_with(dir, unlock)
    }

    /// Wraps the data key under `device`'s escrow key, in the envelope (at sign-in).
    pub fn set_escrow(&self, device: DeviceId, escrow_key: &[u8]) -> Result<(), Error> {
        let guard = self.inner()?;
        let inner = guard.as_ref().ok_or_else(|| self.closed())?;
        let v = inner.tree.get(KEY_CHECK)?.ok_or(Error::Unrecoverable)?;
        let mut env = Envelope::parse(&v)?;
        env.seal_escrow(&self.data_key, device, escrow_key);
        disk::check_room(&self.dir, v.len())?;
        inner.tree.insert(KEY_CHECK, env.encode())?;
        inner.db.flush()?;
        Ok(())
    }

    /// Whether the data key is escrowed, so that a wipe by the offline lease can be undone.
    pub fn has_escrow(&self) -> Result<bool, Error> {
        let v = self.tree()?.get(KEY_CHECK)?.unwrap_or_default();
        Ok(Envelope::parse(&v)?.escrow.is_some())
    }

    /// The offline lease's wipe: forgets the host's wrap of the data key, rewrites the store's
    /// files so that no copy of it survives, and closes the store. Every record stays, sealed:
    /// only the escrow, through the server, opens it again ([`DeviceStore::bring_back`]).
    pub fn seal_away(&self) -> Result<(), Error> {
        self.reacquire()?;
        let mut guard = self.inner.write().unwrap_or_else(|p| p.into_inner());
        self.docs().clear();
        let open = guard.as_ref().ok_or_else(|| self.closed())?;
        let v = open.tree.get(KEY_CHECK)?.ok_or(Error::Unrecoverable)?;
        let mut env = Envelope::parse(&v)?;
        env.drop_host();
        // Recorded first: a crash before the rewrite finishes is finished at the next open.
        env.scrub = true;
        open.tree.insert(KEY_CHECK, env.encode())?;
        open.db.flush()?;
        env.scrub = false;
        let pending = self.physical(&meta_key(META_REWRITE_PENDING));
        copy_into_fresh(&self.dir, &mut guard, Some(env.encode()), &mut |k, v| {
            Ok((k != pending.as_slice()).then(|| (k.to_vec(), v.to_vec())))
        })?;
        self.wiped.store(true, Ordering::SeqCst);
        *guard = None;
        Ok(())
    }

    /// The documents kept in memory.
    fn docs(&self) -> MutexGuard<'_, DocCache> {
        self.docs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the store is closed.
    fn closed(&self) -> Error {
        if self.wiped.load(Ordering::SeqCst) {
            Error::Wiped
        } else {
            Error::StoreClosed
        }
    }

    fn physical(&self, logical: &[u8]) -> Vec<u8> {
        physical_key(&self.sealer, logical)
    }

    fn get_logical(&self, logical: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let physical = self.physical(logical);
        let Some(stored) = self.tree()?.get(&physical)? else {
            return Ok(None);
        };
        let (k, v) = self.sealer.open(&physical, &stored)?;
        if k != logical {
            return Err(Error::Corrupt(
                "a stored record is not the one asked for".into(),
            ));
        }
        Ok(Some(v))
    }

    /// Every record whose logical key starts with `prefix`, opened, in key order.
    fn scan_logical(&self, prefix: &[u8]) -> Result<Vec<Record>, Error> {
        let mut out = Vec::new();
        for item in self.tree()?.scan_prefix(self.physical(prefix)) {
            let (physical, stored) = item?;
            out.push(self.sealer.open(&physical, &stored)?);
        }
        Ok(out)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The open handle (`None` if the store was closed after a failed write, or wiped); a store
    /// let go of by [`DeviceStore::release`] is opened again first.
    fn inner(&self) -> Result<RwLockReadGuard<'_, Option<Inner>>, Error> {
        loop {
            let guard = self.inner.read().unwrap_or_else(|p| p.into_inner());
            if guard.is_some() || !self.released.load(Ordering::SeqCst) {
                return Ok(guard);
            }
            drop(guard);
            self.reacquire()?;
        }
    }

    /// The store's tree; an error if the store was closed after a failed write.
    fn tree(&self) -> Result<sled::Tree, Error> {
        Ok(self
            .inner()?
            .as_ref()
            .ok_or_else(|| self.closed())?
            .tree
            .clone())
    }

    /// Applies writes atomically and makes them durable before returning. Writes that would
    /// leave the disk short of its headroom are refused before sled sees them
    /// ([`Error::DiskFull`], nothing written). If sled fails anyway (the disk filled between the
    /// check and the write), its handle is let go without being closed, since sled refuses every
    /// write after a failed one and hangs when closed, and the store reads as closed until it is
    /// opened again: nothing of the failed writes is read back.
    pub fn commit(&self, writes: Writes) -> Result<(), Error> {
        self.commit_as(writes, Durability::Flushed)
    }

    /// [`DeviceStore::commit`] without waiting for the disk, for bookkeeping that a crash may
    /// lose without harm: what a sync that brought and changed nothing records (the contact time
    /// the offline lease counts from, the report, the traffic totals). sled's own flusher writes
    /// it within `flush_every_ms` (500 ms, sled's default, which [`casenote_sled_recovery`]
    /// keeps); a crash before then leaves the store as the previous commit left it, whose
    /// contact is older, so the lease can only lapse sooner, never later. Writes stay in order:
    /// any later flushed commit makes these durable too. An empty batch writes nothing.
    pub fn commit_lazily(&self, writes: Writes) -> Result<(), Error> {
        if writes.is_empty() {
            return Ok(());
        }
        self.commit_as(writes, Durability::Lazy)
    }

    /// How many commits waited for the disk since this handle opened the store.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    fn commit_as(&self, mut writes: Writes, durability: Durability) -> Result<(), Error> {
        disk::check_room(&self.dir, writes.bytes())?;
        let touched = writes.docs_touched();
        let kept = std::mem::take(&mut writes.kept);
        let result = self.apply(writes, durability);
        match &result {
            Ok(()) => self.docs().committed(&touched, kept),
            Err(e) => {
                tracing::warn!(error = %e, "a write to the device store failed; it is closed");
                let mut guard = self.inner.write().unwrap_or_else(|p| p.into_inner());
                self.docs().clear();
                if let Some(failed) = guard.take() {
                    std::mem::forget(failed);
                }
            }
        }
        result
    }

    fn apply(&self, writes: Writes, durability: Durability) -> Result<(), Error> {
        let guard = self.inner()?;
        let inner = guard.as_ref().ok_or_else(|| self.closed())?;
        let mut batch = sled::Batch::default();
        for (logical, value) in writes.ops {
            let physical = self.physical(&logical);
            match value {
                Some(v) => {
                    let sealed = self.sealer.seal(&physical, &logical, &v);
                    batch.insert(physical, sealed);
                }
                None => batch.remove(physical),
            }
        }
        inner.tree.apply_batch(batch)?;
        if durability == Durability::Flushed {
            inner.db.flush()?;
            self.flushes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Copies the live keys into fresh files and deletes the old ones, so that nothing deleted
    /// before survives anywhere in the store's files.
    pub fn rewrite(&self) -> Result<(), Error> {
        // The copy needs room for everything live: refused before sled writes any of it.
        disk::check_room(&self.dir, self.dir_bytes(false)? as usize)?;
        self.reacquire()?;
        let mut guard = self.inner.write().unwrap_or_else(|p| p.into_inner());
        self.docs().clear();
        let pending = self.physical(&meta_key(META_REWRITE_PENDING));
        copy_into_fresh(&self.dir, &mut guard, None, &mut |k, v| {
            Ok((k != pending.as_slice()).then(|| (k.to_vec(), v.to_vec())))
        })
    }

    /// Deletes everything in the store, files included, and leaves an empty store in its place,
    /// under the same key and without escrow (a revoked device: its escrow is gone too).
    pub fn wipe(&self) -> Result<(), Error> {
        self.reacquire()?;
        let mut guard = self.inner.write().unwrap_or_else(|p| p.into_inner());
        self.docs().clear();
        let current = guard.as_ref().ok_or_else(|| self.closed())?;
        let mut env = Envelope::parse(&current.tree.get(KEY_CHECK)?.unwrap_or_default())?;
        env.escrow = None;
        *guard = None;
        std::fs::remove_dir_all(&self.dir).map_err(io)?;
        let fresh = open_inner(&self.dir)?;
        fresh.tree.insert(KEY_CHECK, env.encode())?;
        fresh.db.flush()?;
        *guard = Some(fresh);
        Ok(())
    }

    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        self.get_logical(&meta_key(name))
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
        self.get_logical(&key(HEADER, doc))?
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
    pub fn ids_with(&self, prefix: u8) -> Result<Vec<(DocId, Vec<u8>)>, Error> {
        self.scan_logical(&[prefix])?
            .into_iter()
            .map(|(k, v)| {
                let doc = DocId::from_slice(k.get(1..17).unwrap_or_default())
                    .ok_or_else(|| Error::Corrupt("a key is not a document id".into()))?;
                Ok((doc, v))
            })
            .collect()
    }

    /// The first `max` queued views, in order, as stored (JSON).
    pub fn views(&self, max: usize) -> Result<Vec<Vec<u8>>, Error> {
        let mut out = Vec::new();
        for item in self.tree()?.scan_prefix(self.physical(&[VIEW])).take(max) {
            let (physical, stored) = item?;
            out.push(self.sealer.open(&physical, &stored)?.1);
        }
        Ok(out)
    }

    pub fn has(&self, prefix: u8, doc: DocId) -> Result<bool, Error> {
        Ok(self
            .tree()?
            .contains_key(self.physical(&key(prefix, doc)))?)
    }

    pub fn get(&self, prefix: u8, doc: DocId) -> Result<Option<Vec<u8>>, Error> {
        self.get_logical(&key(prefix, doc))
    }

    pub fn base(&self, doc: DocId) -> Result<Vec<ChangeHash>, Error> {
        match self.get_logical(&key(BASE, doc))? {
            Some(v) => decode_heads(&v),
            None => Ok(Vec::new()),
        }
    }

    /// Loads a document from its snapshot and chunks (or a copy of it as last loaded or stored,
    /// kept in memory: [`crate::doc_cache`]). `None` if the device does not hold it.
    pub fn load(&self, doc: DocId) -> Result<Option<(AutoCommit, u64)>, Error> {
        let (hit, seen) = {
            let mut docs = self.docs();
            (docs.get(doc), docs.generation())
        };
        if let Some(hit) = hit {
            return self.checked(doc, hit, seen).map(Some);
        }
        let loaded = self.load_stored(doc)?;
        if let Some((am, next, bytes)) = &loaded {
            self.docs().insert_loaded(doc, am, *next, *bytes, seen);
        }
        Ok(loaded.map(|(am, next, _)| (am, next)))
    }

    /// Loads a document to change it: the cached document itself, taken out (the commit that
    /// stores the change puts it back with [`Writes::keep`]), or a load of the store. Only under
    /// the device's document-write lock.
    pub fn load_to_write(&self, doc: DocId) -> Result<Option<(AutoCommit, u64)>, Error> {
        let (taken, seen) = {
            let mut docs = self.docs();
            (docs.take(doc), docs.generation())
        };
        if let Some(hit) = taken {
            return self.checked(doc, hit, seen).map(Some);
        }
        Ok(self.load_stored(doc)?.map(|(am, next, _)| (am, next)))
    }

    /// A cache hit, as it is: client-core's own tests first check it against the store itself
    /// (not every debug build: a second load per hit in every end-to-end suite's devices cost CI
    /// minutes).
    #[cfg(not(test))]
    fn checked(
        &self,
        _doc: DocId,
        hit: (AutoCommit, u64),
        _seen: u64,
    ) -> Result<(AutoCommit, u64), Error> {
        Ok(hit)
    }

    /// A cache hit, asserted to be what the store holds, unless a commit came in between.
    #[cfg(test)]
    fn checked(
        &self,
        doc: DocId,
        mut hit: (AutoCommit, u64),
        seen: u64,
    ) -> Result<(AutoCommit, u64), Error> {
        let stored = self.load_stored(doc)?;
        if self.docs().generation() != seen {
            return Ok(hit);
        }
        let (mut am, stored_next, _) = stored.expect("a cached document is stored");
        assert_eq!(
            (hit.0.get_heads(), hit.1),
            (am.get_heads(), stored_next),
            "the cached copy of {doc} is not what the store holds"
        );
        Ok(hit)
    }

    /// Loads a document from its snapshot and chunks: the document, its next chunk number, and
    /// the bytes it was loaded from.
    fn load_stored(&self, doc: DocId) -> Result<Option<(AutoCommit, u64, usize)>, Error> {
        let snapshot = self.get_logical(&key(SNAPSHOT, doc))?;
        let chunks = self.scan_logical(&key(CHUNK, doc))?;
        if snapshot.is_none() && chunks.is_empty() {
            return Ok(None);
        }
        let next = match chunks.last() {
            Some((k, _)) => chunk_number(k)? + 1,
            None => 0,
        };
        // One load of the snapshot and every chunk concatenated: Automerge applies them as one
        // batch, where a `load_incremental` per chunk re-does work for each (docs/design.md: applying
        // one call at a time slows down as the history grows).
        let mut bytes = snapshot.unwrap_or_default();
        for (_, v) in chunks {
            bytes.extend_from_slice(&v);
        }
        // automerge 0.12 panics on some documents it saved itself (vendor/README.md: one holding
        // an op it should have refused); such a document is damage, not a crash of the app.
        let am = std::panic::catch_unwind(|| AutoCommit::load(&bytes))
            .map_err(|_| Error::Corrupt(format!("document {doc}: automerge could not load it")))?
            .map_err(|e| Error::Corrupt(format!("document {doc}: {e}")))?;
        Ok(Some((am, next, bytes.len())))
    }

    /// Adds to `writes` what it takes to persist `doc`'s changes since `heads_before`: one new
    /// chunk, or, once there are many chunks, one fresh snapshot replacing them all. Returns what
    /// it staged, for [`Writes::keep`].
    pub fn stage_doc(
        &self,
        writes: &mut Writes,
        doc_id: DocId,
        doc: &mut AutoCommit,
        heads_before: &[ChangeHash],
        next_chunk: u64,
    ) -> Result<Staged, Error> {
        if next_chunk as usize >= limits::DEVICE_CHUNKS_BEFORE_COMPACT {
            for (k, _) in self.scan_logical(&key(CHUNK, doc_id))? {
                writes.remove(k);
            }
            let snapshot = doc.save();
            let written = snapshot.len();
            writes.put(key(SNAPSHOT, doc_id), snapshot);
            return Ok(Staged {
                next_chunk: 0,
                written,
                replaced: true,
            });
        }
        let bytes = doc.save_after(heads_before);
        let written = bytes.len();
        if written == 0 {
            return Ok(Staged::unchanged(next_chunk));
        }
        writes.put(chunk_key(doc_id, next_chunk), bytes);
        Ok(Staged {
            next_chunk: next_chunk + 1,
            written,
            replaced: false,
        })
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
        for (k, _) in self.scan_logical(&prefix)? {
            let doc = DocId::from_slice(k.get(17..).unwrap_or_default())
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
        for prefix in DOC_RECORDS {
            writes.remove(key(prefix, doc));
        }
        for (k, _) in self.scan_logical(&key(CHUNK, doc))? {
            writes.remove(k);
        }
        self.stage_drop_outbox_list(writes, doc)?;
        Ok(())
    }

    /// The outbox list of `doc`: the bytes of its unacknowledged changes, in order, and the base
    /// they follow. Kept by edits so that a sync sends them without loading the document; `None`
    /// when there is no list (the document must be loaded to find its changes).
    pub fn outbox_list(&self, doc: DocId) -> Result<Option<OutboxList>, Error> {
        let Some(base) = self.get_logical(&key(OUTBOX_BASE, doc))? else {
            return Ok(None);
        };
        let changes = self
            .scan_logical(&key(OUTBOX_CHANGE, doc))?
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        Ok(Some((decode_heads(&base)?, changes)))
    }

    /// Adds to `writes` the changes of one edit to `doc`'s outbox list, starting the list (from
    /// `base`) if `start` says the document had nothing unacknowledged before the edit.
    pub fn stage_outbox_changes(
        &self,
        writes: &mut Writes,
        doc: DocId,
        start: Option<&[ChangeHash]>,
        changes: Vec<Vec<u8>>,
    ) -> Result<(), Error> {
        let first = match start {
            Some(base) => {
                self.stage_drop_outbox_list(writes, doc)?;
                writes.put(key(OUTBOX_BASE, doc), encode_heads(base));
                0
            }
            None => match self.scan_logical(&key(OUTBOX_CHANGE, doc))?.last() {
                Some((k, _)) => chunk_number(k)? + 1,
                None => 0,
            },
        };
        for (n, bytes) in (first..).zip(changes) {
            writes.put(numbered_key(OUTBOX_CHANGE, doc, n), bytes);
        }
        Ok(())
    }

    /// Adds to `writes` the removal of `doc`'s outbox list.
    pub fn stage_drop_outbox_list(&self, writes: &mut Writes, doc: DocId) -> Result<(), Error> {
        writes.remove(key(OUTBOX_BASE, doc));
        for (k, _) in self.scan_logical(&key(OUTBOX_CHANGE, doc))? {
            writes.remove(k);
        }
        Ok(())
    }

    /// Every record in the store, opened: `(logical key, value)`. For diagnostics and tests that
    /// check what a store holds beneath the API.
    pub fn dump(&self) -> Result<Vec<Record>, Error> {
        let mut out = Vec::new();
        for item in self.tree()?.iter() {
            let (physical, stored) = item?;
            if physical.as_ref() != KEY_CHECK {
                out.push(self.sealer.open(&physical, &stored)?);
            }
        }
        Ok(out)
    }

    /// The sealed bytes, exactly as written to disk, of every record about `doc`. Tests use them
    /// to show that a deleted document leaves not even its ciphertext in the files.
    pub fn sealed_records_of(&self, doc: DocId) -> Result<Vec<Vec<u8>>, Error> {
        let mut out = Vec::new();
        for prefix in DOC_RECORDS {
            if let Some(v) = self.tree()?.get(self.physical(&key(prefix, doc)))? {
                out.push(v.to_vec());
            }
        }
        for prefix in [CHUNK, OUTBOX_CHANGE] {
            for item in self.tree()?.scan_prefix(self.physical(&key(prefix, doc))) {
                out.push(item?.1.to_vec());
            }
        }
        Ok(out)
    }

    /// How many bytes the store's directory takes: sled's files (which grow by whole log
    /// segments) and the reserve kept for a full disk ([`crate::disk`]).
    pub fn size_on_disk(&self) -> Result<u64, Error> {
        self.dir_bytes(true)
    }

    /// The bytes of the files under the store's directory, the reserve counted or not.
    fn dir_bytes(&self, with_reserve: bool) -> Result<u64, Error> {
        let mut total = 0;
        let mut dirs = vec![self.dir.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).map_err(io)? {
                let entry = entry.map_err(io)?;
                let meta = entry.metadata().map_err(io)?;
                if meta.is_dir() {
                    dirs.push(entry.path());
                } else if with_reserve || entry.file_name() != disk::RESERVE {
                    total += meta.len();
                }
            }
        }
        Ok(total)
    }

    /// How many bytes the store's records take (keys and sealed values): what grows with every
    /// edit, where the files grow by whole segments.
    pub fn records_bytes(&self) -> Result<u64, Error> {
        let mut total = 0u64;
        for item in self.tree()?.iter() {
            let (k, v) = item?;
            total += (k.len() + v.len()) as u64;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKER: &[u8] = b"UNIQUE-MARKER-7f3a9c";

    fn test_key() -> StoreKey {
        StoreKey::from_bytes([3; KEY_BYTES])
    }

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

    /// A store holding `MARKER` in a document's snapshot; returns the document and the sealed
    /// bytes of its records as written to disk.
    fn store_with_marker(dir: &Path) -> (DeviceStore, DocId, Vec<Vec<u8>>) {
        let store = DeviceStore::open(dir, &test_key()).unwrap();
        let doc = DocId::new_random();
        let mut w = Writes::default();
        w.put(key(SNAPSHOT, doc), MARKER.to_vec());
        w.put(key(DIRTY, DocId::new_random()), b"kept".to_vec());
        store.commit(w).unwrap();
        let sealed = store.sealed_records_of(doc).unwrap();
        assert_eq!(sealed.len(), 1);
        (store, doc, sealed)
    }

    #[test]
    fn nothing_written_is_in_the_files_in_the_clear_and_it_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let (store, doc, _) = store_with_marker(&dir);
        let mut w = Writes::default();
        w.put_meta("name-of-a-person", MARKER.to_vec());
        store.commit(w).unwrap();
        store.commit(Writes::default()).unwrap();
        assert_eq!(store.get(SNAPSHOT, doc).unwrap().unwrap(), MARKER);
        assert_eq!(store.meta("name-of-a-person").unwrap().unwrap(), MARKER);
        assert!(store.dump().unwrap().iter().any(|(_, v)| v == MARKER));
        drop(store);
        assert!(
            !files_contain(tmp.path(), MARKER),
            "a value is in the clear"
        );
        assert!(
            !files_contain(tmp.path(), doc.as_bytes()),
            "an id is in the clear"
        );
        assert!(
            !files_contain(tmp.path(), b"name-of-a-person"),
            "a name is in the clear"
        );
    }

    #[test]
    fn a_wrong_key_is_refused_before_anything_is_read_and_the_right_one_still_works() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let (store, doc, _) = store_with_marker(&dir);
        drop(store);
        let wrong = StoreKey::from_bytes([4; KEY_BYTES]);
        assert!(matches!(
            DeviceStore::open(&dir, &wrong),
            Err(Error::WrongKey)
        ));
        assert!(matches!(
            DeviceStore::open_with(&dir, Unlock::Passphrase("a passphrase long enough")),
            Err(Error::WrongKey)
        ));
        let store = DeviceStore::open(&dir, &test_key()).unwrap();
        assert_eq!(store.get(SNAPSHOT, doc).unwrap().unwrap(), MARKER);
    }

    #[test]
    fn a_passphrase_store_opens_with_the_same_passphrase_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let pass = "correct horse battery staple";
        let store = DeviceStore::open_with(&dir, Unlock::Passphrase(pass)).unwrap();
        let mut w = Writes::default();
        w.put_meta("m", MARKER.to_vec());
        store.commit(w).unwrap();
        drop(store);
        assert!(matches!(
            DeviceStore::open_with(&dir, Unlock::Passphrase("correct horse battery stable")),
            Err(Error::WrongKey)
        ));
        let store = DeviceStore::open_with(&dir, Unlock::Passphrase(pass)).unwrap();
        assert_eq!(store.meta("m").unwrap().unwrap(), MARKER);
    }

    /// What automerge 0.12 saved for a list whose second element was updated by a change naming
    /// the first element's insert as its predecessor (made before the vendored check refused such
    /// changes, vendor/README.md); `Automerge::load` panics on these bytes.
    const A_DOCUMENT_AUTOMERGE_CANNOT_LOAD: &str = "856f4a83aec19c8c00bd010210aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa10bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb01acf297a2ffc8b99037d7bbefc720c4a5edd5c9343396f3c331a61e81953f56aa0701030303130323024003430256020e010402041104130615082104230234034204560457038001058101028301027e00017e01007e030102007e00017f00020700010300000103010002020000017d0002017f046c697374000303007f0104010102017f0203017f0003166162427e000102007f017f0401";

    #[test]
    fn a_snapshot_automerge_panics_on_is_damage_not_a_crash() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DeviceStore::open(&tmp.path().join("store"), &test_key()).unwrap();
        let hex = A_DOCUMENT_AUTOMERGE_CANNOT_LOAD;
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let doc = DocId::new_random();
        let mut w = Writes::default();
        w.put(key(SNAPSHOT, doc), bytes);
        store.commit(w).unwrap();
        match store.load(doc) {
            Err(Error::Corrupt(what)) => assert!(what.contains(&doc.to_string()), "{what}"),
            other => panic!("expected damage, got {:?}", other.map(|d| d.is_some())),
        }
    }

    #[test]
    fn a_record_moved_to_another_slot_or_altered_is_damage_not_data() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let (store, doc, sealed) = store_with_marker(&dir);
        let other = DocId::new_random();
        // Copy the sealed snapshot of `doc` into `other`'s slot, as an attacker with the files
        // could; then flip a byte of `doc`'s own.
        let tree = store.tree().unwrap();
        tree.insert(store.physical(&key(SNAPSHOT, other)), sealed[0].clone())
            .unwrap();
        let mut flipped = sealed[0].clone();
        *flipped.last_mut().unwrap() ^= 0x80;
        tree.insert(store.physical(&key(SNAPSHOT, doc)), flipped)
            .unwrap();
        assert!(matches!(store.get(SNAPSHOT, other), Err(Error::Corrupt(_))));
        assert!(matches!(store.get(SNAPSHOT, doc), Err(Error::Corrupt(_))));
    }

    #[test]
    fn a_deleted_document_survives_in_sled_files_until_the_store_is_rewritten() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let (store, doc, sealed) = store_with_marker(&dir);
        let mut w = Writes::default();
        store.stage_forget(&mut w, doc).unwrap();
        store.commit(w).unwrap();
        assert!(
            files_contain(&dir, &sealed[0]),
            "sled erased the bytes by itself; the rewrite is not what this test proves"
        );
        store.rewrite().unwrap();
        assert!(
            !files_contain(tmp.path(), &sealed[0]),
            "the sealed record survived the rewrite"
        );
        assert_eq!(
            store.ids_with(DIRTY).unwrap().len(),
            1,
            "the rewrite lost live data"
        );
        assert!(store.get(SNAPSHOT, doc).unwrap().is_none());
    }

    #[test]
    fn a_wipe_leaves_an_empty_store_under_the_same_key_and_no_trace() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let (store, _, sealed) = store_with_marker(&dir);
        store.wipe().unwrap();
        assert!(!files_contain(tmp.path(), &sealed[0]));
        assert!(store.ids_with(DIRTY).unwrap().is_empty());
        let mut w = Writes::default();
        w.put_meta("after", b"wipe".to_vec());
        store.commit(w).unwrap();
        assert!(
            store.meta("after").unwrap().is_some(),
            "the wiped store is not usable"
        );
        drop(store);
        assert!(DeviceStore::open(&dir, &test_key()).is_ok());
        assert!(matches!(
            DeviceStore::open(&dir, &StoreKey::from_bytes([9; KEY_BYTES])),
            Err(Error::WrongKey)
        ));
    }

    #[test]
    fn a_rewrite_interrupted_between_its_renames_is_finished_on_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let (store, _, _) = store_with_marker(&dir);
        drop(store);
        // The state a crash between `rename(dir, old)` and `rename(fresh, dir)` leaves.
        std::fs::rename(&dir, sibling(&dir, ".rewrite")).unwrap();
        std::fs::create_dir_all(sibling(&dir, ".old")).unwrap();
        let store = DeviceStore::open(&dir, &test_key()).unwrap();
        assert_eq!(store.ids_with(DIRTY).unwrap().len(), 1);
        assert!(!sibling(&dir, ".old").exists() && !sibling(&dir, ".rewrite").exists());
    }

    #[test]
    fn a_pending_rewrite_recorded_before_a_crash_runs_on_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let (store, doc, sealed) = store_with_marker(&dir);
        let mut w = Writes::default();
        store.stage_forget(&mut w, doc).unwrap();
        w.put_meta(META_REWRITE_PENDING, Vec::new());
        store.commit(w).unwrap();
        drop(store); // the process dies before it rewrites
        let store = DeviceStore::open(&dir, &test_key()).unwrap();
        assert!(!files_contain(tmp.path(), &sealed[0]));
        assert!(store.meta(META_REWRITE_PENDING).unwrap().is_none());
    }

    #[test]
    fn a_store_from_before_key_envelopes_is_resealed_under_a_data_key_and_reads_as_before() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let old = test_key();
        let doc = DocId::new_random();
        let v1_sealed;
        {
            // A format 1 store: sealed under the host's key itself, with a check tag.
            let inner = open_inner(&dir).unwrap();
            let sealer = Sealer::new(&old);
            let mut v1 = vec![keyring::FORMAT_V1];
            v1.extend_from_slice(&[6; SALT_BYTES]);
            v1.extend_from_slice(sealer.check_tag());
            inner.tree.insert(KEY_CHECK, v1).unwrap();
            let logical = key(SNAPSHOT, doc);
            let physical = physical_key(&sealer, &logical);
            v1_sealed = sealer.seal(&physical, &logical, MARKER);
            inner.tree.insert(physical, v1_sealed.clone()).unwrap();
            inner.db.flush().unwrap();
        }
        assert!(matches!(
            DeviceStore::open(&dir, &StoreKey::from_bytes([9; KEY_BYTES])),
            Err(Error::WrongKey)
        ));
        let store = DeviceStore::open(&dir, &old).unwrap();
        assert_eq!(store.get(SNAPSHOT, doc).unwrap().unwrap(), MARKER);
        assert!(
            !files_contain(&dir, &v1_sealed),
            "the record sealed under the old key survived"
        );
        drop(store);
        let store = DeviceStore::open(&dir, &old).unwrap();
        assert_eq!(store.get(SNAPSHOT, doc).unwrap().unwrap(), MARKER);
    }

    #[test]
    fn a_store_sealed_away_opens_only_through_its_escrow_and_keeps_no_copy_of_the_host_wrap() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let (store, doc, sealed) = store_with_marker(&dir);
        let device = DeviceId::new_random();
        let escrow = [7u8; 32];
        assert!(!store.has_escrow().unwrap());
        store.set_escrow(device, &escrow).unwrap();
        assert!(store.has_escrow().unwrap());
        let envelope = store.tree().unwrap().get(KEY_CHECK).unwrap().unwrap();
        let env = Envelope::parse(&envelope).unwrap();
        let host_wrap = env.clone().host_hex().unwrap();
        assert!(
            files_contain(&dir, host_wrap.as_bytes()),
            "positive control"
        );

        store.seal_away().unwrap();
        assert!(matches!(store.get(SNAPSHOT, doc), Err(Error::Wiped)));
        drop(store);
        assert!(
            !files_contain(tmp.path(), host_wrap.as_bytes()),
            "a copy of the host's wrap survived the wipe"
        );
        assert!(files_contain(&dir, &sealed[0]), "the sealed record is kept");
        assert!(matches!(
            DeviceStore::open(&dir, &test_key()),
            Err(Error::Wiped)
        ));
        assert_eq!(
            DeviceStore::wiped_escrow_device(&dir).unwrap(),
            Some(device)
        );
        assert!(matches!(
            DeviceStore::bring_back(&dir, Unlock::Key(&test_key()), &[8u8; 32]),
            Err(Error::Unrecoverable)
        ));

        // Brought back under a passphrase this time: the data key is wrapped anew.
        let pass = "a new passphrase after the wipe";
        let store = DeviceStore::bring_back(&dir, Unlock::Passphrase(pass), &escrow).unwrap();
        assert_eq!(store.get(SNAPSHOT, doc).unwrap().unwrap(), MARKER);
        drop(store);
        assert!(matches!(
            DeviceStore::open(&dir, &test_key()),
            Err(Error::WrongKey)
        ));
        let store = DeviceStore::open_with(&dir, Unlock::Passphrase(pass)).unwrap();
        assert_eq!(store.get(SNAPSHOT, doc).unwrap().unwrap(), MARKER);
        drop(store);
        assert_eq!(DeviceStore::wiped_escrow_device(&dir).unwrap(), None);
    }

    #[test]
    fn a_released_store_lets_another_handle_in_and_opens_again_at_its_next_use() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let (a, doc, _) = store_with_marker(&dir);
        let id = a.id().expect("a new store has an id").to_string();
        a.release();
        // Another handle (another process, in the field) opens and writes meanwhile.
        let b = DeviceStore::open(&dir, &test_key()).unwrap();
        assert_eq!(b.id(), Some(id.as_str()), "the same store, the same id");
        let mut w = Writes::default();
        w.put_meta("from-b", b"written while a let go".to_vec());
        b.commit(w).unwrap();
        // `a`'s next use waits for `b` to let go, then reads what `b` wrote.
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(b);
        });
        assert!(a.meta("from-b").unwrap().is_some());
        assert_eq!(a.get(SNAPSHOT, doc).unwrap().unwrap(), MARKER);
        letting_go.join().unwrap();
        let mut w = Writes::default();
        w.put_meta("from-a", b"after".to_vec());
        a.commit(w).unwrap();
        drop(a);
        let c = DeviceStore::open(&dir, &test_key()).unwrap();
        assert!(c.meta("from-a").unwrap().is_some());
    }

    #[test]
    fn opening_an_existing_store_never_creates_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mistyped");
        assert!(matches!(
            DeviceStore::open_existing(&dir, Unlock::Key(&test_key())),
            Err(Error::NoStore(_))
        ));
        assert!(!dir.exists(), "a directory was made");
        let (store, doc, _) = store_with_marker(&tmp.path().join("real"));
        drop(store);
        let store =
            DeviceStore::open_existing(&tmp.path().join("real"), Unlock::Key(&test_key())).unwrap();
        assert_eq!(store.get(SNAPSHOT, doc).unwrap().unwrap(), MARKER);
    }

    #[test]
    fn a_key_finder_makes_a_new_stores_key_under_its_id_and_is_told_it_at_every_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let kept = std::sync::Mutex::new(std::collections::HashMap::new());
        let find = |o: &Opening<'_>| -> Result<StoreKey, Error> {
            let id =
                o.id.expect("every store this version makes has an id")
                    .to_string();
            let mut kept = kept.lock().unwrap();
            if o.new {
                assert!(!o.opens(&test_key()));
                kept.insert(id.clone(), test_key());
            }
            let key = kept.get(&id).cloned().ok_or(Error::KeyUnavailable(id))?;
            assert!(o.new || o.opens(&key));
            Ok(key)
        };
        let store = DeviceStore::open_with(&dir, Unlock::Find(&find)).unwrap();
        let id = store.id().unwrap().to_string();
        drop(store);
        assert_eq!(kept.lock().unwrap().len(), 1);
        let store = DeviceStore::open_existing(&dir, Unlock::Find(&find)).unwrap();
        assert_eq!(store.id(), Some(id.as_str()));
        let plain = DeviceStore::open(&tmp.path().join("other"), &test_key()).unwrap();
        assert_ne!(plain.id(), Some(id.as_str()));
    }

    #[test]
    fn a_store_written_in_the_clear_is_refused_with_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        {
            let inner = open_inner(&dir).unwrap();
            inner.tree.insert(b"hplain", b"{}".to_vec()).unwrap();
            inner.db.flush().unwrap();
        }
        assert!(matches!(
            DeviceStore::open(&dir, &test_key()),
            Err(Error::Unencrypted(_))
        ));
    }
}
