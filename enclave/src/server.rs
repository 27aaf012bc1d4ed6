//! The connection loop: frames in, handler, frames out, over any transport.

use std::sync::Arc;

use enclosure_protocol::{
    EnclaveErrorCode, ErrorBody, FrameReader, Listener, PROTOCOL_VERSION, ProtocolError,
    RequestEnvelope, ResponseEnvelope, Stream, write_frame,
};
use tokio::sync::Semaphore;

use crate::service::Enclave;

/// Serving limits.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Largest frame accepted.
    pub frame_cap: u32,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            frame_cap: enclosure_protocol::DEFAULT_FRAME_CAP,
            max_connections: 256,
        }
    }
}

/// Accepts connections until the listener fails, serving each on its own task.
pub async fn serve(
    listener: Listener,
    enclave: Arc<Enclave>,
    opts: ServeOptions,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    loop {
        let permit = slots.clone().acquire_owned().await?;
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Accept errors (EMFILE and friends) are transient; back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let enclave = enclave.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, &enclave, opts.frame_cap).await {
                tracing::info!(error = %e, "connection closed with an error");
            }
            drop(permit);
        });
    }
}

fn respond(
    request_id: u64,
    result: Result<enclosure_protocol::Response, ErrorBody>,
) -> ResponseEnvelope {
    ResponseEnvelope {
        version: PROTOCOL_VERSION,
        request_id,
        result,
    }
}

/// Serves one connection: requests are answered in order until the peer hangs up.
///
/// A malformed message gets a typed error and the connection goes on (the framing is intact);
/// an oversized or truncated frame gets an error and the connection is closed, since the byte
/// stream can no longer be trusted to be in step.
pub async fn serve_connection(
    mut stream: Stream,
    enclave: &Enclave,
    frame_cap: u32,
) -> Result<(), ProtocolError> {
    let reader = FrameReader::new(frame_cap);
    loop {
        let frame = match reader.read_frame(&mut stream).await {
            Ok(f) => f,
            Err(ProtocolError::Closed) => return Ok(()),
            Err(e @ (ProtocolError::FrameTooLarge { .. } | ProtocolError::EmptyFrame)) => {
                let body = ErrorBody::new(EnclaveErrorCode::BadRequest, e.to_string());
                if let Ok(bytes) = respond(0, Err(body)).encode() {
                    let _ = write_frame(&mut stream, &bytes).await;
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let envelope = match RequestEnvelope::decode(&frame) {
            Ok(env) => env,
            Err((request_id, e)) => {
                let code = match e {
                    ProtocolError::UnsupportedVersion(_) => EnclaveErrorCode::UnsupportedVersion,
                    _ => EnclaveErrorCode::BadRequest,
                };
                let bytes =
                    respond(request_id, Err(ErrorBody::new(code, e.to_string()))).encode()?;
                write_frame(&mut stream, &bytes).await?;
                continue;
            }
        };
        let name = envelope.request.name();
        let result = enclave.handle(envelope.request);
        if let Err(e) = &result {
            tracing::info!(request = name, request_id = envelope.request_id, code = ?e.code, "refused");
        } else {
            tracing::debug!(request = name, request_id = envelope.request_id, "ok");
        }
        let bytes = respond(envelope.request_id, result).encode()?;
        write_frame(&mut stream, &bytes).await?;
    }
}
