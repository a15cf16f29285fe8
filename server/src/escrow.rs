//! Key escrow: the server's half of a wipe that its user can undo and a revocation cannot.
//!
//! A device store is sealed under a random data key; the device keeps that key wrapped under a
//! key of the server's (this module's), one per device, random, kept in the store's `escrow` tree
//! and never logged. When the offline lease wipes a device, it drops its own copy of the data key
//! and keeps only the wrapped one, so the store cannot be read from the device's disk alone, nor
//! from the server alone. When the same member of staff signs in again, the device fetches the
//! wrap key here and everything, unsynced edits included, is back. Revoking the device destroys
//! its wrap key ([`crate::auth`]), so its wipe is final.
//!
//! Who gets a key: a device its own (made on its first request); a member of staff, on a device
//! re-enrolled for them, the key of another live device of theirs (the wiped store was made under
//! the old enrolment). Nobody gets another member of staff's keys, and the answer for a device
//! that is not theirs is the same whether or not it exists. Every request is audited as
//! `key_escrow`, with ids only.
//!
//! It may use the store through one write transaction per request, the model and
//! [`crate::auth`]'s principal.

use crate::auth::Principal;
use crate::model::{AuditKind, AuditRecord};
use crate::store::{write, Store, StoreError};
use casenote_protocol::limits::ESCROW_KEY_BYTES;
use casenote_protocol::DeviceId;
use rand::RngCore;
use serde_json::json;

/// The wrap key of `device` for the bearer `who`, or `None` if they may not have it. Made for
/// the bearer's own device on its first request; the key, the ownership check and the audit
/// entry are one transaction, durable before the key is returned.
pub fn key_for(
    store: &dyn Store,
    who: &Principal,
    device: DeviceId,
    now_ms: i64,
) -> Result<Option<[u8; ESCROW_KEY_BYTES]>, StoreError> {
    let fresh = fresh_key();
    let key = write(store, |txn| {
        let key = if device == who.device_id {
            Some(txn.escrow_put_if_absent(device, fresh)?)
        } else {
            match txn.device(device)? {
                Some(d) if d.staff_id == who.staff_id() && !d.revoked => txn.escrow(device)?,
                _ => None,
            }
        };
        txn.audit_append(
            AuditRecord::new(
                AuditKind::KeyEscrow,
                now_ms,
                json!({ "for_device": device, "handed_out": key.is_some() }),
            )
            .staff(who.staff_id())
            .device(who.device_id),
        )?;
        Ok(key)
    })?;
    store.flush()?;
    Ok(key)
}

fn fresh_key() -> [u8; ESCROW_KEY_BYTES] {
    let mut key = [0u8; ESCROW_KEY_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::read;
    use crate::testkit::{self, add_org, add_staff, add_team};

    #[test]
    fn a_device_gets_its_own_key_its_staffs_other_devices_keys_and_nobody_elses() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        add_org(&*store, "O").unwrap();
        add_team(&*store, "O", "T").unwrap();
        let s = add_staff(&*store, "S", "gp", "O", &["T".into()]).unwrap();
        let u = add_staff(&*store, "U", "gp", "O", &["T".into()]).unwrap();
        let old = testkit::issue(&*store, &s, "old phone", 0).unwrap();
        let new = testkit::issue(&*store, &s, "new phone", 0).unwrap();
        let other = testkit::issue(&*store, &u, "laptop", 0).unwrap();
        let who = |t: &str| testkit::principal(&*store, t);
        let (old_id, new_id) = (old.device.device_id, new.device.device_id);

        let k = key_for(&*store, &who(&old.token), old_id, 1)
            .unwrap()
            .unwrap();
        assert_eq!(
            key_for(&*store, &who(&old.token), old_id, 2).unwrap(),
            Some(k),
            "the same key every time"
        );
        assert_eq!(
            key_for(&*store, &who(&new.token), old_id, 3).unwrap(),
            Some(k),
            "the same member of staff, re-enrolled"
        );
        assert_eq!(
            key_for(&*store, &who(&other.token), old_id, 4).unwrap(),
            None,
            "another member of staff"
        );
        assert_eq!(
            key_for(&*store, &who(&other.token), DeviceId::new_random(), 5).unwrap(),
            None
        );
        assert_ne!(
            key_for(&*store, &who(&new.token), new_id, 6).unwrap(),
            Some(k)
        );

        // Revoking the old device destroys its key: nobody gets it again.
        testkit::revoke(&*store, old_id, 7);
        assert_eq!(read(&*store, |t| t.escrow(old_id)).unwrap(), None);
        assert_eq!(key_for(&*store, &who(&new.token), old_id, 8).unwrap(), None);
        let audited = crate::audit::entries(&*store, None)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == AuditKind::KeyEscrow)
            .count();
        assert_eq!(audited, 7);
    }
}
