//! Why a document fails verification: one error enum, and the ordered checks it maps to.

use std::fmt;
use std::time::SystemTime;

use enclosure_policy::attestation::PolicyViolation;

/// The name errors use for the payload (as opposed to the document or a header).
pub(crate) const PAYLOAD: &str = "payload";

/// A certificate's place in a document: the leaf (`certificate`) or `cabundle[i]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertSlot {
    /// The leaf certificate whose key signs the document.
    Leaf,
    /// `cabundle[i]`; `cabundle[0]` is the root.
    Bundle(usize),
}

impl fmt::Display for CertSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertSlot::Leaf => f.write_str("certificate"),
            CertSlot::Bundle(i) => write!(f, "cabundle[{i}]"),
        }
    }
}

/// The checks of a verification, in the order the verifier runs them.
///
/// Verification stops at the first failure, so every check before
/// [`VerifyError::check`] passed and every check after it did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Check {
    /// COSE_Sign1 structure, protected header `{1: -35}`, sizes, no trailing bytes.
    Envelope,
    /// Payload CBOR map: no duplicate keys, AWS field rules.
    Payload,
    /// Certificates: P-384/ecdsa-with-SHA384, extensions, names, root trusted.
    Certificates,
    /// Each certificate is signed by the next one up, to a trusted root.
    ChainSignatures,
    /// Every certificate is valid at the verification time.
    Validity,
    /// The document's ES384 signature with the leaf key.
    DocumentSignature,
    /// Policy: debug-mode documents.
    DebugMode,
    /// Policy: allowed PCR sets.
    Measurement,
    /// Policy: maximum age and future skew of the timestamp.
    Freshness,
    /// Policy: expected nonce, user_data and public_key.
    BoundFields,
}

impl Check {
    /// Every check, in the order they run.
    pub const ALL: [Check; 10] = [
        Check::Envelope,
        Check::Payload,
        Check::Certificates,
        Check::ChainSignatures,
        Check::Validity,
        Check::DocumentSignature,
        Check::DebugMode,
        Check::Measurement,
        Check::Freshness,
        Check::BoundFields,
    ];

    /// A short human name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Check::Envelope => "COSE_Sign1 envelope",
            Check::Payload => "payload fields",
            Check::Certificates => "certificate profile and names",
            Check::ChainSignatures => "certificate chain signatures",
            Check::Validity => "certificate validity period",
            Check::DocumentSignature => "document signature (ES384)",
            Check::DebugMode => "debug mode",
            Check::Measurement => "PCR measurements",
            Check::Freshness => "timestamp freshness",
            Check::BoundFields => "nonce / user_data / public_key",
        }
    }
}

