//! The sans-IO half of sync: builds a request from what the device has to send, and turns a
//! response into a plan of what to store. It never reads the clock, the disk or the network;
//! [`crate::device`] hands it time and data and carries out its plan.

use crate::error::Error;
use crate::store::Header;
use automerge::{Change, ChangeHash};
use casenote_protocol::wire::{
    self, DocPush, NewRestricted, Rejection, SealedStub, SyncRequest, SyncResponse,
    PROTOCOL_VERSION,
};
use casenote_protocol::{limits, DocId, DocKind, Seq};
use serde_bytes::ByteBuf;
use std::collections::BTreeMap;

/// One document's local edits that the server has not acknowledged.
pub struct Outgoing {
    pub doc_id: DocId,
    pub header: Header,
    pub base: Vec<ChangeHash>,
    pub changes: Vec<Vec<u8>>,
    /// For a new restricted section the server has not acknowledged: its access list.
    pub access: Option<NewRestricted>,
}

impl Outgoing {
    fn bytes(&self) -> usize {
        self.changes.iter().map(Vec::len).sum::<usize>() + 64
    }
}

/// The operations one of the device's own changes holds, read from its columns as the server
/// reads them ([`casenote_protocol::chunk`]); 0 for bytes that are not a change (the server
/// refuses those whatever they weigh).
fn ops_of(change: &[u8]) -> u64 {
    let within = casenote_protocol::chunk::Limits {
        rows_max: u64::MAX,
        inflated_max: limits::CHANGE_BYTES_MAX,
    };
    casenote_protocol::chunk::bound(change, within).map_or(0, |(b, _)| b.ops)
}

/// How many changes of `weights` (their operations) fit in `room` (at least one when `first`: a
/// request's first document always goes).
fn fitting(weights: &[u64], room: u64, first: bool) -> usize {
    let (mut n, mut ops) = (0, 0u64);
    for &o in weights {
        if (n > 0 || !first) && ops.saturating_add(o) > room {
            break;
        }
        n += 1;
        ops = ops.saturating_add(o);
    }
    n
}

/// Packs as many outgoing documents as fit the push budget (bytes, documents, changes and the
/// operations they hold) into one request; returns the request and what is left for the next
/// round. The first document always goes (the server answers if it is too large). A document
/// with more changes (or operations) than the budget has left is split: its first changes go now, the rest in a later round under the
/// same base (changes are in causal order, so each part's dependencies reach the server first).
/// Case documents go first: the server creates a case from its case document, and refuses a note
/// or plan of a case it does not know yet, so a case must never arrive in a later request than
/// its documents.
pub fn build_request(
    cursor: Seq,
    now_ms: i64,
    outgoing: Vec<Outgoing>,
    log_id: Option<uuid::Uuid>,
    confirmed_reconcile: Option<u64>,
) -> (SyncRequest, Vec<Outgoing>) {
    let mut outgoing = outgoing;
    outgoing.sort_by_key(|o| (o.header.kind != DocKind::Case, o.doc_id));
    let mut docs = Vec::new();
    let mut restricted = Vec::new();
    let mut left = Vec::new();
    let (mut bytes, mut changes, mut ops) = (0usize, 0usize, 0u64);
    for mut out in outgoing {
        let size = out.bytes();
        let weights: Vec<u64> = out.changes.iter().map(|c| ops_of(c)).collect();
        let ops_left = limits::PUSH_OPS_SOFT_MAX.saturating_sub(ops);
        let ops_room = fitting(&weights, ops_left, docs.is_empty());
        let room = limits::PUSH_CHANGES_SOFT_MAX
            .saturating_sub(changes)
            .min(ops_room);
        let fits = docs.is_empty()
            || (bytes + size <= limits::PUSH_BYTES_SOFT_MAX
                && docs.len() < limits::PUSH_DOCS_MAX
                && room > 0);
        if !fits || !left.is_empty() {
            left.push(out);
            continue;
        }
        if out.changes.len() > room.max(1) {
            let rest = out.changes.split_off(room.max(1));
            left.push(Outgoing {
                doc_id: out.doc_id,
                header: out.header,
                base: out.base.clone(),
                changes: rest,
                access: out.access.clone(),
            });
        }
        restricted.extend(out.access.take());
        bytes += out.bytes();
        changes += out.changes.len();
        ops = weights[..out.changes.len()]
            .iter()
            .fold(ops, |sum, &o| sum.saturating_add(o));
        docs.push(DocPush {
            doc_id: out.doc_id,
            case_id: out.header.case_id,
            kind: out.header.kind,
            base: wire::to_wire_heads(&out.base),
            changes: out.changes.into_iter().map(ByteBuf::from).collect(),
        });
    }
    let req = SyncRequest {
        version: PROTOCOL_VERSION,
        cursor,
        device_clock_ms: now_ms,
        docs,
        log_id,
        confirmed_reconcile,
        views: Vec::new(),
        restricted,
    };
    (req, left)
}

