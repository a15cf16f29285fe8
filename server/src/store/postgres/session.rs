//! One connection of the store, its prepared statements, and the statements it holds back to
//! send with the next round trip.
//!
//! Every statement the store runs is a `&'static str` prepared once per connection and kept
//! ([`Session::stmt`]), so each later run is one round trip (the client would otherwise parse
//! it anew each time, a second round trip). Transaction control goes through the simple-query
//! protocol, so `BEGIN` and the write lock, or the notification and `COMMIT`, share one round
//! trip. A statement that failed aborts the transaction on the server; [`Session`] remembers it
//! and refuses to commit, so a caller that swallowed the error can never have `COMMIT` turn
//! into a silent rollback.
//!
//! Pipelining: on this two-core machine a round trip inside the write lock cost about 115 us,
//! most of it two threads waiting to be scheduled, and each writer made seven. So what needs no
//! answer is held back ([`Session::defer`]: a write whose only answer is success or failure, a
//! read transaction's `BEGIN`, a writer's `SAVEPOINT`) and sent, in order, in the same round trip
//! as the next statement that does need one, or at the end of the writer's part
//! ([`Session::keep`]) or of the transaction. An error of a held-back statement is the error of
//! the round trip that carried it, and it fails the transaction as any other does. The
//! connection is tokio-postgres's, driven by a runtime of its own on the calling thread
//! (`postgres`, the synchronous client, does the same, but sends one statement a round trip).

use super::super::StoreError;
use super::backend;
use casenote_protocol::limits;
use std::collections::HashMap;
use std::future::Future;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

/// A parameter of a statement held back: owned, as it is sent after its caller returned.
pub(super) type Param = Box<dyn ToSql + Sync + Send>;

