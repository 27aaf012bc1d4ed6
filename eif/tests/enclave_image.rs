//! The real enclave image, built the way `enclosure eif build-enclave` builds it: twice, from
//! two copies of this repository made at different times and built in separate target
//! directories, it comes out byte for byte the same; and the official
//! aws-nitro-enclaves-image-format crate measures it exactly as we do.
//!
//! It needs what `.ci/test` provides, and fails (never skips) without it:
//! - the musl standard library (`rustup target add x86_64-unknown-linux-musl`);
//! - a real kernel at `target/kernel/bzImage` (Debian's linux-image-cloud-amd64, unpacked by
//!   `.ci/test`), or wherever ENCLOSURE_TEST_KERNEL points.
//!
//! Cost: two cold release builds of the enclave for musl (about a minute each on two cores),
//! sharing CARGO_HOME's registry but not a target directory.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use aws_nitro_enclaves_image_format::defs::EifIdentityInfo as OfficialIdentity;
use aws_nitro_enclaves_image_format::utils::EifBuilder;
use aws_nitro_enclaves_image_format::utils::eif_reader::EifReader;
use enclosure_eif::enclave_image::{
    DEFAULT_CMDLINE, EnclaveImage, EnclaveImageSpec, MUSL_TARGET, build_enclave_image,
};
use sha2::Digest;

const HOW: &str = "`.ci/test` provides it: it runs `rustup target add x86_64-unknown-linux-musl` \
    and unpacks Debian's linux-image-cloud-amd64 bzImage into target/kernel/bzImage";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the eif crate sits in the repository")
        .to_path_buf()
}

/// The kernel, or a failure that says where it comes from.
fn kernel() -> PathBuf {
    let path = std::env::var_os("ENCLOSURE_TEST_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/kernel/bzImage"));
    let header = fs::read(&path)
        .ok()
        .and_then(|b| b.get(0x202..0x206).map(<[u8]>::to_vec));
    assert!(
        header.as_deref() == Some(b"HdrS"),
        "no bzImage at {} (ENCLOSURE_TEST_KERNEL overrides the path); {HOW}",
        path.display()
    );
    path
}

/// Fails unless the toolchain the tree pins has the musl standard library.
fn require_musl_target(root: &Path) {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(root)
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .expect("rustc runs");
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let std_dir = Path::new(&sysroot).join("lib/rustlib").join(MUSL_TARGET);
    assert!(
        std_dir.join("lib").is_dir(),
        "the {MUSL_TARGET} standard library is not installed in {sysroot}; {HOW}"
    );
}

/// Copies the source tree: everything but build outputs and version control.
fn copy_source(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        let (from, to) = (e.path(), dst.join(&name));
        let t = e.file_type().unwrap();
        if t.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from).unwrap(), &to).unwrap();
        } else if t.is_dir() {
            copy_source(&from, &to);
        } else {
            fs::copy(&from, &to).unwrap();
        }
    }
}

/// One build from a fresh copy of the repository in `work`, its files dated `dated` if given.
fn build_copy(
    work: &Path,
    kernel: &Path,
    epoch: i64,
    dated: Option<SystemTime>,
) -> (EnclaveImage, Vec<u8>, Duration) {
    let source = work.join("enclosure");
    copy_source(&repo_root(), &source);
    if let Some(t) = dated {
        common::touch_all(&source, t);
    }
    let output = work.join("enclave.eif");
    let mut spec = EnclaveImageSpec::new(&source, kernel, &output, epoch);
    // Outside the copy, and one per build, so the second build reuses nothing of the first.
    spec.target_dir = work.join("target");
    let started = Instant::now();
    let image = build_enclave_image(&spec, &mut |line| eprintln!("{line}")).unwrap();
    let took = started.elapsed();
    (image, fs::read(&output).unwrap(), took)
}

fn registers(m: &enclosure_eif::Measurements) -> BTreeMap<String, String> {
    m.registers()
        .into_iter()
        .map(|(k, v)| (k.to_string(), hex::encode(v)))
        .collect()
}

/// The official crate's PCRs of a file ("HashAlgorithm" names its sha2 version; dropped).
fn official_measurements(path: &Path) -> BTreeMap<String, String> {
    let mut r = EifReader::from_eif(path.display().to_string()).unwrap();
    assert!(r.check_crc(), "the official reader rejects the CRC");
    let mut m = r.get_measurements().unwrap();
    m.remove("HashAlgorithm");
    m
}

