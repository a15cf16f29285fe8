//! What an Automerge chunk a peer sent would cost to parse, read before automerge parses it.
//!
//! automerge's binary format stores a change's (or a document's) operations as columns, each
//! run-length or delta encoded, some deflated. A run names its length, so a 119-byte change can
//! hold a million operations (measured: `Change::from_bytes` took 121 ms over it, visiting each),
//! and a run of 2^40 would hold a server thread for hours before any limit on operations could
//! be applied. A deflated column or change can likewise grow a thousandfold. So every chunk a
//! device or a web client sends is first walked here, over its encoded bytes only: each column's
//! rows are summed from its runs' lengths (stopping at `rows_max`), and deflated data is inflated
//! into a bounded buffer (at most `inflated_max` bytes). automerge is handed only chunks whose
//! every column is within bounds, and the callers weigh the operations against their limits.
//!
//! The layout (automerge's binary format, as `vendor/automerge/src/storage` reads it): magic,
//! checksum, chunk type, data length (uLEB), data. A change's data: dependencies, actor, sequence
//! number, first op, time, message, other actors, then its op columns (a count, then each
//! column's spec and length, then the columns' data) and extra bytes. A compressed change's data
//! is a deflated change's data. A document's data: actors, heads, change columns, op columns
//! (their specs and lengths), then the change and op columns' data. A column spec is its id
//! (above bit 4), a deflated flag (bit 3) and its type (bits 0-2), which says how it is encoded.
//! Bundles (an experimental format) are not read: [`ChunkError::Kind`].

use std::io::Read;

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const HASH_BYTES: usize = 32;
/// The op column that holds each operation's action (id 4, unsigned): one row per operation.
const ACTION_COLUMN: u64 = 0x42;
/// The change column that holds each change's actor (id 0, actor): one row per change.
const ACTOR_COLUMN: u64 = 0x01;

/// A chunk's type byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Document,
    Change,
    CompressedChange,
}

/// What a chunk holds, as its header and columns say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bound {
    pub kind: Kind,
    /// Changes (1 for a change chunk; the rows of a document's change columns).
    pub changes: u64,
    /// Operations: the rows of the action column.
    pub ops: u64,
    /// Actors a document lists (a change names its own and its other actors).
    pub actors: u64,
    /// Bytes its deflated data inflated to.
    pub inflated: usize,
    /// A change's actor when the change is its first (sequence number 1): an actor it brings
    /// into any document that takes it.
    pub first_of: Option<Vec<u8>>,
}

/// Why a chunk is not handed to automerge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("not an Automerge chunk")]
    Malformed,
    #[error("a chunk of a kind that is not taken")]
    Kind,
    #[error("a column with more rows than allowed")]
    Rows,
    #[error("a deflated column or change that inflates past the limit")]
    Inflates,
}

/// Limits of one walk.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most rows any one column may have.
    pub rows_max: u64,
    /// Most bytes all of the chunk's deflated data may inflate to.
    pub inflated_max: usize,
}

/// The bound of the first chunk of `bytes`, and the bytes after it.
pub fn bound(bytes: &[u8], limits: Limits) -> Result<(Bound, &[u8]), ChunkError> {
    let mut r = Reader(bytes);
    if r.take(4)? != MAGIC {
        return Err(ChunkError::Malformed);
    }
    r.take(4)?; // checksum
    let kind = r.byte()?;
    let len = r.len()?;
    let data = r.take(len)?;
    let mut budget = limits.inflated_max;
    let mut bound = match kind {
        0 => document(data, limits.rows_max, &mut budget)?,
        1 => change(data, limits.rows_max, Kind::Change)?,
        2 => {
            let inflated = inflate(data, &mut budget)?;
            change(&inflated, limits.rows_max, Kind::CompressedChange)?
        }
        _ => return Err(ChunkError::Kind),
    };
    bound.inflated = limits.inflated_max - budget;
    Ok((bound, r.0))
}

