//! How many actors an Automerge sync message can bring into a document, read from its chunks'
//! headers before automerge loads any of them.
//!
//! What a document costs automerge grows with its changes times its actors
//! (`limits::DOC_ACTORS_MAX`), and a sync message of `limits::REPO_MESSAGE_BYTES_MAX` can name
//! some 160,000 actors (25 bytes a change): loading it would take gigabytes before any rule
//! could refuse it. So the session bounds the actors first, from the binary format's headers
//! (magic, checksum, chunk type, data length): a change chunk names one actor, new to the
//! document exactly when its sequence number is 1 (read with `Change::from_bytes`, which
//! also inflates a compressed change); a document or bundle chunk lists its actors first (a
//! bundle after its dependencies). Listed actors may be ones the document holds already, so
//! they are bounded on their own ([`Brought::fits`]); what the document holds after taking the
//! message is checked again exactly.

use automerge::sync::Message;
use std::collections::HashSet;

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const DOCUMENT: u8 = 0;
const CHANGE: u8 = 1;
const COMPRESSED: u8 = 2;
const BUNDLE: u8 = 3;
const HASH_BYTES: u64 = 32;

/// The actors a message names: those listed by its document and bundle chunks (which may
/// include some the receiving document holds), and the first changes' actors (new to any
/// document that takes them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Brought {
    pub listed: u64,
    pub first: u64,
}

impl Brought {
    /// Whether a document holding `held` actors may take the message: at most
    /// `limits::DOC_ACTORS_MAX` after its first changes, and no chunk list longer than that
    /// (the receiving side checks what it holds afterwards exactly).
    pub(super) fn fits(self, held: u64) -> bool {
        let max = casenote_protocol::limits::DOC_ACTORS_MAX;
        held.saturating_add(self.first) <= max && self.listed.saturating_add(self.first) <= max
    }
}

/// The actors `msg` names, or `None` for bytes that are not a sequence of whole chunks.
pub(super) fn actors_brought(msg: &Message) -> Option<Brought> {
    let mut listed = 0u64;
    let mut first_changes = HashSet::new();
    for item in msg.changes.iter() {
        let mut rest = item;
        while !rest.is_empty() {
            let Split {
                kind,
                data,
                chunk,
                rest: after,
            } = split_chunk(rest)?;
            match kind {
                CHANGE | COMPRESSED => {
                    let change = automerge::Change::from_bytes(chunk.to_vec()).ok()?;
                    if change.seq() == 1 {
                        first_changes.insert(change.actor_id().clone());
                    }
                }
                DOCUMENT => listed = listed.saturating_add(uleb(data)?.0),
                BUNDLE => listed = listed.saturating_add(bundle_actors(data)?),
                _ => return None,
            }
            rest = after;
        }
    }
    Some(Brought {
        listed,
        first: first_changes.len() as u64,
    })
}

/// One chunk of a sequence: its type, its data, the whole chunk, and what follows it.
struct Split<'a> {
    kind: u8,
    data: &'a [u8],
    chunk: &'a [u8],
    rest: &'a [u8],
}

/// The first chunk of `bytes`.
fn split_chunk(bytes: &[u8]) -> Option<Split<'_>> {
    if bytes.get(..4)? != MAGIC {
        return None;
    }
    let kind = *bytes.get(8)?;
    let (len, used) = uleb(bytes.get(9..)?)?;
    let start = 9 + used;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    Some(Split {
        kind,
        data: bytes.get(start..end)?,
        chunk: &bytes[..end],
        rest: &bytes[end..],
    })
}

/// A bundle's actor count: it follows the bundle's dependencies (a count and their hashes).
fn bundle_actors(data: &[u8]) -> Option<u64> {
    let (deps, used) = uleb(data)?;
    let skip = usize::try_from(deps.checked_mul(HASH_BYTES)?).ok()?;
    let at = used.checked_add(skip)?;
    Some(uleb(data.get(at..)?)?.0)
}

