//! The store's own defences, on real sled directories: the high-water mark catches a loss at
//! open and the store heals it; an older store gets its hash chain; `verify` names what it finds;
//! a flush that does not finish holds up no caller and refuses writes until it does.

use super::codec::LOG_ID_KEY;
use super::*;
use crate::model::{CaseRecord, DocHeader, DocRecord, NewChange, Org};
use crate::store::{read, write, Txn};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ROOT};
use casenote_protocol::{CaseId, DocKind, OrgId, StaffId};
use std::time::{Duration, Instant};

fn add_org(store: &SledStore, name: &str) -> Result<(), StoreError> {
    let org = Org {
        org_id: OrgId::new_random(),
        name: name.into(),
    };
    write(store, |t: &mut dyn Txn| t.put_org(&org))
}

fn log_id_of(store: &SledStore) -> uuid::Uuid {
    read(store, |t| t.log_id()).unwrap()
}

/// `n` real Automerge changes of one document, as the log stores them.
fn changes(doc: DocId, n: usize) -> Vec<NewChange> {
    let mut am = AutoCommit::new();
    (0..n)
        .map(|i| {
            am.put(ROOT, "n", i as i64).unwrap();
            am.commit();
            let change = am.get_last_local_change().unwrap().clone();
            NewChange {
                doc_id: doc,
                hash: change.hash().into(),
                bytes: change.raw_bytes().to_vec(),
                received_at_ms: 1_000 + i as i64,
            }
        })
        .collect()
}

/// A store holding one case document with `n` changes, flushed.
fn store_with(dir: &Path, n: usize) -> (Arc<SledStore>, DocId) {
    let store = open(dir).unwrap();
    let doc = DocId::new_random();
    let new = changes(doc, n);
    let heads = vec![new[n - 1].hash];
    let header = DocHeader {
        doc_id: doc,
        case_id: CaseId(doc.0),
        kind: DocKind::Case,
        owner_org: OrgId::new_random(),
        access_teams: None,
        created_by: StaffId::new_random(),
        created_ms: 0,
        sealed: false,
        grants: Vec::new(),
    };
    let case = CaseRecord {
        case_id: CaseId(doc.0),
        owner_org: header.owner_org,
        teams: vec![],
        created_ms: 0,
    };
    write(&*store, |t| {
        t.put_case(&case)?;
        t.put_doc(&DocRecord {
            header: header.clone(),
            heads: heads.clone(),
            ops: 0,
            filed_ms: None,
        })?;
        for c in &new {
            t.append_change(c)?;
        }
        t.audit_append(AuditRecord::new(AuditKind::Admin, 1, json!({"n": n})))
    })
    .unwrap();
    store.flush().unwrap();
    (store, doc)
}

/// Copies every file of `from` into `to` (created), except the mark.
fn copy_sled_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == mark::FILE {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_sled_files(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Appends `n` more changes to a new document of the store in `dir`, flushed.
fn more_changes(dir: &Path, n: usize) {
    let store = open(dir).unwrap();
    let doc = DocId::new_random();
    let new = changes(doc, n);
    write(&*store, |t| {
        new.iter().try_for_each(|c| t.append_change(c).map(|_| ()))
    })
    .unwrap();
    store.flush().unwrap();
}

#[test]
fn a_store_that_lost_acknowledged_changes_is_caught_at_open_and_healed_with_a_new_log_id() {
    let dir = tempfile::tempdir().unwrap();
    let before = tempfile::tempdir().unwrap();
    let log_id = {
        let (store, _) = store_with(dir.path(), 3);
        log_id_of(&store)
    };
    copy_sled_files(dir.path(), before.path());
    more_changes(dir.path(), 2);
    // sled comes back with the state before the last two changes, as its recovery leaves a
    // log cut at a damaged entry; the mark outside it says 5 were acknowledged.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != mark::FILE {
            let p = entry.path();
            if p.is_dir() {
                std::fs::remove_dir_all(p).unwrap();
            } else {
                std::fs::remove_file(p).unwrap();
            }
        }
    }
    copy_sled_files(before.path(), dir.path());

    // Inspected: the loss is named, nothing is changed.
    {
        let store = SledStore::inspect(dir.path()).unwrap();
        let damage = store.damage().expect("the loss must be found");
        assert!(
            damage.findings[0].contains("ends at seq 3, but changes up to seq 5"),
            "{:?}",
            damage.findings
        );
        assert_eq!(log_id_of(&store), log_id);
        let err = store.verify().unwrap_err();
        assert!(err.to_string().starts_with("store damaged: "), "{err}");
    }
    // Opened to serve: healed, audited, anchored anew.
    {
        let store = open(dir.path()).unwrap();
        assert!(store.damage().is_some());
        assert_ne!(log_id_of(&store), log_id, "devices must be told to reset");
        let last = crate::audit::entries(&*store, Some(1)).unwrap();
        assert_eq!(last[0].details["action"], "store_damage_detected");
        assert_eq!(crate::audit::verify_anchored(&*store).unwrap(), 2);
    }
    let store = SledStore::inspect(dir.path()).unwrap();
    assert_eq!(store.damage(), None, "the healed store opens clean");
    assert_eq!(store.verify().unwrap().changes, 3);
}