/// The bound of a change chunk's data.
fn change(data: &[u8], rows_max: u64, kind: Kind) -> Result<Bound, ChunkError> {
    let mut r = Reader(data);
    let deps = r.len()?;
    r.take(deps.checked_mul(HASH_BYTES).ok_or(ChunkError::Malformed)?)?;
    let actor = r.actor()?;
    let seq = r.uleb()?;
    r.uleb()?; // first op
    r.sleb()?; // time
    let message = r.len()?;
    r.take(message)?;
    let others = r.len()?;
    for _ in 0..others {
        r.actor()?;
    }
    let columns = r.columns()?;
    let ops = count_columns(&mut r, &columns, ACTION_COLUMN, rows_max, &mut 0)?;
    Ok(Bound {
        kind,
        changes: 1,
        ops,
        actors: others as u64 + 1,
        inflated: 0,
        first_of: (seq == 1).then(|| actor.to_vec()),
    })
}

/// The bound of a document chunk's data.
fn document(data: &[u8], rows_max: u64, budget: &mut usize) -> Result<Bound, ChunkError> {
    let mut r = Reader(data);
    let actors = r.len()?;
    for _ in 0..actors {
        r.actor()?;
    }
    let heads = r.len()?;
    r.take(heads.checked_mul(HASH_BYTES).ok_or(ChunkError::Malformed)?)?;
    let change_columns = r.columns()?;
    let op_columns = r.columns()?;
    let changes = count_columns(&mut r, &change_columns, ACTOR_COLUMN, rows_max, budget)?;
    let ops = count_columns(&mut r, &op_columns, ACTION_COLUMN, rows_max, budget)?;
    Ok(Bound {
        kind: Kind::Document,
        changes,
        ops,
        actors: actors as u64,
        inflated: 0,
        first_of: None,
    })
}

/// One column's spec and length.
struct Column {
    spec: u64,
    len: usize,
}

/// Walks the data of `columns` in turn, every column within `rows_max`: the rows of the column
/// `key` (its spec, deflated or not), or without one the most rows of any. (Grouped columns,
/// such as each op's predecessors, have a row per item, not per op.)
fn count_columns(
    r: &mut Reader<'_>,
    columns: &[Column],
    key: u64,
    rows_max: u64,
    budget: &mut usize,
) -> Result<u64, ChunkError> {
    let (mut keyed, mut most) = (None, 0);
    for c in columns {
        let rows = column_rows(r.take(c.len)?, c.spec, rows_max, budget)?;
        if c.spec & !0b1000 == key {
            keyed = Some(rows);
        }
        most = most.max(rows);
    }
    Ok(keyed.unwrap_or(most))
}

/// The rows of one column's data, inflating it first when its spec says it is deflated.
fn column_rows(
    data: &[u8],
    spec: u64,
    rows_max: u64,
    budget: &mut usize,
) -> Result<u64, ChunkError> {
    if spec & 0b1000 != 0 {
        let inflated = inflate(data, budget)?;
        return rows(&inflated, spec & 0b111, rows_max);
    }
    rows(data, spec & 0b111, rows_max)
}

/// The rows of a column of `encoding` (the spec's type): run lengths summed, never past
/// `rows_max`.
fn rows(data: &[u8], encoding: u64, rows_max: u64) -> Result<u64, ChunkError> {
    let mut r = Reader(data);
    let mut rows = 0u64;
    let mut add = |n: u64| {
        rows = rows
            .checked_add(n)
            .filter(|&t| t <= rows_max)
            .ok_or(ChunkError::Rows)?;
        Ok::<_, ChunkError>(())
    };
    match encoding {
        // Raw values: no rows of their own (their lengths are the metadata column's).
        7 => {}
        // Boolean: run lengths, alternately false and true.
        4 => {
            while !r.0.is_empty() {
                add(r.uleb()?)?;
            }
        }
        // Run-length encoded values: a positive count repeats one value, a negative one is
        // followed by that many values, zero by a count of nulls.
        _ => {
            while !r.0.is_empty() {
                let count = r.sleb()?;
                if count > 0 {
                    add(count as u64)?;
                    r.value(encoding)?;
                } else if count < 0 {
                    let n = count.unsigned_abs();
                    add(n)?;
                    for _ in 0..n {
                        r.value(encoding)?;
                    }
                } else {
                    add(r.uleb()?)?;
                }
            }
        }
    }
    Ok(rows)
}

/// Inflates `data`, taking what it inflates to from `budget`.
fn inflate(data: &[u8], budget: &mut usize) -> Result<Vec<u8>, ChunkError> {
    let mut out = Vec::new();
    let cap = u64::try_from(*budget).unwrap_or(u64::MAX).saturating_add(1);
    flate2::bufread::DeflateDecoder::new(data)
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|_| ChunkError::Malformed)?;
    *budget = budget.checked_sub(out.len()).ok_or(ChunkError::Inflates)?;
    Ok(out)
}

