//! The payment-provider boundary: the [`PaymentProvider`] trait the escrow services call, its
//! HTTP client ([`http::HttpPaymentProvider`]), the provider's webhook events ([`events`]) and
//! the embedded sandbox provider ([`sandbox`]) that `enclosure up` runs as its own process.
//!
//! Every mutating call carries an idempotency key chosen by the caller, so a saga step that is
//! retried after a crash or a timeout has exactly one effect at the provider (threat T2). The
//! api never changes a payment's state on a caller's word: it waits for a signed provider
//! event, then fetches the payment back with [`PaymentProvider::get_payment`] (threat T7).

pub mod config;
pub mod events;
pub mod http;
pub mod sandbox;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use enclosure_policy::escrow::PaymentState;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The name payments are recorded under: one provider per deployment, whichever the
/// configured URL points at.
pub const PROVIDER_NAME: &str = "provider";

/// What a provider call returns: a boxed future, so `dyn PaymentProvider` works without
/// another dependency.
pub type ProviderFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, ProviderError>> + Send + 'a>>;

/// Why a provider call failed. Never carries an API key, a webhook secret or a request body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The provider could not be reached, timed out or failed on its side; retrying with the
    /// same idempotency key is safe.
    #[error("the payment provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the operation under its own rules (wrong state, bad amount);
    /// retrying unchanged will not help.
    #[error("the payment provider refused: {code}: {message}")]
    Rejected {
        /// The provider's stable code.
        code: String,
        /// The provider's explanation.
        message: String,
    },
    /// No such payment at the provider.
    #[error("the payment provider has no such object")]
    NotFound,
    /// The idempotency key was already used with a different request: a bug in the caller's
    /// key derivation, never to be retried.
    #[error("the idempotency key was already used with a different request")]
    IdempotencyConflict,
    /// The provider refused our API key: a configuration error.
    #[error("the payment provider refused our credentials")]
    Unauthorized,
    /// The provider answered something we cannot read.
    #[error("the payment provider sent an unreadable answer: {0}")]
    InvalidResponse(String),
}

impl ProviderError {
    /// Whether the same call, with the same idempotency key, may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProviderError::Unavailable(_))
    }
}

/// Where a payment stands at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderPaymentStatus {
    /// Created; the client has not paid.
    Pending,
    /// Paid; the provider holds the money.
    Succeeded,
    /// The client's payment failed.
    Failed,
    /// Paid out to the freelancer.
    Transferred,
    /// Returned to the client.
    Refunded,
}

impl ProviderPaymentStatus {
    /// The escrow payment state this provider status corresponds to, used to check a fetched
    /// payment agrees with the event before a transition.
    pub fn payment_state(self) -> PaymentState {
        match self {
            ProviderPaymentStatus::Pending => PaymentState::Pending,
            ProviderPaymentStatus::Succeeded => PaymentState::Escrowed,
            ProviderPaymentStatus::Failed => PaymentState::Failed,
            ProviderPaymentStatus::Transferred => PaymentState::Released,
            ProviderPaymentStatus::Refunded => PaymentState::Refunded,
        }
    }
}

/// A request to create a payment the client will pay into escrow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatePayment {
    /// Idempotency key: the same key always yields the same payment.
    #[serde(skip)]
    pub idempotency_key: String,
    /// The amount in minor units (cents).
    pub amount_minor: i64,
    /// ISO 4217 currency code, lower or upper case as the room's terms give it.
    pub currency: String,
    /// Our reference: the milestone id.
    pub reference: String,
}

/// A payment as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderPayment {
    /// The provider's payment id.
    pub id: String,
    /// Where it stands.
    pub status: ProviderPaymentStatus,
    /// The amount in minor units.
    pub amount_minor: i64,
    /// The currency.
    pub currency: String,
    /// Our reference (the milestone id).
    pub reference: String,
    /// The transfer that paid it out, once there is one.
    #[serde(default)]
    pub transfer_id: Option<String>,
    /// The refund that returned it, once there is one.
    #[serde(default)]
    pub refund_id: Option<String>,
}

/// A request to pay out an escrowed payment, less the platform fee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Idempotency key: the same key always yields the same transfer.
    #[serde(skip)]
    pub idempotency_key: String,
    /// The payment whose money is paid out.
    pub payment_id: String,
    /// The amount paid out, after the platform fee, in minor units.
    pub amount_minor: i64,
    /// The freelancer's id.
    pub destination: String,
}

/// A transfer as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderTransfer {
    /// The provider's transfer id.
    pub id: String,
    /// The payment paid out.
    pub payment_id: String,
    /// The amount paid out.
    pub amount_minor: i64,
    /// The freelancer's id.
    pub destination: String,
}

