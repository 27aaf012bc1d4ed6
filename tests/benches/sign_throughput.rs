//! Signs per second through proxy and enclave (real processes, Unix sockets), with 1 and 16
//! concurrent connections, next to the raw single-thread P-384 sign rate of the same crypto.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p enclosure-tests --bench sign_throughput`
//! (the bench starts the release binaries that sit next to it in target/release).

use std::time::{Duration, Instant};

use enclosure_policy::ticket::{TicketKey, TicketOperation};
use enclosure_protocol::{Request, SecretBytes};
use enclosure_tests::{Stack, sign_rate, ticket};
use p384::ecdsa::signature::Signer;
use p384::ecdsa::{Signature, SigningKey};

const MESSAGE: &[u8] = b"an escrow release instruction, 64 bytes long, give or take a few";
const RUN: Duration = Duration::from_secs(4);

fn raw_sign_rate() -> f64 {
    let key = SigningKey::random(&mut rand_core::OsRng);
    // Warm up, then count for a fixed time.
    for _ in 0..50 {
        let _: Signature = key.sign(MESSAGE);
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < RUN {
        let _: Signature = key.sign(std::hint::black_box(MESSAGE));
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn stack_rate(stack: &Stack, tk: &TicketKey, connections: usize) -> f64 {
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(stack.client().await);
    }
    sign_rate(clients, tk, "bench", "bench-key", MESSAGE, RUN).await
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let stack = Stack::start().await;
        let tk = TicketKey::from_bytes(rand::random());
        let mut c = stack.client().await;
        c.call(Request::Provision {
            ticket_key: SecretBytes::new(tk.expose_secret().to_vec()),
        })
        .await
        .expect("transport")
        .expect("provision");
        let t = ticket(&tk, TicketOperation::GenerateKey, "bench", "bench-key", b"");
        c.call(Request::GenerateKey { ticket: t })
            .await
            .expect("transport")
            .expect("generate");

        let raw = raw_sign_rate();
        let one = stack_rate(&stack, &tk, 1).await;
        let sixteen = stack_rate(&stack, &tk, 16).await;
        println!("raw P-384 sign (p384 crate, one thread): {raw:>8.0} signs/s");
        println!(
            "proxy + enclave, 1 connection:           {one:>8.0} signs/s  ({:.0}% of raw)",
            100.0 * one / raw
        );
        println!(
            "proxy + enclave, 16 connections:         {sixteen:>8.0} signs/s  ({:.0}% of raw)",
            100.0 * sixteen / raw
        );
        let verdict = if sixteen >= 0.85 * raw {
            "met"
        } else {
            "NOT met"
        };
        println!("target (16 connections >= 85% of raw): {verdict}");
    });
}
