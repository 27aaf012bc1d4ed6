//! Artifacts of a milestone: upload URLs and registration for the freelancer, metadata for
//! the room's members, download URLs gated by the milestone's state, and the checks that make
//! a submission and a validation mean what was uploaded (seed T3).
//!
//! # Who gets a download URL
//!
//! The owner (the room's freelancer) always; the system from `submitted` onward
//! (`submitted`, `validated`, `accepted`, `transferred`, `disputed`, `needs_admin`) for frozen
//! artifacts; the room's client only once the milestone is `transferred`, for frozen
//! artifacts. Admins and reviewers never (403), whatever the state (seed T4: no role-based
//! bypass); anybody else learns nothing (404). Metadata follows the same line: members and
//! the system read it, admins and reviewers are refused, as PostgreSQL's row-level security
//! on `escrow_artifacts` has it.
//!
//! # Audit
//!
//! Upload URLs and registrations append one `escrow.artifact.*` row each. A download URL for
//! anyone but the owner is audited twice (seed T5): `escrow.artifact.download_url.requested`
//! is written before anything is decided or signed, and the URL is not minted unless that row
//! is stored; `escrow.artifact.download_url` records the outcome (ok, refused or error)
//! afterwards, and the URL is handed out only once that row is stored too. The audit table
//! admits only the outcomes ok, refused and error, so the first row's phase is in its action
//! name (outcome ok: the request was recorded). Both rows are linked to the room when the
//! caller may see the room. Neither row holds the URL: its query string is a bearer
//! capability until it expires.

mod checks;
mod download;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use enclosure_policy::escrow::{Actor, MilestoneState, RoomState};
use serde::{Deserialize, Serialize};

use super::{Escrow, Subject, actor_in, viewer};
use crate::ApiError;
use crate::artifacts::{ArtifactError, ArtifactStore, MAX_PUT_LENGTH, ObjectKey, PresignedRequest};
use crate::auth::Caller;
use crate::store::escrow::{ArtifactRecord, MilestoneRecord, Registered, RoomRecord};

pub(super) use checks::Check;

/// The artifact store as the URL-minting services use it: the presigner, and how long the
/// URLs it hands out live (the operator's `url_ttl_secs`, 60–300 s; the presigner refuses
/// anything else).
#[derive(Clone, Copy, Debug)]
pub struct UrlSigner<'a> {
    /// The presigner.
    pub store: &'a ArtifactStore,
    /// Lifetime of each URL handed out.
    pub ttl: Duration,
}

/// Longest artifact name, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Longest declared media type, in bytes.
pub const MAX_CONTENT_TYPE_LEN: usize = 127;

/// What the freelancer is about to upload; the PUT URL is bound to its length and hash.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUpload {
    /// File name: 1 to 255 bytes, no control characters, no `/` or `\`.
    pub name: String,
    /// Media type, such as `image/png`.
    pub content_type: String,
    /// Exact length in bytes, 1 to 5 GiB.
    pub size_bytes: u64,
    /// SHA-256 of the bytes, 64 hex digits.
    pub sha256: String,
}

/// An uploaded object the freelancer registers as an artifact of the milestone.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewArtifact {
    /// The `artifact_id` the upload URL was minted for.
    pub artifact_id: String,
    /// File name, as for the upload.
    pub name: String,
    /// Media type, as for the upload.
    pub content_type: String,
    /// Length in bytes; must be what the store holds.
    pub size_bytes: u64,
    /// SHA-256, 64 hex digits; must be what the store holds.
    pub sha256: String,
}

/// An artifact's metadata as shown (never its bytes, never where it lies).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ArtifactView {
    /// Artifact id.
    pub id: String,
    /// Its milestone.
    pub milestone_id: String,
    /// The milestone's room.
    pub room_id: String,
    /// Who uploaded it.
    pub owner: String,
    /// File name.
    pub name: String,
    /// Declared media type.
    pub content_type: String,
    /// Length in bytes, as the store measured it.
    pub size_bytes: i64,
    /// SHA-256, hex, as the store measured it.
    pub sha256: String,
    /// Registration time, unix ms.
    pub created_at_ms: i64,
    /// When the submission froze it, unix ms.
    pub frozen_at_ms: Option<i64>,
}

