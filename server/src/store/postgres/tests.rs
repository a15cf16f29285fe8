//! The PostgreSQL backend against the store contract ([`crate::store::conformance`]) on a real
//! throwaway cluster (one per test process, a database per store), plus what only this backend
//! has: two stores on one database (two nodes) allocating gap-free sequences in commit order
//! under a reader that never sees a gap, the watch across nodes, the schema versions, the
//! mapping of PostgreSQL's errors, and a database that refuses writes.

use super::PgStore;
use crate::model::{AuditKind, AuditRecord, NewChange};
use crate::store::conformance::{conformance_tests, Factory};
use crate::store::{read, write, Store, StoreError, Watch};
use casenote_pg_cluster::Cluster;
use casenote_protocol::wire::Hash;
use casenote_protocol::{limits, DocId, Seq};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// This test process's cluster.
pub(crate) fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start().expect("start a throwaway PostgreSQL cluster"))
}

/// Fresh databases on the cluster.
#[derive(Default)]
struct Postgres {
    urls: Vec<String>,
}

impl Factory for Postgres {
    fn fresh(&mut self) -> Arc<dyn Store> {
        let url = cluster().create_database().unwrap();
        let store = PgStore::open(&url).unwrap();
        self.urls.push(url);
        Arc::new(store)
    }

    fn reopen(&mut self, store: Arc<dyn Store>) -> Arc<dyn Store> {
        assert_eq!(
            Arc::strong_count(&store),
            1,
            "the test still holds the store"
        );
        drop(store);
        let url = self.urls.last().expect("a store was opened");
        Arc::new(PgStore::open(url).unwrap())
    }
}

conformance_tests!(Postgres::default());

fn fresh() -> (String, PgStore) {
    let url = cluster().create_database().unwrap();
    let store = PgStore::open(&url).unwrap();
    (url, store)
}

fn change(doc: DocId, n: u64) -> NewChange {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&n.to_be_bytes());
    hash[8..24].copy_from_slice(doc.as_bytes());
    NewChange {
        doc_id: doc,
        hash: Hash(hash),
        bytes: vec![7; 40],
        received_at_ms: 1_000 + n as i64,
    }
}

/// psql on the cluster, on database `url`.
fn sql(url: &str, statement: &str) {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client.batch_execute(statement).unwrap();
}

#[test]
fn two_nodes_writing_at_once_allocate_gap_free_sequences_a_reader_never_sees_skipped() {
    let (url, first) = fresh();
    let nodes = [Arc::new(first), Arc::new(PgStore::open(&url).unwrap())];
    let writers_per_node = 3;
    let writes_per_writer = 40;
    let stop = Arc::new(AtomicBool::new(false));
    // The reader follows the log as a device's pull does: scan (cursor, last_seq], cursor =
    // the last sequence seen. A change that committed behind its cursor would be skipped.
    let reader = {
        let (store, stop) = (nodes[1].clone(), stop.clone());
        std::thread::spawn(move || {
            let mut cursor = Seq(0);
            let mut seen = Vec::new();
            loop {
                let done = stop.load(Ordering::SeqCst);
                let last = store.last_seq().unwrap();
                store
                    .scan_log(cursor, last, &mut |e| {
                        seen.push(e.seq.0);
                        true
                    })
                    .unwrap();
                cursor = last;
                if done {
                    return seen;
                }
            }
        })
    };
    let mut writers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for w in 0..writers_per_node {
            let node = node.clone();
            writers.push(std::thread::spawn(move || {
                let doc = DocId::new_random();
                for i in 0..writes_per_writer {
                    write(&*node, |t| {
                        // Two changes per transaction, and an audit entry, like a push.
                        t.append_change(&change(doc, 2 * i))?;
                        t.append_change(&change(doc, 2 * i + 1))?;
                        t.audit_append(AuditRecord::new(
                            AuditKind::Sync,
                            1,
                            serde_json::json!({"node": n, "writer": w, "i": i}),
                        ))
                    })
                    .unwrap();
                }
            }));
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let seen = reader.join().unwrap();
    let total = 2 * writers_per_node * writes_per_writer * 2;
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "the reader saw a gap or a change out of order"
    );
    assert_eq!(nodes[0].last_seq().unwrap(), Seq(total));
    assert_eq!(crate::audit::verify(&*nodes[0]).unwrap() as u64, total / 2);
    // The stored chain is the chain of (seq, doc, hash): no two transactions forked it.
    let mut chain = crate::store::sled::CHAIN_GENESIS;
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    for row in client
        .query(
            "SELECT seq, doc_id, hash, chain FROM change_log ORDER BY seq",
            &[],
        )
        .unwrap()
    {
        let (seq, doc, hash, stored): (i64, uuid::Uuid, Vec<u8>, Vec<u8>) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let hash = Hash(hash.try_into().unwrap());
        chain = crate::store::sled::chain_next(&chain, seq as u64, DocId(doc), &hash);
        assert_eq!(stored, chain.to_vec(), "the chain breaks at {seq}");
    }
}

