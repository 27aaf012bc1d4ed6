//! Money out: the settlement sagas (the swap's payout, and refunds), run by the scheduler.
//!
//! Each saga is a stored row whose step only moves forward. One pass over a claimed saga
//! reads the payment and the milestone, asks the policy crate's [`next_action`], does that one
//! thing and writes the result before anything else happens. Provider calls carry the
//! saga's own idempotency key, so a crash between the call and the write costs nothing: the
//! repeated call answers the same transfer. A failure that retrying cannot fix stalls the
//! saga (and moves an accepted milestone to needs_admin): nothing irreversible is undone.

use enclosure_policy::settlement::{
    SettlementAction, SettlementKind, SettlementStep, next_action, provider_call_key,
    settlement_needed, split_fee,
};

use super::funding::{provider_error, system_caller};
use super::{Escrow, viewer};
use crate::ApiError;
use crate::payments::{PaymentProvider, Refund, Transfer};
use crate::store::escrow::{Moved, RoomRecord, SettlementChange, SettlementRecord};

/// How often a saga waiting for a provider event is looked at again (the event itself also
/// wakes it).
pub const AWAIT_POLL_MS: i64 = 5_000;
/// The longest wait between retries of a provider call that failed transiently.
pub const MAX_BACKOFF_MS: i64 = 60_000;

/// The wait before retry number `attempts` of a transient failure: 1 s, doubling, capped.
pub fn backoff_ms(attempts: i64) -> i64 {
    let exp = u32::try_from(attempts.clamp(0, 16)).unwrap_or(16);
    1_000i64.saturating_mul(1 << exp).min(MAX_BACKOFF_MS)
}

/// What one pass over the settlements did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SettlementPass {
    /// Sagas opened.
    pub opened: usize,
    /// Stalled sagas an admin sent round again.
    pub restarted: usize,
    /// Sagas advanced by a step.
    pub advanced: usize,
}

/// The settlement worker: one scheduler's identity and the provider it calls.
pub struct Settler<'a> {
    /// The services, at this pass's instant.
    pub escrow: Escrow<'a>,
    /// The payment provider.
    pub provider: &'a dyn PaymentProvider,
    /// This scheduler's lease owner id.
    pub owner: &'a str,
    /// How long a claim holds, in milliseconds.
    pub lease_ms: i64,
}