impl From<&ArtifactRecord> for ArtifactView {
    fn from(a: &ArtifactRecord) -> Self {
        ArtifactView {
            id: a.id.clone(),
            milestone_id: a.milestone_id.clone(),
            room_id: a.room_id.clone(),
            owner: a.owner.clone(),
            name: a.name.clone(),
            content_type: a.content_type.clone(),
            size_bytes: a.size_bytes,
            sha256: hex::encode(a.sha256),
            created_at_ms: a.created_at_ms,
            frozen_at_ms: a.frozen_at_ms,
        }
    }
}

/// A presigned request for the artifact store: send `method` to `url` with `headers`
/// verbatim before `expires_at_ms`. The store checks the signature, not the api.
///
/// `Debug` shows no query string: until it expires, the URL is a bearer capability.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub struct SignedUrl {
    /// The artifact it is for (a fresh id for an upload).
    pub artifact_id: String,
    /// `PUT` (upload) or `GET` (download).
    pub method: String,
    /// The URL, signature in its query string.
    pub url: String,
    /// `[name, value]` pairs to send exactly (the signed length and hashes of a PUT).
    pub headers: Vec<Vec<String>>,
    /// When the store stops accepting it, unix ms.
    pub expires_at_ms: i64,
}

impl fmt::Debug for SignedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = url::Url::parse(&self.url)
            .map(|u| u.path().to_string())
            .unwrap_or_default();
        f.debug_struct("SignedUrl")
            .field("artifact_id", &self.artifact_id)
            .field("method", &self.method)
            .field("path", &path)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

fn signed(artifact_id: &str, p: PresignedRequest) -> SignedUrl {
    SignedUrl {
        artifact_id: artifact_id.to_string(),
        method: p.method.to_string(),
        url: p.url.to_string(),
        headers: p
            .headers
            .into_iter()
            .map(|(n, v)| vec![n.to_string(), v])
            .collect(),
        expires_at_ms: ms_of(p.expires_at),
    }
}

fn ms_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn unavailable() -> ApiError {
    ApiError::ServiceUnavailable {
        code: "artifacts_unavailable",
        detail: "no artifact store is configured".into(),
        retry_after: 60,
    }
}

fn conflict(code: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::Conflict {
        code,
        detail: detail.into(),
    }
}

/// The artifact layer's failure as an api error; store outages say so without detail.
fn store_failed(e: ArtifactError) -> ApiError {
    match e {
        ArtifactError::InvalidKey(what) => ApiError::BadRequest(format!("invalid {what}")),
        ArtifactError::TooLarge { .. } => ApiError::BadRequest(e.to_string()),
        ArtifactError::Transport(_)
        | ArtifactError::Refused { .. }
        | ArtifactError::BadResponse(_) => {
            // The message carries no URL (the artifact layer strips it).
            tracing::error!(error = %e, "the artifact store failed");
            ApiError::ServiceUnavailable {
                code: "artifacts_unavailable",
                detail: "the artifact store did not answer usably; retry later".into(),
                retry_after: 5,
            }
        }
        other => ApiError::Internal(format!("artifact store: {other}")),
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.trim().is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\');
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "name must be 1 to {MAX_NAME_LEN} bytes, without control characters, '/' or '\\'"
        )))
    }
}

fn check_content_type(ct: &str) -> Result<(), ApiError> {
    // type/subtype with optional parameters, printable ASCII only.
    let ok = ct.len() <= MAX_CONTENT_TYPE_LEN
        && ct.bytes().all(|b| (0x20..0x7f).contains(&b))
        && ct
            .split(';')
            .next()
            .and_then(|t| t.trim().split_once('/'))
            .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains('/'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "content_type must be a media type such as image/png, at most {MAX_CONTENT_TYPE_LEN} bytes"
        )))
    }
}