#[test]
fn enclave_image_is_reproducible_and_measured_like_nitro_cli() {
    let kernel = kernel();
    let root = repo_root();
    require_musl_target(&root);
    let epoch = 1_700_000_000;

    let first = tempfile::tempdir().unwrap();
    let (a, eif_a, took_a) = build_copy(first.path(), &kernel, epoch, None);
    common::pause_past_a_second();
    let second = tempfile::tempdir().unwrap();
    // The second copy is made later and its files dated a day ahead, so any timestamp that
    // leaked into the image would show.
    let (b, eif_b, took_b) = build_copy(
        second.path(),
        &kernel,
        epoch,
        Some(SystemTime::now() + Duration::from_secs(86_400)),
    );
    eprintln!("enclave image builds: {took_a:.1?} and {took_b:.1?}");

    // (a) Byte-identical ramdisks and images, identical PCRs.
    assert_eq!(
        fs::read(&a.bootstrap_ramdisk).unwrap(),
        fs::read(&b.bootstrap_ramdisk).unwrap(),
        "bootstrap ramdisks (init) differ"
    );
    assert_eq!(
        fs::read(&a.application_ramdisk).unwrap(),
        fs::read(&b.application_ramdisk).unwrap(),
        "application ramdisks (enclave) differ"
    );
    assert!(eif_a == eif_b, "the two images differ");
    assert_eq!(a.info.measurements, b.info.measurements);
    assert_eq!(a.info.cmdline, DEFAULT_CMDLINE);
    assert!(a.info.signature.is_none());

    // The image holds static binaries and nothing of the build machine.
    let app = fs::read(&a.application_ramdisk).unwrap();
    for leak in [
        root.to_string_lossy().as_bytes(),
        first.path().to_string_lossy().as_bytes(),
    ] {
        assert!(
            !app.windows(leak.len()).any(|w| w == leak),
            "a build path leaked into the enclave binary"
        );
    }
    let entries = enclosure_eif::cpio::read_newc(&app[..]).unwrap();
    let names: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(names, ["bin", "bin/enclosure-enclave"]);
    assert!(
        entries
            .iter()
            .all(|e| e.mtime == epoch as u32 && e.uid == 0 && e.gid == 0)
    );

    // (b) The official crate reads the image and gets our PCRs...
    let image_a = first.path().join("enclave.eif");
    assert_eq!(
        official_measurements(&image_a),
        registers(&a.info.measurements)
    );
    // ...and building the same inputs with its builder gives the same PCRs.
    let identity: OfficialIdentity = serde_json::from_value(
        serde_json::to_value(a.info.metadata.as_ref().expect("metadata section")).unwrap(),
    )
    .unwrap();
    let mut builder = EifBuilder::new(
        &kernel,
        DEFAULT_CMDLINE.to_string(),
        None,
        sha2::Sha384::new(),
        0,
        identity,
    );
    builder.add_ramdisk(&a.bootstrap_ramdisk);
    builder.add_ramdisk(&a.application_ramdisk);
    let official = first.path().join("official.eif");
    builder.write_to(&mut fs::File::create(&official).unwrap());
    assert_eq!(
        official_measurements(&official),
        registers(&a.info.measurements)
    );

    // With an NSM module (as for nitro-cli's blobs kernel) only the bootstrap changes: cargo
    // finds the binaries fresh, PCR1 moves, PCR2 stays.
    let module = first.path().join("nsm.ko");
    fs::write(&module, b"\x7fELF not really a module").unwrap();
    let output = first.path().join("with-nsm.eif");
    let mut spec = EnclaveImageSpec::new(&first.path().join("enclosure"), &kernel, &output, epoch);
    spec.target_dir = first.path().join("target");
    spec.nsm_module = Some(module);
    let with_nsm = build_enclave_image(&spec, &mut |line| eprintln!("{line}")).unwrap();
    let boot = fs::read(&with_nsm.bootstrap_ramdisk).unwrap();
    let names: Vec<_> = enclosure_eif::cpio::read_newc(&boot[..])
        .unwrap()
        .into_iter()
        .map(|e| (e.path, e.mode))
        .collect();
    assert_eq!(
        names,
        [
            ("init".to_string(), 0o100755),
            ("nsm.ko".to_string(), 0o100644)
        ]
    );
    let (m, m0) = (&with_nsm.info.measurements, &a.info.measurements);
    assert_ne!(m.pcr1, m0.pcr1);
    assert_eq!(m.pcr2, m0.pcr2);
    assert_eq!(official_measurements(&output), registers(m));
}
