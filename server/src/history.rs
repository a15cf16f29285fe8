//! A document's history: every stored change in server order (the order received), attributed
//! through the `actors` binding to the staff member and device that made it, with the server's
//! receipt time and the device's own clock side by side (DESIGN.md, "Time").
//!
//! [`read`] is the access-checked, audited form behind `GET /v1/history/{doc_id}`; [`entries`] is
//! the raw listing the export uses. Neither looks inside the changes beyond their metadata.

use crate::audit::{AuditKind, AuditRecord};
use crate::auth::Principal;
use crate::store::{Store, StoreError};
use crate::sync::may_read;
use casenote_protocol::wire::HistoryEntry;
use casenote_protocol::DocId;
use std::collections::HashMap;

/// Every stored change of `doc`, in server order, with its attribution.
pub fn entries(store: &dyn Store, doc: DocId) -> Result<Vec<HistoryEntry>, StoreError> {
    let mut staff_cache: HashMap<casenote_protocol::StaffId, Option<(String, String, String)>> =
        HashMap::new();
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
        let binding = store.get_actor(change.actor_id().to_bytes())?;
        let staff_id = binding.as_ref().map(|b| b.staff_id);
        let who = match staff_id {
            Some(id) => match staff_cache.get(&id) {
                Some(w) => w.clone(),
                None => {
                    let w = match store.get_staff(id)? {
                        Some(s) => {
                            let org = store.get_org(s.org_id)?.map(|o| o.name).unwrap_or_default();
                            Some((s.name, s.role.to_string(), org))
                        }
                        None => None,
                    };
                    staff_cache.insert(id, w.clone());
                    w
                }
            },
            None => None,
        };
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
/// it (the same answer, so a refusal never tells whether a document exists). Audited as `read`.
pub fn read(
    store: &dyn Store,
    who: &Principal,
    doc: DocId,
    now_ms: i64,
) -> Result<Option<Vec<HistoryEntry>>, StoreError> {
    let readable = match store.get_doc(doc)? {
        Some(rec) => match store.get_case(rec.header.case_id)? {
            Some(case) => may_read(who, &case, Some(&rec.header)),
            None => false,
        },
        None => false,
    };
    let answer = if readable {
        Some(entries(store, doc)?)
    } else {
        None
    };
    store.audit_append(
        AuditRecord::new(
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
        .device(who.device_id),
    )?;
    store.flush()?;
    Ok(answer)
}
