//! The provider's webhook events: their JSON, their verification, and what each one means for
//! an escrowed payment ([`PaymentEvent`]).
//!
//! An event moves nothing by itself. The receiver verifies the signature over the raw body
//! ([`verify_event`]), records the event id permanently (deliveries come at least once, and
//! sometimes twice or out of order), then fetches the payment back from the provider and
//! checks its status agrees before applying the transition.

use enclosure_policy::escrow::PaymentEvent;
use enclosure_policy::webhook::{self, WebhookError};
use serde::{Deserialize, Serialize};

use super::{ProviderPaymentStatus, Secret};

/// The largest event body the receiver should read; real events are well under 4 KiB.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// What happened at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProviderEventType {
    /// The client paid; the provider holds the money.
    #[serde(rename = "payment.succeeded")]
    PaymentSucceeded,
    /// The client's payment failed.
    #[serde(rename = "payment.failed")]
    PaymentFailed,
    /// The money was paid out to the freelancer.
    #[serde(rename = "transfer.paid")]
    TransferPaid,
    /// The money was returned to the client.
    #[serde(rename = "refund.succeeded")]
    RefundSucceeded,
    /// A type this api does not act on; acknowledge it and do nothing.
    #[serde(other, rename = "unknown")]
    Unknown,
}

impl ProviderEventType {
    /// The escrow payment event this stands for, or `None` for types we ignore.
    pub fn payment_event(self) -> Option<PaymentEvent> {
        match self {
            ProviderEventType::PaymentSucceeded => Some(PaymentEvent::Succeeded),
            ProviderEventType::PaymentFailed => Some(PaymentEvent::Failed),
            ProviderEventType::TransferPaid => Some(PaymentEvent::Transferred),
            ProviderEventType::RefundSucceeded => Some(PaymentEvent::Refunded),
            ProviderEventType::Unknown => None,
        }
    }

    /// The provider status a fetched-back payment must show for this event to be applied.
    pub fn expected_status(self) -> Option<ProviderPaymentStatus> {
        match self {
            ProviderEventType::PaymentSucceeded => Some(ProviderPaymentStatus::Succeeded),
            ProviderEventType::PaymentFailed => Some(ProviderPaymentStatus::Failed),
            ProviderEventType::TransferPaid => Some(ProviderPaymentStatus::Transferred),
            ProviderEventType::RefundSucceeded => Some(ProviderPaymentStatus::Refunded),
            ProviderEventType::Unknown => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderEventType::PaymentSucceeded => "payment.succeeded",
            ProviderEventType::PaymentFailed => "payment.failed",
            ProviderEventType::TransferPaid => "transfer.paid",
            ProviderEventType::RefundSucceeded => "refund.succeeded",
            ProviderEventType::Unknown => "unknown",
        }
    }
}

/// The object an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderEventData {
    /// The payment concerned (every event type carries it).
    pub payment_id: String,
    /// Our reference on the payment (the milestone id).
    #[serde(default)]
    pub reference: Option<String>,
    /// The amount concerned, in minor units.
    #[serde(default)]
    pub amount_minor: Option<i64>,
    /// The currency.
    #[serde(default)]
    pub currency: Option<String>,
    /// The transfer, for `transfer.paid`.
    #[serde(default)]
    pub transfer_id: Option<String>,
    /// The refund, for `refund.succeeded`.
    #[serde(default)]
    pub refund_id: Option<String>,
}

/// One webhook event, as the provider sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderEvent {
    /// The event id: the dedupe key, unique per event, repeated on redelivery.
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: ProviderEventType,
    /// When the provider created the event, unix seconds (not when it was delivered).
    pub created: u64,
    /// What it is about.
    pub data: ProviderEventData,
}

impl ProviderEvent {
    /// The escrow payment event this stands for, or `None` for types we ignore.
    pub fn payment_event(&self) -> Option<PaymentEvent> {
        self.kind.payment_event()
    }
}

