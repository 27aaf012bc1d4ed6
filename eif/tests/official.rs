//! Our PCRs, bytes and signatures against the official aws-nitro-enclaves-image-format crate,
//! the implementation nitro-cli is built on.

mod common;

use std::collections::BTreeMap;
use std::fs;

use aws_nitro_enclaves_image_format::defs::EifIdentityInfo as OfficialIdentity;
use aws_nitro_enclaves_image_format::utils::eif_reader::EifReader;
use aws_nitro_enclaves_image_format::utils::{EifBuilder, PcrSignatureChecker, SignKeyData};
use enclosure_eif::{EifSigner, read_eif};
use sha2::Digest;

const EMPTY_PCR2: &str = "21b9efbc184807662e966d34f390821309eeac6802309798826296bf3e8bec7c10edb30948c90ba67310f7b964fc500a";

/// The official crate's PCRs. Its "HashAlgorithm" is the `Debug` text of whatever sha2
/// version it was linked with ("Sha512_48 { .. }" with today's sha2 0.10); released nitro-cli
/// prints "Sha384 { ... }", which is what we print, so only the registers are compared.
fn official_measurements(path: &std::path::Path) -> BTreeMap<String, String> {
    let mut r = EifReader::from_eif(path.display().to_string()).unwrap();
    assert!(r.check_crc(), "official reader rejects our CRC");
    let mut m = r.get_measurements().unwrap();
    m.remove("HashAlgorithm");
    m
}

fn registers(m: &enclosure_eif::Measurements) -> BTreeMap<String, String> {
    m.registers()
        .into_iter()
        .map(|(k, v)| (k.to_string(), hex::encode(v)))
        .collect()
}

fn ours(path: &std::path::Path) -> enclosure_eif::EifInfo {
    read_eif(&mut fs::File::open(path).unwrap()).unwrap()
}

fn official_build(
    dir: &std::path::Path,
    kernel: &std::path::Path,
    ramdisks: &[std::path::PathBuf],
    sign: Option<SignKeyData>,
    name: &str,
) -> std::path::PathBuf {
    let identity: OfficialIdentity =
        serde_json::from_slice(&common::identity().to_bytes().unwrap()).unwrap();
    let mut b = EifBuilder::new(
        kernel,
        "console=ttyS0 reboot=k panic=30 pci=off".to_string(),
        sign,
        sha2::Sha384::new(),
        0,
        identity,
    );
    for r in ramdisks {
        b.add_ramdisk(r);
    }
    let out = dir.join(name);
    let mut f = fs::File::create(&out).unwrap();
    b.write_to(&mut f);
    out
}

#[test]
fn unsigned_images_are_byte_identical_to_the_official_builder() {
    for n in [1, 2, 5] {
        let dir = tempfile::tempdir().unwrap();
        let (kernel, ramdisks) = common::synthetic_inputs(dir.path(), n);
        let mine = common::build(dir.path(), &kernel, &ramdisks, None, "ours.eif");
        let theirs = official_build(dir.path(), &kernel, &ramdisks, None, "official.eif");
        assert_eq!(
            fs::read(&mine).unwrap(),
            fs::read(&theirs).unwrap(),
            "{n} ramdisks"
        );
        assert_eq!(
            registers(&ours(&mine).measurements),
            official_measurements(&mine)
        );
    }
}

#[test]
fn single_ramdisk_has_the_empty_pcr2() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, ramdisks) = common::synthetic_inputs(dir.path(), 1);
    let eif = common::build(dir.path(), &kernel, &ramdisks, None, "one.eif");
    assert_eq!(hex::encode(ours(&eif).measurements.pcr2), EMPTY_PCR2);
    assert_eq!(official_measurements(&eif)["PCR2"], EMPTY_PCR2);
}

#[test]
fn signed_image_pcrs_and_signature_match_the_official_crate() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, ramdisks) = common::synthetic_inputs(dir.path(), 2);
    let (key_pem, cert_pem) = common::signing_material();
    let signer = EifSigner::from_pem(&key_pem, cert_pem.as_bytes()).unwrap();
    let eif = common::build(dir.path(), &kernel, &ramdisks, Some(&signer), "signed.eif");

    let info = ours(&eif);
    assert!(info.measurements.pcr8.is_some());
    assert!(info.signature.as_ref().unwrap().valid);
    let official = official_measurements(&eif);
    assert!(official.contains_key("PCR8"));
    assert_eq!(registers(&info.measurements), official);

    // The official checker verifies our COSE_Sign1 with OpenSSL and finds our payload is PCR0.
    let mut checker = PcrSignatureChecker::from_eif(&eif.display().to_string()).unwrap();
    assert!(!checker.is_empty());
    checker.verify().unwrap();
    let mut r = EifReader::from_eif(eif.display().to_string()).unwrap();
    let m = r.get_measurements().unwrap();
    r.get_certificate_info(m).unwrap();
    assert_eq!(r.sign_check, Some(true));
}

#[test]
fn we_read_and_verify_images_signed_by_the_official_builder() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, ramdisks) = common::synthetic_inputs(dir.path(), 3);
    let (key_pem, cert_pem) = common::signing_material();
    fs::write(dir.path().join("key.pem"), &key_pem).unwrap();
    fs::write(dir.path().join("cert.pem"), &cert_pem).unwrap();
    let sign = SignKeyData::new(
        &dir.path().join("key.pem").display().to_string(),
        &dir.path().join("cert.pem"),
    )
    .unwrap();
    let theirs = official_build(
        dir.path(),
        &kernel,
        &ramdisks,
        Some(sign),
        "official-signed.eif",
    );
    let info = ours(&theirs);
    let sig = info.signature.as_ref().unwrap();
    assert!(sig.valid, "{:?}", sig.problem);
    assert_eq!(
        registers(&info.measurements),
        official_measurements(&theirs)
    );

    // Same inputs signed by us: same PCRs, PCR8 included (the signatures differ: OpenSSL
    // draws a random nonce, we use RFC 6979).
    let signer = EifSigner::from_pem(&key_pem, cert_pem.as_bytes()).unwrap();
    let mine = common::build(
        dir.path(),
        &kernel,
        &ramdisks,
        Some(&signer),
        "ours-signed.eif",
    );
    assert_eq!(ours(&mine).measurements, info.measurements);
}
