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
//! Connections are capped and timed out so that no peer can starve the others ([`listen`]), and
//! refusals are audited with repeats counted, not written one by one ([`audit::Refusals`]).

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
pub mod listen;
pub mod live;
pub mod model;
pub mod push;
pub mod store;
pub mod sync;
pub mod validate;

#[cfg(test)]
mod api_tests;
#[cfg(test)]
mod listen_tests;
#[cfg(test)]
mod live_tests;

pub use http::{router, ApiError, AppState, Config};
pub use store::sled::{open, SledStore};
pub use store::{Store, StoreError};

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
    run_until(listener, store, config, std::future::pending()).await
}

/// Serves the API on `listener` until `shutdown` completes, then writes the refusal counts still
/// pending to the audit log and flushes the store. Connections are capped by the process's
/// open-file limit ([`listen::connections_cap`]) unless `config.connections` fixes the cap; the
/// live channel gets at most half of them, so HTTP sync, the way data moves, always has room.
pub async fn run_until(
    listener: tokio::net::TcpListener,
    store: Arc<SledStore>,
    mut config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let cap = config.connections.cap();
    config.live.connections_max = config.live.connections_max.min(cap / 2).max(1);
    tracing::info!(
        open_files = listen::open_files_limit(),
        connections_max = cap,
        live_connections_max = config.live.connections_max,
        "connection limits"
    );
    let connections = config.connections.clone();
    let state = AppState::new(store.clone(), config);
    let refusals = state.refusals.clone();
    let periodic = tokio::spawn(write_refusal_counts(store.clone(), refusals.clone()));
    listen::serve(listener, router(state), &connections, shutdown).await;
    periodic.abort();
    tokio::task::spawn_blocking(move || {
        refusals.flush_all(&*store, now_ms())?;
        store.flush()
    })
    .await??;
    Ok(())
}

/// Writes the counts of refusal windows that ended, once a window, so that a count is written
/// even when no further refusal of its kind comes.
async fn write_refusal_counts(store: Arc<SledStore>, refusals: Arc<audit::Refusals>) {
    let period = std::time::Duration::from_millis(refusals.window_ms().unsigned_abs());
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (store, refusals) = (store.clone(), refusals.clone());
        let written =
            tokio::task::spawn_blocking(move || refusals.flush_due(&*store, now_ms())).await;
        if let Ok(Err(e)) = written {
            tracing::error!(error = %e, "could not write refusal counts to the audit log");
        }
    }
}
