//! One connection of the store and its prepared statements.
//!
//! Every statement the store runs is a `&'static str` prepared once per connection and kept
//! ([`Session::stmt`]), so each later run is one round trip (the client would otherwise parse
//! it anew each time, a second round trip). Transaction control goes through the simple-query
//! protocol, so `BEGIN` and the write lock, or the notification and `COMMIT`, share one round
//! trip. A statement that failed aborts the transaction on the server; [`Session`] remembers it
//! and refuses to commit, so a caller that swallowed the error can never have `COMMIT` turn
//! into a silent rollback.

use super::super::StoreError;
use super::backend;
use postgres::types::ToSql;
use postgres::{Client, Row, Statement};
use std::collections::HashMap;

/// A connection with its statement cache and the state of its transaction.
pub(super) struct Session {
    pub(super) client: Client,
    stmts: HashMap<&'static str, Statement>,
    /// A transaction is open.
    open: bool,
    /// A statement of the open transaction failed.
    failed: bool,
}

impl Session {
    pub(super) fn new(client: Client) -> Session {
        Session {
            client,
            stmts: HashMap::new(),
            open: false,
            failed: false,
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Starts a transaction with `sql` (BEGIN and whatever goes with it).
    pub(super) fn begin(&mut self, sql: &str) -> Result<(), StoreError> {
        self.failed = false;
        self.open = true;
        if let Err(e) = self.client.batch_execute(sql) {
            self.rollback();
            return Err(backend(e));
        }
        Ok(())
    }

    /// Ends the transaction with `sql` (COMMIT and whatever precedes it), unless a statement
    /// failed: then it rolls back and says so.
    pub(super) fn commit(&mut self, sql: &str) -> Result<(), StoreError> {
        if self.failed {
            self.rollback();
            return Err(StoreError::Backend(
                "a statement of the transaction failed; nothing was committed".into(),
            ));
        }
        match self.client.batch_execute(sql) {
            Ok(()) => {
                self.open = false;
                Ok(())
            }
            Err(e) => {
                self.rollback();
                Err(backend(e))
            }
        }
    }

    /// Marks where one writer's part of a shared transaction starts.
    pub(super) fn savepoint(&mut self) -> Result<(), StoreError> {
        self.client
            .batch_execute("SAVEPOINT writer")
            .map_err(|e| self.fail(e))
    }

    /// Keeps one writer's part, unless a statement of it failed (even one whose error its caller
    /// swallowed): then the error is returned, for the caller to undo the part. Its savepoint
    /// stays until the commit (releasing it was one more round trip a writer): the savepoints of
    /// a batch nest, at most [`limits::PG_WRITE_BATCH_MAX`] deep, and undoing a writer's part
    /// rolls back to the newest, its own.
    pub(super) fn keep(&mut self) -> Result<(), StoreError> {
        if self.failed {
            return Err(StoreError::Backend(
                "a statement of the transaction failed; nothing of it was kept".into(),
            ));
        }
        Ok(())
    }

    /// Undoes one writer's part, leaving the rest of the shared transaction as it was. If even
    /// that fails (the connection broke), the transaction stays failed and cannot commit.
    pub(super) fn rollback_to_savepoint(&mut self) {
        self.failed = self
            .client
            .batch_execute("ROLLBACK TO SAVEPOINT writer; RELEASE SAVEPOINT writer")
            .is_err();
    }

    /// Whether a transaction was left open (a caller panicked inside it).
    pub(super) fn in_transaction(&self) -> bool {
        self.open
    }

    /// Rolls back whatever transaction is open (harmless when none is, or when the connection
    /// broke: the server rolls back a transaction whose connection closed).
    pub(super) fn rollback(&mut self) {
        self.failed = false;
        self.open = false;
        let _ = self.client.batch_execute("ROLLBACK");
    }

    /// The prepared statement of `sql`, prepared on first use.
    pub(super) fn stmt(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).map_err(|e| self.fail(e))?;
        self.stmts.insert(sql, s.clone());
        Ok(s)
    }

    pub(super) fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let stmt = self.stmt(sql)?;
        self.client.query(&stmt, params).map_err(|e| self.fail(e))
    }

    pub(super) fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        let stmt = self.stmt(sql)?;
        self.client
            .query_opt(&stmt, params)
            .map_err(|e| self.fail(e))
    }

    pub(super) fn query_one(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, StoreError> {
        let stmt = self.stmt(sql)?;
        self.client
            .query_one(&stmt, params)
            .map_err(|e| self.fail(e))
    }

    pub(super) fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let stmt = self.stmt(sql)?;
        self.client.execute(&stmt, params).map_err(|e| self.fail(e))
    }

    fn fail(&mut self, e: postgres::Error) -> StoreError {
        self.failed = true;
        backend(e)
    }
}
