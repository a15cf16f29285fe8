//! Device tokens: issuing, revoking and checking them.
//!
//! A token is `cn_` followed by 32 random bytes in hex. The server keeps only its sha256, mapped to
//! the device and staff member it was issued for, so a copy of the store does not let anyone sign
//! in. Each token enrols one device; revoking the device (a lost tablet) ends the token, and
//! revoking a member of staff (a leaver) ends every token of theirs. A revoked token is told so
//! ([`Authenticated::Revoked`], answered `device_revoked` so that the device wipes itself); an
//! unknown one is not. Enrolments and revocations are audited here, whoever calls.

use crate::audit::{AuditKind, AuditRecord};
use crate::directory::{Device, DirectoryError, Staff};
use crate::model::TokenRecord;
use crate::store::{Store, StoreError};
use casenote_protocol::{DeviceId, StaffId, TeamId};
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};

/// Every token starts with this, so a leaked one is easy to recognise in logs and scanners.
pub const TOKEN_PREFIX: &str = "cn_";

/// The sha256 of a token, the only form in which the server keeps it.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh random token.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// Who is making a request: the device, its staff member and what they belong to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub device_id: DeviceId,
    pub staff: Staff,
}

impl Principal {
    pub fn staff_id(&self) -> StaffId {
        self.staff.staff_id
    }
    pub fn teams(&self) -> &[TeamId] {
        &self.staff.teams
    }
}

/// A freshly issued token and the device it enrols. The token is shown once and never stored.
#[derive(Clone, Debug)]
pub struct Issued {
    pub device: Device,
    pub token: String,
}

/// Enrols a new device for `staff` and returns its token.
pub fn issue(
    store: &dyn Store,
    staff: &Staff,
    device_name: &str,
    now_ms: i64,
) -> Result<Issued, DirectoryError> {
    if staff.revoked {
        return Err(DirectoryError::StaffRevoked(staff.staff_id));
    }
    let token = new_token();
    let hash = token_hash(&token);
    let device = Device {
        device_id: DeviceId::new_random(),
        staff_id: staff.staff_id,
        name: device_name.to_string(),
        created_ms: now_ms,
        revoked: false,
        token_sha256: hex::encode(hash),
    };
    // The device first, then the token: a crash in between leaves a device without a token, never
    // a token without a device.
    store.put_device(&device)?;
    store.put_token(
        &hash,
        &TokenRecord {
            device_id: device.device_id,
            staff_id: staff.staff_id,
            revoked: false,
        },
    )?;
    store.audit_append(
        AuditRecord::new(AuditKind::Enrol, now_ms, json!({}))
            .staff(staff.staff_id)
            .device(device.device_id),
    )?;
    Ok(Issued { device, token })
}

/// Revokes a device and its token. Revoking twice is harmless.
pub fn revoke(store: &dyn Store, device_id: &str, now_ms: i64) -> Result<Device, DirectoryError> {
    let id: DeviceId = device_id
        .parse()
        .map_err(|_| DirectoryError::NoSuchDevice(device_id.into()))?;
    let device =
        revoke_device(store, id)?.ok_or_else(|| DirectoryError::NoSuchDevice(device_id.into()))?;
    store.audit_append(
        AuditRecord::new(AuditKind::TokenRevoke, now_ms, json!({}))
            .staff(device.staff_id)
            .device(device.device_id),
    )?;
    Ok(device)
}

/// Revokes a member of staff and every device of theirs; returns the devices. Revoking twice is
/// harmless.
pub fn revoke_staff(
    store: &dyn Store,
    staff_id: StaffId,
    now_ms: i64,
) -> Result<Vec<DeviceId>, DirectoryError> {
    let mut staff = store
        .get_staff(staff_id)?
        .ok_or_else(|| DirectoryError::NoSuchStaff(staff_id.to_string()))?;
    // The flag first: from here on every token of theirs is refused, whatever happens next.
    staff.revoked = true;
    store.put_staff(&staff)?;
    let mut devices = Vec::new();
    for d in store.list_devices()? {
        if d.staff_id == staff_id {
            revoke_device(store, d.device_id)?;
            devices.push(d.device_id);
        }
    }
    store.audit_append(
        AuditRecord::new(
            AuditKind::StaffRevoke,
            now_ms,
            json!({ "devices": devices }),
        )
        .staff(staff_id),
    )?;
    Ok(devices)
}

