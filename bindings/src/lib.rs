//! casenote-ffi: the casenote device API for Android, iOS and Python apps, through UniFFI.
//!
//! A host app holds one [`CasenoteDevice`] per store directory (per signed-in user). It opens the
//! store with 32 key bytes from the platform's key store (Android Keystore, iOS Keychain), signs
//! in, reads and edits case records, and calls `sync` when [`CasenoteSyncSchedule`] says one is
//! due (connectivity came back, the user edited, the timer ran out). Every call is blocking
//! (disk, and for `login`/`sync` the network): apps call it off the main thread.
//!
//! What crosses the boundary is deliberately plain: ids are strings, record views are records of
//! strings and numbers, `show` is JSON text, and every failure is one [`CasenoteError`] whose
//! variant is a stable kind and whose `message` says what to do next. Nothing here panics on bad
//! input: an id that does not parse or a key of the wrong length is `InvalidInput`.
//!
//! The generated bindings come from this library itself (`uniffi-bindgen generate --library`), so
//! they always match it. See `README.md` beside this crate.

mod device;
mod error;
mod schedule;
mod types;

pub use device::CasenoteDevice;
pub use error::CasenoteError;
pub use schedule::CasenoteSyncSchedule;
pub use types::*;

uniffi::setup_scaffolding!();
