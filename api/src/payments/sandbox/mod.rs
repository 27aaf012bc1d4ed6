//! The sandbox payment provider: a separate process (`enclosure-payments-sandbox`) with its
//! own HTTP API, standing in for a real provider in dev and tests.
//!
//! It keeps a ledger of payments, transfers and refunds; every mutating call is idempotent by
//! `Idempotency-Key` (the same key and body replay the first answer, the same key with another
//! body is refused with 422), and every state change emits an event that the delivery worker
//! ([`delivery`]) posts to the configured webhook URL, signed with
//! [`enclosure_policy::webhook::sign`], at least once. The worker can be told to duplicate,
//! delay or reorder deliveries, or to sign with a skewed clock, so the receiver's defences can
//! be exercised.
//!
//! Routes (bearer API key on all of them):
//! - `POST /v1/payments` `{amount_minor, currency, reference}` → payment (pending)
//! - `GET /v1/payments/{id}` → payment
//! - `POST /v1/payments/{id}/confirm` `{outcome: "succeed"|"fail"}` → payment, and a
//!   `payment.succeeded` or `payment.failed` event (the client paying, in a real provider)
//! - `POST /v1/transfers` `{payment_id, amount_minor, destination}` → transfer, `transfer.paid`
//! - `POST /v1/refunds` `{payment_id}` → refund, `refund.succeeded`
//! - `GET /v1/events` → every event with its delivery attempts
//! - `GET`/`PUT /v1/sandbox/delivery` → the [`DeliveryMode`]; `POST /v1/sandbox/delivery/flush`
//!   releases events held for reordering.

pub mod delivery;
mod ledger;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

pub use delivery::{DeliveryMode, RetryPolicy};
pub use ledger::EventRecord;
use ledger::Ledger;

use super::{CreatePayment, Refund, Secret, Transfer};

/// The sandbox's settings.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The bearer key callers must present.
    pub api_key: Secret,
    /// Where events are posted (the api's webhook route); `None` records events undelivered.
    pub webhook_url: Option<String>,
    /// The secret webhooks are signed with.
    pub webhook_secret: Secret,
    /// A PEM CA certificate to trust for an https webhook URL (the api's dev certificate).
    pub webhook_ca_pem: Option<Vec<u8>>,
    /// Where the ledger is kept as JSON, so a restart keeps payments; `None` keeps it in memory.
    pub data_dir: Option<PathBuf>,
    /// How deliveries misbehave, initially.
    pub delivery: DeliveryMode,
    /// Retry backoff for failed deliveries.
    pub retry: RetryPolicy,
}

/// A refusal, answered as `{"code", "message"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl SandboxError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        SandboxError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such object")
    }

    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for SandboxError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"code": self.code, "message": self.message});
        (self.status, axum::Json(body)).into_response()
    }
}

/// Shared by the routes and the delivery worker.
pub(crate) struct Shared {
    pub(crate) ledger: Mutex<Ledger>,
    pub(crate) notify: Notify,
    api_key_digest: [u8; 32],
    pub(crate) file: Option<PathBuf>,
}

impl Shared {
    /// Locks the ledger; a poisoned lock means a handler panicked mid-change, so refuse.
    pub(crate) fn lock(&self) -> Result<std::sync::MutexGuard<'_, Ledger>, SandboxError> {
        self.ledger
            .lock()
            .map_err(|_| SandboxError::internal("ledger lock poisoned"))
    }

    /// Writes the ledger to its file, if it has one.
    pub(crate) fn persist(&self, ledger: &Ledger) -> Result<(), SandboxError> {
        match &self.file {
            Some(path) => ledger.save(path).map_err(|e| {
                tracing::error!(error = %e, "persisting the sandbox ledger");
                SandboxError::internal("persisting the ledger failed")
            }),
            None => Ok(()),
        }
    }
}

/// A running sandbox: its address, and its tasks (stopped on drop).
pub struct RunningSandbox {
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
    worker: tokio::task::JoinHandle<()>,
}

