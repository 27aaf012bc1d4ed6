//! The crate's one error type: every way an EIF, a ramdisk or a signing input can be refused.

use crate::header::SectionKind;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an EIF, a cpio archive or a build input was refused.
///
/// Readers fail closed: any inconsistency between the header, the section headers and the
/// file length is an error, never a guess.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing failed at the operating-system level.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// An input file could not be opened or listed.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The path.
        path: String,
        /// The operating system's reason.
        source: std::io::Error,
    },

    /// The file is shorter than the 548-byte EIF header: truncated, or not an EIF at all.
    #[error("file is {len} bytes, shorter than the 548-byte EIF header")]
    TooShort {
        /// Length of the file.
        len: u64,
    },

    /// The first four bytes are not `.eif`: this is not an enclave image.
    #[error("bad magic {found:02x?}: not an EIF file")]
    BadMagic {
        /// The four bytes found.
        found: [u8; 4],
    },

    /// The header's version is not one this reader understands (only v4 has metadata).
    #[error("unsupported EIF version {0} (expected 4)")]
    UnsupportedVersion(u16),

    /// The header claims more sections than its fixed 32-entry tables can hold.
    #[error("header claims {0} sections, the format allows at most 32")]
    TooManySections(u16),

    /// A section (header plus data) would end past the end of the file, or its size
    /// overflows: typically a truncated file or a forged size field.
    #[error(
        "section {index} at offset {offset} with {size} data bytes ends past the end of the file ({file_len} bytes)"
    )]
    SectionOutOfBounds {
        /// Index of the section in the header table.
        index: usize,
        /// Offset of the section header in the file.
        offset: u64,
        /// Size of the section data.
        size: u64,
        /// Length of the file.
        file_len: u64,
    },

    /// Two sections, or a section and the EIF header, share bytes: a forged table.
    #[error("section {second} (offset {offset}) overlaps {first}")]
    SectionOverlap {
        /// What is overlapped: "the header" or "section N".
        first: String,
        /// Index of the overlapping section.
        second: usize,
        /// Offset of the overlapping section.
        offset: u64,
    },

    /// The sections do not follow each other without gaps, in table order, up to the end of
    /// the file; nitro-cli reads sections back to back, so a gap would be read as garbage.
    #[error("section layout is not contiguous: {0}")]
    NotContiguous(String),

    /// The section header in the file disagrees with the size in the EIF header's table.
    #[error("section {index}: size {in_section} in its header, {in_table} in the EIF header")]
    SizeMismatch {
        /// Index of the section.
        index: usize,
        /// Size recorded in the section header.
        in_section: u64,
        /// Size recorded in the EIF header.
        in_table: u64,
    },

    /// A section header has flags set; no flags are defined, so they cannot be honoured.
    #[error("section {index} has non-zero flags {flags:#06x}")]
    NonZeroFlags {
        /// Index of the section.
        index: usize,
        /// The flags found.
        flags: u16,
    },

    /// A section type outside kernel, cmdline, ramdisk, signature and metadata.
    #[error("section {index} has unknown type {kind}")]
    UnknownSectionType {
        /// Index of the section.
        index: usize,
        /// The raw type found.
        kind: u16,
    },

    /// The image does not have exactly one kernel, one cmdline, at least one ramdisk and at
    /// most one metadata and one signature section, so its measurements would be ambiguous.
    #[error("image has {count} {kind} section(s), expected {expected}")]
    SectionCount {
        /// The kind of section counted.
        kind: SectionKind,
        /// How many were found.
        count: usize,
        /// What the format requires.
        expected: &'static str,
    },

    /// Kernel, cmdline and ramdisks are not in that order; PCRs hash them in file order, so
    /// another order would make the documented formula wrong.
    #[error("sections out of order: {0}")]
    SectionOrder(String),

    /// The CRC32 in the header does not match the content: the file was altered or damaged.
    #[error("CRC32 mismatch: header says {stored:#010x}, content gives {computed:#010x}")]
    CrcMismatch {
        /// The CRC stored in the header.
        stored: u32,
        /// The CRC computed over the file.
        computed: u32,
    },

    /// A section read whole (cmdline, metadata, signature) is larger than is sane for it.
    #[error("{kind} section of {size} bytes exceeds the limit of {limit} bytes")]
    SectionTooLarge {
        /// The kind of section.
        kind: SectionKind,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// The metadata section is not the EifIdentityInfo JSON that nitro-cli writes.
    #[error("invalid metadata section: {0}")]
    Metadata(String),

    /// The signature section is not a CBOR list of PCR signatures with a COSE_Sign1 inside.
    #[error("invalid signature section: {0}")]
    Signature(String),

    /// The signing certificate is not a PEM X.509 certificate with a P-384 key.
    #[error("invalid signing certificate: {0}")]
    Certificate(String),

    /// The signing key is not a P-384 private key in PEM (PKCS#8 or SEC1).
    #[error("invalid signing key: {0}")]
    SigningKey(String),

    /// The signing key does not belong to the certificate; the image would not verify.
    #[error("the signing key does not match the certificate's public key")]
    KeyCertificateMismatch,

    /// The kernel command line contains a NUL byte, which the boot protocol cannot carry.
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,

    /// An input changed size while the image was being built; the output would be torn.
    #[error("{what} changed while building: expected {expected} bytes, read {actual}")]
    InputChanged {
        /// Which input.
        what: String,
        /// Size announced before the build.
        expected: u64,
        /// Bytes actually read.
        actual: u64,
    },

    /// SOURCE_DATE_EPOCH is set but is not a non-negative integer number of seconds.
    #[error("SOURCE_DATE_EPOCH is not a non-negative integer: {0:?}")]
    SourceDateEpoch(String),

    /// A ramdisk is not a well-formed newc cpio archive.
    #[error("malformed cpio archive at byte {offset}: {reason}")]
    Cpio {
        /// Offset in the archive where the problem was found.
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// A file in a ramdisk tree cannot be put in a newc archive (type, size or name).
    #[error("cannot archive {path}: {reason}")]
    Unarchivable {
        /// Path of the file, relative to the tree.
        path: String,
        /// Why.
        reason: String,
    },

    /// The expected-PCR file is not JSON with hex PCR values.
    #[error("invalid expected PCRs: {0}")]
    ExpectedPcrs(String),
}
