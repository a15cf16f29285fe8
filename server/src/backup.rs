//! Backups: a consistent copy of a live store as one file (`admin backup --out FILE`, over the
//! admin API while devices sync, or of a stopped store), and `restore` from one into an empty
//! store. Why here and not in `store/`: a backup is audited (who took it), and a restore verifies
//! the audit chain and gives the store a new log id, which are the domain's rules.
//!
//! The file is a self-describing stream, read and written in bounded memory:
//!
//! ```text
//! MAGIC ("casenote-backup\n")
//! frame*        u32 big-endian length, then one CBOR `Frame`:
//!               Header (format, source log id, the cut, the time), the Items of
//!               `store::copy` in its order, End (what the backup holds, counted)
//! trailer       SHA-256 of every byte before it
//! ```
//!
//! A restore reads the whole file once to check it (every frame decodes, the trailer's hash
//! matches, nothing follows it) before it writes anything, so a truncated or damaged backup is
//! refused, never restored in part; then it reads it again into the store.
//!
//! The cut ([`begin`]): the store is flushed, the log's durable sequence N taken, and the
//! backup's own audit entry appended and flushed; its sequence is the audit chain's cut. The
//! traversal (`store::copy`, whose docs say what a cut taken under writes guarantees) then copies
//! the log up to N and the chain up to that entry. Changes acknowledged after N are not in the
//! backup: the devices that pushed them still hold them, and after a restore (which gives the
//! store a new log id) each device resets at its next sync and re-sends what the server lacks.

use crate::audit;
use crate::model::{AuditKind, AuditRecord, By};
use crate::store::copy::{self, Batcher, Copied, CopyError, Cut, Item, Sink, StoreSink};
use crate::store::{self, Store, StoreError};
use casenote_protocol::limits;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 16] = b"casenote-backup\n";
/// The format this code writes and reads.
pub const FORMAT: u32 = 1;

/// What a backup says of itself, first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    /// The log id of the store it was taken from.
    pub log_id: uuid::Uuid,
    pub cut: Cut,
    pub taken_at_ms: i64,
}

/// One frame of the file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Frame {
    Header(Header),
    // Boxed: an item (a document's header with its grants) is much larger than the others;
    // serde writes a box as what it holds, so the file format is unchanged.
    Item(Box<Item>),
    End(Copied),
}

/// What a backup holds: its header and its counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub header: Header,
    pub copied: Copied,
}

/// Why a backup or a restore stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("this is not a casenote backup (its first bytes are wrong)")]
    NotABackup,
    #[error("the backup is format {0}, which this version cannot read (it reads format {FORMAT})")]
    Format(u32),
    #[error("the backup is truncated (it ends before its trailer): it was cut short while it was written or copied; use another backup")]
    Truncated,
    #[error("the backup is damaged: {0}; use another backup")]
    Damaged(String),
    #[error("the target store is not empty; restore into a new, empty store (a new --data directory or an empty database)")]
    TargetNotEmpty,
    #[error("the restored store does not verify: {0}; remove it and restore from another backup")]
    Restored(String),
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Takes the cut of a live store: flushes it, reads its durable sequence, and appends the
/// backup's audit entry (who took it, and the cut), flushed. Cheap: the traversal is [`write`].
pub fn begin(store: &dyn Store, by: By, now_ms: i64) -> Result<Header, BackupError> {
    store.flush()?;
    let upto = store.durable_seq()?;
    let entry = store::write(store, |t| {
        let details = json!({"action": "backup", "upto_seq": upto.0, "log_id": t.log_id()?});
        t.audit_append(AuditRecord::new(AuditKind::Admin, now_ms, details).by(by))
    })?;
    store.flush()?;
    let log_id = store::read(store, |t| t.log_id())?;
    Ok(Header {
        format: FORMAT,
        log_id,
        cut: Cut {
            upto,
            audit_upto: entry.seq,
        },
        taken_at_ms: now_ms,
    })
}

