//! Dev-attester documents: the exact NSM format under a dev chain, accepted only where a
//! policy names the dev root.

mod common;

use std::time::{Duration, SystemTime};

use ciborium::Value;
use common::{encode, field, payload_entries, split};
use enclosure_attestation::{
    AttestationPolicy, AttestationRequest, Attester, CertSlot, DevAttester, PcrSet,
    PolicyViolation, TrustAnchor, VerifyError, dev_pcrs, dev_root_path, pem_certificate_to_der,
    verify,
};

fn attester() -> (tempfile::TempDir, DevAttester) {
    let dir = tempfile::tempdir().unwrap();
    let dev = DevAttester::load_or_create(&dir.path().join("dev-ca")).unwrap();
    (dir, dev)
}

fn dev_policy(dev: &DevAttester) -> AttestationPolicy {
    AttestationPolicy::default().with_dev_root_der(dev.root_der().to_vec())
}

#[test]
fn dev_document_verifies_under_a_policy_naming_the_dev_root() {
    let (dir, dev) = attester();
    let req = AttestationRequest {
        public_key: Some(b"instance key"),
        user_data: Some(b"hello"),
        nonce: Some(&[9; 32]),
    };
    let doc = dev.attest(&req).unwrap();
    // The policy gets the root the way the cli does: from DIR/dev-ca/root.pem.
    let pem = std::fs::read(dev_root_path(&dir.path().join("dev-ca"))).unwrap();
    let policy = AttestationPolicy::default()
        .with_dev_root_der(pem_certificate_to_der(&pem).unwrap())
        .with_nonce(&[9; 32])
        .with_public_key(b"instance key");
    let verified = verify(&doc, &policy, SystemTime::now()).unwrap();
    assert_eq!(verified.trust_anchor(), TrustAnchor::DevRoot);
    assert_eq!(verified.module_id(), dev.module_id());
    assert_eq!(verified.pcr(0), Some(&dev.measurement()));
    assert!(!verified.is_debug());
    assert_eq!(verified.pcrs().len(), 16);
    assert_eq!(verified.user_data(), Some(&b"hello"[..]));
    assert_eq!(verified.certificate(), dev.leaf_der());
    assert_eq!(
        verified.cabundle(),
        [dev.root_der().to_vec(), dev.intermediate_der().to_vec()]
    );
}

#[test]
fn dev_document_is_refused_by_the_default_policy() {
    let (_dir, dev) = attester();
    let doc = dev.attest(&AttestationRequest::default()).unwrap();
    let err = verify(&doc, &AttestationPolicy::default(), SystemTime::now()).unwrap_err();
    assert_eq!(err, VerifyError::UntrustedRoot);
    // Another dev CA's root does not help either.
    let (_other_dir, other) = attester();
    let err = verify(&doc, &dev_policy(&other), SystemTime::now()).unwrap_err();
    assert_eq!(err, VerifyError::UntrustedRoot);
}

#[test]
fn dev_document_has_the_nsm_shape() {
    let (_dir, dev) = attester();
    let doc = dev.attest(&AttestationRequest::default()).unwrap();
    // Untagged 4-element array, protected {1: -35}, raw 96-byte signature.
    assert_eq!(doc[0], 0x84);
    let parts = split(&doc);
    assert_eq!(parts.protected, [0xa1, 0x01, 0x38, 0x22]);
    assert_eq!(parts.signature.len(), 96);
    let mut entries = payload_entries(&doc);
    let keys: Vec<_> = entries
        .iter()
        .map(|(k, _)| k.as_text().unwrap().to_string())
        .collect();
    assert_eq!(
        keys,
        [
            "module_id",
            "digest",
            "timestamp",
            "pcrs",
            "certificate",
            "cabundle",
            "public_key",
            "user_data",
            "nonce"
        ]
    );
    assert_eq!(field(&mut entries, "digest").as_text(), Some("SHA384"));
    for absent in ["public_key", "user_data", "nonce"] {
        assert_eq!(*field(&mut entries, absent), Value::Null, "{absent}");
    }
    let Value::Map(pcrs) = field(&mut entries, "pcrs").clone() else {
        panic!()
    };
    assert_eq!(pcrs.len(), 16);
    assert_eq!(dev_pcrs()[0], dev.measurement());
}

