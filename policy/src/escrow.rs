//! Escrow state machines as data: rooms, milestones and payments, with one checking function.
//!
//! Every allowed move is a row of a table: from-state, action, to-state, the roles that may take
//! it, and the guard it needs. [`milestone_transition`] (and its room and payment twins) is the
//! only way to compute a next state; anything not in a table is refused with a typed error.
//! The database triggers enforce the same (from, to) pairs, listed by [`milestone_pairs`] and
//! friends, so a bug in a service cannot write a state the table does not allow.
//!
//! Payment states move only on verified provider events (role `System`), never on a request of
//! the client (threat T7). Admins only resolve disputes and stuck swaps (T4). The reviewer role
//! appears in no table: it can read and annotate, never move anything (T6).

use serde::{Deserialize, Serialize};

/// Who is acting, as far as escrow rules care. Taken from verified token claims only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Actor {
    /// The party paying for the work.
    Client,
    /// The party doing the work.
    Freelancer,
    /// An operator who resolves disputes and stuck swaps, and nothing else.
    Admin,
    /// The platform itself: provider events, deadlines, validation, the swap saga.
    System,
    /// A read-only reviewer (for example an AI assistant): reads metadata, writes notes.
    Reviewer,
}

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransitionError {
    /// The action is not allowed from this state at all.
    #[error("{action} is not allowed from {from}")]
    Illegal {
        /// The current state.
        from: &'static str,
        /// The attempted action.
        action: &'static str,
    },
    /// The action exists from this state, but not for this role.
    #[error("{actor:?} may not {action}")]
    Forbidden {
        /// Who tried.
        actor: Actor,
        /// The attempted action.
        action: &'static str,
    },
    /// The action is allowed for this role and state, but its precondition does not hold.
    #[error("{action}: {reason}")]
    GuardFailed {
        /// The attempted action.
        action: &'static str,
        /// Which precondition failed.
        reason: &'static str,
    },
}

/// Facts about a milestone that guards consult; the caller reads them, time included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MilestoneFacts {
    /// Unix milliseconds now.
    pub now_ms: i64,
    /// When the milestone must be funded by.
    pub funding_deadline_ms: i64,
    /// When the work must be submitted by.
    pub delivery_deadline_ms: i64,
    /// When the client's inspection period of the current submission ends.
    pub inspection_ends_ms: i64,
    /// Rejections so far.
    pub revisions_used: u32,
    /// Rejections the terms allow.
    pub max_revisions: u32,
    /// Whether the client has asked to cancel.
    pub client_cancelled: bool,
    /// Whether the freelancer has asked to cancel.
    pub freelancer_cancelled: bool,
}

/// A precondition on a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    None,
    FundingDeadlinePassed,
    DeliveryDeadlinePassed,
    InspectionPeriodOver,
    RevisionsLeft,
    BothCancelled,
}

impl Guard {
    fn check(self, f: &MilestoneFacts) -> Result<(), &'static str> {
        let ok = match self {
            Guard::None => true,
            Guard::FundingDeadlinePassed => f.now_ms > f.funding_deadline_ms,
            Guard::DeliveryDeadlinePassed => f.now_ms > f.delivery_deadline_ms,
            Guard::InspectionPeriodOver => f.now_ms > f.inspection_ends_ms,
            Guard::RevisionsLeft => f.revisions_used < f.max_revisions,
            Guard::BothCancelled => f.client_cancelled && f.freelancer_cancelled,
        };
        if ok {
            return Ok(());
        }
        Err(match self {
            Guard::None => "",
            Guard::FundingDeadlinePassed => "the funding deadline has not passed",
            Guard::DeliveryDeadlinePassed => "the delivery deadline has not passed",
            Guard::InspectionPeriodOver => "the inspection period has not ended",
            Guard::RevisionsLeft => "no revisions are left under the terms",
            Guard::BothCancelled => "both parties must ask to cancel",
        })
    }
}

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v),+];

            /// The stable snake_case name, as stored in the database.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }

            /// Parses a stored name.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($name::$v),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use named_enum;