fn check_size(size: u64) -> Result<i64, ApiError> {
    if (1..=MAX_PUT_LENGTH).contains(&size) {
        Ok(size as i64)
    } else {
        Err(ApiError::BadRequest(format!(
            "size_bytes must be 1 to {MAX_PUT_LENGTH}"
        )))
    }
}

fn parse_sha256(hex_text: &str) -> Result<[u8; 32], ApiError> {
    let bad = || ApiError::BadRequest("sha256 must be 64 hex digits".into());
    if hex_text.len() != 64 {
        return Err(bad());
    }
    hex::decode(hex_text)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(bad)
}

/// Whether an id could be an artifact id at all (the object key's rule); others are 404.
fn plausible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The freelancer's milestone, funded, in an active room: where uploads are accepted.
fn check_uploadable(
    caller: &Caller,
    room: &RoomRecord,
    m: &MilestoneRecord,
) -> Result<(), ApiError> {
    if actor_in(caller, room)? != Actor::Freelancer {
        return Err(ApiError::Forbidden);
    }
    if room.state != RoomState::Active || m.state != MilestoneState::Funded {
        return Err(conflict(
            "not_funded",
            format!(
                "artifacts are uploaded only while the milestone is funded, not {}",
                m.state
            ),
        ));
    }
    Ok(())
}

