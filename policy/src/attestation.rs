//! Attestation policy: which enclave measurements, roots and freshness a verifier accepts.
