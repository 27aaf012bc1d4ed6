//! Writing an EIF in nitro-cli's section order — kernel, cmdline, metadata, ramdisks,
//! signature — in one streaming pass; the header, whose CRC covers everything after it, is
//! written last, at offset 0.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::header::{
    CRC_OFFSET, DEFAULT_CPUS, DEFAULT_MEM, EifHeader, HEADER_LEN, MAX_SECTIONS, RawSectionHeader,
    SECTION_HEADER_LEN, SectionKind, VERSION,
};
use crate::measure::{Measurements, Measurer};
use crate::metadata::EifIdentityInfo;
use crate::reader::SectionInfo;
use crate::sign::EifSigner;
use crate::stream::copy_announced;

/// An input stream with the length announced in its section header.
pub struct SectionSource<R> {
    /// Name used in errors (usually the path).
    pub name: String,
    /// The bytes.
    pub reader: R,
    /// Their length.
    pub len: u64,
}

/// What to put in an image.
pub struct EifSpec<'a, R> {
    /// The kernel.
    pub kernel: SectionSource<R>,
    /// The kernel command line (written without a terminating NUL, as nitro-cli does).
    pub cmdline: String,
    /// Ramdisks; the first is the bootstrap (PCR1), the rest the application (PCR2).
    pub ramdisks: Vec<SectionSource<R>>,
    /// The metadata section.
    pub identity: EifIdentityInfo,
    /// Signs PCR0 when present.
    pub signer: Option<&'a EifSigner>,
    /// Header flags: 0 for x86_64, [`crate::header::FLAG_ARCH_ARM64`] for aarch64.
    pub flags: u16,
}

/// What a build produced.
#[derive(Clone, Debug)]
pub struct BuildReport {
    /// The image's PCRs.
    pub measurements: Measurements,
    /// Sections in file order.
    pub sections: Vec<SectionInfo>,
    /// Total length of the image.
    pub len: u64,
}

/// Writes an image to `out`, starting at offset 0.
pub fn write_eif<R: Read, W: Write + Seek>(
    spec: EifSpec<'_, R>,
    out: &mut W,
) -> Result<BuildReport> {
    if spec.cmdline.as_bytes().contains(&0) {
        return Err(Error::CmdlineNul);
    }
    if spec.ramdisks.is_empty() {
        return Err(Error::SectionCount {
            kind: SectionKind::Ramdisk,
            count: 0,
            expected: "at least 1",
        });
    }
    let count = 3 + spec.ramdisks.len() + usize::from(spec.signer.is_some());
    if count > MAX_SECTIONS {
        return Err(Error::TooManySections(
            u16::try_from(count).unwrap_or(u16::MAX),
        ));
    }
    let metadata = spec.identity.to_bytes()?;

    out.seek(SeekFrom::Start(0))?;
    out.write_all(&[0u8; HEADER_LEN])?;
    let mut w = SectionWriter {
        out,
        crc: crc32fast::Hasher::new(),
        measurer: Measurer::new(),
        offset: HEADER_LEN as u64,
        sections: Vec::new(),
    };
    w.stream(SectionKind::Kernel, spec.kernel)?;
    w.bytes(SectionKind::Cmdline, spec.cmdline.as_bytes())?;
    w.bytes(SectionKind::Metadata, &metadata)?;
    for r in spec.ramdisks {
        w.stream(SectionKind::Ramdisk, r)?;
    }
    let measurements = w
        .measurer
        .clone()
        .finish(spec.signer.map(EifSigner::certificate_der));
    if let Some(signer) = spec.signer {
        let section = signer.signature_section(&measurements.pcr0)?;
        w.bytes(SectionKind::Signature, &section)?;
    }

    let mut header = EifHeader {
        version: VERSION,
        flags: spec.flags,
        default_mem: DEFAULT_MEM,
        default_cpus: DEFAULT_CPUS,
        num_sections: u16::try_from(w.sections.len()).unwrap_or(u16::MAX),
        section_offsets: [0; MAX_SECTIONS],
        section_sizes: [0; MAX_SECTIONS],
        crc32: 0,
    };
    for (i, s) in w.sections.iter().enumerate() {
        header.section_offsets[i] = s.offset;
        header.section_sizes[i] = s.size;
    }
    // CRC32 of (header without its CRC field) ‖ (all sections), combined without re-reading.
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header.to_bytes()[..CRC_OFFSET]);
    crc.combine(&w.crc);
    header.crc32 = crc.finalize();
    let len = w.offset;
    let sections = w.sections;
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&header.to_bytes())?;
    out.seek(SeekFrom::Start(len))?;
    out.flush()?;
    Ok(BuildReport {
        measurements,
        sections,
        len,
    })
}

