//! A client for the enclave protocol, over any transport (directly or through the proxy).

use crate::{
    Address, ErrorBody, FrameReader, ProtocolError, Request, RequestEnvelope, Response,
    ResponseEnvelope, Result, Stream, connect, write_frame,
};

/// One connection to the enclave; requests are answered in order.
pub struct EnclaveClient {
    stream: Stream,
    frames: FrameReader,
    next_id: u64,
}

impl std::fmt::Debug for EnclaveClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnclaveClient")
            .field("next_id", &self.next_id)
            .finish_non_exhaustive()
    }
}

impl EnclaveClient {
    /// Connects to `addr`.
    pub async fn connect(addr: &Address) -> Result<Self> {
        Ok(Self::over(connect(addr).await?))
    }

    /// Wraps an already connected stream.
    pub fn over(stream: Stream) -> Self {
        EnclaveClient {
            stream,
            frames: FrameReader::default(),
            next_id: 1,
        }
    }

    /// Sends a request and waits for its answer. The outer error is a transport or protocol
    /// failure (reconnect); the inner one is the enclave's refusal.
    pub async fn call(
        &mut self,
        request: Request,
    ) -> Result<std::result::Result<Response, ErrorBody>> {
        let id = self.next_id;
        self.next_id += 1;
        let bytes = RequestEnvelope::new(id, request).encode()?;
        write_frame(&mut self.stream, &bytes).await?;
        let frame = self.frames.read_frame(&mut self.stream).await?;
        let env = ResponseEnvelope::decode(&frame)?;
        // Id 0 is a connection-level error (oversized frame, proxy refusal) with no request.
        if env.request_id != id && env.request_id != 0 {
            return Err(ProtocolError::RequestIdMismatch {
                expected: id,
                got: env.request_id,
            });
        }
        Ok(env.result)
    }

    /// Sends raw bytes as one frame and reads one answer: for tests of malformed input.
    pub async fn call_raw(&mut self, body: &[u8]) -> Result<ResponseEnvelope> {
        write_frame(&mut self.stream, body).await?;
        let frame = self.frames.read_frame(&mut self.stream).await?;
        ResponseEnvelope::decode(&frame)
    }

    /// The underlying stream, for tests that must write what no well-behaved client would.
    pub fn stream_mut(&mut self) -> &mut Stream {
        &mut self.stream
    }
}
