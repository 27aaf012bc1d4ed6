//! `enclosure up`: the local stack, as three real processes on local sockets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use enclosure_api::ApiConfig;
use enclosure_protocol::Address;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Options of `enclosure up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Data directory: sockets, dev CA, TLS certificate, database.
    #[arg(long, default_value = "./enclosure-data")]
    data_dir: PathBuf,
    /// Where the api listens (HTTPS).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Where the payments sandbox listens (plain HTTP, loopback).
    #[arg(long, default_value = "127.0.0.1:8790")]
    payments_listen: SocketAddr,
    /// Where the local S3-compatible artifact store listens (plain HTTP, loopback).
    #[arg(long, default_value = "127.0.0.1:9300")]
    s3_listen: SocketAddr,
}

/// A started part of the stack.
struct Part {
    name: &'static str,
    child: Child,
}

/// Finds a sibling binary of this executable.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the enclosure binary")?;
    let path = exe.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found next to {}: build everything with `cargo build --workspace --bins`",
            name,
            exe.display()
        );
    }
    Ok(path)
}

fn spawn(name: &'static str, args: &[String], log_dir: &Path) -> anyhow::Result<Part> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir.join(format!("{name}.log")))?;
    let child = Command::new(sibling(name)?)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Part { name, child })
}

async fn wait_until(
    what: &str,
    part: &mut Part,
    log_dir: &Path,
    mut ready: impl AsyncFnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready().await {
        if let Some(status) = part.child.try_wait()? {
            bail!(
                "{} exited with {status} before {what} was ready; see {}",
                part.name,
                log_dir.join(format!("{}.log", part.name)).display()
            );
        }
        if Instant::now() > deadline {
            bail!("{what} not ready after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn stop(parts: &mut [Part]) {
    // Reverse order: api first, enclave last, so nothing talks to a part already gone.
    for part in parts.iter_mut().rev() {
        if let Some(pid) = part.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(5), part.child.wait())
            .await
            .is_err()
        {
            let _ = part.child.kill().await;
        }
        eprintln!("stopped {}", part.name);
    }
}

/// Runs the stack until Ctrl-C or until a part exits.
pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: UpArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let run_dir = data_dir.join("run");
    let log_dir = data_dir.join("logs");
    std::fs::create_dir_all(&run_dir)?;
    std::fs::create_dir_all(&log_dir)?;
    let enclave_sock = run_dir.join("enclave.sock");
    let proxy_sock = run_dir.join("proxy.sock");
    let enclave_addr = Address::Unix(enclave_sock.clone());
    let proxy_addr = Address::Unix(proxy_sock.clone());

    let mut parts = Vec::new();
    let result = async {
        let mut enclave = spawn(
            "enclosure-enclave",
            &[
                "--mode".into(),
                "dev".into(),
                "--listen".into(),
                enclave_addr.to_string(),
                "--data-dir".into(),
                data_dir.display().to_string(),
            ],
            &log_dir,
        )?;
        wait_until("the enclave socket", &mut enclave, &log_dir, async || {
            tokio::net::UnixStream::connect(&enclave_sock).await.is_ok()
        })
        .await?;
        parts.push(enclave);

        let mut proxy = spawn(
            "enclosure-proxy",
            &[
                "--listen".into(),
                proxy_addr.to_string(),
                "--enclave".into(),
                enclave_addr.to_string(),
            ],
            &log_dir,
        )?;
        wait_until("the proxy socket", &mut proxy, &log_dir, async || {
            tokio::net::UnixStream::connect(&proxy_sock).await.is_ok()
        })
        .await?;
        parts.push(proxy);

        let (cert, _) = enclosure_api::tls::ensure_dev_certificate(&data_dir)?;

        // The payments sandbox: a separate provider process that signs its webhooks.
        let (api_key, webhook_secret) =
            enclosure_api::payments::ensure_dev_secret_files(&data_dir)?;
        let mut payments = spawn(
            "enclosure-payments-sandbox",
            &[
                "--listen".into(),
                args.payments_listen.to_string(),
                "--data-dir".into(),
                data_dir.join("payments").display().to_string(),
                "--api-key-file".into(),
                api_key.display().to_string(),
                "--webhook-secret-file".into(),
                webhook_secret.display().to_string(),
                "--webhook-url".into(),
                format!("https://{}/v1/webhooks/payments", args.listen),
                "--webhook-ca".into(),
                cert.display().to_string(),
            ],
            &log_dir,
        )?;
        let pay_addr = args.payments_listen;
        wait_until(
            "the payments sandbox",
            &mut payments,
            &log_dir,
            async || tokio::net::TcpStream::connect(pay_addr).await.is_ok(),
        )
        .await?;
        parts.push(payments);

        // The artifact store: S3-compatible, checking SigV4 on every presigned URL.
        let s3_secret = enclosure_api::artifacts::ensure_dev_secret_file(&data_dir)?;
        let mut s3 = spawn(
            "enclosure-s3",
            &[
                "--data-dir".into(),
                data_dir.display().to_string(),
                "--listen".into(),
                args.s3_listen.to_string(),
                "--secret-key-file".into(),
                s3_secret.display().to_string(),
            ],
            &log_dir,
        )?;
        let s3_addr = args.s3_listen;
        wait_until("the artifact store", &mut s3, &log_dir, async || {
            tokio::net::TcpStream::connect(s3_addr).await.is_ok()
        })
        .await?;
        parts.push(s3);

        let mut config = ApiConfig::dev(&data_dir, &proxy_addr, args.listen);
        config.payments = Some(enclosure_api::payments::config::PaymentsConfig {
            provider_url: format!("http://{}", args.payments_listen),
            api_key_file: api_key,
            webhook_secret_files: vec![webhook_secret],
            webhook_tolerance_secs: 300,
            provider_ca_file: None,
            timeout_ms: 10_000,
        });
        config.artifacts = Some(enclosure_api::artifacts::ArtifactSettings::dev(
            &data_dir,
            &format!("http://{}", args.s3_listen),
        ));
        let config_path = data_dir.join("api.toml");
        std::fs::write(&config_path, api_toml(&config)?)?;
        let mut api = spawn(
            "enclosure-api",
            &["--config".into(), config_path.display().to_string()],
            &log_dir,
        )?;
        let listen = args.listen;
        wait_until("the api", &mut api, &log_dir, async || {
            tokio::net::TcpStream::connect(listen).await.is_ok()
        })
        .await?;
        parts.push(api);

        println!(
            "Enclosure local stack is up (dev mode: dev attester, dev sealer, self-signed TLS)"
        );
        println!("  enclave      {enclave_addr}");
        println!("  proxy        {proxy_addr}");
        println!("  api          https://{listen}");
        println!(
            "  payments     http://{} (sandbox provider)",
            args.payments_listen
        );
        println!("  artifacts    http://{} (local S3 store)", args.s3_listen);
        println!("  TLS cert     {}", cert.display());
        println!(
            "  dev root CA  {}",
            data_dir.join("dev-ca/root.pem").display()
        );
        println!("  logs         {}", log_dir.display());
        println!("Press Ctrl-C to stop.");
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        stop(&mut parts).await;
        return Err(e);
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let code = tokio::select! {
        _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
        _ = term.recv() => ExitCode::SUCCESS,
        name = first_exit(&mut parts) => {
            eprintln!("{name} exited unexpectedly; stopping the stack (logs in {})", log_dir.display());
            ExitCode::FAILURE
        }
    };
    stop(&mut parts).await;
    Ok(code)
}

async fn first_exit(parts: &mut [Part]) -> &'static str {
    loop {
        for p in parts.iter_mut() {
            if let Ok(Some(_)) = p.child.try_wait() {
                return p.name;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A TOML string literal, quoted and escaped.
fn q(s: impl std::fmt::Display) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn api_toml(c: &ApiConfig) -> anyhow::Result<String> {
    let mut text = format!(
        "# Written by `enclosure up`; edit the flags of `enclosure up` instead.\n\
         mode = \"dev\"\nlisten = {}\ndata_dir = {}\nenclave = {}\n",
        q(c.listen),
        q(c.data_dir.display()),
        q(&c.enclave)
    );
    if let Some(p) = &c.payments {
        let secrets: Vec<String> = p
            .webhook_secret_files
            .iter()
            .map(|f| q(f.display()))
            .collect();
        text.push_str(&format!(
            "\n[payments]\nprovider_url = {}\napi_key_file = {}\nwebhook_secret_files = [{}]\n",
            q(&p.provider_url),
            q(p.api_key_file.display()),
            secrets.join(", ")
        ));
    }
    if let Some(a) = &c.artifacts {
        text.push_str(&format!(
            "\n[artifacts]\nendpoint = {}\nbucket = {}\nregion = {}\naccess_key = {}\nsecret_key_file = {}\n",
            q(&a.endpoint),
            q(&a.bucket),
            q(&a.region),
            q(&a.access_key),
            q(a.secret_key_file.display())
        ));
    }
    Ok(text)
}