/// A request to return an escrowed payment to the client, in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    /// Idempotency key: the same key always yields the same refund.
    #[serde(skip)]
    pub idempotency_key: String,
    /// The payment to refund.
    pub payment_id: String,
}

/// A refund as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRefund {
    /// The provider's refund id.
    pub id: String,
    /// The payment refunded.
    pub payment_id: String,
    /// The amount returned.
    pub amount_minor: i64,
}

/// A payment provider, called with idempotency keys so every call may be retried safely.
///
/// Implementations: [`http::HttpPaymentProvider`] (the sandbox process, or any provider
/// speaking its API); tests may substitute their own.
pub trait PaymentProvider: Send + Sync {
    /// Creates a payment; the same idempotency key returns the same payment.
    fn create_payment(&self, request: CreatePayment) -> ProviderFuture<'_, ProviderPayment>;
    /// Fetches a payment as the provider sees it now.
    fn get_payment<'a>(&'a self, id: &'a str) -> ProviderFuture<'a, ProviderPayment>;
    /// Pays an escrowed payment out; the same idempotency key returns the same transfer.
    fn transfer(&self, request: Transfer) -> ProviderFuture<'_, ProviderTransfer>;
    /// Refunds an escrowed payment; the same idempotency key returns the same refund.
    fn refund(&self, request: Refund) -> ProviderFuture<'_, ProviderRefund>;
}

/// A secret string (API key or webhook secret): zeroized on drop, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// The secret's bytes, for the one place that needs them.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The secret as text, for an HTTP header.
    pub fn expose_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Reads a secret from a file (one line; surrounding whitespace dropped), refusing an empty
/// one so a blank file never becomes a key that anyone can reproduce.
pub fn read_secret_file(path: &std::path::Path) -> std::io::Result<Secret> {
    let text = Zeroizing::new(std::fs::read_to_string(path)?);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} holds an empty secret", path.display()),
        ));
    }
    Ok(Secret::new(trimmed))
}

/// Where `enclosure up` keeps the sandbox's API key and webhook secret, under the data dir.
pub fn dev_secret_paths(data_dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = data_dir.join("payments");
    (dir.join("api-key"), dir.join("webhook-secret"))
}

/// Creates a random API key and webhook secret for the dev sandbox (owner-only files), unless
/// they exist; returns their paths. Both the sandbox and the api read the same two files.
pub fn ensure_dev_secret_files(
    data_dir: &std::path::Path,
) -> std::io::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let (key_path, secret_path) = dev_secret_paths(data_dir);
    if let Some(dir) = key_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    for (path, prefix) in [(&key_path, "sk_dev_"), (&secret_path, "whsec_dev_")] {
        if !path.exists() {
            let random = Zeroizing::new(hex::encode(rand::random::<[u8; 32]>()));
            let value = Zeroizing::new(format!("{prefix}{}\n", random.as_str()));
            crate::tls::write_private(path, value.as_bytes())?;
        }
    }
    Ok((key_path, secret_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let s = Secret::new("sk_live_very_secret");
        assert!(!format!("{s:?}").contains("very_secret"));
        assert_eq!(s.expose(), b"sk_live_very_secret");
    }

    #[test]
    fn empty_secret_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, " \n").unwrap();
        assert!(read_secret_file(&p).is_err());
        std::fs::write(&p, "abc\n").unwrap();
        assert_eq!(read_secret_file(&p).unwrap().expose(), b"abc");
    }

    #[test]
    fn dev_secret_files_are_created_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (key, secret) = ensure_dev_secret_files(dir.path()).unwrap();
        let first = read_secret_file(&secret).unwrap();
        assert!(first.expose().starts_with(b"whsec_dev_"));
        assert_eq!(first.expose().len(), "whsec_dev_".len() + 64);
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        ensure_dev_secret_files(dir.path()).unwrap();
        assert_eq!(
            read_secret_file(&secret).unwrap(),
            first,
            "kept on the second run"
        );
        assert_ne!(read_secret_file(&key).unwrap(), first);
    }

    #[test]
    fn statuses_map_to_escrow_states() {
        assert_eq!(
            ProviderPaymentStatus::Succeeded.payment_state(),
            PaymentState::Escrowed
        );
        assert_eq!(
            ProviderPaymentStatus::Transferred.payment_state(),
            PaymentState::Released
        );
        assert!(ProviderError::Unavailable("x".into()).is_retryable());
        assert!(!ProviderError::NotFound.is_retryable());
    }
}
