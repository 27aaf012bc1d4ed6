//! The attestation document payload: a CBOR map with AWS's fields and size rules.
//!
//! The rules are those of AWS's attestation document specification (aws-nitro-enclaves-nsm-api,
//! "attestation process"): `module_id` non-empty text, `digest` "SHA384", `timestamp` a
//! non-zero uint (ms), `pcrs` 1..=32 entries with index < 32, `certificate` and each
//! `cabundle` entry 1..=1024 bytes with at least one CA, `public_key` 1..=1024 bytes,
//! `user_data` and `nonce` 0..=512 bytes. Optional fields that are CBOR null are absent.
//! Since the digest must be SHA-384, every PCR must be 48 bytes; PCR0 must be present.
//!
//! Duplicate keys are refused: with two `nonce` entries, two parsers of the same bytes could
//! disagree on which nonce was attested. Keys the format does not define are refused too.

use std::collections::BTreeMap;

use ciborium::Value;

use crate::cose::decode_one;
use crate::error::{PAYLOAD, VerifyError};

/// PCR length for the SHA384 digest.
pub(crate) const PCR_LEN: usize = 48;
/// PCR indices are below 32.
const MAX_PCRS: usize = 32;
/// Largest certificate in the document.
const MAX_CERT_LEN: usize = 1024;
/// Largest chain we walk: AWS uses four CAs; a bound keeps a hostile document cheap.
const MAX_CABUNDLE: usize = 8;
const MAX_PUBLIC_KEY_LEN: usize = 1024;
const MAX_USER_DATA_LEN: usize = 512;
const MAX_NONCE_LEN: usize = 512;

/// The payload's fields, checked against the format but not yet authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Payload {
    pub(crate) module_id: String,
    pub(crate) timestamp_ms: u64,
    pub(crate) pcrs: BTreeMap<u8, [u8; PCR_LEN]>,
    pub(crate) certificate: Vec<u8>,
    pub(crate) cabundle: Vec<Vec<u8>>,
    pub(crate) public_key: Option<Vec<u8>>,
    pub(crate) user_data: Option<Vec<u8>>,
    pub(crate) nonce: Option<Vec<u8>>,
}

const FIELDS: [&str; 9] = [
    "module_id",
    "digest",
    "timestamp",
    "pcrs",
    "certificate",
    "cabundle",
    "public_key",
    "user_data",
    "nonce",
];

/// Decodes and checks the payload bytes (definite or indefinite-length map).
pub(crate) fn parse(bytes: &[u8]) -> Result<Payload, VerifyError> {
    let Value::Map(entries) = decode_one(bytes, PAYLOAD)? else {
        return Err(invalid("payload", "is not a CBOR map"));
    };
    // Every key must be one of FIELDS, so tracking which were seen finds every duplicate.
    let mut slots: [Option<Value>; 9] = Default::default();
    for (key, value) in entries {
        let Value::Text(key) = key else {
            return Err(VerifyError::UnknownField);
        };
        let index = FIELDS
            .iter()
            .position(|field| *field == key)
            .ok_or(VerifyError::UnknownField)?;
        if slots[index].replace(value).is_some() {
            return Err(VerifyError::DuplicateKey(PAYLOAD));
        }
    }
    let [
        module_id,
        digest,
        timestamp,
        pcrs,
        certificate,
        cabundle,
        public_key,
        user_data,
        nonce,
    ] = slots;

    let module_id = match required("module_id", module_id)? {
        Value::Text(text) if !text.is_empty() => text,
        Value::Text(_) => return Err(invalid("module_id", "is empty")),
        _ => return Err(invalid("module_id", "is not a text string")),
    };
    match required("digest", digest)? {
        Value::Text(text) if text == "SHA384" => {}
        _ => return Err(invalid("digest", "is not \"SHA384\"")),
    }
    let timestamp_ms = match required("timestamp", timestamp)? {
        Value::Integer(int) => u64::try_from(int)
            .ok()
            .filter(|&ms| ms > 0)
            .ok_or_else(|| invalid("timestamp", "is not a positive integer"))?,
        _ => return Err(invalid("timestamp", "is not an integer")),
    };
    let pcrs = parse_pcrs(required("pcrs", pcrs)?)?;
    let certificate = bytes_field(
        "certificate",
        required("certificate", certificate)?,
        1,
        MAX_CERT_LEN,
    )?;
    let cabundle = match required("cabundle", cabundle)? {
        Value::Array(items) if items.is_empty() => {
            return Err(invalid("cabundle", "is empty"));
        }
        Value::Array(items) if items.len() > MAX_CABUNDLE => {
            return Err(invalid(
                "cabundle",
                "has more certificates than any NSM chain",
            ));
        }
        Value::Array(items) => items
            .into_iter()
            .map(|item| bytes_field("cabundle", item, 1, MAX_CERT_LEN))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(invalid("cabundle", "is not an array")),
    };
    Ok(Payload {
        module_id,
        timestamp_ms,
        pcrs,
        certificate,
        cabundle,
        public_key: optional("public_key", public_key, 1, MAX_PUBLIC_KEY_LEN)?,
        user_data: optional("user_data", user_data, 0, MAX_USER_DATA_LEN)?,
        nonce: optional("nonce", nonce, 0, MAX_NONCE_LEN)?,
    })
}