named_enum!(
    /// A room: the agreement between one client and one freelancer.
    RoomState {
        /// Terms proposed, not yet accepted by both.
        Draft => "draft",
        /// Both parties accepted the terms.
        Active => "active",
        /// Every milestone settled.
        Closed => "closed",
        /// Abandoned before any funding.
        Cancelled => "cancelled",
    }
);

named_enum!(
    /// Actions on a room.
    RoomAction {
        /// Both parties have accepted the terms (the second acceptance triggers it).
        Activate => "activate",
        /// Every milestone reached a terminal state.
        Close => "close",
        /// A party abandons the room before any milestone was funded.
        Cancel => "cancel",
    }
);

named_enum!(
    /// A milestone (a "container" in the protocol document).
    MilestoneState {
        /// Waiting for funding.
        Open => "open",
        /// The price is escrowed.
        Funded => "funded",
        /// The freelancer submitted artifacts.
        Submitted => "submitted",
        /// The system validated the submission (sizes and hashes frozen).
        Validated => "validated",
        /// The client accepted, or the inspection period ran out.
        Accepted => "accepted",
        /// The swap completed: money to the freelancer, download to the client.
        Transferred => "transferred",
        /// A party disputes; an admin decides.
        Disputed => "disputed",
        /// The swap could not complete; an admin must look.
        NeedsAdmin => "needs_admin",
        /// The escrow went back to the client.
        Refunded => "refunded",
        /// Never funded in time.
        Expired => "expired",
    }
);

named_enum!(
    /// Actions on a milestone.
    MilestoneAction {
        /// The payment provider confirmed the escrow (system, on a verified event).
        Fund => "fund",
        /// The freelancer submits uploaded artifacts.
        Submit => "submit",
        /// The system checked the artifacts against what was uploaded.
        Validate => "validate",
        /// The client accepts the validated work.
        Accept => "accept",
        /// The inspection period ended without a decision.
        AutoAccept => "auto_accept",
        /// The client rejects the work; it goes back for a revision.
        Reject => "reject",
        /// A party disputes.
        Dispute => "dispute",
        /// An admin resolves a dispute (or a stuck swap) in the freelancer's favour.
        ResolveRelease => "resolve_release",
        /// An admin resolves a dispute (or a stuck swap) with a refund.
        ResolveRefund => "resolve_refund",
        /// The swap completed.
        Transfer => "transfer",
        /// A swap step cannot complete.
        Stall => "stall",
        /// The funding deadline passed.
        Expire => "expire",
        /// The client asks for a refund after the delivery deadline passed with no submission.
        RefundLate => "refund_late",
        /// Both parties cancelled.
        CancelMutual => "cancel_mutual",
    }
);

named_enum!(
    /// An escrowed payment at the provider.
    PaymentState {
        /// Created; the client has not paid yet.
        Pending => "pending",
        /// The provider holds the money.
        Escrowed => "escrowed",
        /// Paid out to the freelancer (minus the platform fee).
        Released => "released",
        /// Returned to the client.
        Refunded => "refunded",
        /// The provider reports the payment failed.
        Failed => "failed",
    }
);

named_enum!(
    /// Verified provider events that move a payment.
    PaymentEvent {
        /// Money received and held.
        Succeeded => "succeeded",
        /// Money paid out.
        Transferred => "transferred",
        /// Money returned.
        Refunded => "refunded",
        /// Payment failed.
        Failed => "failed",
    }
);

use Actor::{Admin, Client, Freelancer, System};

const PARTIES: &[Actor] = &[Client, Freelancer];

/// Room transitions: (from, action, to, who).
const ROOM: &[(RoomState, RoomAction, RoomState, &[Actor])] = &[
    (
        RoomState::Draft,
        RoomAction::Activate,
        RoomState::Active,
        PARTIES,
    ),
    (
        RoomState::Draft,
        RoomAction::Cancel,
        RoomState::Cancelled,
        PARTIES,
    ),
    // Cancelling an active room is allowed only before funding; the service checks that no
    // milestone left `open` (a guard on data outside the room row).
    (
        RoomState::Active,
        RoomAction::Cancel,
        RoomState::Cancelled,
        PARTIES,
    ),
    (
        RoomState::Active,
        RoomAction::Close,
        RoomState::Closed,
        &[System],
    ),
];

