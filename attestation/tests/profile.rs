//! The certificate profile, checked on purpose-made chains (root → intermediate → leaf, made
//! with rcgen) wrapped in validly signed documents: each broken rule gives its own error.
#![cfg(feature = "dev")]

mod common;

use std::time::{Duration, SystemTime};

use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use ciborium::Value;
use common::encode;
use enclosure_attestation::{AttestationPolicy, CertSlot, VerifyError, verify};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CustomExtension, DnType, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
};

fn params(cn: &str, is_ca: IsCa, usages: Vec<KeyUsagePurpose>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = is_ca;
    p.key_usages = usages;
    let now = SystemTime::now();
    p.not_before = (now - Duration::from_secs(3600)).into();
    p.not_after = (now + Duration::from_secs(3600)).into();
    p
}

fn ca(cn: &str, path_len: u8) -> CertificateParams {
    params(
        cn,
        IsCa::Ca(BasicConstraints::Constrained(path_len)),
        vec![KeyUsagePurpose::KeyCertSign],
    )
}

fn leaf() -> CertificateParams {
    params(
        "leaf",
        IsCa::ExplicitNoCa,
        vec![KeyUsagePurpose::DigitalSignature],
    )
}

fn p384() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap()
}

/// A root → intermediate → leaf chain; `edit_*` change the intermediate's and leaf's profile.
struct Chain {
    root: Certificate,
    intermediate: Certificate,
    leaf: Certificate,
    leaf_key: KeyPair,
}

fn chain(intermediate: CertificateParams, leaf: CertificateParams, leaf_key: KeyPair) -> Chain {
    let root_key = p384();
    let root = ca("root", 1).self_signed(&root_key).unwrap();
    let int_key = p384();
    let intermediate = intermediate.signed_by(&int_key, &root, &root_key).unwrap();
    let leaf = leaf.signed_by(&leaf_key, &intermediate, &int_key).unwrap();
    Chain {
        root,
        intermediate,
        leaf,
        leaf_key,
    }
}

/// An NSM-shaped document over `chain`, signed with `signer` (the leaf key when it is P-384).
fn document(chain: &Chain, signer: &KeyPair) -> Vec<u8> {
    let text = |s: &str| Value::Text(s.into());
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let pcrs = (0..16u8)
        .map(|i| (Value::Integer(i.into()), Value::Bytes(vec![i + 1; 48])))
        .collect();
    let payload = encode(&Value::Map(vec![
        (text("module_id"), text("i-test-enc0")),
        (text("digest"), text("SHA384")),
        (text("timestamp"), Value::Integer(now_ms.into())),
        (text("pcrs"), Value::Map(pcrs)),
        (text("certificate"), Value::Bytes(chain.leaf.der().to_vec())),
        (
            text("cabundle"),
            Value::Array(vec![
                Value::Bytes(chain.root.der().to_vec()),
                Value::Bytes(chain.intermediate.der().to_vec()),
            ]),
        ),
        (text("public_key"), Value::Null),
        (text("user_data"), Value::Null),
        (text("nonce"), Value::Null),
    ]));
    let protected = vec![0xa1, 0x01, 0x38, 0x22];
    let to_sign = encode(&Value::Array(vec![
        text("Signature1"),
        Value::Bytes(protected.clone()),
        Value::Bytes(vec![]),
        Value::Bytes(payload.clone()),
    ]));
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &signer.serialize_der())
        .unwrap();
    let signature = key
        .sign(&aws_lc_rs::rand::SystemRandom::new(), &to_sign)
        .unwrap();
    common::join(&protected, &payload, signature.as_ref())
}

fn check(chain: &Chain) -> Result<(), VerifyError> {
    let policy = AttestationPolicy::default().with_dev_root_der(chain.root.der().to_vec());
    verify(
        &document(chain, &chain.leaf_key),
        &policy,
        SystemTime::now(),
    )
    .map(|_| ())
}

fn profile_error(slot: CertSlot) -> impl Fn(&VerifyError) -> bool {
    move |err| matches!(err, VerifyError::CertificateProfile { slot: s, .. } if *s == slot)
}

