//! The acknowledged high-water mark: a small file in the data directory, outside sled, that says
//! what the store had made durable when it last acknowledged anything.
//!
//! Why outside sled: when sled 0.34 recovers, it replays its log up to the first entry that fails
//! its checksum and silently drops everything after it, so a mark kept inside sled would vanish
//! with the rest. This file is written and `fdatasync`ed after every successful flush, before
//! anything that flush covers is acknowledged; on open the store compares it with what sled
//! recovered ([`super::SledStore`]), in O(1).
//!
//! Layout: [`FILE`] holds two slots of [`SLOT_BYTES`] bytes (sector-sized, so a torn write spoils
//! at most one). Writes alternate between them; each slot carries a write counter and a sha256 of
//! its content, and the valid slot with the higher counter is the mark. A slot:
//!
//! ```text
//! 0..8     magic "CNMARK01"
//! 8..16    write counter (u64 big-endian)
//! 16..32   log id (uuid)
//! 32..40   last flushed change-log seq
//! 40..72   the log's hash chain at that seq
//! 72..80   last flushed audit entry's seq
//! 80..112  that entry's hash (raw, the audit log keeps it as hex)
//! 112..120 flush generation: a counter each flush writes into sled before it flushes
//! 120..152 sha256 of bytes 0..120
//! ```

use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The mark's file name in the data directory.
pub const FILE: &str = "acknowledged.mark";
/// Bytes per slot: one disk sector, so that one slot's write never tears the other.
pub const SLOT_BYTES: usize = 512;
const MAGIC: &[u8; 8] = b"CNMARK01";
const BODY: usize = 120;
const USED: usize = BODY + 32;

/// What the store had made durable at its last acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub log_id: uuid::Uuid,
    pub log_seq: u64,
    pub chain: [u8; 32],
    pub audit_seq: u64,
    pub audit_hash: [u8; 32],
    pub flush_gen: u64,
}

/// What [`read`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// No mark file.
    Missing,
    /// A file, but neither slot is valid.
    Unreadable,
    /// The valid slot with the higher counter.
    Valid { mark: Mark, counter: u64 },
}

fn encode(mark: &Mark, counter: u64) -> [u8; SLOT_BYTES] {
    let mut s = [0u8; SLOT_BYTES];
    s[0..8].copy_from_slice(MAGIC);
    s[8..16].copy_from_slice(&counter.to_be_bytes());
    s[16..32].copy_from_slice(mark.log_id.as_bytes());
    s[32..40].copy_from_slice(&mark.log_seq.to_be_bytes());
    s[40..72].copy_from_slice(&mark.chain);
    s[72..80].copy_from_slice(&mark.audit_seq.to_be_bytes());
    s[80..112].copy_from_slice(&mark.audit_hash);
    s[112..120].copy_from_slice(&mark.flush_gen.to_be_bytes());
    let sum = Sha256::digest(&s[..BODY]);
    s[BODY..USED].copy_from_slice(&sum);
    s
}

fn u64_at(s: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&s[at..at + 8]);
    u64::from_be_bytes(b)
}

fn array_at(s: &[u8], at: usize) -> [u8; 32] {
    let mut b = [0u8; 32];
    b.copy_from_slice(&s[at..at + 32]);
    b
}

/// The slot's mark and counter, if the slot is valid.
fn decode(s: &[u8]) -> Option<(Mark, u64)> {
    if s.len() < USED || &s[0..8] != MAGIC || Sha256::digest(&s[..BODY])[..] != s[BODY..USED] {
        return None;
    }
    let mark = Mark {
        log_id: uuid::Uuid::from_slice(&s[16..32]).ok()?,
        log_seq: u64_at(s, 32),
        chain: array_at(s, 40),
        audit_seq: u64_at(s, 72),
        audit_hash: array_at(s, 80),
        flush_gen: u64_at(s, 112),
    };
    Some((mark, u64_at(s, 8)))
}

/// Reads the mark in `dir`.
pub fn read(dir: &Path) -> io::Result<Found> {
    let bytes = match std::fs::read(dir.join(FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) => return Err(e),
    };
    let best = bytes
        .chunks(SLOT_BYTES)
        .take(2)
        .filter_map(decode)
        .max_by_key(|(_, counter)| *counter);
    Ok(match best {
        Some((mark, counter)) => Found::Valid { mark, counter },
        None => Found::Unreadable,
    })
}

/// Writes the mark, alternating slots, each write made durable before it returns.
pub struct Writer {
    file: File,
    counter: u64,
}

impl Writer {
    /// Replaces the file in `dir` with one holding `mark` in both slots: written to a temporary
    /// file, synced, renamed over, and the directory synced, so a crash leaves the old file or
    /// the new one.
    pub fn create(dir: &Path, mark: &Mark) -> io::Result<Writer> {
        let tmp = dir.join(format!("{FILE}.tmp"));
        let mut bytes = Vec::with_capacity(2 * SLOT_BYTES);
        // The write numbered n goes to slot n % 2.
        bytes.extend_from_slice(&encode(mark, 0));
        bytes.extend_from_slice(&encode(mark, 1));
        std::fs::write(&tmp, &bytes)?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dir.join(FILE))?;
        File::open(dir)?.sync_all()?;
        Self::open(dir, 1)
    }

    /// Opens the file in `dir` to write marks after the one numbered `counter`.
    pub fn open(dir: &Path, counter: u64) -> io::Result<Writer> {
        let file = OpenOptions::new().write(true).open(dir.join(FILE))?;
        Ok(Writer { file, counter })
    }

    /// Writes `mark` over the older slot and waits until it is on disk (`fdatasync`: the file's
    /// size never changes, so its data is all there is to sync).
    pub fn write(&mut self, mark: &Mark) -> io::Result<()> {
        let counter = self.counter + 1;
        let slot = (counter % 2) as usize;
        self.file
            .write_all_at(&encode(mark, counter), (slot * SLOT_BYTES) as u64)?;
        self.file.sync_data()?;
        self.counter = counter;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(n: u64) -> Mark {
        Mark {
            log_id: uuid::Uuid::from_u128(7),
            log_seq: n,
            chain: [n as u8; 32],
            audit_seq: n * 2,
            audit_hash: [3; 32],
            flush_gen: n * 3,
        }
    }

    #[test]
    fn the_latest_mark_is_read_back_and_a_torn_slot_leaves_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), Found::Missing);
        let mut w = Writer::create(dir.path(), &mark(1)).unwrap();
        for n in 2..=5 {
            w.write(&mark(n)).unwrap();
        }
        let Found::Valid { mark: m, counter } = read(dir.path()).unwrap() else {
            panic!("no valid mark");
        };
        assert_eq!((m, counter), (mark(5), 5));
        // A write torn half way: slot (5 % 2) holds the newest; spoil a byte of it.
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT_BYTES + 40] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let Found::Valid { mark: m, .. } = read(dir.path()).unwrap() else {
            panic!("the other slot should still be valid");
        };
        assert_eq!(m, mark(4));
        bytes[40] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Found::Unreadable);
    }
}
