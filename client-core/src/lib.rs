//! casenote-client-core: the case record on a device, offline first.
//!
//! A [`Device`] holds case records as Automerge documents in a local sled store ([`store`]).
//! Every edit is durable before the call returns, and stays in the outbox until the server
//! acknowledges it. [`engine`] is the sans-IO half of sync (it builds requests and decides what a
//! response means); [`transport`] is the only part that touches the network.

pub mod crypto;
pub mod device;
mod disk;
mod doc_cache;
pub mod engine;
pub mod error;
pub mod fields;
mod keyring;
pub mod lease;
pub mod live;
pub mod lock;
pub mod schedule;
pub mod shared;
pub mod store;
pub mod tls;
pub mod transport;

pub use crypto::StoreKey;
pub use device::{CaseSummary, Clock, Clocks, Device, Status, SyncReport};
pub use error::Error;
pub use schedule::SyncSchedule;
pub use shared::SharedDevice;
pub use transport::{HttpTransport, Transport, TransportError};
