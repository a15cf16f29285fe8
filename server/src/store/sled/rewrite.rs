//! Rewriting the sled store's files so that no erased byte survives in them.
//!
//! sled keeps a removed or overwritten value in its log segments until it happens to reuse
//! them, so rows erased by [`crate::store::Txn::erase_doc`] are gone from every read but not
//! from the disk. The erasing transaction records that a rewrite is due ([`PENDING_KEY`] in
//! `meta`); the rewrite runs on a closed store, when it is next opened
//! (`SledStore::open`, before anything is served): every tree's live keys are copied into fresh
//! files in `DIR/.rewrite`, flushed, and swapped in for the old ones, which are deleted.
//!
//! Crash safety, as the device store's rewrite (client-core's `DeviceStore::rewrite`): the copy
//! is complete only once `.rewrite/COMPLETE` exists, written (fsynced, renamed into place) after
//! the copy was flushed, and naming every file of the fresh copy. [`recover`], at every open:
//! - `.rewrite` without `COMPLETE`: the copy was interrupted and the old files are intact; the
//!   copy is removed (rolled back) and, the flag being still set, the rewrite runs again;
//! - `.rewrite` with `COMPLETE`: the swap was interrupted; it is finished. It is idempotent:
//!   sled's files in `DIR` that the fresh copy does not have are old and are deleted; each file
//!   still in `.rewrite` replaces its namesake in `DIR`; a file no longer in `.rewrite` was
//!   moved already.
//!
//! The copy leaves the flag out, so the swapped-in store has no rewrite due. Nothing else in
//! `DIR` (the high-water mark, `acknowledged.mark`, which the rewrite does not change because
//! the log, the audit log and the flush generation are copied as they are) is touched.

use super::trees::open_sled;
use crate::store::StoreError;
use casenote_protocol::limits;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// `meta`: set by the transaction that erased a document; a rewrite of the files is due.
pub(super) const PENDING_KEY: &str = "rewrite_pending";
/// The directory, inside the data directory, the fresh copy is written to.
const FRESH: &str = ".rewrite";
/// In [`FRESH`]: written last, the names of the fresh copy's files, one a line.
const COMPLETE: &str = "COMPLETE";
/// Records copied per batch.
const BATCH: usize = 1_000;

/// Whether `name` is one of sled's files (`conf`, `db`, `blobs`, `snap.*`).
fn is_sled_file(name: &str) -> bool {
    matches!(name, "conf" | "db" | "blobs") || name.starts_with("snap.")
}

fn fresh_dir(dir: &Path) -> PathBuf {
    dir.join(FRESH)
}

