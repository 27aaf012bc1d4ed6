//! Wiring: state, TLS, the HTTPS listener and the background restore supervisor.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::http::HeaderMap;

use crate::auth::{Authenticator, BearerToken};
use crate::config::{ApiConfig, Mode};
use crate::enclave::EnclavePool;
use crate::restore::Readiness;
use crate::store::Store;
use crate::tickets::{TICKET_KEY_ENV, TicketIssuer, load_or_create_ticket_key};
use crate::tls;

/// Shared state of the request handlers.
#[derive(Debug)]
pub struct AppState {
    /// The configuration.
    pub config: ApiConfig,
    /// Connections to the enclave.
    pub enclave: EnclavePool,
    /// Records: identities, keys, tickets, audit, idempotency, limits, backups.
    pub store: Store,
    /// Bearer-token verification.
    pub auth: Arc<Authenticator>,
    /// The ticket key and issuer.
    pub tickets: TicketIssuer,
    /// Whether key operations may run (the enclave is provisioned and restored).
    pub readiness: Readiness,
    /// The payment provider and webhook verifier, when configured.
    pub payments: Option<crate::payments::config::Payments>,
    /// The artifact presigner, when configured.
    pub artifacts: Option<crate::artifacts::ArtifactStore>,
}

/// The router's state: a cheap handle on the shared [`AppState`].
#[derive(Debug, Clone)]
pub struct Shared(pub Arc<AppState>);

impl std::ops::Deref for Shared {
    type Target = AppState;

    fn deref(&self) -> &AppState {
        &self.0
    }
}

impl FromRef<Shared> for Arc<Authenticator> {
    fn from_ref(state: &Shared) -> Self {
        state.auth.clone()
    }
}

impl AppState {
    /// Builds the state: storage (migrated), authenticator, ticket key, enclave pool.
    pub async fn build(config: ApiConfig) -> anyhow::Result<Arc<Self>> {
        config.validate()?;
        let store = Store::connect(&config.database_config())
            .await
            .context("opening the database")?;
        let auth = Authenticator::new(&config.auth_config()?).context("loading JWT keys")?;
        let key = load_or_create_ticket_key(&config.data_dir, std::env::var(TICKET_KEY_ENV).ok())?;
        let payments = match &config.payments {
            Some(p) => {
                if config.mode == Mode::Dev {
                    tracing::warn!(provider = %p.provider_url, "DEV MODE: payments go to the sandbox provider");
                }
                Some(p.load().context("loading the payment provider settings")?)
            }
            None => None,
        };
        let artifacts = match &config.artifacts {
            Some(a) => Some(a.open().context("opening the artifact store settings")?),
            None => None,
        };
        Ok(Arc::new(AppState {
            enclave: EnclavePool::new(config.enclave_address()?, 64),
            tickets: TicketIssuer::new(key, config.ticket_ttl_secs),
            store,
            auth: Arc::new(auth),
            readiness: Readiness::default(),
            payments,
            artifacts,
            config,
        }))
    }

    /// Wall-clock milliseconds.
    pub fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    /// The largest body accepted.
    pub fn body_limit(&self) -> usize {
        self.config.body_limit_bytes
    }

    /// Whether idempotency keys are required on this path: everything under /v1 except the
    /// provider's webhook, which carries its own event id (deduplicated permanently).
    pub fn idempotency_applies(&self, path: &str) -> bool {
        path.starts_with("/v1/") && path != crate::routes::payments::WEBHOOK_PATH
    }

    /// The escrow services over this state's store, at the current time.
    pub fn escrow(&self) -> crate::escrow::Escrow<'_> {
        crate::escrow::Escrow {
            store: &self.store,
            now_ms: self.now_ms(),
        }
    }

    /// The verified caller of a request's bearer token, if it has a valid one.
    pub fn caller_of(&self, headers: &HeaderMap) -> Option<crate::auth::Caller> {
        let token = BearerToken::from_headers(headers).ok()?;
        self.auth.verify(token.expose(), SystemTime::now()).ok()
    }
}

/// The full application router: routes, OpenAPI, idempotency, body limit, tracing.
pub fn app(state: Arc<AppState>) -> axum::Router {
    let state = Shared(state);
    let (router, _spec) = crate::routes::router_and_spec(state.clone());
    router
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::idempotency::enforce,
        ))
        .layer(DefaultBodyLimit::max(state.body_limit()))
        .layer(axum::middleware::from_fn(crate::observe::observe))
}

/// Serves the api over HTTPS until `shutdown` resolves.
pub async fn run(
    config: ApiConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    crate::faults::arm(config.mode == Mode::Dev);
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
    if let Some(addr) = config.metrics_listen {
        crate::observe::install_metrics(addr)?;
        tracing::info!(%addr, "metrics at http://{addr}/metrics");
    }
    let listen = config.listen;
    let state = AppState::build(config).await?;
    tracing::info!(database = state.store.backend_name(), "storage ready");
    tokio::spawn(crate::restore::supervise(state.clone()));
    tokio::spawn(crate::scheduler::run(state.clone()));
    let app = app(state);
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        h.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    tracing::info!(%listen, "api ready: https://{listen}");
    axum_server::bind_rustls(listen, tls_config)
        .handle(handle)
        .serve(app.into_make_service())
        .await
        .context("serving HTTPS")?;
    Ok(())
}
