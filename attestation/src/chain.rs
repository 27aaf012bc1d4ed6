//! X.509 certificates of the attestation chain (RFC 5280), in AWS's profile.
//!
//! Every certificate must carry a P-384 key and an ecdsa-with-SHA384 signature, be X.509 v3,
//! and have no critical extension other than basicConstraints and keyUsage. CAs need
//! basicConstraints (critical, cA) with a pathLen that the chain below respects, and
//! keyUsage keyCertSign; the leaf must not be a CA and needs keyUsage digitalSignature.
//! AKI/SKI are not required: real AWS leaves lack them. Revocation does not exist in this
//! PKI (certificates live hours to days), so it is not checked.

use std::ops::Range;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{
    ECDSA_P384_SHA384_ASN1, ECDSA_P384_SHA384_FIXED, ParsedPublicKey, UnparsedPublicKey,
};
use der::oid::{AssociatedOid, ObjectIdentifier};
use der::{Decode, Encode, Reader, SliceReader};
use x509_cert::Certificate;
use x509_cert::certificate::Version;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};

use crate::error::{CertSlot, VerifyError};

/// ecdsa-with-SHA384 (RFC 5758 §3.2).
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
/// id-ecPublicKey (RFC 5480 §2.1.1).
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// secp384r1 (RFC 5480 §2.1.1.1).
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// An uncompressed P-384 point: 0x04 ‖ x ‖ y.
const P384_POINT_LEN: usize = 97;

/// What the verifier needs from one certificate, parsed once (and cached by DER bytes).
pub(crate) struct CertInfo {
    subject: Vec<u8>,
    issuer: Vec<u8>,
    not_before: Duration,
    not_after: Duration,
    public_key: Vec<u8>,
    basic_constraints: Option<BasicConstraints>,
    key_usage: Option<KeyUsage>,
    /// The TBSCertificate's exact bytes within the DER, which the signature covers.
    tbs: Range<usize>,
    signature: Vec<u8>,
    /// The key prepared for COSE (r‖s) signatures, made on first use: a cached leaf then
    /// skips parsing its key on every document.
    cose_key: OnceLock<Option<ParsedPublicKey>>,
}

impl CertInfo {
    /// Parses a certificate and checks the parts of the profile that do not depend on its
    /// place in the chain.
    pub(crate) fn parse(der: &[u8], slot: CertSlot) -> Result<Self, VerifyError> {
        let malformed = |_| VerifyError::MalformedCertificate(slot);
        let cert = Certificate::from_der(der).map_err(malformed)?;
        let tbs_cert = &cert.tbs_certificate;
        if tbs_cert.version != Version::V3 {
            return Err(profile(slot, "is not an X.509 v3 certificate"));
        }
        let algorithm_ok = |alg: &x509_cert::spki::AlgorithmIdentifierOwned| {
            alg.oid == ECDSA_WITH_SHA384 && alg.parameters.is_none()
        };
        if !algorithm_ok(&cert.signature_algorithm)
            || tbs_cert.signature != cert.signature_algorithm
        {
            return Err(VerifyError::CertificateAlgorithm(slot));
        }
        let spki = &tbs_cert.subject_public_key_info;
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        let public_key = spki.subject_public_key.as_bytes();
        let public_key = match (spki.algorithm.oid == EC_PUBLIC_KEY, curve, public_key) {
            (true, Some(SECP384R1), Some(point))
                if point.len() == P384_POINT_LEN && point[0] == 0x04 =>
            {
                point.to_vec()
            }
            _ => return Err(VerifyError::CertificateAlgorithm(slot)),
        };

        let mut basic_constraints = None;
        let mut key_usage = None;
        let mut seen = Vec::new();
        for ext in tbs_cert.extensions.iter().flatten() {
            // RFC 5280 §4.2: a certificate must not carry an extension twice.
            if seen.contains(&ext.extn_id) {
                return Err(profile(slot, "has an extension twice"));
            }
            seen.push(ext.extn_id);
            let value = ext.extn_value.as_bytes();
            if ext.extn_id == BasicConstraints::OID {
                if !ext.critical {
                    return Err(profile(slot, "has a non-critical basicConstraints"));
                }
                basic_constraints = Some(BasicConstraints::from_der(value).map_err(malformed)?);
            } else if ext.extn_id == KeyUsage::OID {
                key_usage = Some(KeyUsage::from_der(value).map_err(malformed)?);
            } else if ext.critical {
                // An extension we do not understand but must obey: refuse (RFC 5280 §4.2).
                return Err(profile(slot, "has an unknown critical extension"));
            }
        }

        let signature = cert
            .signature
            .as_bytes()
            .ok_or(VerifyError::MalformedCertificate(slot))?
            .to_vec();
        Ok(CertInfo {
            subject: tbs_cert.subject.to_der().map_err(malformed)?,
            issuer: tbs_cert.issuer.to_der().map_err(malformed)?,
            not_before: tbs_cert.validity.not_before.to_unix_duration(),
            not_after: tbs_cert.validity.not_after.to_unix_duration(),
            public_key,
            basic_constraints,
            key_usage,
            tbs: tbs_range(der).map_err(malformed)?,
            signature,
            cose_key: OnceLock::new(),
        })
    }

