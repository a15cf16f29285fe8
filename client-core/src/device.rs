//! The device API: open a store, sign in, read and edit case records, sync.
//!
//! Every edit loads the document (from memory once loaded, [`crate::doc_cache`]), applies a
//! typed edit from `casenote_protocol::record`, and commits the new change together with the
//! document's outbox mark in one flushed batch before returning. Sync drives [`crate::engine`]
//! over a [`Transport`] and stores what comes back the same way, so a crash at any moment leaves
//! the store either before or after each step.

mod fresh;
mod sealed;
mod statutory;
mod views;

pub use fresh::{Alert, Freshness};
pub use sealed::AccessList;

use crate::crypto::StoreKey;
use crate::engine::{self, Outgoing, Plan};
use crate::error::Error;
use crate::fields;
use crate::lease::{self, Anchor, UptimeClock};
use crate::store::{self, DeviceStore, Header, Unlock, Writes};
use crate::tls::{Endpoint, ServerOptions};
use crate::transport::{HttpTransport, Transport, TransportError};
use automerge::{ActorId, Author, AutoCommit, ChangeHash, ReadDoc};
use casenote_protocol::record::{self, field, Amends, Identity, NewNote, NoteAuthor, NoteKind};
use casenote_protocol::wire::{self, Rejection, WhoAmI};
use casenote_protocol::{limits, CaseId, DocId, DocKind, ErrorCode, Seq};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// The device's clock, in ms since the Unix epoch. Injected so tests can make it wrong.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    })
}

/// The device's two clocks: the wall clock (note times, the clock sent with a sync) and the
/// monotonic clock that the offline lease counts with ([`crate::lease`]).
#[derive(Clone)]
pub struct Clocks {
    pub wall: Clock,
    pub uptime: UptimeClock,
}

impl Clocks {
    /// The operating system's clocks.
    pub fn system() -> Self {
        Self {
            wall: system_clock(),
            uptime: lease::system_uptime(),
        }
    }

    /// A wall clock alone: the lease counts with it (a test that moves a clock by hand).
    pub fn wall_only(wall: Clock) -> Self {
        Self {
            wall,
            uptime: lease::no_uptime(),
        }
    }
}

/// One line of `case list`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaseSummary {
    pub case_id: CaseId,
    pub name: String,
    pub notes: usize,
    pub drafts: usize,
    pub unsynced_docs: usize,
}

/// What one `sync` did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SyncReport {
    pub requests: usize,
    pub bytes_up: usize,
    pub bytes_down: usize,
    pub docs_up: usize,
    pub changes_up: usize,
    pub changes_stored: u64,
    pub changes_duplicate: u64,
    pub docs_down: usize,
    pub changes_down: usize,
    pub full_history_resends: usize,
    /// Times the server said its log was restored, so this device re-sent everything.
    pub resets: usize,
    pub rejections: Vec<Rejection>,
    pub evicted: usize,
    /// Documents this device holds that it could not read (damage its store detected): skipped,
    /// so that every other document still syncs; what the server sent for them is kept beside
    /// them, unread.
    #[serde(default)]
    pub damaged: Vec<DocId>,
    pub cursor: Seq,
    pub clock_offset_ms: i64,
    pub clock_flagged: bool,
    pub elapsed_ms: u64,
    pub finished_at_ms: i64,
}

/// A refused document, as `status` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Refusal {
    pub doc_id: DocId,
    pub code: String,
    pub reason: String,
}

/// What `status` shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub server: Option<String>,
    pub staff_id: Option<String>,
    pub docs_held: usize,
    pub unsynced_docs: usize,
    pub unsynced_changes: usize,
    pub unsynced_bytes: usize,
    pub refused: Vec<Refusal>,
    pub cursor: Seq,
    pub last_sync: Option<SyncReport>,
    /// What the store's directory takes on disk: sled's files, which grow by whole log segments,
    /// and the reserve kept for a full disk.
    pub store_bytes: u64,
    /// What the store's records take (keys and sealed values): this grows with every edit.
    #[serde(default)]
    pub records_bytes: u64,
    /// Payload sizes: bytes sent and received by the last sync, and by every sync since the
    /// store was created.
    pub bytes_up_last: usize,
    pub bytes_down_last: usize,
    pub bytes_up_total: u64,
    pub bytes_down_total: u64,
    pub lease: LeaseStatus,
    /// How old the device's records are ([`Device::freshness`]).
    #[serde(default)]
    pub freshness: Option<Freshness>,
    /// Views of records waiting to be recorded in the server's audit chain.
    #[serde(default)]
    pub views_queued: usize,
    /// Documents with unsent edits that this device cannot read (its store found them
    /// damaged): counted as unsynced, their edits not counted.
    #[serde(default)]
    pub damaged: Vec<DocId>,
}

/// How long this device may stay out of touch with the server, as `status` shows it. Times are
/// on the device's wall clock now: the time away is counted as [`crate::lease`] says.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// When the device last reached the server (ms since the epoch): now minus the time away.
    pub last_contact_ms: Option<i64>,
    /// When it locks, and when it wipes itself, if it does not reach the server before.
    pub locks_at_ms: Option<i64>,
    pub wipes_at_ms: Option<i64>,
    pub locked: bool,
}

/// Byte totals over every sync, kept across restarts for `status`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Traffic {
    up: u64,
    down: u64,
}

/// What it takes to open the live channel of a store's server without the store, so that a
/// listener on its own thread never holds the store ([`Device::live_connector`]).
pub struct LiveConnector {
    server: Endpoint,
    token: String,
}

impl LiveConnector {
    /// Opens the live channel ([`crate::live`]).
    pub fn connect(&self) -> Result<crate::live::LiveListener, Error> {
        Ok(crate::live::connect_to(&self.server, &self.token)?)
    }
}

/// Removes what a sign-in that failed had created in `dir`: sled's files and the reserve, and
/// the directory itself if it made it. Best effort: the store holds nothing yet.
fn remove_new_store(dir: &Path, made_dir: bool) {
    if made_dir {
        let _ = std::fs::remove_dir_all(dir);
        return;
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = matches!(
            name.as_ref(),
            "db" | "conf" | "blobs" | crate::disk::RESERVE
        ) || name.starts_with("snap.");
        if ours {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
        }
    }
}

/// A case record store on one device, signed in as one member of staff.
pub struct Device {
    store: DeviceStore,
    clocks: Clocks,
    /// Views this handle could not record because the disk was full ([`views`]).
    views_unrecorded: std::sync::atomic::AtomicU64,
    /// Held from loading a held document to committing what was made of it (an edit, a sync's
    /// answer), so that two threads using one handle never both build on the same state (each
    /// would write the same next chunk, and one's changes would be lost).
    doc_writes: Mutex<()>,
}

/// A load with damage told apart from other failures: `None` when the store found the document
/// damaged (the callers skip it and name it), any other error as it is.
fn unless_damaged<T>(loaded: Result<T, Error>) -> Result<Option<T>, Error> {
    match loaded {
        Err(Error::Corrupt(_)) => Ok(None),
        other => other.map(Some),
    }
}

/// `changes` as they travel, one after another.
fn raw_bytes(changes: &[automerge::Change]) -> Vec<u8> {
    changes
        .iter()
        .flat_map(|c| c.raw_bytes().iter().copied())
        .collect()
}

/// The first chunk number of what a sync keeps beside a document it cannot read
/// ([`Device::keep_beside_damaged`]): far past any its edits reach (they are compacted after
/// `DEVICE_CHUNKS_BEFORE_COMPACT`).
const DAMAGED_CHUNKS_FROM: u64 = 1 << 62;

const META_SERVER: &str = "server";
/// The PEM of the CA the device trusts for its server, when it was given one at sign-in.
const META_SERVER_CA: &str = "server_ca";
/// Present when plain http to a non-loopback server was explicitly allowed at sign-in.
const META_SERVER_INSECURE_HTTP: &str = "server_insecure_http";
const META_TOKEN: &str = "token";
const META_WHOAMI: &str = "whoami";
const META_ACTOR: &str = "actor";
const META_CURSOR: &str = "cursor";
const META_LAST_SYNC: &str = "last_sync";
const META_LOG_ID: &str = "log_id";
const META_CONFIRM: &str = "confirm_reconcile";
/// The offline lease's anchor at the last contact with the server ([`lease::Anchor`], JSON).
const META_LEASE_ANCHOR: &str = "lease_anchor";
/// Stores from before lease anchors: the device clock at the last contact, and the highest
/// device clock seen. Read once, replaced by an anchor at the next contact.
const META_LAST_CONTACT: &str = "last_contact";
const META_CLOCK_HIGH: &str = "clock_high";
/// Present while the device is locked for want of contact.
const META_LOCKED: &str = "locked";
const META_LEASE: &str = "lease";
const META_TRAFFIC: &str = "traffic";

/// Adds to `w` a contact with the server: its lease anchor, replacing any older form.
fn stage_contact(w: &mut Writes, anchor: Vec<u8>) {
    w.put_meta(META_LEASE_ANCHOR, anchor);
    w.remove(store::meta_key(META_LAST_CONTACT));
    w.remove(store::meta_key(META_CLOCK_HIGH));
}