/// Why a webhook delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The signature header is absent.
    #[error("the Stripe-Signature header is missing")]
    MissingSignature,
    /// The signature did not verify.
    #[error("webhook signature refused: {0}")]
    Signature(#[from] WebhookError),
    /// The body is larger than [`MAX_EVENT_BYTES`].
    #[error("the event body is too large")]
    TooLarge,
    /// The body verified but is not an event we can read.
    #[error("the event body is not a valid event: {0}")]
    Malformed(String),
}

/// Verifies a delivery's signature over the raw `body`, then parses the event.
///
/// `signature` is the `Stripe-Signature` header's value (`None` when absent), `secrets` every
/// currently accepted webhook secret (several during a rotation), `now_secs` the receiver's
/// clock and `tolerance_secs` normally [`webhook::DEFAULT_TOLERANCE_SECS`]. Parsing happens
/// only after the signature passes, so unauthenticated bytes never reach the JSON parser.
pub fn verify_event(
    signature: Option<&str>,
    body: &[u8],
    secrets: &[Secret],
    now_secs: u64,
    tolerance_secs: u64,
) -> Result<ProviderEvent, EventError> {
    if body.len() > MAX_EVENT_BYTES {
        return Err(EventError::TooLarge);
    }
    let header = signature.ok_or(EventError::MissingSignature)?;
    let keys: Vec<&[u8]> = secrets.iter().map(Secret::expose).collect();
    webhook::verify(header, body, &keys, now_secs, tolerance_secs)?;
    serde_json::from_slice(body).map_err(|e| EventError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_780_000_000;

    fn body(kind: &str) -> Vec<u8> {
        format!(
            r#"{{"id":"evt_1","type":"{kind}","created":{NOW},"data":{{"payment_id":"pay_1","amount_minor":500}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn every_type_maps_to_its_payment_event() {
        let cases = [
            ("payment.succeeded", Some(PaymentEvent::Succeeded)),
            ("payment.failed", Some(PaymentEvent::Failed)),
            ("transfer.paid", Some(PaymentEvent::Transferred)),
            ("refund.succeeded", Some(PaymentEvent::Refunded)),
            ("customer.created", None),
        ];
        for (kind, want) in cases {
            let b = body(kind);
            let secrets = [Secret::new("whsec")];
            let header = webhook::sign(b"whsec", NOW, &b);
            let event = verify_event(Some(&header), &b, &secrets, NOW, 300).unwrap();
            assert_eq!(event.payment_event(), want, "{kind}");
            assert_eq!(event.data.payment_id, "pay_1");
            assert_eq!(event.kind.expected_status().is_some(), want.is_some());
        }
    }

    #[test]
    fn unsigned_or_forged_bodies_are_not_parsed() {
        let b = body("payment.succeeded");
        let secrets = [Secret::new("whsec")];
        assert_eq!(
            verify_event(None, &b, &secrets, NOW, 300),
            Err(EventError::MissingSignature)
        );
        let forged = webhook::sign(b"guess", NOW, &b);
        assert_eq!(
            verify_event(Some(&forged), &b, &secrets, NOW, 300),
            Err(EventError::Signature(WebhookError::BadSignature))
        );
        assert_eq!(
            verify_event(Some(&forged), &b, &[], NOW, 300),
            Err(EventError::Signature(WebhookError::NoSecrets))
        );
    }

    #[test]
    fn signed_garbage_is_malformed() {
        let b = b"{\"id\":1}";
        let header = webhook::sign(b"whsec", NOW, b);
        assert!(matches!(
            verify_event(Some(&header), b, &[Secret::new("whsec")], NOW, 300),
            Err(EventError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_bodies_are_refused_first() {
        let b = vec![b' '; MAX_EVENT_BYTES + 1];
        assert_eq!(
            verify_event(Some("t=1,v1=00"), &b, &[Secret::new("k")], NOW, 300),
            Err(EventError::TooLarge)
        );
    }
}
