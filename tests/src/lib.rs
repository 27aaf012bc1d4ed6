//! Placeholder; see the crate description.
#![forbid(unsafe_code)]