/// Adds to `w` the server a sign-in was made to: its address and what the device trusts for it,
/// replacing what an earlier sign-in kept.
fn stage_server(w: &mut Writes, server: &Endpoint) {
    w.put_meta(META_SERVER, server.url().as_bytes());
    match &server.options().ca_pem {
        Some(pem) => w.put_meta(META_SERVER_CA, pem.clone()),
        None => w.remove(store::meta_key(META_SERVER_CA)),
    }
    if server.options().allow_insecure_http {
        w.put_meta(META_SERVER_INSECURE_HTTP, b"1".to_vec());
    } else {
        w.remove(store::meta_key(META_SERVER_INSECURE_HTTP));
    }
}

/// The escrow key in a server's answer, as bytes.
fn escrow_key_bytes(key: &wire::EscrowKey) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    let bytes = zeroize::Zeroizing::new(
        hex::decode(&key.wrap_key)
            .map_err(|_| Error::Protocol("an escrow key that is not hex".into()))?,
    );
    if bytes.len() != limits::ESCROW_KEY_BYTES {
        return Err(Error::Protocol(format!(
            "an escrow key of {} bytes",
            bytes.len()
        )));
    }
    Ok(bytes)
}

fn json_bytes(v: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(v).expect("plain data serialises")
}

/// Whether two sets of heads are the same, in any order.
fn same_heads(a: &[ChangeHash], b: &[ChangeHash]) -> bool {
    a.len() == b.len() && a.iter().all(|h| b.contains(h))
}

fn case_doc(case: CaseId) -> DocId {
    DocId(case.0)
}

impl Device {
    /// Opens (or creates) the store in `dir`, encrypted under `key`, with the system's clocks.
    pub fn open(dir: &Path, key: &StoreKey) -> Result<Self, Error> {
        Self::open_with(dir, Unlock::Key(key), Clocks::system())
    }

    /// Opens the store with an injected wall clock and no monotonic clock: the offline lease
    /// counts with the wall clock alone (tests that move a clock by hand).
    pub fn open_with_clock(dir: &Path, key: &StoreKey, clock: Clock) -> Result<Self, Error> {
        Self::open_with(dir, Unlock::Key(key), Clocks::wall_only(clock))
    }

    /// Opens the store with a key or a passphrase, and the device's clocks. A device out of
    /// touch with the server for longer than its lease wipes itself here
    /// ([`Error::ExpiredAndWiped`]).
    pub fn open_with(dir: &Path, unlock: Unlock<'_>, clocks: Clocks) -> Result<Self, Error> {
        Self::open_checked(DeviceStore::open_with(dir, unlock)?, clocks)
    }

    /// Opens the store in `dir` as [`Device::open_with`] does, but never creates one: a
    /// directory without a store is [`Error::NoStore`], and nothing is written there. What every
    /// call but signing in should use, so that a mistyped directory is an error, not a new
    /// empty store.
    pub fn open_existing(dir: &Path, unlock: Unlock<'_>, clocks: Clocks) -> Result<Self, Error> {
        Self::open_checked(DeviceStore::open_existing(dir, unlock)?, clocks)
    }

    /// A device over an open store, its offline lease checked.
    fn open_checked(store: DeviceStore, clocks: Clocks) -> Result<Self, Error> {
        let device = Self::open_unchecked(store, clocks)?;
        match device.unlocked() {
            Err(e @ Error::ExpiredAndWiped { .. }) => Err(e),
            // Locked still opens: the user signs in again through this handle.
            _ => Ok(device),
        }
    }

    /// A device over an open store, before its offline lease is checked.
    fn open_unchecked(store: DeviceStore, clocks: Clocks) -> Result<Self, Error> {
        if store.meta(META_ACTOR)?.is_none() {
            let mut w = Writes::default();
            w.put_meta(META_ACTOR, ActorId::random().to_bytes().to_vec());
            store.commit(w)?;
        }
        Ok(Self {
            store,
            clocks,
            views_unrecorded: Default::default(),
            doc_writes: Mutex::new(()),
        })
    }

    /// Checks the offline lease before records are touched: a device out of touch for longer
    /// than the lock time is locked (and stays locked until its user signs in again, whatever
    /// its clocks say later); past the wipe time it wipes itself. Time away is counted from the
    /// server's time at the last contact with the monotonic clock ([`crate::lease`]), so a wrong
    /// wall clock neither wipes the device early nor keeps it alive. Reading never depends on a
    /// write succeeding: what the check records (a new boot's anchor, the lock) is best effort,
    /// so a full disk still reads.
    fn unlocked(&self) -> Result<(), Error> {
        let Some(anchor) = self.lease_anchor()? else {
            return Ok(()); // never reached a server: holds nothing from it
        };
        let policy: wire::Lease = self.store.meta_json(META_LEASE)?.unwrap_or_default();
        let away = self.away(&anchor);
        // Past the wipe time a store whose key is escrowed is sealed away: every record stays,
        // and only its user signing in again brings it back. One without escrow (never signed in
        // since escrow came) only locks: no clock may destroy an edit.
        if away >= policy.wipe_after_ms && self.store.has_escrow()? {
            tracing::warn!(
                away_ms = away,
                "offline lease expired: wiping the device store"
            );
            self.store.seal_away()?;
            return Err(Error::ExpiredAndWiped {
                days: policy.wipe_after_ms / (24 * 3600 * 1000),
            });
        }
        let locked = self.store.meta(META_LOCKED)?.is_some();
        if locked || away >= policy.lock_after_ms {
            if !locked {
                tracing::warn!(away_ms = away, "offline lease: locking the device store");
                let mut w = Writes::default();
                w.put_meta(META_LOCKED, Vec::new());
                self.commit_best_effort(w, "the lock");
            }
            return Err(Error::Locked {
                hours: policy.lock_after_ms / (3600 * 1000),
            });
        }
        Ok(())
    }

    /// The lease's anchor at the last contact; for a store from before anchors, one made from
    /// its last contact and highest clock reading (device clock).
    fn lease_anchor(&self) -> Result<Option<Anchor>, Error> {
        if let Some(anchor) = self.store.meta_json(META_LEASE_ANCHOR)? {
            return Ok(Some(anchor));
        }
        let Some(last) = self.meta_i64(META_LAST_CONTACT)? else {
            return Ok(None);
        };
        let high = self.meta_i64(META_CLOCK_HIGH)?.unwrap_or(last);
        Ok(Some(Anchor {
            counted_ms: (high - last).max(0),
            ..Anchor::at_contact(last, last, None)
        }))
    }

    /// Time away from the server now; a new boot's anchor is kept if it can be.
    fn away(&self, anchor: &Anchor) -> i64 {
        let (away, reanchor) = anchor.away(self.now(), (self.clocks.uptime)().as_ref());
        if let Some(reanchor) = reanchor {
            let mut w = Writes::default();
            w.put_meta(META_LEASE_ANCHOR, json_bytes(&reanchor));
            self.commit_best_effort(w, "the lease anchor");
        }
        away
    }

    /// Commits bookkeeping that reading must not depend on: a failure (a full disk) is logged.
    fn commit_best_effort(&self, w: Writes, what: &'static str) {
        if let Err(e) = self.store.commit(w) {
            tracing::warn!(error = %e, what, "could not record lease bookkeeping; carrying on");
        }
    }

    /// The lease anchor of a contact now, at the server's time `server_ms`.
    fn contact_anchor(&self, server_ms: i64) -> Vec<u8> {
        json_bytes(&Anchor::at_contact(
            server_ms,
            self.now(),
            (self.clocks.uptime)(),
        ))
    }

    /// A meta value of 8 bytes (a number, big-endian).
    fn meta_8(&self, name: &str) -> Result<Option<[u8; 8]>, Error> {
        self.store
            .meta(name)?
            .map(|v| {
                v.as_slice()
                    .try_into()
                    .map_err(|_| Error::Corrupt(format!("meta {name}")))
            })
            .transpose()
    }

    fn meta_i64(&self, name: &str) -> Result<Option<i64>, Error> {
        Ok(self.meta_8(name)?.map(i64::from_be_bytes))
    }

    /// The offline lease as `status` shows it.
    fn lease_status(&self) -> Result<LeaseStatus, Error> {
        let policy: wire::Lease = self.store.meta_json(META_LEASE)?.unwrap_or_default();
        let last = self
            .lease_anchor()?
            .map(|anchor| self.now() - self.away(&anchor));
        Ok(LeaseStatus {
            last_contact_ms: last,
            locks_at_ms: last.map(|l| l + policy.lock_after_ms),
            wipes_at_ms: last.map(|l| l + policy.wipe_after_ms),
            locked: self.store.meta(META_LOCKED)?.is_some(),
        })
    }

    /// The directory of this device's store.
    pub fn store_dir(&self) -> &Path {
        self.store.dir()
    }

    /// The store's id, which names it wherever it is moved ([`DeviceStore::id`]).
    pub fn store_id(&self) -> Option<&str> {
        self.store.id()
    }

