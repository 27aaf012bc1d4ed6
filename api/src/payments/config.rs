//! The api's payment settings (a `[payments]` table) and what they load into: the provider
//! client and the webhook verifier.
//!
//! Secrets are read from files named in the configuration, never written in it, so the
//! configuration can be shown and logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use enclosure_policy::webhook::DEFAULT_TOLERANCE_SECS;
use serde::Deserialize;

use super::events::{EventError, ProviderEvent, verify_event};
use super::http::{DEFAULT_TIMEOUT, HttpPaymentProvider, HttpProviderConfig};
use super::{PaymentProvider, Secret, read_secret_file};

/// The `[payments]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsConfig {
    /// The provider's base URL (the sandbox: `http://127.0.0.1:8790`).
    pub provider_url: String,
    /// File holding the provider API key.
    pub api_key_file: PathBuf,
    /// Files holding every accepted webhook secret, newest first; two during a rotation.
    pub webhook_secret_files: Vec<PathBuf>,
    /// Seconds a webhook's signed timestamp may differ from our clock, either way.
    #[serde(default = "default_tolerance")]
    pub webhook_tolerance_secs: u64,
    /// A PEM CA certificate for an https provider URL with a private CA.
    #[serde(default)]
    pub provider_ca_file: Option<PathBuf>,
    /// Per-call timeout, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_tolerance() -> u64 {
    DEFAULT_TOLERANCE_SECS
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT.as_millis() as u64
}

/// Why the payment settings could not be loaded. Names files, never their contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PaymentsConfigError {
    /// A secret or CA file could not be read, or is empty.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No webhook secret is configured, so every webhook would be refused.
    #[error("payments.webhook_secret_files is empty")]
    NoWebhookSecrets,
    /// The tolerance is zero or longer than an hour.
    #[error("payments.webhook_tolerance_secs must be 1..=3600")]
    BadTolerance,
    /// The provider client could not be built.
    #[error("the payment provider client: {0}")]
    Provider(#[from] super::ProviderError),
}

/// Checks provider webhooks: every accepted secret and the tolerance.
#[derive(Debug, Clone)]
pub struct WebhookVerifier {
    secrets: Vec<Secret>,
    tolerance_secs: u64,
}

impl WebhookVerifier {
    /// A verifier for these secrets (newest first) and tolerance.
    pub fn new(secrets: Vec<Secret>, tolerance_secs: u64) -> Self {
        WebhookVerifier {
            secrets,
            tolerance_secs,
        }
    }

    /// Verifies one delivery: the `Stripe-Signature` header value, the raw body as received
    /// (before any JSON parsing), and the current unix time; returns the parsed event.
    pub fn verify(
        &self,
        signature: Option<&str>,
        raw_body: &[u8],
        now_secs: u64,
    ) -> Result<ProviderEvent, EventError> {
        verify_event(
            signature,
            raw_body,
            &self.secrets,
            now_secs,
            self.tolerance_secs,
        )
    }
}

/// The loaded payment settings.
#[derive(Clone)]
pub struct Payments {
    /// The provider client.
    pub provider: Arc<dyn PaymentProvider>,
    /// The webhook verifier.
    pub webhooks: WebhookVerifier,
}

impl std::fmt::Debug for Payments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payments")
            .field("webhooks", &self.webhooks)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Secret, PaymentsConfigError> {
    read_secret_file(path).map_err(|source| PaymentsConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl PaymentsConfig {
    /// Reads the secret files and builds the provider client and the verifier.
    pub fn load(&self) -> Result<Payments, PaymentsConfigError> {
        if self.webhook_secret_files.is_empty() {
            return Err(PaymentsConfigError::NoWebhookSecrets);
        }
        if !(1..=3600).contains(&self.webhook_tolerance_secs) {
            return Err(PaymentsConfigError::BadTolerance);
        }
        let secrets = self
            .webhook_secret_files
            .iter()
            .map(|p| read(p))
            .collect::<Result<Vec<_>, _>>()?;
        let ca_pem = match &self.provider_ca_file {
            Some(path) => {
                Some(
                    std::fs::read(path).map_err(|source| PaymentsConfigError::Read {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let provider = HttpPaymentProvider::new(HttpProviderConfig {
            base_url: self.provider_url.clone(),
            api_key: read(&self.api_key_file)?,
            ca_pem,
            timeout: Duration::from_millis(self.timeout_ms.max(1)),
        })?;
        Ok(Payments {
            provider: Arc::new(provider),
            webhooks: WebhookVerifier::new(secrets, self.webhook_tolerance_secs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path, files: &[&str]) -> PaymentsConfig {
        let text = format!(
            "provider_url = \"http://127.0.0.1:8790\"\napi_key_file = \"{}\"\nwebhook_secret_files = [{}]\n",
            dir.join("key").display(),
            files
                .iter()
                .map(|f| format!("\"{}\"", dir.join(f).display()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn loads_rotating_secrets_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "sk_test").unwrap();
        std::fs::write(dir.path().join("new"), "whsec_new\n").unwrap();
        std::fs::write(dir.path().join("old"), "whsec_old\n").unwrap();
        let cfg = config(dir.path(), &["new", "old"]);
        assert_eq!(cfg.webhook_tolerance_secs, 300);
        let payments = cfg.load().unwrap();
        let body = br#"{"id":"evt_1","type":"payment.succeeded","created":5,"data":{"payment_id":"pay_1"}}"#;
        for secret in [b"whsec_old".as_slice(), b"whsec_new"] {
            let sig = enclosure_policy::webhook::sign(secret, 1000, body);
            let event = payments.webhooks.verify(Some(&sig), body, 1100).unwrap();
            assert_eq!(event.id, "evt_1");
        }
        let shown = format!("{payments:?}");
        assert!(
            !shown.contains("whsec_") && !shown.contains("sk_test"),
            "{shown}"
        );
    }

    #[test]
    fn refuses_missing_or_empty_secrets_and_bad_tolerance() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "sk_test").unwrap();
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        assert!(matches!(
            config(dir.path(), &[]).load(),
            Err(PaymentsConfigError::NoWebhookSecrets)
        ));
        assert!(matches!(
            config(dir.path(), &["empty"]).load(),
            Err(PaymentsConfigError::Read { .. })
        ));
        assert!(matches!(
            config(dir.path(), &["absent"]).load(),
            Err(PaymentsConfigError::Read { .. })
        ));
        std::fs::write(dir.path().join("s"), "whsec").unwrap();
        let mut cfg = config(dir.path(), &["s"]);
        cfg.webhook_tolerance_secs = 0;
        assert!(matches!(cfg.load(), Err(PaymentsConfigError::BadTolerance)));
    }
}
