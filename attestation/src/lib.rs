//! Nitro attestation documents for Enclosure: the verifier with the AWS Nitro root pinned, the
//! attester seam, the NSM attester and the dev attester (a software NSM with its own CA).
//!
//! Verification takes bytes, a policy and a time, and returns either a
//! [`VerifiedDocument`] — the only way to read a document's fields — or a [`VerifyError`]:
//!
//! ```no_run
//! # fn demo(document: &[u8]) -> Result<(), enclosure_attestation::VerifyError> {
//! use enclosure_attestation::{AttestationPolicy, verify};
//! let verified = verify(document, &AttestationPolicy::default(), std::time::SystemTime::now())?;
//! println!("{} PCR0 {:02x?}", verified.module_id(), verified.pcr(0));
//! # Ok(()) }
//! ```
//!
//! Cargo features: `verifier` (document verification), `dev` ([`DevAttester`]), `nsm`
//! ([`NsmAttester`]); all three are on by default.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod attester;
#[cfg(any(feature = "dev", feature = "verifier"))]
mod cbor;
#[cfg(feature = "verifier")]
mod chain;
#[cfg(feature = "verifier")]
mod cose;
#[cfg(feature = "dev")]
mod dev;
#[cfg(feature = "verifier")]
mod document;
#[cfg(feature = "verifier")]
mod error;
#[cfg(feature = "nsm")]
mod nsm;
#[cfg(feature = "verifier")]
mod payload;
#[cfg(feature = "verifier")]
mod verifier;

pub use attester::{
    AttestationRequest, Attester, AttesterError, AttesterMode, MAX_NONCE_LEN, MAX_PUBLIC_KEY_LEN,
    MAX_USER_DATA_LEN,
};
#[cfg(feature = "dev")]
pub use dev::{DevAttester, dev_pcrs, dev_root_path};
#[cfg(feature = "verifier")]
pub use document::{TrustAnchor, VerifiedDocument};
pub use enclosure_policy::attestation::{AttestationPolicy, PcrSet, PolicyError, PolicyViolation};
#[cfg(feature = "verifier")]
pub use error::{CertSlot, Check, VerifyError};
#[cfg(feature = "nsm")]
pub use nsm::NsmAttester;
#[cfg(feature = "verifier")]
pub use verifier::{AWS_NITRO_ROOT_G1_DER, AWS_NITRO_ROOT_G1_SHA256, Verifier, verify};

/// Decodes a PEM `CERTIFICATE` (RFC 7468) to DER; `None` if the text is not one.
#[cfg(any(feature = "dev", feature = "verifier"))]
pub fn pem_certificate_to_der(pem: &[u8]) -> Option<Vec<u8>> {
    match der::pem::decode_vec(pem) {
        Ok(("CERTIFICATE", der)) => Some(der),
        _ => None,
    }
}
