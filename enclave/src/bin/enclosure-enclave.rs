//! `enclosure-enclave`: the enclave service process.
//!
//! Built without the `dev` feature (as in enclave images), only nitro mode exists: the dev
//! attester and the dev sealer are not compiled in, so `--mode dev` is refused by the parser.

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, ValueEnum};
#[cfg(feature = "dev")]
use enclosure_attestation::DevAttester;
use enclosure_attestation::{Attester, NsmAttester};
#[cfg(feature = "dev")]
use enclosure_enclave::DevSealer;
use enclosure_enclave::server::{ServeOptions, serve};
use enclosure_enclave::service::DEFAULT_REPLAY_CAPACITY;
use enclosure_enclave::{Enclave, EnclaveConfig, Sealer, SystemClock};
use enclosure_protocol::{Address, Listener};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Real Nitro hardware: NSM attester, no dev conveniences.
    Nitro,
    /// Local development: dev attester and dev sealer, announced loudly.
    #[cfg(feature = "dev")]
    Dev,
}

#[derive(Debug, Parser)]
#[command(name = "enclosure-enclave", about = "The Enclosure enclave service")]
struct Args {
    /// Where to listen: vsock://CID:PORT in an enclave, unix:///path in development.
    #[arg(long, env = "ENCLOSURE_ENCLAVE_LISTEN")]
    listen: Address,
    /// nitro (production) or dev.
    #[arg(long, value_enum, default_value = "nitro", env = "ENCLOSURE_MODE")]
    mode: Mode,
    /// Data directory for the dev attester's CA (dev mode only).
    #[cfg(feature = "dev")]
    #[arg(long, default_value = "./enclosure-data")]
    data_dir: std::path::PathBuf,
    /// Largest frame accepted, in bytes.
    #[arg(long, default_value_t = enclosure_protocol::DEFAULT_FRAME_CAP)]
    frame_cap: u32,
    /// Live ticket nonces remembered; when full, new tickets are refused.
    #[arg(long, default_value_t = DEFAULT_REPLAY_CAPACITY)]
    replay_capacity: usize,
    /// Connections served at once.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    enclosure_protocol::process::init_logging();
    let args = Args::parse();
    let (attester, sealer): (Arc<dyn Attester>, Option<Arc<dyn Sealer>>) = match args.mode {
        Mode::Nitro => {
            let nsm = NsmAttester::open().context("opening /dev/nsm")?;
            // No production sealer is built in yet: backups are refused rather than sealed
            // under a key anyone could know.
            tracing::warn!("nitro mode without a production sealer: backups are disabled");
            (Arc::new(nsm), None)
        }
        #[cfg(feature = "dev")]
        Mode::Dev => {
            let dev = DevAttester::load_or_create(&args.data_dir.join("dev-ca"))
                .context("loading the dev attester CA")?;
            tracing::warn!(
                "DEV MODE: attestation documents come from the software dev attester and are \
                 trusted only by policies that name its root; backups use the fixed dev sealing \
                 key, which anyone can open. Never use dev mode with real keys."
            );
            (Arc::new(dev), Some(Arc::new(DevSealer::new())))
        }
    };
    #[cfg(feature = "dev")]
    if matches!(args.listen, Address::Vsock { .. }) && args.mode == Mode::Dev {
        anyhow::bail!("dev mode listens on unix:// or tcp:// addresses only");
    }
    let enclave = Arc::new(Enclave::new(EnclaveConfig {
        attester,
        sealer,
        clock: Arc::new(SystemClock),
        replay_capacity: args.replay_capacity,
    })?);
    let listener = Listener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %args.listen, mode = ?args.mode, "enclave ready");
    let opts = ServeOptions {
        frame_cap: args.frame_cap,
        max_connections: args.max_connections,
    };
    tokio::select! {
        r = serve(listener, enclave, opts) => r,
        _ = enclosure_protocol::process::shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
    }
}