#[test]
fn a_missing_or_unreadable_mark_file_is_damage_once_the_store_has_had_one() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with(dir.path(), 2));
    let path = dir.path().join(mark::FILE);
    std::fs::write(&path, vec![0u8; 2 * mark::SLOT_BYTES]).unwrap();
    let findings = SledStore::inspect(dir.path())
        .unwrap()
        .damage()
        .unwrap()
        .findings;
    assert!(findings[0].contains("unreadable"), "{findings:?}");
    std::fs::remove_file(&path).unwrap();
    let findings = SledStore::inspect(dir.path())
        .unwrap()
        .damage()
        .unwrap()
        .findings;
    assert!(findings[0].contains("missing"), "{findings:?}");
}

#[test]
fn audit_entries_cut_off_the_end_are_found_by_the_anchor() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with(dir.path(), 1));
    {
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree(AUDIT_TREE).unwrap();
        let (k, _) = tree.last().unwrap().unwrap();
        tree.remove(k).unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::inspect(dir.path()).unwrap();
    assert!(
        crate::audit::verify(&store).is_ok(),
        "the chain alone cannot see a cut"
    );
    let err = crate::audit::verify_anchored(&store).unwrap_err();
    assert!(err.to_string().contains("cut short"), "{err}");
}

#[test]
fn a_store_written_before_the_chain_gets_it_at_its_first_open() {
    let dir = tempfile::tempdir().unwrap();
    let doc = DocId::new_random();
    let old = changes(doc, 3);
    {
        // The previous layout: doc ‖ hash ‖ bytes, and no mark file.
        let db = sled::open(dir.path()).unwrap();
        let log = db.open_tree("log").unwrap();
        for (i, c) in old.iter().enumerate() {
            let mut v = doc.as_bytes().to_vec();
            v.extend_from_slice(&c.hash.0);
            v.extend_from_slice(&c.bytes);
            log.insert((i as u64 + 1).to_be_bytes(), v).unwrap();
        }
        db.open_tree("meta")
            .unwrap()
            .insert(LOG_ID_KEY, uuid::Uuid::new_v4().as_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let store = open(dir.path()).unwrap();
    assert_eq!(store.damage(), None, "an older store is not damaged");
    let mut chain = CHAIN_GENESIS;
    for (i, c) in old.iter().enumerate() {
        let seq = i as u64 + 1;
        chain = chain_next(&chain, seq, doc, &c.hash);
        assert_eq!(
            store.get_log(Seq(seq)).unwrap(),
            Some((doc, c.hash, c.bytes.clone()))
        );
    }
    assert_eq!(store.sled().unwrap().tip().unwrap(), Tip { seq: 3, chain });
    let mark = lock(&store.shared.mark).last.unwrap();
    assert_eq!((mark.log_seq, mark.chain), (3, chain));
}

#[test]
fn verify_names_an_index_that_disagrees_with_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (store, doc) = store_with(dir.path(), 3);
    drop(store);
    {
        let db = sled::open(dir.path()).unwrap();
        let hashes = db.open_tree("hashes").unwrap();
        let (k, _) = hashes.scan_prefix(doc.as_bytes()).next().unwrap().unwrap();
        hashes.remove(k).unwrap();
        db.flush().unwrap();
    }
    let err = SledStore::inspect(dir.path())
        .unwrap()
        .verify()
        .unwrap_err();
    assert!(err.to_string().contains("hashes index"), "{err}");
}

#[test]
fn a_flush_that_does_not_finish_holds_up_no_caller_and_refuses_writes_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_with(dir.path(), 1);
    store.set_flush_wait(Duration::from_millis(200));
    store.hold_flushes(true);
    add_org(&store, "Council").unwrap();
    let err = store.flush().unwrap_err();
    assert!(matches!(err, StoreError::Unwritable(_)), "{err}");
    let refused = add_org(&store, "Trust").unwrap_err();
    assert!(
        refused.to_string().contains("has not finished"),
        "{refused}"
    );
    assert!(!store.writability().writable);
    // The flush ends: writes resume, and the write made before it is durable.
    store.hold_flushes(false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !store.writability().writable {
        assert!(Instant::now() < deadline, "the store never became writable");
        std::thread::sleep(Duration::from_millis(10));
    }
    add_org(&store, "Trust").unwrap();
    store.flush().unwrap();
    let names: Vec<String> = read(&*store, |t| t.orgs())
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert!(names.contains(&"Council".to_string()) && names.contains(&"Trust".to_string()));
}

#[test]
fn writes_are_refused_below_the_free_space_floor_and_reads_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let (store, doc) = store_with(dir.path(), 1);
    store.set_free_bytes_min(u64::MAX);
    let err = add_org(&store, "Council").unwrap_err();
    assert!(matches!(err, StoreError::Full(_)), "{err}");
    assert!(read(&*store, |t| t.doc(doc)).unwrap().is_some());
    let w = store.writability();
    assert!(!w.writable && w.reason.unwrap().contains("nearly full"));
    store.set_free_bytes_min(0);
    add_org(&store, "Council").unwrap();
    store.flush().unwrap();
}

