//! What authentication last read of the store, kept in memory so that a request's credentials
//! are checked without a store read, on the request's own thread ([`Store::credentials_cached`]).
//!
//! Every request's first step reads its token's credentials (the token's, its device's and its
//! member of staff's records, and the organisations' sharing value): on sled a read transaction
//! on the blocking pool, so a hand-over to another thread and back before the request's own work
//! begins. On two cores such a hand-over now and then waits a millisecond or more for the
//! scheduler (W3 at a million documents: most of its slowest idle syncs, `bench/README.md`).
//!
//! The cache is exact, not eventually right: an entry holds the generation it was read at, and
//! every committed transaction that wrote any of what credentials are made of (the `tokens`,
//! `devices` and `staff` trees, or the meta value the entries were read with) moves the
//! generation on once its writes are visible and before its commit returns
//! ([`Directory::committed`], called by [`super::txn::SledTxn::commit`], the one place the server
//! writes these trees). A reader takes the generation before it reads the store, so an entry is
//! never older than its generation says. A revocation is therefore seen by every request that
//! starts after the revoking call returned, as before. One sled handle, one cache: a store that
//! reopens starts with an empty one. Only the sled store has it: on PostgreSQL another node may
//! write.
//!
//! Bounded by [`limits::SERVER_CREDENTIALS_CACHED_MAX`] tokens; past it the cache starts over.

use super::lock;
use super::trees::{T, TREES};
use super::txn::Pending;
use crate::store::Credentials;
use casenote_protocol::limits;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Credentials by their token's sha256, each with the generation it was read at.
#[derive(Default)]
pub(super) struct Directory {
    generation: AtomicU64,
    cached: Mutex<Cached>,
}

#[derive(Default)]
struct Cached {
    /// The meta key the entries' sharing value was read under (one caller, one key).
    meta_key: Option<String>,
    /// The sharing value last read, and the generation it was read at: one copy for all the
    /// entries (it may grow with the agreements between organisations), which hold none.
    meta: Option<(u64, Option<Vec<u8>>)>,
    entries: HashMap<[u8; 32], (u64, Credentials)>,
}

impl Directory {
    /// The generation now: take it before reading credentials to [`Directory::put`] them.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The credentials of `sha256` read with `meta_key`, if read since the last change to them.
    pub(super) fn get(&self, sha256: &[u8; 32], meta_key: &str) -> Option<Credentials> {
        let cached = self.lock();
        if cached.meta_key.as_deref() != Some(meta_key) {
            return None;
        }
        let now = self.generation();
        let (read_at, found) = cached.entries.get(sha256)?;
        let (meta_at, meta) = cached.meta.as_ref()?;
        (*read_at == now && *meta_at == now).then(|| Credentials {
            meta: meta.clone(),
            ..found.clone()
        })
    }

    /// Keeps credentials read from the store at `generation` (taken before the read).
    pub(super) fn put(
        &self,
        generation: u64,
        sha256: &[u8; 32],
        meta_key: &str,
        found: &Credentials,
    ) {
        let mut cached = self.lock();
        if cached.meta_key.as_deref() != Some(meta_key) {
            cached.entries.clear();
            cached.meta_key = Some(meta_key.to_string());
        }
        if cached.entries.len() >= limits::SERVER_CREDENTIALS_CACHED_MAX {
            cached.entries.clear();
        }
        cached.meta = Some((generation, found.meta.clone()));
        let entry = Credentials {
            meta: None,
            ..found.clone()
        };
        cached.entries.insert(*sha256, (generation, entry));
    }

