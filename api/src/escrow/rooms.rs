//! Room operations: create (client), read (members), accept the terms (each party; the second
//! acceptance activates the room), cancel (a party, before any funding), the room's audit
//! trail, and closing a room whose milestones all settled (the system).

use enclosure_policy::escrow::{
    Actor, RoomAction, RoomState, milestone_is_terminal, room_transition,
};
use serde::Deserialize;

use super::{AuditTrailEntry, RoomView};
use super::{Escrow, SYSTEM_ACTOR, Subject, actor_in, check_version, lost_race, refused, viewer};
use crate::ApiError;
use crate::auth::{Caller, MAX_SUB_LEN, Role};
use crate::store::escrow::{Moved, RoomRecord, RoomTerms, Viewer};
use enclosure_policy::escrow::MilestoneState;

/// Longest room or milestone title.
pub const MAX_TITLE_LEN: usize = 200;
/// Most milestones in one room.
pub const MAX_MILESTONES: usize = 100;
/// Longest inspection period the terms may set: 90 days.
pub const MAX_INSPECTION_MS: i64 = 90 * 24 * 3600 * 1000;
/// Most rooms one listing returns.
pub const MAX_LIST: u32 = 200;

/// One milestone of proposed terms.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMilestone {
    /// What is delivered.
    pub title: String,
    /// Price in the currency's minor unit, above 0.
    pub price_minor: i64,
    /// Funding deadline, unix ms, in the future.
    pub funding_deadline_ms: i64,
    /// Delivery deadline, unix ms, after the funding deadline.
    pub delivery_deadline_ms: i64,
}

/// Proposed terms of a room; the caller is its client.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRoom {
    /// A label.
    pub title: String,
    /// The freelancer's subject.
    pub freelancer: String,
    /// ISO 4217 code, three capital letters.
    pub currency: String,
    /// Platform fee in basis points, 0 to 10000.
    pub platform_fee_bps: i64,
    /// How long the client may inspect a validated submission, ms (up to 90 days).
    pub inspection_period_ms: i64,
    /// Rejections allowed per milestone, 0 to 100.
    pub max_revisions: i64,
    /// One to 100 milestones, in order.
    pub milestones: Vec<NewMilestone>,
}

fn check_title(t: &str, what: &str) -> Result<String, ApiError> {
    let t = t.trim();
    if t.is_empty() || t.chars().count() > MAX_TITLE_LEN || t.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "{what} must be 1 to {MAX_TITLE_LEN} printable characters"
        )));
    }
    Ok(t.to_string())
}

impl NewRoom {
    /// Checks the terms and makes them the client's.
    fn into_terms(self, client: &str, now_ms: i64) -> Result<RoomTerms, ApiError> {
        let bad = |m: &str| Err(ApiError::BadRequest(m.to_string()));
        let title = check_title(&self.title, "title")?;
        if self.freelancer.is_empty()
            || self.freelancer.len() > MAX_SUB_LEN
            || self.freelancer.chars().any(char::is_control)
        {
            return bad("freelancer must be a subject of 1 to 255 bytes");
        }
        if self.freelancer == client {
            return bad("the freelancer must be someone other than the client");
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return bad("currency must be an ISO 4217 code such as EUR");
        }
        if !(0..=10_000).contains(&self.platform_fee_bps) {
            return bad("platform_fee_bps must be 0 to 10000");
        }
        if !(1..=MAX_INSPECTION_MS).contains(&self.inspection_period_ms) {
            return bad("inspection_period_ms must be 1 ms to 90 days");
        }
        if !(0..=100).contains(&self.max_revisions) {
            return bad("max_revisions must be 0 to 100");
        }
        if self.milestones.is_empty() || self.milestones.len() > MAX_MILESTONES {
            return bad("a room has 1 to 100 milestones");
        }
        let mut milestones = Vec::with_capacity(self.milestones.len());
        for m in self.milestones {
            let title = check_title(&m.title, "milestone title")?;
            if m.price_minor <= 0 {
                return bad("price_minor must be above 0");
            }
            if m.funding_deadline_ms <= now_ms || m.delivery_deadline_ms <= m.funding_deadline_ms {
                return bad("deadlines must be in the future, delivery after funding");
            }
            milestones.push(crate::store::escrow::MilestoneTerms {
                title,
                price_minor: m.price_minor,
                funding_deadline_ms: m.funding_deadline_ms,
                delivery_deadline_ms: m.delivery_deadline_ms,
            });
        }
        Ok(RoomTerms {
            title,
            client: client.to_string(),
            freelancer: self.freelancer,
            currency: self.currency,
            platform_fee_bps: self.platform_fee_bps,
            inspection_period_ms: self.inspection_period_ms,
            max_revisions: self.max_revisions,
            milestones,
        })
    }
}

