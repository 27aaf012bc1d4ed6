//! Shared helpers: the fixtures in testdata/ and small CBOR tools to take documents apart and
//! rebuild them (for mutations the verifier must refuse).
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ciborium::Value;
use enclosure_attestation::{AttestationPolicy, PcrSet};

/// A fixture described by testdata/documents.json.
pub struct Fixture {
    pub file: String,
    pub bytes: Vec<u8>,
    pub module_id: String,
    pub timestamp_ms: u64,
    pub debug: bool,
    pub pcrs: [(u8, [u8; 48]); 6],
    pub public_key_len: Option<usize>,
    pub user_data_len: Option<usize>,
    pub nonce_len: Option<usize>,
    pub chain_valid_until: String,
}

impl Fixture {
    pub fn at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.timestamp_ms)
    }

    /// A policy pinning PCR 0, 1, 2, 3, 4 and 8 as documents.json lists them, allowing debug
    /// only for debug fixtures.
    pub fn policy(&self) -> AttestationPolicy {
        let [p0, p1, p2, p3, p4, p8] = self.pcrs;
        let set = PcrSet::new(p0.1, p1.1, p2.1)
            .with_pcr(3, p3.1)
            .unwrap()
            .with_pcr(4, p4.1)
            .unwrap()
            .with_pcr(8, p8.1)
            .unwrap();
        AttestationPolicy::default()
            .with_pcr_set(set)
            .with_allow_debug(self.debug)
    }
}

pub fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

pub fn fixtures() -> Vec<Fixture> {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(testdata("documents.json")).unwrap()).unwrap();
    json["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|doc| {
            let file = doc["file"].as_str().unwrap().to_string();
            let pcr = |i: u8| -> (u8, [u8; 48]) {
                let hex = doc[format!("pcr{i}")].as_str().unwrap();
                (i, hex::decode(hex).unwrap().try_into().unwrap())
            };
            let len = |k: &str| {
                doc["optional_field_lengths"][k]
                    .as_u64()
                    .map(|n| n as usize)
            };
            Fixture {
                bytes: std::fs::read(testdata(&file)).unwrap(),
                file,
                module_id: doc["module_id"].as_str().unwrap().to_string(),
                timestamp_ms: doc["timestamp_ms"].as_u64().unwrap(),
                debug: doc["debug_mode"].as_bool().unwrap(),
                pcrs: [pcr(0), pcr(1), pcr(2), pcr(3), pcr(4), pcr(8)],
                public_key_len: len("public_key"),
                user_data_len: len("user_data"),
                nonce_len: len("nonce"),
                chain_valid_until: doc["chain_valid_until"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}

pub fn fixture(prefix: &str) -> Fixture {
    fixtures()
        .into_iter()
        .find(|f| f.file.starts_with(prefix))
        .unwrap()
}

/// The four members of an (untagged) COSE_Sign1 as raw bytes.
pub struct Parts {
    pub protected: Vec<u8>,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

pub fn split(document: &[u8]) -> Parts {
    let value: Value = ciborium::de::from_reader(document).unwrap();
    let Value::Array(items) = value else {
        panic!("not an array")
    };
    let bytes = |v: &Value| v.as_bytes().unwrap().clone();
    Parts {
        protected: bytes(&items[0]),
        payload: bytes(&items[2]),
        signature: bytes(&items[3]),
    }
}

/// Re-encodes a COSE_Sign1 from parts (definite lengths, empty unprotected header).
pub fn join(protected: &[u8], payload: &[u8], signature: &[u8]) -> Vec<u8> {
    let value = Value::Array(vec![
        Value::Bytes(protected.to_vec()),
        Value::Map(vec![]),
        Value::Bytes(payload.to_vec()),
        Value::Bytes(signature.to_vec()),
    ]);
    encode(&value)
}

pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).unwrap();
    out
}

/// The payload map's entries.
pub fn payload_entries(document: &[u8]) -> Vec<(Value, Value)> {
    let payload = split(document).payload;
    match ciborium::de::from_reader(payload.as_slice()).unwrap() {
        Value::Map(entries) => entries,
        _ => panic!("payload is not a map"),
    }
}

/// Looks up a text key in a map's entries.
pub fn field<'a>(entries: &'a mut [(Value, Value)], name: &str) -> &'a mut Value {
    &mut entries
        .iter_mut()
        .find(|(k, _)| k.as_text() == Some(name))
        .unwrap()
        .1
}

/// Flips one bit of the byte at `index`.
pub fn flip(bytes: &[u8], index: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[index] ^= 0x01;
    out
}

/// Where `needle` starts in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
}
