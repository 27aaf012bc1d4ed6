//! The verifier: envelope → payload → certificates → chain signatures → validity → document
//! signature → policy, stopping at the first failure (see [`Check`](crate::Check)).
//!
//! It takes bytes, a policy and a time, and reads no clock or file. [`Verifier`] may keep a
//! cache of certificates it already parsed and whose signature it already checked, keyed by
//! their exact DER bytes; position-dependent rules (CA flags, pathLen, names), validity
//! periods and the document's own signature are checked on every call regardless.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use enclosure_policy::attestation::{AttestationPolicy, AttestedClaims};

use crate::chain::CertInfo;
use crate::cose::{self, CoseSign1};
use crate::document::{TrustAnchor, VerifiedDocument};
use crate::error::{CertSlot, VerifyError};
use crate::payload::{self, Payload};

/// The AWS Nitro Enclaves Root G1 certificate (DER), pinned: the only built-in trust anchor.
pub const AWS_NITRO_ROOT_G1_DER: &[u8] = include_bytes!("aws_nitro_root_g1.der");

/// SHA-256 of [`AWS_NITRO_ROOT_G1_DER`], as AWS publishes it.
pub const AWS_NITRO_ROOT_G1_SHA256: &str =
    "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b";

/// Entries kept before the cache is emptied; bounds memory under hostile input.
const CACHE_CAPACITY: usize = 1024;
/// Issuer keys remembered per cached certificate.
const MAX_SIGNERS_PER_CERT: usize = 4;

/// Verifies one document without any cache; see [`Verifier::verify`].
pub fn verify(
    document: &[u8],
    policy: &AttestationPolicy,
    at: SystemTime,
) -> Result<VerifiedDocument, VerifyError> {
    Verifier::uncached().verify(document, policy, at)
}

struct CacheEntry {
    info: Arc<CertInfo>,
    /// Issuer public keys under which this certificate's signature verified.
    signed_by: Vec<Vec<u8>>,
}

/// A document verifier, optionally caching verified certificates between calls.
pub struct Verifier {
    cache: Option<Mutex<HashMap<Vec<u8>, CacheEntry>>>,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier::new()
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("cached", &self.cache.is_some())
            .finish()
    }
}

impl Verifier {
    /// A verifier with a certificate cache (for servers and clients verifying repeatedly).
    pub fn new() -> Self {
        Verifier {
            cache: Some(Mutex::new(HashMap::new())),
        }
    }

    /// A verifier that checks everything from scratch on every call.
    pub fn uncached() -> Self {
        Verifier { cache: None }
    }

    /// Verifies `document` under `policy` at time `at`, and returns its fields only if
    /// every check passes.
    pub fn verify(
        &self,
        document: &[u8],
        policy: &AttestationPolicy,
        at: SystemTime,
    ) -> Result<VerifiedDocument, VerifyError> {
        let cose = cose::parse(document)?;
        let payload = payload::parse(&cose.payload)?;
        self.verify_parsed(&cose, payload, policy, at)
    }

    /// Verifies `document` at the time it claims it was made (its own, still unauthenticated
    /// timestamp, which the signature then covers).
    ///
    /// For archived documents whose certificates have since expired. It says the document
    /// was genuine when made, not that it is fresh: the policy's age limit is met trivially.
    pub fn verify_at_document_time(
        &self,
        document: &[u8],
        policy: &AttestationPolicy,
    ) -> Result<VerifiedDocument, VerifyError> {
        let cose = cose::parse(document)?;
        let payload = payload::parse(&cose.payload)?;
        let at = UNIX_EPOCH + Duration::from_millis(payload.timestamp_ms);
        self.verify_parsed(&cose, payload, policy, at)
    }