#[test]
fn well_formed_chain_without_aki_verifies() {
    // rcgen writes no authority key identifier by default, like real AWS leaves.
    let c = chain(ca("intermediate", 0), leaf(), p384());
    check(&c).unwrap();
}

#[test]
fn leaf_must_not_be_a_ca() {
    let mut l = leaf();
    l.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let c = chain(ca("intermediate", 0), l, p384());
    assert!(profile_error(CertSlot::Leaf)(&check(&c).unwrap_err()));
}

#[test]
fn leaf_needs_digital_signature() {
    let mut l = leaf();
    l.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    let c = chain(ca("intermediate", 0), l, p384());
    assert!(profile_error(CertSlot::Leaf)(&check(&c).unwrap_err()));
}

#[test]
fn intermediate_needs_key_cert_sign_and_ca_flag() {
    let mut no_sign = ca("intermediate", 0);
    no_sign.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let c = chain(no_sign, leaf(), p384());
    assert!(profile_error(CertSlot::Bundle(1))(&check(&c).unwrap_err()));

    let not_ca = params(
        "intermediate",
        IsCa::ExplicitNoCa,
        vec![KeyUsagePurpose::KeyCertSign],
    );
    let c = chain(not_ca, leaf(), p384());
    assert!(profile_error(CertSlot::Bundle(1))(&check(&c).unwrap_err()));

    let no_constraints = params(
        "intermediate",
        IsCa::NoCa,
        vec![KeyUsagePurpose::KeyCertSign],
    );
    let c = chain(no_constraints, leaf(), p384());
    assert!(profile_error(CertSlot::Bundle(1))(&check(&c).unwrap_err()));
}

#[test]
fn unknown_critical_extension_is_refused() {
    let mut l = leaf();
    let mut ext =
        CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![0x05, 0x00]);
    ext.set_criticality(true);
    l.custom_extensions = vec![ext];
    let c = chain(ca("intermediate", 0), l, p384());
    assert!(profile_error(CertSlot::Leaf)(&check(&c).unwrap_err()));
}

#[test]
fn p256_leaf_is_refused() {
    let c = chain(
        ca("intermediate", 0),
        leaf(),
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
    );
    // The document is signed with some P-384 key; the leaf's algorithm is refused first.
    let policy = AttestationPolicy::default().with_dev_root_der(c.root.der().to_vec());
    let err = verify(&document(&c, &p384()), &policy, SystemTime::now()).unwrap_err();
    assert_eq!(err, VerifyError::CertificateAlgorithm(CertSlot::Leaf));
}

#[test]
fn expired_leaf_is_refused() {
    let mut l = leaf();
    l.not_after = (SystemTime::now() - Duration::from_secs(60)).into();
    let c = chain(ca("intermediate", 0), l, p384());
    assert!(matches!(
        check(&c),
        Err(VerifyError::CertificateNotValid {
            slot: CertSlot::Leaf,
            ..
        })
    ));
}

#[test]
fn issuer_name_must_match_and_signature_must_verify() {
    let root_key = p384();
    let root = ca("root", 1).self_signed(&root_key).unwrap();
    let int_key = p384();
    let intermediate = ca("intermediate", 0)
        .signed_by(&int_key, &root, &root_key)
        .unwrap();
    let leaf_key = p384();

    // Signed by the intermediate's key, but naming another issuer.
    let impostor = ca("someone else", 0).self_signed(&int_key).unwrap();
    let misnamed = leaf().signed_by(&leaf_key, &impostor, &int_key).unwrap();
    let c = Chain {
        root,
        intermediate,
        leaf: misnamed,
        leaf_key,
    };
    assert_eq!(check(&c), Err(VerifyError::NameChain(CertSlot::Leaf)));

    // Naming the intermediate, but signed by another key.
    let other_key = p384();
    let same_name = ca("intermediate", 0).self_signed(&other_key).unwrap();
    let leaf_key = p384();
    let forged = leaf().signed_by(&leaf_key, &same_name, &other_key).unwrap();
    let c = Chain {
        leaf: forged,
        leaf_key,
        ..c
    };
    assert_eq!(
        check(&c),
        Err(VerifyError::CertificateSignature(CertSlot::Leaf))
    );
}
