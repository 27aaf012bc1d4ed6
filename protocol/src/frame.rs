//! Length-prefixed frames: a 4-byte big-endian length, then that many bytes.
//!
//! The cap is checked against the prefix before any buffer is allocated, so a hostile peer
//! cannot make us reserve memory by claiming a huge frame. Writes go out in chunks below
//! 32 KiB because large single writes on AF_VSOCK have been seen to stall or fail partially.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{ProtocolError, Result};

/// The default largest frame body, 256 KiB.
pub const DEFAULT_FRAME_CAP: u32 = 256 * 1024;
/// The size of each write, kept below the 32 KiB that vsock handles badly.
pub const WRITE_CHUNK: usize = 16 * 1024;
/// Bytes in the length prefix.
pub const PREFIX_LEN: usize = 4;

/// Reads frames from a byte stream, enforcing a cap.
#[derive(Debug, Clone, Copy)]
pub struct FrameReader {
    cap: u32,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader::new(DEFAULT_FRAME_CAP)
    }
}

impl FrameReader {
    /// A reader that refuses frames longer than `cap` bytes.
    pub fn new(cap: u32) -> Self {
        FrameReader { cap }
    }

    /// The configured cap.
    pub fn cap(&self) -> u32 {
        self.cap
    }

    /// Reads a length prefix and checks it against the cap. `Closed` means the peer hung up
    /// cleanly before a new frame began.
    pub async fn read_len<R: AsyncRead + Unpin>(&self, r: &mut R) -> Result<u32> {
        let mut prefix = [0u8; PREFIX_LEN];
        let mut got = 0;
        while got < PREFIX_LEN {
            let n = r.read(&mut prefix[got..]).await?;
            if n == 0 {
                return Err(if got == 0 {
                    ProtocolError::Closed
                } else {
                    ProtocolError::Truncated
                });
            }
            got += n;
        }
        let len = u32::from_be_bytes(prefix);
        self.check_len(len)?;
        Ok(len)
    }

    /// Checks a length against the cap, without reading anything.
    pub fn check_len(&self, len: u32) -> Result<()> {
        if len == 0 {
            return Err(ProtocolError::EmptyFrame);
        }
        if len > self.cap {
            return Err(ProtocolError::FrameTooLarge { len, cap: self.cap });
        }
        Ok(())
    }

    /// Reads one whole frame body.
    pub async fn read_frame<R: AsyncRead + Unpin>(&self, r: &mut R) -> Result<Vec<u8>> {
        let len = self.read_len(r).await?;
        // Safe to allocate: len was checked against the cap.
        let mut body = vec![0u8; len as usize];
        r.read_exact(&mut body).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => ProtocolError::Truncated,
            _ => ProtocolError::Io(e),
        })?;
        Ok(body)
    }
}

/// Writes one frame: prefix and body, in chunks of at most [`WRITE_CHUNK`] bytes, then flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| ProtocolError::FrameTooLarge {
        len: u32::MAX,
        cap: u32::MAX,
    })?;
    let prefix = len.to_be_bytes();
    if body.len() + PREFIX_LEN <= WRITE_CHUNK {
        // One write for the common small message: fewer syscalls, and a proxy in between sees
        // a whole frame at once.
        let mut buf = Vec::with_capacity(PREFIX_LEN + body.len());
        buf.extend_from_slice(&prefix);
        buf.extend_from_slice(body);
        w.write_all(&buf).await?;
    } else {
        w.write_all(&prefix).await?;
        for chunk in body.chunks(WRITE_CHUNK) {
            w.write_all(chunk).await?;
        }
    }
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Counts the largest single write it was given.
    struct Recorder {
        data: Vec<u8>,
        largest: usize,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.largest = self.largest.max(buf.len());
            self.data.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn round_trip_and_chunking() {
        let body: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut rec = Recorder {
            data: vec![],
            largest: 0,
        };
        write_frame(&mut rec, &body).await.unwrap();
        assert!(rec.largest < 32 * 1024, "a write of {} bytes", rec.largest);
        let got = FrameReader::default()
            .read_frame(&mut rec.data.as_slice())
            .await
            .unwrap();
        assert_eq!(got, body);
    }

    #[tokio::test]
    async fn oversized_prefix_is_refused_before_reading_the_body() {
        // Claims 4 GiB but carries nothing: refusal must come from the prefix alone.
        let wire = u32::MAX.to_be_bytes();
        let err = FrameReader::new(1024)
            .read_frame(&mut wire.as_slice())
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::FrameTooLarge {
                len: u32::MAX,
                cap: 1024
            }
        ));
    }

    #[tokio::test]
    async fn eof_cases_are_told_apart() {
        let r = FrameReader::default();
        assert!(matches!(
            r.read_frame(&mut [].as_slice()).await,
            Err(ProtocolError::Closed)
        ));
        assert!(matches!(
            r.read_frame(&mut [0u8, 0].as_slice()).await,
            Err(ProtocolError::Truncated)
        ));
        let mut short = vec![0, 0, 0, 10];
        short.extend_from_slice(b"abc");
        assert!(matches!(
            r.read_frame(&mut short.as_slice()).await,
            Err(ProtocolError::Truncated)
        ));
        assert!(matches!(
            r.read_frame(&mut [0u8; 4].as_slice()).await,
            Err(ProtocolError::EmptyFrame)
        ));
    }

    #[tokio::test]
    async fn frames_follow_each_other() {
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            write_frame(&mut a, b"one").await.unwrap();
            write_frame(&mut a, b"two").await.unwrap();
            a.shutdown().await.unwrap();
        });
        let r = FrameReader::default();
        assert_eq!(r.read_frame(&mut b).await.unwrap(), b"one");
        assert_eq!(r.read_frame(&mut b).await.unwrap(), b"two");
        assert!(matches!(
            r.read_frame(&mut b).await,
            Err(ProtocolError::Closed)
        ));
    }
}
