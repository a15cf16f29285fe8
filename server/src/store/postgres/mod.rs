//! The PostgreSQL backend: [`PgStore`], for deployments that run several server nodes on one
//! database (ARCHITECTURE.md, "Stores"; the schema with its reasons is `schema/v1.sql`).
//!
//! Transactions.
//! - A write transaction runs at READ COMMITTED and first takes the transaction-level advisory
//!   lock [`WRITE_LOCK`]: every write transaction of every node is serialised, as sled's write
//!   mutex serialises those of one process. Sequence numbers and the audit head are read under
//!   the lock, where each statement sees everything committed before it (the previous holder's
//!   commit is visible before its lock is released), and the lock is held until commit. So a
//!   change's sequence order is its commit order: a reader of `seq > cursor` can never see seq
//!   N+1 committed while N is still to come, which is the trap of sequences allocated by
//!   concurrent transactions (a late committer's lower number lands behind a cursor that already
//!   passed it). READ COMMITTED, not REPEATABLE READ, because a snapshot taken before the lock
//!   was granted would miss the previous holder's commit. Writers of one node first queue in
//!   [`writers`], holding no connection (writers waiting for the lock took every pooled
//!   connection from the readers), and the writers waiting when one finishes share its
//!   transaction, each after the first in a savepoint of its own, and its one commit (group
//!   commit).
//! - A read transaction is REPEATABLE READ, READ ONLY: one consistent snapshot, no lock.
//! - Serialization failures and deadlocks (which only a DBA's own transactions can cause here)
//!   are [`StoreError::Conflict`], which `store::write` runs again.
//!
//! Durability. A commit returns once PostgreSQL has made it durable (`synchronous_commit` on,
//! set for our sessions if the database has it off), so [`Store::flush`] has nothing to do and
//! the durable sequence is the committed one. `fsync=off` on the server is the DBA's choice and
//! is logged as a warning at open.
//!
//! Across nodes. A write transaction that appended changes sends `pg_notify('casenote_log',
//! last seq)` before its commit, delivered at commit to every listening node: a wake-up, never
//! data. [`watch`] listens on a connection of its own and re-reads the log from its own
//! cursor (see [`Store::watch`]).

mod pool;
mod rows;
mod schema;
mod session;
mod txn;
mod verify;
pub use verify::Summary;
mod watch;
mod writers;

use super::{Compaction, LogEntry, Store, StoreError, Watch, Work, Writability};
use casenote_protocol::limits;
use casenote_protocol::wire::Hash;
use casenote_protocol::{DocId, Seq};
use pool::Pool;
use session::Session;
use std::sync::Arc;
use std::time::Duration;
use txn::PgTxn;

/// Commits a write transaction whose writers appended `range`: the notification to the other
/// nodes goes with the commit, and `own` notes the range first (under the lock, so no other
/// transaction can take these sequences meanwhile), so that this node's watch never mistakes them
/// for another's. A statement always precedes `COMMIT` in its round trip: PostgreSQL answers
/// the `COMMIT` of a transaction a failed statement aborted with a silent `ROLLBACK`, and the
/// statement before it fails there instead, so a failure the session did not see can never be
/// acknowledged as a commit.
fn commit(
    session: &mut Session,
    range: Option<(Seq, Seq)>,
    own: &watch::Own,
) -> Result<(), StoreError> {
    let began = std::time::Instant::now();
    let done = match range {
        None => session.commit("SELECT 1; COMMIT"),
        Some((first, last)) => {
            own.insert(first, last);
            let sql = format!("SELECT pg_notify('{CHANNEL}', '{}'); COMMIT", last.0);
            let done = session.commit(&sql);
            if done.is_err() {
                own.remove(first, last);
            }
            done
        }
    };
    crate::metrics::committed(began.elapsed());
    done
}

/// The advisory lock every write transaction takes first: `casenote` in ASCII.
pub(crate) const WRITE_LOCK: i64 = 0x6361_7365_6e6f_7465;

/// The channel write transactions notify on.
const CHANNEL: &str = "casenote_log";

