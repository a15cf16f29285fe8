//! The server's plain data and pure rules: the directory ([`directory`]: orgs, teams, staff and
//! their [`Role`], devices, token hashes), the records of the case log and of each device
//! ([`records`]), and audit entries with their hash chain ([`audit`]).
//!
//! No I/O, no store, no HTTP: everything here can be built and checked in a test without a disk.
//! It may use `casenote-protocol` and serde; every other module may use it.

pub mod audit;
pub mod directory;
pub mod records;

pub use audit::{AuditBroken, AuditEntry, AuditKind, AuditRecord, By, GENESIS_HASH};
pub use casenote_protocol::nhs::nhs_number_is_valid;
pub use directory::{AdminToken, Device, Org, Role, Staff, Team, TokenRecord, UnknownRole};
pub use records::{
    chain_next, ActorBinding, BackfillPos, CaseRecord, DeviceSync, DocHeader, DocRecord, Grant,
    LogEntry, LoggedChange, NewChange, PendingReconcile, QuarantineEntry, CHAIN_GENESIS,
};
