//! Sign requests per second over HTTPS (16 concurrent clients, embedded SQLite), next to the
//! enclave-direct rate measured in the same run, with their ratio and p50/p99 latency.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p enclosure-tests --bench api_sign`
//!
//! Two rounds. First everything shares the machine's CPUs. Then, on a machine with two or
//! more CPUs, the enclave is pinned to a CPU of its own and the host side (api, proxy, bench
//! clients) to the others, as on Nitro, where an enclave's vCPUs are taken away from the
//! parent instance: there the ratio measures the host path's overhead rather than how the
//! host and the enclave share one small machine. In each round the direct rate is measured
//! before and after the HTTPS run and averaged, so a change in background load shows. The
//! target (HTTPS at least 70% of the direct rate with 16) is judged on the pinned round, the
//! shape production has; the shared round's ratio is printed beside it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use enclosure_api::auth::Role;
use enclosure_policy::ticket::{TicketKey, TicketOperation};
use enclosure_protocol::{EnclaveClient, Request, Response, SecretBytes};
use enclosure_tests::api::{ApiSettings, ApiStack, Backend};
use enclosure_tests::{sign_rate, ticket};

const CLIENTS: usize = 16;
const RUN: Duration = Duration::from_secs(6);
const MESSAGE: &[u8] = b"an escrow release instruction, 64 bytes long, give or take a few";

/// CPU seconds (user + system) a process has used so far, from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn cpu_snapshot(stack: &ApiStack) -> [f64; 4] {
    [
        cpu_secs(stack.apis[0].proc.pid()),
        cpu_secs(stack.stack.proxy.as_ref().map(|p| p.pid()).unwrap_or(0)),
        cpu_secs(stack.stack.enclave.as_ref().map(|p| p.pid()).unwrap_or(0)),
        cpu_secs(std::process::id()),
    ]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// What one direct measurement found.
struct Direct {
    /// Signs per second with one connection.
    one: f64,
    /// Signs per second with [`CLIENTS`] connections.
    many: f64,
    /// CPU microseconds per sign in the many-connection run: enclave, bench clients.
    cpu: [f64; 2],
}

/// Signs per second straight at the enclave socket (no proxy, no api), with 1 and with 16
/// connections, on a bench-only key.
async fn enclave_direct(stack: &ApiStack) -> Direct {
    // Tickets must be made under the ticket key the api provisioned; in dev mode it sits in
    // the data directory (0600), so the bench reads it from there.
    let hex_key =
        std::fs::read_to_string(stack.dir().join("secrets/ticket.key")).expect("ticket key");
    let tk = TicketKey::from_slice(&hex::decode(hex_key.trim()).expect("hex")).expect("32 bytes");
    let mut c = EnclaveClient::connect(&stack.stack.enclave_addr())
        .await
        .expect("enclave");
    let r = c
        .call(Request::Provision {
            ticket_key: SecretBytes::new(tk.expose_secret().to_vec()),
        })
        .await
        .expect("transport");
    assert!(matches!(r, Ok(Response::Provisioned { .. })), "{r:?}");
    let t = ticket(
        &tk,
        TicketOperation::GenerateKey,
        "bench-direct",
        "bench-direct-key",
        b"",
    );
    let r = c
        .call(Request::GenerateKey { ticket: t })
        .await
        .expect("transport");
    // Later rounds find the key from the first.
    assert!(
        matches!(r, Ok(Response::KeyGenerated { .. }))
            || matches!(&r, Err(e) if e.code == enclosure_protocol::EnclaveErrorCode::KeyExists),
        "{r:?}"
    );
    let mut rates = [0.0; 2];
    let mut cpu = [0.0; 2];
    for (slot, connections) in [(0, 1), (1, CLIENTS)] {
        let mut clients = Vec::new();
        for _ in 0..connections {
            clients.push(
                EnclaveClient::connect(&stack.stack.enclave_addr())
                    .await
                    .expect("enclave"),
            );
        }
        let before = cpu_snapshot(stack);
        let t0 = Instant::now();
        rates[slot] = sign_rate(
            clients,
            &tk,
            "bench-direct",
            "bench-direct-key",
            MESSAGE,
            RUN,
        )
        .await;
        let after = cpu_snapshot(stack);
        let signs = rates[slot] * t0.elapsed().as_secs_f64();
        cpu = [2, 3].map(|i| (after[i] - before[i]) / signs * 1e6);
    }
    Direct {
        one: rates[0],
        many: rates[1],
        cpu,
    }
}

