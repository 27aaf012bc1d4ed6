//! The api's one error type, mapped once to RFC 9457 problem+json with stable codes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use enclosure_protocol::{EnclaveErrorCode, ErrorBody};
use serde::Serialize;

/// Everything the api can refuse or fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request is malformed: a missing or invalid parameter or body.
    #[error("{0}")]
    BadRequest(String),
    /// No such resource, or not yours (the two are indistinguishable on purpose).
    #[error("not found")]
    NotFound,
    /// The enclave cannot be reached or is restoring; retry after the given seconds.
    #[error("the enclave is unavailable: {reason}")]
    EnclaveUnavailable {
        /// Why.
        reason: String,
        /// Seconds to wait before retrying.
        retry_after: u64,
    },
    /// The enclave refused the operation.
    #[error("the enclave refused: {0}")]
    EnclaveRefused(ErrorBody),
    /// An unexpected failure; details are logged, not returned.
    #[error("internal error")]
    Internal(String),
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    code: &'a str,
    detail: String,
}

impl ApiError {
    /// The HTTP status and the stable machine-readable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::EnclaveUnavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "enclave_unavailable")
            }
            ApiError::EnclaveRefused(body) => match body.code {
                EnclaveErrorCode::BadRequest => (StatusCode::BAD_REQUEST, "enclave_bad_request"),
                EnclaveErrorCode::Unavailable | EnclaveErrorCode::NotProvisioned => {
                    (StatusCode::SERVICE_UNAVAILABLE, "enclave_unavailable")
                }
                _ => (StatusCode::BAD_GATEWAY, "enclave_refused"),
            },
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let detail = match &self {
            ApiError::Internal(msg) => {
                tracing::error!(error = %msg, "internal error");
                "an internal error occurred".to_string()
            }
            other => other.to_string(),
        };
        let problem = Problem {
            kind: format!("https://enclosure.dev/problems/{code}"),
            title: status.canonical_reason().unwrap_or("error"),
            status: status.as_u16(),
            code,
            detail,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let ApiError::EnclaveUnavailable { retry_after, .. } = &self
            && let Ok(v) = HeaderValue::from_str(&retry_after.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
