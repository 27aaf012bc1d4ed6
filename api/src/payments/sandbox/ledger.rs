//! The sandbox's ledger: payments, transfers, refunds, idempotency records, events and the
//! delivery queue, all in one value saved as JSON after every change.

use std::collections::BTreeMap;
use std::path::Path;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::delivery::{self, DeliveryMode, now_ms};
use super::{ConfirmOutcome, CreatePayment, SandboxError, Transfer};
use crate::payments::events::{ProviderEvent, ProviderEventData, ProviderEventType};
use crate::payments::{ProviderPayment, ProviderPaymentStatus, ProviderRefund, ProviderTransfer};

/// The first answer given under an idempotency key, and what it answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct IdempotencyRecord {
    pub(crate) fingerprint: String,
    pub(crate) response: serde_json::Value,
}

/// An emitted event and how its deliveries went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// The event id.
    pub id: String,
    /// The event type's wire name.
    #[serde(rename = "type")]
    pub kind: String,
    /// The exact body delivered (and signed), so every retry sends identical bytes.
    pub body: String,
    /// Delivery attempts so far, across copies.
    pub attempts: u32,
    /// Deliveries the receiver acknowledged with a 2xx (2 for a duplicated event).
    pub delivered: u32,
    /// The last HTTP status received, if any.
    pub last_status: Option<u16>,
}

/// One pending delivery of one copy of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Delivery {
    /// Unique per delivery (copies of one event have different ids).
    pub(crate) id: u64,
    pub(crate) event_id: String,
    /// Failed attempts so far.
    pub(crate) attempt: u32,
    /// When it may be sent next, unix milliseconds.
    pub(crate) due_ms: u64,
}

/// Everything the sandbox knows.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Ledger {
    pub(crate) payments: BTreeMap<String, ProviderPayment>,
    pub(crate) transfers: BTreeMap<String, ProviderTransfer>,
    pub(crate) refunds: BTreeMap<String, ProviderRefund>,
    pub(crate) idempotency: BTreeMap<String, IdempotencyRecord>,
    pub(crate) events: Vec<EventRecord>,
    /// Deliveries waiting to be sent, in the order they should go.
    pub(crate) queue: Vec<Delivery>,
    /// Deliveries held back for reordering, and since when (unix ms).
    pub(crate) held: Vec<Delivery>,
    pub(crate) held_since_ms: Option<u64>,
    pub(crate) next_delivery_id: u64,
    pub(crate) mode: Option<DeliveryMode>,
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", hex::encode(rand::random::<[u8; 12]>()))
}

fn state_error(code: &'static str, message: String) -> SandboxError {
    SandboxError::new(StatusCode::CONFLICT, code, message)
}

