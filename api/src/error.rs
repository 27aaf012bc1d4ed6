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
    /// The body is larger than the configured limit.
    #[error("the request body is too large")]
    PayloadTooLarge,
    /// The body is not `application/json`.
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    /// The caller's role may not do this.
    #[error("your role may not do this")]
    Forbidden,
    /// The resource is not in a state that allows this (an illegal escrow transition, a
    /// precondition that does not hold), or another request changed it first.
    #[error("{detail}")]
    Conflict {
        /// A stable code: `illegal_transition`, `guard_failed` or `lost_race`.
        code: &'static str,
        /// What was refused.
        detail: String,
    },
    /// Too many key operations; retry after the given seconds.
    #[error("rate limit exceeded for {scope}")]
    RateLimited {
        /// "user" or "identity".
        scope: &'static str,
        /// Seconds until the window resets.
        retry_after: u64,
    },
    /// A request with this Idempotency-Key is still running.
    #[error("a request with this Idempotency-Key is still in progress")]
    IdempotencyInProgress,
    /// This Idempotency-Key was used with a different request.
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyMismatch,
    /// This Idempotency-Key was used more than 5 minutes ago; its response is no longer replayed.
    #[error("this Idempotency-Key was used outside the replay window; use a new key")]
    IdempotencyExpired,
    /// A provider webhook whose signature is missing, wrong or outside the time tolerance.
    #[error("{0}")]
    WebhookRefused(String),
    /// A service the api depends on (payment provider, artifact store) is not configured or
    /// cannot be reached; retry after the given seconds.
    #[error("{detail}")]
    ServiceUnavailable {
        /// A stable code, e.g. `payments_unavailable`.
        code: &'static str,
        /// What is unavailable.
        detail: String,
        /// Seconds to wait before retrying.
        retry_after: u64,
    },
    /// A service the api depends on refused or answered nonsense; retrying will not help.
    #[error("{detail}")]
    BadGateway {
        /// A stable code, e.g. `payment_provider_refused`.
        code: &'static str,
        /// What went wrong (never a secret or a request body).
        detail: String,
    },
    /// Storage failed.
    #[error("storage error")]
    Store(#[from] crate::store::StoreError),
    /// An unexpected failure; details are logged, not returned.
    #[error("internal error")]
    Internal(String),
}

/// An RFC 9457 problem document, as every error is answered.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem<'a> {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP reason phrase.
    pub title: &'a str,
    /// The HTTP status.
    pub status: u16,
    /// A stable machine-readable code.
    pub code: &'a str,
    /// A human explanation.
    pub detail: String,
}

/// Renders an RFC 9457 problem document: the one shape every refusal of the api takes.
pub fn problem_response(status: StatusCode, code: &str, detail: String) -> Response {
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
    resp
}

/// How an audit row records an outcome: `("ok", None)`, or `("refused" | "error", code)` —
/// "error" when the failure was ours (5xx), "refused" when the request was.
pub fn audit_outcome<T>(result: &Result<T, ApiError>) -> (&'static str, Option<&'static str>) {
    match result {
        Ok(_) => ("ok", None),
        Err(e) => {
            let (outcome, code) = e.audit_outcome();
            (outcome, Some(code))
        }
    }
}

impl ApiError {
    /// How an audit row records this failure: `("refused" | "error", code)`.
    pub fn audit_outcome(&self) -> (&'static str, &'static str) {
        let (status, code) = self.status_and_code();
        let outcome = if status.is_server_error() {
            "error"
        } else {
            "refused"
        };
        (outcome, code)
    }

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
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::IdempotencyInProgress => (StatusCode::CONFLICT, "idempotency_in_progress"),
            ApiError::IdempotencyMismatch => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
            ApiError::IdempotencyExpired => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_expired")
            }
            ApiError::WebhookRefused(_) => (StatusCode::BAD_REQUEST, "webhook_refused"),
            ApiError::ServiceUnavailable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            ApiError::BadGateway { code, .. } => (StatusCode::BAD_GATEWAY, code),
            ApiError::Store(_) | ApiError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
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
            ApiError::Store(e) => {
                tracing::error!(error = %e, "storage error");
                "an internal error occurred".to_string()
            }
            other => other.to_string(),
        };
        let mut resp = problem_response(status, code, detail);
        let retry_after = match &self {
            ApiError::EnclaveUnavailable { retry_after, .. }
            | ApiError::RateLimited { retry_after, .. }
            | ApiError::ServiceUnavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        if let Some(retry_after) = retry_after
            && let Ok(v) = HeaderValue::from_str(&retry_after.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