use MilestoneAction as A;
use MilestoneState as M;

/// Milestone transitions: (from, action, to, who, guard).
const MILESTONE: &[(M, A, M, &[Actor], Guard)] = &[
    (M::Open, A::Fund, M::Funded, &[System], Guard::None),
    (
        M::Open,
        A::Expire,
        M::Expired,
        &[System],
        Guard::FundingDeadlinePassed,
    ),
    (
        M::Funded,
        A::Submit,
        M::Submitted,
        &[Freelancer],
        Guard::None,
    ),
    (
        M::Funded,
        A::RefundLate,
        M::Refunded,
        &[Client],
        Guard::DeliveryDeadlinePassed,
    ),
    (
        M::Funded,
        A::CancelMutual,
        M::Refunded,
        PARTIES,
        Guard::BothCancelled,
    ),
    (
        M::Submitted,
        A::Validate,
        M::Validated,
        &[System],
        Guard::None,
    ),
    (M::Validated, A::Accept, M::Accepted, &[Client], Guard::None),
    (
        M::Validated,
        A::AutoAccept,
        M::Accepted,
        &[System],
        Guard::InspectionPeriodOver,
    ),
    (
        M::Validated,
        A::Reject,
        M::Funded,
        &[Client],
        Guard::RevisionsLeft,
    ),
    (
        M::Accepted,
        A::Transfer,
        M::Transferred,
        &[System],
        Guard::None,
    ),
    (M::Accepted, A::Stall, M::NeedsAdmin, &[System], Guard::None),
    (M::Funded, A::Dispute, M::Disputed, PARTIES, Guard::None),
    (M::Submitted, A::Dispute, M::Disputed, PARTIES, Guard::None),
    (M::Validated, A::Dispute, M::Disputed, PARTIES, Guard::None),
    (M::Accepted, A::Dispute, M::Disputed, PARTIES, Guard::None),
    (
        M::Disputed,
        A::ResolveRelease,
        M::Accepted,
        &[Admin],
        Guard::None,
    ),
    (
        M::Disputed,
        A::ResolveRefund,
        M::Refunded,
        &[Admin],
        Guard::None,
    ),
    // A stuck swap: the admin sends it round again, or refunds when nothing was paid out.
    (
        M::NeedsAdmin,
        A::ResolveRelease,
        M::Accepted,
        &[Admin],
        Guard::None,
    ),
    (
        M::NeedsAdmin,
        A::ResolveRefund,
        M::Refunded,
        &[Admin],
        Guard::None,
    ),
];

/// Payment transitions: (from, event, to). Only `System` applies provider events.
const PAYMENT: &[(PaymentState, PaymentEvent, PaymentState)] = &[
    (
        PaymentState::Pending,
        PaymentEvent::Succeeded,
        PaymentState::Escrowed,
    ),
    (
        PaymentState::Pending,
        PaymentEvent::Failed,
        PaymentState::Failed,
    ),
    (
        PaymentState::Escrowed,
        PaymentEvent::Transferred,
        PaymentState::Released,
    ),
    (
        PaymentState::Escrowed,
        PaymentEvent::Refunded,
        PaymentState::Refunded,
    ),
];

/// Whether a milestone state is final.
pub fn milestone_is_terminal(s: MilestoneState) -> bool {
    matches!(s, M::Transferred | M::Refunded | M::Expired)
}

