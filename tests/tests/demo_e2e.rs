//! `enclosure demo` end to end, with the real binaries: it starts its own stack on the ports
//! it is given, runs the whole escrow and stops that stack; against a running `enclosure up`
//! it reuses the stack and leaves it running, and a failed step exits 1; something else on the api's port stops it
//! before it starts anything.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use enclosure_tests::command;

/// What stdout must name, one line per step, in this order.
const STEPS: [&str; 10] = [
    "✓ attestation verified",
    "✓ room ",
    "✓ funded: payment ",
    "✓ uploaded work.txt",
    "✓ submitted milestone",
    "✓ validated",
    "✓ accepted by alice",
    "✓ swap: ",
    "✓ downloaded work.txt",
    "✓ downloaded and checked sha256 ",
];

/// Three distinct free loopback ports: api, payments sandbox, artifact store.
fn free_ports() -> [SocketAddr; 3] {
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr"))
        .collect();
    [addrs[0], addrs[1], addrs[2]]
}

fn port_flags(ports: &[SocketAddr; 3]) -> Vec<String> {
    vec![
        "--listen".into(),
        ports[0].to_string(),
        "--payments-listen".into(),
        ports[1].to_string(),
        "--s3-listen".into(),
        ports[2].to_string(),
    ]
}

fn demo(dir: &Path, extra: &[String]) -> Output {
    command("enclosure")
        .arg("demo")
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("running enclosure demo")
}

fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// The hex after `sha256 ` on the line starting with `prefix`.
fn sha_on(stdout: &str, prefix: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{stdout}"));
    let at = line.find("sha256 ").expect("a sha256") + "sha256 ".len();
    line[at..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect()
}

/// Checks a successful demo's output: every step, in order, the same hash uploaded and
/// checked, and no secret of the data directory anywhere.
fn assert_complete(out: &Output, dir: &Path) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "demo failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let mut at = 0;
    for step in STEPS {
        let found = stdout[at..]
            .find(&format!("\n{step}"))
            .unwrap_or_else(|| panic!("{step:?} missing or out of order in:\n{stdout}"));
        at += found + 1;
    }
    let uploaded = sha_on(&stdout, "✓ uploaded work.txt");
    assert_eq!(uploaded.len(), 64, "{stdout}");
    assert_eq!(sha_on(&stdout, "✓ downloaded and checked sha256"), uploaded);
    assert!(
        stdout.contains("payout 487.50 EUR to bob, fee 12.50 EUR"),
        "{stdout}"
    );
    assert!(stdout.contains("✓ demo complete"), "{stdout}");

    // Never a token, the sandbox's API key or a presigned URL's signature.
    let key = std::fs::read_to_string(dir.join("payments/api-key")).expect("sandbox key");
    for all in [&stdout, &stderr] {
        assert!(!all.contains(key.trim()), "the sandbox key leaked:\n{all}");
        assert!(!all.contains("eyJ"), "a JWT leaked:\n{all}");
        assert!(!all.contains("X-Amz-"), "a presigned query leaked:\n{all}");
    }
    stdout
}

#[test]
fn the_demo_starts_its_own_stack_runs_the_escrow_and_stops_the_stack() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ports = free_ports();
    let out = demo(dir.path(), &port_flags(&ports));
    let stdout = assert_complete(&out, dir.path());
    assert!(stdout.contains("no stack answers at"), "{stdout}");
    assert!(stdout.contains("✓ stack: started"), "{stdout}");
    assert!(stdout.contains("✓ stack stopped"), "{stdout}");
    for addr in ports {
        assert!(!listening(addr), "{addr} still listens after the demo");
    }
}

/// `enclosure up`, stopped with SIGTERM (so it stops its parts) when dropped.
struct Up(Child);

impl Up {
    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        None
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.terminate();
        }
    }
}

/// Waits until the api of `dir` answers its health check with 200.
async fn wait_healthy(dir: &Path, api: SocketAddr, up: &mut Up) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = up.0.try_wait() {
            panic!(
                "enclosure up exited with {status}:\n{}",
                std::fs::read_to_string(dir.join("up.out")).unwrap_or_default()
            );
        }
        if let Ok(pem) = std::fs::read(dir.join("tls/cert.pem")) {
            let http = reqwest::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("PEM")])
                .build()
                .expect("client");
            if let Ok(r) = http.get(format!("https://{api}/v1/health")).send().await
                && r.status().is_success()
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the api never became healthy");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_reuses_a_running_stack_and_leaves_it_running() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ports = free_ports();
    let log = std::fs::File::create(dir.path().join("up.out")).expect("log");
    let mut up = Up(command("enclosure")
        .arg("up")
        .arg("--data-dir")
        .arg(dir.path())
        .args(port_flags(&ports))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("starting enclosure up"));
    wait_healthy(dir.path(), ports[0], &mut up).await;

    // A step that fails stops the demo with exit code 1 and names the step on stderr: here
    // the sandbox refuses a wrong API key, so alice cannot pay.
    let key_file = dir.path().join("payments/api-key");
    let key = std::fs::read_to_string(&key_file).expect("sandbox key");
    std::fs::write(&key_file, "sk_dev_not_the_key\n").expect("key file");
    let path = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || demo(&path, &[]))
        .await
        .expect("demo");
    std::fs::write(&key_file, &key).expect("key file");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("✓ room "), "{stdout}");
    assert!(!stdout.contains("✓ funded"), "{stdout}");
    assert!(stderr.starts_with("✗ funding: "), "{stderr}");
    assert!(!stderr.contains("sk_dev_"), "{stderr}");

    // No port flags: the demo finds the stack at the address `up` recorded in DIR/api.toml.
    let path = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || demo(&path, &[]))
        .await
        .expect("demo");
    let stdout = assert_complete(&out, dir.path());
    assert!(
        stdout.contains(&format!(
            "✓ stack: reusing the running stack at https://{}",
            ports[0]
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("starting one"), "{stdout}");
    assert!(!stdout.contains("stack stopped"), "{stdout}");

    // The stack still runs, and `up` stops it as usual.
    assert!(up.0.try_wait().expect("up").is_none(), "up exited");
    wait_healthy(dir.path(), ports[0], &mut up).await;
    let status = up.terminate().expect("up stops on SIGTERM");
    assert!(status.success(), "up: {status}");
    for addr in ports {
        assert!(!listening(addr), "{addr} still listens after up stopped");
    }
}

#[test]
fn something_else_on_the_api_port_is_an_error_before_anything_starts() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A plain TCP listener: not the api of this data directory.
    let squatter = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = squatter.local_addr().expect("addr");
    let out = demo(dir.path(), &["--listen".into(), addr.to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(
        stderr.starts_with("✗ stack: something listens at"),
        "{stderr}"
    );
    assert!(!dir.path().join("logs/demo-up.log").exists());
}
