//! Reading an EIF: every size is checked against the file before anything is read, then one
//! streaming pass computes the CRC32, the PCRs and a digest of each section.

use std::io::{Read, Seek, SeekFrom};

use crate::error::{Error, Result};
use crate::header::{
    CRC_OFFSET, EifHeader, HEADER_LEN, MAX_SECTIONS, RawSectionHeader, SECTION_HEADER_LEN,
    SectionKind, VERSION,
};
use crate::measure::{Digest48, Measurements, Measurer};
use crate::metadata::EifIdentityInfo;
use crate::sign::{SignatureInfo, inspect_signature_section};
use crate::stream::read_exact_chunks;

/// Largest cmdline read whole (the x86 boot protocol caps it far lower).
pub const MAX_CMDLINE: u64 = 1 << 20;
/// Largest metadata section read whole.
pub const MAX_METADATA: u64 = 1 << 20;
/// Largest signature section read whole.
pub const MAX_SIGNATURE: u64 = 1 << 20;

/// One section of an image, located and digested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionInfo {
    /// Index in the header's tables.
    pub index: usize,
    /// What the section holds.
    pub kind: SectionKind,
    /// Offset of its 12-byte header in the file.
    pub offset: u64,
    /// Size of its data.
    pub size: u64,
    /// SHA-384 of its data, so mismatches can be pinned to one section.
    pub sha384: Digest48,
}

/// Everything learnt from reading an image.
#[derive(Clone, Debug)]
pub struct EifInfo {
    /// The parsed header.
    pub header: EifHeader,
    /// Sections in file order.
    pub sections: Vec<SectionInfo>,
    /// PCR0/1/2, and PCR8 when signed.
    pub measurements: Measurements,
    /// The kernel command line.
    pub cmdline: String,
    /// The metadata section, when present.
    pub metadata: Option<EifIdentityInfo>,
    /// The signature section, when present, checked against PCR0.
    pub signature: Option<SignatureInfo>,
    /// Length of the file.
    pub file_len: u64,
}

impl EifInfo {
    /// The ramdisk sections, in order.
    pub fn ramdisks(&self) -> impl Iterator<Item = &SectionInfo> {
        self.sections
            .iter()
            .filter(|s| s.kind == SectionKind::Ramdisk)
    }
}

/// Reads and checks an EIF, streaming its sections.
pub fn read_eif<R: Read + Seek>(src: &mut R) -> Result<EifInfo> {
    let file_len = src.seek(SeekFrom::End(0))?;
    if file_len < HEADER_LEN as u64 {
        return Err(Error::TooShort { len: file_len });
    }
    src.seek(SeekFrom::Start(0))?;
    let mut header_bytes = [0u8; HEADER_LEN];
    src.read_exact(&mut header_bytes)?;
    let header = EifHeader::parse(&header_bytes)?;
    if header.version != VERSION {
        return Err(Error::UnsupportedVersion(header.version));
    }
    check_layout(&header, file_len)?;
    // The layout check made table order file order, so section i is table entry i.
    let kinds = read_section_headers(src, &header)?;
    check_counts_and_order(&kinds)?;

    let mut crc = crc32fast::Hasher::new();
    crc.update(&header_bytes[..CRC_OFFSET]);
    let mut measurer = Measurer::new();
    let mut sections = Vec::with_capacity(kinds.len());
    let mut cmdline = Vec::new();
    let mut metadata_bytes = None;
    let mut signature_bytes = None;
    for (index, &kind) in kinds.iter().enumerate() {
        let offset = header.section_offsets[index];
        let size = header.section_sizes[index];
        let keep = match kind {
            SectionKind::Cmdline => Some(MAX_CMDLINE),
            SectionKind::Metadata => Some(MAX_METADATA),
            SectionKind::Signature => Some(MAX_SIGNATURE),
            SectionKind::Kernel | SectionKind::Ramdisk => None,
        };
        if let Some(limit) = keep
            && size > limit
        {
            return Err(Error::SectionTooLarge { kind, size, limit });
        }
        let mut kept = Vec::new();
        let raw = RawSectionHeader {
            kind: kind.code(),
            flags: 0,
            size,
        };
        crc.update(&raw.to_bytes());
        src.seek(SeekFrom::Start(offset + SECTION_HEADER_LEN as u64))?;
        measurer.begin(kind);
        read_exact_chunks(src, size, |chunk| {
            crc.update(chunk);
            measurer.update(chunk);
            if keep.is_some() {
                kept.extend_from_slice(chunk);
            }
            Ok(())
        })?;
        let sha384 = measurer.end();
        match kind {
            SectionKind::Cmdline => cmdline = kept,
            SectionKind::Metadata => metadata_bytes = Some(kept),
            SectionKind::Signature => signature_bytes = Some(kept),
            SectionKind::Kernel | SectionKind::Ramdisk => {}
        }
        sections.push(SectionInfo {
            index,
            kind,
            offset,
            size,
            sha384,
        });
    }
    let computed = crc.finalize();
    if computed != header.crc32 {
        return Err(Error::CrcMismatch {
            stored: header.crc32,
            computed,
        });
    }

    let metadata = match metadata_bytes {
        Some(b) => Some(serde_json::from_slice(&b).map_err(|e| Error::Metadata(e.to_string()))?),
        None => None,
    };
    let mut measurements = measurer.finish(None);
    let signature = match signature_bytes {
        Some(b) => {
            let info = inspect_signature_section(&b, &measurements.pcr0)?;
            measurements.pcr8 = Some(info.pcr8);
            Some(info)
        }
        None => None,
    };
    Ok(EifInfo {
        header,
        sections,
        measurements,
        cmdline: String::from_utf8_lossy(&cmdline).into_owned(),
        metadata,
        signature,
        file_len,
    })
}

