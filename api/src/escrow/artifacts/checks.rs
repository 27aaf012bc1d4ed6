//! What submit and validate check about a milestone's artifacts before the move is written.

use super::{conflict, store_failed, unavailable};
use crate::ApiError;
use crate::artifacts::{ArtifactError, ArtifactStore, ObjectInfo, ObjectKey};
use crate::auth::Caller;
use crate::escrow::{Escrow, viewer};
use crate::store::escrow::{ArtifactRecord, MilestoneRecord};

/// The extra check a milestone move makes before it is written.
#[derive(Clone, Copy, Debug)]
pub(in crate::escrow) enum Check<'s> {
    /// No artifact check.
    None,
    /// Submit: at least one unfrozen artifact, each still in the store as registered.
    Submission(Option<&'s ArtifactStore>),
    /// Validate: every frozen artifact read back and hashed by the api itself.
    Validation(Option<&'s ArtifactStore>),
}

impl Escrow<'_> {
    /// The artifact check a milestone move makes once the policy allowed it.
    pub(in crate::escrow) async fn check_artifacts(
        &self,
        caller: &Caller,
        m: &MilestoneRecord,
        check: Check<'_>,
    ) -> Result<(), ApiError> {
        match check {
            Check::None => Ok(()),
            Check::Submission(store) => self.check_submission(caller, m, store).await,
            Check::Validation(store) => self.check_validation(caller, m, store).await,
        }
    }

    /// The milestone's frozen (or not yet frozen) artifacts; refused as `guard_failed` with
    /// `none` when there are none.
    async fn artifacts_to_check(
        &self,
        caller: &Caller,
        m: &MilestoneRecord,
        frozen: bool,
        none: &str,
    ) -> Result<Vec<ArtifactRecord>, ApiError> {
        let mut rows = self
            .store
            .milestone_artifacts(viewer(caller), &m.id)
            .await?;
        rows.retain(|a| a.frozen_at_ms.is_some() == frozen);
        if rows.is_empty() {
            return Err(conflict("guard_failed", none));
        }
        Ok(rows)
    }

    /// At least one artifact awaits submission, and the store still holds each as registered.
    /// The move then freezes every unfrozen row; one registered between this check and the
    /// move was checked against the store by its own registration, and validation reads all
    /// of them back anyway.
    async fn check_submission(
        &self,
        caller: &Caller,
        m: &MilestoneRecord,
        store: Option<&ArtifactStore>,
    ) -> Result<(), ApiError> {
        let fresh = self
            .artifacts_to_check(
                caller,
                m,
                false,
                "nothing to submit: register at least one artifact first",
            )
            .await?;
        let store = store.ok_or_else(unavailable)?;
        for a in &fresh {
            let key = ObjectKey::parse(&a.storage_key).map_err(store_failed)?;
            let info = store.head(&key).await.map_err(store_failed)?;
            same_object(a, info)?;
        }
        Ok(())
    }

    /// Every frozen artifact read back through SHA-256 by the api itself (the validator does
    /// not take the store's recorded checksum), and each matches its row.
    async fn check_validation(
        &self,
        caller: &Caller,
        m: &MilestoneRecord,
        store: Option<&ArtifactStore>,
    ) -> Result<(), ApiError> {
        let frozen = self
            .artifacts_to_check(
                caller,
                m,
                true,
                "nothing to validate: the submission holds no artifact",
            )
            .await?;
        let store = store.ok_or_else(unavailable)?;
        for a in &frozen {
            let key = ObjectKey::parse(&a.storage_key).map_err(store_failed)?;
            // One byte past the recorded size is enough to see that it grew.
            let cap = u64::try_from(a.size_bytes).unwrap_or(0).saturating_add(1);
            let info = match store.digest(&key, cap).await {
                Err(ArtifactError::DigestTooLarge { .. }) => {
                    return Err(mismatch(a));
                }
                other => other.map_err(store_failed)?,
            };
            same_object(a, info)?;
        }
        Ok(())
    }
}

fn mismatch(a: &ArtifactRecord) -> ApiError {
    conflict(
        "artifact_mismatch",
        format!(
            "artifact {} no longer has the registered size or SHA-256",
            a.id
        ),
    )
}

/// Refuses when the store's object is gone or differs from the registered row.
fn same_object(a: &ArtifactRecord, info: Option<ObjectInfo>) -> Result<(), ApiError> {
    let info = info.ok_or_else(|| {
        conflict(
            "artifact_missing",
            format!("artifact {} is no longer in the store", a.id),
        )
    })?;
    if i64::try_from(info.size).ok() != Some(a.size_bytes) || info.sha256 != a.sha256 {
        return Err(mismatch(a));
    }
    Ok(())
}