/// Why an attestation document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The document is larger than any NSM document can be; refused before parsing.
    #[error("document is {len} bytes, more than the {max} an NSM document can have")]
    DocumentTooLarge {
        /// The document's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes end inside a CBOR item: a truncated document.
    #[error("the {0} is truncated")]
    Truncated(&'static str),
    /// The bytes are not well-formed CBOR (or nest too deeply).
    #[error("the {0} is not well-formed CBOR")]
    MalformedCbor(&'static str),
    /// Bytes follow the CBOR item; an attacker could hide data there, so it is refused.
    #[error("trailing bytes after the {0}")]
    TrailingBytes(&'static str),
    /// Not a COSE_Sign1: not a 4-element array, tagged with something other than 18, or
    /// with members of the wrong types.
    #[error("not a COSE_Sign1 structure: {0}")]
    NotCoseSign1(&'static str),
    /// The protected header is not exactly `{1: -35}` (ES384), the only algorithm the NSM
    /// uses; anything else may be an algorithm-substitution attempt.
    #[error("protected header is not exactly {{1: -35}} (ES384)")]
    UnsupportedAlgorithm,
    /// The unprotected header is not empty, as it always is in NSM documents.
    #[error("unprotected header is not empty")]
    UnprotectedHeader,
    /// The signature is not a 96-byte r‖s ES384 signature.
    #[error("signature is {0} bytes, not the 96 of an ES384 r||s signature")]
    SignatureLength(usize),
    /// The payload is empty or larger than AWS's 16 KiB limit.
    #[error("payload is {0} bytes, outside AWS's 1..=16384")]
    PayloadSize(usize),
    /// A CBOR map has the same key twice; parsers disagree on which one wins, so it is refused.
    #[error("duplicate key in the {0} map")]
    DuplicateKey(&'static str),
    /// A required payload field is absent.
    #[error("payload field {0} is missing")]
    MissingField(&'static str),
    /// The payload has a key the AWS format does not define.
    #[error("payload has a field the NSM format does not define")]
    UnknownField,
    /// A payload field breaks AWS's rules (type, size, value).
    #[error("payload field {field}: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// `cabundle[0]` is not a trusted root (the AWS root, or a dev root the policy names).
    #[error("cabundle[0] is not a trusted root certificate")]
    UntrustedRoot,
    /// A certificate is not DER X.509 (often a flipped byte in its structure).
    #[error("{0} is not a well-formed X.509 certificate")]
    MalformedCertificate(CertSlot),
    /// A certificate uses another key type or signature algorithm than P-384 with
    /// ecdsa-with-SHA384.
    #[error("{0} does not use a P-384 key with ecdsa-with-SHA384")]
    CertificateAlgorithm(CertSlot),
    /// A certificate's extensions break the profile: basicConstraints, pathLen, keyUsage,
    /// version, or an unknown critical extension.
    #[error("{slot}: {reason}")]
    CertificateProfile {
        /// The certificate.
        slot: CertSlot,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A certificate's issuer name is not its parent's subject name.
    #[error("{0}'s issuer is not the subject of the certificate above it")]
    NameChain(CertSlot),
    /// A certificate's signature does not verify with its parent's key: forged or altered.
    #[error("{0}'s signature does not verify with its issuer's key")]
    CertificateSignature(CertSlot),
    /// A certificate is expired or not yet valid at the verification time.
    #[error(
        "{slot} is not valid at the verification time (valid from {} to {})",
        Utc(*not_before),
        Utc(*not_after)
    )]
    CertificateNotValid {
        /// The certificate.
        slot: CertSlot,
        /// Start of its validity period.
        not_before: SystemTime,
        /// End of its validity period.
        not_after: SystemTime,
    },
    /// The document's ES384 signature does not verify with the leaf key: altered payload or
    /// a forged signature.
    #[error("document signature does not verify with the leaf certificate's key")]
    DocumentSignature,
    /// The document is authentic, but the policy refuses it.
    #[error("policy refuses the document: {0}")]
    Policy(#[from] PolicyViolation),
}

impl VerifyError {
    /// The check that failed.
    pub fn check(&self) -> Check {
        match self {
            VerifyError::Truncated(PAYLOAD)
            | VerifyError::MalformedCbor(PAYLOAD)
            | VerifyError::TrailingBytes(PAYLOAD) => Check::Payload,
            VerifyError::DocumentTooLarge { .. }
            | VerifyError::Truncated(_)
            | VerifyError::MalformedCbor(_)
            | VerifyError::TrailingBytes(_)
            | VerifyError::NotCoseSign1(_)
            | VerifyError::UnsupportedAlgorithm
            | VerifyError::UnprotectedHeader
            | VerifyError::SignatureLength(_)
            | VerifyError::PayloadSize(_) => Check::Envelope,
            VerifyError::DuplicateKey(_)
            | VerifyError::MissingField(_)
            | VerifyError::UnknownField
            | VerifyError::InvalidField { .. } => Check::Payload,
            VerifyError::UntrustedRoot
            | VerifyError::MalformedCertificate(_)
            | VerifyError::CertificateAlgorithm(_)
            | VerifyError::CertificateProfile { .. }
            | VerifyError::NameChain(_) => Check::Certificates,
            VerifyError::CertificateSignature(_) => Check::ChainSignatures,
            VerifyError::CertificateNotValid { .. } => Check::Validity,
            VerifyError::DocumentSignature => Check::DocumentSignature,
            VerifyError::Policy(violation) => match violation {
                PolicyViolation::DebugMode => Check::DebugMode,
                PolicyViolation::PcrMissing(_) | PolicyViolation::PcrMismatch(_) => {
                    Check::Measurement
                }
                PolicyViolation::TooOld { .. } | PolicyViolation::FromFuture { .. } => {
                    Check::Freshness
                }
                _ => Check::BoundFields,
            },
        }
    }
}

/// Shows a time as RFC 3339 UTC with second precision, without a date-time dependency.
struct Utc(SystemTime);

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ok(since) = self.0.duration_since(std::time::UNIX_EPOCH) else {
            return f.write_str("before 1970");
        };
        let secs = since.as_secs();
        let (days, rem) = (secs / 86_400, secs % 86_400);
        // Civil date from days since 1970-01-01 (H. Hinnant's days_from_civil, inverted).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn utc_display() {
        let at = |secs| Utc(UNIX_EPOCH + Duration::from_secs(secs)).to_string();
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(1_657_127_902), "2022-07-06T17:18:22Z");
        assert_eq!(at(1_709_164_800), "2024-02-29T00:00:00Z");
        assert_eq!(at(2519044085), "2049-10-28T14:28:05Z");
    }
}