/// Finishes or rolls back a rewrite that a crash interrupted. Run before sled opens `dir`.
pub(super) fn recover(dir: &Path) -> io::Result<()> {
    let fresh = fresh_dir(dir);
    if !fresh.exists() {
        return Ok(());
    }
    match fs::read_to_string(fresh.join(COMPLETE)) {
        Ok(list) => {
            let names: Vec<String> = list.lines().map(str::to_string).collect();
            swap(dir, &fresh, &names)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::remove_dir_all(&fresh),
        Err(e) => Err(e),
    }
}

/// Whether a swap of rewritten files was left unfinished (the next open finishes it).
pub(super) fn swap_pending(dir: &Path) -> bool {
    fresh_dir(dir).join(COMPLETE).is_file()
}

/// Whether a rewrite is due: the flag is set in `meta`.
pub(super) fn pending(db: &sled::Db) -> Result<bool, StoreError> {
    Ok(db.open_tree("meta")?.contains_key(PENDING_KEY)?)
}

/// Copies every tree of the closed store in `dir` into fresh files and swaps them in (see the
/// module docs). The store must not be open in this process or any other (sled's lock says so).
/// The copy needs room for the whole store and the free-space floor besides (sled must never
/// meet a full disk): without it, [`StoreError::Full`], nothing written, the rewrite still due.
pub(super) fn rewrite(dir: &Path) -> Result<(), StoreError> {
    let free = fs2::available_space(dir).map_err(io_error)?;
    rewrite_with_room(dir, free)
}

/// [`rewrite`], with `free` bytes available where `dir` is.
fn rewrite_with_room(dir: &Path, free: u64) -> Result<(), StoreError> {
    recover(dir).map_err(io_error)?;
    let needed = dir_bytes(dir).map_err(io_error)? + limits::STORE_FREE_BYTES_MIN_DEFAULT;
    if free < needed {
        return Err(StoreError::Full(format!(
            "rewriting the store's files needs {needed} bytes free (a copy of the store and the \
             free-space floor), {free} are: the rewrite waits for the next open"
        )));
    }
    let fresh = fresh_dir(dir);
    if let Err(e) = copy(dir, &fresh) {
        let _ = fs::remove_dir_all(&fresh); // the original is intact; give the room back
        return Err(e);
    }
    stall("copied");
    let names = sled_files(&fresh).map_err(io_error)?;
    write_complete(&fresh, &names).map_err(io_error)?;
    swap(dir, &fresh, &names).map_err(io_error)
}

/// Every tree of `dir`'s sled, but the pending flag, into a new sled in `fresh`, flushed.
fn copy(dir: &Path, fresh: &Path) -> Result<(), StoreError> {
    let old = open_sled(dir).map_err(StoreError::from)?;
    let new = open_sled(fresh).map_err(StoreError::from)?;
    for name in old.tree_names() {
        let from = old.open_tree(&name)?;
        let to = new.open_tree(&name)?;
        let skip: &[u8] = if &name[..] == b"meta" {
            PENDING_KEY.as_bytes()
        } else {
            &[]
        };
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in from.iter() {
            let (k, v) = item?;
            if !skip.is_empty() && &k[..] == skip {
                continue;
            }
            batch.insert(k, v);
            n += 1;
            if n % BATCH == 0 {
                to.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        to.apply_batch(batch)?;
    }
    new.flush()?;
    Ok(())
}

/// The bytes of sled's files in `dir`.
fn dir_bytes(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    let mut stack: Vec<PathBuf> = sled_files(dir)?.iter().map(|n| dir.join(n)).collect();
    while let Some(p) = stack.pop() {
        let meta = fs::metadata(&p)?;
        if meta.is_dir() {
            for entry in fs::read_dir(&p)? {
                stack.push(entry?.path());
            }
        } else {
            total += meta.len();
        }
    }
    Ok(total)
}

/// The names of sled's files in `dir`.
fn sled_files(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if is_sled_file(&name) && !name.ends_with(".generating") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Writes `COMPLETE` durably: a temporary file, fsynced, renamed, and the directory fsynced.
fn write_complete(fresh: &Path, names: &[String]) -> io::Result<()> {
    let tmp = fresh.join(format!("{COMPLETE}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(names.join("\n").as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, fresh.join(COMPLETE))?;
    fs::File::open(fresh)?.sync_all()
}

/// Puts the fresh copy's files (`names`) in place of the old ones; idempotent (see the module
/// docs), so an interrupted swap is finished by running it again.
fn swap(dir: &Path, fresh: &Path, names: &[String]) -> io::Result<()> {
    for old in sled_files(dir)? {
        if !names.contains(&old) {
            remove(&dir.join(old))?;
        }
    }
    for (i, name) in names.iter().enumerate() {
        let from = fresh.join(name);
        if !from.exists() {
            continue; // moved before a crash
        }
        let to = dir.join(name);
        if to.exists() {
            remove(&to)?;
        }
        fs::rename(&from, &to)?;
        if i == 0 {
            stall("swapping");
        }
    }
    fs::File::open(dir)?.sync_all()?;
    fs::remove_dir_all(fresh)
}

fn remove(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

fn io_error(e: io::Error) -> StoreError {
    StoreError::Backend(format!("rewriting the store's files: {e}"))
}

/// A test hook: with `CASENOTE_TEST_REWRITE_STALL=PHASE` (`copied`, `swapping`) the rewrite
/// stops there for ten minutes, so an end-to-end test can SIGKILL the process at that point.
/// Without the variable (always, in production) it does nothing.
fn stall(phase: &str) {
    if std::env::var("CASENOTE_TEST_REWRITE_STALL").as_deref() == Ok(phase) {
        // stderr itself: the store is opened before the server sets up its log.
        eprintln!("casenote: the store's rewrite stalls at {phase} (test hook)");
        std::thread::sleep(std::time::Duration::from_secs(600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grep(dir: &Path, needle: &[u8]) -> bool {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in fs::read_dir(d).unwrap() {
                let p = entry.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let bytes = fs::read(&p).unwrap();
                    if bytes.windows(needle.len()).any(|w| w == needle) {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// A sled store holding a live key and a removed value, and a pending rewrite.
    fn store_with_removed(dir: &Path, secret: &[u8]) {
        let db = open_sled(dir).unwrap();
        let t = db.open_tree("log").unwrap();
        t.insert(b"gone", secret).unwrap();
        t.insert(b"kept", b"live value".as_slice()).unwrap();
        db.flush().unwrap();
        t.remove(b"gone").unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert(PENDING_KEY, b"1".as_slice())
            .unwrap();
        db.flush().unwrap();
    }

    fn live(dir: &Path) -> (Option<sled::IVec>, Option<sled::IVec>, bool) {
        let db = open_sled(dir).unwrap();
        let t = db.open_tree("log").unwrap();
        (
            t.get(b"kept").unwrap(),
            t.get(b"gone").unwrap(),
            pending(&db).unwrap(),
        )
    }

    #[test]
    fn a_rewrite_leaves_no_removed_byte_and_keeps_every_live_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let secret = b"MISFILED-MARKER-a7c3e1";
        store_with_removed(&dir, secret);
        fs::write(dir.join("acknowledged.mark"), b"mark").unwrap();
        assert!(
            grep(&dir, secret),
            "positive control: sled kept the removed bytes"
        );
        rewrite(&dir).unwrap();
        assert!(
            !grep(&dir, secret),
            "the removed value survived the rewrite"
        );
        let (kept, gone, due) = live(&dir);
        assert_eq!(kept.as_deref(), Some(&b"live value"[..]));
        assert!(gone.is_none() && !due, "the flag is left out of the copy");
        assert_eq!(fs::read(dir.join("acknowledged.mark")).unwrap(), b"mark");
        assert!(!fresh_dir(&dir).exists());
    }

    #[test]
    fn a_rewrite_without_room_for_its_copy_writes_nothing_and_stays_due() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        store_with_removed(&dir, b"SECRET-NO-ROOM");
        let before = dir_bytes(&dir).unwrap();
        let short = before + limits::STORE_FREE_BYTES_MIN_DEFAULT - 1;
        let err = rewrite_with_room(&dir, short).unwrap_err();
        assert!(matches!(err, StoreError::Full(_)), "{err}");
        assert!(!fresh_dir(&dir).exists(), "nothing was written");
        let (kept, _, due) = live(&dir);
        assert_eq!(kept.as_deref(), Some(&b"live value"[..]));
        assert!(due, "the rewrite is still due");
        // sled's own open (in `live`) wrote to its files: measured again.
        let enough = dir_bytes(&dir).unwrap() + limits::STORE_FREE_BYTES_MIN_DEFAULT;
        rewrite_with_room(&dir, enough).unwrap();
        assert!(!live(&dir).2);
    }

    #[test]
    fn a_copy_interrupted_before_complete_is_rolled_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        store_with_removed(&dir, b"SECRET-ONE");
        copy(&dir, &fresh_dir(&dir)).unwrap(); // the crash comes before COMPLETE
        recover(&dir).unwrap();
        assert!(!fresh_dir(&dir).exists());
        let (kept, _, due) = live(&dir);
        assert_eq!(kept.as_deref(), Some(&b"live value"[..]));
        assert!(due, "the rewrite is still due, so the next open runs it");
    }

    #[test]
    fn a_swap_interrupted_halfway_is_finished() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let secret = b"SECRET-TWO-5f0e";
        store_with_removed(&dir, secret);
        let fresh = fresh_dir(&dir);
        copy(&dir, &fresh).unwrap();
        let names = sled_files(&fresh).unwrap();
        write_complete(&fresh, &names).unwrap();
        // The crash: old files not in the copy deleted, the first fresh file moved, no more.
        for old in sled_files(&dir).unwrap() {
            if !names.contains(&old) {
                remove(&dir.join(old)).unwrap();
            }
        }
        let first = &names[0];
        remove(&dir.join(first)).ok();
        fs::rename(fresh.join(first), dir.join(first)).unwrap();
        recover(&dir).unwrap();
        assert!(!fresh.exists());
        assert!(
            !grep(&dir, secret),
            "the removed value survived the finished swap"
        );
        let (kept, gone, due) = live(&dir);
        assert_eq!(kept.as_deref(), Some(&b"live value"[..]));
        assert!(gone.is_none() && !due);
    }
}
