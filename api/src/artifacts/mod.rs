//! Artifacts: signed, time-limited URLs to an S3-compatible store; no bytes through the api.
//!
//! - [`ObjectKey`] turns room, milestone and artifact ids into the one accepted key form.
//! - [`ArtifactStore`] mints SigV4 presigned PUT URLs (bound to the body's length and SHA-256)
//!   and GET URLs, 60–300 s each, and asks the store what an upload left behind.
//! - [`server`] is the embedded store behind the `enclosure-s3` binary (s3s + s3s-fs).
//!
//! Who may get which URL, and when, is the escrow services' decision (seed T3); this module
//! only makes the URLs and the store honest about what they allow.

mod config;
mod error;
mod key;
mod presign;
pub mod server;

pub use config::{
    ArtifactSettings, DEFAULT_BUCKET, DEFAULT_REGION, DEV_ACCESS_KEY, dev_secret_path,
    ensure_dev_secret_file, read_secret_file,
};
pub use error::{ArtifactError, Result};
pub use key::ObjectKey;
pub use presign::{
    ArtifactStore, MAX_PUT_LENGTH, MAX_URL_TTL, MIN_URL_TTL, ObjectInfo, PUT_SIGNED_HEADERS,
    PresignedRequest,
};
