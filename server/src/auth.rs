//! Device tokens: issuing, revoking and checking them.
//!
//! A token is `cn_` followed by 32 random bytes in hex. The server keeps only its sha256, mapped to
//! the device and staff member it was issued for, so a copy of the store does not let anyone sign
//! in. Each token enrols one device; revoking the device (a lost tablet) ends the token.

use crate::directory::{Device, DirectoryError, Staff};
use crate::store::{Store, StoreError, TokenRecord};
use casenote_protocol::{DeviceId, StaffId, TeamId};
use rand::RngCore;
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
) -> Result<Issued, StoreError> {
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
    Ok(Issued { device, token })
}

/// Revokes a device and its token. Revoking twice is harmless.
pub fn revoke(store: &dyn Store, device_id: &str) -> Result<Device, DirectoryError> {
    let id: DeviceId = device_id
        .parse()
        .map_err(|_| DirectoryError::NoSuchDevice(device_id.into()))?;
    let mut device = store
        .get_device(id)?
        .ok_or_else(|| DirectoryError::NoSuchDevice(device_id.into()))?;
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
    Ok(device)
}

/// The principal a token belongs to, or `None` for an unknown or revoked token (the caller answers
/// both with the same 401, so a probe learns nothing).
pub fn authenticate(store: &dyn Store, token: &str) -> Result<Option<Principal>, StoreError> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    let Some(rec) = store.get_token(&token_hash(token))? else {
        return Ok(None);
    };
    if rec.revoked {
        return Ok(None);
    }
    match store.get_device(rec.device_id)? {
        Some(d) if !d.revoked => {}
        _ => return Ok(None),
    }
    Ok(store.get_staff(rec.staff_id)?.map(|staff| Principal {
        device_id: rec.device_id,
        staff,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory;

    #[test]
    fn a_token_works_until_its_device_is_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path()).unwrap();
        directory::add_org(&*store, "O").unwrap();
        directory::add_team(&*store, "O", "T").unwrap();
        let staff = directory::add_staff(&*store, "S", "gp", "O", &["T".into()]).unwrap();
        let issued = issue(&*store, &staff, "laptop", 0).unwrap();
        assert!(issued.token.starts_with("cn_"));
        assert_eq!(issued.token.len(), 3 + 64);
        let who = authenticate(&*store, &issued.token).unwrap().unwrap();
        assert_eq!(who.staff_id(), staff.staff_id);
        assert_eq!(authenticate(&*store, "cn_nope").unwrap(), None);
        revoke(&*store, &issued.device.device_id.to_string()).unwrap();
        assert_eq!(authenticate(&*store, &issued.token).unwrap(), None);
    }
}
