//! What an Automerge sync message would bring into a document, weighed before automerge loads
//! any of it.
//!
//! Each chunk is first bounded by `casenote_protocol::chunk` (its columns' rows from their run
//! lengths, its deflated data inflated into a bounded buffer), so that neither a run claiming
//! billions of operations nor a deflate bomb reaches automerge; the operations of the whole
//! message must fit `limits::DOC_OPS_MAX`, their inflated bytes `limits::REPO_INFLATED_BYTES_MAX`.
//! Then the actors: what a document costs automerge grows with its changes times its actors
//! (`limits::DOC_ACTORS_MAX`), and a message of `limits::REPO_MESSAGE_BYTES_MAX` can name some
//! 160,000 actors (25 bytes a change). A change chunk names one actor, new to the document
//! exactly when its sequence number is 1 (both read by the bound); a document chunk lists its actors, which may include
//! some the receiving document holds, so they are bounded on their own ([`Weight::fits`]); what
//! the document holds after taking the message is checked again exactly. Bundles (automerge's
//! experimental format) are not taken.

use automerge::sync::Message;
use casenote_protocol::chunk::{self, Kind};
use casenote_protocol::limits;
use std::collections::HashSet;

/// What a message brings: the actors its document chunks list, its first changes' actors, and
/// its operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Weight {
    pub listed: u64,
    pub first: u64,
    pub ops: u64,
}

impl Weight {
    /// Whether a document holding `held` actors may take the message: at most
    /// `limits::DOC_ACTORS_MAX` after its first changes, and no list of actors longer than that
    /// (the receiving side checks what it holds afterwards exactly).
    pub(super) fn fits(self, held: u64) -> bool {
        let max = limits::DOC_ACTORS_MAX;
        held.saturating_add(self.first) <= max && self.listed.saturating_add(self.first) <= max
    }
}

/// The weight of `msg`, or `None` for a message that is not taken unloaded: bytes that are not
/// whole chunks, a bundle, a column or inflation past the limits, or more operations than a
/// document may hold.
pub(super) fn weigh(msg: &Message) -> Option<Weight> {
    let mut w = Weight {
        listed: 0,
        first: 0,
        ops: 0,
    };
    let mut first_changes = HashSet::new();
    let mut inflated = limits::REPO_INFLATED_BYTES_MAX;
    for item in msg.changes.iter() {
        let mut rest = item;
        while !rest.is_empty() {
            let within = chunk::Limits {
                rows_max: 4 * limits::DOC_OPS_MAX,
                inflated_max: inflated,
            };
            let (bound, after) = chunk::bound(rest, within).ok()?;
            inflated -= bound.inflated;
            w.ops = w.ops.saturating_add(bound.ops);
            if w.ops > limits::DOC_OPS_MAX {
                return None;
            }
            if bound.kind == Kind::Document {
                w.listed = w.listed.saturating_add(bound.actors);
            }
            first_changes.extend(bound.first_of);
            rest = after;
        }
    }
    w.first = first_changes.len() as u64;
    Some(w)
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

    fn weight(listed: u64, first: u64, ops: u64) -> Option<Weight> {
        Some(Weight { listed, first, ops })
    }

    #[test]
    fn counts_actors_and_operations_of_change_and_document_chunks() {
        for actors in [1, 3, 40] {
            let mut doc = doc_by(actors);
            let n = actors as u64;
            assert_eq!(weigh(&carrying(changes_of(&mut doc, &[]))), weight(0, n, n));
            assert_eq!(weigh(&carrying(vec![doc.save()])), weight(n, 0, n));
            let hashes = doc
                .get_changes(&[])
                .iter()
                .map(|c| c.hash())
                .collect::<Vec<_>>();
            let bundle = doc.bundle(hashes).unwrap().bytes().to_vec();
            assert_eq!(
                weigh(&carrying(vec![bundle])),
                None,
                "a bundle is not taken"
            );
            // Chunks may also come concatenated in one item.
            let mut joined = doc.save();
            joined.extend(changes_of(&mut doc, &[]).concat());
            assert_eq!(weigh(&carrying(vec![joined])), weight(n, n, 2 * n));
        }
        // Later changes of an actor bring none.
        let mut doc = doc_by(2);
        let heads = doc.get_heads();
        doc.put(ROOT, "y", 1).unwrap();
        doc.commit();
        assert_eq!(
            weigh(&carrying(changes_of(&mut doc, &heads))),
            weight(0, 0, 1)
        );
    }

    #[test]
    fn a_message_of_more_operations_than_a_document_may_hold_is_not_taken() {
        let run = |ops| casenote_protocol::chunk::testing::run_of_inserts(ops, [7; 32]);
        let ops = limits::DOC_OPS_MAX;
        assert_eq!(weigh(&carrying(vec![run(ops)])), weight(0, 0, ops));
        assert_eq!(weigh(&carrying(vec![run(ops + 1)])), None);
        assert_eq!(weigh(&carrying(vec![run(ops / 2), run(ops / 2 + 1)])), None);
        assert_eq!(weigh(&carrying(vec![run(1 << 40)])), None);
    }

    #[test]
    fn a_document_takes_first_changes_up_to_the_limit_and_lists_no_longer_than_it() {
        let max = limits::DOC_ACTORS_MAX;
        let first = |first| Weight {
            listed: 0,
            first,
            ops: 0,
        };
        let listed = |listed| Weight {
            listed,
            first: 0,
            ops: 0,
        };
        assert!(first(max).fits(0));
        assert!(!first(max + 1).fits(0));
        assert!(first(1).fits(max - 1));
        assert!(!first(1).fits(max));
        // A whole document re-sent lists the actors the receiver holds: not added to them.
        assert!(listed(max).fits(max));
        assert!(!listed(max + 1).fits(0));
        assert!(!Weight {
            listed: max,
            first: 1,
            ops: 0
        }
        .fits(0));
    }

    #[test]
    fn bytes_that_are_not_whole_chunks_count_as_unreadable() {
        let whole = doc_by(2).save();
        for cut in [1, 5, 9, 10, whole.len() - 1] {
            assert_eq!(weigh(&carrying(vec![whole[..cut].to_vec()])), None);
        }
        let mut wrong_magic = whole.clone();
        wrong_magic[0] ^= 1;
        assert_eq!(weigh(&carrying(vec![wrong_magic])), None);
        let mut unknown_kind = whole;
        unknown_kind[8] = 9;
        assert_eq!(weigh(&carrying(vec![unknown_kind])), None);
    }
}