/// A cursor over encoded bytes; every read checks what is left.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ChunkError> {
        if n > self.0.len() {
            return Err(ChunkError::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, ChunkError> {
        Ok(self.take(1)?[0])
    }

    /// A LEB128 number's bits, the bits it used and its last byte (which carries the sign).
    fn leb(&mut self) -> Result<(u64, u32, u8), ChunkError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok((value, shift + 7, b));
            }
        }
        Err(ChunkError::Malformed)
    }

    fn uleb(&mut self) -> Result<u64, ChunkError> {
        Ok(self.leb()?.0)
    }

    fn sleb(&mut self) -> Result<i64, ChunkError> {
        let (bits, used, last) = self.leb()?;
        let value = bits as i64;
        Ok(if last & 0x40 != 0 && used < 64 {
            value | (-1i64 << used)
        } else {
            value
        })
    }

    /// A length: a uLEB that fits what is left (each counted item takes at least a byte).
    fn len(&mut self) -> Result<usize, ChunkError> {
        let n = self.uleb()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.0.len())
            .ok_or(ChunkError::Malformed)
    }

    fn actor(&mut self) -> Result<&'a [u8], ChunkError> {
        let len = self.len()?;
        self.take(len)
    }

    /// One value of a run-length encoded column: a string (length and bytes) or a LEB number.
    fn value(&mut self, encoding: u64) -> Result<(), ChunkError> {
        if encoding == 5 {
            let len = self.len()?;
            return self.take(len).map(|_| ());
        }
        self.uleb().map(|_| ())
    }

    /// Column metadata: a count, then each column's spec and data length.
    fn columns(&mut self) -> Result<Vec<Column>, ChunkError> {
        let count = self.len()?;
        (0..count)
            .map(|_| {
                let spec = self.uleb()?;
                let len = usize::try_from(self.uleb()?).map_err(|_| ChunkError::Malformed)?;
                Ok(Column { spec, len })
            })
            .collect()
    }
}

/// Chunks built byte by byte, for the tests of what reads them (here and end to end).
pub mod testing {
    use sha2::{Digest, Sha256};

    /// A change chunk of `ops` list inserts held in one run per column (a second change of its
    /// actor, after `dep`): what automerge writes for a splice of `ops` nulls, at any size. It
    /// parses: `Change::from_bytes` visits every one of its operations.
    pub fn run_of_inserts(ops: u64, dep: [u8; 32]) -> Vec<u8> {
        assert!(ops >= 3, "the key column's literal run holds two");
        let run = |count: u64, value: u64| [sleb(count as i64), uleb(value)].concat();
        let columns: [(u8, Vec<u8>); 8] = [
            (0x01, run(ops, 0)),                                            // object actor
            (0x02, run(ops, 1)),                                            // object counter
            (0x11, [vec![0], uleb(1), run(ops - 1, 0)].concat()),           // key actor
            (0x13, [sleb(-2), uleb(0), uleb(2), run(ops - 2, 1)].concat()), // key counter
            (0x34, [uleb(0), uleb(ops)].concat()),                          // insert
            (0x42, run(ops, 1)),                                            // action
            (0x56, run(ops, 0)),                                            // value metadata
            (0x70, run(ops, 0)),                                            // predecessors
        ];
        let mut data = vec![1];
        data.extend(dep);
        data.extend([16]);
        data.extend([0xca; 16]);
        data.extend([2, 2, 0, 0, 0]); // seq, first op, time, message, other actors
        data.extend(uleb(columns.len() as u64));
        for (spec, bytes) in &columns {
            data.extend(uleb(u64::from(*spec)));
            data.extend(uleb(bytes.len() as u64));
        }
        for (_, bytes) in &columns {
            data.extend(bytes);
        }
        let mut header = vec![1];
        header.extend(uleb(data.len() as u64));
        let hash = Sha256::new()
            .chain_update(&header)
            .chain_update(&data)
            .finalize();
        [&super::MAGIC[..], &hash[..4], &header, &data].concat()
    }

    pub fn uleb(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    pub fn sleb(mut v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if (v == 0 && b & 0x40 == 0) || (v == -1 && b & 0x40 != 0) {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }
}
