//! Money in: the client's funding request, and the provider's verified webhook events.
//!
//! A client never moves a payment. Funding asks the provider to create a payment (one per
//! milestone: its idempotency key is derived from the milestone) and records it `pending`;
//! the client then pays at the provider. Only a webhook event that verifies, has not been
//! seen before, and that the provider confirms when asked back moves the payment (T7).

use enclosure_policy::escrow::{MilestoneState, RoomState};
use enclosure_policy::settlement::provider_confirms;
use sha2::{Digest, Sha256};

use super::{Escrow, PaymentView, Subject, actor_in, viewer};
use crate::ApiError;
use crate::auth::{Caller, Role};
use crate::payments::events::ProviderEvent;
use crate::payments::{CreatePayment, PROVIDER_NAME, PaymentProvider, ProviderError};
use crate::store::escrow::ProviderEventRecord;

/// The caller the system's own work is done and audited as.
pub fn system_caller(name: &str) -> Caller {
    Caller {
        sub: name.to_string(),
        role: Role::System,
    }
}

/// The provider's failure as an api error: retryable ones are 503, the rest 502.
pub(crate) fn provider_error(e: ProviderError) -> ApiError {
    if e.is_retryable() {
        ApiError::ServiceUnavailable {
            code: "payments_unavailable",
            detail: e.to_string(),
            retry_after: 5,
        }
    } else {
        ApiError::BadGateway {
            code: "payment_provider_refused",
            detail: e.to_string(),
        }
    }
}

/// What the api did with one webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// The event moved its payment.
    Applied,
    /// The event id was already recorded: nothing was done again.
    Duplicate,
    /// Recorded, and nothing needed doing (an unknown type, an already applied move).
    Ignored(String),
    /// Not yet: the provider does not confirm it, or the move is not legal yet (an event
    /// overtaking an earlier one). Not recorded, so the provider's retry is processed.
    RetryLater(String),
}