impl Settler<'_> {
    /// Opens sagas for milestones whose money must leave escrow, restarts the ones an admin
    /// released again, and advances every due one this scheduler can claim.
    pub async fn run_once(&self, limit: u32) -> Result<SettlementPass, ApiError> {
        let mut pass = SettlementPass {
            opened: self.open_due(limit).await?,
            restarted: self.restart_released(limit).await?,
            advanced: 0,
        };
        let now = self.escrow.now_ms;
        let claimed = self
            .escrow
            .store
            .claim_settlements(self.owner, now, now + self.lease_ms, limit)
            .await?;
        for s in claimed {
            let key = (s.milestone_id.clone(), s.kind);
            match self.advance(s).await {
                Ok(true) => pass.advanced += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(milestone = %key.0, kind = %key.1, error = %e, "settlement step failed; it will be retried")
                }
            }
        }
        Ok(pass)
    }

    /// Advances the sagas of one milestone now (after its provider event arrived), if this
    /// scheduler can claim them.
    pub async fn kick(&self, milestone_id: &str) -> Result<(), ApiError> {
        for s in self.escrow.store.settlements_of(milestone_id).await? {
            // Held by a scheduler right now: it will see the event itself.
            let leased = s.lease_until_ms > self.escrow.now_ms;
            if !leased && matches!(s.step, SettlementStep::Start | SettlementStep::Requested) {
                let claim = self
                    .escrow
                    .store
                    .update_settlement(
                        &s,
                        &SettlementChange {
                            next_at_ms: self.escrow.now_ms,
                            ..s.unchanged()
                        },
                        self.escrow.now_ms + self.lease_ms,
                        self.escrow.now_ms,
                    )
                    .await?;
                if let Moved::Done(s) = claim {
                    self.advance(s).await?;
                }
            }
        }
        Ok(())
    }

    async fn open_due(&self, limit: u32) -> Result<usize, ApiError> {
        let store = self.escrow.store;
        let now = self.escrow.now_ms;
        let mut opened = 0;
        for (m, p) in store.milestones_to_settle(limit).await? {
            let Some(kind) = settlement_needed(m.state, p.state) else {
                continue;
            };
            let (amount_minor, fee_minor) = match kind {
                SettlementKind::Release => {
                    let system = system_caller(super::SYSTEM_ACTOR);
                    let (room, _) = store
                        .milestone(viewer(&system), &m.id)
                        .await?
                        .ok_or(ApiError::NotFound)?;
                    let split =
                        split_fee(p.amount_minor, room.platform_fee_bps).ok_or_else(|| {
                            ApiError::Internal(format!("no fee split for payment {}", p.id))
                        })?;
                    (split.payout_minor, split.fee_minor)
                }
                SettlementKind::Refund => (p.amount_minor, 0),
            };
            let (s, inserted) = store
                .open_settlement(&SettlementRecord {
                    milestone_id: m.id.clone(),
                    kind,
                    room_id: m.room_id.clone(),
                    payment_id: p.id.clone(),
                    round: 0,
                    step: SettlementStep::Start,
                    amount_minor,
                    fee_minor,
                    provider_object_id: None,
                    attempts: 0,
                    last_error: None,
                    next_at_ms: now,
                    lease_owner: None,
                    lease_until_ms: 0,
                    created_at_ms: now,
                    updated_at_ms: now,
                    version: 0,
                })
                .await?;
            if inserted {
                opened += 1;
                self.audit_step(&s, "opened").await;
                tracing::info!(milestone = %m.id, kind = %kind, amount_minor, fee_minor, "settlement opened");
                crate::faults::crash_point("settlement.opened");
            }
        }
        Ok(opened)
    }

    /// A stalled release whose milestone an admin sent back to accepted starts a new round,
    /// with a new provider idempotency key.
    async fn restart_released(&self, limit: u32) -> Result<usize, ApiError> {
        let store = self.escrow.store;
        let mut restarted = 0;
        for s in store.stalled_releases_accepted_again(limit).await? {
            let change = SettlementChange {
                step: SettlementStep::Start,
                round: s.round + 1,
                provider_object_id: None,
                attempts: 0,
                last_error: None,
                next_at_ms: self.escrow.now_ms,
            };
            if let Moved::Done(_) = store
                .update_settlement(&s, &change, 0, self.escrow.now_ms)
                .await?
            {
                restarted += 1;
            }
        }
        Ok(restarted)
    }

    /// One step of one claimed saga; `true` if it changed anything.
    async fn advance(&self, s: SettlementRecord) -> Result<bool, ApiError> {
        let store = self.escrow.store;
        let now = self.escrow.now_ms;
        let system = system_caller(super::SYSTEM_ACTOR);
        let payment = store
            .payment_of_milestone(&s.milestone_id)
            .await?
            .ok_or(ApiError::NotFound)?;
        let (room, milestone) = store
            .milestone(viewer(&system), &s.milestone_id)
            .await?
            .ok_or(ApiError::NotFound)?;
        let action = next_action(s.kind, s.step, payment.state, milestone.state);
        let wait = |s: &SettlementRecord, after: i64| SettlementChange {
            next_at_ms: now + after,
            ..s.unchanged()
        };
        let change = match action {
            SettlementAction::Idle | SettlementAction::AwaitEvent => {
                store
                    .update_settlement(&s, &wait(&s, AWAIT_POLL_MS), 0, now)
                    .await?;
                return Ok(false);
            }
            SettlementAction::CallProvider => match self.call_provider(&s, &room, &payment).await {
                Ok(object_id) => {
                    crate::faults::crash_point("settlement.after_call");
                    SettlementChange {
                        step: SettlementStep::Requested,
                        provider_object_id: Some(object_id),
                        attempts: s.attempts + 1,
                        last_error: None,
                        next_at_ms: now + AWAIT_POLL_MS,
                        ..s.unchanged()
                    }
                }
                Err(e) if e.is_retryable() => SettlementChange {
                    attempts: s.attempts + 1,
                    last_error: Some(e.to_string()),
                    next_at_ms: now + backoff_ms(s.attempts),
                    ..s.unchanged()
                },
                Err(e) => return self.stall(&s, &provider_error(e).to_string()).await,
            },
            SettlementAction::CompleteMilestone => {
                self.escrow.complete_swap(&system, &milestone.id).await?;
                crate::faults::crash_point("settlement.completed");
                SettlementChange {
                    step: SettlementStep::Done,
                    ..s.unchanged()
                }
            }
            SettlementAction::Finish => SettlementChange {
                step: SettlementStep::Done,
                ..s.unchanged()
            },
            SettlementAction::Stall => {
                let why = format!(
                    "the payment is {} and the milestone {}: not what a {} expects",
                    payment.state, milestone.state, s.kind
                );
                return self.stall(&s, &why).await;
            }
        };
        let step = change.step;
        match store.update_settlement(&s, &change, 0, now).await? {
            Moved::Done(_) => {
                tracing::info!(milestone = %s.milestone_id, kind = %s.kind, from = %s.step, to = %step, "settlement step");
                self.audit_step(&s, &format!("{}->{step}", s.step)).await;
                if step == SettlementStep::Requested {
                    crate::faults::crash_point("settlement.requested");
                }
                Ok(true)
            }
            Moved::LostRace => Ok(false),
        }
    }

    async fn call_provider(
        &self,
        s: &SettlementRecord,
        room: &RoomRecord,
        payment: &crate::store::escrow::PaymentRecord,
    ) -> Result<String, crate::payments::ProviderError> {
        let key = provider_call_key(&s.milestone_id, s.kind, s.round);
        match s.kind {
            SettlementKind::Release => {
                let t = self
                    .provider
                    .transfer(Transfer {
                        idempotency_key: key,
                        payment_id: payment.provider_payment_id.clone(),
                        amount_minor: s.amount_minor,
                        destination: room.freelancer.clone(),
                    })
                    .await?;
                Ok(t.id)
            }
            SettlementKind::Refund => {
                let r = self
                    .provider
                    .refund(Refund {
                        idempotency_key: key,
                        payment_id: payment.provider_payment_id.clone(),
                    })
                    .await?;
                Ok(r.id)
            }
        }
    }

    /// Stalls a saga for an admin; a release's accepted milestone goes to needs_admin.
    async fn stall(&self, s: &SettlementRecord, why: &str) -> Result<bool, ApiError> {
        let now = self.escrow.now_ms;
        let change = SettlementChange {
            step: SettlementStep::Stalled,
            last_error: Some(why.to_string()),
            ..s.unchanged()
        };
        tracing::error!(milestone = %s.milestone_id, kind = %s.kind, reason = why, "settlement stalled; an admin must look");
        let moved = self
            .escrow
            .store
            .update_settlement(s, &change, 0, now)
            .await?;
        if let Moved::Done(_) = moved {
            self.audit_step(s, &format!("{}->stalled", s.step)).await;
        }
        if s.kind == SettlementKind::Release
            && let Moved::Done(_) = moved
        {
            let system = system_caller(super::SYSTEM_ACTOR);
            // Only possible from accepted; otherwise the milestone already shows the problem.
            if let Err(e) = self.escrow.stall_swap(&system, &s.milestone_id).await {
                tracing::warn!(milestone = %s.milestone_id, error = %e, "could not mark the milestone needs_admin");
            }
        }
        Ok(matches!(moved, Moved::Done(_)))
    }

    /// Audits one saga step as the system, linked to the room so its members see the swap.
    async fn audit_step(&self, s: &SettlementRecord, moved: &str) {
        let subject = super::Subject {
            room_id: Some(s.room_id.clone()),
            milestone_id: Some(s.milestone_id.clone()),
            visible: true,
            moved: Some(format!(
                "{moved} amount_minor={} fee_minor={}",
                s.amount_minor, s.fee_minor
            )),
        };
        let ok: Result<(), ApiError> = Ok(());
        self.escrow
            .audit(
                super::SYSTEM_ACTOR,
                "system",
                &format!("escrow.settlement.{}", s.kind),
                &subject,
                &ok,
            )
            .await;
    }
}