impl RunningSandbox {
    /// The address the HTTP API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL of the HTTP API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until the server stops (it only stops on error or when aborted).
    pub async fn wait(mut self) {
        let _ = (&mut self.server).await;
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        self.server.abort();
        self.worker.abort();
    }
}

/// Starts the sandbox: loads the ledger, binds `listen`, serves the API and runs the delivery
/// worker on the current tokio runtime.
pub async fn start(config: SandboxConfig, listen: SocketAddr) -> anyhow::Result<RunningSandbox> {
    let file = match &config.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            Some(dir.join("payments-sandbox.json"))
        }
        None => None,
    };
    let mut ledger = match &file {
        Some(path) => Ledger::load(path)?,
        None => Ledger::default(),
    };
    // The configured mode wins over a persisted one: flags say how this run should behave.
    ledger.mode = Some(config.delivery.clone());
    tracing::info!(
        payments = ledger.payments.len(),
        pending_deliveries = ledger.queue.len(),
        webhook_url = config.webhook_url.as_deref().unwrap_or("(none)"),
        "payments sandbox ledger loaded"
    );
    let shared = Arc::new(Shared {
        ledger: Mutex::new(ledger),
        notify: Notify::new(),
        api_key_digest: Sha256::digest(config.api_key.expose()).into(),
        file,
    });
    let worker = delivery::Worker::new(&config, shared.clone())?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = router(shared);
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "payments sandbox server stopped");
        }
    });
    let worker = tokio::spawn(worker.run());
    tracing::info!(%addr, "payments sandbox listening");
    Ok(RunningSandbox {
        addr,
        server,
        worker,
    })
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/payments", post(create_payment))
        .route("/v1/payments/{id}", get(get_payment))
        .route("/v1/payments/{id}/confirm", post(confirm_payment))
        .route("/v1/transfers", post(create_transfer))
        .route("/v1/refunds", post(create_refund))
        .route("/v1/events", get(list_events))
        .route("/v1/sandbox/delivery", get(get_mode).put(put_mode))
        .route("/v1/sandbox/delivery/flush", post(flush))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(shared)
}

/// Checks the bearer key by comparing SHA-256 digests, so the comparison's timing depends on
/// neither the key's length nor how much of it a guess got right.
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), SandboxError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let diff = digest
        .iter()
        .zip(shared.api_key_digest.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if presented.is_empty() || diff != 0 {
        return Err(SandboxError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer API key is required",
        ));
    }
    Ok(())
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, SandboxError> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("");
    if key.is_empty() || key.len() > 255 {
        return Err(SandboxError::bad_request(
            "an Idempotency-Key header (1-255 characters) is required",
        ));
    }
    Ok(key.to_string())
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, SandboxError> {
    serde_json::from_slice(body).map_err(|e| SandboxError::bad_request(e.to_string()))
}

/// Runs `op` at most once per idempotency key, under the ledger lock, persisting its effect
/// and its answer together; the fingerprint is the route and the parsed request.
fn idempotent<T: Serialize>(
    shared: &Shared,
    key: &str,
    route: &str,
    request: &impl Serialize,
    op: impl FnOnce(&mut Ledger) -> Result<T, SandboxError>,
) -> Result<Response, SandboxError> {
    let canonical =
        serde_json::to_string(request).map_err(|e| SandboxError::internal(e.to_string()))?;
    let fingerprint = hex::encode(Sha256::digest(format!("{route}\n{canonical}")));
    let mut ledger = shared.lock()?;
    if let Some(record) = ledger.idempotency.get(key) {
        if record.fingerprint != fingerprint {
            return Err(SandboxError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
            ));
        }
        tracing::debug!(route, "idempotent replay");
        return Ok(replayed(record.response.clone()));
    }
    // Refusals are not recorded: the same key may succeed once the state allows it (a
    // transfer retried after the payment finally succeeded).
    let answer = op(&mut ledger)?;
    let response =
        serde_json::to_value(&answer).map_err(|e| SandboxError::internal(e.to_string()))?;
    ledger.remember(key.to_string(), fingerprint, response.clone());
    shared.persist(&ledger)?;
    drop(ledger);
    shared.notify.notify_one();
    Ok(axum::Json(response).into_response())
}