/// Writes the backup begun with `header` to `out`: the traversal up to its cut, then the trailer.
pub fn write(
    store: &dyn Store,
    header: Header,
    out: &mut dyn Write,
) -> Result<Summary, BackupError> {
    let mut w = Writer {
        out,
        hash: Sha256::new(),
        copied: Copied::default(),
    };
    w.raw(MAGIC)?;
    w.frame(&Frame::Header(header.clone()))?;
    copy::traverse(store, header.cut, &mut w)?;
    let copied = w.copied.clone();
    w.frame(&Frame::End(copied.clone()))?;
    let digest = w.hash.clone().finalize();
    w.out.write_all(&digest)?;
    w.out.flush()?;
    Ok(Summary { header, copied })
}

/// The backup writer: frames, each hashed into the trailer.
struct Writer<'w> {
    out: &'w mut dyn Write,
    hash: Sha256,
    copied: Copied,
}

impl Writer<'_> {
    fn raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hash.update(bytes);
        self.out.write_all(bytes)
    }

    fn frame(&mut self, frame: &Frame) -> Result<(), BackupError> {
        let mut body = Vec::new();
        ciborium::into_writer(frame, &mut body)
            .map_err(|e| StoreError::Task(format!("a record could not be encoded: {e}")))?;
        if body.len() > limits::BACKUP_FRAME_BYTES_MAX {
            // Never write what a restore would refuse.
            return Err(StoreError::Corrupt(format!(
                "a record of {} bytes is larger than a backup frame may be",
                body.len()
            ))
            .into());
        }
        self.raw(&(body.len() as u32).to_be_bytes())?;
        self.raw(&body)?;
        Ok(())
    }
}

impl Sink for Writer<'_> {
    fn put(&mut self, batch: Vec<Item>) -> Result<(), CopyError> {
        for item in batch {
            self.copied.count(&item);
            let frame = Frame::Item(Box::new(item));
            self.frame(&frame).map_err(|e| match e {
                BackupError::Copy(c) => c,
                BackupError::Store(s) => CopyError::Store(s),
                other => CopyError::Sink(other.to_string()),
            })?;
        }
        Ok(())
    }
}

/// Reads a backup frame by frame, hashing as it goes; the trailer is checked at the end.
pub struct Reader<R: Read> {
    input: R,
    hash: Sha256,
    ended: bool,
}

impl<R: Read> Reader<R> {
    /// Checks the magic and reads the header.
    pub fn open(input: R) -> Result<(Self, Header), BackupError> {
        let mut r = Reader {
            input,
            hash: Sha256::new(),
            ended: false,
        };
        let mut magic = [0u8; 16];
        r.exact(&mut magic).map_err(|e| match e {
            BackupError::Truncated => BackupError::NotABackup,
            other => other,
        })?;
        if &magic != MAGIC {
            return Err(BackupError::NotABackup);
        }
        match r.frame()? {
            Frame::Header(h) if h.format == FORMAT => Ok((r, h)),
            Frame::Header(h) => Err(BackupError::Format(h.format)),
            _ => Err(BackupError::Damaged(
                "it does not start with its header".into(),
            )),
        }
    }

    /// The next item; at the end, the counts the backup says it holds, once its trailer was
    /// found to match and nothing to follow it.
    pub fn read_item(&mut self) -> Result<Result<Item, Copied>, BackupError> {
        if self.ended {
            return Err(BackupError::Damaged("read past its end".into()));
        }
        match self.frame()? {
            Frame::Item(item) => Ok(Ok(*item)),
            Frame::End(copied) => {
                self.ended = true;
                self.trailer()?;
                Ok(Err(copied))
            }
            Frame::Header(_) => Err(BackupError::Damaged("a second header".into())),
        }
    }

    fn frame(&mut self) -> Result<Frame, BackupError> {
        let mut len = [0u8; 4];
        self.exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > limits::BACKUP_FRAME_BYTES_MAX {
            return Err(BackupError::Damaged(format!(
                "a frame claims {len} bytes, more than any backup writes"
            )));
        }
        let mut body = vec![0u8; len];
        self.exact(&mut body)?;
        ciborium::from_reader(body.as_slice())
            .map_err(|e| BackupError::Damaged(format!("a record does not decode ({e})")))
    }

