//! The committed vectors in eif/testdata: their PCRs, their agreement with the official
//! crate, and byte-identical rebuilds (SEC1 key and OpenSSL-made certificate included).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use aws_nitro_enclaves_image_format::utils::eif_reader::EifReader;
use enclosure_eif::explain::{self, parse_expected_pcrs};
use enclosure_eif::{EifIdentityInfo, EifSigner, read_eif};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn info(name: &str) -> enclosure_eif::EifInfo {
    read_eif(&mut fs::File::open(testdata(name)).unwrap()).unwrap()
}

#[test]
fn vectors_have_their_recorded_pcrs() {
    for (eif, pcrs) in [
        ("unsigned.eif", "unsigned.pcrs.json"),
        ("signed.eif", "signed.pcrs.json"),
    ] {
        let i = info(eif);
        let expected = parse_expected_pcrs(&fs::read_to_string(testdata(pcrs)).unwrap()).unwrap();
        let checks = explain::check_pcrs(&i, &expected);
        assert!(
            checks.iter().all(|c| c.matches != Some(false)),
            "{eif}: {checks:?}"
        );
        let mut official = EifReader::from_eif(testdata(eif).display().to_string()).unwrap();
        assert!(official.check_crc());
        let m = official.get_measurements().unwrap();
        for (name, v) in i.measurements.registers() {
            assert_eq!(m[name], hex::encode(v), "{eif} {name}");
        }
    }
    let signed = info("signed.eif");
    let sig = signed.signature.unwrap();
    assert!(sig.valid);
    assert_eq!(
        sig.subject,
        "O=Enclosure test,CN=enclosure-eif testdata signer"
    );
}

#[test]
fn vectors_rebuild_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("boot");
    let app = dir.path().join("app");
    fs::create_dir_all(&boot).unwrap();
    fs::create_dir_all(app.join("bin")).unwrap();
    fs::write(boot.join("init"), "boot").unwrap();
    fs::write(app.join("bin/app"), "app").unwrap();
    fs::set_permissions(boot.join("init"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(app.join("bin"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(app.join("bin/app"), fs::Permissions::from_mode(0o755)).unwrap();
    let mut boot_cpio = Vec::new();
    enclosure_eif::ramdisk::write_ramdisk(&boot, 1_700_000_000, &mut boot_cpio).unwrap();
    let mut app_cpio = Vec::new();
    enclosure_eif::ramdisk::write_ramdisk(&app, 1_700_000_000, &mut app_cpio).unwrap();
    assert_eq!(boot_cpio, fs::read(testdata("boot.cpio")).unwrap());
    assert_eq!(app_cpio, fs::read(testdata("app.cpio")).unwrap());

    let key = fs::read_to_string(testdata("signing-key.pem")).unwrap();
    let cert = fs::read(testdata("signing-cert.pem")).unwrap();
    let signer = EifSigner::from_pem(&key, &cert).unwrap();
    let ramdisks = [testdata("boot.cpio"), testdata("app.cpio")];
    for (signer, vector) in [(None, "unsigned.eif"), (Some(&signer), "signed.eif")] {
        let out = dir.path().join(vector);
        let identity = EifIdentityInfo::new("enclosure-enclave", "1.0", 1_700_000_000).unwrap();
        enclosure_eif::build_eif_file(
            &testdata("kernel.bin"),
            "console=ttyS0",
            &ramdisks,
            identity,
            signer,
            &out,
        )
        .unwrap();
        assert_eq!(
            fs::read(&out).unwrap(),
            fs::read(testdata(vector)).unwrap(),
            "{vector}"
        );
    }
}

#[test]
fn a_changed_application_file_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    fs::create_dir_all(app.join("bin")).unwrap();
    fs::set_permissions(app.join("bin"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(app.join("bin/app"), "app, patched").unwrap();
    fs::set_permissions(app.join("bin/app"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(app.join("extra"), "new").unwrap();
    let app_cpio = dir.path().join("app.cpio");
    enclosure_eif::ramdisk::build_ramdisk_file(&app, 1_700_000_000, &app_cpio).unwrap();
    let identity = EifIdentityInfo::new("enclosure-enclave", "1.0", 1_700_000_000).unwrap();
    let out = dir.path().join("patched.eif");
    enclosure_eif::build_eif_file(
        &testdata("kernel.bin"),
        "console=ttyS0",
        &[testdata("boot.cpio"), app_cpio],
        identity,
        None,
        &out,
    )
    .unwrap();

    let ours = read_eif(&mut fs::File::open(&out).unwrap()).unwrap();
    let reference = info("unsigned.eif");
    let expected =
        parse_expected_pcrs(&fs::read_to_string(testdata("unsigned.pcrs.json")).unwrap()).unwrap();
    let checks = explain::check_pcrs(&ours, &expected);
    let verdict: Vec<_> = checks.iter().map(|c| (c.index, c.matches)).collect();
    assert_eq!(
        verdict,
        [
            (0, Some(false)),
            (1, Some(true)),
            (2, Some(false)),
            (8, None)
        ]
    );
    let why = explain::diagnose(&checks);
    assert!(why[0].contains("application ramdisks"), "{why:?}");

    let sections = explain::compare_sections(&ours, Some(&reference));
    let differing: Vec<_> = sections
        .iter()
        .filter(|s| !s.same)
        .map(|s| s.section.as_str())
        .collect();
    assert_eq!(differing, ["ramdisk 1"]);

    let diffs = explain::diff_ramdisks(
        &mut fs::File::open(&out).unwrap(),
        &ours,
        &mut fs::File::open(testdata("unsigned.eif")).unwrap(),
        &reference,
    );
    assert_eq!(diffs.len(), 1);
    let entries = diffs[0].entries.as_ref().unwrap();
    let summary: Vec<_> = entries
        .iter()
        .map(|e| (e.path.as_str(), e.differences.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            ("bin/app", vec!["size", "content"]),
            ("extra", vec!["only here"])
        ]
    );
}
