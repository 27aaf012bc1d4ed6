//! Real documents from AWS Nitro hardware (testdata/, see PROVENANCE.md): each verifies at its
//! own timestamp, and fails today because its certificates expired.

mod common;

use std::time::{Duration, SystemTime};

use common::{fixture, fixtures, testdata};
use enclosure_attestation::{
    AWS_NITRO_ROOT_G1_DER, AWS_NITRO_ROOT_G1_SHA256, AttestationPolicy, CertSlot, Check, PcrSet,
    PolicyViolation, TrustAnchor, Verifier, VerifyError, pem_certificate_to_der, verify,
};

#[test]
fn pinned_root_is_the_published_aws_root() {
    let pem = std::fs::read(testdata("aws_nitro_root_g1.pem")).unwrap();
    assert_eq!(pem_certificate_to_der(&pem).unwrap(), AWS_NITRO_ROOT_G1_DER);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, AWS_NITRO_ROOT_G1_DER);
    assert_eq!(hex::encode(digest.as_ref()), AWS_NITRO_ROOT_G1_SHA256);
    assert_eq!(
        AWS_NITRO_ROOT_G1_SHA256,
        "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
    );
}

#[test]
fn every_fixture_verifies_at_its_own_timestamp() {
    let all = fixtures();
    assert_eq!(all.len(), 6);
    for f in &all {
        let doc =
            verify(&f.bytes, &f.policy(), f.at()).unwrap_or_else(|err| panic!("{}: {err}", f.file));
        assert_eq!(doc.module_id(), f.module_id, "{}", f.file);
        assert_eq!(doc.timestamp_ms(), f.timestamp_ms, "{}", f.file);
        assert_eq!(doc.is_debug(), f.debug, "{}", f.file);
        assert_eq!(doc.trust_anchor(), TrustAnchor::AwsNitroRoot);
        assert_eq!(doc.pcrs().len(), 16, "{}", f.file);
        for (index, value) in f.pcrs {
            assert_eq!(doc.pcr(index), Some(&value), "{} PCR{index}", f.file);
        }
        assert_eq!(
            doc.public_key().map(<[u8]>::len),
            f.public_key_len,
            "{}",
            f.file
        );
        assert_eq!(
            doc.user_data().map(<[u8]>::len),
            f.user_data_len,
            "{}",
            f.file
        );
        assert_eq!(doc.nonce().map(<[u8]>::len), f.nonce_len, "{}", f.file);
        assert_eq!(doc.cabundle()[0], AWS_NITRO_ROOT_G1_DER);
    }
}

#[test]
fn every_fixture_fails_today_with_a_validity_error() {
    for f in fixtures() {
        let err = verify(&f.bytes, &f.policy(), SystemTime::now()).unwrap_err();
        assert!(
            matches!(err, VerifyError::CertificateNotValid { .. }),
            "{}: {err}",
            f.file
        );
        assert_eq!(err.check(), Check::Validity);
    }
}

#[test]
fn validity_ends_when_the_chain_does() {
    let f = fixture("tkhq_qos");
    // documents.json: the chain is valid until 2022-07-06T17:18:22Z (the leaf's notAfter).
    assert_eq!(f.chain_valid_until, "2022-07-06T17:18:22Z");
    let until = SystemTime::UNIX_EPOCH + Duration::from_secs(1_657_127_902);
    let policy = f.policy().with_max_age(Duration::from_secs(24 * 3600));
    verify(&f.bytes, &policy, until).unwrap();
    let err = verify(&f.bytes, &policy, until + Duration::from_secs(1)).unwrap_err();
    assert!(matches!(
        err,
        VerifyError::CertificateNotValid {
            slot: CertSlot::Leaf,
            ..
        }
    ));
}

#[test]
fn high_s_signature_is_accepted() {
    // documents.json marks this one's ES384 signature as high-S.
    let f = fixture("evervault_ga-valid-2023-09");
    verify(&f.bytes, &f.policy(), f.at()).unwrap();
}

#[test]
fn tag_18_is_accepted() {
    let f = fixture("marlinprotocol");
    let mut tagged = vec![0xd2];
    tagged.extend_from_slice(&f.bytes);
    verify(&tagged, &f.policy(), f.at()).unwrap();
    let mut wrong_tag = vec![0xd1];
    wrong_tag.extend_from_slice(&f.bytes);
    assert!(matches!(
        verify(&wrong_tag, &f.policy(), f.at()),
        Err(VerifyError::NotCoseSign1(_))
    ));
}

#[test]
fn default_policy_accepts_production_fixtures_at_their_time() {
    for f in fixtures().into_iter().filter(|f| !f.debug) {
        verify(&f.bytes, &AttestationPolicy::default(), f.at())
            .unwrap_or_else(|err| panic!("{}: {err}", f.file));
    }
}