/// The next milestone state, or why not.
pub fn milestone_transition(
    from: MilestoneState,
    action: MilestoneAction,
    actor: Actor,
    facts: &MilestoneFacts,
) -> Result<MilestoneState, TransitionError> {
    let rows: Vec<_> = MILESTONE
        .iter()
        .filter(|(f, a, ..)| *f == from && *a == action)
        .collect();
    let Some((_, _, to, who, guard)) = rows.first() else {
        return Err(TransitionError::Illegal {
            from: from.as_str(),
            action: action.as_str(),
        });
    };
    if !who.contains(&actor) {
        return Err(TransitionError::Forbidden {
            actor,
            action: action.as_str(),
        });
    }
    guard
        .check(facts)
        .map_err(|reason| TransitionError::GuardFailed {
            action: action.as_str(),
            reason,
        })?;
    Ok(*to)
}

/// The next room state, or why not.
pub fn room_transition(
    from: RoomState,
    action: RoomAction,
    actor: Actor,
) -> Result<RoomState, TransitionError> {
    let Some((_, _, to, who)) = ROOM.iter().find(|(f, a, ..)| *f == from && *a == action) else {
        return Err(TransitionError::Illegal {
            from: from.as_str(),
            action: action.as_str(),
        });
    };
    if !who.contains(&actor) {
        return Err(TransitionError::Forbidden {
            actor,
            action: action.as_str(),
        });
    }
    Ok(*to)
}

/// The next payment state for a verified provider event, or why not.
pub fn payment_transition(
    from: PaymentState,
    event: PaymentEvent,
    actor: Actor,
) -> Result<PaymentState, TransitionError> {
    if actor != System {
        return Err(TransitionError::Forbidden {
            actor,
            action: event.as_str(),
        });
    }
    PAYMENT
        .iter()
        .find(|(f, e, _)| *f == from && *e == event)
        .map(|(_, _, to)| *to)
        .ok_or(TransitionError::Illegal {
            from: from.as_str(),
            action: event.as_str(),
        })
}

/// The state a payment event leads to (each event has exactly one in the table).
pub fn payment_event_target(event: PaymentEvent) -> Option<PaymentState> {
    PAYMENT
        .iter()
        .find(|(_, e, _)| *e == event)
        .map(|(_, _, to)| *to)
}

/// The state `event` moves a payment at `from` to, if the table has that move.
pub fn payment_next(from: PaymentState, event: PaymentEvent) -> Option<PaymentState> {
    PAYMENT
        .iter()
        .find(|(f, e, _)| *f == from && *e == event)
        .map(|(_, _, to)| *to)
}

fn dedup(mut v: Vec<(&'static str, &'static str)>) -> Vec<(&'static str, &'static str)> {
    v.sort();
    v.dedup();
    v
}

/// Every (from, to) pair a milestone may take: what the database trigger allows.
pub fn milestone_pairs() -> Vec<(&'static str, &'static str)> {
    dedup(
        MILESTONE
            .iter()
            .map(|(f, _, t, ..)| (f.as_str(), t.as_str()))
            .collect(),
    )
}

/// Every (from, to) pair a room may take.
pub fn room_pairs() -> Vec<(&'static str, &'static str)> {
    dedup(
        ROOM.iter()
            .map(|(f, _, t, _)| (f.as_str(), t.as_str()))
            .collect(),
    )
}

