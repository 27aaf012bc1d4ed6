//! The fixed binary layout of EIF v4: the 548-byte file header and the 12-byte section
//! headers, all big-endian, as nitro-cli reads and writes them.

use crate::error::{Error, Result};

/// The four magic bytes every EIF starts with: `.eif`.
pub const MAGIC: [u8; 4] = *b".eif";
/// The only format version this crate reads and writes (v4 added the metadata section).
pub const VERSION: u16 = 4;
/// Capacity of the header's section tables.
pub const MAX_SECTIONS: usize = 32;
/// Size of the EIF header in bytes.
pub const HEADER_LEN: usize = 548;
/// Size of a section header in bytes.
pub const SECTION_HEADER_LEN: usize = 12;
/// Offset of the CRC32 field, the header's last four bytes; the CRC covers everything else.
pub const CRC_OFFSET: usize = HEADER_LEN - 4;
/// Header flag marking an aarch64 image; cleared for x86_64.
pub const FLAG_ARCH_ARM64: u16 = 0x1;
/// Default enclave memory nitro-cli records in the header (1 GiB).
pub const DEFAULT_MEM: u64 = 1 << 30;
/// Default vCPU count nitro-cli records in the header.
pub const DEFAULT_CPUS: u64 = 2;

/// The kind of a section, by its 16-bit type code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum SectionKind {
    /// The kernel image (bzImage on x86_64).
    Kernel,
    /// The kernel command line, without a terminating NUL.
    Cmdline,
    /// A cpio initramfs; the first is nitro's bootstrap, the rest are the application.
    Ramdisk,
    /// The CBOR list of PCR signatures.
    Signature,
    /// The EifIdentityInfo JSON.
    Metadata,
}

impl SectionKind {
    /// The type code stored in the section header.
    pub fn code(self) -> u16 {
        match self {
            SectionKind::Kernel => 1,
            SectionKind::Cmdline => 2,
            SectionKind::Ramdisk => 3,
            SectionKind::Signature => 4,
            SectionKind::Metadata => 5,
        }
    }

    /// The kind for a type code, if it is one of the five defined (0 is "invalid").
    pub fn from_code(code: u16) -> Option<Self> {
        match code {
            1 => Some(SectionKind::Kernel),
            2 => Some(SectionKind::Cmdline),
            3 => Some(SectionKind::Ramdisk),
            4 => Some(SectionKind::Signature),
            5 => Some(SectionKind::Metadata),
            _ => None,
        }
    }
}

impl std::fmt::Display for SectionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SectionKind::Kernel => "kernel",
            SectionKind::Cmdline => "cmdline",
            SectionKind::Ramdisk => "ramdisk",
            SectionKind::Signature => "signature",
            SectionKind::Metadata => "metadata",
        })
    }
}

/// The EIF file header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EifHeader {
    /// Format version.
    pub version: u16,
    /// Header flags (bit 0: aarch64).
    pub flags: u16,
    /// Default enclave memory in bytes.
    pub default_mem: u64,
    /// Default number of vCPUs.
    pub default_cpus: u64,
    /// Number of sections in use in the tables.
    pub num_sections: u16,
    /// Offset of each section's header in the file.
    pub section_offsets: [u64; MAX_SECTIONS],
    /// Size of each section's data (without its 12-byte header).
    pub section_sizes: [u64; MAX_SECTIONS],
    /// CRC32 (ISO-HDLC) of everything in the file except this field.
    pub crc32: u32,
}

impl EifHeader {
    /// Parses the header, checking only the magic; structural checks belong to the reader.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Self> {
        let mut cur = Cursor { bytes, pos: 0 };
        let magic: [u8; 4] = cur.array();
        if magic != MAGIC {
            return Err(Error::BadMagic { found: magic });
        }
        let version = cur.u16();
        let flags = cur.u16();
        let default_mem = cur.u64();
        let default_cpus = cur.u64();
        let _reserved = cur.u16();
        let num_sections = cur.u16();
        let mut section_offsets = [0u64; MAX_SECTIONS];
        for o in &mut section_offsets {
            *o = cur.u64();
        }
        let mut section_sizes = [0u64; MAX_SECTIONS];
        for s in &mut section_sizes {
            *s = cur.u64();
        }
        let _unused = cur.u32();
        let crc32 = cur.u32();
        Ok(EifHeader {
            version,
            flags,
            default_mem,
            default_cpus,
            num_sections,
            section_offsets,
            section_sizes,
            crc32,
        })
    }

    /// Serialises the header; reserved and unused fields are written as zero.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let mut pos = 0;
        let mut put = |b: &[u8]| {
            out[pos..pos + b.len()].copy_from_slice(b);
            pos += b.len();
        };
        put(&MAGIC);
        put(&self.version.to_be_bytes());
        put(&self.flags.to_be_bytes());
        put(&self.default_mem.to_be_bytes());
        put(&self.default_cpus.to_be_bytes());
        put(&0u16.to_be_bytes());
        put(&self.num_sections.to_be_bytes());
        for o in &self.section_offsets {
            put(&o.to_be_bytes());
        }
        for s in &self.section_sizes {
            put(&s.to_be_bytes());
        }
        put(&0u32.to_be_bytes());
        put(&self.crc32.to_be_bytes());
        out
    }
}

/// A 12-byte section header as found in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawSectionHeader {
    /// The raw type code.
    pub kind: u16,
    /// Flags; none are defined.
    pub flags: u16,
    /// Size of the data that follows.
    pub size: u64,
}

impl RawSectionHeader {
    /// Parses a section header without judging it.
    pub fn parse(bytes: &[u8; SECTION_HEADER_LEN]) -> Self {
        let mut cur = Cursor { bytes, pos: 0 };
        RawSectionHeader {
            kind: cur.u16(),
            flags: cur.u16(),
            size: cur.u64(),
        }
    }

    /// Serialises a section header.
    pub fn to_bytes(&self) -> [u8; SECTION_HEADER_LEN] {
        let mut out = [0u8; SECTION_HEADER_LEN];
        out[0..2].copy_from_slice(&self.kind.to_be_bytes());
        out[2..4].copy_from_slice(&self.flags.to_be_bytes());
        out[4..12].copy_from_slice(&self.size.to_be_bytes());
        out
    }
}

/// A big-endian cursor over a buffer whose length the caller has already fixed by type.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        // Callers pass fixed-size arrays whose layout sums to their length, so this stays in range.
        if let Some(src) = self.bytes.get(self.pos..self.pos + N) {
            out.copy_from_slice(src);
        }
        self.pos += N;
        out
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.array())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.array())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_is_548_bytes() {
        let mut h = EifHeader {
            version: VERSION,
            flags: 0,
            default_mem: DEFAULT_MEM,
            default_cpus: DEFAULT_CPUS,
            num_sections: 2,
            section_offsets: [0; MAX_SECTIONS],
            section_sizes: [0; MAX_SECTIONS],
            crc32: 0xdead_beef,
        };
        h.section_offsets[1] = 600;
        h.section_sizes[31] = 7;
        let bytes = h.to_bytes();
        assert_eq!(&bytes[..4], b".eif");
        assert_eq!(&bytes[CRC_OFFSET..], &0xdead_beefu32.to_be_bytes());
        assert_eq!(EifHeader::parse(&bytes).unwrap(), h);
    }

    #[test]
    fn section_header_round_trips() {
        let s = RawSectionHeader {
            kind: 3,
            flags: 0,
            size: 1 << 40,
        };
        assert_eq!(RawSectionHeader::parse(&s.to_bytes()), s);
    }
}