    /// Lets go of the store's files until the next call, so that other processes can use the
    /// store meanwhile ([`DeviceStore::release`]): between the syncs of `sync --watch`, or an
    /// app's background syncs. The next call opens them again, waiting for another process
    /// that holds them (up to `DEVICE_STORE_BUSY_WAIT_MS`, then [`Error::Busy`]).
    pub fn release(&self) {
        self.store.release();
    }

    fn now(&self) -> i64 {
        (self.clocks.wall)()
    }

    /// The right to load a held document and commit what is made of it ([`Device::doc_writes`]).
    fn doc_writes(&self) -> MutexGuard<'_, ()> {
        self.doc_writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The device's wall clock (ms since the epoch), as its records' times use it: what an
    /// alert's age is counted against.
    pub fn clock_ms(&self) -> i64 {
        self.now()
    }

    /// Signs this store in to `server` with `token`, after checking the token with the server,
    /// trusting the built-in roots. A malformed address is [`Error::BadServerUrl`], and plain
    /// http to anything but loopback [`Error::InsecureHttp`], before any request.
    pub fn login(&self, server: &str, token: &str) -> Result<WhoAmI, Error> {
        self.login_to(&Endpoint::new(server, ServerOptions::default())?, token)
    }

    /// [`Device::login`] to a checked server: later syncs and the live channel use the same
    /// address and trust (its CA, if it has one), which the store keeps.
    pub fn login_to(&self, server: &Endpoint, token: &str) -> Result<WhoAmI, Error> {
        self.login_with(&HttpTransport::to(server, token), server, token)
    }

    /// [`Device::login_to`] over a given transport.
    pub fn login_with(
        &self,
        transport: &dyn Transport,
        server: &Endpoint,
        token: &str,
    ) -> Result<WhoAmI, Error> {
        let who = transport.whoami()?;
        if let Some(current) = self.store.meta_json::<WhoAmI>(META_WHOAMI)? {
            if current.staff_id != who.staff_id {
                return Err(Error::OtherUser {
                    current: current.staff_id.to_string(),
                    other: who.staff_id.to_string(),
                });
            }
        }
        // The store's data key is escrowed under this enrolment's key, so that a wipe by the
        // offline lease can be undone by signing in again.
        let escrow = transport.escrow(who.device_id)?;
        self.store
            .set_escrow(who.device_id, &escrow_key_bytes(&escrow)?)?;
        // Signing in is contact with the server: it unlocks a locked device and renews the lease.
        let mut w = Writes::default();
        w.remove(store::meta_key(META_LOCKED));
        stage_contact(&mut w, self.contact_anchor(escrow.server_time_ms));
        stage_server(&mut w, server);
        w.put_meta(META_TOKEN, token.as_bytes());
        w.put_meta(
            META_WHOAMI,
            serde_json::to_vec(&who).expect("WhoAmI serialises"),
        );
        self.store.commit(w)?;
        Ok(who)
    }

    /// Opens the store in `dir` and signs it in to `server` with `token` (what `login` does). A
    /// store the offline lease wiped is brought back first, unsynced edits included, with its
    /// escrow key from the server: only for a token of the same member of staff, and never for a
    /// revoked device ([`Error::Unrecoverable`]). A new store is created only once the server
    /// has accepted the token, and a sign-in that fails leaves no new store behind.
    /// The server is checked as [`Device::login`] checks it, before anything else.
    pub fn sign_in(
        dir: &Path,
        unlock: Unlock<'_>,
        clocks: Clocks,
        server: &str,
        token: &str,
    ) -> Result<(Self, WhoAmI), Error> {
        let server = Endpoint::new(server, ServerOptions::default())?;
        Self::sign_in_to(dir, unlock, clocks, &server, token)
    }

    /// [`Device::sign_in`] to a checked server (with its CA, say).
    pub fn sign_in_to(
        dir: &Path,
        unlock: Unlock<'_>,
        clocks: Clocks,
        server: &Endpoint,
        token: &str,
    ) -> Result<(Self, WhoAmI), Error> {
        Self::sign_in_with(
            &HttpTransport::to(server, token),
            dir,
            unlock,
            clocks,
            (server, token),
        )
    }

    /// [`Device::sign_in`] over a given transport.
    pub fn sign_in_with(
        transport: &dyn Transport,
        dir: &Path,
        unlock: Unlock<'_>,
        clocks: Clocks,
        credentials: (&Endpoint, &str),
    ) -> Result<(Self, WhoAmI), Error> {
        if store::exists(dir) {
            return Self::sign_in_store(transport, dir, unlock, clocks, credentials);
        }
        // A token the server refuses, or a server out of reach, creates nothing.
        transport.whoami()?;
        let made_dir = !dir.exists();
        let signed_in = Self::sign_in_store(transport, dir, unlock, clocks, credentials);
        if signed_in.is_err() {
            remove_new_store(dir, made_dir);
        }
        signed_in
    }

    /// [`Device::sign_in_with`] once it is settled that the store may be created.
    fn sign_in_store(
        transport: &dyn Transport,
        dir: &Path,
        unlock: Unlock<'_>,
        clocks: Clocks,
        (server, token): (&Endpoint, &str),
    ) -> Result<(Self, WhoAmI), Error> {
        let device = match Self::open_with(dir, unlock, clocks.clone()) {
            Err(Error::Wiped | Error::ExpiredAndWiped { .. }) => {
                Self::bring_back(transport, dir, unlock, clocks)?
            }
            other => other?,
        };
        let who = device.login_with(transport, server, token)?;
        Ok((device, who))
    }

    /// Brings back a store the offline lease wiped, with the escrow key the server hands this
    /// token for it.
    fn bring_back(
        transport: &dyn Transport,
        dir: &Path,
        unlock: Unlock<'_>,
        clocks: Clocks,
    ) -> Result<Self, Error> {
        let escrowed = DeviceStore::wiped_escrow_device(dir)?.ok_or(Error::Unrecoverable)?;
        let key = match transport.escrow(escrowed) {
            Ok(key) => key,
            Err(TransportError::Server { status: 404, .. }) => return Err(Error::Unrecoverable),
            Err(e) => return Err(e.into()),
        };
        let store = DeviceStore::bring_back(dir, unlock, &escrow_key_bytes(&key)?)?;
        tracing::info!(device = %escrowed, "a wiped device store was brought back");
        // Not checked against the lease: the sign-in that follows is the contact that renews it.
        Self::open_unchecked(store, clocks)
    }

    /// Who this store is signed in as.
    pub fn whoami(&self) -> Result<WhoAmI, Error> {
        self.store.meta_json(META_WHOAMI)?.ok_or(Error::NotLoggedIn)
    }

    /// The server and token this store is signed in with. A locked device does not hand out its
    /// token: its user signs in again first.
    /// The address is checked again as at sign-in (a store signed in before devices refused
    /// plain http to other hosts is refused here, [`Error::InsecureHttp`]).
    fn credentials(&self) -> Result<(Endpoint, String), Error> {
        self.unlocked()?;
        let server = self
            .store
            .meta_string(META_SERVER)?
            .ok_or(Error::NotLoggedIn)?;
        let options = ServerOptions {
            ca_pem: self.store.meta(META_SERVER_CA)?,
            allow_insecure_http: self.store.meta(META_SERVER_INSECURE_HTTP)?.is_some(),
        };
        let token = self
            .store
            .meta_string(META_TOKEN)?
            .ok_or(Error::NotLoggedIn)?;
        Ok((Endpoint::new(&server, options)?, token))
    }

    /// A transport to the server this store is signed in to, trusting what it was signed in
    /// with.
    pub fn http_transport(&self) -> Result<HttpTransport, Error> {
        let (server, token) = self.credentials()?;
        Ok(HttpTransport::to(&server, &token))
    }

    /// Opens the live channel to the server this store is signed in to ([`crate::live`]).
    pub fn live(&self) -> Result<crate::live::LiveListener, Error> {
        self.live_connector()?.connect()
    }

    /// What it takes to open the live channel later, from another thread, without the store.
    pub fn live_connector(&self) -> Result<LiveConnector, Error> {
        let (server, token) = self.credentials()?;
        Ok(LiveConnector { server, token })
    }

    fn actor(&self) -> Result<ActorId, Error> {
        let bytes = self.store.meta(META_ACTOR)?.ok_or(Error::NotLoggedIn)?;
        Ok(ActorId::from(bytes.to_vec()))
    }

    fn load_kind(
        &self,
        doc_id: DocId,
        want: DocKind,
        what: &'static str,
    ) -> Result<(AutoCommit, u64), Error> {
        self.load_kind_for(doc_id, want, what, false)
    }

    /// [`Device::load_kind`], to read (`to_write` false: a copy) or to change it (true: under
    /// [`Device::doc_writes`], [`DeviceStore::load_to_write`]).
    fn load_kind_for(
        &self,
        doc_id: DocId,
        want: DocKind,
        what: &'static str,
        to_write: bool,
    ) -> Result<(AutoCommit, u64), Error> {
        // The offline lease is checked where a call enters: here for one document, in `cases`,
        // `require_case`, `edit` and `sync_with` for the rest, not again for every load.
        self.unlocked()?;
        let header = self
            .store
            .header(doc_id)?
            .ok_or_else(|| Error::NotFound(what, doc_id.to_string()))?;
        if header.kind != want {
            return Err(Error::WrongKind(doc_id, header.kind, want));
        }
        let loaded = if to_write {
            self.store.load_to_write(doc_id)?
        } else {
            self.store.load(doc_id)?
        };
        loaded.ok_or_else(|| Error::NotFound(what, doc_id.to_string()))
    }