impl Escrow<'_> {
    fn at_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(u64::try_from(self.now_ms).unwrap_or(0))
    }

    /// A PUT URL for a new artifact of a funded milestone, bound to the declared length and
    /// SHA-256 (the room's freelancer only).
    pub async fn upload_url(
        &self,
        caller: &Caller,
        milestone_id: &str,
        new: NewUpload,
        signer: Option<UrlSigner<'_>>,
    ) -> Result<SignedUrl, ApiError> {
        let mut subject = Subject {
            milestone_id: Some(milestone_id.to_string()),
            ..Subject::default()
        };
        let result = async {
            check_name(&new.name)?;
            check_content_type(&new.content_type)?;
            check_size(new.size_bytes)?;
            let sha = parse_sha256(&new.sha256)?;
            let (room, m) = self
                .store
                .milestone(viewer(caller), milestone_id)
                .await?
                .ok_or(ApiError::NotFound)?;
            subject.room_id = Some(room.id.clone());
            subject.visible = true;
            check_uploadable(caller, &room, &m)?;
            let signer = signer.ok_or_else(unavailable)?;
            let artifact_id = uuid::Uuid::new_v4().to_string();
            let key =
                ObjectKey::for_artifact(&room.id, &m.id, &artifact_id).map_err(store_failed)?;
            let p = signer
                .store
                .presign_put_at(&key, new.size_bytes, &sha, signer.ttl, self.at_time())
                .map_err(store_failed)?;
            subject.moved = Some(format!("artifact={artifact_id}"));
            Ok(signed(&artifact_id, p))
        }
        .await;
        self.audit_as(caller, "escrow.artifact.upload_url", &subject, &result)
            .await;
        result
    }

    /// Registers an uploaded object as an artifact of a funded milestone, once the store
    /// confirms it holds exactly the declared length and SHA-256 (the room's freelancer only).
    pub async fn register_artifact(
        &self,
        caller: &Caller,
        milestone_id: &str,
        new: NewArtifact,
        artifacts: Option<&ArtifactStore>,
    ) -> Result<ArtifactView, ApiError> {
        let mut subject = Subject {
            milestone_id: Some(milestone_id.to_string()),
            ..Subject::default()
        };
        let result = async {
            check_name(&new.name)?;
            check_content_type(&new.content_type)?;
            let size = check_size(new.size_bytes)?;
            let sha = parse_sha256(&new.sha256)?;
            if !plausible_id(&new.artifact_id) {
                return Err(ApiError::BadRequest(
                    "artifact_id must be the id an upload URL was minted for".into(),
                ));
            }
            let (room, m) = self
                .store
                .milestone(viewer(caller), milestone_id)
                .await?
                .ok_or(ApiError::NotFound)?;
            subject.room_id = Some(room.id.clone());
            subject.visible = true;
            subject.moved = Some(format!("artifact={}", new.artifact_id));
            check_uploadable(caller, &room, &m)?;
            let store = artifacts.ok_or_else(unavailable)?;
            let key =
                ObjectKey::for_artifact(&room.id, &m.id, &new.artifact_id).map_err(store_failed)?;
            // The store's own measurement, not the uploader's claim (see `ArtifactStore::head`).
            let info = store
                .head(&key)
                .await
                .map_err(store_failed)?
                .ok_or_else(|| {
                    conflict(
                        "artifact_missing",
                        "nothing was uploaded for this artifact_id in this milestone",
                    )
                })?;
            if info.size != new.size_bytes || info.sha256 != sha {
                return Err(conflict(
                    "artifact_mismatch",
                    "the uploaded object's size or SHA-256 differs from the declared one",
                ));
            }
            let record = ArtifactRecord {
                id: new.artifact_id.clone(),
                milestone_id: m.id.clone(),
                room_id: room.id.clone(),
                owner: caller.sub.clone(),
                name: new.name,
                content_type: new.content_type,
                size_bytes: size,
                sha256: sha,
                storage_key: key.as_str().to_string(),
                created_at_ms: self.now_ms,
                frozen_at_ms: None,
            };
            match self.store.insert_artifact(viewer(caller), &record).await? {
                Registered::Done => Ok(ArtifactView::from(&record)),
                Registered::Duplicate => Err(conflict(
                    "artifact_exists",
                    "this artifact is registered already",
                )),
                Registered::NotAllowed => {
                    Err(conflict("not_funded", "the milestone is no longer funded"))
                }
            }
        }
        .await;
        self.audit_as(caller, "escrow.artifact.register", &subject, &result)
            .await;
        result
    }

    /// The artifacts' metadata of a milestone, for the room's members and the system; admins
    /// and reviewers are refused (403), others find nothing (404).
    pub async fn artifacts(
        &self,
        caller: &Caller,
        milestone_id: &str,
    ) -> Result<Vec<ArtifactView>, ApiError> {
        let (room, m) = self
            .store
            .milestone(viewer(caller), milestone_id)
            .await?
            .ok_or(ApiError::NotFound)?;
        if !matches!(
            actor_in(caller, &room)?,
            Actor::Client | Actor::Freelancer | Actor::System
        ) {
            return Err(ApiError::Forbidden);
        }
        Ok(self
            .store
            .milestone_artifacts(viewer(caller), &m.id)
            .await?
            .iter()
            .map(ArtifactView::from)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_checks() {
        assert!(check_name("logo.png").is_ok());
        for bad in ["", "  ", "a/b", "a\\b", "a\nb", &"x".repeat(256)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for ok in ["image/png", "text/plain; charset=utf-8"] {
            assert!(check_content_type(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "png",
            "/png",
            "image/",
            "a/b/c",
            "image/png\r\n",
            "imagé/png",
        ] {
            assert!(check_content_type(bad).is_err(), "{bad:?}");
        }
        assert!(check_size(0).is_err());
        assert!(check_size(MAX_PUT_LENGTH + 1).is_err());
        assert!(check_size(1).is_ok());
        assert!(parse_sha256(&"ab".repeat(32)).is_ok());
        assert!(parse_sha256(&"AB".repeat(32)).is_ok());
        for bad in ["", "ab", &"zz".repeat(32), &"ab".repeat(33)] {
            assert!(parse_sha256(bad).is_err(), "{bad:?}");
        }
        assert!(!plausible_id("../x"));
        assert!(plausible_id("0f8c2a1e-6a4b-4d1c-9a1b-2c3d4e5f6a7b"));
    }

    #[test]
    fn signed_url_debug_hides_the_query() {
        let u = SignedUrl {
            artifact_id: "a".into(),
            method: "GET".into(),
            url: "http://s/b/rooms/r/milestones/m/a?X-Amz-Signature=deadbeef".into(),
            headers: vec![],
            expires_at_ms: 1,
        };
        let shown = format!("{u:?}");
        assert!(!shown.contains("deadbeef"), "{shown}");
        assert!(shown.contains("/b/rooms/r/milestones/m/a"), "{shown}");
    }
}
