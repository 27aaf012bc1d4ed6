//! Pure rules of Enclosure: signing tickets, attestation policy, limits.
//!
//! Nothing here does I/O, reads a clock or spawns tasks: time, keys and bytes are parameters,
//! so every rule can be tested exhaustively and reused on both sides of the enclave boundary.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod attestation;
pub mod escrow;
pub mod rate;
pub mod replay;
pub mod settlement;
pub mod ticket;
pub mod webhook;