async fn https_rate(stack: &ApiStack, key_id: &str) -> (f64, Vec<Duration>) {
    let url = Arc::new(format!("{}/v1/keys/{key_id}/sign", stack.apis[0].url));
    let token = Arc::new(stack.token("bench", Role::Client));
    let body = serde_json::json!({
        "message": base64::engine::general_purpose::STANDARD.encode(MESSAGE)
    })
    .to_string();
    // Keys fresh to this run: a key reused from an earlier round would be answered from the
    // idempotency store without signing.
    let run_id: u64 = rand::random();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..CLIENTS {
        // One client (one keep-alive connection) per worker, as 16 independent callers.
        let http = stack.http();
        let (url, token, body) = (url.clone(), token.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while start.elapsed() < RUN {
                let t0 = Instant::now();
                let r = http
                    .post(url.as_str())
                    .bearer_auth(token.as_str())
                    .header("content-type", "application/json")
                    .header("Idempotency-Key", format!("bench-{run_id:x}-{w}-{i}"))
                    .body(body.clone())
                    .send()
                    .await
                    .expect("request");
                let status = r.status();
                let replayed = r
                    .headers()
                    .contains_key(enclosure_api::idempotency::REPLAYED);
                let _ = r.bytes().await;
                assert_eq!(status, 200);
                assert!(!replayed, "a bench request was answered by a replay");
                lat.push(t0.elapsed());
                i += 1;
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    let rate = lat.len() as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    (rate, lat)
}

/// Pins every thread of `pid` to `cpus` (a taskset list).
fn pin(pid: Option<u32>, cpus: &str) {
    let pid = pid.expect("a running process").to_string();
    let out = std::process::Command::new("taskset")
        .args(["-a", "-pc", cpus, &pid])
        .output()
        .expect("taskset (util-linux)");
    assert!(out.status.success(), "taskset {cpus} {pid}: {out:?}");
}

/// One measured round: direct, HTTPS, direct again; prints rates, ratio, latency and CPU, and
/// returns the verdict on the target.
async fn round(stack: &ApiStack, key_id: &str, label: &str) -> String {
    println!("--- {label}");
    let a = enclave_direct(stack).await;
    let before = cpu_snapshot(stack);
    let (https, lat) = https_rate(stack, key_id).await;
    let after = cpu_snapshot(stack);
    let b = enclave_direct(stack).await;
    let (one_a, many_a, one_b, many_b) = (a.one, a.many, b.one, b.many);
    let (direct_one, direct) = ((one_a + one_b) / 2.0, (many_a + many_b) / 2.0);
    let n = lat.len() as f64;
    let per_req = |i: usize| (after[i] - before[i]) / n * 1e6;
    println!(
        "enclave direct, 1 connection:          {direct_one:>8.0} signs/s  (before {one_a:.0}, after {one_b:.0})"
    );
    println!(
        "enclave direct, {CLIENTS} connections:      {direct:>8.0} signs/s  (before {many_a:.0}, after {many_b:.0})"
    );
    println!(
        "CPU per direct sign ({CLIENTS} connections): enclave {:.0} us, bench clients {:.0} us",
        (a.cpu[0] + b.cpu[0]) / 2.0,
        (a.cpu[1] + b.cpu[1]) / 2.0
    );
    println!(
        "HTTPS api, {CLIENTS} clients (SQLite):        {https:>8.0} signs/s  ({:.0}% of direct with {CLIENTS}, {:.0}% of direct with 1)",
        100.0 * https / direct,
        100.0 * https / direct_one
    );
    println!(
        "HTTPS latency: p50 {:.2} ms, p99 {:.2} ms ({} requests)",
        percentile(&lat, 0.50).as_secs_f64() * 1000.0,
        percentile(&lat, 0.99).as_secs_f64() * 1000.0,
        lat.len()
    );
    println!(
        "CPU per HTTPS sign: api {:.0} us, proxy {:.0} us, enclave {:.0} us, bench clients {:.0} us",
        per_req(0),
        per_req(1),
        per_req(2),
        per_req(3)
    );
    // Faster through the api than straight at the enclave means the direct run was held back
    // by something other than the enclave: no honest ratio can be read from it.
    let ratio = 100.0 * https / direct;
    let verdict = if https > direct {
        "not comparable (HTTPS beat the direct run; the direct run is not enclave-bound here)"
            .to_string()
    } else if https >= 0.70 * direct {
        format!("met ({ratio:.0}%)")
    } else {
        format!("NOT met ({ratio:.0}%)")
    };
    println!("target (HTTPS >= 70% of enclave-direct with {CLIENTS}): {verdict}");
    verdict
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let stack = ApiStack::start(
            Backend::Sqlite,
            1,
            ApiSettings {
                per_user_per_minute: Some(10_000_000),
                per_identity_per_minute: Some(10_000_000),
                ..ApiSettings::default()
            },
        )
        .await;
        let sdk = stack.client(0, "bench", Role::Client).await;
        let id = sdk.create_identity("bench").await.expect("identity");
        let key = sdk.create_key(&id.id).await.expect("key");

        let shared = round(
            &stack,
            &key.key_id,
            "shared CPUs: enclave, proxy, api and clients together",
        )
        .await;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus >= 2 {
            let host = format!("0-{}", cpus - 2);
            let enclave = format!("{}", cpus - 1);
            pin(stack.stack.enclave.as_ref().map(|p| p.pid()), &enclave);
            pin(Some(stack.apis[0].proc.pid()), &host);
            pin(stack.stack.proxy.as_ref().map(|p| p.pid()), &host);
            pin(Some(std::process::id()), &host);
            let label = format!("enclave pinned to CPU {enclave}, host side to CPUs {host}");
            let pinned = round(&stack, &key.key_id, &label).await;
            // Production's shape decides: on Nitro the enclave's vCPUs are its own.
            println!("--- verdict");
            println!("target, enclave on CPUs of its own (as on Nitro): {pinned}");
            println!(
                "shared CPUs (this machine's host and enclave on the same cores; bounded by \
                 enclave CPU / total CPU per sign): {shared}"
            );
        } else {
            println!("--- verdict");
            println!(
                "one CPU: no round with the enclave on CPUs of its own; shared CPUs: {shared}"
            );
        }
    });
}
