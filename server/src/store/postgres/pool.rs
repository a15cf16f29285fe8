//! The connection pool: at most [`limits::PG_POOL_CONNECTIONS_MAX`] connections per process,
//! handed out one at a time, each set up once for the store's sessions ([`setup`]).
//!
//! It is our own, and small, because what the store needs is a mutex, a condition variable and
//! a cap: a caller that finds every connection busy waits at most
//! [`limits::PG_POOL_WAIT_MS_MAX`] and is refused ([`StoreError::Busy`]: 503 `server_busy`)
//! instead of hanging; a connection that broke (the database restarted, the network dropped) is
//! closed when it comes back and replaced by a fresh one on demand. (r2d2 does the same, but its current release
//! needs rustc 1.95 through parking_lot, above the workspace's 1.90.)

use super::super::StoreError;
use super::session::Session;
use super::{backend, SESSION_SETUP};
use casenote_protocol::limits;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio_postgres::Config;

/// The pool of one store.
pub(super) struct Pool {
    config: Config,
    state: Mutex<State>,
    freed: Condvar,
    max: usize,
    wait: Duration,
}

#[derive(Default)]
struct State {
    idle: Vec<Session>,
    /// Connections open or being opened, idle ones included.
    open: usize,
}

/// A connection taken from the pool; it goes back when dropped (closed instead if it broke).
pub(super) struct Conn<'p> {
    pool: &'p Pool,
    session: Option<Session>,
}

impl Pool {
    pub(super) fn new(config: Config, max: usize) -> Pool {
        Pool {
            config,
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
            max: max.max(1),
            wait: Duration::from_millis(limits::PG_POOL_WAIT_MS_MAX),
        }
    }

    /// Tests only: the pool waiting `wait` for a connection instead of the limit.
    #[cfg(test)]
    pub(super) fn waiting(mut self, wait: Duration) -> Pool {
        self.wait = wait;
        self
    }

    /// A connection: an idle one, a new one while under the cap, or the first one given back
    /// within the wait.
    pub(super) fn get(&self) -> Result<Conn<'_>, StoreError> {
        let deadline = Instant::now() + self.wait;
        let mut state = lock(&self.state);
        loop {
            while let Some(session) = state.idle.pop() {
                if !session.is_closed() {
                    return Ok(Conn {
                        pool: self,
                        session: Some(session),
                    });
                }
                state.open -= 1;
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return match Session::connect(&self.config, SESSION_SETUP) {
                    Ok(session) => Ok(Conn {
                        pool: self,
                        session: Some(session),
                    }),
                    Err(e) => {
                        lock(&self.state).open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::Busy(format!(
                    "no database connection came free within {} ms ({} in use)",
                    self.wait.as_millis(),
                    self.max
                )));
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The settings connections are made with, for a connection of the synchronous client
    /// outside the pool (the listener of [`super::watch`], migrations, `verify`).
    pub(super) fn config(&self) -> postgres::Config {
        postgres::Config::from(self.config.clone())
    }

    /// Takes back a connection [`Conn::detach`]ed from the pool (rolled back if still in a
    /// transaction; closed if broken).
    pub(super) fn give_back(&self, mut session: Session) {
        if session.in_transaction() {
            session.rollback();
        }
        let mut state = lock(&self.state);
        if session.is_closed() {
            state.open -= 1;
        } else {
            state.idle.push(session);
        }
        drop(state);
        self.freed.notify_one();
    }
}

impl Conn<'_> {
    pub(super) fn session(&mut self) -> &mut Session {
        self.session
            .as_mut()
            .expect("a pooled connection is present until dropped")
    }

    /// The connection itself, kept out of the pool (the writers' batch passes it from thread to
    /// thread) until [`Pool::give_back`]; it still counts against the cap.
    pub(super) fn detach(mut self) -> Session {
        self.session
            .take()
            .expect("a pooled connection is present until dropped")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.pool.give_back(session);
        }
    }
}

/// A connection of the synchronous client with `config`, outside the pool, set up as the
/// pool's are.
pub(super) fn connect(config: &postgres::Config) -> Result<postgres::Client, StoreError> {
    let mut client = config.connect(postgres::NoTls).map_err(backend)?;
    client.batch_execute(SESSION_SETUP).map_err(backend)?;
    Ok(client)
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves a consistent list and count (each is written whole).
    m.lock().unwrap_or_else(|e| e.into_inner())
}
