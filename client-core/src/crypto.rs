//! Encryption at rest for the device store: what a lost phone's files reveal is nothing.
//!
//! The host app supplies a 256-bit [`StoreKey`] (from Android Keystore or iOS Keychain; the CLI
//! keeps one in a key file or derives one from a passphrase with Argon2id). From it HKDF-SHA256
//! derives three independent keys:
//!
//! - **values**: every stored value is sealed with XChaCha20-Poly1305 under a fresh random 192-bit
//!   nonce (random nonces are safe at this size, so no counter has to survive a crash). The
//!   plaintext carries the record's logical key, and the associated data is its physical key, so a
//!   value moved to another slot, or altered, fails to open instead of being read as another's.
//! - **names**: ids and meta names in keys are replaced by a keyed hash (HMAC-SHA256, first 16
//!   bytes), so keys still sort and scan by prefix without saying which case or document they are.
//! - **check**: a tag kept in the clear beside the store, so a wrong key is told apart from damage
//!   before anything is read.
//!
//! The RustCrypto crates (`chacha20poly1305`, `hkdf`, `hmac`, `argon2`) do the cryptography; this
//! module only arranges them. Key material is zeroised when dropped.

use crate::error::Error;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

/// Bytes in a store key.
pub const KEY_BYTES: usize = 32;
/// Bytes of keyed hash that replace an id or name in a key: 128 bits, so two names never collide.
pub const NAME_BYTES: usize = 16;
/// Bytes of salt for passphrase-derived keys, kept in the clear in the store's key check record.
pub const SALT_BYTES: usize = 16;
const NONCE_BYTES: usize = 24;
/// The format of a sealed value; a later format would get a new number.
const SEALED_V1: u8 = 1;

/// The key a device store is encrypted under. Zeroised on drop; never printed.
#[derive(Clone)]
pub struct StoreKey(Zeroizing<[u8; KEY_BYTES]>);

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

