//! [`HttpPaymentProvider`]: the [`PaymentProvider`] that speaks the sandbox provider's HTTP
//! API (the same API any production adapter must offer behind this trait).
//!
//! Every mutating call sends an `Idempotency-Key` header and the bearer API key. Status codes
//! map to [`ProviderError`] so the saga can tell "retry with the same key" (network errors,
//! 429, 5xx) from "stop and ask an admin" (4xx refusals).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{
    CreatePayment, PaymentProvider, ProviderError, ProviderFuture, ProviderPayment, ProviderRefund,
    ProviderTransfer, Refund, Secret, Transfer,
};

/// The header that makes a mutating call idempotent.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// How long one provider call may take before it counts as unavailable.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the provider.
#[derive(Debug, Clone)]
pub struct HttpProviderConfig {
    /// The provider's base URL, e.g. `http://127.0.0.1:8790`.
    pub base_url: String,
    /// The bearer API key.
    pub api_key: Secret,
    /// A PEM CA certificate to trust instead of the system roots (an https sandbox in dev).
    pub ca_pem: Option<Vec<u8>>,
    /// Per-call timeout.
    pub timeout: Duration,
}

/// The provider's error body.
#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    #[serde(default)]
    message: String,
}

/// A [`PaymentProvider`] over HTTP.
#[derive(Debug, Clone)]
pub struct HttpPaymentProvider {
    http: reqwest::Client,
    base: String,
    api_key: Secret,
}

impl HttpPaymentProvider {
    /// Builds the client. Fails only on an unreadable CA certificate or TLS setup.
    pub fn new(config: HttpProviderConfig) -> Result<Self, ProviderError> {
        // reqwest's rustls needs a process-wide provider; another caller may have set it.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &config.ca_pem {
            let cert = reqwest::Certificate::from_pem(pem).map_err(|_| {
                ProviderError::InvalidResponse("the provider CA is not a PEM certificate".into())
            })?;
            builder = builder.tls_certs_only([cert]);
        }
        let http = builder
            .build()
            .map_err(|e| ProviderError::Unavailable(format!("building the HTTP client: {e}")))?;
        Ok(HttpPaymentProvider {
            http,
            base: config.base_url.trim_end_matches('/').to_string(),
            api_key: config.api_key,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        idempotency_key: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Result<T, ProviderError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.api_key.expose_str());
        if let Some(key) = idempotency_key {
            if key.is_empty() {
                return Err(ProviderError::Rejected {
                    code: "missing_idempotency_key".into(),
                    message: "every mutating call needs an idempotency key".into(),
                });
            }
            req = req.header(IDEMPOTENCY_HEADER, key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        // The URL is dropped from errors in case a base URL ever carries credentials; the API
        // key itself travels only in a header.
        let resp = req
            .send()
            .await
            .map_err(|e| ProviderError::Unavailable(e.without_url().to_string()))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ProviderError::Unavailable(e.without_url().to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| ProviderError::InvalidResponse(e.to_string()));
        }
        Err(error_for(status, &bytes))
    }
}

/// Maps a refusal to the error the saga acts on.
fn error_for(status: StatusCode, body: &[u8]) -> ProviderError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    match status {
        StatusCode::NOT_FOUND => ProviderError::NotFound,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ProviderError::Unauthorized,
        StatusCode::UNPROCESSABLE_ENTITY => ProviderError::IdempotencyConflict,
        StatusCode::TOO_MANY_REQUESTS => ProviderError::Unavailable("rate limited".into()),
        // 409 here means "the same key is still being processed": retry later.
        StatusCode::CONFLICT if parsed.as_ref().is_some_and(|b| b.code == "in_progress") => {
            ProviderError::Unavailable("the same idempotency key is in progress".into())
        }
        s if s.is_server_error() => ProviderError::Unavailable(format!("HTTP {}", s.as_u16())),
        s => match parsed {
            Some(b) => ProviderError::Rejected {
                code: b.code,
                message: b.message,
            },
            None => ProviderError::Rejected {
                code: format!("http_{}", s.as_u16()),
                message: String::new(),
            },
        },
    }
}

/// Payment and object ids go into URL paths, so only URL-safe ids are sent.
fn path_id(id: &str) -> Result<&str, ProviderError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(id)
    } else {
        Err(ProviderError::NotFound)
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<serde_json::Value, ProviderError> {
    serde_json::to_value(v).map_err(|e| ProviderError::InvalidResponse(e.to_string()))
}

impl PaymentProvider for HttpPaymentProvider {
    fn create_payment(&self, request: CreatePayment) -> ProviderFuture<'_, ProviderPayment> {
        Box::pin(async move {
            let body = to_value(&request)?;
            self.call(
                Method::POST,
                "/v1/payments",
                Some(&request.idempotency_key),
                Some(body),
            )
            .await
        })
    }

    fn get_payment<'a>(&'a self, id: &'a str) -> ProviderFuture<'a, ProviderPayment> {
        Box::pin(async move {
            let id = path_id(id)?;
            self.call(Method::GET, &format!("/v1/payments/{id}"), None, None)
                .await
        })
    }

    fn transfer(&self, request: Transfer) -> ProviderFuture<'_, ProviderTransfer> {
        Box::pin(async move {
            let body = to_value(&request)?;
            self.call(
                Method::POST,
                "/v1/transfers",
                Some(&request.idempotency_key),
                Some(body),
            )
            .await
        })
    }

    fn refund(&self, request: Refund) -> ProviderFuture<'_, ProviderRefund> {
        Box::pin(async move {
            let body = to_value(&request)?;
            self.call(
                Method::POST,
                "/v1/refunds",
                Some(&request.idempotency_key),
                Some(body),
            )
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_retryable_or_not() {
        let body = br#"{"code":"payment_not_escrowed","message":"pending"}"#;
        assert_eq!(
            error_for(StatusCode::BAD_REQUEST, body),
            ProviderError::Rejected {
                code: "payment_not_escrowed".into(),
                message: "pending".into()
            }
        );
        assert!(error_for(StatusCode::BAD_GATEWAY, b"").is_retryable());
        assert!(error_for(StatusCode::TOO_MANY_REQUESTS, b"").is_retryable());
        assert!(error_for(StatusCode::CONFLICT, br#"{"code":"in_progress"}"#).is_retryable());
        assert!(
            !error_for(StatusCode::CONFLICT, br#"{"code":"already_transferred"}"#).is_retryable()
        );
        assert_eq!(
            error_for(StatusCode::UNPROCESSABLE_ENTITY, b""),
            ProviderError::IdempotencyConflict
        );
        assert_eq!(
            error_for(StatusCode::UNAUTHORIZED, b""),
            ProviderError::Unauthorized
        );
    }

    #[test]
    fn only_url_safe_ids_reach_a_path() {
        assert!(path_id("pay_0123-abc").is_ok());
        for bad in ["", "../admin", "a/b", "a?b", "a b", &"x".repeat(129)] {
            assert_eq!(path_id(bad), Err(ProviderError::NotFound), "{bad}");
        }
    }

    #[test]
    fn debug_hides_the_api_key() {
        let p = HttpPaymentProvider::new(HttpProviderConfig {
            base_url: "http://127.0.0.1:1".into(),
            api_key: Secret::new("sk_test_hidden"),
            ca_pem: None,
            timeout: DEFAULT_TIMEOUT,
        })
        .unwrap();
        assert!(!format!("{p:?}").contains("sk_test_hidden"));
    }
}
