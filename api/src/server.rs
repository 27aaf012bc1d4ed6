//! Wiring: state, TLS and the HTTPS listener.

use std::sync::Arc;

use anyhow::Context;

use crate::config::{ApiConfig, Mode};
use crate::enclave::EnclavePool;
use crate::tls;

/// Shared state of the request handlers.
#[derive(Debug)]
pub struct AppState {
    /// The configuration.
    pub config: ApiConfig,
    /// Connections to the enclave.
    pub enclave: EnclavePool,
}

/// Serves the api over HTTPS until `shutdown` resolves.
pub async fn run(
    config: ApiConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let (cert, key) = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            // validate() refuses this in production.
            debug_assert_eq!(config.mode, Mode::Dev);
            let (c, k) = tls::ensure_dev_certificate(&config.data_dir)
                .context("writing the dev TLS certificate")?;
            tracing::warn!(cert = %c.display(), "DEV MODE: serving a self-signed TLS certificate");
            (c, k)
        }
    };
    // One process-wide crypto provider; installing twice is harmless.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let tls_config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cert, &key)
        .await
        .with_context(|| format!("loading TLS certificate {}", cert.display()))?;
    let state = Arc::new(AppState {
        enclave: EnclavePool::new(config.enclave_address()?, 64),
        config: config.clone(),
    });
    let app = crate::routes::router(state);
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        h.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    tracing::info!(listen = %config.listen, "api ready: https://{}", config.listen);
    axum_server::bind_rustls(config.listen, tls_config)
        .handle(handle)
        .serve(app.into_make_service())
        .await
        .context("serving HTTPS")?;
    Ok(())
}
