//! Versioned schema migrations, run by every open (`serve`, `admin`, `demo`, `migrate`, ...).
//!
//! `schema_migrations` holds one row per version applied. [`MIGRATIONS`] lists every version
//! this build knows, in order; an open applies the missing ones, each in its own transaction
//! with its row, under the store's write lock (the advisory lock every writer takes), so two
//! nodes starting at once apply each version once and no writer sees half a schema. A
//! database at a version this build does not know (a newer server migrated it) is refused:
//! running older code on a newer schema could write what the newer code cannot read.
//!
//! A migration is forward only and never edited once released: a change to the schema is a
//! new version appended to [`MIGRATIONS`].

use super::super::StoreError;
use super::{backend, WRITE_LOCK};
use postgres::Client;

/// One schema version: its number, what it does in a few words, its SQL.
pub(super) struct Migration {
    pub(super) version: i32,
    pub(super) description: &'static str,
    pub(super) sql: &'static str,
}

/// Every version, in order (versions count from 1, with no gaps).
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "everything the sled store keeps",
        sql: include_str!("schema/v1.sql"),
    },
    Migration {
        version: 2,
        description: "the statutory record kinds",
        sql: include_str!("schema/v2.sql"),
    },
    Migration {
        version: 3,
        description: "sealed sections and break-glass grants",
        sql: include_str!("schema/v3.sql"),
    },
    Migration {
        version: 4,
        description: "a document's changes in order",
        sql: include_str!("schema/v4.sql"),
    },
];

/// The version this build writes.
pub(super) fn current() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings the database to [`current`]; returns the versions applied now (empty: it was).
pub(super) fn migrate(client: &mut Client) -> Result<Vec<i32>, StoreError> {
    // Up to date: nothing is written, so a node can start on a database that refuses writes
    // (a standby, or one set read-only) and serve reads.
    let at = version(client)?;
    if at > current() {
        return Err(newer(at));
    }
    if at == current() {
        return Ok(Vec::new());
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        let mut tx = client.transaction().map_err(backend)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
            .map_err(backend)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version      integer     PRIMARY KEY,
                 description  text        NOT NULL,
                 applied_at   timestamptz NOT NULL DEFAULT now()
             )",
        )
        .map_err(backend)?;
        let at: i32 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                &[],
            )
            .map_err(backend)?
            .get(0);
        if at > current() {
            return Err(newer(at));
        }
        if at >= m.version {
            continue;
        }
        tx.batch_execute(m.sql).map_err(backend)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, description) VALUES ($1, $2)",
            &[&m.version, &m.description],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        tracing::info!(version = m.version, "database schema migrated");
        applied.push(m.version);
    }
    Ok(applied)
}

fn newer(at: i32) -> StoreError {
    StoreError::Backend(format!(
        "the database's schema is at version {at}, newer than this casenote-server knows ({}); \
         run the newer casenote-server that migrated it",
        current()
    ))
}

/// The version the database is at (0: no schema yet).
pub(super) fn version(client: &mut Client) -> Result<i32, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .map_err(backend)?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .map_err(backend)?
        .get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_from_one_with_no_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{}", m.description);
        }
    }
}
