//! The PostgreSQL side of the harness: one throwaway cluster per test process (started on first
//! use, stopped by its watchdog when the process ends), and a database per store.
//!
//! Suites run on PostgreSQL when `CASENOTE_TEST_BACKEND=postgres` (`scripts/test` runs the
//! authorization matrix and the end-to-end suites a second time so): every place a test names
//! a data directory then names a database instead, one per directory, so the same test body
//! runs on both backends. The multi-node tests use PostgreSQL whatever the variable says.

use casenote_pg_cluster::Cluster;
use std::path::Path;
use std::sync::OnceLock;

/// Whether the suites' stores are PostgreSQL databases (`CASENOTE_TEST_BACKEND=postgres`).
pub fn on_postgres() -> bool {
    std::env::var("CASENOTE_TEST_BACKEND").is_ok_and(|v| v == "postgres")
}

/// This process's cluster.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start().expect("start a throwaway PostgreSQL cluster"))
}

/// A fresh, empty database on this process's cluster.
pub fn fresh_database() -> String {
    cluster().create_database().expect("create a database")
}

/// The database that stands for the data directory `data` (made on first use).
pub fn database_for(data: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    cluster()
        .database(&format!("store_{:016x}", h.finish()))
        .expect("create a database")
}

/// The options that name the store of `data` on the command line: `--data DIR`, or on
/// PostgreSQL `--postgres URL`.
pub fn store_args(data: &Path) -> Vec<String> {
    if on_postgres() {
        vec!["--postgres".into(), database_for(data)]
    } else {
        vec!["--data".into(), data.to_string_lossy().into_owned()]
    }
}