/// Every (from, to) pair a payment may take.
pub fn payment_pairs() -> Vec<(&'static str, &'static str)> {
    dedup(
        PAYMENT
            .iter()
            .map(|(f, _, t)| (f.as_str(), t.as_str()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> MilestoneFacts {
        MilestoneFacts {
            now_ms: 1_000,
            funding_deadline_ms: 5_000,
            delivery_deadline_ms: 10_000,
            inspection_ends_ms: 20_000,
            revisions_used: 0,
            max_revisions: 2,
            client_cancelled: false,
            freelancer_cancelled: false,
        }
    }

    #[test]
    fn the_happy_path() {
        let f = facts();
        let mut s = M::Open;
        for (action, actor) in [
            (A::Fund, System),
            (A::Submit, Freelancer),
            (A::Validate, System),
            (A::Accept, Client),
            (A::Transfer, System),
        ] {
            s = milestone_transition(s, action, actor, &f).unwrap();
        }
        assert_eq!(s, M::Transferred);
        assert!(milestone_is_terminal(s));
    }

    #[test]
    fn every_role_and_action_from_every_state_is_decided_by_the_table() {
        // Exhaustive: anything not listed is refused, and terminal states never move.
        let f = MilestoneFacts {
            now_ms: i64::MAX,
            client_cancelled: true,
            freelancer_cancelled: true,
            ..facts()
        };
        let actors = [Client, Freelancer, Admin, System, Actor::Reviewer];
        for &from in M::ALL {
            for &action in A::ALL {
                for actor in actors {
                    let listed = MILESTONE.iter().any(|(fr, a, _, who, _)| {
                        *fr == from && *a == action && who.contains(&actor)
                    });
                    let got = milestone_transition(from, action, actor, &f);
                    assert_eq!(got.is_ok(), listed, "{from} {action} by {actor:?}: {got:?}");
                    if milestone_is_terminal(from) {
                        assert!(got.is_err());
                    }
                    if actor == Actor::Reviewer {
                        assert!(matches!(
                            got,
                            Err(TransitionError::Forbidden { .. })
                                | Err(TransitionError::Illegal { .. })
                        ));
                    }
                }
            }
        }
    }

    #[test]
    fn guards_hold() {
        let f = facts();
        let e = milestone_transition(M::Open, A::Expire, System, &f).unwrap_err();
        assert!(matches!(e, TransitionError::GuardFailed { .. }));
        let late = MilestoneFacts { now_ms: 6_000, ..f };
        assert_eq!(
            milestone_transition(M::Open, A::Expire, System, &late),
            Ok(M::Expired)
        );
        let used_up = MilestoneFacts {
            revisions_used: 2,
            ..f
        };
        assert!(milestone_transition(M::Validated, A::Reject, Client, &used_up).is_err());
        assert_eq!(
            milestone_transition(M::Validated, A::Reject, Client, &f),
            Ok(M::Funded)
        );
        let one_side = MilestoneFacts {
            client_cancelled: true,
            ..f
        };
        assert!(milestone_transition(M::Funded, A::CancelMutual, Client, &one_side).is_err());
        assert!(milestone_transition(M::Validated, A::AutoAccept, System, &f).is_err());
        let after = MilestoneFacts {
            now_ms: 30_000,
            ..f
        };
        assert_eq!(
            milestone_transition(M::Validated, A::AutoAccept, System, &after),
            Ok(M::Accepted)
        );
    }

    #[test]
    fn roles_are_kept_apart() {
        let f = facts();
        // The client cannot fund by asking: funding comes from a provider event.
        assert!(matches!(
            milestone_transition(M::Open, A::Fund, Client, &f),
            Err(TransitionError::Forbidden { .. })
        ));
        // The freelancer cannot accept their own work; admins cannot accept or transfer.
        assert!(milestone_transition(M::Validated, A::Accept, Freelancer, &f).is_err());
        assert!(milestone_transition(M::Validated, A::Accept, Admin, &f).is_err());
        assert!(milestone_transition(M::Accepted, A::Transfer, Admin, &f).is_err());
        // Payments move only for the system.
        assert!(
            payment_transition(PaymentState::Pending, PaymentEvent::Succeeded, Client).is_err()
        );
        assert_eq!(
            payment_transition(PaymentState::Pending, PaymentEvent::Succeeded, System),
            Ok(PaymentState::Escrowed)
        );
        assert!(
            payment_transition(PaymentState::Released, PaymentEvent::Refunded, System).is_err()
        );
    }

    #[test]
    fn names_round_trip_and_pairs_are_complete() {
        for &s in M::ALL {
            assert_eq!(M::parse(s.as_str()), Some(s));
        }
        assert!(milestone_pairs().contains(&("disputed", "accepted")));
        assert!(!milestone_pairs().contains(&("open", "transferred")));
        assert_eq!(room_pairs().len(), 4);
        assert_eq!(payment_pairs().len(), 4);
    }
}
