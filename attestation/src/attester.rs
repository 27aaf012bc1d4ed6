//! The attester seam: one trait that produces attestation documents and entropy, with a Nitro
//! (NSM) implementation and a dev (software NSM) implementation.

use std::fmt;

/// Largest `public_key` an attestation request may carry (the NSM's limit).
pub const MAX_PUBLIC_KEY_LEN: usize = 1024;
/// Largest `user_data` an attestation request may carry (the NSM's limit).
pub const MAX_USER_DATA_LEN: usize = 512;
/// Largest `nonce` an attestation request may carry (the NSM's limit).
pub const MAX_NONCE_LEN: usize = 512;

/// Which kind of attester produced a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttesterMode {
    /// The Nitro Secure Module on real hardware: documents chain to the AWS root.
    Nitro,
    /// The software dev attester: documents chain to a local dev root that production refuses.
    Dev,
}

impl fmt::Display for AttesterMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttesterMode::Nitro => "nitro",
            AttesterMode::Dev => "dev",
        })
    }
}

/// The caller-chosen fields an attestation document binds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttestationRequest<'a> {
    /// A public key the document vouches for (the enclave's instance key), at most 1024 bytes.
    pub public_key: Option<&'a [u8]>,
    /// Application data bound into the document, at most 512 bytes.
    pub user_data: Option<&'a [u8]>,
    /// The verifier's freshness nonce, at most 512 bytes.
    pub nonce: Option<&'a [u8]>,
}

impl AttestationRequest<'_> {
    /// Checks the NSM's size limits, so both attesters refuse the same requests.
    pub fn check_limits(&self) -> Result<(), AttesterError> {
        let fields = [
            ("public_key", self.public_key, MAX_PUBLIC_KEY_LEN),
            ("user_data", self.user_data, MAX_USER_DATA_LEN),
            ("nonce", self.nonce, MAX_NONCE_LEN),
        ];
        for (field, value, max) in fields {
            if let Some(value) = value
                && value.len() > max
            {
                return Err(AttesterError::InputTooLarge {
                    field,
                    len: value.len(),
                    max,
                });
            }
        }
        Ok(())
    }
}

/// Produces attestation documents (COSE_Sign1 bytes in the NSM format) and entropy.
pub trait Attester: Send + Sync + 'static {
    /// Whether documents come from Nitro hardware or from the dev attester.
    fn mode(&self) -> AttesterMode;
    /// The PCR0 this attester reports (the enclave image measurement).
    fn measurement(&self) -> [u8; 48];
    /// Makes an attestation document binding the request's fields.
    fn attest(&self, req: &AttestationRequest<'_>) -> Result<Vec<u8>, AttesterError>;
    /// Fills `buf` with random bytes from the attester's entropy source.
    fn fill_random(&self, buf: &mut [u8]) -> Result<(), AttesterError>;
}

/// Why an attester could not produce a document or entropy. Never carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttesterError {
    /// A request field exceeds the NSM's size limit; the NSM would refuse it too.
    #[error("{field} is {len} bytes, more than the {max} allowed")]
    InputTooLarge {
        /// The request field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Reading or writing the dev CA directory failed.
    #[error("dev CA file {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A stored dev CA file is not what the dev attester wrote (corrupt or foreign).
    #[error("dev CA file {path} is invalid: {reason}")]
    InvalidDevCa {
        /// The file involved.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Making a certificate or key failed.
    #[error("certificate generation failed: {0}")]
    Certificate(String),
    /// Signing the document failed.
    #[error("signing the attestation document failed")]
    Signing,
    /// The entropy source failed.
    #[error("the random number source failed")]
    Random,
    /// `/dev/nsm` could not be opened: not inside a Nitro enclave.
    #[error("the Nitro Secure Module (/dev/nsm) is not available")]
    NsmUnavailable,
    /// The NSM answered a request with an error code.
    #[error("the Nitro Secure Module refused the request: {0}")]
    Nsm(String),
    /// The NSM answered with a response of the wrong kind.
    #[error("the Nitro Secure Module gave an unexpected response")]
    NsmUnexpectedResponse,
}
