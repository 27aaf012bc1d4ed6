//! The enclave service: keystore, ticket checks, replay cache, sealing and attestation handlers.
//!
//! Everything secret in Enclosure lives here, in zeroizing types, and leaves only inside sealed
//! backups. The host reaches it through [`server::serve`] over whatever transport it is given.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backup;
pub mod clock;
pub mod init;
pub mod keystore;
pub mod sealing;
pub mod server;
pub mod service;

pub use clock::{Clock, SystemClock};
pub use sealing::{DevSealer, Sealer, SealingError};
pub use service::{Enclave, EnclaveConfig};
