//! How fresh this device's records are (issue 16, "Freshness").
//!
//! A device offline for a shift may be showing a record that is out of date: an alert the night
//! team raised is not on it. [`Device::freshness`] says how long ago the device last finished a
//! sync and whether that is more than [`limits::DEVICE_STALE_AFTER_MS`] ago; the age is counted
//! on the wall clock and, within one boot, never less than the monotonic clock has counted since
//! the last contact with the server ([`crate::lease`]), so a clock set back does not make old
//! data look new. [`Device::alerts`] lists a case's alerts with when each was raised (the
//! raising device's clock, `raised_at_ms` in the record) and how long ago that was.

use super::{Device, SyncReport, META_LAST_SYNC};
use crate::error::Error;
use casenote_protocol::record::field;
use casenote_protocol::wire::ViewKind;
use casenote_protocol::{limits, CaseId};
use serde::{Deserialize, Serialize};

/// How old the device's copy of its records is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freshness {
    /// When the device last finished a sync (device clock, ms since the epoch); `None`: never.
    pub synced_at_ms: Option<i64>,
    /// How long ago that was (ms); `None`: never synced.
    pub age_ms: Option<i64>,
    /// Older than [`limits::DEVICE_STALE_AFTER_MS`], or never synced: what the device shows may
    /// be out of date.
    pub stale: bool,
}

/// An alert on a case, with its age.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub alert_id: String,
    pub text: String,
    pub status: String,
    pub raised_by: String,
    /// When it was raised (the raising device's clock); `None` for alerts from before the record
    /// kept it.
    pub raised_at_ms: Option<i64>,
    /// How long ago that was, on this device's clock (never negative).
    pub age_ms: Option<i64>,
}

impl Device {
    /// How old this device's records are: since its last finished sync.
    pub fn freshness(&self) -> Result<Freshness, Error> {
        let now = self.now();
        let last: Option<SyncReport> = self.store.meta_json(META_LAST_SYNC)?;
        let synced_at_ms = last.map(|r| r.finished_at_ms);
        // The monotonic count since the last contact, where the lease has one.
        let away = self.lease_anchor()?.map(|anchor| self.away(&anchor));
        let age_ms = synced_at_ms.map(|at| now.saturating_sub(at).max(away.unwrap_or(0)).max(0));
        Ok(Freshness {
            synced_at_ms,
            age_ms,
            stale: age_ms.is_none_or(|a| a > limits::DEVICE_STALE_AFTER_MS),
        })
    }

    /// A case's alerts, active first, each with its age. Audited as a view ([`super::views`]).
    pub fn alerts(&self, case: CaseId) -> Result<Vec<Alert>, Error> {
        self.require_case(case)?;
        self.record_view(case, ViewKind::Alerts)?;
        let record = self.content_of(case)?["record"].clone();
        Ok(alerts_of(&record, self.now()))
    }
}

/// The alerts of a case record (`show`'s `record`), active first, then oldest first.
pub fn alerts_of(record: &serde_json::Value, now_ms: i64) -> Vec<Alert> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let mut out: Vec<Alert> = record[field::ALERTS]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(id, a)| {
            let raised_at_ms = a[field::RAISED_AT].as_i64();
            Alert {
                alert_id: id.clone(),
                text: text(&a["text"]),
                status: text(&a[field::STATUS]),
                raised_by: text(&a[field::RAISED_BY]),
                raised_at_ms,
                age_ms: raised_at_ms.map(|at| now_ms.saturating_sub(at).max(0)),
            }
        })
        .collect();
    out.sort_by_key(|a| (a.status != "active", a.raised_at_ms, a.alert_id.clone()));
    out
}