    /// Prepares a document for a local edit: this device's actor, this staff member as author.
    fn as_editor(&self, mut doc: AutoCommit) -> Result<AutoCommit, Error> {
        let who = self.whoami()?;
        // set_author picks a fresh actor when the author changes, so the device actor goes last.
        doc.set_author(Some(Author::from(who.staff_id.as_bytes().to_vec())));
        doc.set_actor(self.actor()?);
        Ok(doc)
    }

    /// Runs one edit on a document and makes it durable, outbox mark included, before returning.
    fn edit<T>(
        &self,
        doc_id: DocId,
        header: Header,
        existing: Option<(AutoCommit, u64)>,
        f: impl FnOnce(&mut AutoCommit) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.unlocked()?;
        let is_new = existing.is_none();
        let (doc, next_chunk) = existing.unwrap_or_else(|| (AutoCommit::new(), 0));
        let mut doc = self.as_editor(doc)?;
        let before = doc.get_heads();
        let out = f(&mut doc)?;
        // The device's clock goes into the change (it may be wrong; the server keeps its own).
        doc.commit_with(automerge::transaction::CommitOptions::default().with_time(self.now()));
        if doc.get_heads() == before {
            return Ok(out);
        }
        let mut w = Writes::default();
        if is_new {
            self.store.stage_header(&mut w, doc_id, &header);
        }
        let staged = self
            .store
            .stage_doc(&mut w, doc_id, &mut doc, &before, next_chunk)?;
        // The outbox list: this edit's changes, kept as bytes so that sync sends them without
        // loading the document. A list starts only when the document had nothing unsent (its
        // heads were the server's), so it always holds every change since its base.
        let new_changes: Vec<Vec<u8>> = doc
            .get_changes(&before)
            .iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        if self.store.has(store::OUTBOX_BASE, doc_id)? {
            self.store
                .stage_outbox_changes(&mut w, doc_id, None, new_changes)?;
        } else {
            let base = self.store.base(doc_id)?;
            if same_heads(&base, &before) {
                self.store
                    .stage_outbox_changes(&mut w, doc_id, Some(&base), new_changes)?;
            }
        }
        // The outbox mark holds the heads it covers, so an acknowledgement of exactly these
        // heads can clear it without loading the document again.
        w.put(
            store::key(store::DIRTY, doc_id),
            store::encode_heads(&doc.get_heads()),
        );
        w.keep(doc_id, doc, staged);
        self.store.commit(w)?;
        Ok(out)
    }

    /// Loads an existing document of `kind` and runs one durable edit on it.
    fn edit_existing<T>(
        &self,
        doc_id: DocId,
        kind: DocKind,
        what: &'static str,
        f: impl FnOnce(&mut AutoCommit) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let _writing = self.doc_writes();
        let (doc, next) = self.load_kind_for(doc_id, kind, what, true)?;
        let header = Header {
            case_id: self
                .store
                .header(doc_id)?
                .map(|h| h.case_id)
                .ok_or_else(|| Error::NotFound(what, doc_id.to_string()))?,
            kind,
        };
        self.edit(doc_id, header, Some((doc, next)), f)
    }

    fn author(&self) -> Result<NoteAuthor, Error> {
        let who = self.whoami()?;
        Ok(NoteAuthor {
            staff_id: who.staff_id.to_string(),
            role: who.role.clone(),
            org: who.org.clone(),
            team: who
                .teams
                .first()
                .map(|t| t.name.clone())
                .unwrap_or_default(),
        })
    }

    /// Opens a new case (its case document and its plan); returns the case id.
    pub fn case_new(&self, who: &Identity) -> Result<CaseId, Error> {
        self.whoami()?;
        record::statutory::check_identity(who, self.now())?;
        let case = CaseId::new_random();
        let header = Header {
            case_id: case,
            kind: DocKind::Case,
        };
        self.edit(case_doc(case), header, None, |d| {
            Ok(record::init_case(d, case, who)?)
        })?;
        let plan = Header {
            case_id: case,
            kind: DocKind::Plan,
        };
        self.edit(DocId::new_random(), plan, None, |d| {
            Ok(record::init_plan(d, case)?)
        })?;
        Ok(case)
    }

    fn docs_of(&self, case: CaseId) -> Result<Vec<(DocId, Header)>, Error> {
        self.store.docs_of_case(case)
    }

    fn require_case(&self, case: CaseId) -> Result<(), Error> {
        self.unlocked()?;
        match self.store.header(case_doc(case))? {
            Some(h) if h.kind == DocKind::Case => Ok(()),
            _ => Err(Error::NotFound("case", case.to_string())),
        }
    }

    fn plan_of(&self, case: CaseId) -> Result<DocId, Error> {
        self.require_case(case)?;
        self.docs_of(case)?
            .into_iter()
            .filter(|(_, h)| h.kind == DocKind::Plan)
            .map(|(id, _)| id)
            .min()
            .ok_or_else(|| Error::NotFound("plan for case", case.to_string()))
    }

