//! Room on the device's disk: a full disk refuses edits cleanly and still lets everything be read.
//!
//! sled cannot be trusted to meet a full disk: it writes as it opens (it zeroes the rest of its
//! last log segment) and as it closes, so on a full disk a store cannot even be opened to be read,
//! and once one of its writes has failed it refuses every later one and hangs when it is closed.
//! So sled must never run out of room. Two rules keep it so:
//!
//! - **Headroom.** A commit goes ahead only if the disk keeps at least
//!   `limits::DEVICE_DISK_HEADROOM_BYTES` free beyond twice what it writes; otherwise it is
//!   refused with [`Error::DiskFull`] before sled sees it, and nothing is written.
//! - **Reserve.** Each store keeps a file of `limits::DEVICE_DISK_HEADROOM_BYTES` in its
//!   directory. When the disk has less than the headroom free as a store opens (something else
//!   filled it), the reserve is given up, so that sled has room to open, read and close. It is
//!   made again when there is room for it and the headroom both.
//!
//! Free space comes from `statvfs` (rustix). Where it cannot be read, nothing is refused.

use crate::error::Error;
use casenote_protocol::limits::DEVICE_DISK_HEADROOM_BYTES;
use std::path::Path;

/// The reserve's file name, inside the store's directory (sled ignores files it does not know).
pub(crate) const RESERVE: &str = "casenote.reserve";

/// Bytes free for an unprivileged writer on the filesystem holding `dir` (or its nearest existing
/// ancestor); `None` where it cannot be told.
pub(crate) fn free_bytes(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    statvfs_free(existing)
}

#[cfg(unix)]
fn statvfs_free(path: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

#[cfg(not(unix))]
fn statvfs_free(_: &Path) -> Option<u64> {
    None
}

/// Before sled opens the store in `dir`: gives up the reserve if the disk has less than the
/// headroom free, so that the open (and the reads after it) have room.
pub(crate) fn before_open(dir: &Path) {
    if free_bytes(dir).is_some_and(|free| free < DEVICE_DISK_HEADROOM_BYTES as u64)
        && std::fs::remove_file(dir.join(RESERVE)).is_ok()
    {
        tracing::warn!("the disk is full: the store's reserve is given up so that it can be read");
    }
}

/// After sled opened the store in `dir`: makes the reserve if it is missing and the disk has room
/// for it and the headroom both. Best effort: a store works without it.
pub(crate) fn keep_reserve(dir: &Path) {
    let path = dir.join(RESERVE);
    let want = DEVICE_DISK_HEADROOM_BYTES;
    if std::fs::metadata(&path).is_ok_and(|m| m.len() >= want as u64) {
        return;
    }
    if free_bytes(dir).is_some_and(|free| free < 2 * want as u64) {
        return;
    }
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&path)?;
        // Written, not sized: a sparse file would hold no room.
        let block = [0u8; 64 * 1024];
        for _ in 0..want.div_ceil(block.len()) {
            f.write_all(&block)?;
        }
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&path);
        tracing::warn!(error = %e, "no room for the store's disk reserve");
    }
}

/// Whether a commit of about `bytes` may go ahead on the disk holding `dir`.
pub(crate) fn check_room(dir: &Path, bytes: usize) -> Result<(), Error> {
    let need = (DEVICE_DISK_HEADROOM_BYTES as u64).saturating_add(2 * bytes as u64);
    match free_bytes(dir) {
        Some(free) if free < need => Err(Error::DiskFull),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn free_space_is_read_for_a_directory_not_made_yet() {
        let tmp = tempfile::tempdir().unwrap();
        let free = free_bytes(&tmp.path().join("not").join("yet")).expect("statvfs works here");
        assert!(free > 0);
        assert!(check_room(tmp.path(), 0).is_ok() || free < DEVICE_DISK_HEADROOM_BYTES as u64);
        assert!(matches!(
            check_room(tmp.path(), usize::MAX / 4),
            Err(Error::DiskFull)
        ));
    }
}
