//! The newc ("070701") cpio format the Linux kernel unpacks as an initramfs: a writer that
//! produces byte-identical archives for identical content, and a streaming reader that
//! lists entries with their digests, for explaining ramdisk differences.

use std::io::{Read, Write};

use sha2::{Digest, Sha384};

use crate::error::{Error, Result};
use crate::measure::Digest48;
use crate::stream::{CHUNK, copy_announced, read_exact_chunks};

const MAGIC: &[u8; 6] = b"070701";
/// The "new CRC" variant; same layout, the check field is a byte sum we do not verify.
const MAGIC_CRC: &[u8; 6] = b"070702";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";
/// Longest name accepted, including the NUL: Linux's PATH_MAX.
pub const MAX_NAME: usize = 4096;
/// Most entries a reader lists before refusing the archive, to bound memory.
pub const MAX_ENTRIES: usize = 1 << 20;
/// File-type bits of a mode.
pub const S_IFMT: u32 = 0o170000;
/// Directory type bits.
pub const S_IFDIR: u32 = 0o040000;
/// Regular-file type bits.
pub const S_IFREG: u32 = 0o100000;
/// Symbolic-link type bits.
pub const S_IFLNK: u32 = 0o120000;

fn pad4(n: u64) -> u64 {
    (4 - n % 4) % 4
}

/// Writes a newc archive with fixed ownership (0:0), a fixed mtime and inode numbers
/// assigned in the order entries are added (1, 2, …), so nothing about the machine or the
/// moment of the build leaks into the bytes.
pub struct NewcWriter<W> {
    out: W,
    offset: u64,
    next_ino: u32,
    mtime: u32,
}

impl<W: Write> NewcWriter<W> {
    /// A writer stamping every entry with `mtime` (seconds since the epoch).
    pub fn new(out: W, mtime: u32) -> Self {
        NewcWriter {
            out,
            offset: 0,
            next_ino: 1,
            mtime,
        }
    }

    /// Adds an entry; `data` must yield exactly `size` bytes (file content or link target).
    pub fn add<R: Read>(&mut self, path: &str, mode: u32, size: u64, data: R) -> Result<()> {
        let unarchivable = |reason: &str| Error::Unarchivable {
            path: path.to_string(),
            reason: reason.to_string(),
        };
        let size32 = u32::try_from(size)
            .map_err(|_| unarchivable("newc cannot hold files of 4 GiB or more"))?;
        if path.is_empty() || path.len() + 1 > MAX_NAME || path.contains('\0') {
            return Err(unarchivable("name is empty, too long or contains NUL"));
        }
        let nlink = if mode & S_IFMT == S_IFDIR { 2 } else { 1 };
        let ino = self.next_ino;
        self.next_ino += 1;
        self.header(ino, mode, nlink, self.mtime, size32, path)?;
        let out = &mut self.out;
        copy_announced(data, size, path, |chunk| Ok(out.write_all(chunk)?))?;
        self.offset += size;
        self.pad()
    }

