//! Milestone operations, one named method per action of the policy table, and the system's
//! payment operations (register an escrow payment, apply a verified provider event).

use enclosure_policy::escrow::{
    Actor, MilestoneAction, MilestoneState, PaymentEvent, milestone_is_terminal,
    milestone_transition, payment_transition,
};

use super::artifacts::Check;
use super::{
    Escrow, MilestoneView, PaymentView, Subject, actor_in, check_version, ever_allowed, facts,
    lost_race, refused, viewer,
};
use crate::ApiError;
use crate::artifacts::ArtifactStore;
use crate::auth::{Caller, Role};
use crate::store::escrow::{
    MilestoneChange, MilestoneRecord, Moved, PaymentEventWrite, PaymentRecord, RoomRecord,
};

/// How an admin resolves a dispute (or a stuck swap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// In the freelancer's favour: the milestone goes on to the swap.
    Release,
    /// In the client's favour: the escrow goes back.
    Refund,
}

/// The change an allowed action makes besides the state.
fn change_for(
    action: MilestoneAction,
    to: MilestoneState,
    room: &RoomRecord,
    m: &MilestoneRecord,
    now_ms: i64,
) -> MilestoneChange {
    let mut c = MilestoneChange {
        to,
        revisions_used: m.revisions_used,
        inspection_ends_ms: m.inspection_ends_ms,
        client_cancelled: m.client_cancelled,
        freelancer_cancelled: m.freelancer_cancelled,
    };
    match action {
        // The inspection period starts when the system validated the submission.
        MilestoneAction::Validate => {
            c.inspection_ends_ms = Some(now_ms.saturating_add(room.inspection_period_ms));
        }
        MilestoneAction::Reject => {
            c.revisions_used += 1;
            c.inspection_ends_ms = None;
        }
        MilestoneAction::Submit => c.inspection_ends_ms = None,
        _ => {}
    }
    c
}

