//! The audit log: append-only and hash-chained, so that a changed, removed or reordered entry is
//! found by [`verify`]. The entries and the chain itself are [`crate::model::audit`]'s.
//!
//! Cutting entries off the end is not detectable from the chain alone, so the store anchors the
//! last acknowledged entry's hash outside its own files (its high-water mark) and
//! [`verify_anchored`] checks the log reaches it.
//!
//! Appending goes through a write transaction ([`Txn::audit_append`]), which reads the chain's
//! head in the transaction, so the chain never forks, and commits the entry with whatever else
//! the transaction writes. `details` carries ids, counts and codes only: never names, never
//! record content.
//!
//! Kinds ([`AuditKind`]): `enrol`, `token_revoke`, `staff_revoke`, `sync`, `access_change`,
//! `refused`, `admin`, `demo_load`, `read`, `export`.
//!
//! Refusals come in floods (a peer without a token retrying, a revoked device that keeps
//! trying), so they go through [`Refusals`]: the first refusal of a kind (code, staff, device)
//! is written at once; repeats within `limits::REFUSAL_AUDIT_WINDOW_MS` are counted and written
//! as one entry, `{"code", "repeated": n, "from_ms", "to_ms"}`, when the window ends. A refusal
//! entry carries codes, ids, sizes and route templates, never a path or any other text the peer
//! chose.

use crate::store::{write, Store, StoreError, Txn};
use casenote_protocol::{limits, DeviceId, ErrorCode, StaffId};
use std::collections::HashMap;
use std::sync::Mutex;

pub use crate::model::audit::{
    encode, seal, AnchoredCheck, AuditBroken, AuditEntry, AuditKind, AuditRecord, ChainCheck,
    GENESIS_HASH,
};

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
    check(store, AnchoredCheck::new(None))
}

/// [`verify`], then the anchor: the log must reach the last entry the store acknowledged
/// ([`Store::audit_anchor`], kept outside the store's own files), with that entry's hash. So an
/// audit log cut short (a damaged disk, a truncation) is found too, which the chain alone cannot
/// show. Returns the number of entries.
pub fn verify_anchored(store: &dyn Store) -> Result<usize, VerifyError> {
    check(store, AnchoredCheck::new(store.audit_anchor()?))
}

fn check(store: &dyn Store, mut check: AnchoredCheck) -> Result<usize, VerifyError> {
    store.audit_scan(&mut |key, value| check.visit(key, value))?;
    Ok(check.finish()?)
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

/// Appends `record` in a transaction of its own (not yet durable: flush before relying on it).
pub fn append(store: &dyn Store, record: AuditRecord) -> Result<AuditEntry, StoreError> {
    write(store, |txn| txn.audit_append(record.clone()))
}

/// One kind of refusal: repeats of the same kind are counted together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RefusalKind {
    pub code: ErrorCode,
    /// Who was refused, when the server knows (a revoked device's staff and device).
    pub staff_id: Option<StaffId>,
    pub device_id: Option<DeviceId>,
}

impl RefusalKind {
    /// A refusal of someone the server could not identify (no token, an unknown token).
    pub fn unauthenticated(code: ErrorCode) -> Self {
        RefusalKind {
            code,
            staff_id: None,
            device_id: None,
        }
    }

    /// A refusal of a known device.
    pub fn device(code: ErrorCode, staff_id: StaffId, device_id: DeviceId) -> Self {
        RefusalKind {
            code,
            staff_id: Some(staff_id),
            device_id: Some(device_id),
        }
    }

    fn record(self, at_ms: i64, details: serde_json::Value) -> AuditRecord {
        AuditRecord {
            at_ms,
            kind: AuditKind::Refused,
            staff_id: self.staff_id,
            device_id: self.device_id,
            details,
        }
    }
}

/// The repeats of one kind of refusal since its window opened.
#[derive(Clone, Copy, Debug)]
struct Window {
    opened_ms: i64,
    last_ms: i64,
    repeated: u64,
}