struct SectionWriter<'w, W> {
    out: &'w mut W,
    crc: crc32fast::Hasher,
    measurer: Measurer,
    offset: u64,
    sections: Vec<SectionInfo>,
}

impl<W: Write> SectionWriter<'_, W> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.out.write_all(b)?;
        self.crc.update(b);
        self.measurer.update(b);
        Ok(())
    }

    fn begin(&mut self, kind: SectionKind, size: u64) -> Result<()> {
        let h = RawSectionHeader {
            kind: kind.code(),
            flags: 0,
            size,
        }
        .to_bytes();
        self.out.write_all(&h)?;
        self.crc.update(&h);
        self.measurer.begin(kind);
        Ok(())
    }

    fn end(&mut self, kind: SectionKind, size: u64) {
        let sha384 = self.measurer.end();
        let index = self.sections.len();
        self.sections.push(SectionInfo {
            index,
            kind,
            offset: self.offset,
            size,
            sha384,
        });
        self.offset += SECTION_HEADER_LEN as u64 + size;
    }

    fn bytes(&mut self, kind: SectionKind, data: &[u8]) -> Result<()> {
        self.begin(kind, data.len() as u64)?;
        self.put(data)?;
        self.end(kind, data.len() as u64);
        Ok(())
    }

    fn stream<R: Read>(&mut self, kind: SectionKind, src: SectionSource<R>) -> Result<()> {
        self.begin(kind, src.len)?;
        copy_announced(src.reader, src.len, &src.name, |chunk| self.put(chunk))?;
        self.end(kind, src.len);
        Ok(())
    }
}

/// Builds an image from files into `output`, atomically: a temporary file beside it is
/// renamed into place only when the whole image has been written.
pub fn build_eif_file(
    kernel: &Path,
    cmdline: &str,
    ramdisks: &[PathBuf],
    identity: EifIdentityInfo,
    signer: Option<&EifSigner>,
    output: &Path,
) -> Result<BuildReport> {
    let open = |p: &Path| -> Result<SectionSource<File>> {
        let opened = File::open(p).and_then(|f| Ok((f.metadata()?.len(), f)));
        let (len, f) = opened.map_err(|source| Error::Open {
            path: p.display().to_string(),
            source,
        })?;
        Ok(SectionSource {
            name: p.display().to_string(),
            reader: f,
            len,
        })
    };
    let spec = EifSpec {
        kernel: open(kernel)?,
        cmdline: cmdline.to_string(),
        ramdisks: ramdisks.iter().map(|p| open(p)).collect::<Result<_>>()?,
        identity,
        signer,
        flags: 0,
    };
    write_atomically(output, |f| write_eif(spec, f))
}

/// Writes `output` through a temporary sibling that is renamed into place on success and
/// removed on failure, so no half-written file is left behind.
pub fn write_atomically<T>(output: &Path, body: impl FnOnce(&mut File) -> Result<T>) -> Result<T> {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = output.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        let v = body(&mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, output)?;
        Ok(v)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn src(len: usize) -> SectionSource<&'static [u8]> {
        static DATA: [u8; 64] = [7; 64];
        SectionSource {
            name: format!("{len}"),
            reader: &DATA[..len],
            len: len as u64,
        }
    }

    fn spec(ramdisks: usize) -> EifSpec<'static, &'static [u8]> {
        EifSpec {
            kernel: src(10),
            cmdline: "console=ttyS0".into(),
            ramdisks: (0..ramdisks).map(|_| src(5)).collect(),
            identity: EifIdentityInfo::new("t", "1", 0).unwrap(),
            signer: None,
            flags: 0,
        }
    }

    #[test]
    fn writes_what_the_reader_reads() {
        let mut out = Cursor::new(Vec::new());
        let report = write_eif(spec(29), &mut out).unwrap();
        let info = crate::read_eif(&mut Cursor::new(out.into_inner())).unwrap();
        assert_eq!(info.measurements, report.measurements);
        assert_eq!(info.sections, report.sections);
        assert_eq!(info.file_len, report.len);
    }

    #[test]
    fn refuses_bad_specs() {
        let mut out = Cursor::new(Vec::new());
        assert!(matches!(
            write_eif(spec(0), &mut out),
            Err(Error::SectionCount { .. })
        ));
        assert!(matches!(
            write_eif(spec(30), &mut out),
            Err(Error::TooManySections(33))
        ));
        let mut s = spec(1);
        s.cmdline = "a\0b".into();
        assert!(matches!(write_eif(s, &mut out), Err(Error::CmdlineNul)));
        for announced in [9, 11] {
            let mut s = spec(1);
            s.kernel.len = announced;
            let err = write_eif(s, &mut out).unwrap_err();
            assert!(
                matches!(err, Error::InputChanged { actual, .. } if actual == 10.min(announced + 1)),
                "{err}"
            );
        }
    }
}
