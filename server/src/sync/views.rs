//! Views of records on devices, kept in the audit chain (issue 16, "Reads on devices are
//! audited").
//!
//! A device records each view (a case shown, exported) durably before it shows it, and sends
//! the ones the server has not acknowledged with its next sync ([`casenote_protocol::wire::View`]).
//! Each view becomes one `device_view` audit entry in the sync's last write transaction, with ids,
//! the kind of view and the device's clock only. The server keeps, per device and count of views
//! (a device store's `stream`), the highest view `seq` recorded (the meta value
//! `views_through:DEVICE:STREAM`), read and advanced in that same transaction: a view re-sent
//! after a lost answer is acknowledged again but never audited twice.

use crate::auth::Principal;
use crate::model::{AuditKind, AuditRecord};
use crate::store::{StoreError, Txn};
use casenote_protocol::wire::View;
use serde_json::json;

/// The meta key of the highest recorded view of a device's count `stream`.
fn key(who: &Principal, stream: uuid::Uuid) -> String {
    format!("views_through:{}:{stream}", who.device_id)
}

/// Appends an audit entry for each view in `views` above what the device already had recorded,
/// and returns the highest view now recorded (`None` when the device sent none).
pub fn record(
    txn: &mut dyn Txn,
    who: &Principal,
    views: &[View],
    now_ms: i64,
) -> Result<Option<u64>, StoreError> {
    // A request's views come from one count (the device's store); any other is ignored.
    let Some(stream) = views.first().map(|v| v.stream) else {
        return Ok(None);
    };
    let key = key(who, stream);
    let mut through = match txn.meta(&key)? {
        Some(v) => u64::from_be_bytes(
            v.as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("{key} is {} bytes, not 8", v.len())))?,
        ),
        None => 0,
    };
    let stored = through;
    for v in views
        .iter()
        .filter(|v| v.stream == stream && v.seq > stored)
    {
        let entry = AuditRecord::new(
            AuditKind::DeviceView,
            now_ms,
            json!({
                "case_id": v.case_id,
                "view": v.kind.as_str(),
                "view_seq": v.seq,
                "view_stream": v.stream,
                "device_time_ms": v.device_time_ms,
            }),
        )
        .staff(who.staff_id())
        .device(who.device_id);
        txn.audit_append(entry)?;
        through = through.max(v.seq);
    }
    if through != stored {
        txn.put_meta(&key, &through.to_be_bytes())?;
    }
    Ok(Some(through))
}