/// The refusal aggregator: audits the first refusal of each kind at once and counts the
/// repeats within a window into one entry (see the module documentation). Bounded: at most
/// `keys_max` kinds are counted at once. Counts are written when a window ends: at the next
/// refusal of the kind, by [`Refusals::flush_due`] (the server calls it periodically), or by
/// [`Refusals::flush_all`] (on shutdown). A crash loses at most one window's counts, never a
/// first refusal.
#[derive(Debug)]
pub struct Refusals {
    window_ms: i64,
    keys_max: usize,
    open: Mutex<HashMap<RefusalKind, Window>>,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals::new(
            limits::REFUSAL_AUDIT_WINDOW_MS,
            limits::REFUSAL_AUDIT_KEYS_MAX,
        )
    }
}

impl Refusals {
    pub fn new(window_ms: i64, keys_max: usize) -> Self {
        Refusals {
            window_ms: window_ms.max(1),
            keys_max: keys_max.max(1),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The window repeats are counted over, in ms.
    pub fn window_ms(&self) -> i64 {
        self.window_ms
    }

    /// Audits one refusal of `kind` at `now_ms`: written at once (with `details` and the code)
    /// if it is the first of its kind in the window, else only counted. `details` must be a JSON
    /// object of codes, ids, sizes, hashes or route templates: never a path, a token or any
    /// other text the peer chose.
    pub fn record(
        &self,
        store: &dyn Store,
        kind: RefusalKind,
        details: serde_json::Value,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut due = Vec::new();
        match open.get_mut(&kind) {
            Some(w) if now_ms < w.opened_ms.saturating_add(self.window_ms) => {
                w.repeated += 1;
                w.last_ms = w.last_ms.max(now_ms);
                return Ok(());
            }
            Some(_) => due.extend(open.remove(&kind).map(|w| (kind, w))),
            None => {}
        }
        if open.len() >= self.keys_max {
            due.extend(open.drain());
        }
        open.insert(
            kind,
            Window {
                opened_ms: now_ms,
                last_ms: now_ms,
                repeated: 0,
            },
        );
        let mut details = details;
        if let Some(map) = details.as_object_mut() {
            map.insert("code".into(), kind.code.as_str().into());
        }
        let first = kind.record(now_ms, details);
        // Written under the lock and in one transaction with the counts that were due, so a
        // kind's counts always follow its first entry.
        write(store, |txn| {
            Self::write_counts(txn, &due, now_ms)?;
            txn.audit_append(first.clone())
        })?;
        Ok(())
    }

    /// Writes the counts of every window that ended by `now_ms` and forgets those kinds;
    /// returns how many entries it wrote.
    pub fn flush_due(&self, store: &dyn Store, now_ms: i64) -> Result<usize, StoreError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let ended: Vec<RefusalKind> = open
            .iter()
            .filter(|(_, w)| now_ms >= w.opened_ms.saturating_add(self.window_ms))
            .map(|(k, _)| *k)
            .collect();
        let due: Vec<_> = ended
            .into_iter()
            .filter_map(|k| open.remove(&k).map(|w| (k, w)))
            .collect();
        self.write(store, due, now_ms)
    }

    /// Writes every pending count, window ended or not (the server is stopping); returns how
    /// many entries it wrote.
    pub fn flush_all(&self, store: &dyn Store, now_ms: i64) -> Result<usize, StoreError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let due: Vec<_> = open.drain().collect();
        self.write(store, due, now_ms)
    }

    /// Appends one counted entry for each window of `due` that saw repeats, in one transaction.
    fn write(
        &self,
        store: &dyn Store,
        due: Vec<(RefusalKind, Window)>,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        if due.iter().all(|(_, w)| w.repeated == 0) {
            return Ok(0);
        }
        write(store, |txn| Self::write_counts(txn, &due, now_ms))
    }