/// What the response means for one document.
#[derive(Default)]
pub struct DocUpdate {
    /// Set when the server sent changes for a document the device may not have yet.
    pub header: Option<Header>,
    pub changes: Vec<Change>,
    /// The server's heads for the document, if it said.
    pub server_heads: Option<Vec<ChangeHash>>,
    /// The server stored this document's push: (new, duplicate) change counts.
    pub acked: Option<(u32, u32)>,
    /// Every change the server sent for the document in this answer, as received, when one of
    /// them failed its bound or did not decode (then `changes` is empty): kept beside the
    /// document and never applied, so one bad change stops only its document.
    pub unusable: Option<Vec<u8>>,
}

/// Everything a response asks the device to do.
pub struct Plan {
    pub docs: BTreeMap<DocId, DocUpdate>,
    pub refused: Vec<Rejection>,
    pub evict: Vec<DocId>,
    pub resend_full: Vec<DocId>,
    pub cursor: Seq,
    pub more: bool,
    /// Device clock minus server clock when the answer came (ms).
    pub clock_offset_ms: i64,
    /// The server's clock when it answered: the offline lease counts from it.
    pub server_time_ms: i64,
    /// The server's log id, to keep with the cursor.
    pub log_id: uuid::Uuid,
    /// The server's log is not the one the device's cursor and bases refer to: start over.
    pub reset: bool,
    /// A reconciliation to confirm in the next request once this plan is stored.
    pub reconcile_id: Option<u64>,
    /// The offline lease the server set, if it sent one.
    pub lease: Option<wire::Lease>,
    /// The highest view of this device the server's audit chain holds, if the server said.
    pub views_through: Option<u64>,
    /// Sealed sections this device is told of but may not read.
    pub sealed: Vec<SealedStub>,
}

/// Interprets a response: decodes every change. A document with a change that fails its bound
/// or does not decode gets its changes as received instead ([`DocUpdate::unusable`]), which the
/// device stores beside it: the cursor still never moves past something the device did not
/// store, and the other documents of the answer are used.
pub fn interpret(resp: SyncResponse, sent_at_ms: i64) -> Result<Plan, Error> {
    let mut docs: BTreeMap<DocId, DocUpdate> = BTreeMap::new();
    for ack in resp.acks {
        let upd = docs.entry(ack.doc_id).or_default();
        upd.acked = Some((ack.stored, ack.duplicates));
        upd.server_heads = Some(wire::from_wire_heads(&ack.heads));
    }
    for pull in resp.docs {
        let upd = docs.entry(pull.doc_id).or_default();
        upd.header = Some(Header {
            case_id: pull.case_id,
            kind: pull.kind,
        });
        match decode_pulled(pull.changes) {
            Ok(changes) => upd.changes.extend(changes),
            Err(received) => {
                upd.changes.clear();
                upd.unusable = Some(received);
            }
        }
        upd.server_heads = Some(wire::from_wire_heads(&pull.heads));
    }
    Ok(Plan {
        docs,
        refused: resp.rejections,
        evict: resp.evictions,
        resend_full: resp.need_full_history,
        cursor: resp.cursor,
        more: resp.more,
        clock_offset_ms: sent_at_ms - resp.server_time_ms,
        server_time_ms: resp.server_time_ms,
        log_id: resp.log_id,
        reset: resp.reset,
        reconcile_id: resp.reconcile_id,
        lease: resp.lease,
        views_through: resp.views_through,
        sealed: resp.sealed,
    })
}

