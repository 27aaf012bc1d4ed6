//! Altered real documents: each alteration fails, with the error that names what is wrong.

mod common;

use ciborium::Value;
use common::{encode, field, find, fixture, flip, join, payload_entries, split};
use enclosure_attestation::{
    AWS_NITRO_ROOT_G1_DER, CertSlot, Check, DevAttester, VerifyError, verify,
};

/// A production fixture with a nonce, verified under a policy pinning its PCRs.
fn subject() -> common::Fixture {
    fixture("evervault_beta-valid")
}

fn check(bytes: &[u8]) -> Result<(), VerifyError> {
    let f = subject();
    verify(bytes, &f.policy(), f.at()).map(|_| ())
}

#[test]
fn unaltered_subject_verifies() {
    check(&subject().bytes).unwrap();
}

#[test]
fn flipped_signature_byte() {
    let f = subject();
    // The signature is the document's last 96 bytes.
    for index in [f.bytes.len() - 96, f.bytes.len() - 1] {
        assert_eq!(
            check(&flip(&f.bytes, index)),
            Err(VerifyError::DocumentSignature)
        );
    }
}

#[test]
fn flipped_payload_byte() {
    let f = subject();
    let at = find(&f.bytes, f.module_id.as_bytes()) + 3;
    assert_eq!(
        check(&flip(&f.bytes, at)),
        Err(VerifyError::DocumentSignature)
    );
    // A byte of the nonce.
    let nonce_at = find(&f.bytes, b"nonce") + 8;
    assert_eq!(
        check(&flip(&f.bytes, nonce_at)),
        Err(VerifyError::DocumentSignature)
    );
}

#[test]
fn flipped_byte_in_each_certificate() {
    let f = subject();
    let mut entries = payload_entries(&f.bytes);
    let leaf = field(&mut entries, "certificate")
        .as_bytes()
        .unwrap()
        .clone();
    let bundle: Vec<Vec<u8>> = field(&mut entries, "cabundle")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_bytes().unwrap().clone())
        .collect();
    assert_eq!(bundle.len(), 4);

    // The last byte of each certificate lies in its own signature value.
    let last_byte = |cert: &[u8]| find(&f.bytes, cert) + cert.len() - 1;
    assert_eq!(
        check(&flip(&f.bytes, last_byte(&leaf))),
        Err(VerifyError::CertificateSignature(CertSlot::Leaf))
    );
    for (i, cert) in bundle.iter().enumerate().skip(1) {
        assert_eq!(
            check(&flip(&f.bytes, last_byte(cert))),
            Err(VerifyError::CertificateSignature(CertSlot::Bundle(i))),
            "cabundle[{i}]"
        );
    }
    // The root is pinned: any change to cabundle[0] makes it untrusted.
    assert_eq!(
        check(&flip(&f.bytes, last_byte(&bundle[0]))),
        Err(VerifyError::UntrustedRoot)
    );
    // A byte in the middle of the leaf's subject public key.
    let key_at = find(&f.bytes, &leaf) + leaf.len() - 150;
    let err = check(&flip(&f.bytes, key_at)).unwrap_err();
    assert!(
        matches!(err.check(), Check::Certificates | Check::ChainSignatures),
        "{err}"
    );
}

#[test]
fn swapped_cabundle_root() {
    let f = subject();
    let dir = tempfile::tempdir().unwrap();
    let dev = DevAttester::load_or_create(dir.path()).unwrap();
    let parts = split(&f.bytes);
    let mut entries = payload_entries(&f.bytes);
    let Value::Array(bundle) = field(&mut entries, "cabundle") else {
        panic!()
    };
    bundle[0] = Value::Bytes(dev.root_der().to_vec());
    let payload = encode(&Value::Map(entries.clone()));
    let swapped = join(&parts.protected, &payload, &parts.signature);
    assert_eq!(check(&swapped), Err(VerifyError::UntrustedRoot));
    // Swapped with the intermediate above it.
    let Value::Array(bundle) = field(&mut entries, "cabundle") else {
        panic!()
    };
    bundle.swap(0, 1);
    let payload = encode(&Value::Map(entries));
    let swapped = join(&parts.protected, &payload, &parts.signature);
    assert_eq!(check(&swapped), Err(VerifyError::UntrustedRoot));
}

#[test]
fn re_encoded_unchanged_parts_still_verify() {
    // The mutation helpers themselves do not break documents.
    let f = subject();
    let parts = split(&f.bytes);
    check(&join(&parts.protected, &parts.payload, &parts.signature)).unwrap();
}

#[test]
fn algorithm_changed_to_es256() {
    let f = subject();
    let parts = split(&f.bytes);
    assert_eq!(parts.protected, [0xa1, 0x01, 0x38, 0x22]);
    // {1: -7}
    let altered = join(&[0xa1, 0x01, 0x26], &parts.payload, &parts.signature);
    assert_eq!(check(&altered), Err(VerifyError::UnsupportedAlgorithm));
    // {1: -35, 4: h'00'}: right algorithm, extra parameter.
    let extra = join(
        &[0xa2, 0x01, 0x38, 0x22, 0x04, 0x41, 0x00],
        &parts.payload,
        &parts.signature,
    );
    assert_eq!(check(&extra), Err(VerifyError::UnsupportedAlgorithm));
}

#[test]
fn truncated_document() {
    let f = subject();
    for len in [0, 1, 10, f.bytes.len() / 2, f.bytes.len() - 1] {
        assert_eq!(
            check(&f.bytes[..len]),
            Err(VerifyError::Truncated("document")),
            "length {len}"
        );
    }
}