fn revoke_device(store: &dyn Store, id: DeviceId) -> Result<Option<Device>, StoreError> {
    let Some(mut device) = store.get_device(id)? else {
        return Ok(None);
    };
    if let Ok(bytes) = hex::decode(&device.token_sha256) {
        if let Ok(hash) = <[u8; 32]>::try_from(bytes.as_slice()) {
            if let Some(mut rec) = store.get_token(&hash)? {
                rec.revoked = true;
                store.put_token(&hash, &rec)?;
            }
        }
    }
    device.revoked = true;
    store.put_device(&device)?;
    // Its store's escrowed key goes too: a wipe of a revoked device can never be undone.
    crate::escrow::destroy(store, id)?;
    Ok(Some(device))
}

/// What a bearer token turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authenticated {
    /// A live token.
    Ok(Principal),
    /// A token the server issued and then revoked (its device, or its staff member): the device
    /// must wipe itself. Only the holder of the token can get this answer.
    Revoked {
        device_id: DeviceId,
        staff_id: StaffId,
    },
    /// No such token.
    Unknown,
}

/// Looks a token up.
pub fn authenticate(store: &dyn Store, token: &str) -> Result<Authenticated, StoreError> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Ok(Authenticated::Unknown);
    }
    let Some(rec) = store.get_token(&token_hash(token))? else {
        return Ok(Authenticated::Unknown);
    };
    let revoked = Authenticated::Revoked {
        device_id: rec.device_id,
        staff_id: rec.staff_id,
    };
    if rec.revoked {
        return Ok(revoked);
    }
    match store.get_device(rec.device_id)? {
        Some(d) if !d.revoked => {}
        Some(_) => return Ok(revoked),
        None => return Ok(Authenticated::Unknown),
    }
    Ok(match store.get_staff(rec.staff_id)? {
        Some(staff) if staff.revoked => revoked,
        Some(staff) => Authenticated::Ok(Principal {
            device_id: rec.device_id,
            staff,
        }),
        None => Authenticated::Unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory;

    #[test]
    fn a_token_works_until_its_device_is_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        directory::add_org(&*store, "O").unwrap();
        directory::add_team(&*store, "O", "T").unwrap();
        let staff = directory::add_staff(&*store, "S", "gp", "O", &["T".into()]).unwrap();
        let issued = issue(&*store, &staff, "laptop", 0).unwrap();
        assert!(issued.token.starts_with("cn_"));
        assert_eq!(issued.token.len(), 3 + 64);
        let Authenticated::Ok(who) = authenticate(&*store, &issued.token).unwrap() else {
            panic!("a fresh token must work");
        };
        assert_eq!(who.staff_id(), staff.staff_id);
        assert_eq!(
            authenticate(&*store, "cn_nope").unwrap(),
            Authenticated::Unknown
        );
        revoke(&*store, &issued.device.device_id.to_string(), 0).unwrap();
        assert!(matches!(
            authenticate(&*store, &issued.token).unwrap(),
            Authenticated::Revoked { device_id, .. } if device_id == issued.device.device_id
        ));
    }

    #[test]
    fn revoking_a_member_of_staff_revokes_every_device_of_theirs_and_no_new_one_is_enrolled() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled::open(dir.path()).unwrap();
        directory::add_org(&*store, "O").unwrap();
        directory::add_team(&*store, "O", "T").unwrap();
        let staff = directory::add_staff(&*store, "S", "gp", "O", &["T".into()]).unwrap();
        let other = directory::add_staff(&*store, "U", "gp", "O", &["T".into()]).unwrap();
        let a = issue(&*store, &staff, "phone", 0).unwrap();
        let b = issue(&*store, &staff, "laptop", 0).unwrap();
        let c = issue(&*store, &other, "laptop", 0).unwrap();
        let devices = revoke_staff(&*store, staff.staff_id, 1).unwrap();
        assert_eq!(devices.len(), 2);
        for t in [&a.token, &b.token] {
            assert!(matches!(
                authenticate(&*store, t).unwrap(),
                Authenticated::Revoked { .. }
            ));
        }
        assert!(matches!(
            authenticate(&*store, &c.token).unwrap(),
            Authenticated::Ok(_)
        ));
        let revoked = store.get_staff(staff.staff_id).unwrap().unwrap();
        assert!(matches!(
            issue(&*store, &revoked, "new", 2),
            Err(DirectoryError::StaffRevoked(_))
        ));
    }
}
