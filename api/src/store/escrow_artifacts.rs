//! Artifact metadata: what the freelancer registered for a milestone (name, size, SHA-256,
//! where it lies in the artifact store). The bytes never pass through here (seed T3).
//!
//! Rows are written once, by the room's freelancer while the milestone is funded, and change
//! only by being frozen when the milestone is submitted (`move_milestone` does it in the same
//! transaction). Reads show a row to the room's client and freelancer (under those roles) and
//! to the system; never to admins or reviewers. PostgreSQL's row-level security applies the
//! same rules again; on SQLite the statements carry them.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::super::{Store, StoreError, check_owner};
use super::Viewer;

/// A stored artifact's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactRecord {
    /// Artifact id (UUIDv4, minted with its upload URL).
    pub id: String,
    /// The milestone it was delivered for.
    pub milestone_id: String,
    /// The milestone's room.
    pub room_id: String,
    /// Who uploaded it: the room's freelancer.
    pub owner: String,
    /// The file name the freelancer gave.
    pub name: String,
    /// The media type the freelancer declared.
    pub content_type: String,
    /// Length in bytes, as the store measured it at registration.
    pub size_bytes: i64,
    /// SHA-256 of the bytes, as the store measured it at registration.
    pub sha256: [u8; 32],
    /// The object key in the artifact store.
    pub storage_key: String,
    /// Registration time, unix ms.
    pub created_at_ms: i64,
    /// When the submission froze it, unix ms; `None` while it may still be replaced.
    pub frozen_at_ms: Option<i64>,
}

/// The outcome of registering an artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registered {
    /// The row was written.
    Done,
    /// An artifact with this id (or storage key) already exists.
    Duplicate,
    /// Nothing was written: the caller is not the room's freelancer, or the milestone is no
    /// longer funded (it was submitted, disputed or settled meanwhile).
    NotAllowed,
}

const ARTIFACT_COLUMNS: &str = "id, milestone_id, room_id, owner, name, content_type, \
    size_bytes, sha256, storage_key, created_at_ms, frozen_at_ms";

/// `WHERE` text keeping the artifacts (alias `a`) `viewer` may read: `$n` is the sub, `$n+1`
/// the role. The same rule as PostgreSQL's `escrow_artifacts_read` policy.
fn artifact_visible(n: usize) -> String {
    let r = n + 1;
    format!(
        "(${r} = 'system' OR EXISTS (SELECT 1 FROM escrow_rooms r WHERE r.id = a.room_id \
         AND ((${r} = 'client' AND ${n} = r.client) OR (${r} = 'freelancer' AND ${n} = r.freelancer))))"
    )
}

fn artifact_from(r: &AnyRow) -> Result<ArtifactRecord, StoreError> {
    let sha: Vec<u8> = r.try_get("sha256")?;
    Ok(ArtifactRecord {
        id: r.try_get("id")?,
        milestone_id: r.try_get("milestone_id")?,
        room_id: r.try_get("room_id")?,
        owner: r.try_get("owner")?,
        name: r.try_get("name")?,
        content_type: r.try_get("content_type")?,
        size_bytes: r.try_get("size_bytes")?,
        sha256: <[u8; 32]>::try_from(sha.as_slice())
            .map_err(|_| StoreError::Corrupt("an artifact hash is not 32 bytes"))?,
        storage_key: r.try_get("storage_key")?,
        created_at_ms: r.try_get("created_at_ms")?,
        frozen_at_ms: r.try_get("frozen_at_ms")?,
    })
}

impl Store {
    /// Registers an artifact as `viewer`, only if `viewer` is the room's freelancer and owner
    /// and the milestone is funded at the moment of the write (one statement, so a submission
    /// racing this write either sees the row and freezes it, or this write finds no funded
    /// milestone).
    pub async fn insert_artifact(
        &self,
        viewer: Viewer<'_>,
        a: &ArtifactRecord,
    ) -> Result<Registered, StoreError> {
        check_owner(&a.owner)?;
        let mut tx = self.scoped(viewer.sub, viewer.role).await?;
        let done = sqlx::query(
            "INSERT INTO escrow_artifacts (id, milestone_id, room_id, owner, name, \
             content_type, size_bytes, sha256, storage_key, created_at_ms) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 \
             WHERE $11 = 'freelancer' AND $4 = $12 \
             AND EXISTS (SELECT 1 FROM escrow_rooms r WHERE r.id = $3 AND r.freelancer = $4) \
             AND EXISTS (SELECT 1 FROM escrow_milestones m WHERE m.id = $2 AND m.room_id = $3 \
                         AND m.state = 'funded')",
        )
        .bind(&a.id)
        .bind(&a.milestone_id)
        .bind(&a.room_id)
        .bind(&a.owner)
        .bind(&a.name)
        .bind(&a.content_type)
        .bind(a.size_bytes)
        .bind(a.sha256.to_vec())
        .bind(&a.storage_key)
        .bind(a.created_at_ms)
        .bind(viewer.role)
        .bind(viewer.sub)
        .execute(&mut *tx)
        .await;
        let done = match done {
            Ok(done) => done,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                tx.rollback().await?;
                return Ok(Registered::Duplicate);
            }
            Err(e) => return Err(e.into()),
        };
        tx.commit().await?;
        Ok(if done.rows_affected() == 1 {
            Registered::Done
        } else {
            Registered::NotAllowed
        })
    }

    /// The artifacts of one milestone that `viewer` may read, oldest first.
    pub async fn milestone_artifacts(
        &self,
        viewer: Viewer<'_>,
        milestone_id: &str,
    ) -> Result<Vec<ArtifactRecord>, StoreError> {
        let mut tx = self.scoped(viewer.sub, viewer.role).await?;
        let rows = sqlx::query(&format!(
            "SELECT {ARTIFACT_COLUMNS} FROM escrow_artifacts a WHERE a.milestone_id = $1 AND {} \
             ORDER BY a.created_at_ms, a.id",
            artifact_visible(2)
        ))
        .bind(milestone_id)
        .bind(viewer.sub)
        .bind(viewer.role)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(artifact_from).collect()
    }

    /// One artifact, if `viewer` may read it.
    pub async fn artifact(
        &self,
        viewer: Viewer<'_>,
        artifact_id: &str,
    ) -> Result<Option<ArtifactRecord>, StoreError> {
        let mut tx = self.scoped(viewer.sub, viewer.role).await?;
        let row = sqlx::query(&format!(
            "SELECT {ARTIFACT_COLUMNS} FROM escrow_artifacts a WHERE a.id = $1 AND {}",
            artifact_visible(2)
        ))
        .bind(artifact_id)
        .bind(viewer.sub)
        .bind(viewer.role)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(artifact_from).transpose()
    }
}
