//! Download URLs: the state gate, and the audit rows written before and after for every
//! caller but the owner (see the parent module's docs).

use enclosure_policy::escrow::{Actor, MilestoneState};

use super::{SignedUrl, UrlSigner, conflict, plausible_id, signed, store_failed, unavailable};
use crate::ApiError;
use crate::artifacts::ObjectKey;
use crate::auth::{Caller, Role};
use crate::escrow::{Escrow, actor_in, viewer};
use crate::store::AuditEntry;
use crate::store::escrow::{ArtifactRecord, Viewer};

/// States from which the system validator may read a submission.
fn system_may_read(s: MilestoneState) -> bool {
    matches!(
        s,
        MilestoneState::Submitted
            | MilestoneState::Validated
            | MilestoneState::Accepted
            | MilestoneState::Transferred
            | MilestoneState::Disputed
            | MilestoneState::NeedsAdmin
    )
}

/// How the api looks up which room a staff member's refused request concerns.
const SYSTEM_READER: Viewer<'static> = Viewer {
    sub: crate::escrow::SYSTEM_ACTOR,
    role: "system",
};

impl Escrow<'_> {
    /// A GET URL for one artifact, if the caller may read it in the milestone's current state
    /// (see the `artifacts` module docs); audited before and after for everyone but the owner.
    pub async fn download_url(
        &self,
        caller: &Caller,
        artifact_id: &str,
        signer: Option<UrlSigner<'_>>,
    ) -> Result<SignedUrl, ApiError> {
        let found = if !plausible_id(artifact_id) {
            None
        } else if matches!(caller.role, Role::Admin | Role::Reviewer) {
            // They never read artifact rows; the system's read only names the room whose
            // trail records the refusal.
            self.store.artifact(SYSTEM_READER, artifact_id).await?
        } else {
            self.store.artifact(viewer(caller), artifact_id).await?
        };
        let owner = found
            .as_ref()
            .is_some_and(|a| caller.role == Role::Freelancer && a.owner == caller.sub);
        // Whoever reads the row (or, for staff, the room) is linked into the room's trail.
        let link = found
            .as_ref()
            .map(|a| (a.room_id.as_str(), a.milestone_id.as_str()));
        let shown_id = if plausible_id(artifact_id) {
            artifact_id
        } else {
            "(invalid)"
        };
        if !owner {
            self.audit_strict(
                caller,
                "escrow.artifact.download_url.requested",
                "ok",
                format!("pending artifact={shown_id}"),
                link,
            )
            .await?;
        }
        let result = match &found {
            None => Err(ApiError::NotFound),
            Some(a) => self.gate_and_mint(caller, a, owner, signer).await,
        };
        let (outcome, code) = crate::error::audit_outcome(&result);
        let detail = match &result {
            Ok(u) => format!(
                "issued artifact={shown_id} expires_at_ms={}",
                u.expires_at_ms
            ),
            Err(_) => format!("{} artifact={shown_id}", code.unwrap_or("")),
        };
        // For a non-owner, no URL leaves unless its outcome is on record.
        let recorded = self
            .audit_strict(
                caller,
                "escrow.artifact.download_url",
                outcome,
                detail,
                link,
            )
            .await;
        if let Err(e) = recorded {
            if owner {
                tracing::error!(error = %e, "could not audit the owner's download URL");
            } else {
                return Err(e);
            }
        }
        result
    }

    /// The state gate of [`download_url`](Self::download_url), then the URL.
    async fn gate_and_mint(
        &self,
        caller: &Caller,
        a: &ArtifactRecord,
        owner: bool,
        signer: Option<UrlSigner<'_>>,
    ) -> Result<SignedUrl, ApiError> {
        if !owner {
            if matches!(caller.role, Role::Admin | Role::Reviewer) {
                return Err(ApiError::Forbidden);
            }
            let (room, m) = self
                .store
                .milestone(viewer(caller), &a.milestone_id)
                .await?
                .ok_or(ApiError::NotFound)?;
            let frozen = a.frozen_at_ms.is_some();
            let open = match actor_in(caller, &room)? {
                Actor::System => frozen && system_may_read(m.state),
                Actor::Client => frozen && m.state == MilestoneState::Transferred,
                _ => return Err(ApiError::Forbidden),
            };
            if !open {
                return Err(conflict(
                    "artifact_locked",
                    format!(
                        "this artifact cannot be read by a {} while the milestone is {}",
                        caller.role.as_str(),
                        m.state
                    ),
                ));
            }
        }
        let signer = signer.ok_or_else(unavailable)?;
        let key = ObjectKey::parse(&a.storage_key).map_err(store_failed)?;
        let p = signer
            .store
            .presign_get_at(&key, signer.ttl, self.at_time())
            .map_err(store_failed)?;
        Ok(signed(&a.id, p))
    }

    /// Appends one audit row and links it to its room; unlike `audit`, a failure is the
    /// caller's failure (a URL is not handed out without its record).
    async fn audit_strict(
        &self,
        caller: &Caller,
        action: &str,
        outcome: &str,
        mut detail: String,
        link: Option<(&str, &str)>,
    ) -> Result<(), ApiError> {
        if let Some((room, milestone)) = link {
            detail.push_str(&format!(" room={room} milestone={milestone}"));
        }
        let row = self
            .store
            .append_audit(AuditEntry {
                actor: caller.sub.clone(),
                actor_role: caller.role.as_str().to_string(),
                action: action.to_string(),
                identity_id: None,
                key_id: None,
                ticket_id: None,
                outcome: outcome.to_string(),
                detail: Some(detail),
                at_ms: self.now_ms,
            })
            .await?;
        if let Some((room, milestone)) = link {
            self.store
                .link_audit(viewer(caller), row.seq, room, Some(milestone))
                .await?;
        }
        Ok(())
    }
}
