//! The same sources built twice, in two directories at different times, give byte-identical
//! ramdisks and images, hence identical PCRs.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use enclosure_eif::ramdisk::build_ramdisk_file;
use enclosure_eif::{EifSigner, read_eif};

/// One full build from a source tree: bootstrap and application ramdisks, then the image.
fn build_from(src_tree: &Path, work: &Path, signer: Option<&EifSigner>) -> (Vec<u8>, Vec<u8>) {
    let kernel = work.join("bzImage");
    fs::write(&kernel, common::synthetic(300_000, 1)).unwrap();
    let boot_tree = work.join("boot");
    fs::create_dir_all(&boot_tree).unwrap();
    fs::write(boot_tree.join("init"), b"bootstrap").unwrap();
    let boot = work.join("boot.cpio");
    let app = work.join("app.cpio");
    build_ramdisk_file(&boot_tree, 0, &boot).unwrap();
    build_ramdisk_file(src_tree, 0, &app).unwrap();
    let eif = common::build(work, &kernel, &[boot, app.clone()], signer, "enclave.eif");
    (fs::read(app).unwrap(), fs::read(eif).unwrap())
}

fn twice(signer: Option<&EifSigner>) {
    let first = tempfile::tempdir().unwrap();
    let tree_a = first.path().join("tree");
    common::write_tree(&tree_a);
    let (cpio_a, eif_a) = build_from(&tree_a, first.path(), signer);

    common::pause_past_a_second();
    let second = tempfile::tempdir().unwrap();
    let tree_b = second.path().join("tree");
    common::copy_tree(&tree_a, &tree_b);
    common::touch_all(&tree_b, SystemTime::now() + Duration::from_secs(86_400));
    let (cpio_b, eif_b) = build_from(&tree_b, second.path(), signer);

    assert_eq!(cpio_a, cpio_b, "ramdisks differ");
    assert_eq!(eif_a, eif_b, "images differ");
    let a = read_eif(&mut std::io::Cursor::new(&eif_a)).unwrap();
    let b = read_eif(&mut std::io::Cursor::new(&eif_b)).unwrap();
    assert_eq!(a.measurements, b.measurements);
}

#[test]
fn unsigned_image_built_twice_is_byte_identical() {
    twice(None);
}

#[test]
fn signed_image_built_twice_is_byte_identical() {
    let (key, cert) = common::signing_material();
    let signer = EifSigner::from_pem(&key, cert.as_bytes()).unwrap();
    twice(Some(&signer));
}

#[test]
fn source_date_epoch_sets_every_mtime_and_the_build_time() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    common::write_tree(&tree);
    let mut out = Vec::new();
    enclosure_eif::ramdisk::write_ramdisk(&tree, 1_700_000_000, &mut out).unwrap();
    let entries = enclosure_eif::cpio::read_newc(&out[..]).unwrap();
    assert!(
        entries
            .iter()
            .all(|e| e.mtime == 1_700_000_000 && e.uid == 0 && e.gid == 0)
    );
    let paths: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "app",
            "bin",
            "bin/app",
            "etc",
            "etc/config.toml",
            "etc/empty",
            "init"
        ]
    );
    let modes: Vec<_> = entries.iter().map(|e| e.mode).collect();
    assert_eq!(
        modes,
        [
            0o120777, 0o40755, 0o104750, 0o40755, 0o100640, 0o40755, 0o100755
        ]
    );
    assert_eq!(
        common::identity().build_info.build_time,
        "2023-11-14T22:13:20+00:00"
    );
}

#[test]
fn a_ramdisk_is_not_written_into_its_own_tree() {
    let dir = tempfile::tempdir().unwrap();
    common::write_tree(dir.path());
    let err =
        enclosure_eif::ramdisk::build_ramdisk_file(dir.path(), 0, &dir.path().join("bin/x.cpio"))
            .unwrap_err();
    assert!(err.to_string().contains("inside the tree"), "{err}");
    assert!(!dir.path().join("bin/x.cpio").exists());
}

#[test]
fn unsupported_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let err = enclosure_eif::ramdisk::write_ramdisk(dir.path(), 0, Vec::new()).unwrap_err();
    assert!(
        matches!(&err, enclosure_eif::Error::Unarchivable { path, .. } if path == "pipe"),
        "{err}"
    );
}
