//! Reproducible AWS Nitro enclave images (EIF v4): read, measure, write, sign and explain.
//!
//! The format is nitro-cli's: a 548-byte big-endian header, then sections back to back
//! (kernel, cmdline, metadata, ramdisks, signature). The PCRs are computed exactly as
//! nitro-cli computes them, while streaming, so images of hundreds of MB are measured in
//! constant memory. Everything here works on `Read`/`Write`/`Seek`; the few helpers that
//! touch the file system say so.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cpio;
pub mod describe;
pub mod enclave_image;
pub mod error;
pub mod explain;
pub mod header;
pub mod measure;
pub mod metadata;
pub mod ramdisk;
pub mod reader;
pub mod sign;
mod stream;
pub mod writer;

pub use error::{Error, Result};
pub use header::SectionKind;
pub use measure::Measurements;
pub use metadata::EifIdentityInfo;
pub use reader::{EifInfo, SectionInfo, read_eif};
pub use sign::EifSigner;
pub use writer::{BuildReport, EifSpec, SectionSource, build_eif_file, write_eif};
