//! `enclosure-s3`: the embedded S3-compatible artifact store of the local stack.
//!
//! Serves one bucket from `{data-dir}/s3/{bucket}` on a loopback address and accepts only SigV4
//! presigned object URLs signed with the configured key pair (see `api::artifacts::server`).
//! The secret is read from a file or the environment, never from the command line, where any
//! local user could read it in the process list.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use enclosure_api::artifacts::server::{LocalStore, LocalStoreConfig};
use enclosure_api::artifacts::{self, read_secret_file};
use zeroize::Zeroizing;

#[derive(Debug, Parser)]
#[command(
    name = "enclosure-s3",
    about = "Local S3-compatible artifact store (SigV4 presigned URLs only)"
)]
struct Args {
    /// Data directory; objects live under DATA_DIR/s3/BUCKET.
    #[arg(long, env = "ENCLOSURE_DATA_DIR")]
    data_dir: PathBuf,
    /// Loopback address to listen on (with port 0 the chosen endpoint is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:9300")]
    listen: SocketAddr,
    /// The bucket served.
    #[arg(long, default_value = artifacts::DEFAULT_BUCKET)]
    bucket: String,
    /// The region signatures are scoped to.
    #[arg(long, default_value = artifacts::DEFAULT_REGION)]
    region: String,
    /// The access key id signatures must name.
    #[arg(long, env = "ENCLOSURE_S3_ACCESS_KEY", default_value = artifacts::DEV_ACCESS_KEY)]
    access_key: String,
    /// File holding the secret key (trailing newline ignored); otherwise ENCLOSURE_S3_SECRET_KEY.
    #[arg(long)]
    secret_key_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let args = Args::parse();
    let secret_key = read_secret(args.secret_key_file.as_deref())?;
    let store = LocalStore::start(LocalStoreConfig {
        data_dir: args.data_dir,
        listen: args.listen,
        bucket: args.bucket.clone(),
        region: args.region,
        access_key: args.access_key,
        secret_key,
    })
    .await?;
    tracing::info!(bucket = %args.bucket, "artifact store ready: {}", store.endpoint_url());
    // One plain line on stdout, the endpoint, so a supervisor that passed port 0 learns it.
    println!("{}", store.endpoint_url());
    enclosure_protocol::process::shutdown_signal().await;
    store.shutdown().await;
    Ok(())
}

/// Like `enclosure_protocol::process::init_logging` (stderr, `RUST_LOG`, default `info`), but
/// s3s and s3s-fs never log below WARN whatever `RUST_LOG` says: at DEBUG s3s logs requests
/// with their query strings and, on a mismatch, the signature it computed, which is a valid
/// signature for the request a forger just tried.
fn init_logging() {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let quiet_s3s = tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.target().starts_with("s3s") && *meta.level() > tracing::Level::WARN)
    });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(env)
                .with_filter(quiet_s3s),
        )
        .init();
}

fn read_secret(file: Option<&std::path::Path>) -> anyhow::Result<Zeroizing<String>> {
    if let Some(path) = file {
        return Ok(read_secret_file(path)?);
    }
    let mut secret = Zeroizing::new(
        std::env::var("ENCLOSURE_S3_SECRET_KEY")
            .context("no secret key: pass --secret-key-file or set ENCLOSURE_S3_SECRET_KEY")?,
    );
    while secret.ends_with(['\n', '\r']) {
        secret.pop();
    }
    Ok(secret)
}