#[test]
fn dev_chain_follows_the_aws_profile() {
    // Verified by the one verifier, which enforces the profile: P-384, ecdsa-with-SHA384,
    // critical basicConstraints with pathLen and keyCertSign on CAs, digitalSignature leaf.
    let (_dir, dev) = attester();
    let doc = dev.attest(&AttestationRequest::default()).unwrap();
    verify(&doc, &dev_policy(&dev), SystemTime::now()).unwrap();
    // A longer chain than the CAs' pathLen allows (root pathLen 1, intermediate 0): here the
    // leaf is also placed in the bundle, as if it had issued a further leaf.
    let mut entries = payload_entries(&doc);
    let Value::Array(bundle) = field(&mut entries, "cabundle") else {
        panic!()
    };
    bundle.push(Value::Bytes(dev.leaf_der().to_vec()));
    let bad = dev.sign_payload(&encode(&Value::Map(entries))).unwrap();
    let err = verify(&bad, &dev_policy(&dev), SystemTime::now()).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::CertificateProfile {
                slot: CertSlot::Bundle(0),
                reason: "has more CAs below it than its pathLen allows"
            }
        ),
        "{err}"
    );
}

#[test]
fn indefinite_length_payload_map_verifies() {
    let (_dir, dev) = attester();
    let doc = dev
        .attest(&AttestationRequest {
            nonce: Some(b"n"),
            ..Default::default()
        })
        .unwrap();
    let payload = split(&doc).payload;
    // NSM output since 2025 uses indefinite-length maps: 0xbf ... 0xff instead of 0xa9.
    assert_eq!(payload[0], 0xa9);
    let mut indefinite = vec![0xbf];
    indefinite.extend_from_slice(&payload[1..]);
    indefinite.push(0xff);
    // The PCR map, indefinite too.
    let pcrs_at = common::find(&indefinite, b"pcrs") + 4;
    assert_eq!(indefinite[pcrs_at], 0xb0);
    indefinite[pcrs_at] = 0xbf;
    let certificate_key = common::find(&indefinite, b"\x6bcertificate");
    indefinite.insert(certificate_key, 0xff);

    let signed = dev.sign_payload(&indefinite).unwrap();
    let policy = dev_policy(&dev).with_nonce(b"n");
    let verified = verify(&signed, &policy, SystemTime::now()).unwrap();
    assert_eq!(verified.pcrs().len(), 16);
    assert_eq!(verified.nonce(), Some(&b"n"[..]));
    // The signature covers the indefinite bytes as received; the definite encoding of the
    // same map under that signature does not verify.
    let parts = split(&signed);
    let swapped = common::join(&parts.protected, &payload, &parts.signature);
    assert_eq!(
        verify(&swapped, &policy, SystemTime::now()).map(|_| ()),
        Err(VerifyError::DocumentSignature)
    );
}

#[test]
fn duplicate_key_with_a_valid_signature_is_refused() {
    let (_dir, dev) = attester();
    let doc = dev
        .attest(&AttestationRequest {
            nonce: Some(b"mine"),
            ..Default::default()
        })
        .unwrap();
    let mut entries = payload_entries(&doc);
    entries.push((
        Value::Text("nonce".into()),
        Value::Bytes(b"theirs".to_vec()),
    ));
    let signed = dev.sign_payload(&encode(&Value::Map(entries))).unwrap();
    assert_eq!(
        verify(&signed, &dev_policy(&dev), SystemTime::now()).map(|_| ()),
        Err(VerifyError::DuplicateKey("payload"))
    );
}

#[test]
fn missing_expected_pcr_is_refused() {
    let (_dir, dev) = attester();
    let pcrs = dev_pcrs();
    let pin8 = PcrSet::new(pcrs[0], pcrs[1], pcrs[2])
        .with_pcr(8, pcrs[8])
        .unwrap();
    let policy = dev_policy(&dev).with_pcr_set(pin8);
    let doc = dev.attest(&AttestationRequest::default()).unwrap();
    verify(&doc, &policy, SystemTime::now()).unwrap();
    // The same document without PCR8, validly signed.
    let mut entries = payload_entries(&doc);
    let Value::Map(map) = field(&mut entries, "pcrs") else {
        panic!()
    };
    map.retain(|(k, _)| k.as_integer() != Some(8.into()));
    let signed = dev.sign_payload(&encode(&Value::Map(entries))).unwrap();
    assert_eq!(
        verify(&signed, &policy, SystemTime::now()).map(|_| ()),
        Err(VerifyError::Policy(PolicyViolation::PcrMissing(8)))
    );
}

#[test]
fn document_time_and_freshness() {
    let (_dir, dev) = attester();
    let made = SystemTime::now() - Duration::from_secs(600);
    let doc = dev.attest_at(&AttestationRequest::default(), made).unwrap();
    let err = verify(&doc, &dev_policy(&dev), SystemTime::now()).unwrap_err();
    assert!(matches!(
        err,
        VerifyError::Policy(PolicyViolation::TooOld { .. })
    ));
    verify(&doc, &dev_policy(&dev), made + Duration::from_secs(1)).unwrap();
}