#[test]
fn debug_document_is_refused_by_a_production_policy() {
    let f = fixture("evervault_beta-debug");
    let err = verify(&f.bytes, &AttestationPolicy::default(), f.at()).unwrap_err();
    assert_eq!(err, VerifyError::Policy(PolicyViolation::DebugMode));
}

#[test]
fn other_measurement_is_refused() {
    let f = fixture("signalapp");
    let [p0, p1, p2, ..] = f.pcrs;
    let mut other = p2.1;
    other[0] ^= 1;
    let policy = AttestationPolicy::default().with_pcr_set(PcrSet::new(p0.1, p1.1, other));
    let err = verify(&f.bytes, &policy, f.at()).unwrap_err();
    assert_eq!(err, VerifyError::Policy(PolicyViolation::PcrMismatch(2)));
    // A second allowed set that matches is enough.
    let policy = policy.with_pcr_set(PcrSet::new(p0.1, p1.1, p2.1));
    verify(&f.bytes, &policy, f.at()).unwrap();
}

#[test]
fn stale_and_future_timestamps_are_refused() {
    let f = fixture("evervault_beta-valid");
    let policy = f.policy().with_max_age(Duration::from_secs(60));
    verify(&f.bytes, &policy, f.at() + Duration::from_secs(60)).unwrap();
    let err = verify(&f.bytes, &policy, f.at() + Duration::from_secs(61)).unwrap_err();
    assert!(matches!(
        err,
        VerifyError::Policy(PolicyViolation::TooOld { .. })
    ));
    // The chain was already valid 3 s before the document was made.
    let err = verify(
        &f.bytes,
        &policy.with_max_future_skew(Duration::from_secs(1)),
        f.at() - Duration::from_secs(2),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        VerifyError::Policy(PolicyViolation::FromFuture { .. })
    ));
}

#[test]
fn nonce_must_match() {
    let f = fixture("evervault_beta-valid");
    let nonce = verify(&f.bytes, &f.policy(), f.at())
        .unwrap()
        .nonce()
        .unwrap()
        .to_vec();
    verify(&f.bytes, &f.policy().with_nonce(&nonce), f.at()).unwrap();
    let mut wrong = nonce.clone();
    wrong[17] ^= 0x80;
    let err = verify(&f.bytes, &f.policy().with_nonce(&wrong), f.at()).unwrap_err();
    assert_eq!(err, VerifyError::Policy(PolicyViolation::NonceMismatch));
    // A document without a nonce fails an expected nonce too.
    let g = fixture("signalapp");
    let err = verify(&g.bytes, &g.policy().with_nonce(&nonce), g.at()).unwrap_err();
    assert_eq!(err, VerifyError::Policy(PolicyViolation::NonceMismatch));
}

#[test]
fn user_data_and_public_key_must_match() {
    let f = fixture("marlinprotocol");
    let doc = verify(&f.bytes, &f.policy(), f.at()).unwrap();
    let (user_data, public_key) = (doc.user_data().unwrap(), doc.public_key().unwrap());
    let exact = f
        .policy()
        .with_user_data(user_data)
        .with_public_key(public_key);
    verify(&f.bytes, &exact, f.at()).unwrap();
    let err = verify(&f.bytes, &f.policy().with_user_data(b"other"), f.at()).unwrap_err();
    assert_eq!(err, VerifyError::Policy(PolicyViolation::UserDataMismatch));
    let err = verify(
        &f.bytes,
        &f.policy().with_public_key(&public_key[1..]),
        f.at(),
    )
    .unwrap_err();
    assert_eq!(err, VerifyError::Policy(PolicyViolation::PublicKeyMismatch));
}

#[test]
fn cached_verifier_agrees_and_still_checks_time_and_signature() {
    let verifier = Verifier::new();
    for f in fixtures() {
        for _ in 0..2 {
            verifier.verify(&f.bytes, &f.policy(), f.at()).unwrap();
        }
        // Warm cache, expired chain: still refused.
        assert!(matches!(
            verifier.verify(&f.bytes, &f.policy(), SystemTime::now()),
            Err(VerifyError::CertificateNotValid { .. })
        ));
        // Warm cache, altered signature: still refused.
        let last = f.bytes.len() - 1;
        assert_eq!(
            verifier.verify(&common::flip(&f.bytes, last), &f.policy(), f.at()),
            Err(VerifyError::DocumentSignature)
        );
    }
}

#[test]
fn verify_at_document_time_uses_the_signed_timestamp() {
    let f = fixture("tkhq_qos");
    let doc = Verifier::uncached()
        .verify_at_document_time(&f.bytes, &f.policy())
        .unwrap();
    assert_eq!(doc.timestamp(), f.at());
}
