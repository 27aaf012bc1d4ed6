//! Full verifications per second of a real Nitro document at its own timestamp, on one thread:
//! cold (a fresh, uncached `Verifier` per document) and warm (one `Verifier` whose cache holds
//! the chain; validity times and the document signature are still checked every time).
//!
//! Run: `cargo bench -p enclosure-attestation`. Targets: cold ≥ 500/s, warm ≥ 2,500/s.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use enclosure_attestation::{AttestationPolicy, Verifier};

/// testdata/documents.json: marlinprotocol_sample1-2024-02.cose, a production document.
const DOCUMENT: &[u8] = include_bytes!("../testdata/marlinprotocol_sample1-2024-02.cose");
const TIMESTAMP_MS: u64 = 1_708_930_921_439;
const RUN: Duration = Duration::from_secs(3);

/// Runs `f` repeatedly for `RUN` and returns calls per second.
fn rate(mut f: impl FnMut()) -> f64 {
    // Warm up code paths and allocator first.
    for _ in 0..50 {
        f();
    }
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < RUN {
        for _ in 0..50 {
            f();
        }
        calls += 50;
    }
    calls as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let policy = AttestationPolicy::default();
    let at = UNIX_EPOCH + Duration::from_millis(TIMESTAMP_MS);
    let check = |verifier: &Verifier, at: SystemTime| {
        let doc = verifier.verify(black_box(DOCUMENT), &policy, at);
        assert!(doc.is_ok(), "the benchmark document must verify: {doc:?}");
    };

    let cold = rate(|| check(&Verifier::uncached(), at));
    let warm_verifier = Verifier::new();
    let warm = rate(|| check(&warm_verifier, at));

    println!(
        "attestation verify, {} B real Nitro document, one thread:",
        DOCUMENT.len()
    );
    println!("  cold (no cache):          {cold:>8.0} verifications/s  (target >= 500)");
    println!("  warm (certificate cache): {warm:>8.0} verifications/s  (target >= 2500)");
}