impl StoreKey {
    /// A key supplied by the host app (Android Keystore, iOS Keychain, a key file).
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A key from a byte slice, which must be exactly [`KEY_BYTES`] long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        let arr: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| {
            Error::InvalidKey(format!(
                "a store key is {KEY_BYTES} bytes, not {}",
                bytes.len()
            ))
        })?;
        Ok(Self::from_bytes(arr))
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        Self(bytes)
    }

    /// A key derived from a passphrase with Argon2id (parameters in `limits`), under the store's
    /// salt, so the same passphrase gives a different key for every store.
    pub fn from_passphrase(passphrase: &str, salt: &[u8; SALT_BYTES]) -> Result<Self, Error> {
        use casenote_protocol::limits::{
            PASSPHRASE_ARGON2_ITERATIONS, PASSPHRASE_ARGON2_MEMORY_KIB, PASSPHRASE_BYTES_MIN,
        };
        if passphrase.len() < PASSPHRASE_BYTES_MIN {
            return Err(Error::InvalidKey(format!(
                "a passphrase needs at least {PASSPHRASE_BYTES_MIN} characters"
            )));
        }
        let params = argon2::Params::new(
            PASSPHRASE_ARGON2_MEMORY_KIB,
            PASSPHRASE_ARGON2_ITERATIONS,
            1,
            Some(KEY_BYTES),
        )
        .map_err(|e| Error::InvalidKey(format!("Argon2 parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; KEY_BYTES]);
        argon
            .hash_password_into(passphrase.as_bytes(), salt, out.as_mut())
            .map_err(|e| Error::InvalidKey(format!("Argon2: {e}")))?;
        Ok(Self(out))
    }

    /// The raw key bytes, for a host app that stores them itself.
    pub fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }

    fn derive(&self, purpose: &[u8]) -> Zeroizing<[u8; KEY_BYTES]> {
        let hk = hkdf::Hkdf::<Sha256>::new(None, self.0.as_ref());
        let mut out = Zeroizing::new([0u8; KEY_BYTES]);
        hk.expand(purpose, out.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }

    /// A name for this key's slot on a shared device: says which directory is whose without
    /// saying who, and without revealing anything about the key.
    pub fn slot_name(&self) -> String {
        hex::encode(&self.derive(b"casenote device slot v1")[..NAME_BYTES])
    }
}

/// Wraps `key` under `wrapping` (XChaCha20-Poly1305 under a key derived for `purpose`, a random
/// nonce, `aad` bound in): how a store's data key is kept under the host's key and under the
/// server's escrow key ([`crate::keyring`]).
pub(crate) fn wrap_key(wrapping: &[u8], purpose: &[u8], aad: &[u8], key: &StoreKey) -> Vec<u8> {
    let cipher = wrapping_cipher(wrapping, purpose);
    let mut nonce = [0u8; NONCE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: key.as_bytes(),
                aad,
            },
        )
        .expect("XChaCha20-Poly1305 seals 32 bytes");
    let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// Opens what [`wrap_key`] made; `None` under another wrapping key, purpose or `aad`, or when
/// altered.
pub(crate) fn unwrap_key(
    wrapping: &[u8],
    purpose: &[u8],
    aad: &[u8],
    wrapped: &[u8],
) -> Option<StoreKey> {
    if wrapped.len() < NONCE_BYTES {
        return None;
    }
    let (nonce, sealed) = wrapped.split_at(NONCE_BYTES);
    let plain = Zeroizing::new(
        wrapping_cipher(wrapping, purpose)
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
            .ok()?,
    );
    StoreKey::from_slice(&plain).ok()
}

fn wrapping_cipher(wrapping: &[u8], purpose: &[u8]) -> XChaCha20Poly1305 {
    let hk = hkdf::Hkdf::<Sha256>::new(None, wrapping);
    let mut key = Zeroizing::new([0u8; KEY_BYTES]);
    hk.expand(purpose, key.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    XChaCha20Poly1305::new(key.as_ref().into())
}

/// Seals and opens store records under one [`StoreKey`].
pub(crate) struct Sealer {
    values: XChaCha20Poly1305,
    names: Zeroizing<[u8; KEY_BYTES]>,
    check: [u8; KEY_BYTES],
}

impl Sealer {
    pub(crate) fn new(key: &StoreKey) -> Self {
        let mut values_key = key.derive(b"casenote store values v1");
        let values = XChaCha20Poly1305::new(values_key.as_ref().into());
        values_key.zeroize();
        Self {
            values,
            names: key.derive(b"casenote store names v1"),
            check: *key.derive(b"casenote store key check v1"),
        }
    }

    /// The tag that told this key from any other in stores from before key envelopes (tests make
    /// such stores to check their migration).
    #[cfg(test)]
    pub(crate) fn check_tag(&self) -> &[u8; KEY_BYTES] {
        &self.check
    }

    /// Whether `tag` is this key's check tag, compared in constant time.
    pub(crate) fn is_own_tag(&self, tag: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        tag.len() == KEY_BYTES && bool::from(tag.ct_eq(&self.check))
    }

    /// The keyed hash that stands for `name` (an id, a meta name) in a key.
    pub(crate) fn name(&self, name: &[u8]) -> [u8; NAME_BYTES] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.names.as_ref())
            .expect("HMAC takes a key of any length");
        mac.update(name);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; NAME_BYTES];
        out.copy_from_slice(&full[..NAME_BYTES]);
        out
    }

    /// Seals `value`, stored under `physical`, remembering its `logical` key.
    pub(crate) fn seal(&self, physical: &[u8], logical: &[u8], value: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut plain = Zeroizing::new(Vec::with_capacity(2 + logical.len() + value.len()));
        let len = u16::try_from(logical.len()).expect("store keys are short");
        plain.extend_from_slice(&len.to_be_bytes());
        plain.extend_from_slice(logical);
        plain.extend_from_slice(value);
        let sealed = self
            .values
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: physical,
                },
            )
            .expect("XChaCha20-Poly1305 seals any message that fits in memory");
        let mut out = Vec::with_capacity(1 + NONCE_BYTES + sealed.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a value stored under `physical`: its logical key and its bytes. A value that does
    /// not open was altered, moved, or sealed under another key: never returned as data.
    pub(crate) fn open(&self, physical: &[u8], stored: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let damaged = || Error::Corrupt("a stored record fails its integrity check".into());
        if stored.len() < 1 + NONCE_BYTES || stored[0] != SEALED_V1 {
            return Err(damaged());
        }
        let (nonce, sealed) = stored[1..].split_at(NONCE_BYTES);
        let plain = Zeroizing::new(
            self.values
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: physical,
                    },
                )
                .map_err(|_| damaged())?,
        );
        if plain.len() < 2 {
            return Err(damaged());
        }
        let len = u16::from_be_bytes([plain[0], plain[1]]) as usize;
        if plain.len() < 2 + len {
            return Err(damaged());
        }
        Ok((plain[2..2 + len].to_vec(), plain[2 + len..].to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_under_its_key_and_slot() {
        let a = Sealer::new(&StoreKey::from_bytes([1; KEY_BYTES]));
        let b = Sealer::new(&StoreKey::from_bytes([2; KEY_BYTES]));
        let sealed = a.seal(b"slot-1", b"logical", b"the value");
        assert_eq!(
            a.open(b"slot-1", &sealed).unwrap(),
            (b"logical".to_vec(), b"the value".to_vec())
        );
        assert!(
            b.open(b"slot-1", &sealed).is_err(),
            "opened under another key"
        );
        assert!(
            a.open(b"slot-2", &sealed).is_err(),
            "opened in another slot"
        );
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(
            a.open(b"slot-1", &flipped).is_err(),
            "opened after tampering"
        );
        assert!(a.open(b"slot-1", &sealed[..10]).is_err());
        assert!(a.open(b"slot-1", &[]).is_err());
    }

    #[test]
    fn a_wrapped_key_opens_only_with_its_wrapping_key_purpose_and_aad() {
        let key = StoreKey::generate();
        let w = [7u8; KEY_BYTES];
        let wrapped = wrap_key(&w, b"p", b"aad", &key);
        let back = unwrap_key(&w, b"p", b"aad", &wrapped).unwrap();
        assert_eq!(back.as_bytes(), key.as_bytes());
        assert!(unwrap_key(&[8u8; KEY_BYTES], b"p", b"aad", &wrapped).is_none());
        assert!(unwrap_key(&w, b"q", b"aad", &wrapped).is_none());
        assert!(unwrap_key(&w, b"p", b"other", &wrapped).is_none());
        let mut flipped = wrapped.clone();
        flipped[30] ^= 1;
        assert!(unwrap_key(&w, b"p", b"aad", &flipped).is_none());
        assert!(unwrap_key(&w, b"p", b"aad", &wrapped[..10]).is_none());
    }

    #[test]
    fn names_and_tags_depend_on_the_key() {
        let a = Sealer::new(&StoreKey::from_bytes([1; KEY_BYTES]));
        let b = Sealer::new(&StoreKey::from_bytes([2; KEY_BYTES]));
        assert_eq!(a.name(b"doc"), a.name(b"doc"));
        assert_ne!(a.name(b"doc"), b.name(b"doc"));
        assert_ne!(a.name(b"doc"), a.name(b"doc2"));
        assert!(a.is_own_tag(a.check_tag()));
        assert!(!a.is_own_tag(b.check_tag()));
        assert!(!a.is_own_tag(&[]));
    }

    #[test]
    fn a_passphrase_key_depends_on_passphrase_and_salt() {
        let k1 = StoreKey::from_passphrase("correct horse battery", &[1; SALT_BYTES]).unwrap();
        let k2 = StoreKey::from_passphrase("correct horse battery", &[1; SALT_BYTES]).unwrap();
        let k3 = StoreKey::from_passphrase("correct horse battery", &[2; SALT_BYTES]).unwrap();
        let k4 = StoreKey::from_passphrase("correct horse battery!", &[1; SALT_BYTES]).unwrap();
        assert_eq!(k1.as_bytes(), k2.as_bytes());
        assert_ne!(k1.as_bytes(), k3.as_bytes());
        assert_ne!(k1.as_bytes(), k4.as_bytes());
        assert!(StoreKey::from_passphrase("short", &[1; SALT_BYTES]).is_err());
        assert!(StoreKey::from_slice(&[0; 31]).is_err());
        assert_eq!(format!("{k1:?}"), "StoreKey(..)");
    }
}
