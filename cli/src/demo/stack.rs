//! The stack the demo talks to: the one `enclosure up --data-dir DIR` runs, found at the
//! address DIR/api.toml records and checked with DIR's TLS certificate, or one the demo starts
//! itself (`enclosure up` as a child process) and stops when it is done.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{DemoArgs, Failed, StepExt, complain, done, progress};

/// `enclosure up`'s default addresses.
const DEFAULT_API: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8443);
const DEFAULT_PAYMENTS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8790);
const DEFAULT_S3: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9300);

/// How long `enclosure up` gets to stop its parts after SIGTERM (it gives each 5 s).
const STOP_GRACE: Duration = Duration::from_secs(30);

/// A stack that answers, and what the demo needs to talk to it.
pub struct Stack {
    /// The api, e.g. `https://127.0.0.1:8443`.
    pub api_url: String,
    /// The payments sandbox, e.g. `http://127.0.0.1:8790`.
    pub sandbox_url: String,
    /// The api's TLS certificate (PEM): the only root the demo trusts for the api.
    pub tls_root_pem: Vec<u8>,
}

/// A stack the demo started: `enclosure up` as a child.
pub struct OwnStack {
    child: tokio::process::Child,
    log: PathBuf,
}

impl OwnStack {
    /// Stops `enclosure up` with SIGTERM (it stops its parts in order), killing it if it does
    /// not exit in time.
    pub async fn stop(mut self) {
        progress("stopping the stack the demo started…");
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        match tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
            Ok(_) => done("stack stopped"),
            Err(_) => {
                let _ = self.child.kill().await;
                complain(format_args!(
                    "warning: enclosure up did not stop within {} s and was killed; its parts may still run (see {})",
                    STOP_GRACE.as_secs(),
                    self.log.display()
                ));
            }
        }
    }
}

/// The addresses `enclosure up` recorded in DIR/api.toml.
#[derive(Debug, Default)]
struct Recorded {
    listen: Option<SocketAddr>,
    payments_url: Option<String>,
    s3_url: Option<String>,
}

impl Recorded {
    /// Reads DIR/api.toml leniently: what is absent or unreadable stays `None`.
    fn read(dir: &Path) -> Recorded {
        let Ok(text) = std::fs::read_to_string(dir.join("api.toml")) else {
            return Recorded::default();
        };
        Recorded::parse(&text)
    }

    fn parse(text: &str) -> Recorded {
        let Ok(table) = text.parse::<toml::Table>() else {
            return Recorded::default();
        };
        let string = |section: Option<&str>, key: &str| {
            let t = match section {
                Some(s) => table.get(s)?.as_table()?,
                None => &table,
            };
            t.get(key)?.as_str().map(str::to_string)
        };
        Recorded {
            listen: string(None, "listen").and_then(|s| s.parse().ok()),
            payments_url: string(Some("payments"), "provider_url"),
            s3_url: string(Some("artifacts"), "endpoint"),
        }
    }
}

/// `http://HOST:PORT` → `HOST:PORT`, for URLs `enclosure up` wrote.
fn http_addr(url: &str) -> Option<SocketAddr> {
    url.strip_prefix("http://")?
        .trim_end_matches('/')
        .parse()
        .ok()
}

/// Where to connect to a listen address (a wildcard address means this host).
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    }
}

/// The reqwest client for the api: trusts only the stack's own TLS certificate.
pub fn api_client(tls_root_pem: &[u8]) -> anyhow::Result<reqwest::Client> {
    let cert = reqwest::Certificate::from_pem(tls_root_pem)
        .context("the api's TLS certificate is not PEM")?;
    Ok(reqwest::Client::builder()
        .tls_certs_only([cert])
        .timeout(Duration::from_secs(30))
        .build()?)
}

enum Probe {
    /// Nothing listens there.
    Nothing,
    /// The api of this data directory answers and is healthy.
    Healthy(Vec<u8>),
}

/// Asks whether the api of `dir` answers at `addr`.
async fn probe(dir: &Path, addr: SocketAddr) -> anyhow::Result<Probe> {
    let connect = tokio::net::TcpStream::connect(addr);
    match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Ok(Ok(_)) => {}
        _ => return Ok(Probe::Nothing),
    }
    let cert_path = dir.join("tls/cert.pem");
    let pem = std::fs::read(&cert_path).with_context(|| {
        format!(
            "something listens at {addr}, but {} is missing, so it is not the stack of {}: \
             pass the --data-dir given to `enclosure up`, or another --listen",
            cert_path.display(),
            dir.display()
        )
    })?;
    let health = health(&pem, addr).await.with_context(|| {
        format!(
            "something listens at {addr} but does not answer as the api of {} (checked with {})",
            dir.display(),
            cert_path.display()
        )
    })?;
    match health {
        Ok(()) => Ok(Probe::Healthy(pem)),
        Err(report) => bail!("the api at https://{addr} is not healthy: {report}"),
    }
}

/// `GET /v1/health`: `Ok(Ok(()))` when healthy, `Ok(Err(report))` when the api answers but
/// reports a problem, `Err` when it does not answer over TLS.
async fn health(pem: &[u8], addr: SocketAddr) -> anyhow::Result<Result<(), String>> {
    let http = api_client(pem)?;
    let resp = http
        .get(format!("https://{addr}/v1/health"))
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    let status = resp.status();
    if status.is_success() {
        return Ok(Ok(()));
    }
    let body = resp.text().await.unwrap_or_default();
    Ok(Err(format!("{status}: {}", body.trim())))
}