    fn trailer(&mut self) -> Result<(), BackupError> {
        let want = self.hash.clone().finalize();
        let mut got = [0u8; 32];
        self.input.read_exact(&mut got).map_err(eof_is_truncation)?;
        if got[..] != want[..] {
            return Err(BackupError::Damaged(
                "its SHA-256 does not match its trailer".into(),
            ));
        }
        let mut more = [0u8; 1];
        if self.input.read(&mut more)? != 0 {
            return Err(BackupError::Damaged("bytes follow its trailer".into()));
        }
        Ok(())
    }

    fn exact(&mut self, buf: &mut [u8]) -> Result<(), BackupError> {
        self.input.read_exact(buf).map_err(eof_is_truncation)?;
        self.hash.update(&*buf);
        Ok(())
    }
}

fn eof_is_truncation(e: std::io::Error) -> BackupError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => BackupError::Truncated,
        _ => BackupError::Io(e),
    }
}

/// Reads the whole backup from `input` and checks it: every frame decodes, the counts match
/// what it holds, the trailer matches. Writes nothing anywhere.
pub fn check(input: impl Read) -> Result<Summary, BackupError> {
    let (mut r, header) = Reader::open(input)?;
    let mut seen = Copied::default();
    loop {
        match r.read_item()? {
            Ok(item) => seen.count(&item),
            Err(copied) => return summary(header, seen, copied),
        }
    }
}

fn summary(header: Header, seen: Copied, said: Copied) -> Result<Summary, BackupError> {
    if seen != said {
        return Err(BackupError::Damaged(
            "it holds other records than its end says".into(),
        ));
    }
    Ok(Summary {
        header,
        copied: said,
    })
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    pub summary: Summary,
    /// The restored store's new log id.
    pub log_id: uuid::Uuid,
}

/// Restores the backup at `path` into the empty store `to`: checks the whole file first, then
/// copies it in, verifies the audit chain, gives the store a new log id (so every device resets
/// at its next sync and re-sends what the backup lacks) and audits the restore; flushed.
pub fn restore(
    path: &std::path::Path,
    to: &dyn Store,
    by: By,
    now_ms: i64,
) -> Result<Restored, BackupError> {
    if !copy::is_empty(to)? {
        return Err(BackupError::TargetNotEmpty);
    }
    let checked = check(std::io::BufReader::new(std::fs::File::open(path)?))?;
    let (mut r, header) = Reader::open(std::io::BufReader::new(std::fs::File::open(path)?))?;
    let mut sink = StoreSink::new(to);
    let mut batch = Batcher::new(&mut sink);
    let said = loop {
        match r.read_item()? {
            Ok(item) => batch.push(item)?,
            Err(copied) => break copied,
        }
    };
    batch.finish()?;
    let summary = summary(header, sink.copied.clone(), said)?;
    if summary != checked {
        return Err(BackupError::Damaged("it changed while it was read".into()));
    }
    audit::verify(to).map_err(|e| BackupError::Restored(e.to_string()))?;
    let log_id = renew(to, &summary.header, by, now_ms)?;
    to.flush()?;
    Ok(Restored { summary, log_id })
}

/// Gives the restored store a new log id, audited with what it was restored from.
fn renew(to: &dyn Store, header: &Header, by: By, now_ms: i64) -> Result<uuid::Uuid, StoreError> {
    let new = uuid::Uuid::new_v4();
    store::write(to, |t| {
        t.set_log_id(new)?;
        let details = json!({
            "action": "restored_from_backup",
            "backup_log_id": header.log_id,
            "backup_upto_seq": header.cut.upto.0,
            "backup_taken_at_ms": header.taken_at_ms,
            "log_id": new,
        });
        t.audit_append(AuditRecord::new(AuditKind::Admin, now_ms, details).by(by))?;
        Ok(new)
    })
}
