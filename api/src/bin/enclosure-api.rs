//! `enclosure-api`: the host API process.

use std::path::PathBuf;

use clap::Parser;
use enclosure_api::ApiConfig;

#[derive(Debug, Parser)]
#[command(name = "enclosure-api", about = "The Enclosure host API (HTTPS)")]
struct Args {
    /// Configuration file (TOML); ENCLOSURE_* environment variables override it.
    #[arg(long, env = "ENCLOSURE_CONFIG")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = ApiConfig::load(&args.config)?;
    enclosure_api::server::run(config, shutdown_signal()).await
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
