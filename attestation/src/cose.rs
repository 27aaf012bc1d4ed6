//! The COSE_Sign1 envelope (RFC 9052 §4.2) exactly as the NSM emits it.
//!
//! AWS's document format fixes every degree of freedom COSE allows: the protected header is
//! `{1: -35}` (ES384), the unprotected header is empty, the payload is attached and at most
//! 16 KiB, and the signature is a raw 96-byte r‖s. Anything else is refused here, before any
//! field of the payload is looked at.

use ciborium::Value;

use crate::error::VerifyError;

/// The CBOR tag for COSE_Sign1 (RFC 9052 §2); the NSM omits it, other tools add it.
const COSE_SIGN1_TAG: u64 = 18;
/// The largest payload AWS allows (`payload: bstr .size (1..16384)`).
pub(crate) const MAX_PAYLOAD_LEN: usize = 16_384;
/// The largest document: the payload plus the few bytes of header and signature around it.
pub(crate) const MAX_DOCUMENT_LEN: usize = MAX_PAYLOAD_LEN + 256;
/// ES384 r‖s: two 48-byte scalars.
pub(crate) const SIGNATURE_LEN: usize = 96;
/// COSE header label `alg` and the value for ES384 (RFC 9053 §2.1).
const ALG_LABEL: i128 = 1;
const ALG_ES384: i128 = -35;

/// The parts of an accepted envelope; the payload is still unauthenticated.
pub(crate) struct CoseSign1 {
    pub(crate) protected: Vec<u8>,
    pub(crate) payload: Vec<u8>,
    pub(crate) signature: Vec<u8>,
}

/// Decodes exactly one CBOR item from `bytes`, refusing anything after it.
///
/// ciborium decodes definite and indefinite-length items alike and keeps map entries as a
/// list, in order, so callers can detect duplicate keys.
pub(crate) fn decode_one(bytes: &[u8], what: &'static str) -> Result<Value, VerifyError> {
    let mut rest = bytes;
    let value: Value = ciborium::de::from_reader(&mut rest).map_err(|err| match err {
        // Reading from a slice fails only when it runs out.
        ciborium::de::Error::Io(_) => VerifyError::Truncated(what),
        _ => VerifyError::MalformedCbor(what),
    })?;
    if !rest.is_empty() {
        return Err(VerifyError::TrailingBytes(what));
    }
    Ok(value)
}

/// Checks the envelope and returns its parts.
pub(crate) fn parse(document: &[u8]) -> Result<CoseSign1, VerifyError> {
    if document.len() > MAX_DOCUMENT_LEN {
        return Err(VerifyError::DocumentTooLarge {
            len: document.len(),
            max: MAX_DOCUMENT_LEN,
        });
    }
    let value = match decode_one(document, "document")? {
        Value::Tag(COSE_SIGN1_TAG, inner) => *inner,
        Value::Tag(..) => return Err(VerifyError::NotCoseSign1("tagged, but not with tag 18")),
        value => value,
    };
    let Value::Array(items) = value else {
        return Err(VerifyError::NotCoseSign1("not an array"));
    };
    let [protected, unprotected, payload, signature]: [Value; 4] = items
        .try_into()
        .map_err(|_| VerifyError::NotCoseSign1("not a 4-element array"))?;

    let Value::Bytes(protected) = protected else {
        return Err(VerifyError::NotCoseSign1(
            "protected header is not a byte string",
        ));
    };
    check_protected_header(&protected)?;
    match unprotected {
        Value::Map(entries) if entries.is_empty() => {}
        Value::Map(_) => return Err(VerifyError::UnprotectedHeader),
        _ => return Err(VerifyError::NotCoseSign1("unprotected header is not a map")),
    }
    let Value::Bytes(payload) = payload else {
        return Err(VerifyError::NotCoseSign1(
            "payload is not an attached byte string",
        ));
    };
    if payload.is_empty() || payload.len() > MAX_PAYLOAD_LEN {
        return Err(VerifyError::PayloadSize(payload.len()));
    }
    let Value::Bytes(signature) = signature else {
        return Err(VerifyError::NotCoseSign1("signature is not a byte string"));
    };
    if signature.len() != SIGNATURE_LEN {
        return Err(VerifyError::SignatureLength(signature.len()));
    }
    Ok(CoseSign1 {
        protected,
        payload,
        signature,
    })
}

/// The protected header must be a map with the single entry `1: -35`. Any other content —
/// another algorithm, extra parameters such as `crit` — is refused rather than interpreted.
fn check_protected_header(bytes: &[u8]) -> Result<(), VerifyError> {
    let Value::Map(entries) = decode_one(bytes, "protected header")? else {
        return Err(VerifyError::UnsupportedAlgorithm);
    };
    match entries.as_slice() {
        [(Value::Integer(label), Value::Integer(alg))]
            if i128::from(*label) == ALG_LABEL && i128::from(*alg) == ALG_ES384 =>
        {
            Ok(())
        }
        _ => Err(VerifyError::UnsupportedAlgorithm),
    }
}
