//! `casenote-server verify --data DIR`: the store checked end to end, offline.
//!
//! What open checks in O(1) ([`super::check`]) first; then every change in the log, in order:
//! sequences without gaps, each entry an Automerge change whose hash is the one stored, the hash
//! chain recomputed and equal to the stored one (and, at the high-water mark, to the mark's);
//! then the indexes against the log (`hashes` names every change and nothing else, each
//! document's heads are the changes no other change of it depends on, `case_docs` and the
//! documents agree); then the audit log's chain and its anchor (`crate::model::audit::AnchoredCheck`).
//! The first problem is reported, in plain words (sequences and ids, never content).

use super::codec::{dec, get, hash_key, pair_key, seq_from};
use super::trees::{chain_next, parse_log, Sled, CHAIN_GENESIS};
use super::{lock, SledStore};
use crate::model::audit::AnchoredCheck;
use crate::model::{CaseRecord, DocRecord};
use crate::store::StoreError;
use casenote_protocol::wire::Hash;
use casenote_protocol::{CaseId, DocId};
use std::collections::{BTreeSet, HashMap};

/// What a store that verified holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub changes: u64,
    pub docs: usize,
    pub cases: usize,
    pub audit_entries: usize,
    /// The acknowledged high-water mark's change and audit sequences.
    pub acknowledged: Option<(u64, u64)>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "store verified: {} changes in {} documents of {} cases, {} audit entries",
            self.changes, self.docs, self.cases, self.audit_entries
        )?;
        match self.acknowledged {
            Some((log, audit)) => write!(
                f,
                "; everything acknowledged is there (changes up to {log}, audit entries up to {audit})"
            ),
            None => write!(f, "; no acknowledged high-water mark yet"),
        }
    }
}

use crate::store::{damaged, VerifyError};

/// The log walk's result: each document's heads, and the chain at the mark.
struct Walked {
    changes: u64,
    /// Of `changes`, the erased entries (no bytes, no index row).
    erased: u64,
    heads: HashMap<DocId, BTreeSet<[u8; 32]>>,
}

impl SledStore {
    /// Checks the whole store (open it with [`SledStore::inspect`], so that nothing is healed
    /// first).
    pub fn verify(&self) -> Result<Summary, VerifyError> {
        if let Some(damage) = self.damage() {
            return Err(damaged(damage.findings.join("; ")));
        }
        let s = self.shared.sled()?;
        let mark = lock(&self.shared.mark).last;
        let walked = walk_log(&s, mark.map(|m| (m.log_seq, m.chain)))?;
        if s.hashes.len() as u64 != walked.changes - walked.erased {
            return Err(damaged(format!(
                "the hashes index holds {} entries for {} changes",
                s.hashes.len(),
                walked.changes - walked.erased
            )));
        }
        let cases = check_docs(&s, &walked.heads)?;
        let audit_entries =
            check_audit(&s, mark.map(|m| (m.audit_seq, hex::encode(m.audit_hash))))?;
        Ok(Summary {
            changes: walked.changes,
            docs: walked.heads.len(),
            cases,
            audit_entries,
            acknowledged: mark.map(|m| (m.log_seq, m.audit_seq)),
        })
    }
}

/// The audit chain and its anchor (the mark's audit entry).
fn check_audit(s: &Sled, anchor: Option<(u64, String)>) -> Result<usize, VerifyError> {
    let mut check = AnchoredCheck::new(anchor);
    for item in s.audit.iter() {
        let (k, v) = item.map_err(StoreError::from)?;
        if !check.visit(seq_from(&k)?, &v) {
            break;
        }
    }
    check.finish().map_err(|b| damaged(b.to_string()))
}

