//! Sharing a store between processes: waiting, for a bounded time, for another to let go of it.
//!
//! sled holds an exclusive lock (`flock`) on its `db` file for as long as a process has the store
//! open, and fails an open while another holds it. A field worker runs `sync --watch` and other
//! commands beside it; an app may sync from a background process. So a store is held only while
//! it is used ([`crate::store::DeviceStore::release`] lets go between uses), and an open that
//! finds the store held waits for it, up to `DEVICE_STORE_BUSY_WAIT_MS`, then says the store is
//! busy ([`Error::Busy`]) instead of sled's raw I/O error.
//!
//! The probe takes and drops the same lock sled takes (fs2, as sled does), so it sees a holder in
//! this process as well as in another.

use crate::error::Error;
use fs2::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// How often a waiting open looks again.
const POLL: Duration = Duration::from_millis(20);

/// Whether a process (this one included) holds the store in `dir` open right now.
pub(crate) fn held(dir: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("db"))
    else {
        return false; // no store yet, or not ours to open: sled's open reports it
    };
    match file.try_lock_exclusive() {
        Ok(()) => {
            let _ = FileExt::unlock(&file);
            false
        }
        Err(_) => true,
    }
}

/// Waits until no process holds the store in `dir`, or `deadline` passes ([`Error::Busy`],
/// saying how long it waited since `since`).
pub(crate) fn wait_until(dir: &Path, since: Instant, deadline: Instant) -> Result<(), Error> {
    while held(dir) {
        if Instant::now() >= deadline {
            return Err(Error::Busy {
                waited_ms: since.elapsed().as_millis() as u64,
            });
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// Waits up to `wait` for the store in `dir` to be free; [`Error::Busy`] if it is still held.
/// A host that lets its user choose how long to wait calls this before opening (the open
/// itself waits `DEVICE_STORE_BUSY_WAIT_MS` more at most).
pub fn wait_free(dir: &Path, wait: Duration) -> Result<(), Error> {
    let now = Instant::now();
    wait_until(dir, now, now + wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_held_by_this_process_is_seen_and_waited_for_within_the_bound() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        assert!(!held(&dir), "no store is not a held store");
        let db = sled::open(&dir).unwrap();
        assert!(held(&dir));
        let err = wait_free(&dir, Duration::from_millis(50)).unwrap_err();
        assert!(matches!(err, Error::Busy { .. }), "{err}");
        drop(db);
        wait_free(&dir, Duration::from_secs(30)).expect("let go once dropped");
    }
}
