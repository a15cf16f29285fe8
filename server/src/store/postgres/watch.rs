//! What the other nodes commit, as they commit it: [`LogWatch`], this backend's
//! [`Watch`](super::super::Watch).
//!
//! Every write transaction that appended changes sends `pg_notify('casenote_log', last seq)`
//! just before it commits; PostgreSQL delivers it at commit, to every session that LISTENs,
//! and never replays it. The notification is only a wake-up: the watch keeps its own cursor and
//! reads the log past it (sequence and document id, never change bytes), so a notification
//! lost while its connection was down costs nothing (after reconnecting, the watch reads from
//! its cursor) and one that arrives for changes already read is a no-op.
//!
//! The node's own changes are left out: the node published them itself after its flush, with
//! the device that pushed (which is not told about its own changes). [`Own`] holds the
//! sequences this process committed and the watch has not passed yet.

use super::super::{Committed, StoreError, Watch};
use super::{backend, pool, CHANNEL};
use casenote_protocol::{limits, DocId, Seq};
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Sequences this process committed while a watch runs (ranges, first and last).
#[derive(Default)]
pub(super) struct Own {
    state: Mutex<OwnState>,
}

#[derive(Default)]
struct OwnState {
    /// Nothing is kept until a watch starts: a CLI run never needs it.
    watching: bool,
    ranges: Vec<(u64, u64)>,
}

impl Own {
    pub(super) fn insert(&self, first: Seq, last: Seq) {
        let mut state = self.lock();
        if !state.watching {
            return;
        }
        if state.ranges.len() >= limits::PG_WATCH_OWN_RANGES_MAX {
            // The watch is far behind (its connection is down): forget the oldest. The cost
            // is a wake-up too many for a device of this node, never a missed one.
            state.ranges.remove(0);
        }
        state.ranges.push((first.0, last.0));
    }

    pub(super) fn remove(&self, first: Seq, last: Seq) {
        self.lock().ranges.retain(|r| *r != (first.0, last.0));
    }

    fn start(&self) {
        self.lock().watching = true;
    }

    fn contains(&self, seq: u64) -> bool {
        self.lock()
            .ranges
            .iter()
            .any(|&(first, last)| first <= seq && seq <= last)
    }

    /// Forgets what the watch has passed.
    fn passed(&self, upto: u64) {
        self.lock().ranges.retain(|&(_, last)| last > upto);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OwnState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A LISTEN connection of its own and a cursor in the log.
pub(super) struct LogWatch {
    config: Config,
    own: Arc<Own>,
    client: Option<Client>,
    /// The last sequence read (`None` until the first connection reads the log's end).
    cursor: Option<u64>,
    /// Read the log before waiting: just (re)connected, or the last read was cut short.
    read_first: bool,
}

impl LogWatch {
    pub(super) fn new(config: Config, own: Arc<Own>) -> LogWatch {
        own.start();
        LogWatch {
            config,
            own,
            client: None,
            cursor: None,
            read_first: false,
        }
    }

    fn connect(&mut self) -> Result<(), StoreError> {
        if self.client.is_none() {
            let mut client = pool::connect(&self.config)?;
            client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .map_err(backend)?;
            if self.cursor.is_none() {
                let row = client
                    .query_one("SELECT coalesce(max(seq), 0) FROM change_log", &[])
                    .map_err(backend)?;
                self.cursor = Some(super::rows::seq(row.get(0))?);
            }
            self.read_first = true;
            self.client = Some(client);
        }
        Ok(())
    }

    fn wait_inner(&mut self, timeout: Duration) -> Result<Option<Committed>, StoreError> {
        self.connect()?;
        if !self.read_first {
            let cursor = self.cursor.unwrap_or(0);
            let client = self.client.as_mut().expect("connected just above");
            let mut notes = client.notifications();
            let first = notes.timeout_iter(timeout).next().map_err(backend)?;
            let Some(first) = first else {
                return Ok(None);
            };
            let mut newest = first.payload().parse::<u64>().unwrap_or(u64::MAX);
            // Whatever else is already here is covered by the same read.
            while let Some(n) = notes.iter().next().map_err(backend)? {
                newest = newest.max(n.payload().parse::<u64>().unwrap_or(u64::MAX));
            }
            if newest <= cursor {
                return Ok(None);
            }
        }
        self.read()
    }

    /// Reads the log past the cursor: the documents other processes changed, and the access
    /// epoch in the same statement (so that this node's listeners need not each read it).
    fn read(&mut self) -> Result<Option<Committed>, StoreError> {
        let after = self.cursor.unwrap_or(0);
        let client = self.client.as_mut().expect("read after connect");
        let limit = i64::try_from(limits::PG_WATCH_ROWS_MAX).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT seq, doc_id, (SELECT access_epoch FROM store_state) AS epoch
                 FROM change_log WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&super::rows::big(after)?, &limit],
            )
            .map_err(backend)?;
        self.read_first = rows.len() == limits::PG_WATCH_ROWS_MAX;
        let epoch = match rows.first() {
            Some(row) => Some(super::rows::seq(row.get("epoch"))?),
            None => None,
        };
        let mut upto = after;
        let mut docs = BTreeSet::new();
        for row in &rows {
            let seq = super::rows::seq(row.get("seq"))?;
            upto = upto.max(seq);
            if !self.own.contains(seq) {
                docs.insert(DocId(row.get("doc_id")));
            }
        }
        self.cursor = Some(upto);
        self.own.passed(upto);
        if docs.is_empty() {
            return Ok(None);
        }
        Ok(Some(Committed {
            upto: Seq(upto),
            docs: docs.into_iter().collect(),
            epoch,
        }))
    }
}

impl Watch for LogWatch {
    fn wait(&mut self, timeout: Duration) -> Result<Option<Committed>, StoreError> {
        let done = self.wait_inner(timeout);
        if done.is_err() {
            // Reconnect on the next call, and read from the cursor then.
            self.client = None;
        }
        done
    }
}