    /// Writes the TRAILER!!! entry and returns the output.
    pub fn finish(mut self) -> Result<W> {
        self.header(0, 0, 1, 0, 0, TRAILER)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn header(
        &mut self,
        ino: u32,
        mode: u32,
        nlink: u32,
        mtime: u32,
        size: u32,
        name: &str,
    ) -> Result<()> {
        let namesize = name.len() as u32 + 1;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields = [ino, mode, 0, 0, nlink, mtime, size, 0, 0, 0, 0, namesize, 0];
        let mut h = Vec::with_capacity(HEADER_LEN + name.len() + 4);
        h.extend_from_slice(MAGIC);
        for f in fields {
            h.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        h.extend_from_slice(name.as_bytes());
        h.push(0);
        self.out.write_all(&h)?;
        self.offset += h.len() as u64;
        self.pad()
    }

    fn pad(&mut self) -> Result<()> {
        let n = pad4(self.offset);
        self.out.write_all(&[0u8; 3][..n as usize])?;
        self.offset += n;
        Ok(())
    }
}

/// One entry of an archive, as the reader saw it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CpioEntry {
    /// Path inside the archive.
    pub path: String,
    /// Full mode: type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: u32,
    /// Size of the data.
    pub size: u64,
    /// SHA-384 of the data (file content, or a symlink's target).
    #[serde(serialize_with = "crate::describe::hex_ser")]
    pub sha384: Digest48,
}

/// Lists the entries of a newc archive (or of several concatenated ones, as the kernel
/// accepts), streaming each entry's data through SHA-384.
pub fn read_newc<R: Read>(src: R) -> Result<Vec<CpioEntry>> {
    // Buffered: headers and names come in small reads, often straight from a file.
    let mut r = Counting {
        inner: std::io::BufReader::with_capacity(CHUNK, src),
        offset: 0,
    };
    let mut entries = Vec::new();
    loop {
        // Between archives the kernel skips NUL padding; end of input there is the normal end.
        let mut h = [0u8; HEADER_LEN];
        let start = r.offset;
        if !r.fill_skipping_nuls(&mut h)? {
            if entries.is_empty() {
                return Err(cpio_err(start, "empty archive"));
            }
            return Ok(entries);
        }
        if &h[..6] != MAGIC && &h[..6] != MAGIC_CRC {
            let what = if h[..2] == [0x1f, 0x8b] {
                "gzip-compressed archive (not supported)"
            } else {
                "bad magic, not a newc cpio"
            };
            return Err(cpio_err(start, what));
        }
        let field = |i: usize| -> Result<u32> {
            let s = std::str::from_utf8(&h[6 + i * 8..14 + i * 8])
                .map_err(|_| cpio_err(start, "non-hex header field"))?;
            u32::from_str_radix(s, 16).map_err(|_| cpio_err(start, "non-hex header field"))
        };
        let (mode, uid, gid, mtime, size, namesize) = (
            field(1)?,
            field(2)?,
            field(3)?,
            field(5)?,
            field(6)?,
            field(11)?,
        );
        let namesize = namesize as usize;
        if namesize == 0 || namesize > MAX_NAME {
            return Err(cpio_err(start, "name size out of range"));
        }
        let mut name = vec![0u8; namesize];
        r.read_exact(&mut name)
            .map_err(|_| cpio_err(start, "truncated name"))?;
        if name.pop() != Some(0) {
            return Err(cpio_err(start, "name is not NUL-terminated"));
        }
        let path = String::from_utf8(name).map_err(|_| cpio_err(start, "name is not UTF-8"))?;
        r.skip(pad4(r.offset))
            .map_err(|_| cpio_err(start, "truncated padding"))?;
        if path == TRAILER {
            continue;
        }
        if entries.len() >= MAX_ENTRIES {
            return Err(cpio_err(start, "too many entries"));
        }
        let mut hasher = Sha384::new();
        read_exact_chunks(&mut r, u64::from(size), |chunk| {
            hasher.update(chunk);
            Ok(())
        })
        .map_err(|_| cpio_err(start, "truncated data"))?;
        r.skip(pad4(r.offset))
            .map_err(|_| cpio_err(start, "truncated padding"))?;
        entries.push(CpioEntry {
            path,
            mode,
            uid,
            gid,
            mtime,
            size: u64::from(size),
            sha384: hasher.finalize().into(),
        });
    }
}

fn cpio_err(offset: u64, reason: &str) -> Error {
    Error::Cpio {
        offset,
        reason: reason.to_string(),
    }
}

struct Counting<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.offset += n as u64;
        Ok(n)
    }
}

impl<R: Read> Counting<R> {
    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        let mut b = [0u8; 4];
        let n = usize::try_from(n).unwrap_or(4).min(4);
        self.read_exact(&mut b[..n])
    }

    /// Fills `h` after skipping NUL bytes; false at a clean end of input.
    fn fill_skipping_nuls(&mut self, h: &mut [u8; HEADER_LEN]) -> Result<bool> {
        let mut first = [0u8; 1];
        loop {
            if self.read(&mut first)? == 0 {
                return Ok(false);
            }
            if first[0] != 0 {
                break;
            }
        }
        h[0] = first[0];
        let start = self.offset - 1;
        self.read_exact(&mut h[1..])
            .map_err(|_| cpio_err(start, "truncated header"))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_alignment() {
        let mut w = NewcWriter::new(Vec::new(), 7);
        w.add("bin", S_IFDIR | 0o755, 0, &[][..]).unwrap();
        w.add("bin/hello", S_IFREG | 0o4755, 5, &b"hello"[..])
            .unwrap();
        w.add("link", S_IFLNK | 0o777, 9, &b"bin/hello"[..])
            .unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.windows(10).any(|x| x == b"TRAILER!!!"));
        let entries = read_newc(&bytes[..]).unwrap();
        let paths: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["bin", "bin/hello", "link"]);
        assert_eq!(entries[1].mode, S_IFREG | 0o4755);
        assert_eq!(entries[1].mtime, 7);
        assert_eq!(entries[1].sha384, crate::measure::sha384(b"hello"));
    }

    #[test]
    fn size_lies_are_refused() {
        let mut w = NewcWriter::new(Vec::new(), 0);
        assert!(matches!(
            w.add("f", S_IFREG | 0o644, 10, &b"short"[..]),
            Err(Error::InputChanged { .. })
        ));
        let mut w = NewcWriter::new(Vec::new(), 0);
        w.add("f", S_IFREG | 0o644, 5, &b"hello"[..]).unwrap();
        let bytes = w.finish().unwrap();
        for cut in [1, 50, 115, 121] {
            assert!(read_newc(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(read_newc(&[0x1f, 0x8b, 8, 0][..]).is_err());
    }
}
