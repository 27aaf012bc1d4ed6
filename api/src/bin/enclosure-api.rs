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
    enclosure_protocol::process::init_logging();
    let args = Args::parse();
    let config = ApiConfig::load(&args.config)?;
    enclosure_api::server::run(config, enclosure_protocol::process::shutdown_signal()).await
}