    fn verify_parsed(
        &self,
        cose: &CoseSign1,
        payload: Payload,
        policy: &AttestationPolicy,
        at: SystemTime,
    ) -> Result<VerifiedDocument, VerifyError> {
        // The chain, top down: our own copy of the trusted root (never a certificate the
        // document merely offers), then cabundle[1..], then the leaf.
        let (root_der, anchor) = trusted_root(&payload.cabundle[0], policy)?;
        let mut ders: Vec<(&[u8], CertSlot)> = Vec::with_capacity(payload.cabundle.len() + 1);
        ders.push((root_der, CertSlot::Bundle(0)));
        for (i, der) in payload.cabundle.iter().enumerate().skip(1) {
            ders.push((der, CertSlot::Bundle(i)));
        }
        ders.push((&payload.certificate, CertSlot::Leaf));

        // Certificates: profile and names.
        let infos = ders
            .iter()
            .map(|&(der, slot)| self.cert(der, slot))
            .collect::<Result<Vec<_>, _>>()?;
        let last = infos.len() - 1;
        for (k, info) in infos.iter().enumerate() {
            let slot = ders[k].1;
            if k == last {
                info.check_leaf()?;
            } else {
                // CAs strictly between this one and the leaf.
                info.check_ca(slot, last - k - 1)?;
            }
            if k > 0 {
                info.check_issued_by(&infos[k - 1], slot)?;
            }
        }

        // Chain signatures, each with the key of the certificate above.
        for k in 1..infos.len() {
            let (der, slot) = ders[k];
            self.check_signature(der, &infos[k], infos[k - 1].public_key(), slot)?;
        }

        // Validity at `at`, every time (never cached).
        for (info, &(_, slot)) in infos.iter().zip(&ders) {
            info.check_valid_at(at, slot)?;
        }

        // The document's signature over the Sig_structure with the payload bytes as received.
        // aws-lc accepts high-S signatures, which real NSM documents contain.
        let to_sign = crate::cbor::sig_structure(&cose.protected, &cose.payload);
        if !infos[last].verify_cose(&to_sign, &cose.signature) {
            return Err(VerifyError::DocumentSignature);
        }

        policy.check(
            &AttestedClaims {
                timestamp_ms: payload.timestamp_ms,
                pcrs: &payload.pcrs,
                nonce: payload.nonce.as_deref(),
                user_data: payload.user_data.as_deref(),
                public_key: payload.public_key.as_deref(),
            },
            at,
        )?;
        Ok(VerifiedDocument::new(payload, anchor))
    }

    fn lock(
        cache: &Mutex<HashMap<Vec<u8>, CacheEntry>>,
    ) -> MutexGuard<'_, HashMap<Vec<u8>, CacheEntry>> {
        // A panic elsewhere cannot leave an entry half-written (inserts are single calls).
        cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cert(&self, der: &[u8], slot: CertSlot) -> Result<Arc<CertInfo>, VerifyError> {
        let Some(cache) = &self.cache else {
            return CertInfo::parse(der, slot).map(Arc::new);
        };
        if let Some(entry) = Self::lock(cache).get(der) {
            return Ok(Arc::clone(&entry.info));
        }
        let info = Arc::new(CertInfo::parse(der, slot)?);
        let mut map = Self::lock(cache);
        if map.len() >= CACHE_CAPACITY {
            map.clear();
        }
        map.entry(der.to_vec()).or_insert_with(|| CacheEntry {
            info: Arc::clone(&info),
            signed_by: Vec::new(),
        });
        Ok(info)
    }

    fn check_signature(
        &self,
        der: &[u8],
        info: &CertInfo,
        issuer_key: &[u8],
        slot: CertSlot,
    ) -> Result<(), VerifyError> {
        if let Some(cache) = &self.cache
            && Self::lock(cache)
                .get(der)
                .is_some_and(|entry| entry.signed_by.iter().any(|key| key == issuer_key))
        {
            return Ok(());
        }
        info.check_signature(der, issuer_key, slot)?;
        if let Some(cache) = &self.cache
            && let Some(entry) = Self::lock(cache).get_mut(der)
            && entry.signed_by.len() < MAX_SIGNERS_PER_CERT
        {
            entry.signed_by.push(issuer_key.to_vec());
        }
        Ok(())
    }
}

/// `cabundle[0]` must be byte-identical to a trusted root: the built-in AWS root, or a dev
/// root the policy names. Returns our copy of it.
fn trusted_root<'p>(
    offered: &[u8],
    policy: &'p AttestationPolicy,
) -> Result<(&'p [u8], TrustAnchor), VerifyError> {
    if offered == AWS_NITRO_ROOT_G1_DER {
        return Ok((AWS_NITRO_ROOT_G1_DER, TrustAnchor::AwsNitroRoot));
    }
    policy
        .dev_roots()
        .iter()
        .find(|root| root.as_slice() == offered)
        .map(|root| (root.as_slice(), TrustAnchor::DevRoot))
        .ok_or(VerifyError::UntrustedRoot)
}