fn parse_pcrs(value: Value) -> Result<BTreeMap<u8, [u8; PCR_LEN]>, VerifyError> {
    let Value::Map(entries) = value else {
        return Err(invalid("pcrs", "is not a map"));
    };
    if entries.is_empty() {
        return Err(invalid("pcrs", "is empty"));
    }
    let mut pcrs = BTreeMap::new();
    for (index, value) in entries {
        let index = match index {
            Value::Integer(int) => u8::try_from(int)
                .ok()
                .filter(|&i| usize::from(i) < MAX_PCRS)
                .ok_or_else(|| invalid("pcrs", "has an index of 32 or more"))?,
            _ => return Err(invalid("pcrs", "has a key that is not an integer")),
        };
        let Value::Bytes(bytes) = value else {
            return Err(invalid("pcrs", "has a value that is not a byte string"));
        };
        let pcr: [u8; PCR_LEN] = bytes
            .try_into()
            .map_err(|_| invalid("pcrs", "has a value that is not 48 bytes (SHA-384)"))?;
        if pcrs.insert(index, pcr).is_some() {
            return Err(VerifyError::DuplicateKey("pcrs"));
        }
    }
    // Stricter than AWS's format, which never omits it: without PCR0 neither the image nor
    // debug mode can be judged.
    if !pcrs.contains_key(&0) {
        return Err(invalid("pcrs", "has no PCR0"));
    }
    Ok(pcrs)
}

fn required(field: &'static str, value: Option<Value>) -> Result<Value, VerifyError> {
    match value {
        None | Some(Value::Null) => Err(VerifyError::MissingField(field)),
        Some(value) => Ok(value),
    }
}

fn optional(
    field: &'static str,
    value: Option<Value>,
    min: usize,
    max: usize,
) -> Result<Option<Vec<u8>>, VerifyError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(value) => bytes_field(field, value, min, max).map(Some),
    }
}

fn bytes_field(
    field: &'static str,
    value: Value,
    min: usize,
    max: usize,
) -> Result<Vec<u8>, VerifyError> {
    match value {
        Value::Bytes(bytes) if (min..=max).contains(&bytes.len()) => Ok(bytes),
        Value::Bytes(_) => Err(invalid(field, "has a length outside AWS's limits")),
        _ => Err(invalid(field, "is not a byte string")),
    }
}

fn invalid(field: &'static str, reason: &'static str) -> VerifyError {
    VerifyError::InvalidField { field, reason }
}
