//! Shared set-up for the `escrow_*` tests: callers, terms, and milestones driven through the
//! services into a given state.
#![allow(dead_code)]

use enclosure_api::auth::{Caller, Role};
use enclosure_api::escrow::{Escrow, MilestoneView, NewMilestone, NewRoom, RoomView};
use enclosure_api::store::Store;
use enclosure_policy::escrow::{MilestoneState, PaymentEvent};

/// Setup time: every deadline lies after it.
pub const T0: i64 = 1_800_000_000_000;
/// Funding deadline of every fixture milestone.
pub const FUNDING_DEADLINE: i64 = T0 + 3_600_000;
/// Delivery deadline.
pub const DELIVERY_DEADLINE: i64 = T0 + 7_200_000;
/// Inspection period.
pub const INSPECTION_MS: i64 = 600_000;
/// A time after every deadline and inspection period.
pub const LATE: i64 = T0 + 100_000_000;

pub fn caller(sub: &str, role: Role) -> Caller {
    Caller {
        sub: sub.into(),
        role,
    }
}

pub fn alice() -> Caller {
    caller("alice", Role::Client)
}
pub fn bob() -> Caller {
    caller("bob", Role::Freelancer)
}
pub fn admin() -> Caller {
    caller("root", Role::Admin)
}
pub fn system() -> Caller {
    caller("system:test", Role::System)
}
pub fn reviewer() -> Caller {
    caller("rita", Role::Reviewer)
}
/// A client who is no member of alice's rooms.
pub fn mallory() -> Caller {
    caller("mallory", Role::Client)
}

pub fn at(store: &Store, now_ms: i64) -> Escrow<'_> {
    Escrow { store, now_ms }
}

pub fn terms(milestones: usize) -> NewRoom {
    NewRoom {
        title: "logo design".into(),
        freelancer: "bob".into(),
        currency: "EUR".into(),
        platform_fee_bps: 500,
        inspection_period_ms: INSPECTION_MS,
        max_revisions: 1,
        milestones: (0..milestones)
            .map(|i| NewMilestone {
                title: format!("part {i}"),
                price_minor: 10_000,
                funding_deadline_ms: FUNDING_DEADLINE,
                delivery_deadline_ms: DELIVERY_DEADLINE,
            })
            .collect(),
    }
}

/// A room both parties accepted.
pub async fn active_room(store: &Store, milestones: usize) -> RoomView {
    let e = at(store, T0);
    let room = e
        .create_room(&alice(), terms(milestones))
        .await
        .expect("create");
    e.accept_terms(&alice(), &room.id, None)
        .await
        .expect("client accepts");
    let room = e
        .accept_terms(&bob(), &room.id, None)
        .await
        .expect("freelancer accepts");
    assert_eq!(room.state, "active");
    room
}

/// Funds a milestone through a payment and the provider's success event.
pub async fn fund(store: &Store, milestone_id: &str) -> MilestoneView {
    let e = at(store, T0);
    let pid = format!("pi_{milestone_id}");
    e.register_payment(&system(), milestone_id, "sandbox", &pid)
        .await
        .expect("payment");
    e.apply_payment_event(&system(), "sandbox", &pid, PaymentEvent::Succeeded)
        .await
        .expect("succeeded");
    current(store, milestone_id).await
}

/// The milestone as the system sees it.
pub async fn current(store: &Store, milestone_id: &str) -> MilestoneView {
    let e = at(store, T0);
    let sys = system();
    let rooms = store
        .milestone(
            enclosure_api::store::escrow::Viewer {
                sub: &sys.sub,
                role: "system",
            },
            milestone_id,
        )
        .await
        .expect("read")
        .expect("exists");
    let _ = e;
    MilestoneView::from(&rooms.1)
}

/// A fresh active room with one milestone driven into `state` through the services.
/// Returns `None` for states no service reaches (transferred, needs_admin: the swap saga).
pub async fn milestone_in(store: &Store, state: MilestoneState) -> Option<MilestoneView> {
    let room = active_room(store, 1).await;
    let id = room.milestones[0].id.clone();
    let e = at(store, T0);
    let m = match state {
        MilestoneState::Open => current(store, &id).await,
        MilestoneState::Expired => at(store, LATE)
            .expire(&system(), &id)
            .await
            .expect("expire"),
        MilestoneState::Transferred | MilestoneState::NeedsAdmin => return None,
        _ => {
            let funded = fund(store, &id).await;
            match state {
                MilestoneState::Funded => funded,
                MilestoneState::Refunded => at(store, LATE)
                    .refund_late(&alice(), &id, None)
                    .await
                    .expect("refund"),
                MilestoneState::Disputed => e.dispute(&bob(), &id, None).await.expect("dispute"),
                _ => {
                    let s = e.submit(&bob(), &id, None).await.expect("submit");
                    if state == MilestoneState::Submitted {
                        s
                    } else {
                        let v = e.validate(&system(), &id, None).await.expect("validate");
                        if state == MilestoneState::Validated {
                            v
                        } else {
                            e.accept(&alice(), &id, None).await.expect("accept")
                        }
                    }
                }
            }
        }
    };
    assert_eq!(m.state, state.as_str());
    Some(m)
}
