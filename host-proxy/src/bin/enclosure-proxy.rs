//! `enclosure-proxy`: forwards frames between a host socket and the enclave.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use enclosure_host_proxy::{ProxyConfig, run};
use enclosure_protocol::{Address, Listener};

#[derive(Debug, Parser)]
#[command(
    name = "enclosure-proxy",
    about = "Byte-transparent frame forwarder to the Enclosure enclave"
)]
struct Args {
    /// Where host clients connect: unix:///path (or tcp://127.0.0.1:PORT).
    #[arg(long, env = "ENCLOSURE_PROXY_LISTEN")]
    listen: Address,
    /// The enclave: vsock://CID:PORT in production, unix:///path in development.
    #[arg(long, env = "ENCLOSURE_ENCLAVE_ADDR")]
    enclave: Address,
    /// Largest frame forwarded, in bytes.
    #[arg(long, default_value_t = enclosure_protocol::DEFAULT_FRAME_CAP)]
    frame_cap: u32,
    /// Client connections served at once.
    #[arg(long, default_value_t = 128)]
    max_connections: usize,
    /// Seconds a client connection may stay idle.
    #[arg(long, default_value_t = 60)]
    idle_timeout_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    enclosure_protocol::process::init_logging();
    let args = Args::parse();
    if let Address::Tcp(sa) = &args.listen
        && !sa.ip().is_loopback()
    {
        anyhow::bail!("the proxy listens on loopback only; {sa} is not loopback");
    }
    let listener = Listener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let mut config = ProxyConfig::new(args.enclave.clone());
    config.frame_cap = args.frame_cap;
    config.max_connections = args.max_connections;
    config.idle_timeout = Duration::from_secs(args.idle_timeout_secs);
    tracing::info!(listen = %args.listen, enclave = %args.enclave, "proxy ready");
    tokio::select! {
        r = run(listener, config) => r,
        _ = enclosure_protocol::process::shutdown_signal() => Ok(()),
    }
}
