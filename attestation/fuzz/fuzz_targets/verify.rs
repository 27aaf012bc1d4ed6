//! Parses and verifies arbitrary bytes as an attestation document: at a fixed time (when one
//! real fixture's chain is valid), with and without the certificate cache, and at the
//! document's own timestamp (so every mutated real document runs the whole pipeline).
//! Any panic, abort, leak or timeout is a bug: malformed input must yield a `VerifyError`.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use enclosure_attestation::{AttestationPolicy, Verifier};
use libfuzzer_sys::fuzz_target;

/// A permissive policy, so that inputs reach every check instead of stopping at freshness.
fn policy() -> &'static AttestationPolicy {
    static POLICY: OnceLock<AttestationPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        AttestationPolicy::default()
            .with_allow_debug(true)
            .with_max_age(Duration::from_secs(u32::MAX.into()))
            .with_max_future_skew(Duration::from_secs(u32::MAX.into()))
    })
}

fn cached() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(Verifier::new)
}

fuzz_target!(|data: &[u8]| {
    // tkhq_qos-2022-07: its whole chain is valid at this instant.
    let at = UNIX_EPOCH + Duration::from_millis(1_657_117_102_484);
    let cold = Verifier::uncached().verify(data, policy(), at);
    let warm = cached().verify(data, policy(), at);
    // The cache must never change a verdict.
    assert_eq!(cold, warm);
    let _ = Verifier::uncached().verify_at_document_time(data, policy());
});
