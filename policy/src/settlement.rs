//! Settlement rules: how escrowed money leaves escrow, as pure decisions.
//!
//! A settlement is a saga with persisted steps. `release` pays an accepted milestone's escrow
//! out to the freelancer, less the platform fee, and then marks the milestone transferred
//! (which is what grants the client the download); `refund` returns a refunded milestone's
//! escrow to the client. [`next_action`] decides what a saga does next from what is stored,
//! so a saga resumed after a crash at any point takes the same decision again. No step is
//! undone automatically: a step that cannot complete stalls, for an admin.
//!
//! Also here: the platform fee split ([`split_fee`]) and whether a payment the provider
//! reports confirms a webhook event ([`provider_confirms`]).

use serde::{Deserialize, Serialize};

use crate::escrow::{MilestoneState, PaymentEvent, PaymentState, payment_event_target};

/// Basis points in a whole.
pub const BPS_WHOLE: i64 = 10_000;

/// How a released escrow splits between the freelancer and the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeSplit {
    /// What the freelancer receives, in minor units.
    pub payout_minor: i64,
    /// What the platform keeps, in minor units.
    pub fee_minor: i64,
}

/// Splits `amount_minor` by a fee of `fee_bps` basis points. The fee is rounded down, so the
/// freelancer never receives less than the terms promise. `None` for a non-positive amount
/// or a fee outside 0..=10000.
pub fn split_fee(amount_minor: i64, fee_bps: i64) -> Option<FeeSplit> {
    if amount_minor <= 0 || !(0..=BPS_WHOLE).contains(&fee_bps) {
        return None;
    }
    // i128: amount × bps cannot overflow.
    let fee = i128::from(amount_minor) * i128::from(fee_bps) / i128::from(BPS_WHOLE);
    let fee_minor = i64::try_from(fee).ok()?;
    Some(FeeSplit {
        payout_minor: amount_minor - fee_minor,
        fee_minor,
    })
}

/// Whether the payment state the provider reports now confirms that `event` happened: it is
/// the event's target state, or a state reachable from it (the payment moved on since).
/// A webhook is applied only when this holds (threat T7: the body alone is never trusted).
pub fn provider_confirms(event: PaymentEvent, reported: PaymentState) -> bool {
    let Some(target) = payment_event_target(event) else {
        return false;
    };
    if reported == target {
        return true;
    }
    // One more provider event at most separates any two states of the payment machine.
    PaymentEvent::ALL
        .iter()
        .any(|&e| crate::escrow::payment_next(target, e) == Some(reported))
}

crate::escrow::named_enum!(
    /// Which way the escrow leaves.
    SettlementKind {
        /// To the freelancer, less the fee (the swap).
        Release => "release",
        /// Back to the client, in full.
        Refund => "refund",
    }
);

crate::escrow::named_enum!(
    /// Where a settlement saga stands; stored, and only ever moves forward.
    SettlementStep {
        /// Created; the provider has not been asked yet (or the answer was not recorded).
        Start => "start",
        /// The provider accepted the transfer or refund; waiting for its event.
        Requested => "requested",
        /// Settled: nothing more to do.
        Done => "done",
        /// A step cannot complete; an admin must look.
        Stalled => "stalled",
    }
);

/// What a settlement saga does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettlementAction {
    /// Ask the provider (transfer or refund) with the saga's idempotency key; on success
    /// record `requested`. Repeating this after a crash has one effect at the provider.
    CallProvider,
    /// Wait for the provider's verified event to move the payment.
    AwaitEvent,
    /// The payment is released: move the milestone accepted → transferred, then `done`.
    CompleteMilestone,
    /// Record `done`.
    Finish,
    /// Nothing to do now (done, stalled, or waiting for an admin).
    Idle,
    /// The stored facts contradict the saga: stall it for an admin.
    Stall,
}

