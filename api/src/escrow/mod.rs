//! The escrow services: rooms, milestones and escrowed payments, each a named operation that
//! checks the caller's role and the record's state with the policy crate's tables, then
//! writes with compare-and-set, and audits the attempt whatever its outcome (threat T1).
//!
//! # Who may do what
//!
//! A caller acts as the role in their token, and for `client` and `freelancer` only in rooms
//! where they are that party: a room's client with a freelancer token is refused (403), and a
//! room the caller is no member of does not exist for them (404). Admins and the system see
//! every room; reviewers see every room's metadata and move nothing.
//!
//! # Errors
//!
//! 404: no such room or milestone, or not yours. 403: your role never takes this action.
//! 409 `illegal_transition`: not from this state; 409 `guard_failed`: a precondition does not
//! hold (a deadline, revisions left, both cancelled…); 409 `lost_race`: the record changed
//! between your read and your write, or since the version you named.
//!
//! # Audit
//!
//! Every attempt appends one audit row (`escrow.room.*`, `escrow.milestone.*`,
//! `escrow.payment.*`) with outcome ok, refused or error; its detail names the room, the
//! milestone and the move. Attempts by callers who can see the room are also linked to it,
//! so the room's members read them in the room's trail.

mod artifacts;
mod funding;
mod milestones;
mod notes;
mod rooms;
mod settlement;
mod views;

use enclosure_policy::escrow::{
    Actor, MilestoneAction, MilestoneFacts, MilestoneState, TransitionError, milestone_transition,
};

use crate::ApiError;
use crate::auth::{Caller, Role};
use crate::store::escrow::{MilestoneRecord, RoomRecord, Viewer};
use crate::store::{AuditEntry, Store};

pub use artifacts::{ArtifactView, NewArtifact, NewUpload, SignedUrl, UrlSigner};
pub use funding::{MoneyView, SettlementView, WebhookOutcome, body_digest, system_caller};
pub use milestones::Resolution;
pub use notes::{NewNote, NoteView};
pub use rooms::{NewMilestone, NewRoom};
pub use settlement::{SettlementPass, Settler, backoff_ms};
pub use views::{AuditTrailEntry, MilestoneView, PaymentView, RoomView};

/// The escrow services over one store at one instant: `now_ms` is the time every deadline
/// and guard is checked against (the clock stays at the edge; tests pass any time).
#[derive(Clone, Copy, Debug)]
pub struct Escrow<'a> {
    /// Where records live.
    pub store: &'a Store,
    /// Unix milliseconds now.
    pub now_ms: i64,
}

/// The subject the system's own automatic moves (closing a settled room) are audited as.
pub const SYSTEM_ACTOR: &str = "system:escrow";

fn viewer(caller: &Caller) -> Viewer<'_> {
    Viewer {
        sub: &caller.sub,
        role: caller.role.as_str(),
    }
}

/// The policy actor `caller` is in `room`; a party under the other party's role is refused.
fn actor_in(caller: &Caller, room: &RoomRecord) -> Result<Actor, ApiError> {
    match caller.role {
        Role::Client if caller.sub == room.client => Ok(Actor::Client),
        Role::Freelancer if caller.sub == room.freelancer => Ok(Actor::Freelancer),
        Role::Client | Role::Freelancer => Err(ApiError::Forbidden),
        Role::Admin => Ok(Actor::Admin),
        Role::System => Ok(Actor::System),
        Role::Reviewer => Ok(Actor::Reviewer),
    }
}

/// Whether `actor` takes `action` from any state at all: if not, the answer is 403 whatever
/// the milestone's state, so a wrong role never learns more than that.
fn ever_allowed(action: MilestoneAction, actor: Actor) -> bool {
    let open = MilestoneFacts {
        now_ms: i64::MAX,
        funding_deadline_ms: 0,
        delivery_deadline_ms: 0,
        inspection_ends_ms: 0,
        revisions_used: 0,
        max_revisions: 1,
        client_cancelled: true,
        freelancer_cancelled: true,
    };
    MilestoneState::ALL
        .iter()
        .any(|&s| milestone_transition(s, action, actor, &open).is_ok())
}

