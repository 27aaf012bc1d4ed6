//! The few CBOR (RFC 8949) encodings the attesters and the COSE signature input need.
//!
//! Encoding is done by hand because these structures are tiny and fixed, and because the
//! COSE Sig_structure must embed the received payload bytes exactly as they arrived.

/// Major type 0: unsigned integer.
#[cfg(feature = "dev")]
pub(crate) const UINT: u8 = 0;
/// Major type 2: byte string.
pub(crate) const BYTES: u8 = 2;
/// Major type 3: text string.
pub(crate) const TEXT: u8 = 3;
/// Major type 4: array.
pub(crate) const ARRAY: u8 = 4;
/// Major type 5: map.
#[cfg(feature = "dev")]
pub(crate) const MAP: u8 = 5;

/// The COSE protected header AWS uses: `{1: -35}` (alg: ES384), shortest encoding.
#[cfg(feature = "dev")]
pub(crate) const PROTECTED_ES384: [u8; 4] = [0xa1, 0x01, 0x38, 0x22];

/// Writes a CBOR head with the shortest argument encoding (RFC 8949 §4.2.1).
pub(crate) fn head(out: &mut Vec<u8>, major: u8, value: u64) {
    let m = major << 5;
    if value < 24 {
        out.push(m | value as u8);
    } else if value <= u64::from(u8::MAX) {
        out.extend_from_slice(&[m | 24, value as u8]);
    } else if value <= u64::from(u16::MAX) {
        out.push(m | 25);
        out.extend_from_slice(&(value as u16).to_be_bytes());
    } else if value <= u64::from(u32::MAX) {
        out.push(m | 26);
        out.extend_from_slice(&(value as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&value.to_be_bytes());
    }
}

/// Writes a byte string.
pub(crate) fn bytes(out: &mut Vec<u8>, value: &[u8]) {
    head(out, BYTES, value.len() as u64);
    out.extend_from_slice(value);
}

/// Writes a text string.
pub(crate) fn text(out: &mut Vec<u8>, value: &str) {
    head(out, TEXT, value.len() as u64);
    out.extend_from_slice(value.as_bytes());
}

/// Writes CBOR `null`.
#[cfg(feature = "dev")]
pub(crate) fn null(out: &mut Vec<u8>) {
    out.push(0xf6);
}

/// The COSE_Sign1 signature input (RFC 9052 §4.4):
/// `["Signature1", protected, external_aad = h'', payload]`, embedding the protected header
/// and payload bytes exactly as received, never re-encoded.
pub(crate) fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + protected.len() + 32);
    head(&mut out, ARRAY, 4);
    text(&mut out, "Signature1");
    bytes(&mut out, protected);
    bytes(&mut out, &[]);
    bytes(&mut out, payload);
    out
}

/// An untagged COSE_Sign1 (as the NSM emits it): `[protected, {}, payload, signature]`.
#[cfg(feature = "dev")]
pub(crate) fn cose_sign1(protected: &[u8], payload: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + signature.len() + 16);
    head(&mut out, ARRAY, 4);
    bytes(&mut out, protected);
    head(&mut out, MAP, 0);
    bytes(&mut out, payload);
    bytes(&mut out, signature);
    out
}