impl Ledger {
    /// Reads the ledger, or starts an empty one if the file does not exist yet.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Ledger> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{} is not a sandbox ledger: {e}", path.display()))?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ledger::default()),
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        }
    }

    /// Writes the ledger atomically (temporary file, then rename).
    pub(crate) fn save(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }

    pub(crate) fn remember(
        &mut self,
        key: String,
        fingerprint: String,
        response: serde_json::Value,
    ) {
        self.idempotency.insert(
            key,
            IdempotencyRecord {
                fingerprint,
                response,
            },
        );
    }

    pub(crate) fn create_payment(&mut self, req: &CreatePayment) -> ProviderPayment {
        let payment = ProviderPayment {
            id: new_id("pay"),
            status: ProviderPaymentStatus::Pending,
            amount_minor: req.amount_minor,
            currency: req.currency.clone(),
            reference: req.reference.clone(),
            transfer_id: None,
            refund_id: None,
        };
        tracing::info!(payment = %payment.id, amount_minor = payment.amount_minor, "payment created");
        self.payments.insert(payment.id.clone(), payment.clone());
        payment
    }

    fn payment_mut(&mut self, id: &str) -> Result<&mut ProviderPayment, SandboxError> {
        self.payments
            .get_mut(id)
            .ok_or_else(SandboxError::not_found)
    }

    pub(crate) fn confirm(
        &mut self,
        id: &str,
        outcome: ConfirmOutcome,
    ) -> Result<ProviderPayment, SandboxError> {
        let payment = self.payment_mut(id)?;
        if payment.status != ProviderPaymentStatus::Pending {
            return Err(state_error(
                "invalid_state",
                format!("the payment is {:?}, not pending", payment.status),
            ));
        }
        let (status, kind) = match outcome {
            ConfirmOutcome::Succeed => (
                ProviderPaymentStatus::Succeeded,
                ProviderEventType::PaymentSucceeded,
            ),
            ConfirmOutcome::Fail => (
                ProviderPaymentStatus::Failed,
                ProviderEventType::PaymentFailed,
            ),
        };
        payment.status = status;
        let payment = payment.clone();
        self.emit(kind, &payment, None, None);
        Ok(payment)
    }

    /// Checks the payment holds money that has not moved yet.
    fn escrowed(&mut self, id: &str) -> Result<ProviderPayment, SandboxError> {
        let payment = self.payment_mut(id)?;
        match payment.status {
            ProviderPaymentStatus::Succeeded => Ok(payment.clone()),
            ProviderPaymentStatus::Transferred => Err(state_error(
                "already_transferred",
                "the payment was already transferred".into(),
            )),
            ProviderPaymentStatus::Refunded => Err(state_error(
                "already_refunded",
                "the payment was already refunded".into(),
            )),
            other => Err(state_error(
                "payment_not_escrowed",
                format!("the payment is {other:?}, not succeeded"),
            )),
        }
    }

    pub(crate) fn transfer(&mut self, req: &Transfer) -> Result<ProviderTransfer, SandboxError> {
        let payment = self.escrowed(&req.payment_id)?;
        if req.amount_minor <= 0 || req.amount_minor > payment.amount_minor {
            return Err(SandboxError::bad_request(
                "amount_minor must be positive and at most the payment's amount",
            ));
        }
        let transfer = ProviderTransfer {
            id: new_id("tr"),
            payment_id: payment.id.clone(),
            amount_minor: req.amount_minor,
            destination: req.destination.clone(),
        };
        let p = self.payment_mut(&req.payment_id)?;
        p.status = ProviderPaymentStatus::Transferred;
        p.transfer_id = Some(transfer.id.clone());
        let p = p.clone();
        self.transfers.insert(transfer.id.clone(), transfer.clone());
        tracing::info!(payment = %p.id, transfer = %transfer.id, amount_minor = transfer.amount_minor, "transfer paid");
        self.emit(
            ProviderEventType::TransferPaid,
            &p,
            Some(transfer.amount_minor),
            Some(transfer.id.clone()),
        );
        Ok(transfer)
    }

    pub(crate) fn refund(&mut self, payment_id: &str) -> Result<ProviderRefund, SandboxError> {
        let payment = self.escrowed(payment_id)?;
        let refund = ProviderRefund {
            id: new_id("re"),
            payment_id: payment.id.clone(),
            amount_minor: payment.amount_minor,
        };
        let p = self.payment_mut(payment_id)?;
        p.status = ProviderPaymentStatus::Refunded;
        p.refund_id = Some(refund.id.clone());
        let p = p.clone();
        self.refunds.insert(refund.id.clone(), refund.clone());
        tracing::info!(payment = %p.id, refund = %refund.id, "refund succeeded");
        self.emit(
            ProviderEventType::RefundSucceeded,
            &p,
            None,
            Some(refund.id.clone()),
        );
        Ok(refund)
    }

    /// Records an event and schedules its deliveries as the current mode says.
    fn emit(
        &mut self,
        kind: ProviderEventType,
        payment: &ProviderPayment,
        amount: Option<i64>,
        object_id: Option<String>,
    ) {
        let event = ProviderEvent {
            id: new_id("evt"),
            kind,
            created: delivery::now_secs(),
            data: ProviderEventData {
                payment_id: payment.id.clone(),
                reference: Some(payment.reference.clone()),
                amount_minor: Some(amount.unwrap_or(payment.amount_minor)),
                currency: Some(payment.currency.clone()),
                transfer_id: object_id
                    .clone()
                    .filter(|_| kind == ProviderEventType::TransferPaid),
                refund_id: object_id.filter(|_| kind == ProviderEventType::RefundSucceeded),
            },
        };
        // Serialising plain strings and numbers cannot fail; an empty body would be refused by
        // any receiver rather than mis-applied.
        let body = serde_json::to_string(&event).unwrap_or_default();
        tracing::info!(event = %event.id, kind = kind.as_str(), payment = %payment.id, "event emitted");
        self.events.push(EventRecord {
            id: event.id.clone(),
            kind: kind.as_str().to_string(),
            body,
            attempts: 0,
            delivered: 0,
            last_status: None,
        });
        let mode = self.mode.clone().unwrap_or_default();
        let now = now_ms();
        let copies = if mode.duplicate { 2 } else { 1 };
        for _ in 0..copies {
            let d = Delivery {
                id: self.next_delivery_id,
                event_id: event.id.clone(),
                attempt: 0,
                due_ms: now.saturating_add(mode.delay_ms),
            };
            self.next_delivery_id += 1;
            if mode.reorder_batch >= 2 {
                self.held.push(d);
            } else {
                self.queue.push(d);
            }
        }
        if mode.reorder_batch >= 2 {
            self.held_since_ms.get_or_insert(now);
            let held_events = self.held.len() / copies;
            if held_events >= mode.reorder_batch as usize {
                self.release_held(now);
            }
        }
    }

    /// Sends every held delivery, newest event first. Returns how many were released.
    pub(crate) fn release_held(&mut self, now: u64) -> usize {
        let mut held = std::mem::take(&mut self.held);
        self.held_since_ms = None;
        let n = held.len();
        held.reverse();
        for mut d in held {
            d.due_ms = d.due_ms.max(now);
            self.queue.push(d);
        }
        if n > 0 {
            tracing::info!(deliveries = n, "held deliveries released in reverse order");
        }
        n
    }

    pub(crate) fn event_mut(&mut self, id: &str) -> Option<&mut EventRecord> {
        self.events.iter_mut().find(|e| e.id == id)
    }
}
