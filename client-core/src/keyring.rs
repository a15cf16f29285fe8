//! The store's key envelope: the one record kept in the clear, and why a wipe can be undone.
//!
//! A store is sealed under a random **data key** of its own. The envelope keeps that key only
//! wrapped ([`crate::crypto::wrap_key`]):
//!
//! - **host**: under the host's key (the app's key from Android Keystore or iOS Keychain, the
//!   CLI's key file, or a key derived from a passphrase with Argon2id under the store's salt).
//!   This is what opens the store day to day. A wrong host key fails to unwrap it: `WrongKey`,
//!   before anything is read.
//! - **escrow**: under the server's escrow key for one enrolled device (`POST /v1/escrow/{id}`),
//!   with that device's id. Made at sign-in.
//!
//! When the offline lease wipes the store, the host wrap is removed (and the store's files
//! rewritten so that no old copy of it survives): what is left on the disk cannot be read with
//! the host key, nor by the server, only with both the disk and the server's key, which the
//! server hands only to the same member of staff signing in again. A revoked device's escrow key
//! is destroyed on the server, so its wipe is final.
//!
//! The envelope also carries the store's **id**: 16 random bytes (hex), made with the store,
//! that name it wherever it is moved and however its path is spelled. A host that keeps the
//! store's key apart from it (the CLI's key file) finds the key by this id. Stores from before
//! ids get one the first time they are opened.
//!
//! Format 2 is JSON (hex for bytes). Format 1, from before envelopes, held the salt and a check
//! tag of a host key that was the data key itself; such a store is migrated when it is opened
//! (see [`crate::store`]).

use crate::crypto::{unwrap_key, wrap_key, StoreKey, SALT_BYTES};
use crate::error::Error;
use casenote_protocol::DeviceId;
use serde::{Deserialize, Serialize};

const HOST_PURPOSE: &[u8] = b"casenote store host wrap v2";
const ESCROW_PURPOSE: &[u8] = b"casenote store escrow wrap v2";
const FORMAT_V2: u8 = 2;
/// The format of the key check record of stores from before envelopes.
pub(crate) const FORMAT_V1: u8 = 1;

/// The data key wrapped under one enrolled device's escrow key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EscrowWrap {
    pub device_id: DeviceId,
    sealed: String,
}

/// The key envelope (format 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    format: u8,
    /// The store's id (`None`: a store from before ids, until it is next opened).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    salt: String,
    /// The data key under the host's key; absent once the offline lease wiped the store.
    host: Option<String>,
    pub escrow: Option<EscrowWrap>,
    /// Set with a wipe, until the store's files are rewritten without the old host wrap.
    #[serde(default)]
    pub scrub: bool,
}

/// A new store id: 16 random bytes, hex.
fn new_id() -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    hex::encode(bytes)
}

impl Envelope {
    /// A new store's envelope: `data` wrapped under `host`.
    pub fn new(salt: &[u8; SALT_BYTES], data: &StoreKey, host: &StoreKey) -> Self {
        let mut env = Self {
            format: FORMAT_V2,
            id: Some(new_id()),
            salt: hex::encode(salt),
            host: None,
            escrow: None,
            scrub: false,
        };
        env.seal_host(data, host);
        env
    }

