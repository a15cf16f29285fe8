//! Shared devices: several staff on one ward tablet, each user's records under their own key.
//!
//! Each user has a slot: a store directory under `ROOT/users/`, named by [`StoreKey::slot_name`]
//! (derived from the user's key, so the directory name says nothing about who it belongs to) and
//! encrypted under that key. [`SharedDevice::switch_user`] closes the current user's store before
//! it opens the next one, so at any moment at most one user's records are open, and another user's
//! key opens nothing but their own slot.

use crate::crypto::StoreKey;
use crate::device::{Clock, Clocks, Device};
use crate::error::Error;
use crate::store::Unlock;
use std::path::{Path, PathBuf};

/// One device shared by several users.
pub struct SharedDevice {
    root: PathBuf,
    clocks: Clocks,
    current: Option<Device>,
}

impl SharedDevice {
    /// A shared device whose slots live under `root`, with the system's clocks.
    pub fn new(root: &Path) -> Self {
        Self::with_clocks(root, Clocks::system())
    }

    /// A shared device with an injected wall clock and no monotonic clock (tests).
    pub fn with_clock(root: &Path, clock: Clock) -> Self {
        Self::with_clocks(root, Clocks::wall_only(clock))
    }

    /// A shared device with the host's clocks (for its users' offline leases).
    pub fn with_clocks(root: &Path, clocks: Clocks) -> Self {
        Self {
            root: root.to_path_buf(),
            clocks,
            current: None,
        }
    }

    /// The directory of the slot `key` opens.
    pub fn slot_dir(&self, key: &StoreKey) -> PathBuf {
        self.root.join("users").join(key.slot_name())
    }

    /// Ends the current user's session (if any) and opens the slot of the user whose key this
    /// is, creating it on first use. The previous user's store is closed first, whatever happens
    /// to the new one.
    pub fn switch_user(&mut self, key: &StoreKey) -> Result<&Device, Error> {
        self.sign_out();
        let dir = self.slot_dir(key);
        let device = Device::open_with(&dir, Unlock::Key(key), self.clocks.clone())?;
        Ok(self.current.insert(device))
    }

    /// The user now signed in on this device, if any.
    pub fn current(&self) -> Option<&Device> {
        self.current.as_ref()
    }

    /// Closes the current user's store: their records cannot be read again without their key.
    pub fn sign_out(&mut self) {
        self.current = None;
    }

    /// Deletes the slot of the user whose key this is (a user leaving the ward), files included.
    pub fn remove_user(&mut self, key: &StoreKey) -> Result<(), Error> {
        let dir = self.slot_dir(key);
        if self
            .current
            .as_ref()
            .is_some_and(|d| d.store_dir() == dir.as_path())
        {
            self.sign_out();
        }
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::Store(sled::Error::Io(e)))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use casenote_protocol::record::Identity;

    #[test]
    fn each_user_has_a_slot_named_by_their_key_and_only_their_key_opens_it() {
        let tmp = tempfile::tempdir().unwrap();
        let alice = StoreKey::from_bytes([1; 32]);
        let bob = StoreKey::from_bytes([2; 32]);
        let mut tablet = SharedDevice::new(tmp.path());
        tablet.switch_user(&alice).unwrap();
        tablet.switch_user(&bob).unwrap();
        assert_ne!(tablet.slot_dir(&alice), tablet.slot_dir(&bob));
        assert!(tablet.slot_dir(&alice).exists() && tablet.slot_dir(&bob).exists());
        tablet.sign_out();
        // Bob's key on Alice's slot: refused before anything is read.
        assert!(matches!(
            Device::open(&tablet.slot_dir(&alice), &bob),
            Err(Error::WrongKey)
        ));
        tablet.remove_user(&alice).unwrap();
        assert!(!tablet.slot_dir(&alice).exists());
        assert!(tablet.slot_dir(&bob).exists());
    }

    #[test]
    fn a_user_switch_closes_the_previous_users_store() {
        let tmp = tempfile::tempdir().unwrap();
        let alice = StoreKey::from_bytes([1; 32]);
        let bob = StoreKey::from_bytes([2; 32]);
        let mut tablet = SharedDevice::new(tmp.path());
        let dev = tablet.switch_user(&alice).unwrap();
        // Not signed in to a server: an edit is refused, but the store is Alice's and open.
        assert!(dev
            .case_new(&Identity {
                name: "x".into(),
                nhs_number: None,
                dob: None,
                address: None,
            })
            .is_err());
        assert!(
            Device::open(&tablet.slot_dir(&alice), &alice).is_err(),
            "positive control: an open store cannot be opened twice"
        );
        tablet.switch_user(&bob).unwrap();
        // Alice's store is closed: sled's lock on it is released, so it opens again here.
        let again = Device::open(&tablet.slot_dir(&alice), &alice);
        assert!(
            again.is_ok(),
            "Alice's store was still open after the switch"
        );
    }
}
