//! casenote-server: the sync backend that devices push their case-note edits to and pull their
//! colleagues' edits from.
//!
//! [`run`] serves the HTTP API (see [`http`]) on a listener it is given, over a [`store::Store`]
//! it is given, so tests and benchmarks bind `127.0.0.1:0` and choose their own storage. The sync
//! algorithm itself ([`sync`]) knows nothing of HTTP; the admin CLI ([`admin`]) and the demo loader
//! ([`demo`]) work on the store directly.
//!
//! Who may see what is decided in one place, [`sync::may_read`]; access changes made by
//! [`admin`] move a global access epoch, and each device's next sync is reconciled (evictions and
//! backfill). Authorship of changes is checked and actor ids are bound to staff and device
//! ([`sync`]). Revoked tokens are told `device_revoked` ([`auth`], [`http`]). Each device store's
//! data key is escrowed, wrapped, so a wipe by the offline lease can be undone by its user and a
//! revocation cannot ([`escrow`]). Every incoming change
//! is checked against the record rules of its kind before it is stored or relayed ([`validate`]);
//! refused changes are quarantined. A document's history ([`history`]) and a person's whole
//! record ([`export`]) carry the provenance of every change. Everything that matters is recorded
//! in a hash-chained audit log ([`audit`]). Devices may listen on a WebSocket ([`live`]) that
//! tells them when to sync; concurrent syncs share their flushes (group commit, [`store`]).

pub mod admin;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod demo;
pub mod directory;
pub mod escrow;
pub mod export;
pub mod history;
pub mod http;
pub mod live;
pub mod store;
pub mod sync;
pub mod validate;

#[cfg(test)]
mod api_tests;
#[cfg(test)]
mod live_tests;

pub use http::{router, ApiError, AppState, Config};
pub use store::{open, SledStore, Store, StoreError};

use std::sync::Arc;

/// The server's clock, in ms since the Unix epoch. Only adapters read the clock; the sync code is
/// handed the time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Serves the API on `listener` until the process ends.
pub async fn run(
    listener: tokio::net::TcpListener,
    store: Arc<SledStore>,
    config: Config,
) -> anyhow::Result<()> {
    let app = router(AppState::new(store, config));
    axum::serve(listener, app).await?;
    Ok(())
}
