//! `casenote-server verify --postgres URL`: the database checked end to end, as `verify --data`
//! checks a sled store.
//!
//! Every change of the log, in order, on one snapshot: sequences from 1 without gaps, each an
//! Automerge change whose hash is the one stored, the hash chain recomputed and equal to the
//! stored one. Then what the log implies: every document with a change has its record, every
//! record's case exists, and each document's heads are changes of it the log holds. Then the
//! audit chain. PostgreSQL keeps its own indexes (and its unique keys forbid a change stored
//! twice), so there is no index of ours to check against the log. The first problem is
//! reported, in plain words (sequences and ids, never content).

use super::rows::{self, col, seq};
use super::{backend, PgStore};
use crate::model::{chain_next, CHAIN_GENESIS};
use postgres::fallible_iterator::FallibleIterator;

/// What a database that verified holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub changes: u64,
    pub docs: u64,
    pub cases: u64,
    pub audit_entries: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "store verified: {} changes in {} documents of {} cases, {} audit entries; \
             every commit was durable when acknowledged (PostgreSQL)",
            self.changes, self.docs, self.cases, self.audit_entries
        )
    }
}

use crate::store::{damaged, VerifyError};

impl PgStore {
    /// Checks the whole database (see the module docs).
    pub fn verify(&self) -> Result<Summary, VerifyError> {
        let changes = self.verify_log()?;
        let (docs, cases) = self.verify_records()?;
        let audit_entries = crate::audit::verify(self).map_err(|e| damaged(e.to_string()))?;
        Ok(Summary {
            changes,
            docs,
            cases,
            audit_entries,
        })
    }

    fn verify_log(&self) -> Result<u64, VerifyError> {
        let mut client = super::pool::connect(&self.pool.config())?;
        let mut tx = client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(backend)?;
        let mut rows = tx
            .query_raw(
                "SELECT seq, doc_id, hash, chain, bytes FROM change_log ORDER BY seq",
                std::iter::empty::<i64>(),
            )
            .map_err(backend)?;
        let mut chain = CHAIN_GENESIS;
        let mut expected = 1u64;
        while let Some(row) = rows.next().map_err(backend)? {
            let at = seq(col(&row, "seq")?)?;
            if at != expected {
                return Err(damaged(format!(
                    "the log skips from {} to {at}",
                    expected - 1
                )));
            }
            let doc = casenote_protocol::DocId(col(&row, "doc_id")?);
            let hash = rows::hash(col(&row, "hash")?)?;
            let bytes: &[u8] = col(&row, "bytes")?;
            // An erased entry (no bytes) keeps only its place in the chain.
            let change = (!bytes.is_empty())
                .then(|| automerge::Change::from_bytes(bytes.to_vec()))
                .transpose()
                .map_err(|_| damaged(format!("change {at} is not an Automerge change")))?;
            if change.is_some_and(|c| c.hash().0 != hash.0) {
                return Err(damaged(format!(
                    "change {at} does not have the hash stored for it"
                )));
            }
            chain = chain_next(&chain, at, doc, &hash);
            let stored: &[u8] = col(&row, "chain")?;
            if stored != chain {
                return Err(damaged(format!(
                    "the log's hash chain breaks at change {at}"
                )));
            }
            expected += 1;
        }
        drop(rows);
        tx.commit().map_err(backend)?;
        Ok(expected - 1)
    }

    fn verify_records(&self) -> Result<(u64, u64), VerifyError> {
        let mut client = super::pool::connect(&self.pool.config())?;
        let client = &mut client;
        let one =
            |client: &mut postgres::Client, sql: &str| -> Result<Option<String>, VerifyError> {
                Ok(client
                    .query_opt(sql, &[])
                    .map_err(backend)?
                    .map(|r| r.get::<_, String>(0)))
            };
        if let Some(doc) = one(
            client,
            "SELECT DISTINCT l.doc_id::text FROM change_log l
             LEFT JOIN docs d ON d.doc_id = l.doc_id
             WHERE d.doc_id IS NULL AND octet_length(l.bytes) > 0 LIMIT 1",
        )? {
            return Err(damaged(format!("document {doc} has changes but no record")));
        }
        if let Some(doc) = one(
            client,
            "SELECT d.doc_id::text FROM docs d
             LEFT JOIN cases c ON c.case_id = d.case_id WHERE c.case_id IS NULL LIMIT 1",
        )? {
            return Err(damaged(format!(
                "document {doc} names a case there is no record of"
            )));
        }
        if let Some(doc) = one(
            client,
            "SELECT d.doc_id::text FROM docs d, unnest(d.heads) AS h(hash)
             WHERE NOT EXISTS (SELECT 1 FROM change_log l
                               WHERE l.doc_id = d.doc_id AND l.hash = h.hash) LIMIT 1",
        )? {
            return Err(damaged(format!(
                "document {doc} has a head the log does not hold"
            )));
        }
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM docs), (SELECT count(*) FROM cases)",
                &[],
            )
            .map_err(backend)?;
        let (docs, cases): (i64, i64) = (row.get(0), row.get(1));
        Ok((seq(docs)?, seq(cases)?))
    }
}