/// Finds the running stack of the data directory, or starts one (recorded in `own`, so the
/// caller stops it whatever happens next).
pub async fn find_or_start(args: &DemoArgs, own: &mut Option<OwnStack>) -> Result<Stack, Failed> {
    let dir = &args.data_dir;
    let recorded = Recorded::read(dir);
    let api = reachable(args.listen.or(recorded.listen).unwrap_or(DEFAULT_API));
    if let Probe::Healthy(tls_root_pem) = probe(dir, api).await.setup("stack")? {
        let sandbox_url = recorded
            .payments_url
            .with_context(|| {
                format!(
                    "the api at https://{api} answers, but {} names no payments provider",
                    dir.join("api.toml").display()
                )
            })
            .setup("stack")?;
        done(format!(
            "stack: reusing the running stack at https://{api} (data {}); it keeps running",
            dir.display()
        ));
        return Ok(Stack {
            api_url: format!("https://{api}"),
            sandbox_url,
            tls_root_pem,
        });
    }
    let payments = args
        .payments_listen
        .or(recorded.payments_url.as_deref().and_then(http_addr))
        .unwrap_or(DEFAULT_PAYMENTS);
    let s3 = args
        .s3_listen
        .or(recorded.s3_url.as_deref().and_then(http_addr))
        .unwrap_or(DEFAULT_S3);
    let timeout = Duration::from_secs(args.timeout);
    start(dir, api, payments, s3, timeout, own)
        .await
        .setup("stack")
}

async fn start(
    dir: &Path,
    api: SocketAddr,
    payments: SocketAddr,
    s3: SocketAddr,
    timeout: Duration,
    own: &mut Option<OwnStack>,
) -> anyhow::Result<Stack> {
    let log_dir = dir.join("logs");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let log = log_dir.join("demo-up.log");
    progress(format!(
        "no stack answers at https://{api}; starting one: enclosure up --data-dir {} (output in {})",
        dir.display(),
        log.display()
    ));
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    let exe = std::env::current_exe().context("locating the enclosure binary")?;
    let child = tokio::process::Command::new(exe)
        .arg("up")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", &api.to_string()])
        .args(["--payments-listen", &payments.to_string()])
        .args(["--s3-listen", &s3.to_string()])
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .context("starting enclosure up")?;
    let up = own.insert(OwnStack {
        child,
        log: log.clone(),
    });

    let cert_path = dir.join("tls/cert.pem");
    let started = Instant::now();
    let mut last = String::from("nothing listens yet");
    loop {
        if let Some(status) = up.child.try_wait()? {
            bail!(
                "enclosure up exited ({status}) before the api answered; its last words:\n{}",
                tail(&log, 8)
            );
        }
        if tokio::net::TcpStream::connect(api).await.is_ok() {
            match std::fs::read(&cert_path) {
                Ok(pem) => match health(&pem, api).await {
                    Ok(Ok(())) => {
                        done(format!(
                            "stack: started (api https://{api}, payments sandbox http://{payments}, \
                             artifact store http://{s3}) in {:.1} s; it stops when the demo ends",
                            started.elapsed().as_secs_f64()
                        ));
                        return Ok(Stack {
                            api_url: format!("https://{api}"),
                            sandbox_url: format!("http://{payments}"),
                            tls_root_pem: pem,
                        });
                    }
                    Ok(Err(report)) => last = report,
                    Err(e) => last = format!("{e:#}"),
                },
                Err(e) => last = format!("{}: {e}", cert_path.display()),
            }
        }
        if started.elapsed() > timeout {
            bail!(
                "the api did not become healthy at https://{api} within {} s (last: {last}); see {}",
                timeout.as_secs(),
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The last `n` lines of a log file, indented.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_up_recorded_are_read() {
        let r = Recorded::parse(
            "mode = \"dev\"\nlisten = \"127.0.0.1:18443\"\ndata_dir = \"/d\"\nenclave = \"unix:///e\"\n\
             \n[payments]\nprovider_url = \"http://127.0.0.1:18790\"\n\
             \n[artifacts]\nendpoint = \"http://127.0.0.1:19300\"\n",
        );
        assert_eq!(r.listen, Some("127.0.0.1:18443".parse().unwrap()));
        assert_eq!(r.payments_url.as_deref(), Some("http://127.0.0.1:18790"));
        assert_eq!(
            r.s3_url.as_deref().and_then(http_addr),
            Some("127.0.0.1:19300".parse().unwrap())
        );
        let empty = Recorded::parse("not toml [");
        assert!(empty.listen.is_none() && empty.payments_url.is_none());
        assert_eq!(http_addr("https://127.0.0.1:1"), None);
        assert_eq!(
            reachable("0.0.0.0:8443".parse().unwrap()),
            "127.0.0.1:8443".parse().unwrap()
        );
    }

    #[test]
    fn the_log_tail_is_the_last_lines() {
        let path = std::env::temp_dir().join(format!("enclosure-demo-tail-{}", std::process::id()));
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&path, 2), "    b\n    c");
        std::fs::remove_file(&path).unwrap();
    }
}
