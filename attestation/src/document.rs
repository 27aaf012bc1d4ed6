//! A verified attestation document: the only way to read a document's fields.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::payload::{PCR_LEN, Payload};

/// Which trusted root a document chains to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustAnchor {
    /// The AWS Nitro Enclaves Root G1, built in: the document comes from Nitro hardware.
    AwsNitroRoot,
    /// A dev root the policy named: the document comes from a dev attester.
    DevRoot,
}

/// An attestation document whose envelope, chain, signature and policy all checked out.
///
/// It can only be made by the verifier, so holding one means the fields below were signed
/// by an enclave the policy accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDocument {
    payload: Payload,
    anchor: TrustAnchor,
}

impl VerifiedDocument {
    pub(crate) fn new(payload: Payload, anchor: TrustAnchor) -> Self {
        VerifiedDocument { payload, anchor }
    }

    /// The issuing NSM's module id (instance and enclave id).
    pub fn module_id(&self) -> &str {
        &self.payload.module_id
    }

    /// When the NSM made the document, milliseconds since the Unix epoch.
    pub fn timestamp_ms(&self) -> u64 {
        self.payload.timestamp_ms
    }

    /// When the NSM made the document.
    pub fn timestamp(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.payload.timestamp_ms)
    }

    /// The PCRs by index (SHA-384 values).
    pub fn pcrs(&self) -> &BTreeMap<u8, [u8; PCR_LEN]> {
        &self.payload.pcrs
    }

    /// One PCR, if the document has it.
    pub fn pcr(&self, index: u8) -> Option<&[u8; PCR_LEN]> {
        self.payload.pcrs.get(&index)
    }

    /// Whether the enclave runs in debug mode (PCR0 all zero).
    pub fn is_debug(&self) -> bool {
        self.pcr(0).is_some_and(|pcr0| pcr0.iter().all(|&b| b == 0))
    }

    /// The leaf certificate (DER) whose key signed the document.
    pub fn certificate(&self) -> &[u8] {
        &self.payload.certificate
    }

    /// The CA bundle (DER), root first.
    pub fn cabundle(&self) -> &[Vec<u8>] {
        &self.payload.cabundle
    }

    /// The public key the enclave bound into the document, if any.
    pub fn public_key(&self) -> Option<&[u8]> {
        self.payload.public_key.as_deref()
    }

    /// The user data bound into the document, if any.
    pub fn user_data(&self) -> Option<&[u8]> {
        self.payload.user_data.as_deref()
    }

    /// The nonce bound into the document, if any.
    pub fn nonce(&self) -> Option<&[u8]> {
        self.payload.nonce.as_deref()
    }

    /// The root the chain ends at.
    pub fn trust_anchor(&self) -> TrustAnchor {
        self.anchor
    }
}