/// How a read transaction begins: one snapshot, and no writes.
const READ_BEGIN: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// Set on every connection of the store, once. Its statements are prepared once per connection
/// and planned once, for any parameters (`plan_cache_mode`): left to choose, PostgreSQL planned
/// a push's look-up of a document (`txn::PUSH_FACTS`) anew at every run, 0.2 ms of the
/// database's CPU each, twice an edit. Every statement is written to be served well by such a
/// plan (lookups by key; see `txn::HELD_OR_REFUSED`).
const SESSION_SETUP: &str = "
    DO $$ BEGIN
        IF current_setting('synchronous_commit') = 'off' THEN
            SET synchronous_commit = 'on';
        END IF;
    END $$;
    SET lock_timeout = '30s';
    SET idle_in_transaction_session_timeout = '60s';
    SET plan_cache_mode = 'force_generic_plan';
";

// The session settings above spell out these limits (SQL cannot read Rust constants).
const _: () = assert!(limits::PG_LOCK_WAIT_MS_MAX == 30_000);
const _: () = assert!(limits::PG_IDLE_IN_TRANSACTION_MS_MAX == 60_000);

/// The PostgreSQL implementation of [`Store`].
pub struct PgStore {
    pool: Pool,
    /// This node's writers: they queue here, holding no connection, and share transactions.
    writers: writers::Writers,
    /// Sequences this process committed, kept while a [`watch`] runs so that it does not tell
    /// this node's devices again what the node published itself (with the pushing device).
    own: Arc<watch::Own>,
}

impl PgStore {
    /// Connects to the database at `url` (a `postgres://` URL or `key=value` settings), brings
    /// its schema up to date, and checks what durability it gives.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        let config = config(url)?;
        let store = PgStore {
            pool: Pool::new(config, limits::PG_POOL_CONNECTIONS_MAX),
            writers: writers::Writers::new(),
            own: Arc::default(),
        };
        let mut client = pool::connect(&store.pool.config())?;
        let applied = schema::migrate(&mut client)?;
        if !applied.is_empty() {
            tracing::info!(versions = ?applied, "schema migrations applied");
        }
        warn_if_not_durable(&mut client)?;
        Ok(store)
    }

    /// Tests only: the store at `url` with a pool of `connections` that waits `wait` for one.
    #[cfg(test)]
    pub(crate) fn open_with_pool(
        url: &str,
        connections: usize,
        wait: std::time::Duration,
    ) -> Result<PgStore, StoreError> {
        let mut store = PgStore::open(url)?;
        store.pool = Pool::new(config(url)?, connections).waiting(wait);
        Ok(store)
    }

    /// The schema version of the database at `url` (0: none yet), without migrating it.
    pub fn schema_version(url: &str) -> Result<i32, StoreError> {
        let mut client = pool::connect(&postgres::Config::from(config(url)?))?;
        schema::version(&mut client)
    }

    /// The schema version this build writes.
    pub fn schema_current() -> i32 {
        schema::current()
    }

    /// Whether the database holds nothing yet: no change, no directory entry, no audit entry
    /// (what `migrate` requires of its target).
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        let mut conn = self.pool.get()?;
        let row = conn.session().query_one(
            "SELECT NOT (EXISTS (SELECT 1 FROM change_log) OR EXISTS (SELECT 1 FROM orgs)
                OR EXISTS (SELECT 1 FROM staff) OR EXISTS (SELECT 1 FROM audit)
                OR EXISTS (SELECT 1 FROM cases) OR EXISTS (SELECT 1 FROM docs))",
            &[],
        )?;
        Ok(row.get(0))
    }

    /// Runs `work` with the write lock held, in a READ COMMITTED transaction that the writers
    /// waiting at the same moment share, in a savepoint of its own ([`writers`]); returns once
    /// that transaction has committed, or with this work's own error (its part undone).
    /// The first writer of a batch takes no savepoint: if its work fails the whole transaction
    /// is rolled back, which holds nobody else's.
    fn run_write(&self, work: &mut Work<'_>) -> Result<(), StoreError> {
        let mut turn = self.writers.enter(&self.pool, &self.own)?;
        let first = turn.first();
        let (session, tips) = turn.session();
        if !first {
            session.savepoint();
        }
        let done = {
            let mut txn = PgTxn::resume(&mut *session, true, tips);
            let appended = work(&mut txn).and_then(|()| txn.finish());
            let tips = txn.tips();
            appended.and_then(|a| txn.into_session().keep().map(|()| (a, tips)))
        };
        match done {
            Ok((appended, tips)) => turn.done(appended, tips),
            Err(e) => {
                if !first {
                    turn.session().0.rollback_to_savepoint();
                }
                turn.undone();
                Err(e)
            }
        }
    }

    /// The log in `(after, upto]`, erased entries with it when `with_erased`.
    fn scan(
        &self,
        (after, upto): (Seq, Seq),
        with_erased: bool,
        visit: &mut dyn FnMut(LogEntry<'_>) -> bool,
    ) -> Result<(), StoreError> {
        if after >= upto {
            return Ok(());
        }
        let mut conn = self.pool.get()?;
        txn::scan_log(conn.session(), (after, upto), with_erased, visit)
    }

    fn run_read(&self, work: &mut Work<'_>) -> Result<(), StoreError> {
        let mut conn = self.pool.get()?;
        txn::in_snapshot(conn.session(), |s| work(&mut PgTxn::new(s, false)))
    }
}

