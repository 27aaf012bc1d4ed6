//! Moving bytes in bounded chunks. Sections and files are only ever read through these two
//! functions, so no caller holds more than one chunk of a kernel or ramdisk at a time.

use std::io::Read;

use crate::error::{Error, Result};

/// Size of the chunks data is streamed in.
pub const CHUNK: usize = 64 * 1024;

/// Feeds exactly `len` bytes of `src` to `sink`; a shorter input is an I/O error.
pub(crate) fn read_exact_chunks<R: Read>(
    src: &mut R,
    len: u64,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
        src.read_exact(&mut buf[..n])?;
        sink(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Feeds all of `src` to `sink` and checks it was exactly the `len` bytes announced earlier
/// (in a header already written); reads at most one byte more, to notice growth cheaply.
pub(crate) fn copy_announced<R: Read>(
    src: R,
    len: u64,
    what: &str,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut src = src.take(len.saturating_add(1));
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > len {
            break;
        }
        sink(&buf[..n])?;
    }
    if total != len {
        return Err(Error::InputChanged {
            what: what.to_string(),
            expected: len,
            actual: total,
        });
    }
    Ok(())
}