    /// The uncompressed P-384 public key point.
    pub(crate) fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// Checks a COSE ES384 signature (raw r‖s) over `message` with this certificate's key.
    pub(crate) fn verify_cose(&self, message: &[u8], signature: &[u8]) -> bool {
        self.cose_key
            .get_or_init(|| ParsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &self.public_key).ok())
            .as_ref()
            .is_some_and(|key| key.verify_sig(message, signature).is_ok())
    }

    /// Checks the CA profile; `cas_below` is the number of CA certificates between this one
    /// and the leaf, which its pathLen must allow.
    pub(crate) fn check_ca(&self, slot: CertSlot, cas_below: usize) -> Result<(), VerifyError> {
        let Some(bc) = &self.basic_constraints else {
            return Err(profile(slot, "is a CA without basicConstraints"));
        };
        if !bc.ca {
            return Err(profile(
                slot,
                "issues certificates but is not a CA (basicConstraints)",
            ));
        }
        if let Some(path_len) = bc.path_len_constraint
            && cas_below > usize::from(path_len)
        {
            return Err(profile(
                slot,
                "has more CAs below it than its pathLen allows",
            ));
        }
        match &self.key_usage {
            Some(ku) if ku.key_cert_sign() => Ok(()),
            _ => Err(profile(slot, "is a CA without keyUsage keyCertSign")),
        }
    }

    /// Checks the leaf profile: not a CA, allowed to sign.
    pub(crate) fn check_leaf(&self) -> Result<(), VerifyError> {
        if self.basic_constraints.as_ref().is_some_and(|bc| bc.ca) {
            return Err(profile(CertSlot::Leaf, "is a CA certificate, not a leaf"));
        }
        match &self.key_usage {
            Some(ku) if ku.digital_signature() => Ok(()),
            _ => Err(profile(CertSlot::Leaf, "lacks keyUsage digitalSignature")),
        }
    }

    /// Checks that `parent` names this certificate's issuer (exact DER name match).
    pub(crate) fn check_issued_by(
        &self,
        parent: &CertInfo,
        slot: CertSlot,
    ) -> Result<(), VerifyError> {
        if self.issuer == parent.subject {
            Ok(())
        } else {
            Err(VerifyError::NameChain(slot))
        }
    }

    /// Checks this certificate's signature (over the exact TBS bytes of `der`) with
    /// `issuer_key`. `der` must be the bytes this `CertInfo` was parsed from.
    pub(crate) fn check_signature(
        &self,
        der: &[u8],
        issuer_key: &[u8],
        slot: CertSlot,
    ) -> Result<(), VerifyError> {
        let tbs = der
            .get(self.tbs.clone())
            .ok_or(VerifyError::MalformedCertificate(slot))?;
        UnparsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, issuer_key)
            .verify(tbs, &self.signature)
            .map_err(|_| VerifyError::CertificateSignature(slot))
    }

    /// Checks the validity period at `at` (inclusive at both ends, RFC 5280 §4.1.2.5).
    pub(crate) fn check_valid_at(&self, at: SystemTime, slot: CertSlot) -> Result<(), VerifyError> {
        let at = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        if self.not_before <= at && at <= self.not_after {
            Ok(())
        } else {
            Err(VerifyError::CertificateNotValid {
                slot,
                not_before: UNIX_EPOCH + self.not_before,
                not_after: UNIX_EPOCH + self.not_after,
            })
        }
    }
}

/// Where the TBSCertificate lies within the certificate's DER: the first element of the
/// outer SEQUENCE, taken as received so the signature is checked over the original bytes.
fn tbs_range(der: &[u8]) -> der::Result<Range<usize>> {
    let mut reader = SliceReader::new(der)?;
    der::Header::decode(&mut reader)?;
    let start = usize::try_from(reader.position())?;
    let tbs = reader.tlv_bytes()?;
    Ok(start..start + tbs.len())
}

fn profile(slot: CertSlot, reason: &'static str) -> VerifyError {
    VerifyError::CertificateProfile { slot, reason }
}
