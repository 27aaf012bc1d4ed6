//! The signature section in nitro-cli's format: a CBOR list of `PcrSignature`s, each holding
//! a PEM certificate and a COSE_Sign1 (RFC 9052, ES384, untagged) over the CBOR `PcrInfo`
//! `{register_index: 0, register_value: PCR0}`.
//!
//! nitro-cli encodes both structs with serde's derive, so byte vectors are CBOR *arrays of
//! integers*, not byte strings; we produce the same bytes with the same derive. The
//! COSE_Sign1 is small and fixed in shape, so it is built by hand rather than pulling in a
//! COSE library and OpenSSL. Signing uses RFC 6979 nonces, so a signed image is as
//! reproducible as an unsigned one.

use der::{Decode, DecodePem, Encode};
use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::pkcs8::DecodePrivateKey;
use serde::{Deserialize, Serialize};
use x509_cert::Certificate;

use crate::error::{Error, Result};
use crate::measure::{Digest48, pcr8_for_certificate};

/// The COSE protected header nitro-cli writes: the map `{1 (alg): -35 (ES384)}`.
const PROTECTED_ES384: [u8; 4] = [0xa1, 0x01, 0x38, 0x22];
/// CBOR tag 18 marks a COSE_Sign1; nitro-cli writes it untagged but accepts either.
const COSE_SIGN1_TAG: u8 = 0xd2;

/// One entry of the signature section, field for field as nitro-cli serialises it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PcrSignature {
    signing_certificate: Vec<u8>,
    signature: Vec<u8>,
}

/// The signed payload, field for field as nitro-cli serialises it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PcrInfo {
    register_index: i32,
    register_value: Vec<u8>,
}

/// A P-384 key and its certificate, ready to sign images.
pub struct EifSigner {
    key: SigningKey,
    cert_pem: Vec<u8>,
    cert_der: Vec<u8>,
}

impl std::fmt::Debug for EifSigner {
    // The private key never appears in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EifSigner")
            .field("cert_der_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

impl EifSigner {
    /// Loads a PEM private key (PKCS#8 or SEC1) and a PEM certificate, and checks they match.
    pub fn from_pem(key_pem: &str, cert_pem: &[u8]) -> Result<Self> {
        let key = if key_pem.contains("BEGIN EC PRIVATE KEY") {
            p384::SecretKey::from_sec1_pem(key_pem).map_err(|e| Error::SigningKey(e.to_string()))?
        } else {
            p384::SecretKey::from_pkcs8_pem(key_pem)
                .map_err(|e| Error::SigningKey(e.to_string()))?
        };
        let key = SigningKey::from(key);
        let (cert_der, cert_key) = certificate_der_and_key(cert_pem)?;
        if cert_key != *key.verifying_key() {
            return Err(Error::KeyCertificateMismatch);
        }
        Ok(EifSigner {
            key,
            cert_pem: cert_pem.to_vec(),
            cert_der,
        })
    }

    /// The DER of the signing certificate (what PCR8 measures).
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The bytes of a signature section signing `pcr0`.
    pub fn signature_section(&self, pcr0: &Digest48) -> Result<Vec<u8>> {
        let payload = pcr_info_payload(pcr0)?;
        let to_be_signed = sig_structure(&payload);
        let sig: Signature = self.key.sign(&to_be_signed);
        let mut cose = vec![0x84];
        cbor_bytes(&mut cose, &PROTECTED_ES384);
        cose.push(0xa0); // empty unprotected header map
        cbor_bytes(&mut cose, &payload);
        cbor_bytes(&mut cose, &sig.to_bytes());
        let section = vec![PcrSignature {
            signing_certificate: self.cert_pem.clone(),
            signature: cose,
        }];
        serde_cbor::to_vec(&section).map_err(|e| Error::Signature(e.to_string()))
    }
}

/// What a signature section says, after checking it against the image's PCR0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SignatureInfo {
    /// PCR8: the extend of the certificate's DER.
    #[serde(serialize_with = "crate::describe::hex_ser")]
    pub pcr8: Digest48,
    /// The certificate's subject, RFC 4514.
    pub subject: String,
    /// The certificate's issuer, RFC 4514.
    pub issuer: String,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Whether the COSE signature verifies under the certificate's key and signs this PCR0.
    pub valid: bool,
    /// Why it does not, when `valid` is false.
    pub problem: Option<String>,
}

/// Parses a signature section and checks its first signature against `pcr0`.
///
/// A malformed section is an error (the image is refused, as nitro-cli refuses it); a
/// well-formed section whose signature does not verify is reported in [`SignatureInfo`], so
/// `describe` can still show the image.
pub fn inspect_signature_section(bytes: &[u8], pcr0: &Digest48) -> Result<SignatureInfo> {
    let list: Vec<PcrSignature> =
        serde_cbor::from_slice(bytes).map_err(|e| Error::Signature(e.to_string()))?;
    // nitro-cli uses the first entry (the PCR0 signature) and ignores any others.
    let first = list
        .first()
        .ok_or_else(|| Error::Signature("empty list of signatures".into()))?;
    let cert = Certificate::from_pem(&first.signing_certificate)
        .map_err(|e| Error::Certificate(e.to_string()))?;
    let (cert_der, key) = certificate_der_and_key(&first.signing_certificate)?;
    let tbs = &cert.tbs_certificate;
    let problem = check_cose(&first.signature, &key, pcr0).err();
    Ok(SignatureInfo {
        pcr8: pcr8_for_certificate(&cert_der),
        subject: tbs.subject.to_string(),
        issuer: tbs.issuer.to_string(),
        not_before: rfc3339(tbs.validity.not_before.to_unix_duration()),
        not_after: rfc3339(tbs.validity.not_after.to_unix_duration()),
        valid: problem.is_none(),
        problem,
    })
}

/// Checks a COSE_Sign1 from nitro-cli: ES384 protected header, signature, payload = PCR0.
fn check_cose(cose: &[u8], key: &VerifyingKey, pcr0: &Digest48) -> std::result::Result<(), String> {
    let cose = cose.strip_prefix(&[COSE_SIGN1_TAG]).unwrap_or(cose);
    let (protected, _unprotected, payload, signature): (
        serde_bytes::ByteBuf,
        serde_cbor::Value,
        serde_bytes::ByteBuf,
        serde_bytes::ByteBuf,
    ) = serde_cbor::from_slice(cose).map_err(|e| format!("not a COSE_Sign1: {e}"))?;
    if protected.as_slice() != PROTECTED_ES384 {
        return Err("protected header is not {alg: ES384}".into());
    }
    let sig = Signature::from_slice(&signature)
        .map_err(|_| "signature is not 96 bytes of r ‖ s".to_string())?;
    key.verify(&sig_structure(&payload), &sig)
        .map_err(|_| "COSE signature does not verify under the certificate's key".to_string())?;
    let expected = pcr_info_payload(pcr0).map_err(|e| e.to_string())?;
    if payload.as_slice() != expected {
        return Err("signed payload is not PcrInfo{0, PCR0 of this image}".into());
    }
    Ok(())
}

/// The CBOR PcrInfo for register 0 with value `pcr0`.
fn pcr_info_payload(pcr0: &Digest48) -> Result<Vec<u8>> {
    let info = PcrInfo {
        register_index: 0,
        register_value: pcr0.to_vec(),
    };
    serde_cbor::to_vec(&info).map_err(|e| Error::Signature(e.to_string()))
}

/// The COSE Sig_structure for a COSE_Sign1 with nitro's protected header and no external AAD.
fn sig_structure(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x84];
    cbor_text(&mut out, "Signature1");
    cbor_bytes(&mut out, &PROTECTED_ES384);
    cbor_bytes(&mut out, &[]);
    cbor_bytes(&mut out, payload);
    out
}

