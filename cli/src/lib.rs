//! The Enclosure client SDK: talks to the api over HTTPS and trusts nothing it has not verified.
//!
//! Connecting fetches a fresh attestation document (random nonce), verifies it under the
//! caller's policy and learns the enclave's instance key from it. Every key certificate and
//! every signature the api returns is then checked against that key; a failure stops the
//! client with [`ClientError`] instead of handing back unverified data.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod client;

pub use client::{
    ClientError, ClientOptions, EnclosureClient, Identity, VerifiedKey, VerifiedSignature,
};