/// A statement held back until the next round trip.
enum Held {
    /// Transaction control or a savepoint (the simple-query protocol).
    Simple(&'static str),
    /// A prepared statement and its parameters; its row count is not needed.
    Exec(Statement, Vec<Param>),
}

/// Sends what `session` held back and then the statement `$call` makes of its client, in one
/// round trip ([`pipelined`]), and returns the statement's answer; an error fails the
/// transaction.
macro_rules! with_held {
    ($session:ident, |$client:ident| $call:expr) => {{
        let held = $session.take_held();
        let $client = &$session.client;
        let answer = pipelined(&$session.runtime, $client, held, $call);
        $session.answer(answer)
    }};
}

/// A connection with its statement cache and the state of its transaction.
pub(super) struct Session {
    client: Client,
    /// Drives the connection, only while a call of this session waits on it.
    runtime: tokio::runtime::Runtime,
    stmts: HashMap<&'static str, Statement>,
    /// A transaction is open.
    open: bool,
    /// A statement of the open transaction failed.
    failed: bool,
    /// Statements not sent yet, in order.
    held: Vec<Held>,
    /// What of the transaction is still held back: its `BEGIN` (nothing of it was sent), or the
    /// current writer's `SAVEPOINT` (nothing of that writer's part was sent).
    unsent: Unsent,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Unsent {
    Nothing,
    Begin,
    Savepoint,
}

impl Session {
    /// A new connection with `config`, set up with `setup` (run once).
    pub(super) fn connect(
        config: &tokio_postgres::Config,
        setup: &str,
    ) -> Result<Session, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("database connection: {e}")))?;
        let (client, connection) = runtime
            .block_on(config.connect(tokio_postgres::NoTls))
            .map_err(backend)?;
        // Polled whenever this session waits on the runtime; ends when the connection does.
        runtime.spawn(async move {
            let _ = connection.await;
        });
        let mut session = Session {
            client,
            runtime,
            stmts: HashMap::new(),
            open: false,
            failed: false,
            held: Vec::new(),
            unsent: Unsent::Nothing,
        };
        session.simple(setup)?;
        Ok(session)
    }

    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Starts a transaction with `sql` (BEGIN and whatever goes with it), at once.
    pub(super) fn begin(&mut self, sql: &str) -> Result<(), StoreError> {
        self.failed = false;
        self.open = true;
        if let Err(e) = self.simple(sql) {
            self.rollback();
            return Err(e);
        }
        Ok(())
    }

    /// Starts a transaction with `sql` sent with its first statement: one that runs none costs
    /// no round trip.
    pub(super) fn begin_lazily(&mut self, sql: &'static str) {
        self.failed = false;
        self.open = true;
        self.held.clear();
        self.held.push(Held::Simple(sql));
        self.unsent = Unsent::Begin;
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
        if self.unsent == Unsent::Begin {
            // Nothing of the transaction reached the database.
            self.held.clear();
            self.unsent = Unsent::Nothing;
            self.open = false;
            return Ok(());
        }
        match self.simple(sql) {
            Ok(()) => {
                self.open = false;
                Ok(())
            }
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    /// Marks where one writer's part of a shared transaction starts (sent with its first
    /// statement).
    pub(super) fn savepoint(&mut self) {
        self.held.push(Held::Simple("SAVEPOINT writer"));
        self.unsent = Unsent::Savepoint;
    }

    /// Keeps one writer's part: sends what it held back, and returns an error if a statement
    /// of it failed (even one whose error its caller swallowed), for the caller to undo the
    /// part. Its savepoint stays until the commit (releasing it was one more round trip a
    /// writer): the savepoints of a batch nest, at most [`limits::PG_WRITE_BATCH_MAX`] deep,
    /// and undoing a writer's part rolls back to the newest, its own.
    pub(super) fn keep(&mut self) -> Result<(), StoreError> {
        if self.unsent == Unsent::Savepoint && self.held.len() == 1 {
            // The part wrote and read nothing.
            self.held.clear();
            self.unsent = Unsent::Nothing;
        }
        self.send_held()?;
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
        let sent = self.unsent != Unsent::Savepoint;
        self.held.clear();
        self.unsent = Unsent::Nothing;
        // Nothing of the part reached the database when its savepoint had not.
        if sent {
            self.failed = self
                .simple("ROLLBACK TO SAVEPOINT writer; RELEASE SAVEPOINT writer")
                .is_err();
        }
    }

    /// Whether a transaction was left open (a caller panicked inside it).
    pub(super) fn in_transaction(&self) -> bool {
        self.open
    }

    /// Rolls back whatever transaction is open (harmless when none is, or when the connection
    /// broke: the server rolls back a transaction whose connection closed).
    pub(super) fn rollback(&mut self) {
        let sent = self.unsent != Unsent::Begin;
        self.held.clear();
        self.unsent = Unsent::Nothing;
        self.failed = false;
        self.open = false;
        if sent {
            let _ = self.simple("ROLLBACK");
        }
    }

    /// The prepared statement of `sql`, prepared on first use. What was held back is sent
    /// first: a statement that fails to prepare inside a transaction aborts it, and a writer's
    /// savepoint must be in place by then for its part to be undone alone.
    pub(super) fn stmt(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        self.send_held()?;
        #[cfg(test)]
        round_trips::note();
        let prepared = self.runtime.block_on(self.client.prepare(sql));
        let s = prepared.map_err(|e| self.fail(e))?;
        self.stmts.insert(sql, s.clone());
        Ok(s)
    }

    /// Holds `sql` back to be sent with the next round trip (see the module docs); sends what
    /// is held at once when that reaches [`limits::PG_HELD_STATEMENTS_MAX`] statements.
    pub(super) fn defer(
        &mut self,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<(), StoreError> {
        let stmt = self.stmt(sql)?;
        self.held.push(Held::Exec(stmt, params));
        if self.held.len() >= limits::PG_HELD_STATEMENTS_MAX {
            self.send_held()?;
        }
        Ok(())
    }

    /// Sends what was held back now, in one round trip.
    pub(super) fn send_held(&mut self) -> Result<(), StoreError> {
        if self.held.is_empty() {
            return Ok(());
        }
        with_held!(self, |_client| std::future::ready(Ok(())))
    }

    pub(super) fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let stmt = self.stmt(sql)?;
        with_held!(self, |client| client.query(&stmt, params))
    }

    pub(super) fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        let stmt = self.stmt(sql)?;
        with_held!(self, |client| client.query_opt(&stmt, params))
    }

    pub(super) fn query_one(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, StoreError> {
        let stmt = self.stmt(sql)?;
        with_held!(self, |client| client.query_one(&stmt, params))
    }

    pub(super) fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let stmt = self.stmt(sql)?;
        with_held!(self, |client| client.execute(&stmt, params))
    }

    /// Runs `sql` (statements without parameters) through the simple-query protocol, with
    /// whatever was held back.
    pub(super) fn simple(&mut self, sql: &str) -> Result<(), StoreError> {
        with_held!(self, |client| client.batch_execute(sql))
    }

    /// The first column of the first row `sql` returns, as text (the simple-query protocol:
    /// `SHOW`).
    pub(super) fn simple_value(&mut self, sql: &str) -> Result<Option<String>, StoreError> {
        let messages = with_held!(self, |client| client.simple_query(sql))?;
        Ok(messages.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        }))
    }

    /// Tests only: runs `sql` without noting whether it failed, as a failure the session did
    /// not see.
    #[cfg(test)]
    pub(super) fn unobserved(&mut self, sql: &str) {
        let _ = self.runtime.block_on(self.client.batch_execute(sql));
    }

    /// What was held back, to send now.
    fn take_held(&mut self) -> Vec<Held> {
        self.unsent = Unsent::Nothing;
        std::mem::take(&mut self.held)
    }

    /// A round trip's answer; an error fails the transaction.
    fn answer<T>(&mut self, answer: Result<T, tokio_postgres::Error>) -> Result<T, StoreError> {
        answer.map_err(|e| self.fail(e))
    }

    fn fail(&mut self, e: tokio_postgres::Error) -> StoreError {
        self.failed = true;
        backend(e)
    }
}

/// Sends `held` and then the statement of `last`, in one round trip, and returns the statement's
/// answer, or the first error among them.
fn pipelined<T>(
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    held: Vec<Held>,
    last: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, tokio_postgres::Error> {
    #[cfg(test)]
    round_trips::note();
    runtime.block_on(async move {
        // Each request is written when its future is first polled, so `join` sends them in
        // this order before it waits for any answer.
        let before = futures_util::future::join_all(held.iter().map(|h| send(client, h)));
        let (before, last) = futures_util::future::join(before, last).await;
        before.into_iter().collect::<Result<(), _>>()?;
        last
    })
}

/// Sends one held-back statement and waits for its answer.
async fn send(client: &Client, held: &Held) -> Result<(), tokio_postgres::Error> {
    match held {
        Held::Simple(sql) => client.batch_execute(sql).await,
        Held::Exec(stmt, params) => {
            let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as _).collect();
            client.execute(stmt, &params).await.map(drop)
        }
    }
}

/// Tests only: the round trips this thread made to the database.
#[cfg(test)]
pub(super) mod round_trips {
    use std::cell::Cell;
    thread_local!(static MADE: Cell<usize> = const { Cell::new(0) });

    pub fn note() {
        MADE.with(|m| m.set(m.get() + 1));
    }

    /// The round trips made on this thread since the last call.
    pub fn take() -> usize {
        MADE.with(|m| m.replace(0))
    }
}