/// The policy's refusal as an api error.
fn refused(e: TransitionError) -> ApiError {
    match e {
        TransitionError::Forbidden { .. } => ApiError::Forbidden,
        TransitionError::GuardFailed { .. } => ApiError::Conflict {
            code: "guard_failed",
            detail: e.to_string(),
        },
        _ => ApiError::Conflict {
            code: "illegal_transition",
            detail: e.to_string(),
        },
    }
}

fn lost_race(what: &str) -> ApiError {
    ApiError::Conflict {
        code: "lost_race",
        detail: format!("the {what} changed since it was read; read it again"),
    }
}

/// Refuses when the caller named a version other than the one read.
fn check_version(expected: Option<i64>, read: i64, what: &str) -> Result<(), ApiError> {
    match expected {
        Some(v) if v != read => Err(lost_race(what)),
        _ => Ok(()),
    }
}

fn facts(room: &RoomRecord, m: &MilestoneRecord, now_ms: i64) -> MilestoneFacts {
    MilestoneFacts {
        now_ms,
        funding_deadline_ms: m.funding_deadline_ms,
        delivery_deadline_ms: m.delivery_deadline_ms,
        // No inspection running means it cannot have ended.
        inspection_ends_ms: m.inspection_ends_ms.unwrap_or(i64::MAX),
        revisions_used: u32::try_from(m.revisions_used).unwrap_or(u32::MAX),
        max_revisions: u32::try_from(room.max_revisions).unwrap_or(0),
        client_cancelled: m.client_cancelled,
        freelancer_cancelled: m.freelancer_cancelled,
    }
}

/// What an audited attempt concerned.
#[derive(Debug, Default, Clone)]
struct Subject {
    room_id: Option<String>,
    milestone_id: Option<String>,
    /// Set once the caller was seen to be able to read the room: then the row is linked.
    visible: bool,
    /// `from->to` of a successful move.
    moved: Option<String>,
}

impl Escrow<'_> {
    /// [`Escrow::audit`] for an attempt by `caller`.
    async fn audit_as<T>(
        &self,
        caller: &Caller,
        action: &str,
        subject: &Subject,
        result: &Result<T, ApiError>,
    ) {
        self.audit(&caller.sub, caller.role.as_str(), action, subject, result)
            .await;
    }

    /// Appends the audit row for one attempt and links it to its room when the caller sees
    /// the room. A failure to audit is logged; the attempt's own result stands.
    async fn audit<T>(
        &self,
        actor: &str,
        actor_role: &str,
        action: &str,
        subject: &Subject,
        result: &Result<T, ApiError>,
    ) {
        let (outcome, code) = match crate::error::audit_outcome(result) {
            ("ok", _) => ("ok", subject.moved.clone()),
            (outcome, code) => (outcome, code.map(str::to_string)),
        };
        let mut detail = code.unwrap_or_default();
        if let Some(r) = &subject.room_id {
            detail.push_str(&format!(" room={r}"));
        }
        if let Some(m) = &subject.milestone_id {
            detail.push_str(&format!(" milestone={m}"));
        }
        let entry = AuditEntry {
            actor: actor.to_string(),
            actor_role: actor_role.to_string(),
            action: action.to_string(),
            identity_id: None,
            key_id: None,
            ticket_id: None,
            outcome: outcome.to_string(),
            detail: Some(detail.trim().to_string()),
            at_ms: self.now_ms,
        };
        let row = match self.store.append_audit(entry).await {
            Ok(row) => row,
            Err(e) => {
                tracing::error!(error = %e, action, "could not write the audit row");
                return;
            }
        };
        if let (true, Some(room_id)) = (subject.visible, &subject.room_id) {
            let v = Viewer {
                sub: actor,
                role: actor_role,
            };
            if let Err(e) = self
                .store
                .link_audit(v, row.seq, room_id, subject.milestone_id.as_deref())
                .await
            {
                tracing::error!(error = %e, seq = row.seq, "could not link the audit row to its room");
            }
        }
    }
}
