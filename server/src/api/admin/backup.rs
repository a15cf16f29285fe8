//! `POST /v1/admin/backup`: a backup of the running store, streamed as the response body while
//! devices sync (`casenote-server admin --server URL backup --out FILE` saves it).
//!
//! The cut is taken before the answer starts ([`crate::backup::begin`]: flushed, audited with
//! the admin's id), so a store that cannot write answers a coded error, not a broken stream.
//! The traversal then runs on the blocking pool and writes into a bounded channel
//! (`BACKUP_STREAM_CHUNKS_MAX` chunks of `BACKUP_STREAM_CHUNK_BYTES`) that the response body
//! drains: a slow client slows the traversal down, and memory stays bounded. A traversal that
//! fails ends the body with an error, so the client gets no trailer and keeps no file. At most
//! `BACKUPS_AT_ONCE_MAX` run at once; another is refused with 429 `limit_exceeded`. On
//! PostgreSQL the audit chain is read in one scan of one snapshot: a client that stops reading
//! for longer than `PG_IDLE_IN_TRANSACTION_MS_MAX` meanwhile ends the backup (cleanly: no
//! trailer, so no file).

use super::super::error::{blocking, ApiError};
use super::super::AppState;
use super::AdminAuthed;
use crate::model::By;
use crate::now_ms;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::Response;
use casenote_protocol::{limits, ErrorCode};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Backups streaming now, in this process.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Takes the cut and streams the backup.
pub(super) async fn handle(
    State(state): State<AppState>,
    AdminAuthed(admin): AdminAuthed,
) -> Result<Response, ApiError> {
    let slot = Slot::take()?;
    let by = By::Admin {
        admin_id: admin.admin_id,
    };
    let store = state.store.clone();
    let header = blocking(move || {
        crate::backup::begin(&*store, by, now_ms()).map_err(|e| match e {
            crate::backup::BackupError::Store(s) => s,
            other => crate::store::StoreError::Task(other.to_string()),
        })
    })
    .await?;
    tracing::info!(admin_id = %admin.admin_id, upto_seq = header.cut.upto.0, "backup started");
    let (tx, rx) = mpsc::channel(limits::BACKUP_STREAM_CHUNKS_MAX);
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let mut out = std::io::BufWriter::with_capacity(
            limits::BACKUP_STREAM_CHUNK_BYTES,
            Chunks { tx: tx.clone() },
        );
        match crate::backup::write(&*store, header, &mut out) {
            Ok(s) => {
                tracing::info!(
                    changes = s.copied.changes,
                    audit_entries = s.copied.audit_entries,
                    "backup streamed"
                )
            }
            Err(e) => {
                tracing::warn!(error = %e, "backup stopped");
                let _ = tx.blocking_send(Err(std::io::Error::other("the backup stopped")));
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::new(Stream { rx }))
        .map_err(ApiError::internal)
}

/// One of the `BACKUPS_AT_ONCE_MAX` places, given back when dropped.
struct Slot;

impl Slot {
    fn take() -> Result<Slot, ApiError> {
        let was = RUNNING.fetch_add(1, Ordering::SeqCst);
        if was >= limits::BACKUPS_AT_ONCE_MAX {
            RUNNING.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::LimitExceeded,
                "backups are already running on this server; wait for them to finish",
            ));
        }
        Ok(Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The traversal's side of the channel: every write is one chunk sent, waiting while the
/// channel is full; a client that went away ends the traversal.
struct Chunks {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
}

impl std::io::Write for Chunks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
            })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The response body: the chunks as they come.
struct Stream {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
}

impl http_body::Body for Stream {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| c.map(http_body::Frame::data)))
    }
}
