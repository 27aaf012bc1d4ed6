//! Shared pieces of the payments tests: an in-process sandbox, a webhook receiver that records
//! what arrives, and a polling helper.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use enclosure_api::payments::http::{DEFAULT_TIMEOUT, HttpPaymentProvider, HttpProviderConfig};
use enclosure_api::payments::sandbox::{
    self, DeliveryMode, EventRecord, RetryPolicy, RunningSandbox, SandboxConfig,
};
use enclosure_api::payments::{ProviderPayment, Secret};

pub const API_KEY: &str = "sk_test_payments_sandbox";
pub const WEBHOOK_SECRET: &str = "whsec_test_payments_sandbox";

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub signature: Option<String>,
    pub body: Vec<u8>,
}

/// A webhook receiver that answers 500 to the first `fail_first` deliveries, then 200.
pub struct Receiver {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct ReceiverState {
    received: Arc<Mutex<Vec<Received>>>,
    fail_first: Arc<AtomicU32>,
}

async fn receive(State(s): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    s.received.lock().unwrap().push(Received {
        signature: headers
            .get("stripe-signature")
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        body: body.to_vec(),
    });
    let left = s.fail_first.load(Ordering::SeqCst);
    if left > 0 {
        s.fail_first.store(left - 1, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::OK
}

impl Receiver {
    pub async fn start(fail_first: u32) -> Receiver {
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = ReceiverState {
            received: received.clone(),
            fail_first: Arc::new(AtomicU32::new(fail_first)),
        };
        let app = axum::Router::new()
            .route("/webhooks/payments", axum::routing::post(receive))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            received,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/webhooks/payments", self.addr)
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` deliveries arrived, and returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        wait_until(|| self.all().len() >= n).await;
        self.all()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `f` every 20 ms for up to 15 s; panics if it never holds.
pub async fn wait_until(mut f: impl FnMut() -> bool) {
    for _ in 0..750 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not reached in 15 s");
}

pub fn config(webhook_url: Option<String>, mode: DeliveryMode) -> SandboxConfig {
    SandboxConfig {
        api_key: Secret::new(API_KEY),
        webhook_url,
        webhook_secret: Secret::new(WEBHOOK_SECRET),
        webhook_ca_pem: None,
        data_dir: None,
        delivery: mode,
        retry: RetryPolicy {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
        },
    }
}

pub async fn start_sandbox(config: SandboxConfig) -> RunningSandbox {
    sandbox::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

pub fn provider(base_url: &str, api_key: &str) -> HttpPaymentProvider {
    HttpPaymentProvider::new(HttpProviderConfig {
        base_url: base_url.into(),
        api_key: Secret::new(api_key),
        ca_pem: None,
        timeout: DEFAULT_TIMEOUT,
    })
    .unwrap()
}

/// Raw calls for the sandbox-only routes (confirm, events, delivery mode).
pub struct Admin {
    http: reqwest::Client,
    base: String,
}

impl Admin {
    pub fn new(base: &str) -> Admin {
        Admin {
            http: reqwest::Client::new(),
            base: base.into(),
        }
    }

    pub async fn confirm(&self, payment_id: &str, key: &str, outcome: &str) -> ProviderPayment {
        let resp = self
            .http
            .post(format!("{}/v1/payments/{payment_id}/confirm", self.base))
            .bearer_auth(API_KEY)
            .header("Idempotency-Key", key)
            .json(&serde_json::json!({ "outcome": outcome }))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "confirm: {}", resp.status());
        resp.json().await.unwrap()
    }

    pub async fn events(&self) -> Vec<EventRecord> {
        self.http
            .get(format!("{}/v1/events", self.base))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls the event list until `f` holds (for up to 15 s).
    pub async fn events_when(&self, f: impl Fn(&[EventRecord]) -> bool) -> Vec<EventRecord> {
        for _ in 0..750 {
            let events = self.events().await;
            if !events.is_empty() && f(&events) {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "events never reached the expected state: {:?}",
            self.events().await
        );
    }

    pub async fn set_mode(&self, mode: &DeliveryMode) {
        let resp = self
            .http
            .put(format!("{}/v1/sandbox/delivery", self.base))
            .bearer_auth(API_KEY)
            .json(mode)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }
}
