//! The host API: HTTPS for applications and people, relaying key operations to the enclave.
//!
//! The api authenticates callers, keeps records and issues tickets, but never sees key
//! material: everything secret stays behind the proxy, inside the enclave.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod artifacts;
pub mod auth;
pub mod config;
pub mod enclave;
pub mod error;
pub mod escrow;
pub mod faults;
pub mod idempotency;
pub mod json;
pub mod keys;
pub mod observe;
pub mod payments;
pub mod pem;
pub mod restore;
pub mod routes;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod tickets;
pub mod tls;

pub use config::{ApiConfig, Mode};
pub use error::ApiError;