/// The next action of a saga of `kind` at `step`, given its payment's and milestone's states.
pub fn next_action(
    kind: SettlementKind,
    step: SettlementStep,
    payment: PaymentState,
    milestone: MilestoneState,
) -> SettlementAction {
    use SettlementAction as Do;
    match (kind, step) {
        (_, SettlementStep::Done | SettlementStep::Stalled) => Do::Idle,
        (SettlementKind::Release, step) => match (payment, milestone) {
            // Another admin decision moved it elsewhere (a dispute): wait.
            (PaymentState::Escrowed, MilestoneState::Disputed | MilestoneState::NeedsAdmin) => {
                Do::Idle
            }
            (PaymentState::Escrowed, MilestoneState::Accepted) => match step {
                SettlementStep::Start => Do::CallProvider,
                _ => Do::AwaitEvent,
            },
            (PaymentState::Released, MilestoneState::Accepted) => Do::CompleteMilestone,
            (PaymentState::Released, MilestoneState::Transferred) => Do::Finish,
            _ => Do::Stall,
        },
        (SettlementKind::Refund, step) => match (payment, milestone) {
            (PaymentState::Escrowed, MilestoneState::Refunded | MilestoneState::Expired) => {
                match step {
                    SettlementStep::Start => Do::CallProvider,
                    _ => Do::AwaitEvent,
                }
            }
            (PaymentState::Refunded, MilestoneState::Refunded | MilestoneState::Expired) => {
                Do::Finish
            }
            _ => Do::Stall,
        },
    }
}

/// The settlement a milestone in `milestone` state with its payment in `payment` state needs,
/// if any: accepted → release (whatever the payment: one no longer escrowed makes the saga
/// stall for an admin rather than leave the milestone accepted forever); refunded and
/// escrowed → refund; expired and escrowed (paid after the funding deadline) → refund.
pub fn settlement_needed(
    milestone: MilestoneState,
    payment: PaymentState,
) -> Option<SettlementKind> {
    match (milestone, payment) {
        (MilestoneState::Accepted, _) => Some(SettlementKind::Release),
        (MilestoneState::Refunded | MilestoneState::Expired, PaymentState::Escrowed) => {
            Some(SettlementKind::Refund)
        }
        _ => None,
    }
}