/// Decodes a single PEM certificate; returns its DER exactly as stored and its P-384 key.
///
/// Like nitro-cli (OpenSSL's `X509::from_pem`), only the first certificate of a chain counts.
fn certificate_der_and_key(pem: &[u8]) -> Result<(Vec<u8>, VerifyingKey)> {
    let (label, der) = der::pem::decode_vec(first_pem_block(pem))
        .map_err(|e| Error::Certificate(e.to_string()))?;
    if label != "CERTIFICATE" {
        return Err(Error::Certificate(format!(
            "PEM label is {label:?}, expected CERTIFICATE"
        )));
    }
    let cert = Certificate::from_der(&der).map_err(|e| Error::Certificate(e.to_string()))?;
    // Re-encoding must give the stored bytes: PCR8 is defined over DER, not BER.
    if cert
        .to_der()
        .map_err(|e| Error::Certificate(e.to_string()))?
        != der
    {
        return Err(Error::Certificate(
            "certificate is not in canonical DER".into(),
        ));
    }
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let key = VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes())
        .map_err(|_| Error::Certificate("public key is not a P-384 point".into()))?;
    Ok((der, key))
}

/// The first PEM block of `pem`, through its END line.
fn first_pem_block(pem: &[u8]) -> &[u8] {
    const END: &[u8] = b"-----END CERTIFICATE-----";
    match pem.windows(END.len()).position(|w| w == END) {
        Some(i) => &pem[..i + END.len()],
        None => pem,
    }
}

fn rfc3339(since_epoch: std::time::Duration) -> String {
    let secs = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
    crate::metadata::format_build_time(secs).unwrap_or_else(|_| secs.to_string())
}

fn cbor_head(out: &mut Vec<u8>, major: u8, len: usize) {
    let m = major << 5;
    match len {
        0..=23 => out.push(m | len as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, len as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(m | 26);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }
}

fn cbor_bytes(out: &mut Vec<u8>, b: &[u8]) {
    cbor_head(out, 2, b.len());
    out.extend_from_slice(b);
}

fn cbor_text(out: &mut Vec<u8>, s: &str) {
    cbor_head(out, 3, s.len());
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr_info_matches_nitro_bytes() {
        // Vector from nitro's own encoder: PcrInfo{0, 0x00..=0x2f}.
        let mut v = [0u8; 48];
        for (i, b) in v.iter_mut().enumerate() {
            *b = i as u8;
        }
        let expected = "a26e72656769737465725f696e646578006e72656769737465725f76616c75659830000102030405060708090a0b0c0d0e0f101112131415161718181819181a181b181c181d181e181f1820182118221823182418251826182718281829182a182b182c182d182e182f";
        assert_eq!(hex::encode(pcr_info_payload(&v).unwrap()), expected);
    }

    #[test]
    fn only_the_first_certificate_of_a_chain_counts() {
        let one = include_bytes!("../testdata/signing-cert.pem");
        let mut chain = one.to_vec();
        chain.extend_from_slice(one);
        let (a, _) = certificate_der_and_key(one).unwrap();
        let (b, _) = certificate_der_and_key(&chain).unwrap();
        assert_eq!(a, b);
        assert!(
            certificate_der_and_key(
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            )
            .is_err()
        );
    }

    #[test]
    fn sig_structure_layout() {
        let s = sig_structure(b"x");
        assert_eq!(
            hex::encode(s),
            "846a5369676e617475726531 44a1013822 40 4178".replace(' ', "")
        );
    }
}
