//! `POST /v1/sync`: the body read by hand (so that an oversized body still gets a 413 with a
//! code, a stalled one a 408, and a sync refused before its body is read its 401, 415 or 429
//! rather than a reset connection), at most `limits::SYNCS_PER_DEVICE_MAX` syncs in progress per
//! device (429 beyond, counted until the sync's work ends, even if the client hangs up), the sync
//! itself ([`crate::sync::handle_announcing`]) on the blocking pool, which sends the live event
//! for what it stored as soon as that is durable.

use super::error::ApiError;
use super::extract::Authed;
use super::AppState;
use crate::validate::Rules;
use crate::{now_ms, sync};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use casenote_protocol::limits::{self, OVERSIZED_BODY_DRAIN_BYTES_MAX};
use casenote_protocol::wire::{self, CBOR_MEDIA_TYPE};
use casenote_protocol::ErrorCode;
use std::time::Duration;
use tokio::sync::Semaphore;
use tower_http::timeout::TimeoutError;

fn is_cbor(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case(CBOR_MEDIA_TYPE)
        })
        .unwrap_or(false)
}

/// Reads and discards up to `max` bytes of `body`.
async fn drain(mut body: Body, max: usize) {
    use http_body_util::BodyExt;
    let mut read = 0usize;
    while read <= max {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
}

/// Whether a body error is the stall timeout of [`RequestBodyTimeoutLayer`].
fn is_stall(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<TimeoutError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// The Content-Length the client declared, if any.
fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|len| usize::try_from(len).unwrap_or(usize::MAX))
}

/// Refuses a sync before its body is read, with `e`, after reading and throwing away the body
/// for at most [`limits::REFUSED_BODY_DRAIN_MS`] (see there why), when one of the `draining`
/// places is free and the body is not declared larger than the limit plus
/// [`OVERSIZED_BODY_DRAIN_BYTES_MAX`]; otherwise at once.
async fn refuse(
    draining: &Semaphore,
    (headers, body): (&HeaderMap, Body),
    e: ApiError,
) -> Result<Response, ApiError> {
    let max = limits::REQUEST_BYTES_MAX.saturating_add(OVERSIZED_BODY_DRAIN_BYTES_MAX);
    if declared_length(headers).is_some_and(|len| len > max) {
        return Err(e);
    }
    if let Ok(_place) = draining.try_acquire() {
        let patience = Duration::from_millis(limits::REFUSED_BODY_DRAIN_MS);
        let _ = tokio::time::timeout(patience, drain(body, max)).await;
    }
    Err(e)
}

/// Reads the whole body, refusing more than `limits::REQUEST_BYTES_MAX` bytes without buffering
/// them: by its Content-Length before reading, or as it arrives when the length is not declared.
/// (This is `axum::body::to_bytes` with the limit, plus draining an oversized body; see
/// [`OVERSIZED_BODY_DRAIN_BYTES_MAX`].)
async fn read_body(headers: &HeaderMap, mut body: Body) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let max = limits::REQUEST_BYTES_MAX;
    let declared = declared_length(headers);
    if let Some(len) = declared {
        if len > max {
            if len <= max.saturating_add(OVERSIZED_BODY_DRAIN_BYTES_MAX) {
                drain(body, len).await;
            }
            return Err(ApiError::too_large(len));
        }
    }
    let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if is_stall(&e) {
                return ApiError::stalled();
            }
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::MalformedBody,
                format!("the body could not be read: {e}"),
            )
        })?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        if buf.len() + data.len() > max {
            let seen = buf.len() + data.len();
            drop(buf);
            drain(body, OVERSIZED_BODY_DRAIN_BYTES_MAX).await;
            return Err(ApiError::too_large(seen));
        }
        buf.extend_from_slice(data);
    }
    Ok(Bytes::from(buf))
}

pub(crate) async fn sync_handler(
    State(state): State<AppState>,
    authed: Result<Authed, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let who = match authed {
        Ok(Authed(who)) => who,
        Err(e) => return refuse(&state.draining, (&headers, body), e).await,
    };
    if !is_cbor(&headers) {
        let e = ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!("send the sync body as {CBOR_MEDIA_TYPE}"),
        );
        return refuse(&state.draining, (&headers, body), e).await;
    }
    // Held from before the body is read (one device cannot hold every connection with uploads)
    // until the blocking work ends (a client that hangs up does not free it before then).
    let Some(slot) = state.syncs.enter(who.device_id) else {
        let e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::LimitExceeded,
            format!(
                "this device has {} syncs in progress already; let them finish first",
                state.syncs.max()
            ),
        );
        return refuse(&state.draining, (&headers, body), e).await;
    };
    let bytes = read_body(&headers, body).await?;
    let started = std::time::Instant::now();
    let body_bytes = bytes.len();
    let store = state.store.clone();
    let rules = Rules {
        late_entry_after_ms: state.config.late_entry_after_ms,
    };
    let lease = state.config.lease;
    let device = who.device_id;
    let feed = state.feed.clone();
    // The request's span goes with the work, so the sync's log line carries the request id.
    let span = tracing::Span::current();
    let outcome = tokio::task::spawn_blocking(move || {
        let _span = span.entered();
        let _slot = slot;
        let req = match wire::decode_request(&bytes) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        // The live channel is told as soon as what the sync stored is durable.
        let announce = |stored| feed.publish(stored, Some(device));
        sync::handle_announcing(&*store, &who, req, now_ms(), &rules, &announce).map(|mut resp| {
            resp.lease = Some(lease);
            Ok(wire::encode(&resp))
        })
    })
    .await;
    let encoded = match outcome {
        Ok(Ok(Ok(encoded))) => encoded,
        Ok(Ok(Err(decode))) => {
            let code = decode.code();
            let status = if code == ErrorCode::BodyTooLarge {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return Err(ApiError::new(status, code, decode.to_string()));
        }
        Ok(Err(store)) => return Err(ApiError::from(store)),
        Err(join) => return Err(ApiError::internal(format!("the sync task failed: {join}"))),
    };
    tracing::debug!(
        body_bytes,
        response_bytes = encoded.len(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "sync answered"
    );
    Ok((
        [(CONTENT_TYPE, HeaderValue::from_static(CBOR_MEDIA_TYPE))],
        encoded,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Instant;

    /// A body that never sends a byte.
    struct Silent;

    impl http_body::Body for Silent {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_refused_body_is_drained_for_a_while_only_while_a_draining_place_is_free() {
        let draining = Semaphore::new(1);
        let headers = HeaderMap::new();
        let refused = || ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, "no");
        let patience = Duration::from_millis(limits::REFUSED_BODY_DRAIN_MS);
        let started = Instant::now();
        let _ = refuse(&draining, (&headers, Body::new(Silent)), refused()).await;
        assert!(
            started.elapsed() >= patience,
            "a silent body is drained for the patience"
        );
        assert_eq!(draining.available_permits(), 1, "the place comes back");
        let _held = draining.try_acquire().unwrap();
        let started = Instant::now();
        let _ = refuse(&draining, (&headers, Body::new(Silent)), refused()).await;
        assert!(
            started.elapsed() < patience / 2,
            "drained with no place free: {:?}",
            started.elapsed()
        );
    }
}
