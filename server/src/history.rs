//! A document's history: every stored change in server order (the order received), attributed
//! through the `actors` binding to the staff member and device that made it, with the server's
//! receipt time and the device's own clock side by side (docs/design.md, "Time").
//!
//! [`read`] is the access-checked, audited form behind `GET /v1/history/{doc_id}`; [`entries`] is
//! the raw listing the export uses. Neither looks inside the changes beyond their metadata.
//!
//! It may read committed log data and, through transactions, the directory and the actors; the
//! access decision is [`crate::access`]'s.

use crate::access;
use crate::auth::Principal;
use crate::model::{AuditKind, AuditRecord};
use crate::store::{self as txns, Store, StoreError, Txn};
use casenote_protocol::wire::HistoryEntry;
use casenote_protocol::{DocId, StaffId};
use std::collections::HashMap;

/// Who a staff id names: name, role, organisation.
type Named = Option<(String, String, String)>;

fn named(txn: &mut dyn Txn, id: StaffId) -> Result<Named, StoreError> {
    let Some(s) = txn.staff(id)? else {
        return Ok(None);
    };
    let org = txn.org(s.org_id)?.map(|o| o.name).unwrap_or_default();
    Ok(Some((s.name, s.role.to_string(), org)))
}

/// Every stored change of `doc`, in server order, with its attribution.
pub fn entries(store: &dyn Store, doc: DocId) -> Result<Vec<HistoryEntry>, StoreError> {
    let mut staff_cache: HashMap<StaffId, Named> = HashMap::new();
    let mut out = Vec::new();
    for seq in store.doc_change_seqs(doc)? {
        let Some((_, hash, bytes)) = store.get_log(seq)? else {
            continue;
        };
        let change = automerge::Change::from_bytes(bytes).map_err(|e| {
            StoreError::Corrupt(format!(
                "change {seq} of document {doc} does not parse: {e}"
            ))
        })?;
        let actor = change.actor_id().to_bytes().to_vec();
        let (binding, who) = txns::read(store, |txn| {
            let binding = txn.actor(&actor)?;
            let who = match binding.as_ref().map(|b| b.staff_id) {
                Some(id) if !staff_cache.contains_key(&id) => named(txn, id)?,
                Some(id) => staff_cache[&id].clone(),
                None => None,
            };
            Ok((binding, who))
        })?;
        let staff_id = binding.as_ref().map(|b| b.staff_id);
        if let Some(id) = staff_id {
            staff_cache.insert(id, who.clone());
        }
        out.push(HistoryEntry {
            seq: seq.0,
            hash: hex::encode(hash.0),
            staff_id,
            staff_name: who.as_ref().map(|w| w.0.clone()),
            role: who.as_ref().map(|w| w.1.clone()),
            org: who.as_ref().map(|w| w.2.clone()),
            device_id: binding.map(|b| b.device_id),
            received_at_ms: store.received_at(seq)?,
            device_time_ms: change.timestamp(),
            ops: change.len() as u64,
            message: change.message().map(str::to_string),
        });
    }
    Ok(out)
}

/// The history of `doc` for `who`: `None` when the document does not exist or `who` may not read
/// it (the same answer, so a refusal never tells whether a document exists). Audited as `read`,
/// and the audit entry is durable before the history is handed out.
pub fn read(
    store: &dyn Store,
    who: &Principal,
    doc: DocId,
    now_ms: i64,
) -> Result<Option<Vec<HistoryEntry>>, StoreError> {
    let readable = txns::read(store, |txn| {
        Ok(access::readable_doc(txn, who, doc, &mut access::Cases::new())?.is_some())
    })?;
    let answer = if readable {
        Some(entries(store, doc)?)
    } else {
        None
    };
    let record = AuditRecord::new(
        AuditKind::Read,
        now_ms,
        serde_json::json!({
            "what": "history",
            "doc_id": doc,
            "found": answer.is_some(),
            "changes": answer.as_ref().map(Vec::len),
        }),
    )
    .staff(who.staff_id())
    .device(who.device_id);
    txns::write(store, |txn| txn.audit_append(record.clone()))?;
    store.flush()?;
    Ok(answer)
}