fn replayed(body: serde_json::Value) -> Response {
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut().insert(
        "idempotent-replayed",
        header::HeaderValue::from_static("true"),
    );
    resp
}

async fn create_payment(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SandboxError> {
    authorize(&shared, &headers)?;
    let key = idempotency_key(&headers)?;
    let mut req: CreatePayment = parse(&body)?;
    req.currency = req.currency.to_ascii_lowercase();
    if req.amount_minor <= 0 {
        return Err(SandboxError::bad_request("amount_minor must be positive"));
    }
    if req.currency.len() != 3 || !req.currency.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(SandboxError::bad_request("currency must be three letters"));
    }
    if req.reference.is_empty() || req.reference.len() > 128 {
        return Err(SandboxError::bad_request(
            "reference must be 1-128 characters",
        ));
    }
    idempotent(&shared, &key, "create_payment", &req, |l| {
        Ok(l.create_payment(&req))
    })
}

async fn get_payment(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, SandboxError> {
    authorize(&shared, &headers)?;
    let ledger = shared.lock()?;
    let payment = ledger
        .payments
        .get(&id)
        .ok_or_else(SandboxError::not_found)?;
    Ok(axum::Json(payment).into_response())
}

/// How the (simulated) client's payment ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfirmOutcome {
    /// The money arrives.
    #[default]
    Succeed,
    /// The card is declined.
    Fail,
}

/// The body of a confirm call.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Confirm {
    /// How the payment ends.
    #[serde(default)]
    pub outcome: ConfirmOutcome,
}

async fn confirm_payment(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SandboxError> {
    authorize(&shared, &headers)?;
    let key = idempotency_key(&headers)?;
    let req: Confirm = if body.is_empty() {
        Confirm::default()
    } else {
        parse(&body)?
    };
    let route = format!("confirm:{id}");
    idempotent(&shared, &key, &route, &req, |l| l.confirm(&id, req.outcome))
}

async fn create_transfer(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SandboxError> {
    authorize(&shared, &headers)?;
    let key = idempotency_key(&headers)?;
    let req: Transfer = parse(&body)?;
    if req.destination.is_empty() || req.destination.len() > 128 {
        return Err(SandboxError::bad_request(
            "destination must be 1-128 characters",
        ));
    }
    idempotent(&shared, &key, "transfer", &req, |l| l.transfer(&req))
}

async fn create_refund(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SandboxError> {
    authorize(&shared, &headers)?;
    let key = idempotency_key(&headers)?;
    let req: Refund = parse(&body)?;
    idempotent(&shared, &key, "refund", &req, |l| l.refund(&req.payment_id))
}

async fn list_events(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, SandboxError> {
    authorize(&shared, &headers)?;
    let ledger = shared.lock()?;
    Ok(axum::Json(&ledger.events).into_response())
}

async fn get_mode(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, SandboxError> {
    authorize(&shared, &headers)?;
    let ledger = shared.lock()?;
    Ok(axum::Json(ledger.mode.clone().unwrap_or_default()).into_response())
}

async fn put_mode(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SandboxError> {
    authorize(&shared, &headers)?;
    let mode: DeliveryMode = parse(&body)?;
    let mut ledger = shared.lock()?;
    tracing::info!(?mode, "delivery mode changed");
    ledger.mode = Some(mode.clone());
    shared.persist(&ledger)?;
    Ok(axum::Json(mode).into_response())
}

async fn flush(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, SandboxError> {
    authorize(&shared, &headers)?;
    let mut ledger = shared.lock()?;
    let released = ledger.release_held(delivery::now_ms());
    shared.persist(&ledger)?;
    drop(ledger);
    shared.notify.notify_one();
    Ok(axum::Json(serde_json::json!({"released": released})).into_response())
}

/// How long the sandbox waits for a webhook receiver before counting the attempt failed.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
