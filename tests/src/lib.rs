//! Harness for end-to-end tests: starts Enclosure's real binaries on Unix sockets in a
//! temporary directory and stops them when dropped.
//!
//! The binaries come from the same target directory as the test; build them first with
//! `cargo build --workspace --bins` (the README's test command does).
#![forbid(unsafe_code)]

pub mod api;
pub mod escrow;

/// Runs an async scenario `fn(Backend)` as two tests, one per database backend, in a module
/// named `$name` (`$name::sqlite`, `$name::postgres`).
#[macro_export]
macro_rules! on_both {
    ($name:ident, $scenario:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $scenario($crate::api::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $scenario($crate::api::Backend::Postgres).await;
            }
        }
    };
}

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use enclosure_policy::ticket::{
    TICKET_VERSION, Ticket, TicketClaims, TicketKey, TicketOperation, payload_digest,
};
use enclosure_protocol::{Address, EnclaveClient};

/// The directory holding the workspace's built binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("target directory")
        .to_path_buf()
}

/// The path of a workspace binary, which must have been built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests",
        p.display()
    );
    p
}

/// A command for a workspace binary that does not inherit the settings a developer's or a
/// CI machine's environment may carry (`ENCLOSURE_*`, `DATABASE_URL`): those override the
/// configuration each test writes, and would make parallel tests share a database.
pub fn command(name: &str) -> Command {
    let mut cmd = Command::new(bin(name));
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("ENCLOSURE_") || k == "DATABASE_URL" {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// A child process that is killed when dropped.
pub struct Proc {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Proc {
    /// Starts `name` with `args`, logging to `dir/name.log`.
    pub fn spawn(name: &'static str, args: &[&str], dir: &Path) -> Proc {
        Proc::spawn_with_env(name, args, dir, &[])
    }

    /// Like [`Proc::spawn`], with extra environment variables.
    pub fn spawn_with_env(
        name: &'static str,
        args: &[&str],
        dir: &Path,
        env: &[(&str, &str)],
    ) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = command(name)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc { child, name, log }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit by itself; its status if it did.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Panics with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited with {status}:\n{}", self.name, self.log());
        }
    }

    /// Peak virtual memory (VmPeak) in KiB, from /proc.
    pub fn vm_peak_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmPeak:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until a Unix socket accepts connections, or panics with the process log.
pub async fn wait_for_socket(path: &Path, proc: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return;
        }
        proc.assert_running();
        assert!(
            Instant::now() < deadline,
            "{} never listened:\n{}",
            path.display(),
            proc.log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An enclave (dev mode) and a proxy in front of it, on Unix sockets in a temp dir.
pub struct Stack {
    /// The temp dir: sockets, logs, dev CA.
    pub dir: tempfile::TempDir,
    /// The enclave process.
    pub enclave: Option<Proc>,
    /// The proxy process.
    pub proxy: Option<Proc>,
}

impl Stack {
    /// The enclave's own socket.
    pub fn enclave_addr(&self) -> Address {
        Address::Unix(self.dir.path().join("enclave.sock"))
    }

    /// The proxy's socket, where clients connect.
    pub fn proxy_addr(&self) -> Address {
        Address::Unix(self.dir.path().join("proxy.sock"))
    }

    /// Starts both processes and waits until they listen.
    pub async fn start() -> Stack {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut stack = Stack {
            enclave: None,
            proxy: None,
            dir,
        };
        stack.start_enclave().await;
        let proxy_sock = stack.dir.path().join("proxy.sock");
        let args = [
            "--listen".to_string(),
            format!("unix://{}", proxy_sock.display()),
            "--enclave".to_string(),
            stack.enclave_addr().to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut proxy = Proc::spawn("enclosure-proxy", &args, stack.dir.path());
        wait_for_socket(&proxy_sock, &mut proxy).await;
        stack.proxy = Some(proxy);
        stack
    }

    /// (Re)starts the enclave process.
    pub async fn start_enclave(&mut self) {
        let sock = self.dir.path().join("enclave.sock");
        let args = [
            "--mode".to_string(),
            "dev".to_string(),
            "--listen".to_string(),
            format!("unix://{}", sock.display()),
            "--data-dir".to_string(),
            self.dir.path().display().to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut p = Proc::spawn("enclosure-enclave", &args, self.dir.path());
        wait_for_socket(&sock, &mut p).await;
        self.enclave = Some(p);
    }

    /// Kills the enclave process, as a crash would.
    pub fn kill_enclave(&mut self) {
        if let Some(p) = self.enclave.take() {
            p.kill();
        }
    }

    /// A client connected through the proxy.
    pub async fn client(&self) -> EnclaveClient {
        EnclaveClient::connect(&self.proxy_addr())
            .await
            .expect("connect through proxy")
    }

    /// The dev root certificate the enclave's dev attester made.
    pub fn dev_root_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dev-ca/root.pem")).expect("dev root")
    }
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Issues a ticket the way the api does: fresh id and nonce, 30 s lifetime.
pub fn ticket(
    key: &TicketKey,
    op: TicketOperation,
    identity: &str,
    key_id: &str,
    payload: &[u8],
) -> Ticket {
    let t = now();
    key.issue(TicketClaims {
        version: TICKET_VERSION,
        ticket_id: rand::random(),
        operation: op,
        identity_id: identity.into(),
        key_id: key_id.into(),
        payload_sha384: payload_digest(payload),
        nonce: rand::random(),
        issued_at: t,
        expires_at: t + 30,
    })
    .expect("well-formed claims")
}

/// DER bytes of the first certificate in a PEM text.
pub fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("PEM body is base64")
}

/// Verifies a dev-attester document under a policy that trusts `dev_root_pem` and expects
/// `nonce`, and returns the instance public key it binds.
pub fn attested_instance_key(document: &[u8], dev_root_pem: &str, nonce: &[u8]) -> Vec<u8> {
    let policy = enclosure_policy::attestation::AttestationPolicy::default()
        .with_dev_root_der(pem_to_der(dev_root_pem))
        .with_nonce(nonce);
    let verified = enclosure_attestation::verify(document, &policy, SystemTime::now())
        .expect("the enclave's attestation document verifies under the dev root");
    verified
        .public_key()
        .expect("the document binds the instance key")
        .to_vec()
}

/// Signs `message` with `key_id` over each client concurrently until `run` has passed since
/// `start`, with fresh tickets under `tk`; returns signatures per second. For the benchmarks.
pub async fn sign_rate(
    clients: Vec<EnclaveClient>,
    tk: &TicketKey,
    identity: &'static str,
    key_id: &'static str,
    message: &'static [u8],
    run: Duration,
) -> f64 {
    use enclosure_protocol::{Request, Response};
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut client in clients {
        let tk = tk.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < run {
                let t = ticket(&tk, TicketOperation::Sign, identity, key_id, message);
                let r = client
                    .call(Request::Sign {
                        key_id: key_id.into(),
                        ticket: t,
                        message: message.to_vec(),
                    })
                    .await
                    .expect("transport");
                assert!(matches!(r, Ok(Response::Signature { .. })), "{r:?}");
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("signing task");
    }
    total as f64 / start.elapsed().as_secs_f64()
}