    /// Every case on the device.
    pub fn cases(&self) -> Result<Vec<CaseSummary>, Error> {
        self.unlocked()?;
        let headers = self.store.headers()?;
        let dirty: HashSet<DocId> = self
            .store
            .ids_with(store::DIRTY)?
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        let mut out = Vec::new();
        for (doc_id, h) in headers.iter().filter(|(_, h)| h.kind == DocKind::Case) {
            let Some((doc, _)) = self.store.load(*doc_id)? else {
                continue;
            };
            let mut notes = 0;
            let mut drafts = 0;
            let mut unsynced = 0;
            for (id, other) in headers.iter().filter(|(_, o)| o.case_id == h.case_id) {
                if dirty.contains(id) {
                    unsynced += 1;
                }
                if other.kind == DocKind::Note {
                    notes += 1;
                    if let Some((n, _)) = self.store.load(*id)? {
                        if record::note_status(&n) == record::NoteStatus::Draft {
                            drafts += 1;
                        }
                    }
                }
            }
            out.push(CaseSummary {
                case_id: h.case_id,
                name: record::get_str(&doc, &automerge::ROOT, field::NAME).unwrap_or_default(),
                notes,
                drafts,
                unsynced_docs: unsynced,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.case_id.cmp(&b.case_id)));
        Ok(out)
    }

    fn new_note(
        &self,
        case: CaseId,
        kind: NoteKind,
        text: &str,
        occurred_at_ms: Option<i64>,
        amends: Option<Amends>,
    ) -> Result<DocId, Error> {
        self.require_case(case)?;
        let now = self.now();
        let note = NewNote {
            case_id: case,
            kind,
            author: self.author()?,
            occurred_at_ms: occurred_at_ms.unwrap_or(now),
            recorded_at_ms: now,
            text: text.to_string(),
            amends,
            late_entry_reason: None,
        };
        let id = DocId::new_random();
        self.edit(
            id,
            Header {
                case_id: case,
                kind: DocKind::Note,
            },
            None,
            |d| Ok(record::init_note(d, &note)?),
        )?;
        Ok(id)
    }

    /// Adds a draft note to a case; returns the note id.
    pub fn note_add(
        &self,
        case: CaseId,
        kind: NoteKind,
        text: &str,
        occurred_at_ms: Option<i64>,
    ) -> Result<DocId, Error> {
        self.new_note(case, kind, text, occurred_at_ms, None)
    }

    /// Replaces a draft note's text. A filed note refuses.
    pub fn note_edit(&self, note: DocId, text: &str) -> Result<(), Error> {
        self.edit_existing(note, DocKind::Note, "note", |d| {
            Ok(record::set_note_text(d, note, text)?)
        })
    }

    /// Files a draft note: from now on it never changes.
    pub fn note_file(&self, note: DocId) -> Result<(), Error> {
        self.note_file_with(note, None)
    }

    /// Files a draft note, with a late-entry reason when it is filed more than a day after it
    /// happened (`limits::LATE_ENTRY_AFTER_MS_DEFAULT`).
    pub fn note_file_with(
        &self,
        note: DocId,
        late_entry_reason: Option<&str>,
    ) -> Result<(), Error> {
        let now = self.now();
        self.edit_existing(note, DocKind::Note, "note", |d| {
            Ok(record::file_note_late(
                d,
                note,
                now,
                late_entry_reason,
                limits::LATE_ENTRY_AFTER_MS_DEFAULT,
            )?)
        })
    }

    /// Amends a filed note with a new note that points at it; the amendment is filed at once.
    pub fn note_amend(
        &self,
        note: DocId,
        kind: &str,
        reason: &str,
        text: &str,
    ) -> Result<DocId, Error> {
        let (doc, _) = self.load_kind(note, DocKind::Note, "note")?;
        if record::note_status(&doc) == record::NoteStatus::Draft {
            return Err(record::RecordError::NoteNotFiled(note).into());
        }
        let case = self
            .store
            .header(note)?
            .map(|h| h.case_id)
            .ok_or_else(|| Error::NotFound("note", note.to_string()))?;
        let note_kind = record::get_str(&doc, &automerge::ROOT, field::NOTE_KIND)
            .and_then(|k| k.parse().ok())
            .unwrap_or(NoteKind::CaseNote);
        let amends = Amends {
            note_id: note,
            kind: kind.to_string(),
            reason: reason.to_string(),
        };
        let id = self.new_note(case, note_kind, text, None, Some(amends))?;
        self.note_file(id)?;
        Ok(id)
    }

    /// Appends to the plan's narrative.
    pub fn plan_append(&self, case: CaseId, text: &str) -> Result<(), Error> {
        self.edit_existing(self.plan_of(case)?, DocKind::Plan, "plan", |d| {
            Ok(record::append_root_text(d, "plan", field::NARRATIVE, text)?)
        })
    }

    /// Splices the plan's narrative: delete `del` characters at `pos`, insert `text`.
    pub fn plan_splice(
        &self,
        case: CaseId,
        pos: usize,
        del: usize,
        text: &str,
    ) -> Result<(), Error> {
        self.edit_existing(self.plan_of(case)?, DocKind::Plan, "plan", |d| {
            Ok(record::splice_root_text(
                d,
                "plan",
                field::NARRATIVE,
                pos,
                del,
                text,
            )?)
        })
    }

    /// Sets a scalar field on the plan (`discharge_date`, `pathway`; written with dashes, the
    /// same). Any other name is [`Error::UnknownField`].
    pub fn plan_set(&self, case: CaseId, key: &str, value: &str) -> Result<(), Error> {
        let key = fields::plan_field(key)?;
        self.edit_existing(self.plan_of(case)?, DocKind::Plan, "plan", |d| {
            Ok(record::set_root_str(d, key, value)?)
        })
    }

    /// Adds a goal to the plan; returns its id.
    pub fn goal_add(&self, case: CaseId, text: &str) -> Result<String, Error> {
        self.edit_existing(self.plan_of(case)?, DocKind::Plan, "plan", |d| {
            Ok(record::add_goal(d, text)?)
        })
    }

    /// Adds an action to the plan (what, who, by when); returns its id.
    pub fn action_add(
        &self,
        case: CaseId,
        what: &str,
        who: &str,
        by_when: &str,
    ) -> Result<String, Error> {
        self.edit_existing(self.plan_of(case)?, DocKind::Plan, "plan", |d| {
            Ok(record::add_action(d, what, who, by_when)?)
        })
    }

    /// Sets the status of a plan action, or of a goal when `goal` is true.
    pub fn action_status(
        &self,
        case: CaseId,
        id: &str,
        status: &str,
        goal: bool,
    ) -> Result<(), Error> {
        let map = if goal { field::GOALS } else { field::ACTIONS };
        self.edit_existing(self.plan_of(case)?, DocKind::Plan, "plan", |d| {
            Ok(record::set_action_status(d, map, id, status)?)
        })
    }

    /// Records that the plan was agreed with the person, at its current state.
    pub fn plan_agree(&self, case: CaseId, with: &str) -> Result<(), Error> {
        let by = self.whoami()?.staff_id.to_string();
        let now = self.now();
        self.edit_existing(self.plan_of(case)?, DocKind::Plan, "plan", |d| {
            Ok(record::agree_plan(d, with, &by, now)?)
        })
    }

    /// Raises an alert on a case; returns its id.
    pub fn alert_add(&self, case: CaseId, text: &str) -> Result<String, Error> {
        let by = self.whoami()?.staff_id.to_string();
        let now = self.now();
        self.edit_existing(case_doc(case), DocKind::Case, "case", |d| {
            Ok(record::add_alert(d, text, &by, now)?)
        })
    }

    /// Adds someone to the team around the person; returns the entry's id.
    pub fn team_add(
        &self,
        case: CaseId,
        org: &str,
        team: &str,
        role: &str,
        worker: &str,
    ) -> Result<String, Error> {
        self.edit_existing(case_doc(case), DocKind::Case, "case", |d| {
            Ok(record::add_team_member(d, org, team, role, worker)?)
        })
    }

    /// Sets an alert's status (`active`, `resolved`).
    pub fn alert_status(&self, case: CaseId, alert: &str, status: &str) -> Result<(), Error> {
        self.edit_existing(case_doc(case), DocKind::Case, "case", |d| {
            Ok(record::set_alert_status(d, alert, status)?)
        })
    }

    /// Appends to About Me.
    pub fn about_me_append(&self, case: CaseId, text: &str) -> Result<(), Error> {
        self.edit_existing(case_doc(case), DocKind::Case, "case", |d| {
            Ok(record::append_root_text(d, "case", field::ABOUT_ME, text)?)
        })
    }

    /// Splices About Me.
    pub fn about_me_splice(
        &self,
        case: CaseId,
        pos: usize,
        del: usize,
        text: &str,
    ) -> Result<(), Error> {
        self.edit_existing(case_doc(case), DocKind::Case, "case", |d| {
            Ok(record::splice_root_text(
                d,
                "case",
                field::ABOUT_ME,
                pos,
                del,
                text,
            )?)
        })
    }

    /// Settles a conflicted field of a case's documents with `value`; the resolution is recorded
    /// in the document. `doc` may be left out when only one document has a conflict at `path`.
    /// The path is read as [`fields::resolvable_path`] says (a field not in the schema is
    /// [`Error::UnknownField`]).
    pub fn resolve(
        &self,
        case: CaseId,
        doc: Option<DocId>,
        path: &[String],
        value: &str,
    ) -> Result<DocId, Error> {
        let path = fields::resolvable_path(path)?;
        let path = path.as_slice();
        let shown = path.join(".");
        let candidates: Vec<DocId> = self
            .conflicts(case)?
            .into_iter()
            .filter(|(d, c)| c.path == path && doc.is_none_or(|want| want == *d))
            .map(|(d, _)| d)
            .collect();
        let doc_id = match candidates.as_slice() {
            [one] => *one,
            [] => return Err(record::RecordError::NoConflict(shown).into()),
            _ => {
                return Err(Error::Ambiguous(format!(
                    "{shown} is in conflict in several documents; name one with --doc"
                )))
            }
        };
        let header = self
            .store
            .header(doc_id)?
            .ok_or_else(|| Error::NotFound("document", doc_id.to_string()))?;
        let by = self.whoami()?.staff_id.to_string();
        let now = self.now();
        self.edit_existing(doc_id, header.kind, "document", |d| {
            Ok(record::resolve(d, path, value, &by, now)?)
        })?;
        Ok(doc_id)
    }

    /// The whole case as JSON: record, plan, notes (with what amends what), restricted sections,
    /// and every conflict. Content only, so it is identical on every device holding the same
    /// changes.
    ///
    /// The view is audited: recorded on the device before anything is read ([`views`]).
    pub fn show(&self, case: CaseId) -> Result<Value, Error> {
        self.view(case, wire::ViewKind::Show)
    }

    /// [`Device::show`], for a copy given out whole as data (`show --json`, an app's export):
    /// audited as an export.
    pub fn export(&self, case: CaseId) -> Result<Value, Error> {
        self.view(case, wire::ViewKind::Export)
    }

    /// [`Device::show`], audited as a view of the kind `kind` (the CLI's `conflicts` is one).
    pub fn view(&self, case: CaseId, kind: wire::ViewKind) -> Result<Value, Error> {
        self.require_case(case)?;
        self.record_view(case, kind)?;
        self.content_of(case)
    }

    /// What [`Device::show`] gives, without recording a view (callers record one first).
    fn content_of(&self, case: CaseId) -> Result<Value, Error> {
        let mut record_json = Value::Null;
        let mut plans = Vec::new();
        let mut restricted = Vec::new();
        let mut notes = Vec::new();
        let mut statutory: [Vec<Value>; 4] = Default::default();
        let mut conflicts = Vec::new();
        let mut damaged = Vec::new();
        for (doc_id, h) in self.docs_of(case)? {
            // Damage to one document hides only that document, and says so.
            let Some(loaded) = unless_damaged(self.store.load(doc_id))? else {
                damaged.push(json!({ "doc_id": doc_id, "kind": h.kind }));
                continue;
            };
            let Some((mut doc, _)) = loaded else {
                continue;
            };
            let (content, found) = record::view(&doc);
            for c in found {
                conflicts.push(json!({
                    "doc_id": doc_id,
                    "kind": h.kind,
                    "path": c.path,
                    "values": c.values,
                    "written_by": c.written_by,
                }));
            }
            match h.kind {
                DocKind::Case => record_json = content,
                DocKind::Plan => plans.push(json!({
                    "doc_id": doc_id,
                    "content": content,
                    "agreement": record::agreement_status(&mut doc),
                })),
                DocKind::Restricted => {
                    restricted.push(json!({ "doc_id": doc_id, "content": content }))
                }
                DocKind::Note => notes.push((doc_id, content)),
                DocKind::Assessment => {
                    statutory[0].push(json!({ "doc_id": doc_id, "content": content }))
                }
                DocKind::Discharge => {
                    statutory[1].push(json!({ "doc_id": doc_id, "content": content }))
                }
                DocKind::Referral => {
                    statutory[2].push(json!({ "doc_id": doc_id, "content": content }))
                }
                DocKind::Safeguarding => {
                    statutory[3].push(json!({ "doc_id": doc_id, "content": content }))
                }
            }
        }
        let [mut assessments, discharges, referrals, safeguarding] = statutory;
        Self::link_amendments(&mut assessments);
        notes.sort_by(|(a_id, a), (b_id, b)| {
            let at = |v: &Value| v[field::RECORDED_AT].as_i64().unwrap_or(0);
            at(a).cmp(&at(b)).then(a_id.cmp(b_id))
        });
        let notes: Vec<Value> = notes
            .iter()
            .map(|(id, content)| {
                let amended_by: Vec<String> = notes
                    .iter()
                    .filter(|(_, other)| {
                        other[field::AMENDS]["note_id"].as_str() == Some(id.to_string().as_str())
                    })
                    .map(|(other_id, _)| other_id.to_string())
                    .collect();
                json!({ "note_id": id, "content": content, "amended_by": amended_by })
            })
            .collect();
        let people = Self::people(&record_json, &notes);
        let sealed = self.sealed_of(case)?;
        let mut shown = json!({
            "case_id": case,
            "record": record_json,
            "plans": plans,
            "notes": notes,
            "restricted": restricted,
            "assessments": assessments,
            "discharges": discharges,
            "referrals": referrals,
            "safeguarding": safeguarding,
            "conflicts": conflicts,
            "people": people,
        });
        // Only where there are some: a page without sealed sections is as it always was.
        if !sealed.is_empty() {
            shown["sealed"] = serde_json::to_value(&sealed).expect("plain data serialises");
        }
        if !damaged.is_empty() {
            shown["damaged"] = Value::Array(damaged);
        }
        Ok(shown)
    }

    /// Orders assessments by start and gives each the ids of the assessments that amend it.
    fn link_amendments(assessments: &mut [Value]) {
        assessments.sort_by(|a, b| {
            let at = |v: &Value| v["content"]["started_at_ms"].as_i64().unwrap_or(0);
            at(a)
                .cmp(&at(b))
                .then(a["doc_id"].as_str().cmp(&b["doc_id"].as_str()))
        });
        let links: Vec<(String, String)> = assessments
            .iter()
            .filter_map(|a| {
                let of = a["content"]["amends"]["assessment_id"].as_str()?;
                Some((of.to_string(), a["doc_id"].as_str()?.to_string()))
            })
            .collect();
        for a in assessments.iter_mut() {
            let id = a["doc_id"].as_str().unwrap_or_default().to_string();
            let by: Vec<&String> = links
                .iter()
                .filter(|(of, _)| *of == id)
                .map(|(_, by)| by)
                .collect();
            a["amended_by"] = json!(by);
        }
    }

    /// Who the staff ids in a case are, as far as the record itself says (so that `show` stays
    /// the same on every device): the team around the person (entries that name a worker's
    /// staff id) and the author blocks of notes (role, team, organisation). Keyed by staff id.
    fn people(record: &Value, notes: &[Value]) -> Value {
        let mut people = serde_json::Map::new();
        let mut learn = |id: Option<&str>, facts: Value| {
            let Some(id) = id.filter(|id| !id.is_empty()) else {
                return;
            };
            let entry = people.entry(id.to_string()).or_insert_with(|| json!({}));
            for key in ["name", field::ROLE, field::TEAM, field::ORG] {
                let v = &facts[key];
                if v.as_str().is_some_and(|s| !s.is_empty()) && entry.get(key).is_none() {
                    entry[key] = v.clone();
                }
            }
        };
        let team = record[field::TEAM].as_object();
        for entry in team.into_iter().flatten().map(|(_, e)| e) {
            learn(
                entry[field::STAFF_ID].as_str(),
                json!({
                    "name": entry[field::WORKER], "role": entry[field::ROLE],
                    "org": entry[field::ORG], "team": entry[field::TEAM],
                }),
            );
        }
        for note in notes {
            let author = &note["content"][field::AUTHOR];
            learn(author[field::STAFF_ID].as_str(), author.clone());
        }
        Value::Object(people)
    }

    /// Every field of a case's documents that holds concurrent values.
    pub fn conflicts(&self, case: CaseId) -> Result<Vec<(DocId, record::Conflict)>, Error> {
        self.require_case(case)?;
        self.record_view(case, wire::ViewKind::Conflicts)?;
        let mut out = Vec::new();
        for (doc_id, _) in self.docs_of(case)? {
            if let Some((doc, _)) = self.store.load(doc_id)? {
                out.extend(record::conflicts(&doc).into_iter().map(|c| (doc_id, c)));
            }
        }
        Ok(out)
    }

    fn cursor(&self) -> Result<Seq, Error> {
        Ok(Seq(self.meta_8(META_CURSOR)?.map_or(0, u64::from_be_bytes)))
    }

    fn log_id(&self) -> Result<Option<uuid::Uuid>, Error> {
        self.store
            .meta(META_LOG_ID)?
            .map(|v| uuid::Uuid::from_slice(&v).map_err(|_| Error::Corrupt("log id".into())))
            .transpose()
    }

    fn confirm(&self) -> Result<Option<u64>, Error> {
        Ok(self.meta_8(META_CONFIRM)?.map(u64::from_be_bytes))
    }

    /// The server's log was restored from backup: forget the cursor and every base, and mark
    /// every document as unsent, so the next round re-sends everything this device holds (the
    /// server drops what it already has) and pulls everything it may read.
    fn start_over(&self, log_id: uuid::Uuid) -> Result<(), Error> {
        let _writing = self.doc_writes();
        let mut w = Writes::default();
        for (doc_id, _) in self.store.headers()? {
            w.remove(store::key(store::BASE, doc_id));
            w.put(store::key(store::DIRTY, doc_id), Vec::new());
        }
        w.put_meta(META_CURSOR, 0u64.to_be_bytes().to_vec());
        w.put_meta(META_LOG_ID, log_id.as_bytes().to_vec());
        w.remove(store::meta_key(META_CONFIRM));
        self.store.commit(w)
    }

    /// The documents with edits to send, and the writes that clear outbox marks with nothing
    /// behind them. A document that cannot be read is left out and named in `damaged`, unless
    /// its outbox list still gives its edits.
    fn outgoing(
        &self,
        skip: &HashSet<DocId>,
        damaged: &mut Vec<DocId>,
    ) -> Result<(Vec<Outgoing>, Writes), Error> {
        let mut out = Vec::new();
        let mut clean = Writes::default();
        for (doc_id, _) in self.store.ids_with(store::DIRTY)? {
            if skip.contains(&doc_id) || self.store.has(store::REFUSED, doc_id)? {
                continue;
            }
            let Some(header) = self.store.header(doc_id)? else {
                continue;
            };
            let base = self.store.base(doc_id)?;
            if let Some((list_base, changes)) = self.store.outbox_list(doc_id)? {
                if same_heads(&list_base, &base) && !changes.is_empty() {
                    // Debug builds (every test) check the list against the document itself.
                    #[cfg(debug_assertions)]
                    if let Ok(Some((mut doc, _))) = self.store.load(doc_id) {
                        let loaded: Vec<Vec<u8>> = doc
                            .get_changes(&base)
                            .iter()
                            .map(|c| c.raw_bytes().to_vec())
                            .collect();
                        let (mut a, mut b) = (loaded, changes.clone());
                        a.sort();
                        b.sort();
                        assert_eq!(
                            a, b,
                            "the outbox list of {doc_id} is not its unsent changes"
                        );
                    }
                    out.push(Outgoing {
                        doc_id,
                        header,
                        base,
                        changes,
                        access: self.access_of(doc_id)?,
                    });
                    continue;
                }
            }
            let Some(loaded) = unless_damaged(self.store.load(doc_id))? else {
                damaged.push(doc_id);
                continue;
            };
            let Some((mut doc, _)) = loaded else {
                continue;
            };
            let changes: Vec<Vec<u8>> = doc
                .get_changes(&base)
                .iter()
                .map(|c| c.raw_bytes().to_vec())
                .collect();
            if changes.is_empty() {
                clean.remove(store::key(store::DIRTY, doc_id));
                continue;
            }
            out.push(Outgoing {
                doc_id,
                header,
                base,
                changes,
                access: self.access_of(doc_id)?,
            });
        }
        Ok((out, clean))
    }

    /// Sends local edits and fetches what changed, over `transport`, until there is nothing
    /// more to exchange. Each round's results are durable before the next round starts.
    pub fn sync_with(&self, transport: &dyn Transport) -> Result<SyncReport, Error> {
        self.sync_with_progress(transport, &mut |_| {})
    }

    /// [`Device::sync_with`], telling `progress` what the sync has done so far after each round
    /// that another will follow (a first sync of a caseload takes many): a host shows it.
    pub fn sync_with_progress(
        &self,
        transport: &dyn Transport,
        progress: &mut dyn FnMut(&SyncReport),
    ) -> Result<SyncReport, Error> {
        // A locked device does not use its stored token: its user signs in again first.
        self.unlocked()?;
        let started = Instant::now();
        let mut report = SyncReport::default();
        let mut sent: HashSet<DocId> = HashSet::new();
        let mut full_resent: HashSet<DocId> = HashSet::new();
        let mut resets = 0;
        // Documents loaded in an earlier round that did not fit its request: sent as loaded
        // (their base and changes stay valid), not loaded again.
        let mut queued: Vec<Outgoing> = Vec::new();
        // Every round's writes land in one flushed batch with what the answer brings, and the
        // last round's batch also records the report: one flush per round trip.
        let mut finished = false;
        for _ in 0..limits::SYNC_ROUNDS_MAX {
            let mut writes = Writes::default();
            let outgoing = if queued.is_empty() {
                let (outgoing, clean) = self.outgoing(&sent, &mut report.damaged)?;
                // Outbox marks with nothing behind them; cleared with this round's results.
                writes = clean;
                outgoing
            } else {
                let mut still_held = Vec::with_capacity(queued.len());
                for o in queued.drain(..) {
                    if self.store.has(store::HEADER, o.doc_id)? {
                        still_held.push(o);
                    }
                }
                still_held
            };
            let now = self.now();
            let (mut req, left) = engine::build_request(
                self.cursor()?,
                now,
                outgoing,
                self.log_id()?,
                self.confirm()?,
            );
            let (views, views_more) = self.views_to_send()?;
            req.views = views;
            for d in &req.docs {
                sent.insert(d.doc_id);
                report.docs_up += 1;
                report.changes_up += d.changes.len();
            }
            let body = wire::encode(&req);
            report.bytes_up += body.len();
            report.requests += 1;
            let answer = self.exchange(transport, body)?;
            report.bytes_down += answer.len();
            let resp =
                wire::decode_response(&answer).map_err(|e| Error::Protocol(e.to_string()))?;
            let plan = engine::interpret(resp, now)?;
            if plan.reset {
                if resets > 0 {
                    return Err(Error::Protocol(
                        "the server asked this device to start over twice in one sync".into(),
                    ));
                }
                resets += 1;
                self.start_over(plan.log_id)?;
                sent.clear();
                queued.clear();
                report.resets += 1;
                continue;
            }
            let more = plan.more;
            let resend: Vec<DocId> = plan
                .resend_full
                .iter()
                .copied()
                .filter(|d| full_resent.insert(*d))
                .collect();
            report.full_history_resends += resend.len();
            // More views wait only if the server took these (an older one never does).
            let views_left = views_more && plan.views_through.is_some();
            if let Some(through) = plan.views_through {
                self.stage_views_recorded(&mut writes, &req.views, through)?;
            }
            finished = !more && left.is_empty() && resend.is_empty() && !views_left;
            let last = finished.then_some(started);
            self.carry_out(plan, &mut report, writes, last)?;
            for d in &resend {
                sent.remove(d);
            }
            if finished {
                break;
            }
            progress(&report);
            queued = left;
        }
        if !finished {
            // Out of rounds: the report is recorded on its own.
            let mut w = Writes::default();
            self.stage_report(&mut w, &mut report, started)?;
            self.store.commit(w)?;
        }
        Ok(report)
    }

    /// Adds the finished report and the running byte totals to `w`.
    fn stage_report(
        &self,
        w: &mut Writes,
        report: &mut SyncReport,
        started: Instant,
    ) -> Result<(), Error> {
        report.damaged.sort();
        report.damaged.dedup();
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        report.finished_at_ms = self.now();
        let mut traffic: Traffic = self.store.meta_json(META_TRAFFIC)?.unwrap_or_default();
        traffic.up += report.bytes_up as u64;
        traffic.down += report.bytes_down as u64;
        w.put_meta(
            META_LAST_SYNC,
            serde_json::to_vec(&report).expect("report serialises"),
        );
        w.put_meta(
            META_TRAFFIC,
            serde_json::to_vec(&traffic).expect("traffic serialises"),
        );
        Ok(())
    }

    /// Syncs with the server this store is signed in to.
    pub fn sync(&self) -> Result<SyncReport, Error> {
        self.sync_with(&self.http_transport()?)
    }

    /// [`Device::sync`], with what it has done so far after each round another will follow.
    pub fn sync_observed(
        &self,
        progress: &mut dyn FnMut(&SyncReport),
    ) -> Result<SyncReport, Error> {
        self.sync_with_progress(&self.http_transport()?, progress)
    }

    /// Deletes every record, the token and the sign-in, files included.
    pub fn wipe(&self) -> Result<(), Error> {
        self.store.wipe()?;
        let mut w = Writes::default();
        w.put_meta(META_ACTOR, ActorId::random().to_bytes().to_vec());
        self.store.commit(w)
    }

    /// Sends one request; a revoked device wipes itself before reporting the revocation.
    fn exchange(&self, transport: &dyn Transport, body: Vec<u8>) -> Result<Vec<u8>, Error> {
        match transport.sync(body) {
            Err(TransportError::Revoked(msg)) => {
                self.wipe()?;
                Err(Error::RevokedAndWiped(msg))
            }
            other => Ok(other?),
        }
    }

    /// Stores what an answer brought, with `w` (this round's own writes), in one flushed batch.
    /// `last`: this is the sync's last round, started then; the report goes in the batch too.
    fn carry_out(
        &self,
        plan: Plan,
        report: &mut SyncReport,
        mut w: Writes,
        last: Option<Instant>,
    ) -> Result<(), Error> {
        let _writing = self.doc_writes();
        let routine = self.brought_nothing(&plan, &w)?;
        // An answer from the server renews the offline lease, on the terms the server sets,
        // counted from the server's time in it.
        stage_contact(&mut w, self.contact_anchor(plan.server_time_ms));
        if let Some(lease) = plan.lease {
            let terms = serde_json::to_vec(&lease).expect("a lease serialises");
            if self.store.meta(META_LEASE)?.as_deref() != Some(&terms[..]) {
                w.put_meta(META_LEASE, terms);
            }
        }
        self.stage_sealed(&mut w, &plan)?;
        for (doc_id, upd) in plan.docs {
            if let Some((stored, dup)) = upd.acked {
                report.changes_stored += u64::from(stored);
                report.changes_duplicate += u64::from(dup);
                // The server has the section, and with it its access list.
                w.remove(store::key(store::ACCESS, doc_id));
            }
            let existing_header = self.store.header(doc_id)?;
            match (existing_header, upd.header) {
                // Held: what the server said about it makes the outbox list stale (sync loads
                // the document next time, until an edit starts a list afresh), dropped below
                // once it is used; kept when nothing of it could be used and nothing was acked,
                // so that edits made here still go up from it.
                (Some(_), _) => {}
                (None, Some(h)) => {
                    self.store.stage_header(&mut w, doc_id, &h);
                    if let Some(received) = upd.unusable {
                        // Kept as its first chunk: loading it will find the damage.
                        report.docs_down += 1;
                        report.damaged.push(doc_id);
                        self.store.stage_chunk(&mut w, doc_id, 0, received);
                        continue;
                    }
                    // New to this device: keep the changes as received, without materialising
                    // the document (a cold pull of thousands of documents is I/O, not Automerge
                    // work). Loading it later replays them in one batch.
                    report.docs_down += 1;
                    report.changes_down += upd.changes.len();
                    let received: HashSet<ChangeHash> =
                        upd.changes.iter().map(|c| c.hash()).collect();
                    let bytes: Vec<u8> = upd
                        .changes
                        .iter()
                        .flat_map(|c| c.raw_bytes().iter().copied())
                        .collect();
                    self.store.stage_chunk(&mut w, doc_id, 0, bytes);
                    if let Some(heads) = upd
                        .server_heads
                        .filter(|h| h.iter().all(|x| received.contains(x)))
                    {
                        w.put(store::key(store::BASE, doc_id), store::encode_heads(&heads));
                    }
                    continue;
                }
                // An acknowledgement for a document this device does not hold: nothing to store.
                (None, None) => continue,
            }
            if let Some(received) = upd.unusable {
                // Changes this device cannot use: kept beside the document, never applied.
                if upd.acked.is_some() {
                    self.store.stage_drop_outbox_list(&mut w, doc_id)?;
                }
                report.docs_down += 1;
                report.damaged.push(doc_id);
                self.keep_beside_damaged(&mut w, doc_id, received);
                continue;
            }
            // Dropped now when there is nothing to apply or the server acked it; else once the
            // changes applied, or the document proved damaged here already.
            let dropped = upd.changes.is_empty() || upd.acked.is_some();
            if dropped {
                self.store.stage_drop_outbox_list(&mut w, doc_id)?;
            }
            if upd.changes.is_empty() && self.settle_without_loading(&mut w, doc_id, &upd)? {
                continue;
            }
            let Some(loaded) = unless_damaged(self.store.load_to_write(doc_id))? else {
                if !dropped {
                    self.store.stage_drop_outbox_list(&mut w, doc_id)?;
                }
                report.docs_down += usize::from(!upd.changes.is_empty());
                report.changes_down += upd.changes.len();
                report.damaged.push(doc_id);
                self.keep_beside_damaged(&mut w, doc_id, raw_bytes(&upd.changes));
                continue;
            };
            let held = loaded.is_some();
            let (mut doc, next) = loaded.unwrap_or_else(|| (AutoCommit::new(), 0));
            let before = doc.get_heads();
            let mut staged = None;
            if !upd.changes.is_empty() {
                report.docs_down += 1;
                report.changes_down += upd.changes.len();
                let received = raw_bytes(&upd.changes);
                if doc.apply_changes(upd.changes).is_err() {
                    // Changes automerge refuses (the server's copy holds what this automerge
                    // would never write): kept beside the document, which is then damaged here,
                    // and this copy of it is not kept (the cache lets it go). Its outbox list
                    // stays unless the server acked it.
                    report.damaged.push(doc_id);
                    self.keep_beside_damaged(&mut w, doc_id, received);
                    continue;
                }
                if !dropped {
                    self.store.stage_drop_outbox_list(&mut w, doc_id)?;
                }
                staged = Some(
                    self.store
                        .stage_doc(&mut w, doc_id, &mut doc, &before, next)?,
                );
            }
            let mut base = self.store.base(doc_id)?;
            if let Some(heads) = upd.server_heads {
                if heads.iter().all(|h| doc.get_change_by_hash(h).is_some()) {
                    w.put(store::key(store::BASE, doc_id), store::encode_heads(&heads));
                    base = heads;
                }
            }
            if doc.get_changes(&base).is_empty() {
                w.remove(store::key(store::DIRTY, doc_id));
            }
            // Kept in memory as stored, so the next edit or sync does not load it again.
            if held || staged.is_some() {
                let staged = staged.unwrap_or_else(|| store::Staged::unchanged(next));
                w.keep(doc_id, doc, staged);
            }
        }
        for doc_id in &plan.resend_full {
            w.remove(store::key(store::BASE, *doc_id));
            self.store.stage_drop_outbox_list(&mut w, *doc_id)?;
        }
        for r in &plan.refused {
            // This device only ever authors its own changes, so a forged-author refusal means it
            // relayed a colleague's change the server does not hold (after a restore). That is
            // settled when the colleague's device re-sends it: keep the document in the outbox
            // and try again next sync, rather than holding it back for good. An `internal`
            // refusal is the server's own trouble with the document (its stored copy does not
            // load): kept and sent again the same way, until the service is repaired.
            if matches!(r.code, ErrorCode::ForgedAuthor | ErrorCode::Internal) {
                continue;
            }
            let refusal = Refusal {
                doc_id: r.doc_id,
                code: r.code.to_string(),
                reason: r.reason.clone(),
            };
            w.put(
                store::key(store::REFUSED, r.doc_id),
                serde_json::to_vec(&refusal).expect("refusal serialises"),
            );
        }
        report.rejections.extend(plan.refused);
        let evicting = !plan.evict.is_empty();
        for doc_id in plan.evict {
            self.store.stage_forget(&mut w, doc_id)?;
            report.evicted += 1;
        }
        if evicting {
            // Recorded with the deletions, so a crash before the rewrite finishes it on reopen.
            w.put_meta(store::META_REWRITE_PENDING, Vec::new());
        }
        if !routine {
            w.put_meta(META_CURSOR, plan.cursor.0.to_be_bytes().to_vec());
            w.put_meta(META_LOG_ID, plan.log_id.as_bytes().to_vec());
        }
        if let Some(id) = plan.reconcile_id {
            // Stored with what it confirms, so it is echoed only once the plan is durable.
            w.put_meta(META_CONFIRM, id.to_be_bytes().to_vec());
        }
        report.clock_offset_ms = plan.clock_offset_ms;
        report.clock_flagged = plan.clock_offset_ms.abs() > limits::CLOCK_OFFSET_FLAG_MS;
        report.cursor = plan.cursor;
        if let Some(started) = last {
            self.stage_report(&mut w, report, started)?;
        }
        if routine {
            self.store.commit_lazily(w)?;
        } else {
            self.store.commit(w)?;
        }
        if evicting {
            self.store.rewrite()?;
        }
        Ok(())
    }

    /// Keeps what the server sent for a document this device cannot read, as a chunk of its own
    /// numbered far past the ones its edits write (`DAMAGED_CHUNKS_FROM`, then this moment and a
    /// count): not applied, so nothing is built on the damage, and not lost, so that whatever
    /// repairs the document finds it there. Eviction removes it with the document's chunks.
    fn keep_beside_damaged(&self, w: &mut Writes, doc_id: DocId, received: Vec<u8>) {
        static KEPT: AtomicU64 = AtomicU64::new(0);
        if received.is_empty() {
            return;
        }
        let n = DAMAGED_CHUNKS_FROM
            + (self.now().max(0) as u64) * 1024
            + KEPT.fetch_add(1, Ordering::Relaxed) % 1024;
        self.store.stage_chunk(w, doc_id, n, received);
    }

    /// Whether an answer brings nothing and moves nothing, and this round wrote nothing of its
    /// own: then all it leaves to store is bookkeeping (the contact, the report, the traffic),
    /// which waits for no flush ([`store::DeviceStore::commit_lazily`]). An idle sync, the most
    /// common one, so costs the device no disk wait.
    fn brought_nothing(&self, plan: &Plan, own: &Writes) -> Result<bool, Error> {
        Ok(own.is_empty()
            && plan.docs.is_empty()
            && plan.refused.is_empty()
            && plan.evict.is_empty()
            && plan.resend_full.is_empty()
            && plan.sealed.is_empty()
            && plan.reconcile_id.is_none()
            && plan.cursor == self.cursor()?
            && Some(plan.log_id) == self.log_id()?)
    }

    /// An acknowledgement with nothing new whose heads are exactly what the outbox mark covers
    /// (or the base already stored) settles the document without loading it: the common case
    /// after a visit, where loading every acknowledged document cost more than the round trip.
    /// Returns false when the document must be loaded to decide.
    fn settle_without_loading(
        &self,
        w: &mut Writes,
        doc_id: DocId,
        upd: &engine::DocUpdate,
    ) -> Result<bool, Error> {
        let Some(server) = &upd.server_heads else {
            return Ok(false);
        };
        let same = same_heads;
        match self.store.get(store::DIRTY, doc_id)? {
            // An empty mark (set by a restart) says nothing about heads.
            Some(mark) if !mark.is_empty() => {
                if same(&store::decode_heads(&mark)?, server) {
                    w.put(store::key(store::BASE, doc_id), store::encode_heads(server));
                    w.remove(store::key(store::DIRTY, doc_id));
                    return Ok(true);
                }
                Ok(false)
            }
            Some(_) => Ok(false),
            None => Ok(same(&self.store.base(doc_id)?, server)),
        }
    }

    /// How many of this handle's commits waited for the disk (a diagnostic: which work costs the
    /// device a flush).
    pub fn store_flushes(&self) -> u64 {
        self.store.flushes()
    }

    /// Unsynced work, refusals, the last sync and the server.
    pub fn status(&self) -> Result<Status, Error> {
        let mut unsynced_docs = 0;
        let mut unsynced_changes = 0;
        let mut unsynced_bytes = 0;
        let mut damaged = Vec::new();
        for (doc_id, _) in self.store.ids_with(store::DIRTY)? {
            // Counts only: status works on a locked device too.
            let Some(loaded) = unless_damaged(self.store.load(doc_id))? else {
                unsynced_docs += 1;
                damaged.push(doc_id);
                continue;
            };
            let Some((mut doc, _)) = loaded else {
                continue;
            };
            let base: Vec<ChangeHash> = self.store.base(doc_id)?;
            let changes = doc.get_changes(&base);
            if !changes.is_empty() {
                unsynced_docs += 1;
                unsynced_changes += changes.len();
                unsynced_bytes += changes.iter().map(|c| c.raw_bytes().len()).sum::<usize>();
            }
        }
        let refused = self
            .store
            .ids_with(store::REFUSED)?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        let last_sync: Option<SyncReport> = self.store.meta_json(META_LAST_SYNC)?;
        let traffic: Traffic = self.store.meta_json(META_TRAFFIC)?.unwrap_or_default();
        Ok(Status {
            server: self.store.meta_string(META_SERVER)?,
            staff_id: self
                .store
                .meta_json::<WhoAmI>(META_WHOAMI)?
                .map(|w| w.staff_id.to_string()),
            docs_held: self.store.headers()?.len(),
            unsynced_docs,
            unsynced_changes,
            unsynced_bytes,
            refused,
            cursor: self.cursor()?,
            store_bytes: self.store.size_on_disk()?,
            records_bytes: self.store.records_bytes()?,
            bytes_up_last: last_sync.as_ref().map_or(0, |r| r.bytes_up),
            bytes_down_last: last_sync.as_ref().map_or(0, |r| r.bytes_down),
            bytes_up_total: traffic.up,
            bytes_down_total: traffic.down,
            last_sync,
            lease: self.lease_status()?,
            freshness: Some(self.freshness()?),
            views_queued: self.views_queued()?,
            damaged,
        })
    }
}
