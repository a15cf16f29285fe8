//! casenote-server: the sync backend that devices push their case-note edits to and pull their
//! colleagues' edits from.
//!
//! [`run`] serves the HTTP API ([`api`]) on a listener it is given, over a store it is given
//! (`Arc<dyn Store>`: the server never knows which backend), until a shutdown future completes; so
//! tests and benchmarks bind `127.0.0.1:0` and choose their own storage. The layers, each allowed
//! to use only the ones before it: [`model`] (plain data) ← [`store`] (the transactional contract
//! and its backends) ← the domain ([`access`], [`auth`], [`audit`], [`sync`], [`validate`],
//! [`admin`], [`escrow`], [`history`], [`export`], [`feed`]) ← [`api`] (HTTP) and [`cli`] (the
//! command line). `ARCHITECTURE.md` is the map; `docs/design.md` the reasoning.
//!
//! This file holds only `run`, the periodic writing of refusal counts, and the server's clock.

pub mod access;
pub mod admin;
pub mod api;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod break_glass;
pub mod cli;
pub mod config;
pub mod controllers;
pub mod erase;
pub mod escrow;
pub mod export;
pub mod export_html;
pub mod feed;
pub mod heap;
pub mod history;
pub mod metrics;
pub mod misfile;
pub mod model;
pub mod retention;
pub mod sealed;
pub mod store;
pub mod subject_access;
pub mod sync;
pub mod uk_time;
pub mod validate;

#[cfg(test)]
mod testkit;

/// The binary's allocator in the unit tests too, so that they weigh states as the server does
/// ([`heap`]).
#[cfg(test)]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub use api::{router, ApiError, AppState};
pub use config::Config;
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

/// Serves the API on `listener` over `store` until `shutdown` completes, drains the requests in
/// flight (the listener closed, each answered; `api::listen::serve`), then writes the refusal
/// counts still pending to the audit log and flushes the store. Connections are capped by the
/// process's open-file limit unless `config.connections` fixes the cap; the live channel gets at
/// most half of them, so HTTP sync, the way data moves, always has room.
pub async fn run(
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
    mut config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let calmed = heap::calm_purging();
    let cap = config.connections.cap();
    config.live.connections_max = config.live.connections_max.min(cap / 2).max(1);
    tracing::info!(
        open_files = config::open_files_limit(),
        connections_max = cap,
        live_connections_max = config.live.connections_max,
        purging_threads_lowered = calmed,
        "connection limits"
    );
    let connections = config.connections.clone();
    let state = AppState::new(store.clone(), config);
    let refusals = state.refusals.clone();
    let periodic = tokio::spawn(write_refusal_counts(store.clone(), refusals.clone()));
    let stop_following = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let follower = match store.watch() {
        Some(watch) => Some(feed::follow(
            watch,
            state.feed.clone(),
            stop_following.clone(),
        )?),
        None => None,
    };
    api::listen::serve(listener, router(state), &connections, shutdown).await;
    periodic.abort();
    stop_following.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(follower) = follower {
        let _ = tokio::task::spawn_blocking(move || follower.join()).await;
    }
    tokio::task::spawn_blocking(move || {
        refusals.flush_all(&*store, now_ms())?;
        store.flush()
    })
    .await??;
    Ok(())
}

/// Writes the counts of refusal windows that ended, once a window, so that a count is written
/// even when no further refusal of its kind comes.
async fn write_refusal_counts(store: Arc<dyn Store>, refusals: Arc<audit::Refusals>) {
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