    /// Reads an envelope; `Err(Corrupt)` if it is not one.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let env: Self = serde_json::from_slice(bytes)
            .map_err(|_| Error::Corrupt("the store's key envelope".into()))?;
        if env.format != FORMAT_V2 || env.salt().is_err() {
            return Err(Error::Corrupt("the store's key envelope".into()));
        }
        Ok(env)
    }

    /// The store's id, if it has one.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// Gives a store from before ids its id; false if it had one.
    pub fn ensure_id(&mut self) -> bool {
        if self.id.is_some() {
            return false;
        }
        self.id = Some(new_id());
        true
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope serialises")
    }

    pub fn salt(&self) -> Result<[u8; SALT_BYTES], Error> {
        hex::decode(&self.salt)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| Error::Corrupt("the store's salt".into()))
    }

    /// The data key, unwrapped with the host's key: `Ok(None)` once the store was wiped (only
    /// the escrow can open it), `WrongKey` under another host key.
    pub fn open_host(&self, host: &StoreKey) -> Result<Option<StoreKey>, Error> {
        let Some(wrapped) = &self.host else {
            return Ok(None);
        };
        let wrapped = hex::decode(wrapped).map_err(|_| Error::WrongKey)?;
        unwrap_key(
            host.as_bytes(),
            HOST_PURPOSE,
            self.salt.as_bytes(),
            &wrapped,
        )
        .map(Some)
        .ok_or(Error::WrongKey)
    }

    /// Wraps the data key under the host's key (a new store, or a store brought back).
    pub fn seal_host(&mut self, data: &StoreKey, host: &StoreKey) {
        let wrapped = wrap_key(host.as_bytes(), HOST_PURPOSE, self.salt.as_bytes(), data);
        self.host = Some(hex::encode(wrapped));
    }

    /// Forgets the host wrap: from now on only the escrow opens the store.
    pub fn drop_host(&mut self) {
        self.host = None;
    }

    /// The host wrap as stored (tests look for it in the store's files).
    #[cfg(test)]
    pub fn host_hex(self) -> Option<String> {
        self.host
    }

    pub fn is_wiped(&self) -> bool {
        self.host.is_none()
    }

    /// Wraps the data key under `device`'s escrow key.
    pub fn seal_escrow(&mut self, data: &StoreKey, device: DeviceId, key: &[u8]) {
        let wrapped = wrap_key(key, ESCROW_PURPOSE, &self.escrow_aad(device), data);
        self.escrow = Some(EscrowWrap {
            device_id: device,
            sealed: hex::encode(wrapped),
        });
    }

    /// The data key, unwrapped with the escrow key the server handed out; `None` if it does not
    /// open it (another device's key, or damage).
    pub fn open_escrow(&self, key: &[u8]) -> Option<StoreKey> {
        let esc = self.escrow.as_ref()?;
        let wrapped = hex::decode(&esc.sealed).ok()?;
        unwrap_key(
            key,
            ESCROW_PURPOSE,
            &self.escrow_aad(esc.device_id),
            &wrapped,
        )
    }

    fn escrow_aad(&self, device: DeviceId) -> Vec<u8> {
        let mut aad = self.salt.as_bytes().to_vec();
        aad.extend_from_slice(device.as_bytes());
        aad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_key_opens_with_the_host_key_or_the_escrow_key_and_nothing_else() {
        let (data, host, other) = (
            StoreKey::generate(),
            StoreKey::generate(),
            StoreKey::generate(),
        );
        let device = DeviceId::new_random();
        let mut env = Envelope::new(&[5; SALT_BYTES], &data, &host);
        env.seal_escrow(&data, device, &[9; 32]);
        let env = Envelope::parse(&env.encode()).unwrap();
        assert_eq!(
            env.open_host(&host).unwrap().unwrap().as_bytes(),
            data.as_bytes()
        );
        assert!(matches!(env.open_host(&other), Err(Error::WrongKey)));
        assert_eq!(
            env.open_escrow(&[9; 32]).unwrap().as_bytes(),
            data.as_bytes()
        );
        assert!(env.open_escrow(&[8; 32]).is_none());

        let mut wiped = env.clone();
        wiped.drop_host();
        assert!(wiped.is_wiped());
        assert!(wiped.open_host(&host).unwrap().is_none());
        assert!(!String::from_utf8(wiped.encode())
            .unwrap()
            .contains(env.host.as_deref().unwrap()));
        assert!(Envelope::parse(b"\x01junk").is_err());
    }

    #[test]
    fn a_store_has_an_id_of_its_own_and_one_from_before_ids_gets_one_once() {
        let (data, host) = (StoreKey::generate(), StoreKey::generate());
        let a = Envelope::new(&[1; SALT_BYTES], &data, &host);
        let b = Envelope::new(&[1; SALT_BYTES], &data, &host);
        assert_eq!(a.id().map(str::len), Some(32));
        assert_ne!(a.id(), b.id(), "two stores, two ids");
        let mut old: serde_json::Value = serde_json::from_slice(&a.encode()).unwrap();
        old.as_object_mut().unwrap().remove("id");
        let mut old = Envelope::parse(&serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!(old.id(), None);
        assert!(
            old.open_host(&host).unwrap().is_some(),
            "an old envelope opens as before"
        );
        assert!(old.ensure_id());
        let id = old.id().unwrap().to_string();
        assert!(!old.ensure_id());
        assert_eq!(
            Envelope::parse(&old.encode()).unwrap().id(),
            Some(id.as_str())
        );
    }
}
