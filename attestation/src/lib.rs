//! Nitro attestation documents for Enclosure: the verifier with the AWS Nitro root pinned, the
//! attester seam, the NSM attester and the dev attester (a software NSM with its own CA).
//!
//! Cargo features: `verifier` (document verification), `dev` ([`DevAttester`]), `nsm`
//! ([`NsmAttester`]); all three are on by default.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod attester;
#[cfg(any(feature = "dev", feature = "verifier"))]
mod cbor;
#[cfg(feature = "dev")]
mod dev;
#[cfg(feature = "nsm")]
mod nsm;

pub use attester::{
    AttestationRequest, Attester, AttesterError, AttesterMode, MAX_NONCE_LEN, MAX_PUBLIC_KEY_LEN,
    MAX_USER_DATA_LEN,
};
#[cfg(feature = "dev")]
pub use dev::{DevAttester, dev_pcrs, dev_root_path};
#[cfg(feature = "nsm")]
pub use nsm::NsmAttester;