#[test]
fn a_nodes_watch_hears_what_another_node_committed_and_not_what_it_committed_itself() {
    let (url, a) = fresh();
    let b = PgStore::open(&url).unwrap();
    let mut watch = a.watch().expect("PostgreSQL stores can be watched");
    assert!(
        watch.wait(Duration::from_millis(50)).unwrap().is_none(),
        "nothing was committed yet"
    );
    let theirs = DocId::new_random();
    write(&b, |t| t.append_change(&change(theirs, 1))).unwrap();
    let heard = wait_for(&mut *watch).expect("node A's watch hears node B's commit");
    assert_eq!(heard.docs, vec![theirs]);
    assert_eq!(heard.upto, Seq(1));

    let ours = DocId::new_random();
    write(&a, |t| t.append_change(&change(ours, 2))).unwrap();
    // Bumped before the change it is read with: a read that sees the change sees the bump.
    let epoch = write(&b, |t| t.bump_access_epoch()).unwrap();
    write(&b, |t| t.append_change(&change(theirs, 3))).unwrap();
    let heard = wait_for(&mut *watch).expect("node B's second commit");
    assert_eq!(heard.docs, vec![theirs], "node A's own change is left out");
    assert_eq!(heard.upto, Seq(3));
    assert_eq!(
        heard.epoch,
        Some(epoch),
        "the access epoch as read with them"
    );
}

fn wait_for(watch: &mut dyn Watch) -> Option<crate::store::Committed> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(c) = watch.wait(Duration::from_millis(200)).unwrap() {
            return Some(c);
        }
    }
    None
}

#[test]
fn a_watch_whose_connection_was_cut_reads_what_it_missed_from_its_cursor() {
    let (url, a) = fresh();
    let b = PgStore::open(&url).unwrap();
    let mut watch = a.watch().unwrap();
    assert!(watch.wait(Duration::from_millis(50)).unwrap().is_none());
    // Cut every listening connection, as a database restart or a network fault would.
    sql(
        &url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    );
    let missed = DocId::new_random();
    write(&b, |t| t.append_change(&change(missed, 1))).unwrap();
    let mut heard = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while heard.is_none() && Instant::now() < deadline {
        // The first wait after the cut fails (and reconnects on the next call).
        if let Ok(Some(c)) = watch.wait(Duration::from_millis(200)) {
            heard = Some(c);
        }
    }
    assert_eq!(heard.expect("the missed change").docs, vec![missed]);
}

#[test]
fn opening_again_applies_no_migration_and_a_newer_schema_is_refused() {
    let (url, store) = fresh();
    drop(store);
    assert_eq!(
        PgStore::schema_version(&url).unwrap(),
        PgStore::schema_current()
    );
    PgStore::open(&url).unwrap();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let applied: i64 = client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(applied, i64::from(PgStore::schema_current()));
    client
        .execute(
            "INSERT INTO schema_migrations (version, description) VALUES (99, 'from the future')",
            &[],
        )
        .unwrap();
    let err = PgStore::open(&url)
        .err()
        .expect("a newer schema is refused");
    assert!(err.to_string().contains("version 99"), "{err}");
}

#[test]
fn two_nodes_starting_at_once_on_an_empty_database_migrate_it_once() {
    let url = cluster().create_database().unwrap();
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PgStore::open(&url).map(|_| ()))
        })
        .collect();
    for o in opens {
        o.join().unwrap().unwrap();
    }
    assert_eq!(
        PgStore::schema_version(&url).unwrap(),
        PgStore::schema_current()
    );
}

#[test]
fn serialization_failures_and_deadlocks_are_conflicts_and_a_read_only_database_is_unwritable() {
    let (url, store) = fresh();
    // A real serialization failure: two REPEATABLE READ transactions update one row.
    let mut one = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut two = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut t1 = one
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .start()
        .unwrap();
    let mut t2 = two
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .start()
        .unwrap();
    t1.query_one("SELECT access_epoch FROM store_state", &[])
        .unwrap();
    t2.query_one("SELECT access_epoch FROM store_state", &[])
        .unwrap();
    t1.execute(
        "UPDATE store_state SET access_epoch = access_epoch + 1",
        &[],
    )
    .unwrap();
    t1.commit().unwrap();
    let failed = t2
        .execute(
            "UPDATE store_state SET access_epoch = access_epoch + 1",
            &[],
        )
        .unwrap_err();
    assert!(matches!(super::backend(failed), StoreError::Conflict));

    sql(
        &url,
        &format!(
            "ALTER DATABASE {} SET default_transaction_read_only = on",
            url.rsplit('/').next().unwrap()
        ),
    );
    let reopened = PgStore::open(&url).err();
    // Migrations write, so an open of a read-only database fails only if it must migrate; this
    // one is migrated, so the open succeeds and writes are refused with a reason.
    assert!(reopened.is_none(), "{reopened:?}");
    drop(store);
    let store = PgStore::open(&url).unwrap();
    let w = store.writability();
    assert!(!w.writable, "{w:?}");
    assert!(w.reason.unwrap().contains("no writes"));
    let refused = write(&store, |t| t.bump_access_epoch()).unwrap_err();
    assert!(matches!(refused, StoreError::Unwritable(_)), "{refused}");
    assert_eq!(
        read(&store, |t| t.access_epoch()).unwrap(),
        1,
        "reads still work"
    );
}

