//! `enclosure-payments-sandbox`: the sandbox payment provider, its own process.
//!
//! Secrets come from files (or environment variables), never from flags, so they do not show
//! in the process list.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use enclosure_api::payments::sandbox::{self, DeliveryMode, RetryPolicy, SandboxConfig};
use enclosure_api::payments::{Secret, read_secret_file};

#[derive(Debug, Parser)]
#[command(
    name = "enclosure-payments-sandbox",
    about = "The Enclosure sandbox payment provider (plain HTTP; keep it on loopback)"
)]
struct Args {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8790")]
    listen: SocketAddr,
    /// Directory for the ledger (payments-sandbox.json); in memory only when absent.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// File holding the bearer API key callers must present.
    #[arg(long, env = "ENCLOSURE_SANDBOX_API_KEY_FILE")]
    api_key_file: PathBuf,
    /// File holding the webhook signing secret.
    #[arg(long, env = "ENCLOSURE_SANDBOX_WEBHOOK_SECRET_FILE")]
    webhook_secret_file: PathBuf,
    /// Where webhooks are posted (the api's webhook route); events are only recorded if absent.
    #[arg(long, env = "ENCLOSURE_SANDBOX_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// PEM CA certificate to trust for an https webhook URL.
    #[arg(long)]
    webhook_ca: Option<PathBuf>,
    /// Deliver every event twice.
    #[arg(long)]
    duplicate: bool,
    /// Hold every delivery this many milliseconds before its first attempt.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Hold events until this many accumulate, then deliver them newest first (0: off).
    #[arg(long, default_value_t = 0)]
    reorder_batch: u32,
    /// The longest a reorder batch is held before it is delivered anyway, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    reorder_max_hold_ms: u64,
    /// Sign deliveries with a clock this many seconds off.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    sign_offset_secs: i64,
    /// First retry wait after a failed delivery, in milliseconds (doubles per failure).
    #[arg(long, default_value_t = 500)]
    retry_initial_ms: u64,
    /// Longest wait between delivery attempts, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    retry_max_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    enclosure_protocol::process::init_logging();
    let args = Args::parse();
    let api_key: Secret = read_secret_file(&args.api_key_file)
        .with_context(|| format!("reading the API key {}", args.api_key_file.display()))?;
    let webhook_secret = read_secret_file(&args.webhook_secret_file).with_context(|| {
        format!(
            "reading the webhook secret {}",
            args.webhook_secret_file.display()
        )
    })?;
    let webhook_ca_pem = match &args.webhook_ca {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let config = SandboxConfig {
        api_key,
        webhook_url: args.webhook_url,
        webhook_secret,
        webhook_ca_pem,
        data_dir: args.data_dir,
        delivery: DeliveryMode {
            duplicate: args.duplicate,
            delay_ms: args.delay_ms,
            reorder_batch: args.reorder_batch,
            reorder_max_hold_ms: args.reorder_max_hold_ms,
            sign_offset_secs: args.sign_offset_secs,
        },
        retry: RetryPolicy {
            initial: Duration::from_millis(args.retry_initial_ms.max(1)),
            max: Duration::from_millis(args.retry_max_ms.max(1)),
        },
    };
    let running = sandbox::start(config, args.listen).await?;
    eprintln!("payments sandbox listening on {}", running.url());
    tokio::select! {
        _ = enclosure_protocol::process::shutdown_signal() => tracing::info!("payments sandbox stopping"),
        _ = running.wait() => anyhow::bail!("the payments sandbox server stopped"),
    }
    Ok(())
}