impl Escrow<'_> {
    /// Creates a draft room whose client is the caller (role client only).
    pub async fn create_room(&self, caller: &Caller, new: NewRoom) -> Result<RoomView, ApiError> {
        let mut subject = Subject::default();
        let result = async {
            if caller.role != Role::Client {
                return Err(ApiError::Forbidden);
            }
            let terms = new.into_terms(&caller.sub, self.now_ms)?;
            let (room, milestones) = self
                .store
                .create_room(viewer(caller), &terms, self.now_ms)
                .await?;
            subject.room_id = Some(room.id.clone());
            subject.visible = true;
            subject.moved = Some("->draft".into());
            Ok(RoomView::new(&room, &milestones))
        }
        .await;
        self.audit_as(caller, "escrow.room.create", &subject, &result)
            .await;
        result
    }

    /// A room and its milestones; 404 unless the caller may see it.
    pub async fn room(&self, caller: &Caller, room_id: &str) -> Result<RoomView, ApiError> {
        let (room, milestones) = self
            .store
            .room(viewer(caller), room_id)
            .await?
            .ok_or(ApiError::NotFound)?;
        Ok(RoomView::new(&room, &milestones))
    }

    /// The rooms the caller is a party to, newest first (without milestones).
    pub async fn rooms(&self, caller: &Caller) -> Result<Vec<RoomView>, ApiError> {
        Ok(self
            .store
            .list_rooms(viewer(caller), MAX_LIST)
            .await?
            .iter()
            .map(|r| RoomView::new(r, &[]))
            .collect())
    }

    /// Records the caller's acceptance of a draft room's terms; the second party's
    /// acceptance activates the room.
    pub async fn accept_terms(
        &self,
        caller: &Caller,
        room_id: &str,
        expected_version: Option<i64>,
    ) -> Result<RoomView, ApiError> {
        let mut subject = Subject {
            room_id: Some(room_id.to_string()),
            ..Subject::default()
        };
        let result = async {
            let (room, milestones) = self
                .store
                .room(viewer(caller), room_id)
                .await?
                .ok_or(ApiError::NotFound)?;
            subject.visible = true;
            let actor = actor_in(caller, &room)?;
            if !matches!(actor, Actor::Client | Actor::Freelancer) {
                return Err(ApiError::Forbidden);
            }
            check_version(expected_version, room.version, "room")?;
            if room.state != RoomState::Draft {
                return Err(ApiError::Conflict {
                    code: "illegal_transition",
                    detail: format!(
                        "terms can be accepted only in a draft room, not {}",
                        room.state
                    ),
                });
            }
            let (mut client_at, mut freelancer_at) =
                (room.client_accepted_at_ms, room.freelancer_accepted_at_ms);
            let mine = if actor == Actor::Client {
                &mut client_at
            } else {
                &mut freelancer_at
            };
            if mine.is_some() {
                return Err(ApiError::Conflict {
                    code: "guard_failed",
                    detail: "you already accepted these terms".into(),
                });
            }
            *mine = Some(self.now_ms);
            let to = if client_at.is_some() && freelancer_at.is_some() {
                room_transition(room.state, RoomAction::Activate, actor).map_err(refused)?
            } else {
                room.state
            };
            match self
                .store
                .move_room(
                    viewer(caller),
                    &room,
                    to,
                    client_at,
                    freelancer_at,
                    self.now_ms,
                )
                .await?
            {
                Moved::Done(r) => {
                    subject.moved = Some(format!("{}->{}", room.state, r.state));
                    Ok(RoomView::new(&r, &milestones))
                }
                Moved::LostRace => Err(lost_race("room")),
            }
        }
        .await;
        self.audit_as(caller, "escrow.room.accept", &subject, &result)
            .await;
        result
    }

    /// Cancels a draft or active room before any of its milestones was funded.
    pub async fn cancel_room(
        &self,
        caller: &Caller,
        room_id: &str,
        expected_version: Option<i64>,
    ) -> Result<RoomView, ApiError> {
        let mut subject = Subject {
            room_id: Some(room_id.to_string()),
            ..Subject::default()
        };
        let result = async {
            let (room, milestones) = self
                .store
                .room(viewer(caller), room_id)
                .await?
                .ok_or(ApiError::NotFound)?;
            subject.visible = true;
            let actor = actor_in(caller, &room)?;
            if !matches!(actor, Actor::Client | Actor::Freelancer) {
                return Err(ApiError::Forbidden);
            }
            check_version(expected_version, room.version, "room")?;
            let to = room_transition(room.state, RoomAction::Cancel, actor).map_err(refused)?;
            if milestones
                .iter()
                .any(|m| !matches!(m.state, MilestoneState::Open | MilestoneState::Expired))
            {
                return Err(ApiError::Conflict {
                    code: "guard_failed",
                    detail: "cancel: a milestone was funded; settle or dispute it instead".into(),
                });
            }
            match self
                .store
                .move_room(
                    viewer(caller),
                    &room,
                    to,
                    room.client_accepted_at_ms,
                    room.freelancer_accepted_at_ms,
                    self.now_ms,
                )
                .await?
            {
                Moved::Done(r) => {
                    subject.moved = Some(format!("{}->{}", room.state, r.state));
                    Ok(RoomView::new(&r, &milestones))
                }
                Moved::LostRace => Err(lost_race("room")),
            }
        }
        .await;
        self.audit_as(caller, "escrow.room.cancel", &subject, &result)
            .await;
        result
    }

    /// The room's audit trail, for its members (and admins); 404 for everyone else.
    pub async fn room_audit(
        &self,
        caller: &Caller,
        room_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditTrailEntry>, ApiError> {
        let rows = self
            .store
            .room_audit(viewer(caller), room_id, after_seq, limit)
            .await?
            .ok_or(ApiError::NotFound)?;
        Ok(rows.iter().map(AuditTrailEntry::from).collect())
    }

    /// Closes an active room once every milestone settled; the system's own move, audited
    /// as [`SYSTEM_ACTOR`]. Called after a milestone reaches a terminal state.
    pub(super) async fn close_if_settled(&self, room_id: &str) {
        let system = Viewer {
            sub: SYSTEM_ACTOR,
            role: "system",
        };
        let Ok(Some((room, milestones))) = self.store.room(system, room_id).await else {
            return;
        };
        if room.state != RoomState::Active
            || !milestones.iter().all(|m| milestone_is_terminal(m.state))
        {
            return;
        }
        let mut subject = Subject {
            room_id: Some(room_id.to_string()),
            visible: true,
            ..Subject::default()
        };
        let result: Result<RoomRecord, ApiError> = async {
            let to =
                room_transition(room.state, RoomAction::Close, Actor::System).map_err(refused)?;
            match self
                .store
                .move_room(
                    system,
                    &room,
                    to,
                    room.client_accepted_at_ms,
                    room.freelancer_accepted_at_ms,
                    self.now_ms,
                )
                .await?
            {
                Moved::Done(r) => {
                    subject.moved = Some(format!("{}->{}", room.state, r.state));
                    Ok(r)
                }
                Moved::LostRace => Err(lost_race("room")),
            }
        }
        .await;
        self.audit(
            SYSTEM_ACTOR,
            "system",
            "escrow.room.close",
            &subject,
            &result,
        )
        .await;
    }
}
