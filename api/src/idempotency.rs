//! Idempotency for mutating requests (T2: partial or double execution).
//!
//! Every POST, PUT, PATCH and DELETE carries an `Idempotency-Key`, scoped to the caller. The
//! first request with a key runs; a retry with the same key and body gets the stored response
//! (within 5 minutes); the same key with another body gets 422, even a day later; a retry
//! while the first is still running gets 409. A first attempt that failed on our side (5xx)
//! is forgotten, so the retry runs for real.

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use sha2::{Digest, Sha256};

use crate::ApiError;
use crate::server::Shared;
use crate::store::IdempotencyBegin;

/// The header that carries the key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Longest accepted key.
pub const MAX_KEY_LEN: usize = 200;
/// Header set on replayed responses.
pub const REPLAYED: &str = "idempotent-replayed";

fn is_mutating(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Axum middleware enforcing idempotency on mutating routes.
pub async fn enforce(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if !is_mutating(req.method()) || !state.idempotency_applies(req.uri().path()) {
        return next.run(req).await;
    }
    // Unauthenticated requests go on to the handler, whose extractor refuses them with 401.
    let Some(verified) = state.caller_of(req.headers()) else {
        return next.run(req).await;
    };
    let caller = verified.sub.clone();
    let key = match req.headers().get(IDEMPOTENCY_KEY).map(|v| v.to_str()) {
        Some(Ok(k)) if !k.is_empty() && k.len() <= MAX_KEY_LEN => k.to_string(),
        Some(_) => {
            return ApiError::BadRequest(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
            ))
            .into_response();
        }
        None => {
            return ApiError::BadRequest("this request needs an Idempotency-Key header".into())
                .into_response();
        }
    };
    let (parts, body) = req.into_parts();
    let body = match read_limited(body, state.body_limit()).await {
        Some(b) => b,
        None => return ApiError::PayloadTooLarge.into_response(),
    };
    let fingerprint = request_hash(&parts.method, parts.uri.path(), &body);
    let now = state.now_ms();
    match state
        .store
        .idempotency_begin(&caller, &key, &fingerprint, now)
        .await
    {
        Ok(IdempotencyBegin::Started) => {}
        Ok(IdempotencyBegin::Replay { status, body }) => return replay(status, body),
        Ok(IdempotencyBegin::InProgress) => return ApiError::IdempotencyInProgress.into_response(),
        Ok(IdempotencyBegin::Mismatch) => return ApiError::IdempotencyMismatch.into_response(),
        Ok(_) => return ApiError::IdempotencyExpired.into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    }
    let mut req = Request::from_parts(parts, Body::from(body));
    // The handler's Caller extractor takes this instead of verifying the token again.
    req.extensions_mut().insert(verified);
    let response = next.run(req).await;
    let (rparts, rbody) = response.into_parts();
    let rbytes = to_bytes(rbody, usize::MAX).await.unwrap_or_default();
    let outcome = if rparts.status.is_server_error() {
        state.store.idempotency_release(&caller, &key).await
    } else {
        state
            .store
            .idempotency_complete(
                &caller,
                &key,
                rparts.status.as_u16(),
                &rbytes,
                state.now_ms(),
            )
            .await
    };
    if let Err(e) = outcome {
        tracing::error!(error = %e, "could not record the idempotent response");
    }
    Response::from_parts(rparts, Body::from(rbytes))
}

fn request_hash(method: &Method, path: &str, body: &Bytes) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    h.update([0]);
    h.update(body);
    h.finalize().to_vec()
}

fn replay(status: u16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let empty = body.is_empty();
    let mut resp = (status, body).into_response();
    if !empty {
        let ct = if status.is_success() {
            "application/json"
        } else {
            "application/problem+json"
        };
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    resp.headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    resp
}

/// How much of an oversized body is read and dropped before the 413 goes out.
const DRAIN_LIMIT: usize = 4 * 1024 * 1024;

/// The body if it fits in `limit` bytes. An oversized one is read on and dropped (up to
/// [`DRAIN_LIMIT`] more) before the caller answers 413: answering while the client is still
/// sending, then closing, makes the kernel reset the connection, and the client may lose the
/// 413 it was sent.
async fn read_limited(body: Body, limit: usize) -> Option<Bytes> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.ok()?;
        seen = seen.saturating_add(chunk.len());
        if seen > limit.saturating_add(DRAIN_LIMIT) {
            return None;
        }
        if seen <= limit {
            buf.extend_from_slice(&chunk);
        }
    }
    (seen <= limit).then(|| Bytes::from(buf))
}