impl Escrow<'_> {
    /// The client asks to fund an open milestone of an active room: the provider creates
    /// the payment (idempotently: one per milestone) and it is recorded `pending`. Asking
    /// again while it is pending answers the same payment.
    pub async fn fund(
        &self,
        caller: &Caller,
        provider: &dyn PaymentProvider,
        milestone_id: &str,
    ) -> Result<PaymentView, ApiError> {
        let mut subject = Subject {
            milestone_id: Some(milestone_id.to_string()),
            ..Subject::default()
        };
        let result = async {
            let (room, m) = self
                .store
                .milestone(viewer(caller), milestone_id)
                .await?
                .ok_or(ApiError::NotFound)?;
            subject.room_id = Some(room.id.clone());
            subject.visible = true;
            if actor_in(caller, &room)? != enclosure_policy::escrow::Actor::Client {
                return Err(ApiError::Forbidden);
            }
            if let Some(p) = self.store.payment_of_milestone(&m.id).await? {
                return match p.state {
                    enclosure_policy::escrow::PaymentState::Pending => Ok(PaymentView::from(&p)),
                    s => Err(ApiError::Conflict {
                        code: "illegal_transition",
                        detail: format!("the milestone's payment is already {s}"),
                    }),
                };
            }
            if room.state != RoomState::Active || m.state != MilestoneState::Open {
                return Err(ApiError::Conflict {
                    code: "illegal_transition",
                    detail: format!(
                        "only open milestones of active rooms are funded, not a {} milestone of a {} room",
                        m.state, room.state
                    ),
                });
            }
            if self.now_ms > m.funding_deadline_ms {
                return Err(ApiError::Conflict {
                    code: "guard_failed",
                    detail: "the funding deadline has passed".into(),
                });
            }
            let created = provider
                .create_payment(CreatePayment {
                    idempotency_key: format!("fund:{}", m.id),
                    amount_minor: m.price_minor,
                    currency: room.currency.clone(),
                    reference: m.id.clone(),
                })
                .await
                .map_err(provider_error)?;
            if created.amount_minor != m.price_minor
                || !created.currency.eq_ignore_ascii_case(&room.currency)
                || created.reference != m.id
            {
                return Err(ApiError::BadGateway {
                    code: "payment_provider_mismatch",
                    detail: "the provider created a payment for other terms".into(),
                });
            }
            let p = super::milestones::pending_payment(
                &room,
                &m,
                PROVIDER_NAME,
                &created.id,
                self.now_ms,
            );
            match self.store.insert_payment(&p).await {
                Ok(()) => {
                    subject.moved = Some("->pending".into());
                    Ok(PaymentView::from(&p))
                }
                // A concurrent request recorded the same provider payment first.
                Err(e) => match self.store.payment_of_milestone(&m.id).await? {
                    Some(existing) if existing.provider_payment_id == created.id => {
                        Ok(PaymentView::from(&existing))
                    }
                    _ => Err(e.into()),
                },
            }
        }
        .await;
        self.audit_as(caller, "escrow.payment.fund", &subject, &result)
            .await;
        result
    }

    /// Handles one verified webhook event (the signature was checked over the raw body,
    /// whose SHA-256 is `body_sha256`): dedupe by event id, fetch the payment back from the
    /// provider, check it confirms the event, then apply it as the system.
    pub async fn receive_event(
        &self,
        provider: &dyn PaymentProvider,
        event: &ProviderEvent,
        body_sha256: [u8; 32],
    ) -> Result<WebhookOutcome, ApiError> {
        if self
            .store
            .provider_event(PROVIDER_NAME, &event.id)
            .await?
            .is_some()
        {
            return Ok(WebhookOutcome::Duplicate);
        }
        let Some(payment_event) = event.payment_event() else {
            return self
                .record(
                    event,
                    body_sha256,
                    "ignored",
                    "an event type the api does not act on",
                )
                .await;
        };
        let Some(ours) = self
            .store
            .payment_by_provider_id(PROVIDER_NAME, &event.data.payment_id)
            .await?
        else {
            // The payment may be created and not yet recorded (a fund call in flight).
            return Ok(WebhookOutcome::RetryLater("no such payment yet".into()));
        };
        let theirs = match provider.get_payment(&event.data.payment_id).await {
            Ok(p) => p,
            Err(e) if e.is_retryable() => return Ok(WebhookOutcome::RetryLater(e.to_string())),
            Err(e) => return Err(provider_error(e)),
        };
        if theirs.id != ours.provider_payment_id
            || theirs.amount_minor != ours.amount_minor
            || !theirs.currency.eq_ignore_ascii_case(&ours.currency)
            || theirs.reference != ours.milestone_id
        {
            return self
                .record(
                    event,
                    body_sha256,
                    "ignored",
                    "the provider's payment does not match ours",
                )
                .await;
        }
        if !provider_confirms(payment_event, theirs.status.payment_state()) {
            return Ok(WebhookOutcome::RetryLater(format!(
                "the provider reports the payment {:?}, which does not confirm {}",
                theirs.status,
                event.kind.as_str()
            )));
        }
        if provider_confirms(payment_event, ours.state) {
            return self
                .record(event, body_sha256, "ignored", "already applied")
                .await;
        }
        let system = system_caller(super::SYSTEM_ACTOR);
        match self
            .apply_payment_event(
                &system,
                PROVIDER_NAME,
                &ours.provider_payment_id,
                payment_event,
            )
            .await
        {
            Ok(_) => {
                crate::faults::crash_point("webhook.applied");
                self.record(event, body_sha256, "applied", payment_event.as_str())
                    .await
                    .map(|_| WebhookOutcome::Applied)
            }
            Err(ApiError::Conflict { code, detail }) => {
                // Someone applied it concurrently (a duplicate delivery racing this one)?
                let now = self
                    .store
                    .payment_by_provider_id(PROVIDER_NAME, &ours.provider_payment_id)
                    .await?;
                match now {
                    Some(p) if provider_confirms(payment_event, p.state) => {
                        self.record(event, body_sha256, "ignored", "already applied")
                            .await
                    }
                    _ => Ok(WebhookOutcome::RetryLater(format!("{code}: {detail}"))),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn record(
        &self,
        event: &ProviderEvent,
        body_sha256: [u8; 32],
        outcome: &str,
        detail: &str,
    ) -> Result<WebhookOutcome, ApiError> {
        let fresh = self
            .store
            .record_provider_event(&ProviderEventRecord {
                provider: PROVIDER_NAME.to_string(),
                event_id: event.id.clone(),
                event_type: event.kind.as_str().to_string(),
                provider_payment_id: event.data.payment_id.clone(),
                body_sha256,
                outcome: outcome.to_string(),
                detail: detail.to_string(),
                received_at_ms: self.now_ms,
            })
            .await?;
        Ok(match (fresh, outcome) {
            (false, _) => WebhookOutcome::Duplicate,
            (true, "applied") => WebhookOutcome::Applied,
            (true, _) => WebhookOutcome::Ignored(detail.to_string()),
        })
    }
}

/// SHA-256 of a raw webhook body, kept with the event as evidence.
pub fn body_digest(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// One settlement saga as a room member (or an admin) sees it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SettlementView {
    /// release (to the freelancer) or refund (to the client).
    pub kind: String,
    /// start, requested, done or stalled.
    pub step: String,
    /// Paid out or returned, in minor units.
    pub amount_minor: i64,
    /// The platform's fee, in minor units.
    pub fee_minor: i64,
    /// The provider's transfer or refund id.
    pub provider_object_id: Option<String>,
    /// Why it stalled, for an admin.
    pub last_error: Option<String>,
}

/// Where a milestone's money stands.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct MoneyView {
    /// The escrow payment, once the client asked to fund.
    pub payment: Option<PaymentView>,
    /// Its settlements, once it leaves escrow.
    pub settlements: Vec<SettlementView>,
}

impl Escrow<'_> {
    /// Where a milestone's money stands, for whoever may read the milestone.
    pub async fn money(&self, caller: &Caller, milestone_id: &str) -> Result<MoneyView, ApiError> {
        let (_, m) = self
            .store
            .milestone(viewer(caller), milestone_id)
            .await?
            .ok_or(ApiError::NotFound)?;
        let payment = self.store.payment_of_milestone(&m.id).await?;
        let settlements = self
            .store
            .settlements_of(&m.id)
            .await?
            .into_iter()
            .map(|s| SettlementView {
                kind: s.kind.as_str().to_string(),
                step: s.step.as_str().to_string(),
                amount_minor: s.amount_minor,
                fee_minor: s.fee_minor,
                provider_object_id: s.provider_object_id,
                last_error: s.last_error,
            })
            .collect();
        Ok(MoneyView {
            payment: payment.as_ref().map(PaymentView::from),
            settlements,
        })
    }
}