    /// The counted entries of `due` (windows that saw repeats, oldest first); how many.
    fn write_counts(
        txn: &mut dyn Txn,
        due: &[(RefusalKind, Window)],
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let mut due: Vec<_> = due.iter().filter(|(_, w)| w.repeated > 0).collect();
        due.sort_by_key(|(_, w)| w.opened_ms);
        for (kind, w) in &due {
            let details = serde_json::json!({
                "code": kind.code.as_str(),
                "repeated": w.repeated,
                "from_ms": w.opened_ms,
                "to_ms": w.last_ms,
            });
            txn.audit_append(kind.record(now_ms, details))?;
        }
        Ok(due.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(store: &dyn Store) -> Vec<AuditEntry> {
        entries(store, None)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == AuditKind::Refused)
            .collect()
    }

    fn counted(e: &AuditEntry) -> u64 {
        e.details["repeated"].as_u64().unwrap_or(1)
    }

    #[test]
    fn repeated_refusals_of_a_kind_become_one_counted_entry_per_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        let refusals = Refusals::new(1_000, 16);
        let anyone = RefusalKind::unauthenticated(ErrorCode::Unauthorized);
        let device = RefusalKind::device(
            ErrorCode::DeviceRevoked,
            StaffId::new_random(),
            DeviceId::new_random(),
        );
        for t in 0..500 {
            let details = json!({"route": "/v1/whoami"});
            refusals
                .record(&*store, anyone, details.clone(), 10_000 + t)
                .unwrap();
            refusals
                .record(&*store, device, details, 10_000 + t)
                .unwrap();
        }
        // The first of each kind is written at once, the rest only counted so far.
        let written = refused(&*store);
        assert_eq!(written.len(), 2);
        assert_eq!(
            written[0].details,
            json!({"code": "unauthorized", "route": "/v1/whoami"})
        );
        assert_eq!(written[1].device_id, device.device_id);
        // Nothing is due before the window ends.
        assert_eq!(refusals.flush_due(&*store, 10_999).unwrap(), 0);
        // The next refusal after the window writes the count, then itself.
        refusals.record(&*store, anyone, json!({}), 11_000).unwrap();
        let written = refused(&*store);
        assert_eq!(written.len(), 4);
        assert_eq!(
            written[2].details,
            json!({"code": "unauthorized", "repeated": 499, "from_ms": 10_000, "to_ms": 10_499})
        );
        assert_eq!(counted(&written[3]), 1);
        // The periodic flush writes the device's count once its window ended.
        assert_eq!(refusals.flush_due(&*store, 11_000).unwrap(), 1);
        let written = refused(&*store);
        assert_eq!(written[4].device_id, device.device_id);
        assert_eq!(written[4].details["repeated"], 499);
        assert_eq!(written.iter().map(counted).sum::<u64>(), 1_001);
        assert_eq!(verify(&*store).unwrap(), 5);
    }

    #[test]
    fn at_most_keys_max_kinds_are_counted_and_none_is_lost_when_the_bound_is_reached() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        let refusals = Refusals::new(60_000, 4);
        let kinds: Vec<RefusalKind> = (0..10)
            .map(|_| {
                RefusalKind::device(
                    ErrorCode::DeviceRevoked,
                    StaffId::new_random(),
                    DeviceId::new_random(),
                )
            })
            .collect();
        for round in 0..3 {
            for k in &kinds {
                refusals
                    .record(&*store, *k, json!({}), 1_000 + round)
                    .unwrap();
                assert!(refusals.open.lock().unwrap().len() <= 4);
            }
        }
        refusals.flush_all(&*store, 2_000).unwrap();
        assert!(refusals.open.lock().unwrap().is_empty());
        let written = refused(&*store);
        for k in &kinds {
            let of_k: u64 = written
                .iter()
                .filter(|e| e.device_id == k.device_id)
                .map(counted)
                .sum();
            assert_eq!(of_k, 3, "every refusal of a kind is counted");
        }
        verify(&*store).unwrap();
    }
}
