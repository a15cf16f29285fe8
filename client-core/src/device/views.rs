//! Views of records on this device, for the server's audit chain (issue 16).
//!
//! Every read of a case through the device API ([`Device::show`], [`Device::export`],
//! [`Device::conflicts`], [`Device::alerts`]) first records a view (the case's id, what was done
//! with it, the device's clock, a number) in the store, flushed, before anything is shown: a
//! process killed right after a view loses nothing. Views wait in the store (sealed like every
//! record, at most [`limits::DEVICE_VIEWS_QUEUED_MAX`]; a device at the limit refuses another
//! view until it syncs) and go to the server with the next sync, [`limits::SYNC_VIEWS_MAX`] a
//! request; the server's `views_through` says which it holds, and those leave the queue in the
//! same batch as the rest of that answer. A server that does not know views answers no
//! `views_through`, and the device keeps them.
//!
//! The one exception: on a full disk nothing can be written, and reading must still work (a
//! worker reads the alerts before a visit; `disk.rs`), so the record is shown and the view that
//! could not be kept is counted on this handle ([`Device::views_unrecorded`]) and logged, for the
//! caller to say so.

use super::Device;
use crate::error::Error;
use crate::store::{self, Writes};
use casenote_protocol::wire::{View, ViewKind};
use casenote_protocol::{limits, CaseId};
use std::sync::atomic::Ordering;

/// The number of the last view recorded.
const META_VIEW_SEQ: &str = "view_seq";
/// The number of the last view the server's audit chain holds.
const META_VIEWS_THROUGH: &str = "views_through";
/// The random id of this store's count of views ([`View::stream`]).
const META_VIEW_STREAM: &str = "view_stream";

impl Device {
    fn meta_u64(&self, name: &str) -> Result<u64, Error> {
        Ok(self.meta_8(name)?.map_or(0, u64::from_be_bytes))
    }

    /// Views recorded and not yet in the server's audit chain.
    pub fn views_queued(&self) -> Result<usize, Error> {
        let last = self.meta_u64(META_VIEW_SEQ)?;
        Ok(last.saturating_sub(self.meta_u64(META_VIEWS_THROUGH)?) as usize)
    }

    /// Records, durably, that case `case` is about to be shown as `kind`.
    pub(super) fn record_view(&self, case: CaseId, kind: ViewKind) -> Result<(), Error> {
        let queued = self.views_queued()?;
        if queued >= limits::DEVICE_VIEWS_QUEUED_MAX {
            return Err(Error::ViewsFull { queued });
        }
        let seq = self.meta_u64(META_VIEW_SEQ)? + 1;
        let mut w = Writes::default();
        let stream = match self.store.meta(META_VIEW_STREAM)? {
            Some(v) => uuid::Uuid::from_slice(&v)
                .map_err(|_| Error::Corrupt(format!("meta {META_VIEW_STREAM}")))?,
            None => {
                let fresh = uuid::Uuid::new_v4();
                w.put_meta(META_VIEW_STREAM, fresh.as_bytes().to_vec());
                fresh
            }
        };
        let view = View {
            stream,
            seq,
            case_id: case,
            kind,
            device_time_ms: self.now(),
        };
        w.put(store::view_key(seq), super::json_bytes(&view));
        w.put_meta(META_VIEW_SEQ, seq.to_be_bytes().to_vec());
        match self.store.commit(w) {
            Err(Error::DiskFull) => {
                self.views_unrecorded.fetch_add(1, Ordering::SeqCst);
                tracing::warn!(case = %case, "the disk is full: a view of a record was not kept for the audit log");
                Ok(())
            }
            other => other,
        }
    }

    /// Views this handle showed but could not keep for the audit log (the disk was full).
    pub fn views_unrecorded(&self) -> u64 {
        self.views_unrecorded.load(Ordering::SeqCst)
    }

    /// The oldest queued views, as many as one request carries, and whether more wait.
    pub(super) fn views_to_send(&self) -> Result<(Vec<View>, bool), Error> {
        let stored = self.store.views(limits::SYNC_VIEWS_MAX)?;
        let views = stored
            .iter()
            .map(|v| serde_json::from_slice(v).map_err(|_| Error::Corrupt("a queued view".into())))
            .collect::<Result<Vec<View>, Error>>()?;
        let more = self.views_queued()? > views.len();
        Ok((views, more))
    }

    /// Adds to `w` the removal of every queued view up to `through` (the server holds them).
    pub(super) fn stage_views_recorded(
        &self,
        w: &mut Writes,
        sent: &[View],
        through: u64,
    ) -> Result<(), Error> {
        // Never past what was sent: a server's word covers only the views it was given.
        let through = through.min(sent.iter().map(|v| v.seq).max().unwrap_or(0));
        for v in sent.iter().filter(|v| v.seq <= through) {
            w.remove(store::view_key(v.seq));
        }
        if through > self.meta_u64(META_VIEWS_THROUGH)? {
            w.put_meta(META_VIEWS_THROUGH, through.to_be_bytes().to_vec());
        }
        Ok(())
    }
}