/// A tmpfs mounted on `dir` for the test's lifetime (CI runs as root, as the full-disk suite
/// in `tests/` also needs).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size_mib: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "could not mount a tmpfs (this test needs root, as CI runs)"
        );
        Tmpfs(dir.to_path_buf())
    }

    /// Fills the file system with a file until a write fails for lack of space.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        for chunk in [1024 * 1024, 4096, 1] {
            let buf = vec![0xa5u8; chunk];
            while file.write_all(&buf).is_ok() {}
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// sled writes a value larger than a quarter of a segment to a file of its own (a blob). When
/// that write met a full disk, sled 0.34.7 kept the place the value had claimed in its log
/// buffer, so every later flush, and closing the handle to reopen it, waited forever: writes
/// never resumed once space returned (vendor/README.md). With the patched sled the failure
/// fails the handle at once, and the store reopens by itself.
#[test]
fn a_blob_write_that_meets_a_full_disk_fails_the_store_which_reopens_when_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&tmp.path().join("disk"), 32);
    let dir = disk.0.join("store");
    let store = open(&dir).unwrap();
    // No floor: sled itself meets the full disk, as when it fills between the check and the write.
    store.set_free_bytes_min(0);
    add_org(&store, "Council").unwrap();
    store.flush().unwrap();
    store.set_flush_wait(Duration::from_secs(10));
    let filler = disk.fill();
    let blob = "x".repeat(300 * 1024);
    let err = add_org(&store, &blob)
        .and_then(|()| store.flush())
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Full(_) | StoreError::Unwritable(_)),
        "{err}"
    );
    assert!(!store.writability().writable);
    let orgs = read(&*store, |t| t.orgs()).expect("reads still work");
    assert_eq!(orgs.len(), 1, "only what was acknowledged");

    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match add_org(&store, "Trust").and_then(|()| store.flush()) {
            Ok(()) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "writes never resumed once space returned: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(store);
    let store = open(&dir).unwrap();
    let names: Vec<String> = read(&*store, |t| t.orgs())
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert!(
        names.contains(&"Council".to_string()) && names.contains(&"Trust".to_string()),
        "{names:?}"
    );
}

/// A store written before the vendored automerge refused ops it never writes may hold one: a
/// put on the root's `m` whose predecessor is the put on `n`. Every backend check passes (the
/// change parses, its hash is right, the indexes agree); `verify` must still name the document,
/// since it no longer loads from its log and could take no push.
#[test]
fn verify_names_a_document_that_does_not_load_from_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let args = crate::cli::StoreArgs {
        data: Some(dir.path().to_path_buf()),
        postgres: None,
    };
    let (store, doc) = store_with(dir.path(), 2);
    let stored = read(&*store, |t| t.change_at(Seq(1))).unwrap().unwrap();
    let first = automerge::Change::from_bytes(stored.2).unwrap();
    let mut am = AutoCommit::new().with_actor(automerge::ActorId::from(vec![0xbb; 16]));
    let all: Vec<automerge::Change> = [Seq(1), Seq(2)]
        .map(|s| read(&*store, |t| t.change_at(s)).unwrap().unwrap().2)
        .into_iter()
        .map(|b| automerge::Change::from_bytes(b).unwrap())
        .collect();
    am.apply_changes(all).unwrap();
    am.put(ROOT, "m", 1).unwrap();
    am.commit();
    let mut crafted = am.get_last_local_change().unwrap().decode();
    crafted.hash = None;
    let put_on_n = automerge::legacy::OpId(1, first.actor_id().clone());
    crafted.operations[0].pred = vec![put_on_n].into();
    let crafted = automerge::Change::from(crafted);
    let new = NewChange {
        doc_id: doc,
        hash: crafted.hash().into(),
        bytes: crafted.raw_bytes().to_vec(),
        received_at_ms: 5_000,
    };
    drop(store);
    let verified = args.verify().unwrap();
    assert!(
        verified
            .as_ref()
            .is_ok_and(|s| s.contains("every document loads")),
        "{verified:?}"
    );
    let store = open(dir.path()).unwrap();
    write(&*store, |t| {
        let mut rec = t.doc(doc)?.unwrap();
        rec.heads = vec![new.hash];
        t.put_doc(&rec)?;
        t.append_change(&new).map(|_| ())
    })
    .unwrap();
    store.flush().unwrap();
    drop(store);
    let said = args.verify().unwrap().unwrap_err();
    assert!(said.starts_with("store damaged: "), "{said}");
    assert!(said.contains(&doc.to_string()), "{said}");
    assert!(
        said.contains("a predecessor is on another key or element"),
        "{said}"
    );
}