#[test]
fn trailing_bytes() {
    let f = subject();
    for tail in [&[0x00][..], &[0xf6], &f.bytes[..]] {
        let mut long = f.bytes.clone();
        long.extend_from_slice(tail);
        assert_eq!(check(&long), Err(VerifyError::TrailingBytes("document")));
    }
}

#[test]
fn duplicate_payload_key() {
    let f = subject();
    let parts = split(&f.bytes);
    let mut entries = payload_entries(&f.bytes);
    entries.push((Value::Text("nonce".into()), Value::Bytes(vec![7; 16])));
    let payload = encode(&Value::Map(entries));
    let doc = join(&parts.protected, &payload, &parts.signature);
    assert_eq!(check(&doc), Err(VerifyError::DuplicateKey("payload")));
}

#[test]
fn duplicate_pcr_index() {
    let f = subject();
    let parts = split(&f.bytes);
    let mut entries = payload_entries(&f.bytes);
    let Value::Map(pcrs) = field(&mut entries, "pcrs") else {
        panic!()
    };
    let first = pcrs[0].clone();
    pcrs.push(first);
    let doc = join(
        &parts.protected,
        &encode(&Value::Map(entries)),
        &parts.signature,
    );
    assert_eq!(check(&doc), Err(VerifyError::DuplicateKey("pcrs")));
}

#[test]
fn unprotected_header_and_signature_length() {
    let f = subject();
    let parts = split(&f.bytes);
    let unprotected = encode(&Value::Array(vec![
        Value::Bytes(parts.protected.clone()),
        Value::Map(vec![(Value::Integer(4.into()), Value::Bytes(vec![1]))]),
        Value::Bytes(parts.payload.clone()),
        Value::Bytes(parts.signature.clone()),
    ]));
    assert_eq!(check(&unprotected), Err(VerifyError::UnprotectedHeader));
    let short = join(&parts.protected, &parts.payload, &parts.signature[..95]);
    assert_eq!(check(&short), Err(VerifyError::SignatureLength(95)));
    // A DER-encoded signature (what a generic ECDSA tool would emit) is refused too.
    let long = join(&parts.protected, &parts.payload, &[0x30; 102]);
    assert_eq!(check(&long), Err(VerifyError::SignatureLength(102)));
}

type Entries = Vec<(Value, Value)>;

#[test]
fn payload_field_rules() {
    let f = subject();
    let parts = split(&f.bytes);
    let rebuild = |edit: &dyn Fn(&mut Entries)| {
        let mut entries = payload_entries(&f.bytes);
        edit(&mut entries);
        check(&join(
            &parts.protected,
            &encode(&Value::Map(entries)),
            &parts.signature,
        ))
    };
    assert_eq!(
        rebuild(&|e| *field(e, "digest") = Value::Text("SHA256".into())),
        Err(VerifyError::InvalidField {
            field: "digest",
            reason: "is not \"SHA384\""
        })
    );
    assert_eq!(
        rebuild(&|e| e.retain(|(k, _)| k.as_text() != Some("timestamp"))),
        Err(VerifyError::MissingField("timestamp"))
    );
    assert_eq!(
        rebuild(&|e| *field(e, "module_id") = Value::Null),
        Err(VerifyError::MissingField("module_id"))
    );
    assert_eq!(
        rebuild(&|e| *field(e, "nonce") = Value::Bytes(vec![0; 513])),
        Err(VerifyError::InvalidField {
            field: "nonce",
            reason: "has a length outside AWS's limits"
        })
    );
    assert_eq!(
        rebuild(&|e| e.push((Value::Text("extra".into()), Value::Null))),
        Err(VerifyError::UnknownField)
    );
    let err = rebuild(&|e| {
        let Value::Map(pcrs) = field(e, "pcrs") else {
            panic!()
        };
        pcrs[0].0 = Value::Integer(32.into());
    })
    .unwrap_err();
    assert!(matches!(
        err,
        VerifyError::InvalidField { field: "pcrs", .. }
    ));
    assert_eq!(
        rebuild(&|e| {
            let Value::Map(pcrs) = field(e, "pcrs") else {
                panic!()
            };
            pcrs.remove(0);
        }),
        Err(VerifyError::InvalidField {
            field: "pcrs",
            reason: "has no PCR0"
        })
    );
    // This document has `user_data: null`; dropping the key instead passes the field rules
    // (null and absent mean the same) and fails only at the signature over the bytes.
    assert_eq!(
        *field(&mut payload_entries(&f.bytes), "user_data"),
        Value::Null
    );
    assert_eq!(
        rebuild(&|e| e.retain(|(k, _)| k.as_text() != Some("user_data"))),
        Err(VerifyError::DocumentSignature)
    );
}

#[test]
fn leaf_signed_by_another_chain_with_aws_root_in_front() {
    // "Never anchor on cabundle[0]": a dev chain with the AWS root placed in front of it.
    let dir = tempfile::tempdir().unwrap();
    let dev = DevAttester::load_or_create(dir.path()).unwrap();
    let doc = dev
        .attest_at(&Default::default(), std::time::SystemTime::now())
        .unwrap();
    let mut entries = payload_entries(&doc);
    let Value::Array(bundle) = field(&mut entries, "cabundle") else {
        panic!()
    };
    bundle[0] = Value::Bytes(AWS_NITRO_ROOT_G1_DER.to_vec());
    let forged = dev.sign_payload(&encode(&Value::Map(entries))).unwrap();
    let policy = enclosure_attestation::AttestationPolicy::default();
    assert_eq!(
        verify(&forged, &policy, std::time::SystemTime::now()).map(|_| ()),
        Err(VerifyError::NameChain(CertSlot::Bundle(1)))
    );
}
