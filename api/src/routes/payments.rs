//! Money routes: a client funds a milestone; the provider posts its signed webhook events.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;

use crate::ApiError;
use crate::auth::Caller;
use crate::error::Problem;
use crate::escrow::{MoneyView, PaymentView, Settler, WebhookOutcome, body_digest};
use crate::payments::config::Payments;
use crate::payments::events::{EventError, ProviderEvent};
use crate::server::Shared;
use crate::store::AuditEntry;

/// Where the payment provider posts its events.
pub const WEBHOOK_PATH: &str = "/v1/webhooks/payments";
/// The header carrying the webhook signature.
pub const SIGNATURE_HEADER: &str = "Stripe-Signature";

fn payments(state: &Shared) -> Result<&Payments, ApiError> {
    state
        .payments
        .as_ref()
        .ok_or_else(|| ApiError::ServiceUnavailable {
            code: "payments_unavailable",
            detail: "no payment provider is configured".into(),
            retry_after: 60,
        })
}

/// `POST /v1/milestones/{milestone_id}/fund`: the client asks to fund an open milestone.
/// The answer is the pending payment; the client then pays it at the provider, and the
/// provider's verified event funds the milestone.
#[utoipa::path(post, path = "/v1/milestones/{milestone_id}/fund", tag = "escrow", security(("bearer" = [])),
    params(("milestone_id" = String, Path, description = "Milestone id"), ("Idempotency-Key" = String, Header, description = "Required on every mutating request; scoped to the caller")),
    responses((status = 201, body = PaymentView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 503, body = Problem)))]
pub async fn fund(
    State(state): State<Shared>,
    caller: Caller,
    Path(milestone_id): Path<String>,
) -> Result<(StatusCode, Json<PaymentView>), ApiError> {
    let payments = payments(&state)?;
    let escrow = state.escrow();
    let view = escrow
        .fund(&caller, payments.provider.as_ref(), &milestone_id)
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `GET /v1/milestones/{milestone_id}/payment`: the milestone's payment and settlements.
#[utoipa::path(get, path = "/v1/milestones/{milestone_id}/payment", tag = "escrow", security(("bearer" = [])),
    params(("milestone_id" = String, Path, description = "Milestone id")),
    responses((status = 200, body = MoneyView), (status = 404, body = Problem)))]
pub async fn money(
    State(state): State<Shared>,
    caller: Caller,
    Path(milestone_id): Path<String>,
) -> Result<Json<MoneyView>, ApiError> {
    let escrow = state.escrow();
    Ok(Json(escrow.money(&caller, &milestone_id).await?))
}

/// The answer to a webhook delivery the api accepted.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookAck {
    /// The event id.
    pub event_id: String,
    /// applied, duplicate or ignored.
    pub outcome: &'static str,
}

/// `POST /v1/webhooks/payments`: a provider event, signed over its raw body. No bearer
/// token and no Idempotency-Key: the signature authenticates it and its event id dedupes it.
/// 2xx means "recorded, do not send again"; 409 asks the provider to retry later.
#[utoipa::path(post, path = "/v1/webhooks/payments", tag = "payments",
    params(("Stripe-Signature" = String, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"t.body\">")),
    request_body(content = String, content_type = "application/json", description = "The provider's event, verified byte for byte"),
    responses((status = 200, body = WebhookAck), (status = 400, body = Problem), (status = 409, body = Problem), (status = 503, body = Problem)))]
pub async fn webhook(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookAck>, ApiError> {
    let payments = payments(&state)?;
    let escrow = state.escrow();
    let now_ms = escrow.now_ms;
    let now_secs = u64::try_from(now_ms / 1000).unwrap_or(0);
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let event = match payments.webhooks.verify(signature, &body, now_secs) {
        Ok(e) => e,
        Err(e) => {
            let err = refusal(&e);
            audit_delivery(&state, now_ms, None, &Err::<(), _>(&err)).await;
            return Err(err);
        }
    };
    let result = escrow
        .receive_event(payments.provider.as_ref(), &event, body_digest(&body))
        .await;
    let answer = match &result {
        Ok(WebhookOutcome::Applied) => Ok("applied"),
        Ok(WebhookOutcome::Duplicate) => Ok("duplicate"),
        Ok(WebhookOutcome::Ignored(_)) => Ok("ignored"),
        Ok(WebhookOutcome::RetryLater(why)) => Err(ApiError::Conflict {
            code: "event_deferred",
            detail: format!("not applied yet, send it again later: {why}"),
        }),
        Err(e) => Err(ApiError::Internal(format!(
            "handling event {}: {e}",
            event.id
        ))),
    };
    audit_delivery(&state, now_ms, Some(&event), &answer.as_ref().map(|_| ())).await;
    let outcome = answer?;
    if outcome == "applied" {
        kick_settlement(&state, payments, &event).await;
    }
    Ok(Json(WebhookAck {
        event_id: event.id,
        outcome,
    }))
}

/// A payout or refund event lets its saga finish now rather than at the next pass.
async fn kick_settlement(state: &Shared, payments: &Payments, event: &ProviderEvent) {
    let Some(reference) = event.data.reference.as_deref() else {
        return;
    };
    let escrow = state.escrow();
    let owner = format!("webhook-{}", uuid::Uuid::new_v4());
    let settler = Settler {
        escrow,
        provider: payments.provider.as_ref(),
        owner: &owner,
        lease_ms: crate::scheduler::lease_ms(state),
    };
    if let Err(e) = settler.kick(reference).await {
        tracing::warn!(milestone = reference, error = %e, "settlement after the event failed; the scheduler retries");
    }
}

fn refusal(e: &EventError) -> ApiError {
    match e {
        EventError::TooLarge => ApiError::PayloadTooLarge,
        EventError::Malformed(_) => ApiError::BadRequest(e.to_string()),
        EventError::MissingSignature | EventError::Signature(_) => {
            ApiError::WebhookRefused(e.to_string())
        }
    }
}

/// Every delivery leaves one audit row: what arrived and what was done, refusals included.
async fn audit_delivery(
    state: &Shared,
    now_ms: i64,
    event: Option<&ProviderEvent>,
    result: &Result<(), &ApiError>,
) {
    let (outcome, detail) = match result {
        Ok(()) => ("ok", ""),
        Err(e) => e.audit_outcome(),
    };
    let what = event
        .map(|e| {
            format!(
                " event={} type={} payment={}",
                e.id,
                e.kind.as_str(),
                e.data.payment_id
            )
        })
        .unwrap_or_default();
    let entry = AuditEntry {
        actor: "provider".into(),
        actor_role: "system".into(),
        action: "escrow.webhook".into(),
        identity_id: None,
        key_id: None,
        ticket_id: None,
        outcome: outcome.to_string(),
        detail: Some(format!("{detail}{what}").trim().to_string()),
        at_ms: now_ms,
    };
    if let Err(e) = state.store.append_audit(entry).await {
        tracing::error!(error = %e, "could not audit a webhook delivery");
    }
}
