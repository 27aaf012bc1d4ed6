//! The artifact layer's one error type.

/// Everything minting a URL, asking the store about an object, or running the local store can
/// fail with.
///
/// Messages never carry the secret key, a signature or a presigned URL's query string: a
/// presigned URL is a bearer capability until it expires, so errors name the object key and
/// what failed, and HTTP client errors are stripped of their URL before they are kept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// The requested URL lifetime is outside the allowed window: shorter URLs expire before a
    /// client can use them, longer ones stay usable after access was meant to end (seed T3).
    #[error("URL lifetime {requested_secs} s is outside {min_secs}–{max_secs} s")]
    TtlOutOfRange {
        /// The lifetime asked for, in whole seconds (rounded down).
        requested_secs: u64,
        /// The shortest allowed lifetime.
        min_secs: u64,
        /// The longest allowed lifetime.
        max_secs: u64,
    },
    /// An object key or one of its parts is not in the one accepted form (this is what stops
    /// path traversal such as `..`, `/` or percent-escapes inside an id).
    #[error("invalid object key: {0}")]
    InvalidKey(&'static str),
    /// The declared upload is larger than one PUT may carry.
    #[error("content length {length} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The declared length.
        length: u64,
        /// The largest accepted length.
        limit: u64,
    },
    /// The store configuration cannot be used (endpoint URL, bucket name, region, keys,
    /// listen address).
    #[error("invalid artifact store configuration: {0}")]
    Config(String),
    /// The store could not be reached or the exchange failed part way (no URL in the message).
    #[error("talking to the artifact store: {0}")]
    Transport(String),
    /// The store refused a request the api signed itself: the keys, region or clock of the api
    /// and the store disagree.
    #[error("the artifact store refused the request (HTTP {status})")]
    Refused {
        /// The HTTP status the store answered with.
        status: u16,
    },
    /// The store answered without something the api relies on (a length, a SHA-256 checksum)
    /// or with a malformed value: it cannot vouch for what was uploaded.
    #[error("the artifact store's answer is unusable: {0}")]
    BadResponse(&'static str),
    /// An object was larger than the caller allowed while it was being read for a digest.
    #[error("object is larger than the {limit} bytes allowed for a digest")]
    DigestTooLarge {
        /// The limit that was passed.
        limit: u64,
    },
    /// Preparing or serving the local store's directory or socket failed.
    #[error("local store I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Shorthand for results of the artifact layer.
pub type Result<T, E = ArtifactError> = std::result::Result<T, E>;

impl ArtifactError {
    /// Wraps an HTTP client error without its URL, which holds a signature.
    pub(crate) fn transport(e: reqwest::Error) -> Self {
        ArtifactError::Transport(e.without_url().to_string())
    }
}
