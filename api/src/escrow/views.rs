//! Escrow records as the api shows them. Times are unix milliseconds, as the terms are given.

use serde::Serialize;

use crate::store::AuditRow;
use crate::store::escrow::{MilestoneRecord, PaymentRecord, RoomRecord};

/// A milestone as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MilestoneView {
    /// Milestone id.
    pub id: String,
    /// Its room.
    pub room_id: String,
    /// Order in the room, from 0.
    pub position: i64,
    /// What is delivered.
    pub title: String,
    /// Price in the currency's minor unit.
    pub price_minor: i64,
    /// Funding deadline, unix ms.
    pub funding_deadline_ms: i64,
    /// Delivery deadline, unix ms.
    pub delivery_deadline_ms: i64,
    /// open, funded, submitted, validated, accepted, transferred, disputed, needs_admin,
    /// refunded or expired.
    pub state: String,
    /// Rejections so far.
    pub revisions_used: i64,
    /// The client asked to cancel.
    pub client_cancelled: bool,
    /// The freelancer asked to cancel.
    pub freelancer_cancelled: bool,
    /// End of the client's inspection, unix ms, while one runs.
    pub inspection_ends_ms: Option<i64>,
    /// Bumped by every change; name it as `expected_version` to act only on what you saw.
    pub version: i64,
}

impl From<&MilestoneRecord> for MilestoneView {
    fn from(m: &MilestoneRecord) -> Self {
        MilestoneView {
            id: m.id.clone(),
            room_id: m.room_id.clone(),
            position: m.position,
            title: m.title.clone(),
            price_minor: m.price_minor,
            funding_deadline_ms: m.funding_deadline_ms,
            delivery_deadline_ms: m.delivery_deadline_ms,
            state: m.state.as_str().to_string(),
            revisions_used: m.revisions_used,
            client_cancelled: m.client_cancelled,
            freelancer_cancelled: m.freelancer_cancelled,
            inspection_ends_ms: m.inspection_ends_ms,
            version: m.version,
        }
    }
}

/// A room, its terms and its milestones, as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RoomView {
    /// Room id.
    pub id: String,
    /// A label.
    pub title: String,
    /// The client's subject.
    pub client: String,
    /// The freelancer's subject.
    pub freelancer: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Platform fee in basis points, deducted on release.
    pub platform_fee_bps: i64,
    /// Inspection period, ms.
    pub inspection_period_ms: i64,
    /// Rejections allowed per milestone.
    pub max_revisions: i64,
    /// draft, active, closed or cancelled.
    pub state: String,
    /// When the client accepted the terms, unix ms.
    pub client_accepted_at_ms: Option<i64>,
    /// When the freelancer accepted the terms, unix ms.
    pub freelancer_accepted_at_ms: Option<i64>,
    /// Creation time, unix ms.
    pub created_at_ms: i64,
    /// Bumped by every change.
    pub version: i64,
    /// The milestones, in order (empty in listings).
    pub milestones: Vec<MilestoneView>,
}

impl RoomView {
    /// The view of a room and its milestones.
    pub fn new(r: &RoomRecord, milestones: &[MilestoneRecord]) -> Self {
        RoomView {
            id: r.id.clone(),
            title: r.title.clone(),
            client: r.client.clone(),
            freelancer: r.freelancer.clone(),
            currency: r.currency.clone(),
            platform_fee_bps: r.platform_fee_bps,
            inspection_period_ms: r.inspection_period_ms,
            max_revisions: r.max_revisions,
            state: r.state.as_str().to_string(),
            client_accepted_at_ms: r.client_accepted_at_ms,
            freelancer_accepted_at_ms: r.freelancer_accepted_at_ms,
            created_at_ms: r.created_at_ms,
            version: r.version,
            milestones: milestones.iter().map(MilestoneView::from).collect(),
        }
    }
}

/// An escrowed payment as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PaymentView {
    /// Payment id.
    pub id: String,
    /// The milestone it funds.
    pub milestone_id: String,
    /// The provider's name.
    pub provider: String,
    /// The provider's id for it.
    pub provider_payment_id: String,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// pending, escrowed, released, refunded or failed.
    pub state: String,
}

impl From<&PaymentRecord> for PaymentView {
    fn from(p: &PaymentRecord) -> Self {
        PaymentView {
            id: p.id.clone(),
            milestone_id: p.milestone_id.clone(),
            provider: p.provider.clone(),
            provider_payment_id: p.provider_payment_id.clone(),
            amount_minor: p.amount_minor,
            currency: p.currency.clone(),
            state: p.state.as_str().to_string(),
        }
    }
}

/// One entry of a room's audit trail.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditTrailEntry {
    /// Position in the global chain.
    pub seq: i64,
    /// Who acted.
    pub actor: String,
    /// Their role.
    pub actor_role: String,
    /// What they tried (`escrow.milestone.accept`, …).
    pub action: String,
    /// ok, refused or error.
    pub outcome: String,
    /// The move made, or the refusal code, and the room and milestone.
    pub detail: Option<String>,
    /// Unix ms.
    pub at_ms: i64,
    /// This row's chain hash, hex.
    pub hash: String,
}

impl From<&AuditRow> for AuditTrailEntry {
    fn from(r: &AuditRow) -> Self {
        AuditTrailEntry {
            seq: r.seq,
            actor: r.actor.clone(),
            actor_role: r.actor_role.clone(),
            action: r.action.clone(),
            outcome: r.outcome.clone(),
            detail: r.detail.clone(),
            at_ms: r.at_ms,
            hash: hex::encode(r.hash),
        }
    }
}