/// The changes the server sent for one document, decoded; or, when one fails its bound or does
/// not decode, all of them as received, concatenated.
fn decode_pulled(pulled: Vec<ByteBuf>) -> Result<Vec<Change>, Vec<u8>> {
    // The server bounds what it takes (casenote_protocol::chunk); a change it sends is bounded
    // here too before automerge visits its operations, so that no server (or anything between,
    // past TLS) can hold the device with a change of one long run.
    let within = casenote_protocol::chunk::Limits {
        rows_max: 4 * limits::DOC_OPS_MAX,
        inflated_max: limits::CHANGE_BYTES_MAX,
    };
    let mut changes: Vec<Change> = Vec::with_capacity(pulled.len());
    let mut rest = pulled.into_iter();
    while let Some(bytes) = rest.next() {
        let decoded = casenote_protocol::chunk::bound(&bytes, within)
            .ok()
            .and_then(|_| Change::from_bytes(bytes.to_vec()).ok());
        match decoded {
            Some(change) => changes.push(change),
            None => {
                let mut received: Vec<u8> = changes
                    .iter()
                    .flat_map(|c| c.raw_bytes().iter().copied())
                    .collect();
                received.extend_from_slice(&bytes);
                rest.for_each(|b| received.extend_from_slice(&b));
                return Err(received);
            }
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use casenote_protocol::{CaseId, DocKind};

    fn out(n: usize) -> Outgoing {
        Outgoing {
            doc_id: DocId::new_random(),
            header: Header {
                case_id: CaseId::new_random(),
                kind: DocKind::Note,
            },
            base: vec![],
            changes: vec![vec![0u8; n]],
            access: None,
        }
    }

    #[test]
    fn a_push_over_the_byte_budget_is_split_across_rounds_between_documents() {
        let big = limits::PUSH_BYTES_SOFT_MAX / 2;
        let (req, left) = build_request(Seq(3), 0, vec![out(big), out(big), out(big)], None, None);
        assert_eq!(
            req.docs.len(),
            1,
            "two halves and their framing exceed the budget"
        );
        assert_eq!(left.len(), 2);
        assert_eq!(req.cursor, Seq(3));
        let (req, left) = build_request(Seq(3), 0, left, None, Some(7));
        assert_eq!(req.confirmed_reconcile, Some(7));
        assert_eq!(req.docs.len(), 1);
        let (req, left) = build_request(Seq(3), 0, left, None, None);
        assert_eq!(req.docs.len(), 1);
        assert!(left.is_empty());
    }

    /// Builds requests from `pending` until nothing is left, checking each with `check`: how
    /// many requests it took, and the changes of document `id` in the order they were sent.
    fn rounds_of(
        mut pending: Vec<Outgoing>,
        id: DocId,
        check: impl Fn(&SyncRequest),
    ) -> (usize, Vec<Vec<u8>>) {
        let (mut rounds, mut parts) = (0, Vec::new());
        while !pending.is_empty() {
            let (req, left) = build_request(Seq(0), 0, pending, None, None);
            check(&req);
            rounds += 1;
            for d in req.docs.iter().filter(|d| d.doc_id == id) {
                parts.extend(d.changes.iter().map(|c| c.to_vec()));
            }
            pending = left;
        }
        (rounds, parts)
    }

    #[test]
    fn a_document_with_more_changes_than_the_budget_is_split_in_causal_order() {
        let n = limits::PUSH_CHANGES_SOFT_MAX * 2 + 10;
        let long = Outgoing {
            changes: (0..n).map(|i| (i as u32).to_be_bytes().to_vec()).collect(),
            ..out(1)
        };
        let id = long.doc_id;
        let (rounds, parts) = rounds_of(vec![long, out(10)], id, |req| {
            let sent: usize = req.docs.iter().map(|d| d.changes.len()).sum();
            assert!(
                sent <= limits::PUSH_CHANGES_SOFT_MAX,
                "{sent} changes in one push"
            );
        });
        let expected: Vec<Vec<u8>> = (0..n).map(|i| (i as u32).to_be_bytes().to_vec()).collect();
        assert_eq!(parts, expected, "every change once, in order");
        assert_eq!(rounds, 3);
    }

    #[test]
    fn a_push_holds_at_most_its_budget_of_operations_split_in_causal_order() {
        // Changes of one run: 3 million operations each in a few hundred bytes.
        // Documents in a known order (requests take them by id): the third meets a request
        // whose room is less than its first change.
        let heavy = |id: u128, n: usize| Outgoing {
            doc_id: DocId(uuid::Uuid::from_u128(id)),
            changes: (0..n)
                .map(|i| {
                    casenote_protocol::chunk::testing::run_of_inserts(3_000_000, [i as u8; 32])
                })
                .collect(),
            ..out(1)
        };
        assert_eq!(ops_of(&heavy(1, 1).changes[0]), 3_000_000);
        let long = heavy(2, 5);
        let id = long.doc_id;
        let expected = long.changes.clone();
        let (rounds, parts) = rounds_of(vec![heavy(3, 2), long, heavy(1, 1)], id, |req| {
            let ops: u64 = req
                .docs
                .iter()
                .flat_map(|d| &d.changes)
                .map(|c| ops_of(c))
                .sum();
            assert!(
                ops <= limits::PUSH_OPS_SOFT_MAX,
                "{ops} operations in one push"
            );
            assert!(!req.docs.is_empty());
        });
        assert_eq!(parts, expected, "every change once, in order");
        // 8 changes of 3 million, at most 8 million a push (two changes): four rounds.
        assert_eq!(rounds, 4);
    }

    #[test]
    fn a_pulled_change_of_one_long_run_is_set_aside_before_automerge_reads_it() {
        let bomb = casenote_protocol::chunk::testing::run_of_inserts(1 << 40, [1; 32]);
        let started = std::time::Instant::now();
        let plan = interpret(response_with(vec![ByteBuf::from(bomb.clone())]), 0).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let upd = plan.docs.values().next().expect("the document");
        assert!(upd.changes.is_empty());
        assert_eq!(upd.unusable.as_deref(), Some(&bomb[..]), "kept as received");
    }

    #[test]
    fn case_documents_go_in_the_first_request_whatever_their_ids() {
        let big = limits::PUSH_BYTES_SOFT_MAX / 3;
        let mut docs: Vec<Outgoing> = (0..6).map(|_| out(big)).collect();
        let mut case = out(10);
        case.header.kind = DocKind::Case;
        case.doc_id = DocId(uuid::Uuid::max());
        docs.push(case);
        let (req, left) = build_request(Seq(0), 0, docs, None, None);
        assert_eq!(req.docs[0].kind, DocKind::Case);
        assert!(left.iter().all(|o| o.header.kind != DocKind::Case));
    }

    #[test]
    fn a_document_larger_than_the_budget_still_goes_alone() {
        let (req, left) = build_request(
            Seq(0),
            0,
            vec![out(limits::PUSH_BYTES_SOFT_MAX + 1), out(1)],
            None,
            None,
        );
        assert_eq!(req.docs.len(), 1);
        assert_eq!(left.len(), 1);
    }

    /// A response that pulls one note made of `changes`.
    fn response_with(changes: Vec<ByteBuf>) -> SyncResponse {
        SyncResponse {
            version: PROTOCOL_VERSION,
            cursor: Seq(9),
            more: false,
            server_time_ms: 0,
            acks: vec![],
            docs: vec![wire::DocPull {
                doc_id: DocId::new_random(),
                case_id: CaseId::new_random(),
                kind: DocKind::Note,
                changes,
                heads: vec![],
            }],
            need_full_history: vec![],
            rejections: vec![],
            evictions: vec![],
            log_id: uuid::Uuid::nil(),
            reset: false,
            reconcile_id: None,
            lease: None,
            views_through: None,
            sealed: Vec::new(),
        }
    }

    #[test]
    fn an_undecodable_change_sets_its_document_aside_and_the_rest_of_the_answer_is_used() {
        use automerge::transaction::Transactable;
        let mut am = automerge::AutoCommit::new();
        am.put(automerge::ROOT, "k", 1).unwrap();
        am.commit();
        let good = am.get_changes(&[]).pop().unwrap();
        let good_bytes = good.raw_bytes().to_vec();
        // The bad document's good change comes first, then one that is not Automerge.
        let mut resp = response_with(vec![
            ByteBuf::from(good_bytes.clone()),
            ByteBuf::from(vec![1, 2, 3]),
        ]);
        let bad = resp.docs[0].doc_id;
        let mut other = resp.docs[0].clone();
        other.doc_id = DocId::new_random();
        other.changes = vec![ByteBuf::from(good_bytes.clone())];
        resp.docs.push(other.clone());
        let plan = interpret(resp, 0).unwrap();
        assert_eq!(plan.cursor, Seq(9), "the cursor moves over both");
        let set_aside = &plan.docs[&bad];
        assert!(set_aside.changes.is_empty());
        let received: Vec<u8> = good_bytes.iter().copied().chain([1, 2, 3]).collect();
        assert_eq!(set_aside.unusable.as_deref(), Some(&received[..]));
        let used = &plan.docs[&other.doc_id];
        assert_eq!(
            used.changes.iter().map(|c| c.hash()).collect::<Vec<_>>(),
            vec![good.hash()]
        );
        assert!(used.unusable.is_none());
    }
}
