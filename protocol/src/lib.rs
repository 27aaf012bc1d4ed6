//! The enclave wire protocol: a versioned CBOR envelope in length-prefixed frames, carried over
//! vsock in production and Unix sockets in development, behind one transport abstraction.
//!
//! The same framing and message types serve the enclave, the host proxy (which reads only the
//! length prefix) and the api, so there is exactly one definition of what crosses the boundary.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod client;
pub mod frame;
pub mod keycert;
pub mod message;
pub mod process;
pub mod secret;
pub mod transport;

pub use client::EnclaveClient;
pub use frame::{DEFAULT_FRAME_CAP, FrameReader, WRITE_CHUNK, write_frame};
pub use message::{
    EnclaveErrorCode, ErrorBody, PROTOCOL_VERSION, Request, RequestEnvelope, Response,
    ResponseEnvelope,
};
pub use secret::SecretBytes;
pub use transport::{Address, Listener, Stream, connect};

/// Everything that can go wrong speaking the protocol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame's length prefix exceeds the cap; the peer is buggy or hostile, so the connection
    /// is dropped without reading (or allocating) the claimed body.
    #[error("frame of {len} bytes exceeds the cap of {cap} bytes")]
    FrameTooLarge {
        /// The length the prefix claimed.
        len: u32,
        /// The configured cap.
        cap: u32,
    },
    /// A zero-length frame, which no message encodes to.
    #[error("empty frame")]
    EmptyFrame,
    /// The peer closed the connection cleanly between frames.
    #[error("connection closed")]
    Closed,
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed mid-frame")]
    Truncated,
    /// The frame body is not valid CBOR for the expected message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The envelope carries a protocol version this code does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    /// A response answered a different request than the one sent.
    #[error("response id {got} does not match request id {expected}")]
    RequestIdMismatch {
        /// The id that was sent.
        expected: u64,
        /// The id that came back.
        got: u64,
    },
    /// A transport address could not be parsed.
    #[error("invalid address {0:?}: expected vsock://CID:PORT, unix:///path or tcp://HOST:PORT")]
    BadAddress(String),
    /// The underlying socket failed.
    #[error("transport I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A key certificate did not verify.
    #[error("key certificate: {0}")]
    KeyCertificate(&'static str),
}

/// Result alias for this crate.
pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;