impl Store for PgStore {
    fn write_txn(&self, work: &mut Work<'_>) -> Result<(), StoreError> {
        self.run_write(work)
    }

    fn read_txn(&self, work: &mut Work<'_>) -> Result<(), StoreError> {
        self.run_read(work)
    }

    fn read_each_txn(&self, work: &mut Work<'_>) -> Result<(), StoreError> {
        let mut conn = self.pool.get()?;
        work(&mut PgTxn::new(conn.session(), false))
    }

    fn scan_log(
        &self,
        after: Seq,
        upto: Seq,
        visit: &mut dyn FnMut(LogEntry<'_>) -> bool,
    ) -> Result<(), StoreError> {
        self.scan((after, upto), false, visit)
    }

    fn scan_log_with_erased(
        &self,
        after: Seq,
        upto: Seq,
        visit: &mut dyn FnMut(LogEntry<'_>) -> bool,
    ) -> Result<(), StoreError> {
        self.scan((after, upto), true, visit)
    }

    fn compact(&self) -> Result<Compaction, StoreError> {
        let mut conn = self.pool.get()?;
        txn::compact(conn.session())
    }

    fn get_log(&self, seq: Seq) -> Result<Option<(DocId, Hash, Vec<u8>)>, StoreError> {
        let mut conn = self.pool.get()?;
        txn::get_log(conn.session(), seq)
    }

    fn doc_change_seqs(&self, doc: DocId) -> Result<Vec<Seq>, StoreError> {
        let mut conn = self.pool.get()?;
        txn::doc_change_seqs(conn.session(), doc)
    }

    fn doc_changes_after(&self, doc: DocId, after: Seq) -> Result<Vec<(Seq, Vec<u8>)>, StoreError> {
        let mut conn = self.pool.get()?;
        txn::doc_changes_after(conn.session(), doc, after)
    }

    fn received_at(&self, seq: Seq) -> Result<Option<i64>, StoreError> {
        let mut conn = self.pool.get()?;
        txn::received_at(conn.session(), seq)
    }

    fn last_seq(&self) -> Result<Seq, StoreError> {
        let mut conn = self.pool.get()?;
        txn::last_seq(conn.session())
    }

    /// Committed is durable here (see the module docs).
    fn durable_seq(&self) -> Result<Seq, StoreError> {
        self.last_seq()
    }

    fn access_epoch(&self) -> Result<u64, StoreError> {
        let mut conn = self.pool.get()?;
        txn::access_epoch(conn.session())
    }

    fn log_state(&self, meta_key: &str) -> Result<crate::store::LogState, StoreError> {
        let mut conn = self.pool.get()?;
        txn::log_state(conn.session(), meta_key)
    }

    fn credentials(
        &self,
        sha256: &[u8; 32],
        meta_key: &str,
    ) -> Result<Option<crate::store::Credentials>, StoreError> {
        let mut conn = self.pool.get()?;
        txn::credentials(conn.session(), sha256, meta_key)
    }

    /// None: the database is the one record of what was committed, and a commit is durable.
    fn audit_anchor(&self) -> Result<Option<(u64, String)>, StoreError> {
        Ok(None)
    }

    fn audit_scan(&self, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError> {
        let mut conn = self.pool.get()?;
        txn::audit_scan(conn.session(), visit)
    }

    fn quarantine_list(&self) -> Result<Vec<crate::model::QuarantineEntry>, StoreError> {
        let mut conn = self.pool.get()?;
        txn::quarantine_list(conn.session())
    }

    /// Nothing to do: a commit returned only once it was durable.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Every commit is durable when it returns: nothing to ask for.
    fn flush_soon(&self) {}

    fn durable_at_commit(&self) -> bool {
        true
    }

    /// `pg_database_size` of the database.
    fn size_bytes(&self) -> Option<u64> {
        let mut conn = self.pool.get().ok()?;
        txn::database_size(conn.session()).ok()
    }

    fn writability(&self) -> Writability {
        let reason = match self.check_writable() {
            Ok(None) => return Writability::writable(),
            Ok(Some(reason)) => reason,
            Err(e) => e.to_string(),
        };
        Writability {
            writable: false,
            reason: Some(reason),
            ..Writability::writable()
        }
    }

    fn watch(&self) -> Option<Box<dyn Watch>> {
        Some(Box::new(watch::LogWatch::new(
            self.pool.config(),
            self.own.clone(),
        )))
    }
}

impl PgStore {
    /// `None` when the database accepts writes now; else why not.
    fn check_writable(&self) -> Result<Option<String>, StoreError> {
        let mut conn = self.pool.get()?;
        let row = conn.session().query_one(
            "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')",
            &[],
        )?;
        let (standby, read_only): (bool, String) = (row.get(0), row.get(1));
        Ok(if standby {
            Some("the database is a read-only standby".into())
        } else if read_only == "on" {
            Some("the database accepts no writes (default_transaction_read_only)".into())
        } else {
            None
        })
    }
}

/// The connection settings of `url`, with our defaults where it sets none.
fn config(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e: postgres::Error| {
        StoreError::Backend(format!("the PostgreSQL URL is not valid: {e}"))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_millis(limits::PG_CONNECT_TIMEOUT_MS));
    }
    if config.get_application_name().is_none() {
        config.application_name("casenote-server");
    }
    config.keepalives(true);
    Ok(config)
}

fn warn_if_not_durable(client: &mut postgres::Client) -> Result<(), StoreError> {
    let fsync: String = client
        .query_one("SELECT current_setting('fsync')", &[])
        .map_err(backend)?
        .get(0);
    if fsync != "on" {
        tracing::warn!(
            "the database runs with fsync off: a crash of its machine can lose what it \
             committed, and casenote acknowledges changes at commit"
        );
    }
    Ok(())
}

/// A PostgreSQL error as a [`StoreError`]: conflicts are retryable; a database whose disk is
/// full is `Full`, one that refuses writes now (read-only, the write lock not free within
/// [`limits::PG_LOCK_WAIT_MS_MAX`], shutting down) `Unwritable` (devices hear "retry later");
/// damage is `Corrupt`; the rest `Backend`.
/// Never carries a value from the query (PostgreSQL's detail may quote one).
pub(super) fn backend(e: postgres::Error) -> StoreError {
    use postgres::error::SqlState;
    let Some(db) = e.as_db_error() else {
        return StoreError::Backend(format!("database connection: {e}"));
    };
    let code = db.code();
    let what = format!("{} ({})", db.message(), code.code());
    if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED {
        StoreError::Conflict
    } else if *code == SqlState::DISK_FULL {
        StoreError::Full(format!("the database's disk is full: {what}"))
    } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::INSUFFICIENT_RESOURCES
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
    {
        StoreError::Unwritable(what)
    } else if *code == SqlState::DATA_CORRUPTED || *code == SqlState::INDEX_CORRUPTED {
        StoreError::Corrupt(what)
    } else {
        StoreError::Backend(what)
    }
}

#[cfg(test)]
mod tests;