/// An unsigned LEB128 number at the start of `bytes`, and how many bytes it took.
fn uleb(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{ActorId, AutoCommit, ROOT};

    /// A document whose `actors` actors wrote one change each.
    fn doc_by(actors: usize) -> AutoCommit {
        let mut doc = AutoCommit::new();
        for i in 0..actors {
            doc.set_actor(ActorId::random());
            doc.put(ROOT, "x", i as i64).unwrap();
            doc.commit();
        }
        doc
    }

    /// A sync message carrying `chunks`, as automerge parses one from the wire.
    fn carrying(chunks: Vec<Vec<u8>>) -> Message {
        Message {
            heads: Vec::new(),
            need: Vec::new(),
            have: Vec::new(),
            changes: chunks.into(),
            flags: None,
            version: automerge::sync::MessageVersion::V1,
        }
    }

    fn changes_of(doc: &mut AutoCommit, since: &[automerge::ChangeHash]) -> Vec<Vec<u8>> {
        doc.get_changes(since)
            .iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect()
    }

    #[test]
    fn counts_new_actors_in_change_document_and_bundle_chunks() {
        for actors in [1, 3, 40] {
            let mut doc = doc_by(actors);
            let n = actors as u64;
            let first = Some(Brought {
                listed: 0,
                first: n,
            });
            let listed = Some(Brought {
                listed: n,
                first: 0,
            });
            assert_eq!(actors_brought(&carrying(changes_of(&mut doc, &[]))), first);
            assert_eq!(
                actors_brought(&carrying(vec![doc.save()])),
                listed,
                "document"
            );
            let hashes = doc
                .get_changes(&[])
                .iter()
                .map(|c| c.hash())
                .collect::<Vec<_>>();
            let bundle = doc.bundle(hashes).unwrap().bytes().to_vec();
            assert_eq!(actors_brought(&carrying(vec![bundle])), listed, "bundle");
            // Chunks may also come concatenated in one item.
            let mut joined = doc.save();
            joined.extend(changes_of(&mut doc, &[]).concat());
            let both = Some(Brought {
                listed: n,
                first: n,
            });
            assert_eq!(actors_brought(&carrying(vec![joined])), both);
        }
        // Later changes of an actor bring none.
        let mut doc = doc_by(2);
        let heads = doc.get_heads();
        doc.put(ROOT, "y", 1).unwrap();
        doc.commit();
        let none = Some(Brought {
            listed: 0,
            first: 0,
        });
        assert_eq!(
            actors_brought(&carrying(changes_of(&mut doc, &heads))),
            none
        );
    }

    #[test]
    fn a_document_takes_first_changes_up_to_the_limit_and_lists_no_longer_than_it() {
        let max = casenote_protocol::limits::DOC_ACTORS_MAX;
        let first = |first| Brought { listed: 0, first };
        let listed = |listed| Brought { listed, first: 0 };
        assert!(first(max).fits(0));
        assert!(!first(max + 1).fits(0));
        assert!(first(1).fits(max - 1));
        assert!(!first(1).fits(max));
        // A whole document re-sent lists the actors the receiver holds: not added to them.
        assert!(listed(max).fits(max));
        assert!(!listed(max + 1).fits(0));
        assert!(!Brought {
            listed: max,
            first: 1
        }
        .fits(0));
    }

    #[test]
    fn bytes_that_are_not_whole_chunks_count_as_unreadable() {
        let whole = doc_by(2).save();
        for cut in [1, 5, 9, 10, whole.len() - 1] {
            assert_eq!(actors_brought(&carrying(vec![whole[..cut].to_vec()])), None);
        }
        let mut wrong_magic = whole.clone();
        wrong_magic[0] ^= 1;
        assert_eq!(actors_brought(&carrying(vec![wrong_magic])), None);
        let mut unknown_kind = whole;
        unknown_kind[8] = 9;
        assert_eq!(actors_brought(&carrying(vec![unknown_kind])), None);
    }
}
