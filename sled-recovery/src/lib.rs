//! Opens a sled 0.34 database so that a crash while sled was writing a snapshot does not leave
//! it unopenable.
//!
//! sled writes a snapshot to `snap.<lsn>.generating`, fsyncs it, then renames it to
//! `snap.<lsn>`. A process killed before the rename leaves the `.generating` file behind, and
//! sled 0.34.7's `read_snapshot` takes the lexicographically last `snap.*` file, which is then
//! the partial one, and fails every later open with `Corruption { at: None }` (upstream issues
//! spacejam/sled#1509, #1527, #1533; reproduced here by SIGKILLing the `casenote` CLI mid-edit).
//! An unrenamed snapshot was never part of the committed state: sled recovers from the previous
//! snapshot and its log without it. So before opening, while no live process holds sled's lock on
//! the `db` file, we delete those files. Both the device store and the server store open sled
//! only through [`open`].

use fs2::FileExt;
use std::path::Path;

/// How long an open waits for sled's lock on the database to be released. A handle closed in this
/// process lets go within milliseconds; two seconds covers a loaded machine, and a store held by
/// another live process is reported after that wait rather than at once.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens (or creates) the sled database in `dir`, first removing partial snapshots that a crash
/// left behind.
pub fn open(dir: &Path) -> sled::Result<sled::Db> {
    open_with(dir, sled::Config::new())
}

/// [`open`] with sled settings of the caller's (a cache size, say); the path is set here.
pub fn open_with(dir: &Path, config: sled::Config) -> sled::Result<sled::Db> {
    remove_partial_snapshots(dir)?;
    config.path(dir).open()
}

/// Deletes `snap.*.generating` files in `dir`, but only while no process holds the database (a
/// live process may be writing one right now); if one does, `sled::open` reports that itself.
pub fn remove_partial_snapshots(dir: &Path) -> std::io::Result<usize> {
    let db_file = dir.join("db");
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&db_file)
    else {
        return Ok(0); // no database yet, or not ours to touch
    };
    // sled releases its lock when the last handle's background flusher lets go, a moment after
    // the `Db` is dropped: wait that moment out, so that closing a store and opening it again
    // (a user switch on a shared device, a reopen after a wipe) does not fail by a race.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    while file.try_lock_exclusive().is_err() {
        if std::time::Instant::now() >= deadline {
            return Ok(0); // held by a live process: sled's open reports it
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    file.unlock()?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_with_a_partial_snapshot_left_by_a_crash_opens_with_its_data() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        {
            let db = open(&dir).unwrap();
            db.insert(b"kept", b"value".to_vec()).unwrap();
            db.flush().unwrap();
        }
        // What a SIGKILL between sled's snapshot write and its rename leaves behind.
        std::fs::write(dir.join("snap.00000000000FFFFF.generating"), b"").unwrap();
        assert!(
            sled::Config::new().path(&dir).open().is_err(),
            "plain sled opens it: the workaround is no longer needed and can go"
        );
        let db = open(&dir).unwrap();
        assert_eq!(db.get(b"kept").unwrap().as_deref(), Some(&b"value"[..]));
    }

    #[test]
    fn a_partial_snapshot_of_a_database_in_use_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        let _live = open(&dir).unwrap();
        let partial = dir.join("snap.00000000000FFFFF.generating");
        std::fs::write(&partial, b"").unwrap();
        assert_eq!(remove_partial_snapshots(&dir).unwrap(), 0);
        assert!(partial.exists());
    }
}
