//! Signing tickets: the one-time authorisation the api issues and the enclave checks.
