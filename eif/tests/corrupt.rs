//! Damaged and forged images are refused with a precise error, never a panic.

mod common;

use std::io::Cursor;

use enclosure_eif::header::{CRC_OFFSET, EifHeader, HEADER_LEN};
use enclosure_eif::{Error, SectionKind, read_eif};

/// A valid unsigned image with two ramdisks, in memory.
fn image() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, ramdisks) = common::synthetic_inputs(dir.path(), 2);
    std::fs::read(common::build(dir.path(), &kernel, &ramdisks, None, "x.eif")).unwrap()
}

fn read(bytes: &[u8]) -> Result<enclosure_eif::EifInfo, Error> {
    read_eif(&mut Cursor::new(bytes))
}

fn header(bytes: &[u8]) -> EifHeader {
    EifHeader::parse(bytes[..HEADER_LEN].try_into().unwrap()).unwrap()
}

/// Rewrites the header and recomputes its CRC, so only the forged field is wrong.
fn with_header(bytes: &[u8], edit: impl FnOnce(&mut EifHeader)) -> Vec<u8> {
    let mut h = header(bytes);
    edit(&mut h);
    let mut out = bytes.to_vec();
    out[..HEADER_LEN].copy_from_slice(&h.to_bytes());
    fix_crc(&mut out);
    out
}

fn fix_crc(bytes: &mut [u8]) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[..CRC_OFFSET]);
    crc.update(&bytes[HEADER_LEN..]);
    bytes[CRC_OFFSET..HEADER_LEN].copy_from_slice(&crc.finalize().to_be_bytes());
}

#[test]
fn the_pristine_image_reads() {
    let info = read(&image()).unwrap();
    assert_eq!(info.ramdisks().count(), 2);
    let kinds: Vec<_> = info.sections.iter().map(|s| s.kind).collect();
    use SectionKind::*;
    assert_eq!(kinds, [Kernel, Cmdline, Metadata, Ramdisk, Ramdisk]);
}

