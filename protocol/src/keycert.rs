//! Key certificates: the enclave's statement, signed by its attested instance key, that a key
//! id belongs to an identity and has a given public key.
//!
//! A client that has verified an attestation document learns the instance key from it; with
//! that key it can check every key certificate the api relays, so a host that swaps keys is
//! caught.

use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::pkcs8::DecodePublicKey;
use serde::{Deserialize, Serialize};

use crate::{ProtocolError, Result};

/// Domain separation: an instance-key signature over a key certificate can never be mistaken
/// for a signature over anything else.
const KEYCERT_DOMAIN: &[u8] = b"enclosure/keycert/v1\0";
/// The key certificate format version.
pub const KEYCERT_VERSION: u8 = 1;

/// What a key certificate states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCertificateBody {
    /// Format version, [`KEYCERT_VERSION`].
    pub version: u8,
    /// The key id.
    pub key_id: String,
    /// The identity that owns the key.
    pub identity_id: String,
    /// The key's public key, SPKI DER.
    #[serde(with = "serde_bytes")]
    pub public_key: Vec<u8>,
    /// Unix seconds at creation.
    pub created_at: u64,
}

/// A body and the instance key's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCertificate {
    /// CBOR of [`KeyCertificateBody`], kept as bytes so the signature covers exactly these.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// ECDSA P-384/SHA-384 signature (DER) by the instance key over domain ‖ body.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

fn signed_bytes(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(KEYCERT_DOMAIN.len() + body.len());
    m.extend_from_slice(KEYCERT_DOMAIN);
    m.extend_from_slice(body);
    m
}

impl KeyCertificate {
    /// Signs `body` with the instance key.
    pub fn issue(body: &KeyCertificateBody, instance_key: &SigningKey) -> Result<Self> {
        let body = serde_cbor::to_vec(body).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        let sig: Signature = instance_key.sign(&signed_bytes(&body));
        Ok(KeyCertificate {
            body,
            signature: sig.to_der().as_bytes().to_vec(),
        })
    }

    /// Encodes the certificate as CBOR, as it travels.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_cbor::to_vec(self).map_err(|e| ProtocolError::Malformed(e.to_string()))
    }

    /// Decodes a certificate from CBOR.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        serde_cbor::from_slice(bytes).map_err(|e| ProtocolError::Malformed(e.to_string()))
    }

    /// Verifies the signature with the instance public key (SPKI DER) and returns the body.
    pub fn verify(&self, instance_public_key_der: &[u8]) -> Result<KeyCertificateBody> {
        let vk = VerifyingKey::from_public_key_der(instance_public_key_der)
            .map_err(|_| ProtocolError::KeyCertificate("instance key is not a P-384 SPKI"))?;
        let sig = Signature::from_der(&self.signature)
            .map_err(|_| ProtocolError::KeyCertificate("signature is not DER ECDSA"))?;
        vk.verify(&signed_bytes(&self.body), &sig)
            .map_err(|_| ProtocolError::KeyCertificate("signature does not verify"))?;
        let body: KeyCertificateBody = serde_cbor::from_slice(&self.body)
            .map_err(|_| ProtocolError::KeyCertificate("body is not a key certificate"))?;
        if body.version != KEYCERT_VERSION {
            return Err(ProtocolError::KeyCertificate("unsupported version"));
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p384::pkcs8::EncodePublicKey;

    #[test]
    fn issue_verify_and_tamper() {
        let instance = SigningKey::random(&mut rand_core::OsRng);
        let spki = instance
            .verifying_key()
            .to_public_key_der()
            .unwrap()
            .into_vec();
        let body = KeyCertificateBody {
            version: KEYCERT_VERSION,
            key_id: "k1".into(),
            identity_id: "i1".into(),
            public_key: vec![1, 2, 3],
            created_at: 5,
        };
        let cert = KeyCertificate::issue(&body, &instance).unwrap();
        let back = KeyCertificate::from_bytes(&cert.to_bytes().unwrap()).unwrap();
        assert_eq!(back.verify(&spki).unwrap(), body);

        let mut tampered = back.clone();
        let last = tampered.body.len() - 1;
        tampered.body[last] ^= 1;
        assert!(tampered.verify(&spki).is_err());

        let other = SigningKey::random(&mut rand_core::OsRng);
        let other_spki = other
            .verifying_key()
            .to_public_key_der()
            .unwrap()
            .into_vec();
        assert!(back.verify(&other_spki).is_err());
    }
}
