//! The sandbox's webhook delivery: at least once, signed, retried with exponential backoff
//! until the receiver answers 2xx, and misbehaving on request ([`DeliveryMode`]) the ways real
//! providers do: duplicates, delays, reordering and clock skew.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use enclosure_policy::webhook::{self, SIGNATURE_HEADER};
use serde::{Deserialize, Serialize};

use super::ledger::Delivery;
use super::{DELIVERY_TIMEOUT, SandboxConfig, Shared};
use crate::payments::Secret;

/// Held deliveries are released after this long even if the reorder batch never fills.
pub const REORDER_MAX_HOLD: Duration = Duration::from_secs(5);
/// How often the worker looks at the queue when nothing wakes it.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// How deliveries misbehave. The default delivers each event once, immediately, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryMode {
    /// Deliver every event twice (two independent deliveries, each retried until 2xx).
    pub duplicate: bool,
    /// Hold every delivery this long before its first attempt.
    pub delay_ms: u64,
    /// When 2 or more: hold events until this many have accumulated (or the hold below
    /// passed, or a flush), then deliver them newest first.
    pub reorder_batch: u32,
    /// The longest a reorder batch is held, in milliseconds (0: [`REORDER_MAX_HOLD`]).
    pub reorder_max_hold_ms: u64,
    /// Sign with a clock this many seconds off (negative: in the past), to test tolerance.
    pub sign_offset_secs: i64,
}

/// Exponential backoff between attempts of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failure; doubled after each further failure.
    pub initial: Duration,
    /// The longest wait between attempts.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait after `failures` failed attempts (1 or more).
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Unix time in seconds.
pub fn now_secs() -> u64 {
    now_ms() / 1000
}

/// Sends queued deliveries one at a time, in queue order.
pub(crate) struct Worker {
    shared: Arc<Shared>,
    http: reqwest::Client,
    url: Option<String>,
    secret: Secret,
    retry: RetryPolicy,
}

/// What one attempt came to.
enum Outcome {
    Delivered(u16),
    Failed(Option<u16>),
}

impl Worker {
    pub(crate) fn new(config: &SandboxConfig, shared: Arc<Shared>) -> anyhow::Result<Worker> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &config.webhook_ca_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|_| anyhow::anyhow!("the webhook CA is not a PEM certificate"))?;
            builder = builder.tls_certs_only([cert]);
        }
        Ok(Worker {
            shared,
            http: builder.build()?,
            url: config.webhook_url.clone(),
            secret: config.webhook_secret.clone(),
            retry: config.retry,
        })
    }

    pub(crate) async fn run(self) {
        let Some(url) = self.url.clone() else {
            tracing::warn!("no webhook URL: events are recorded, not delivered");
            return;
        };
        loop {
            let (due, wait) = self.take_due();
            for d in &due {
                self.attempt(&url, d).await;
            }
            if due.is_empty() {
                // Woken early by a new event or a flush.
                let _ = tokio::time::timeout(wait, self.shared.notify.notified()).await;
            }
        }
    }

    /// The deliveries due now (in queue order) and how long to sleep if there are none.
    fn take_due(&self) -> (Vec<(Delivery, String, i64)>, Duration) {
        let Ok(mut ledger) = self.shared.lock() else {
            return (Vec::new(), IDLE_POLL);
        };
        let now = now_ms();
        let max_hold = match ledger.mode.as_ref().map_or(0, |m| m.reorder_max_hold_ms) {
            0 => REORDER_MAX_HOLD.as_millis() as u64,
            ms => ms,
        };
        if ledger
            .held_since_ms
            .is_some_and(|since| now.saturating_sub(since) >= max_hold)
        {
            ledger.release_held(now);
        }
        let offset = ledger.mode.as_ref().map_or(0, |m| m.sign_offset_secs);
        let mut due = Vec::new();
        let mut next = now.saturating_add(IDLE_POLL.as_millis() as u64);
        for d in &ledger.queue {
            if d.due_ms <= now {
                let body = ledger
                    .events
                    .iter()
                    .find(|e| e.id == d.event_id)
                    .map(|e| e.body.clone())
                    .unwrap_or_default();
                due.push((d.clone(), body, offset));
            } else {
                next = next.min(d.due_ms);
            }
        }
        if ledger.held_since_ms.is_some() {
            next = next.min(now.saturating_add(100));
        }
        (due, Duration::from_millis(next.saturating_sub(now).max(10)))
    }

    async fn attempt(&self, url: &str, (d, body, offset): &(Delivery, String, i64)) {
        let t = now_secs().saturating_add_signed(*offset);
        let signature = webhook::sign(self.secret.expose(), t, body.as_bytes());
        let result = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body.clone())
            .send()
            .await;
        let outcome = match result {
            Ok(resp) if resp.status().is_success() => Outcome::Delivered(resp.status().as_u16()),
            Ok(resp) => Outcome::Failed(Some(resp.status().as_u16())),
            Err(e) => {
                tracing::debug!(error = %e, "webhook delivery failed to connect");
                Outcome::Failed(None)
            }
        };
        self.record(d, outcome);
    }

    fn record(&self, d: &Delivery, outcome: Outcome) {
        let Ok(mut ledger) = self.shared.lock() else {
            return;
        };
        let Some(pos) = ledger.queue.iter().position(|q| q.id == d.id) else {
            return;
        };
        match outcome {
            Outcome::Delivered(status) => {
                ledger.queue.remove(pos);
                if let Some(e) = ledger.event_mut(&d.event_id) {
                    e.attempts += 1;
                    e.delivered += 1;
                    e.last_status = Some(status);
                }
                tracing::info!(event = %d.event_id, status, attempt = d.attempt + 1, "webhook delivered");
            }
            Outcome::Failed(status) => {
                let failures = d.attempt + 1;
                let wait = self.retry.backoff(failures);
                let q = &mut ledger.queue[pos];
                q.attempt = failures;
                q.due_ms = now_ms().saturating_add(wait.as_millis() as u64);
                if let Some(e) = ledger.event_mut(&d.event_id) {
                    e.attempts += 1;
                    e.last_status = status;
                }
                tracing::warn!(
                    event = %d.event_id,
                    status = status.unwrap_or(0),
                    attempt = failures,
                    retry_in_ms = wait.as_millis() as u64,
                    "webhook delivery failed; will retry"
                );
            }
        }
        if let Err(e) = self.shared.persist(&ledger) {
            tracing::error!(error = ?e, "could not persist a delivery result");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let r = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let waits: Vec<u128> = (1..=6).map(|n| r.backoff(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(r.backoff(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn delivery_mode_refuses_unknown_fields() {
        assert!(serde_json::from_str::<DeliveryMode>(r#"{"duplicates":true}"#).is_err());
        let m: DeliveryMode = serde_json::from_str(r#"{"duplicate":true}"#).unwrap();
        assert!(m.duplicate && m.delay_ms == 0);
    }
}
