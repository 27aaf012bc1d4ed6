//! Helpers shared by the integration tests: synthetic inputs, trees, signing material and
//! builds. Tests make their own kernels and ramdisks; nothing here is a real kernel.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use enclosure_eif::{EifIdentityInfo, EifSigner, metadata};

/// Deterministic pseudo-random bytes (xorshift64), so tests need no fixtures.
pub fn synthetic(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A small application tree with a directory, an executable, a setuid file, a symlink and
/// an empty directory.
pub fn write_tree(root: &Path) {
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("etc/empty")).unwrap();
    // Explicit modes, so the archive does not depend on the umask of the machine.
    for d in ["bin", "etc", "etc/empty"] {
        fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::write(root.join("init"), b"#!/bin/sh\nexec /bin/app\n").unwrap();
    fs::set_permissions(root.join("init"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("bin/app"), synthetic(150_000, 7)).unwrap();
    fs::set_permissions(root.join("bin/app"), fs::Permissions::from_mode(0o4750)).unwrap();
    fs::write(
        root.join("etc/config.toml"),
        b"listen = \"vsock://3:5000\"\n",
    )
    .unwrap();
    fs::set_permissions(
        root.join("etc/config.toml"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    symlink("bin/app", root.join("app")).unwrap();
}

/// Copies a tree, recreating symlinks and permissions; timestamps are the copy's own.
pub fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    fs::set_permissions(dst, fs::metadata(src).unwrap().permissions()).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let (from, to) = (e.path(), dst.join(e.file_name()));
        let t = e.file_type().unwrap();
        if t.is_symlink() {
            symlink(fs::read_link(&from).unwrap(), &to).unwrap();
        } else if t.is_dir() {
            copy_tree(&from, &to);
        } else {
            fs::copy(&from, &to).unwrap();
        }
    }
}

/// Sets the mtime of every file and directory under `root` (symlinks themselves excepted).
pub fn touch_all(root: &Path, t: SystemTime) {
    for e in fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let t_ = e.file_type().unwrap();
        if t_.is_symlink() {
            continue;
        }
        if t_.is_dir() {
            touch_all(&e.path(), t);
        }
        fs::File::open(e.path()).unwrap().set_modified(t).unwrap();
    }
}

/// A fresh P-384 key and a self-signed certificate for it, both PEM.
pub fn signing_material() -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["enclosure-eif-test".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Enclosure EIF test signer");
    let cert = params.self_signed(&key).unwrap();
    (key.serialize_pem(), cert.pem())
}

/// The identity every test build uses (build time from a fixed SOURCE_DATE_EPOCH).
pub fn identity() -> EifIdentityInfo {
    EifIdentityInfo::new(
        "enclosure-test",
        "1.0",
        metadata::source_date_epoch(Some("1700000000")).unwrap(),
    )
    .unwrap()
}

/// Writes a kernel and `n` ramdisks of synthetic bytes into `dir`; returns their paths.
pub fn synthetic_inputs(dir: &Path, n: usize) -> (PathBuf, Vec<PathBuf>) {
    let kernel = dir.join("bzImage");
    fs::write(&kernel, synthetic(300_000, 1)).unwrap();
    let ramdisks = (0..n)
        .map(|i| {
            let p = dir.join(format!("ramdisk{i}.cpio"));
            fs::write(&p, synthetic(70_000 + 1000 * i, 100 + i as u64)).unwrap();
            p
        })
        .collect();
    (kernel, ramdisks)
}

/// Builds an image with our writer.
pub fn build(
    dir: &Path,
    kernel: &Path,
    ramdisks: &[PathBuf],
    signer: Option<&EifSigner>,
    name: &str,
) -> PathBuf {
    let out = dir.join(name);
    enclosure_eif::build_eif_file(
        kernel,
        "console=ttyS0 reboot=k panic=30 pci=off",
        ramdisks,
        identity(),
        signer,
        &out,
    )
    .unwrap();
    out
}

/// A second-resolution pause, so copies made after it carry different timestamps.
pub fn pause_past_a_second() {
    std::thread::sleep(Duration::from_millis(1100));
}