/// Advisory locks on `url`'s database, granted or waited for.
fn advisory_locks(url: &str, granted: bool) -> usize {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted = $1
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&granted],
        )
        .unwrap();
    row.get::<_, i64>(0) as usize
}

/// Writers of `store` waiting for their turn: in its gate, or inside the database for the
/// advisory lock.
fn writers_waiting(url: &str, store: &PgStore) -> usize {
    store.writers.waiting() + advisory_locks(url, false)
}

#[test]
fn writers_waiting_their_turn_leave_the_pooled_connections_to_readers() {
    let (url, store) = fresh();
    let store = Arc::new(store);
    // One writer inside its transaction, holding the write lock until told to finish.
    let (finish, finished) = std::sync::mpsc::channel::<()>();
    let finished = std::sync::Mutex::new(finished);
    let holder = {
        let store = store.clone();
        std::thread::spawn(move || {
            write(&*store, |t| {
                t.bump_access_epoch()?;
                let _ = finished.lock().unwrap().recv();
                Ok(())
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while advisory_locks(&url, true) == 0 {
        assert!(
            Instant::now() < deadline,
            "the holder never took the write lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // More writers than the pool has connections, all waiting behind the holder.
    let queued = limits::PG_POOL_CONNECTIONS_MAX + 4;
    let writers: Vec<_> = (0..queued)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || write(&*store, |t| t.bump_access_epoch()))
        })
        .collect();
    // Enough of them waiting to have taken every other connection, had they held one each.
    while writers_waiting(&url, &store) < limits::PG_POOL_CONNECTIONS_MAX - 1 {
        assert!(Instant::now() < deadline, "the writers never queued");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Readers still get a connection each, at once as many as the pool holds.
    let readers: Vec<_> = (0..limits::PG_POOL_CONNECTIONS_MAX)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || read(&*store, |t| t.access_epoch()))
        })
        .collect();
    for r in readers {
        let read = r.join().unwrap();
        assert!(
            read.is_ok(),
            "a reader was starved by waiting writers: {read:?}"
        );
    }
    finish.send(()).unwrap();
    holder.join().unwrap().unwrap();
    for w in writers {
        w.join().unwrap().unwrap();
    }
    assert_eq!(
        read(&*store, |t| t.access_epoch()).unwrap(),
        queued as u64 + 1
    );
}

/// Starts a writer that appends `change(doc, 0)` and then holds the write lock until the sender
/// returned is used or dropped; returns once it holds the lock.
fn hold_the_lock(
    url: &str,
    store: &Arc<PgStore>,
    doc: DocId,
) -> (
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<Result<(), StoreError>>,
) {
    let (finish, finished) = std::sync::mpsc::channel::<()>();
    let finished = std::sync::Mutex::new(finished);
    let store = store.clone();
    let holder = std::thread::spawn(move || {
        write(&*store, |t| {
            t.append_change(&change(doc, 0))?;
            let _ = finished.lock().unwrap().recv();
            Ok(())
        })
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while advisory_locks(url, true) == 0 {
        assert!(
            Instant::now() < deadline,
            "the holder never took the write lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (finish, holder)
}

#[test]
fn writers_waiting_together_share_one_commit_and_a_failing_one_is_undone_alone() {
    let (url, store) = fresh();
    let store = Arc::new(store);
    let doc = DocId::new_random();
    let (finish, holder) = hold_the_lock(&url, &store, doc);
    let writers = 12u64;
    let handles: Vec<_> = (1..=writers)
        .map(|n| {
            let store = store.clone();
            std::thread::spawn(move || {
                write(&*store, |t| {
                    t.append_change(&change(doc, n))?;
                    t.audit_append(AuditRecord::new(AuditKind::Sync, n as i64, json!({"n": n})))?;
                    match n {
                        // Fails after writing: its change must not stay.
                        4 => Err(StoreError::Backend("refused by the test".into())),
                        // The holder's change again: its insert fails in the database, which
                        // aborts the shared transaction unless the savepoint undoes it.
                        7 => t.append_change(&change(doc, 0)).map(drop),
                        _ => Ok(()),
                    }
                })
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.writers.waiting() < writers as usize {
        assert!(Instant::now() < deadline, "the writers never queued");
        std::thread::sleep(Duration::from_millis(20));
    }
    finish.send(()).unwrap();
    holder.join().unwrap().unwrap();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (n, r) in (1..=writers).zip(&results) {
        assert_eq!(r.is_err(), n == 4 || n == 7, "writer {n}: {r:?}");
    }
    // Every other writer's change is there, with gap-free sequences...
    let kept = writers + 1 - 2;
    assert_eq!(store.last_seq().unwrap(), Seq(kept));
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let rows: i64 = client
        .query_one("SELECT count(*) FROM change_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows as u64, kept);
    // ...committed by fewer transactions than writers: those that waited together shared one.
    let transactions = store.writers.batches();
    assert!(
        transactions < writers + 1,
        "{} writers in {transactions} transactions",
        writers + 1
    );
    // Each writer appended to both logs after the one before it, kept or undone: both chains
    // link up whole (a writer that went on from the undone one's tips would leave a gap or a
    // fork).
    assert_eq!(
        log_chain_breaks(&mut client),
        0,
        "the change log's chain links up"
    );
    assert_eq!(crate::audit::verify(&*store).unwrap(), kept as usize - 1);
}

/// Entries of the change log whose stored chain is not the one recomputed from the entry before
/// (or whose sequence does not follow it).
fn log_chain_breaks(client: &mut postgres::Client) -> usize {
    let rows = client
        .query(
            "SELECT seq, doc_id, hash, chain FROM change_log ORDER BY seq",
            &[],
        )
        .unwrap();
    let mut chain = crate::model::CHAIN_GENESIS;
    let mut breaks = 0;
    for (i, row) in rows.iter().enumerate() {
        let seq: i64 = row.get("seq");
        let hash: Vec<u8> = row.get("hash");
        let hash = Hash(hash.try_into().unwrap());
        chain = crate::model::chain_next(&chain, seq as u64, DocId(row.get("doc_id")), &hash);
        let stored: Vec<u8> = row.get("chain");
        breaks += usize::from(stored != chain || seq as usize != i + 1);
    }
    breaks
}

#[test]
fn the_first_writer_of_a_batch_failing_undoes_its_own_work_only() {
    let (url, store) = fresh();
    let store = Arc::new(store);
    let doc = DocId::new_random();
    // Another node holds the lock: writer 1 opens this node's batch (and takes no savepoint),
    // then waits for the lock inside the database; writers 2-4 queue behind it, in order.
    let other = Arc::new(PgStore::open(&url).unwrap());
    let (finish, holder) = hold_the_lock(&url, &other, doc);
    let deadline = Instant::now() + Duration::from_secs(60);
    let queued = |n: u64| match n {
        1 => advisory_locks(&url, false) == 1,
        n => store.writers.waiting() == n as usize - 1,
    };
    let handles: Vec<_> = (1..=4u64)
        .map(|n| {
            let writer = store.clone();
            let handle = std::thread::spawn(move || {
                write(&*writer, |t| {
                    t.append_change(&change(doc, n))?;
                    // Writer 1 writes the holder's change again: the database refuses it.
                    if n == 1 {
                        t.append_change(&change(doc, 0))?;
                    }
                    Ok(())
                })
            });
            while !queued(n) {
                assert!(Instant::now() < deadline, "writer {n} never queued");
                std::thread::sleep(Duration::from_millis(5));
            }
            handle
        })
        .collect();
    finish.send(()).unwrap();
    holder.join().unwrap().unwrap();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (n, r) in (1..=4u64).zip(&results) {
        assert_eq!(r.is_err(), n == 1, "writer {n}: {r:?}");
    }
    // The holder's change and writers 2-4's, gap-free; nothing of writer 1's.
    assert_eq!(store.last_seq().unwrap(), Seq(4));
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let rows: i64 = client
        .query_one("SELECT count(*) FROM change_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 4);
}

#[test]
fn a_swallowed_statement_error_never_turns_into_a_commit() {
    let (_url, store) = fresh();
    let doc = DocId::new_random();
    write(&store, |t| t.append_change(&change(doc, 1))).unwrap();
    // The same change again, past the dedupe a push does: the insert fails at commit time...
    let again = write(&store, |t| {
        t.bump_access_epoch()?;
        t.append_change(&change(doc, 1))
    });
    assert!(again.is_err(), "a duplicate change must not commit");
    // ...and nothing of that transaction is there, the epoch bump included.
    assert_eq!(read(&store, |t| t.access_epoch()).unwrap(), 0);
    assert_eq!(store.last_seq().unwrap(), Seq(1));
    // A statement that fails inside the work, its error swallowed: the commit refuses.
    let mut conn = store.pool.get().unwrap();
    let session = conn.session();
    session.begin("BEGIN").unwrap();
    assert!(session.execute("SELECT 1/0", &[]).is_err());
    let committed = session.commit("COMMIT");
    assert!(
        committed.is_err(),
        "COMMIT after a failed statement must be refused"
    );
}

/// A pooled connection of `store` inside a write transaction that moved the access epoch.
fn a_transaction_that_moved_the_epoch(store: &PgStore) -> super::pool::Conn<'_> {
    let mut conn = store.pool.get().unwrap();
    let session = conn.session();
    session.begin("BEGIN").unwrap();
    session
        .execute(
            "UPDATE store_state SET access_epoch = access_epoch + 1",
            &[],
        )
        .unwrap();
    conn
}

#[test]
fn a_writers_statement_that_fails_to_prepare_is_undone_with_its_part_alone() {
    // The second writer of a shared transaction holds its savepoint back; its first statement
    // fails while the database prepares it (here a table that is not there). Undoing the part
    // must leave the first writer's work to commit, not a transaction aborted at its root,
    // whose COMMIT PostgreSQL answers with a silent ROLLBACK.
    let (_url, store) = fresh();
    let mut conn = a_transaction_that_moved_the_epoch(&store);
    let session = conn.session();
    session.savepoint();
    assert!(session.query("SELECT * FROM no_such_table", &[]).is_err());
    session.rollback_to_savepoint();
    session.keep().expect("the first writer's part is whole");
    session.commit("COMMIT").expect("committed");
    drop(conn);
    assert_eq!(
        read(&store, |t| t.access_epoch()).unwrap(),
        1,
        "the first part committed"
    );
}

#[test]
fn a_write_transaction_aborted_unseen_is_never_acknowledged_as_committed() {
    let (_url, store) = fresh();
    let own = super::watch::Own::default();
    let mut conn = a_transaction_that_moved_the_epoch(&store);
    let session = conn.session();
    // A failure the session did not see: the transaction is aborted.
    session.unobserved("SELECT 1/0");
    let committed = super::commit(session, None, &own);
    assert!(
        committed.is_err(),
        "an aborted transaction's COMMIT was acknowledged"
    );
    drop(conn);
    assert_eq!(read(&store, |t| t.access_epoch()).unwrap(), 0);
}

#[test]
fn a_log_scan_of_large_changes_fetches_them_a_few_at_a_time_and_stops_when_told() {
    let (_url, store) = fresh();
    let doc = DocId::new_random();
    let big = casenote_protocol::limits::CHANGE_BYTES_MAX / 2;
    write(&store, |t| {
        for n in 0..6 {
            let mut c = change(doc, n);
            c.bytes = vec![n as u8; big];
            t.append_change(&c)?;
        }
        Ok(())
    })
    .unwrap();
    let mut seen = Vec::new();
    store
        .scan_log(Seq(0), Seq(6), &mut |e| {
            assert_eq!(e.bytes.len(), big);
            seen.push(e.seq.0);
            e.seq.0 < 4
        })
        .unwrap();
    assert_eq!(seen, vec![1, 2, 3, 4]);
    assert_eq!(store.received_at(Seq(3)).unwrap(), Some(1_002));
    assert_eq!(store.doc_change_seqs(doc).unwrap().len(), 6);
}

/// [`crate::testkit::alice_with_case`], and a document of the case with a change.
fn one_readable_change(store: &dyn Store) -> crate::auth::Principal {
    let (who, kase) = crate::testkit::alice_with_case(store);
    let mut doc = crate::testkit::note_record(DocId::new_random(), kase.case_id);
    doc.header.kind = casenote_protocol::DocKind::Plan;
    doc.header.owner_org = kase.owner_org;
    doc.header.created_by = who.staff_id();
    write(store, |t| {
        t.put_doc(&doc)?;
        t.append_change(&change(doc.header.doc_id, 1)).map(|_| ())
    })
    .unwrap();
    who
}

/// A sync request that pushes and reports nothing, from `cursor`, confirming `confirmed`.
fn sync_request(cursor: Seq, confirmed: Option<u64>) -> casenote_protocol::wire::SyncRequest {
    casenote_protocol::wire::SyncRequest {
        version: casenote_protocol::wire::PROTOCOL_VERSION,
        cursor,
        device_clock_ms: 0,
        docs: Vec::new(),
        log_id: None,
        confirmed_reconcile: confirmed,
        views: Vec::new(),
        restricted: Vec::new(),
    }
}

/// A device's first sync reads the records of what it may read, and its backfill the records
/// and histories of what it is handed, a few hundred documents at a time: its round trips do not
/// grow with the documents. Before, it made three or more a document (its record in the access
/// check and again in the backfill, its history, an empty fetch after it): about 3,200 for the
/// 1,029 documents of W3.
#[test]
fn a_first_sync_makes_round_trips_by_the_few_hundred_documents_not_by_the_document() {
    let (_url, store) = fresh();
    let (alice, kase) = crate::testkit::alice_with_case(&store);
    let docs = 300;
    write(&store, |t| {
        for n in 0..docs {
            let mut doc = crate::testkit::note_record(DocId::new_random(), kase.case_id);
            doc.header.owner_org = kase.owner_org;
            t.put_doc(&doc)?;
            t.append_change(&change(doc.header.doc_id, 2 * n))?;
            t.append_change(&change(doc.header.doc_id, 2 * n + 1))?;
        }
        Ok(())
    })
    .unwrap();
    let first_sync = |device| {
        let who = crate::auth::Principal {
            device_id: device,
            ..alice.clone()
        };
        let req = sync_request(Seq(0), None);
        super::session::round_trips::take();
        let (resp, _) = crate::sync::handle(&store, &who, req, 0, &Default::default()).unwrap();
        (resp, super::session::round_trips::take())
    };
    // The first prepares the statements on the pool's connection; the second is counted.
    first_sync(alice.device_id);
    let (resp, trips) = first_sync(casenote_protocol::DeviceId::new_random());
    assert_eq!(resp.docs.len(), docs as usize, "handed every document");
    assert!(!resp.more);
    assert!(trips < 30, "{trips} round trips for {docs} documents");
}

#[test]
fn a_pull_reads_the_log_in_its_read_transaction_on_one_connection() {
    let url = cluster().create_database().unwrap();
    let store = PgStore::open_with_pool(&url, 1, Duration::from_millis(500)).unwrap();
    let who = one_readable_change(&store);
    // Every sync's pull: with one connection, a second one taken inside the read transaction
    // never comes (under load, every sync holding one and waiting for another).
    let pulled = crate::sync::pull(&store, &who, Seq(0), &Default::default(), 0)
        .expect("the pull needs no second connection");
    assert_eq!(pulled.changes, 1);
    assert_eq!(pulled.cursor, Seq(1));
}

#[test]
fn a_sync_from_a_new_device_and_its_next_one_need_one_connection_at_a_time() {
    let url = cluster().create_database().unwrap();
    let store = PgStore::open_with_pool(&url, 1, Duration::from_millis(500)).unwrap();
    let who = one_readable_change(&store);
    let mut cursor = Seq(0);
    let mut confirm = None;
    // The first sync (a reconciliation, backfilled from the indexes), its confirmation, an idle one.
    for round in 0..3 {
        let req = sync_request(cursor, confirm);
        let (resp, _) = crate::sync::handle(&store, &who, req, 0, &Default::default())
            .unwrap_or_else(|e| panic!("sync {round} needs one connection at a time: {e}"));
        cursor = resp.cursor;
        confirm = resp.reconcile_id;
        if round == 0 {
            assert_eq!(resp.docs.len(), 1);
        }
    }
    assert_eq!(cursor, Seq(1));
}

/// A commit here is durable: the live channel is told what a sync stored once its push
/// committed, before the sync's pull is planned and its audit entry written.
#[test]
fn the_live_channel_is_told_once_the_push_committed() {
    let (_url, store) = fresh();
    let (at, after, docs) = crate::sync::idle_tests::audit_at_announcement(&store);
    assert_eq!(docs.len(), 1);
    assert_eq!(after, at + 1, "told after the sync's own audit entry");
}

#[test]
fn a_log_scan_fetches_about_its_byte_budget_whatever_the_rows_sizes() {
    let (_url, store) = fresh();
    let doc = DocId::new_random();
    // Changes of a quarter of the fetch budget each: 256 of them (a first fetch's rows before)
    // would be 256 MiB in one round trip; a fetch may hold the budget plus one change.
    let each = limits::PG_SCAN_FETCH_BYTES / 4;
    let count = 40;
    for n in 1..=count {
        write(&store, |t| {
            let mut c = change(doc, n);
            c.bytes = vec![n as u8; each];
            t.append_change(&c).map(|_| ())
        })
        .unwrap();
    }
    let mut seen = 0;
    super::txn::fetched::take();
    store
        .scan_log_with_erased(Seq(0), Seq(count), &mut |e| {
            seen += 1;
            assert_eq!(e.bytes.len(), each);
            true
        })
        .unwrap();
    assert_eq!(seen, count as usize);
    let largest = super::txn::fetched::take();
    assert!(
        largest <= limits::PG_SCAN_FETCH_BYTES + each,
        "one fetch held {largest} bytes"
    );
}

/// A store on one connection, Alice with a case, and a plan she created in it: (store, Alice,
/// her plan as her device holds it, the plan's and the case's ids).
fn a_stored_plan() -> (
    Arc<PgStore>,
    crate::auth::Principal,
    automerge::AutoCommit,
    (DocId, casenote_protocol::CaseId),
) {
    let url = cluster().create_database().unwrap();
    let store = Arc::new(PgStore::open_with_pool(&url, 1, Duration::from_millis(500)).unwrap());
    let (who, kase) = crate::testkit::alice_with_case(&*store);
    let ids = (DocId::new_random(), kase.case_id);
    let mut plan = crate::testkit::new_plan(&who, kase.case_id);
    let created = crate::sync::push(
        &*store,
        &who,
        vec![crate::testkit::plan_push(&mut plan, &[], ids)],
        0,
    )
    .unwrap();
    assert!(created.rejections.is_empty() && created.acks.len() == 1);
    (store, who, plan, ids)
}

/// Stands in for another server node: each call stores one more edit of `theirs` (a fork of the
/// plan) to document `doc`, as that node's push would, and counts it.
fn another_node_edits(
    store: Arc<PgStore>,
    mut theirs: automerge::AutoCommit,
    doc: DocId,
    edits: Arc<std::sync::atomic::AtomicUsize>,
) -> impl FnMut() {
    use casenote_protocol::record::{self, field};
    move || {
        let base = theirs.get_heads();
        record::append_root_text(&mut theirs, "plan", field::NARRATIVE, "Theirs.").unwrap();
        theirs.commit();
        let change = theirs.get_changes(&base).pop().unwrap().clone();
        write(&*store, |t| {
            let mut rec = t.doc(doc)?.unwrap();
            let hash = Hash(change.hash().0);
            t.append_change(&NewChange {
                doc_id: doc,
                hash,
                bytes: change.raw_bytes().to_vec(),
                received_at_ms: 1,
            })?;
            rec.heads = vec![hash];
            rec.ops += change.len() as u64;
            t.put_doc(&rec)
        })
        .unwrap();
        edits.fetch_add(1, Ordering::SeqCst);
    }
}

/// This node's edit pushed while the other node's edits land between the passes of every one of
/// its first `stale` attempts; returns the outcome, the other node's edits stored and the
/// judgements the write transactions made themselves.
fn push_while_another_node_edits(stale: usize) -> (crate::sync::PushOutcome, usize, usize) {
    use crate::sync::push::between_passes;
    use casenote_protocol::record::{self, field};
    let (store, who, mut plan, ids) = a_stored_plan();
    let base = plan.get_heads();
    let edits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut other = another_node_edits(store.clone(), plan.fork(), ids.0, edits.clone());
    let mut left = stale;
    between_passes::set_while(move || {
        other();
        left -= 1;
        left > 0
    });
    record::append_root_text(&mut plan, "plan", field::NARRATIVE, "Mine.").unwrap();
    plan.commit();
    let before = between_passes::judged_in_writes();
    let edited = crate::sync::push(
        &*store,
        &who,
        vec![crate::testkit::plan_push(&mut plan, &base, ids)],
        0,
    )
    .expect("stored, on the one connection");
    let heads = read(&*store, |t| t.doc(ids.0)).unwrap().unwrap().heads;
    assert_eq!(
        heads.len(),
        2,
        "both nodes' edits are heads of the document"
    );
    let judged_here = between_passes::judged_in_writes() - before;
    (edited, edits.load(Ordering::SeqCst), judged_here)
}

#[test]
fn a_push_whose_judgement_another_node_made_stale_is_judged_ahead_again_not_under_the_lock() {
    // The other node stores an edit between this node's judgement ahead and its write, once: the
    // write gives up (nothing judged under the write lock), the push judges ahead again against
    // the state with that edit, and the next write stores it.
    let (edited, theirs, judged_here) = push_while_another_node_edits(1);
    assert!(edited.rejections.is_empty(), "{:?}", edited.rejections);
    assert_eq!((edited.acks.len(), edited.stored), (1, 1));
    assert_eq!(theirs, 1);
    assert_eq!(
        judged_here, 0,
        "nothing judged inside the write transaction"
    );
}

#[test]
fn a_push_judged_again_in_its_write_transaction_needs_no_second_connection() {
    // The other node stores an edit before every attempt's write: after
    // `PUSH_AHEAD_RETRIES` judgements ahead, the last write judges the edit itself, materialising
    // the document from the log on its one connection, and is sure to finish.
    let attempts = limits::PUSH_AHEAD_RETRIES as usize + 1;
    let (edited, theirs, judged_here) = push_while_another_node_edits(attempts);
    assert!(edited.rejections.is_empty(), "{:?}", edited.rejections);
    assert_eq!((edited.acks.len(), edited.stored), (1, 1));
    assert_eq!(theirs, attempts);
    assert_eq!(
        judged_here, 1,
        "the last attempt judged in its write transaction"
    );
}

/// A page of the log or of a document whose range ends inside its bounds is one fetch. Asking
/// again, until a fetch came back empty, was a round trip for nothing: one for each document a
/// backfill handed out, a third of a device's first sync.
#[test]
fn a_page_whose_range_ends_inside_its_bounds_is_one_fetch() {
    let (_url, store) = fresh();
    let (a, b) = (DocId::new_random(), DocId::new_random());
    write(&store, |t| {
        for (doc, n) in [(a, 1), (b, 2), (a, 3), (b, 4)] {
            t.append_change(&change(doc, n))?;
        }
        Ok(())
    })
    .unwrap();
    read(&store, |t| {
        super::txn::fetched::fetches();
        let of_a = t.docs_page(&[a], (Seq(0), Seq(4)), 100, usize::MAX)?;
        assert_eq!(of_a.len(), 2);
        assert_eq!(super::txn::fetched::fetches(), 1, "a document's page");
        let log = t.log_page((Seq(0), Seq(9)), 100, usize::MAX)?;
        assert_eq!(log.len(), 4);
        assert_eq!(super::txn::fetched::fetches(), 1, "the log's, past its end");
        let two = t.docs_page(&[b], (Seq(0), Seq(4)), 1, usize::MAX)?;
        assert_eq!(two.len(), 1, "cut by its bound: nothing more is asked");
        assert_eq!(super::txn::fetched::fetches(), 1);
        Ok(())
    })
    .unwrap();
}

/// The shared pages `sql` reads (EXPLAIN ANALYZE's count for the whole statement, subqueries
/// included), run as a prepared statement with `params` (SQL literals) under a plan made for
/// any parameters, as a long-lived connection comes to use one (`plan_cache_mode`), or for these.
fn pages_read(url: &str, sql: &str, params: &str, generic: bool) -> u64 {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let mode = if generic {
        "force_generic_plan"
    } else {
        "force_custom_plan"
    };
    client
        .batch_execute(&format!(
            "SET plan_cache_mode = {mode}; PREPARE asked AS {sql}"
        ))
        .unwrap();
    let explain = format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE asked({params})");
    let plan: serde_json::Value = client.query_one(&explain, &[]).unwrap().get(0);
    let top = &plan[0]["Plan"];
    let count = |key: &str| {
        top[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {plan}"))
    };
    count("Shared Hit Blocks") + count("Shared Read Blocks")
}

/// What a push reads of a document is a lookup by key, whatever the document's history, under
/// the plan a connection comes to use for any document (most documents have a few changes, a
/// shared plan thousands). Which of a few hashes it holds (`held_or_refused`, `push_facts`, in
/// both of a push's passes, the second under the write lock): joined to the log, the asked
/// hashes were matched against every change of the document (a bitmap scan of its rows: 87
/// pages for 240 changes after 5 s of W5L, growing with every edit), and left to choose a plan
/// per run instead, the database spent 0.2 ms planning `push_facts` at each. The changes after
/// a sequence (`doc_changes_after`: a node's copy of the document catching up with another
/// node's edit, before every such push on two nodes): found through the (document, hash) index,
/// every change of the document was read to return the last. A backfill's batch of a
/// document's history (`docs_page`), of a small document in a long log or of the end of a long
/// history, is one too.
#[test]
fn reads_of_one_document_read_a_few_pages_however_long_the_log_and_its_history() {
    let (url, store) = fresh();
    let hot = DocId::new_random();
    let small = DocId::new_random();
    const HISTORY: u64 = 6_000;
    write(&store, |t| {
        for n in 0..2_000 {
            let doc = if n == 0 { small } else { DocId::new_random() };
            t.append_change(&change(doc, 1))?;
            t.append_change(&change(doc, 2))?;
        }
        for n in 1..=HISTORY {
            t.append_change(&change(hot, n))?;
        }
        Ok(())
    })
    .unwrap();
    sql(&url, "ANALYZE");
    let mode = store
        .pool
        .get()
        .unwrap()
        .session()
        .simple_value("SHOW plan_cache_mode");
    assert_eq!(
        mode.unwrap().as_deref(),
        Some("force_generic_plan"),
        "the store's connections plan once, for any parameters: the plan checked below"
    );
    let hex = |c: NewChange| format!("'\\x{}'", hex::encode(c.hash.0));
    let asked = [change(hot, 1), change(hot, HISTORY), change(hot, 0)]
        .map(hex)
        .join(",");
    let (doc, asked) = (
        format!("'{}'::uuid", hot.0),
        format!("ARRAY[{asked}]::bytea[]"),
    );
    // The last change of the document is the log's last, at 4,000 + HISTORY.
    let last_but_one = 4_000 + HISTORY - 1;
    let batch = |doc: DocId, after: u64| {
        let (rows, bytes) = (limits::PULL_SCAN_BATCH_ENTRIES, limits::PG_SCAN_FETCH_BYTES);
        let upto = last_but_one + 1;
        format!("{after}, {upto}, {rows}, {bytes}, ARRAY['{}'::uuid]", doc.0)
    };
    for generic in [false, true] {
        let reads = [
            (
                "held_or_refused",
                super::txn::HELD_OR_REFUSED,
                format!("{doc}, {asked}"),
            ),
            (
                "push_facts",
                super::txn::PUSH_FACTS,
                format!("{doc}, {asked}, ARRAY[]::bytea[], true"),
            ),
            (
                "doc_changes_after",
                super::txn::DOC_CHANGES_AFTER,
                format!("{doc}, {last_but_one}"),
            ),
            (
                "docs_page of a small document",
                super::txn::DOCS_PAGE,
                batch(small, 0),
            ),
            (
                "docs_page of the end of a history",
                super::txn::DOCS_PAGE,
                batch(hot, last_but_one),
            ),
        ];
        // A few lookups in an index or two (and the heap rows found) and one document's row:
        // a few pages each. The document's 6,000 changes fill over a hundred.
        for (what, sql, params) in reads {
            let pages = pages_read(&url, sql, &params, generic);
            assert!(
                pages < 40,
                "{what} read {pages} pages (a plan for any parameters: {generic})"
            );
        }
    }
}