    /// After a transaction with the writes `pending` committed: if it wrote any of what
    /// credentials are made of, every entry read before is stale from now on.
    pub(super) fn committed(&self, pending: &[Pending; TREES]) {
        let records = [T::Tokens, T::Devices, T::Staff]
            .iter()
            .any(|t| !pending[*t as usize].is_empty());
        // Before the first entry the key is not known: any meta write counts (nothing is cached
        // yet to lose, and a read in progress may be about to put what the write replaced).
        let sharing = || {
            let meta = &pending[T::Meta as usize];
            match self.lock().meta_key.as_deref() {
                Some(k) => meta.contains_key(k.as_bytes()),
                None => !meta.is_empty(),
            }
        };
        if records || sharing() {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        lock(&self.cached)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TokenRecord;
    use casenote_protocol::{DeviceId, StaffId};

    const KEY: &str = "sharing";

    fn creds() -> Credentials {
        Credentials {
            token: TokenRecord {
                device_id: DeviceId::new_random(),
                staff_id: StaffId::new_random(),
                revoked: false,
            },
            device: None,
            staff: None,
            meta: Some(b"{}".to_vec()),
        }
    }

    fn writes(to: &[(T, &str)]) -> [Pending; TREES] {
        let mut pending: [Pending; TREES] = std::array::from_fn(|_| Pending::new());
        for (t, key) in to {
            pending[*t as usize].insert(key.as_bytes().to_vec(), Some(vec![1]));
        }
        pending
    }

    /// A directory holding `c` for token hash `h`, read now.
    fn holding(h: [u8; 32], c: &Credentials) -> Directory {
        let d = Directory::default();
        d.put(d.generation(), &h, KEY, c);
        d
    }

    #[test]
    fn an_entry_holds_until_a_commit_writes_what_credentials_are_made_of() {
        let (h, c) = ([7; 32], creds());
        for stale in [T::Tokens, T::Devices, T::Staff] {
            let d = holding(h, &c);
            d.committed(&writes(&[
                (T::DeviceSync, "d"),
                (T::Audit, "a"),
                (T::Log, "l"),
            ]));
            d.committed(&writes(&[(T::Meta, "views_through")]));
            assert_eq!(d.get(&h, KEY), Some(c.clone()), "other writes keep it");
            assert_eq!(d.get(&h, "other key"), None, "read with another key");
            d.committed(&writes(&[(stale, "x")]));
            assert_eq!(d.get(&h, KEY), None, "a write to {stale:?} makes it stale");
        }
        let d = holding(h, &c);
        d.committed(&writes(&[(T::Meta, KEY)]));
        assert_eq!(d.get(&h, KEY), None, "the sharing value changed");
    }

    #[test]
    fn an_entry_read_before_a_commit_that_changed_it_is_never_served() {
        let (h, c) = ([7; 32], creds());
        let d = Directory::default();
        let before = d.generation();
        // Before the first entry no key is known: any meta write counts.
        d.committed(&writes(&[(T::Meta, KEY)]));
        d.put(before, &h, KEY, &c);
        assert_eq!(
            d.get(&h, KEY),
            None,
            "read before the sharing value changed"
        );
        let before = d.generation();
        d.committed(&writes(&[(T::Devices, "x")]));
        d.put(before, &h, KEY, &c);
        assert_eq!(d.get(&h, KEY), None, "read before the device changed");
        d.put(d.generation(), &h, KEY, &c);
        assert_eq!(d.get(&h, KEY), Some(c));
    }

    #[test]
    fn past_its_bound_the_cache_starts_over() {
        let d = Directory::default();
        let c = creds();
        let hash = |i: usize| {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(i as u64).to_be_bytes());
            h
        };
        let max = limits::SERVER_CREDENTIALS_CACHED_MAX;
        for i in 0..max {
            d.put(d.generation(), &hash(i), KEY, &c);
        }
        assert!(d.get(&hash(0), KEY).is_some() && d.get(&hash(max - 1), KEY).is_some());
        d.put(d.generation(), &hash(max), KEY, &c);
        assert_eq!(d.get(&hash(0), KEY), None);
        assert_eq!(d.get(&hash(max - 1), KEY), None);
        assert_eq!(
            d.get(&hash(max), KEY),
            Some(c),
            "given back with the sharing value"
        );
        let cached = d.lock();
        assert_eq!(cached.entries.len(), 1);
        assert!(
            cached.entries.values().all(|(_, e)| e.meta.is_none()),
            "the sharing value is kept once, not per entry"
        );
    }
}