/// The idempotency key of a saga's provider call: one per milestone, kind and round (an
/// admin's "try again" after a stall starts a new round, and only then a new call).
pub fn provider_call_key(milestone_id: &str, kind: SettlementKind, round: i64) -> String {
    let verb = match kind {
        SettlementKind::Release => "transfer",
        SettlementKind::Refund => "refund",
    };
    format!("{verb}:{milestone_id}:{round}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use MilestoneState as M;
    use PaymentState as P;
    use SettlementAction as Do;
    use SettlementKind as K;
    use SettlementStep as S;

    #[test]
    fn the_fee_is_rounded_down_and_never_exceeds_the_amount() {
        assert_eq!(
            split_fee(10_000, 250),
            Some(FeeSplit {
                payout_minor: 9_750,
                fee_minor: 250
            })
        );
        // 1% of 99 cents is 0.99: the platform gets 0, the freelancer all of it.
        assert_eq!(split_fee(99, 100).unwrap().fee_minor, 0);
        assert_eq!(split_fee(500, 0).unwrap().payout_minor, 500);
        assert_eq!(split_fee(500, 10_000).unwrap().payout_minor, 0);
        let big = split_fee(i64::MAX, 9_999).unwrap();
        assert_eq!(big.payout_minor + big.fee_minor, i64::MAX);
        assert_eq!(split_fee(0, 100), None);
        assert_eq!(split_fee(-5, 100), None);
        assert_eq!(split_fee(100, 10_001), None);
        assert_eq!(split_fee(100, -1), None);
    }

    #[test]
    fn only_a_provider_state_at_or_past_the_event_confirms_it() {
        assert!(provider_confirms(PaymentEvent::Succeeded, P::Escrowed));
        // Paid and already paid out since: the payment did succeed.
        assert!(provider_confirms(PaymentEvent::Succeeded, P::Released));
        assert!(provider_confirms(PaymentEvent::Succeeded, P::Refunded));
        // A forged or early "succeeded" while the provider still says pending.
        assert!(!provider_confirms(PaymentEvent::Succeeded, P::Pending));
        assert!(!provider_confirms(PaymentEvent::Succeeded, P::Failed));
        assert!(provider_confirms(PaymentEvent::Transferred, P::Released));
        assert!(!provider_confirms(PaymentEvent::Transferred, P::Escrowed));
        assert!(!provider_confirms(PaymentEvent::Transferred, P::Refunded));
        assert!(provider_confirms(PaymentEvent::Refunded, P::Refunded));
        assert!(!provider_confirms(PaymentEvent::Refunded, P::Released));
        assert!(provider_confirms(PaymentEvent::Failed, P::Failed));
        assert!(!provider_confirms(PaymentEvent::Failed, P::Escrowed));
    }

    #[test]
    fn a_release_calls_the_provider_once_then_waits_then_completes() {
        assert_eq!(
            next_action(K::Release, S::Start, P::Escrowed, M::Accepted),
            Do::CallProvider
        );
        assert_eq!(
            next_action(K::Release, S::Requested, P::Escrowed, M::Accepted),
            Do::AwaitEvent
        );
        assert_eq!(
            next_action(K::Release, S::Requested, P::Released, M::Accepted),
            Do::CompleteMilestone
        );
        // A crash after the milestone moved but before `done` was written.
        assert_eq!(
            next_action(K::Release, S::Requested, P::Released, M::Transferred),
            Do::Finish
        );
        assert_eq!(
            next_action(K::Release, S::Done, P::Released, M::Transferred),
            Do::Idle
        );
    }

    #[test]
    fn a_refund_calls_the_provider_then_finishes_on_its_event() {
        assert_eq!(
            next_action(K::Refund, S::Start, P::Escrowed, M::Refunded),
            Do::CallProvider
        );
        assert_eq!(
            next_action(K::Refund, S::Requested, P::Escrowed, M::Refunded),
            Do::AwaitEvent
        );
        assert_eq!(
            next_action(K::Refund, S::Requested, P::Refunded, M::Refunded),
            Do::Finish
        );
    }

    #[test]
    fn contradictions_stall_and_stalled_sagas_wait_for_an_admin() {
        // Money went back to the client while a release was under way: never pay it out.
        assert_eq!(
            next_action(K::Release, S::Requested, P::Refunded, M::Accepted),
            Do::Stall
        );
        // Paid out while a refund was pending.
        assert_eq!(
            next_action(K::Refund, S::Requested, P::Released, M::Refunded),
            Do::Stall
        );
        assert_eq!(
            next_action(K::Release, S::Stalled, P::Escrowed, M::Accepted),
            Do::Idle
        );
        // A dispute opened after acceptance pauses the release.
        assert_eq!(
            next_action(K::Release, S::Start, P::Escrowed, M::Disputed),
            Do::Idle
        );
    }

    #[test]
    fn settlements_start_only_for_escrowed_money() {
        assert_eq!(
            settlement_needed(M::Accepted, P::Escrowed),
            Some(K::Release)
        );
        assert_eq!(settlement_needed(M::Refunded, P::Escrowed), Some(K::Refund));
        // Paid after the funding deadline: the money goes back.
        assert_eq!(settlement_needed(M::Expired, P::Escrowed), Some(K::Refund));
        assert_eq!(settlement_needed(M::Refunded, P::Pending), None);
        // Refunded at the provider behind our back: a release that will stall.
        assert_eq!(
            settlement_needed(M::Accepted, P::Refunded),
            Some(K::Release)
        );
        assert_eq!(
            next_action(K::Release, S::Start, P::Refunded, M::Accepted),
            Do::Stall
        );
        assert_eq!(settlement_needed(M::Transferred, P::Released), None);
        assert_eq!(settlement_needed(M::Funded, P::Escrowed), None);
    }

    #[test]
    fn provider_keys_differ_by_kind_and_round() {
        let a = provider_call_key("m1", K::Release, 0);
        assert_eq!(a, "transfer:m1:0");
        assert_ne!(a, provider_call_key("m1", K::Release, 1));
        assert_ne!(a, provider_call_key("m1", K::Refund, 0));
        assert_ne!(a, provider_call_key("m2", K::Release, 0));
    }
}