/// Checks bounds, overlaps and contiguity, and that the table lists sections in file order.
fn check_layout(header: &EifHeader, file_len: u64) -> Result<()> {
    let n = usize::from(header.num_sections);
    if n > MAX_SECTIONS {
        return Err(Error::TooManySections(header.num_sections));
    }
    let mut spans = Vec::with_capacity(n);
    for index in 0..n {
        let offset = header.section_offsets[index];
        let size = header.section_sizes[index];
        let end = offset
            .checked_add(SECTION_HEADER_LEN as u64)
            .and_then(|e| e.checked_add(size))
            .filter(|&e| e <= file_len)
            .ok_or(Error::SectionOutOfBounds {
                index,
                offset,
                size,
                file_len,
            })?;
        if offset < HEADER_LEN as u64 {
            return Err(Error::SectionOverlap {
                first: "the EIF header".into(),
                second: index,
                offset,
            });
        }
        spans.push((offset, end, index));
    }
    spans.sort_unstable();
    for pair in spans.windows(2) {
        let ((_, end_a, a), (off_b, _, b)) = (pair[0], pair[1]);
        if off_b < end_a {
            return Err(Error::SectionOverlap {
                first: format!("section {a}"),
                second: b,
                offset: off_b,
            });
        }
    }
    // nitro-cli walks sections back to back from the header to the end of the file, so the
    // table must describe exactly that walk: no gap, no trailing bytes, same order.
    let mut expected = HEADER_LEN as u64;
    for (pos, &(offset, end, index)) in spans.iter().enumerate() {
        if index != pos {
            return Err(Error::NotContiguous(format!(
                "table entry {index} is section {pos} in the file"
            )));
        }
        if offset != expected {
            return Err(Error::NotContiguous(format!(
                "section {index} starts at {offset}, expected {expected}"
            )));
        }
        expected = end;
    }
    if expected != file_len {
        return Err(Error::NotContiguous(format!(
            "{} bytes after the last section",
            file_len - expected
        )));
    }
    Ok(())
}

/// Reads each section header and checks it against the table.
fn read_section_headers<R: Read + Seek>(
    src: &mut R,
    header: &EifHeader,
) -> Result<Vec<SectionKind>> {
    let n = usize::from(header.num_sections);
    let mut kinds = Vec::with_capacity(n);
    for index in 0..n {
        src.seek(SeekFrom::Start(header.section_offsets[index]))?;
        let mut b = [0u8; SECTION_HEADER_LEN];
        src.read_exact(&mut b)?;
        let raw = RawSectionHeader::parse(&b);
        let kind = SectionKind::from_code(raw.kind).ok_or(Error::UnknownSectionType {
            index,
            kind: raw.kind,
        })?;
        if raw.flags != 0 {
            return Err(Error::NonZeroFlags {
                index,
                flags: raw.flags,
            });
        }
        if raw.size != header.section_sizes[index] {
            return Err(Error::SizeMismatch {
                index,
                in_section: raw.size,
                in_table: header.section_sizes[index],
            });
        }
        kinds.push(kind);
    }
    Ok(kinds)
}

/// Exactly one kernel and cmdline, at least one ramdisk, at most one metadata and signature,
/// and kernel before cmdline before the ramdisks.
fn check_counts_and_order(kinds: &[SectionKind]) -> Result<()> {
    let count = |k| kinds.iter().filter(|&&x| x == k).count();
    let rules = [
        (SectionKind::Kernel, 1..=1, "exactly 1"),
        (SectionKind::Cmdline, 1..=1, "exactly 1"),
        (SectionKind::Ramdisk, 1..=MAX_SECTIONS, "at least 1"),
        (SectionKind::Metadata, 0..=1, "at most 1"),
        (SectionKind::Signature, 0..=1, "at most 1"),
    ];
    for (kind, range, expected) in rules {
        let n = count(kind);
        if !range.contains(&n) {
            return Err(Error::SectionCount {
                kind,
                count: n,
                expected,
            });
        }
    }
    let pos = |k| kinds.iter().position(|&x| x == k).unwrap_or(usize::MAX);
    if pos(SectionKind::Kernel) > pos(SectionKind::Cmdline) {
        return Err(Error::SectionOrder(
            "cmdline comes before the kernel".into(),
        ));
    }
    if pos(SectionKind::Cmdline) > pos(SectionKind::Ramdisk) {
        return Err(Error::SectionOrder(
            "a ramdisk comes before the cmdline".into(),
        ));
    }
    Ok(())
}

/// A reader over one section's data, for tools (like the cpio differ) that parse a ramdisk.
pub fn section_reader<'a, R: Read + Seek>(
    src: &'a mut R,
    section: &SectionInfo,
) -> Result<std::io::Take<&'a mut R>> {
    src.seek(SeekFrom::Start(section.offset + SECTION_HEADER_LEN as u64))?;
    Ok(src.take(section.size))
}