/// Every log entry in order; `mark`: the acknowledged (seq, chain).
fn walk_log(s: &Sled, mark: Option<(u64, [u8; 32])>) -> Result<Walked, VerifyError> {
    let mut chain = CHAIN_GENESIS;
    let mut walked = Walked {
        changes: 0,
        erased: 0,
        heads: HashMap::new(),
    };
    for item in s.log.iter() {
        let (k, v) = item.map_err(StoreError::from)?;
        let seq = seq_from(&k)?;
        if seq != walked.changes + 1 {
            return Err(damaged(format!(
                "change {} is missing from the log (the next is {seq})",
                walked.changes + 1
            )));
        }
        let e = parse_log(&v).map_err(|e| damaged(format!("change {seq}: {e}")))?;
        if e.bytes.is_empty() {
            // Erased (`Txn::erase_doc`): only its place in the chain is left to check.
            chain = chain_next(&chain, seq, e.doc_id, &e.hash);
            if chain != e.chain {
                return Err(damaged(format!(
                    "the log's hash chain breaks at erased change {seq}"
                )));
            }
            walked.changes = seq;
            walked.erased += 1;
            continue;
        }
        let change = std::panic::catch_unwind(|| automerge::Change::from_bytes(e.bytes.to_vec()))
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| damaged(format!("change {seq} is not an Automerge change")))?;
        if Hash::from(change.hash()) != e.hash {
            return Err(damaged(format!(
                "change {seq}'s bytes do not have its stored hash"
            )));
        }
        chain = chain_next(&chain, seq, e.doc_id, &e.hash);
        if chain != e.chain {
            return Err(damaged(format!(
                "the log's hash chain breaks at change {seq}"
            )));
        }
        if let Some((at, expected)) = mark {
            if at == seq && chain != expected {
                return Err(damaged(format!(
                    "change {seq} is not the change acknowledged there (the chain differs from the mark's)"
                )));
            }
        }
        match s
            .hashes
            .get(hash_key(e.doc_id, &e.hash))
            .map_err(StoreError::from)?
        {
            Some(at) if seq_from(&at)? == seq => {}
            _ => {
                return Err(damaged(format!(
                    "the hashes index does not point at change {seq}"
                )))
            }
        }
        let heads = walked.heads.entry(e.doc_id).or_default();
        for dep in change.deps() {
            heads.remove(&dep.0);
        }
        heads.insert(e.hash.0);
        walked.changes = seq;
    }
    if let Some((at, _)) = mark {
        if at > walked.changes {
            return Err(damaged(format!(
                "the log ends at change {}, but changes up to {at} were acknowledged",
                walked.changes
            )));
        }
    }
    Ok(walked)
}

/// The documents and `case_docs` against the log's heads; returns the number of cases.
fn check_docs(s: &Sled, heads: &HashMap<DocId, BTreeSet<[u8; 32]>>) -> Result<usize, VerifyError> {
    let mut seen = 0usize;
    for item in s.docs.iter() {
        let (_, v) = item.map_err(StoreError::from)?;
        let rec: DocRecord = dec(&v)?;
        let doc = rec.header.doc_id;
        let stored: BTreeSet<[u8; 32]> = rec.heads.iter().map(|h| h.0).collect();
        if heads.get(&doc) != Some(&stored) {
            return Err(damaged(format!(
                "document {doc}'s heads are not the ones its changes in the log give"
            )));
        }
        let key = pair_key(rec.header.case_id.as_bytes(), doc.as_bytes());
        if !s.case_docs.contains_key(key).map_err(StoreError::from)? {
            return Err(damaged(format!(
                "document {doc} is missing from its case's index"
            )));
        }
        seen += 1;
    }
    if seen != heads.len() {
        return Err(damaged(format!(
            "the log has changes of {} documents, the documents tree holds {seen}",
            heads.len()
        )));
    }
    for item in s.case_docs.iter() {
        let (k, _) = item.map_err(StoreError::from)?;
        let (case, doc) = (CaseId::from_slice(&k[..16]), DocId::from_slice(&k[16..]));
        let (Some(case), Some(doc)) = (case, doc) else {
            return Err(damaged("a case_docs key is not two ids"));
        };
        let rec: Option<DocRecord> = get(&s.docs, doc.as_bytes())?;
        if rec.map(|r| r.header.case_id) != Some(case) {
            return Err(damaged(format!(
                "case_docs lists document {doc} under case {case}, which is not its case"
            )));
        }
    }
    let mut cases = 0usize;
    for item in s.cases.iter().values() {
        let _: CaseRecord = dec(&item.map_err(StoreError::from)?)?;
        cases += 1;
    }
    Ok(cases)
}