impl Escrow<'_> {
    /// Checks and makes one milestone move for `caller`, auditing the attempt as
    /// `escrow.milestone.<action>`.
    async fn act(
        &self,
        caller: &Caller,
        milestone_id: &str,
        action: MilestoneAction,
        expected_version: Option<i64>,
    ) -> Result<MilestoneView, ApiError> {
        self.act_checked(caller, milestone_id, action, expected_version, Check::None)
            .await
    }

    /// [`act`](Self::act) with an artifact check between the policy's yes and the write, so
    /// a wrong role or state is refused as such before the artifact store is asked anything.
    async fn act_checked(
        &self,
        caller: &Caller,
        milestone_id: &str,
        action: MilestoneAction,
        expected_version: Option<i64>,
        check: Check<'_>,
    ) -> Result<MilestoneView, ApiError> {
        let mut subject = Subject {
            milestone_id: Some(milestone_id.to_string()),
            ..Subject::default()
        };
        let mut settled_room = None;
        let result = async {
            let (room, m) = self
                .store
                .milestone(viewer(caller), milestone_id)
                .await?
                .ok_or(ApiError::NotFound)?;
            subject.room_id = Some(room.id.clone());
            subject.visible = true;
            let actor = actor_in(caller, &room)?;
            if !ever_allowed(action, actor) {
                return Err(ApiError::Forbidden);
            }
            check_version(expected_version, m.version, "milestone")?;
            if action == MilestoneAction::Dispute && m.state == MilestoneState::Accepted {
                // Once the swap has begun, money may be on its way: no dispute can stop it.
                let started = self.store.settlements_of(&m.id).await?;
                if started
                    .iter()
                    .any(|s| s.kind == enclosure_policy::settlement::SettlementKind::Release)
                {
                    return Err(ApiError::Conflict {
                        code: "guard_failed",
                        detail: "the swap is under way; it can no longer be disputed".into(),
                    });
                }
            }
            if room.state != enclosure_policy::escrow::RoomState::Active {
                return Err(ApiError::Conflict {
                    code: "illegal_transition",
                    detail: format!("milestones move only in an active room, not {}", room.state),
                });
            }
            let f = facts(&room, &m, self.now_ms);
            let change = if action == MilestoneAction::CancelMutual {
                // Each party asks once; the second request refunds.
                milestone_transition(m.state, action, actor, &facts_both_cancelled(&f))
                    .map_err(refused)?;
                let mut c = change_for(action, m.state, &room, &m, self.now_ms);
                let already = match actor {
                    Actor::Client => &mut c.client_cancelled,
                    _ => &mut c.freelancer_cancelled,
                };
                if *already {
                    return Err(ApiError::Conflict {
                        code: "guard_failed",
                        detail: "you already asked to cancel".into(),
                    });
                }
                *already = true;
                if c.client_cancelled && c.freelancer_cancelled {
                    c.to = MilestoneState::Refunded;
                }
                c
            } else {
                let to = milestone_transition(m.state, action, actor, &f).map_err(refused)?;
                change_for(action, to, &room, &m, self.now_ms)
            };
            self.check_artifacts(caller, &m, check).await?;
            match self
                .store
                .move_milestone(viewer(caller), &m, change, self.now_ms)
                .await?
            {
                Moved::Done(moved) => {
                    subject.moved = Some(format!("{}->{}", m.state, moved.state));
                    if milestone_is_terminal(moved.state) {
                        settled_room = Some(room.id.clone());
                    }
                    Ok(MilestoneView::from(&moved))
                }
                Moved::LostRace => Err(lost_race("milestone")),
            }
        }
        .await;
        let action_name = format!("escrow.milestone.{}", action.as_str());
        self.finish_move(caller, &action_name, &subject, settled_room, result)
            .await
    }

    /// The freelancer submits the uploaded work of a funded milestone: at least one artifact
    /// registered since the last submission, each still in `artifacts` with its registered
    /// size and SHA-256 (409 `guard_failed`, `artifact_missing`, `artifact_mismatch`; 503
    /// `artifacts_unavailable` without a store). The move freezes them in the same write.
    pub async fn submit(
        &self,
        caller: &Caller,
        milestone_id: &str,
        expected_version: Option<i64>,
        artifacts: Option<&ArtifactStore>,
    ) -> Result<MilestoneView, ApiError> {
        self.act_checked(
            caller,
            milestone_id,
            MilestoneAction::Submit,
            expected_version,
            Check::Submission(artifacts),
        )
        .await
    }

    /// The system validates a submission: it reads every frozen artifact back from
    /// `artifacts` and hashes it itself, and moves to validated only when all match (409
    /// `artifact_missing` or `artifact_mismatch` otherwise, the state unchanged); the
    /// client's inspection period starts. The scheduler calls this as the system.
    pub async fn validate(
        &self,
        caller: &Caller,
        milestone_id: &str,
        expected_version: Option<i64>,
        artifacts: Option<&ArtifactStore>,
    ) -> Result<MilestoneView, ApiError> {
        self.act_checked(
            caller,
            milestone_id,
            MilestoneAction::Validate,
            expected_version,
            Check::Validation(artifacts),
        )
        .await
    }

    /// The client accepts validated work.
    pub async fn accept(
        &self,
        caller: &Caller,
        milestone_id: &str,
        expected_version: Option<i64>,
    ) -> Result<MilestoneView, ApiError> {
        self.act(
            caller,
            milestone_id,
            MilestoneAction::Accept,
            expected_version,
        )
        .await
    }

    /// The client rejects validated work, using one revision; it goes back to funded.
    pub async fn reject(
        &self,
        caller: &Caller,
        milestone_id: &str,
        expected_version: Option<i64>,
    ) -> Result<MilestoneView, ApiError> {
        self.act(
            caller,
            milestone_id,
            MilestoneAction::Reject,
            expected_version,
        )
        .await
    }

    /// Either party disputes, from funded through accepted.
    pub async fn dispute(
        &self,
        caller: &Caller,
        milestone_id: &str,
        expected_version: Option<i64>,
    ) -> Result<MilestoneView, ApiError> {
        self.act(
            caller,
            milestone_id,
            MilestoneAction::Dispute,
            expected_version,
        )
        .await
    }

    /// An admin resolves a dispute or a stuck swap.
    pub async fn resolve(
        &self,
        caller: &Caller,
        milestone_id: &str,
        resolution: Resolution,
        expected_version: Option<i64>,
    ) -> Result<MilestoneView, ApiError> {
        let action = match resolution {
            Resolution::Release => MilestoneAction::ResolveRelease,
            Resolution::Refund => MilestoneAction::ResolveRefund,
        };
        self.act(caller, milestone_id, action, expected_version)
            .await
    }

    /// The system expires an open milestone whose funding deadline passed.
    pub async fn expire(
        &self,
        caller: &Caller,
        milestone_id: &str,
    ) -> Result<MilestoneView, ApiError> {
        self.act(caller, milestone_id, MilestoneAction::Expire, None)
            .await
    }

    /// The system accepts a validated milestone whose inspection period ended.
    pub async fn auto_accept(
        &self,
        caller: &Caller,
        milestone_id: &str,
    ) -> Result<MilestoneView, ApiError> {
        self.act(caller, milestone_id, MilestoneAction::AutoAccept, None)
            .await
    }

    /// The client asks for a refund after the delivery deadline passed with no submission.
    pub async fn refund_late(
        &self,
        caller: &Caller,
        milestone_id: &str,
        expected_version: Option<i64>,
    ) -> Result<MilestoneView, ApiError> {
        self.act(
            caller,
            milestone_id,
            MilestoneAction::RefundLate,
            expected_version,
        )
        .await
    }

    /// A party asks to cancel a funded milestone; when both asked, it is refunded.
    pub async fn cancel_milestone(
        &self,
        caller: &Caller,
        milestone_id: &str,
        expected_version: Option<i64>,
    ) -> Result<MilestoneView, ApiError> {
        self.act(
            caller,
            milestone_id,
            MilestoneAction::CancelMutual,
            expected_version,
        )
        .await
    }

    /// The system completes a swap whose payout the provider confirmed: accepted →
    /// transferred, which is what lets the client download.
    pub(super) async fn complete_swap(
        &self,
        caller: &Caller,
        milestone_id: &str,
    ) -> Result<MilestoneView, ApiError> {
        self.act(caller, milestone_id, MilestoneAction::Transfer, None)
            .await
    }

    /// The system stalls a swap that cannot complete: accepted → needs_admin.
    pub(super) async fn stall_swap(
        &self,
        caller: &Caller,
        milestone_id: &str,
    ) -> Result<MilestoneView, ApiError> {
        self.act(caller, milestone_id, MilestoneAction::Stall, None)
            .await
    }

    /// The system records the provider's payment for an open milestone of an active room,
    /// for its price in the room's currency.
    pub async fn register_payment(
        &self,
        caller: &Caller,
        milestone_id: &str,
        provider: &str,
        provider_payment_id: &str,
    ) -> Result<PaymentView, ApiError> {
        let mut subject = Subject {
            milestone_id: Some(milestone_id.to_string()),
            ..Subject::default()
        };
        let result = async {
            if caller.role != Role::System {
                return Err(ApiError::Forbidden);
            }
            if provider.is_empty() || provider_payment_id.is_empty() {
                return Err(ApiError::BadRequest(
                    "provider and provider_payment_id are required".into(),
                ));
            }
            let (room, m) = self
                .store
                .milestone(viewer(caller), milestone_id)
                .await?
                .ok_or(ApiError::NotFound)?;
            subject.room_id = Some(room.id.clone());
            subject.visible = true;
            if room.state != enclosure_policy::escrow::RoomState::Active
                || m.state != MilestoneState::Open
            {
                return Err(ApiError::Conflict {
                    code: "illegal_transition",
                    detail: "payments are created for open milestones of active rooms".into(),
                });
            }
            let p = pending_payment(&room, &m, provider, provider_payment_id, self.now_ms);
            self.store.insert_payment(&p).await?;
            subject.moved = Some("->pending".into());
            Ok(PaymentView::from(&p))
        }
        .await;
        self.audit_as(caller, "escrow.payment.create", &subject, &result)
            .await;
        result
    }

    /// The system applies a verified provider event (T7: payments move on provider events
    /// only). A payment that succeeded funds its milestone in the same transaction.
    pub async fn apply_payment_event(
        &self,
        caller: &Caller,
        provider: &str,
        provider_payment_id: &str,
        event: PaymentEvent,
    ) -> Result<PaymentView, ApiError> {
        let mut subject = Subject::default();
        let mut settled_room = None;
        let result = async {
            if caller.role != Role::System {
                return Err(ApiError::Forbidden);
            }
            let p = self
                .store
                .payment_by_provider_id(provider, provider_payment_id)
                .await?
                .ok_or(ApiError::NotFound)?;
            subject.room_id = Some(p.room_id.clone());
            subject.milestone_id = Some(p.milestone_id.clone());
            subject.visible = true;
            let to = payment_transition(p.state, event, Actor::System).map_err(refused)?;
            let read = match event {
                PaymentEvent::Succeeded => Some(
                    self.store
                        .milestone(viewer(caller), &p.milestone_id)
                        .await?
                        .ok_or(ApiError::NotFound)?,
                ),
                _ => None,
            };
            let milestone = match &read {
                // Paid after the milestone expired: the money is escrowed without funding
                // anything, and a refund settlement returns it.
                Some((_, m)) if m.state != MilestoneState::Open => None,
                Some((room, m)) => {
                    let f = facts(room, m, self.now_ms);
                    let next =
                        milestone_transition(m.state, MilestoneAction::Fund, Actor::System, &f)
                            .map_err(refused)?;
                    Some((
                        m,
                        change_for(MilestoneAction::Fund, next, room, m, self.now_ms),
                    ))
                }
                None => None,
            };
            let write = PaymentEventWrite {
                payment: &p,
                to,
                milestone,
            };
            match self.store.apply_payment_event(&write, self.now_ms).await? {
                Moved::Done((payment, m)) => {
                    subject.moved = Some(format!("payment {}->{}", p.state, payment.state));
                    if let Some(m) = m.filter(|m| milestone_is_terminal(m.state)) {
                        settled_room = Some(m.room_id);
                    }
                    Ok(PaymentView::from(&payment))
                }
                Moved::LostRace => Err(lost_race("payment")),
            }
        }
        .await;
        let action_name = format!("escrow.payment.{}", event.as_str());
        self.finish_move(caller, &action_name, &subject, settled_room, result)
            .await
    }

    /// Audits a move (refusals included), then closes its room if the move settled the last
    /// open milestone.
    async fn finish_move<T>(
        &self,
        caller: &Caller,
        action_name: &str,
        subject: &Subject,
        settled_room: Option<String>,
        result: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        self.audit_as(caller, action_name, subject, &result).await;
        if let Some(room_id) = settled_room {
            self.close_if_settled(&room_id).await;
        }
        result
    }
}

/// The facts with both cancel flags set: whether a cancel request is allowed at all from
/// this state for this party (the flags themselves are what the request changes).
fn facts_both_cancelled(
    f: &enclosure_policy::escrow::MilestoneFacts,
) -> enclosure_policy::escrow::MilestoneFacts {
    enclosure_policy::escrow::MilestoneFacts {
        client_cancelled: true,
        freelancer_cancelled: true,
        ..*f
    }
}

/// A new pending payment of a milestone's price, in its room's currency.
pub(super) fn pending_payment(
    room: &RoomRecord,
    m: &MilestoneRecord,
    provider: &str,
    provider_payment_id: &str,
    now_ms: i64,
) -> PaymentRecord {
    PaymentRecord {
        id: uuid::Uuid::new_v4().to_string(),
        milestone_id: m.id.clone(),
        room_id: room.id.clone(),
        provider: provider.to_string(),
        provider_payment_id: provider_payment_id.to_string(),
        amount_minor: m.price_minor,
        currency: room.currency.clone(),
        state: enclosure_policy::escrow::PaymentState::Pending,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        version: 0,
    }
}