#[test]
fn truncated_files_are_refused() {
    let img = image();
    for cut in [0, 4, 100, HEADER_LEN - 1] {
        assert!(
            matches!(read(&img[..cut]), Err(Error::TooShort { .. })),
            "cut at {cut}"
        );
    }
    for cut in [
        HEADER_LEN,
        HEADER_LEN + 11,
        HEADER_LEN + 5000,
        img.len() - 1,
    ] {
        let err = read(&img[..cut]).unwrap_err();
        assert!(
            matches!(err, Error::SectionOutOfBounds { .. }),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn a_flipped_bit_fails_the_crc() {
    let img = image();
    for pos in [HEADER_LEN + 20, img.len() / 2, img.len() - 1] {
        let mut bad = img.clone();
        bad[pos] ^= 0x01;
        let err = read(&bad).unwrap_err();
        assert!(
            matches!(err, Error::CrcMismatch { .. }),
            "byte {pos}: {err}"
        );
        assert!(err.to_string().contains("CRC32 mismatch"));
    }
    let mut bad = img.clone();
    bad[CRC_OFFSET] ^= 0x80;
    assert!(matches!(read(&bad), Err(Error::CrcMismatch { .. })));
}

#[test]
fn overlapping_sections_are_refused() {
    let img = image();
    let bad = with_header(&img, |h| h.section_offsets[1] = h.section_offsets[0] + 100);
    let err = read(&bad).unwrap_err();
    assert!(
        matches!(err, Error::SectionOverlap { second: 1, .. }),
        "{err}"
    );
    let bad = with_header(&img, |h| h.section_offsets[2] = 100);
    assert!(matches!(read(&bad), Err(Error::SectionOverlap { .. })));
}

#[test]
fn huge_size_fields_are_refused_without_allocating() {
    let img = image();
    for size in [u64::MAX, u64::MAX - 11, 1 << 62, img.len() as u64] {
        let bad = with_header(&img, |h| h.section_sizes[0] = size);
        let err = read(&bad).unwrap_err();
        assert!(
            matches!(err, Error::SectionOutOfBounds { index: 0, .. }),
            "{size}: {err}"
        );
    }
    let bad = with_header(&img, |h| h.section_offsets[4] = u64::MAX - 3);
    assert!(matches!(
        read(&bad),
        Err(Error::SectionOutOfBounds { index: 4, .. })
    ));
}

#[test]
fn structural_forgeries_are_refused() {
    let img = image();
    let bad = with_header(&img, |h| h.num_sections = 33);
    assert!(matches!(read(&bad), Err(Error::TooManySections(33))));
    let bad = with_header(&img, |h| h.num_sections = u16::MAX);
    assert!(matches!(read(&bad), Err(Error::TooManySections(_))));
    let bad = with_header(&img, |h| h.version = 3);
    assert!(matches!(read(&bad), Err(Error::UnsupportedVersion(3))));
    let bad = with_header(&img, |h| h.num_sections = 4);
    assert!(matches!(read(&bad), Err(Error::NotContiguous(_))));
    let mut bad = img.clone();
    bad[0] = b'x';
    assert!(matches!(read(&bad), Err(Error::BadMagic { .. })));
    let mut bad = img.clone();
    bad.extend_from_slice(&[0; 64]);
    assert!(matches!(read(&bad), Err(Error::NotContiguous(_))));
}

#[test]
fn section_header_forgeries_are_refused() {
    let img = image();
    let h = header(&img);
    // Sets one byte of section `i`'s 12-byte header and fixes the CRC, then reads.
    let forge = |i: usize, at: usize, byte: u8| {
        let mut bad = img.clone();
        bad[h.section_offsets[i] as usize + at] = byte;
        fix_crc(&mut bad);
        read(&bad)
    };
    let flags = forge(0, 3, 1);
    assert!(matches!(
        flags,
        Err(Error::NonZeroFlags { index: 0, flags: 1 })
    ));
    let kind = forge(1, 1, 9);
    assert!(matches!(
        kind,
        Err(Error::UnknownSectionType { index: 1, kind: 9 })
    ));
    use SectionKind::{Cmdline, Kernel};
    let cmdline_as_ramdisk = forge(1, 1, 3);
    assert!(matches!(
        cmdline_as_ramdisk,
        Err(Error::SectionCount {
            kind: Cmdline,
            count: 0,
            ..
        })
    ));
    let kernel_as_ramdisk = forge(0, 1, 3);
    assert!(matches!(
        kernel_as_ramdisk,
        Err(Error::SectionCount {
            kind: Kernel,
            count: 0,
            ..
        })
    ));
    let size_byte = img[h.section_offsets[1] as usize + 11];
    let size = forge(1, 11, size_byte ^ 1); // disagrees with the table
    assert!(matches!(size, Err(Error::SizeMismatch { index: 1, .. })));
}

/// A small valid image, so thousands of damaged copies read quickly.
fn small_image() -> Vec<u8> {
    use enclosure_eif::{EifSpec, SectionSource, write_eif};
    let src = |seed: u64, len: usize| SectionSource {
        name: format!("s{seed}"),
        reader: Cursor::new(common::synthetic(len, seed)),
        len: len as u64,
    };
    let spec = EifSpec {
        kernel: src(1, 2000),
        cmdline: "console=ttyS0".into(),
        ramdisks: vec![src(2, 700), src(3, 300)],
        identity: common::identity(),
        signer: None,
        flags: 0,
    };
    let mut out = Cursor::new(Vec::new());
    write_eif(spec, &mut out).unwrap();
    out.into_inner()
}

#[test]
fn random_damage_never_panics() {
    let img = small_image();
    read(&img).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..5000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut bad = img.clone();
        // Mostly the header and section headers, where the structure lives.
        let pos = (x as usize)
            % if x & 1 == 0 {
                HEADER_LEN + 64
            } else {
                img.len()
            };
        bad[pos] = (x >> 40) as u8;
        if x & 2 == 0 {
            fix_crc(&mut bad);
        }
        let _ = read(&bad);
    }
}

#[test]
fn a_signature_over_another_pcr0_is_reported_invalid() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/signed.eif");
    let mut img = std::fs::read(data).unwrap();
    let kernel_data = header(&img).section_offsets[0] as usize + 12;
    img[kernel_data] ^= 0xff;
    fix_crc(&mut img);
    let info = read(&img).unwrap();
    let sig = info.signature.unwrap();
    assert!(!sig.valid);
    assert!(sig.problem.unwrap().contains("PCR0"));
    // PCR8 depends on the certificate only, so it is still reported.
    assert!(info.measurements.pcr8.is_some());
}

#[test]
fn a_garbled_signature_section_is_refused() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/signed.eif");
    let mut img = std::fs::read(data).unwrap();
    let h = header(&img);
    let sig_data = h.section_offsets[usize::from(h.num_sections) - 1] as usize + 12;
    img[sig_data] = 0xff; // not a CBOR array any more
    fix_crc(&mut img);
    assert!(matches!(read(&img), Err(Error::Signature(_))));
}
