//! Artifact routes: upload URLs and registration for the freelancer, metadata for the room's
//! members, download URLs gated by the milestone's state. The api only signs URLs; the bytes
//! go between the client and the artifact store (seed T3).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::ApiError;
use crate::auth::Caller;
use crate::error::Problem;
use crate::escrow::{ArtifactView, NewArtifact, NewUpload, SignedUrl, UrlSigner};
use crate::json::ApiJson;
use crate::server::Shared;

/// The presigner with the configured URL lifetime (checked when the store was opened).
fn signer(state: &Shared) -> Option<UrlSigner<'_>> {
    let ttl = state.config.artifacts.as_ref()?.url_ttl().ok()?;
    Some(UrlSigner {
        store: state.artifacts.as_ref()?,
        ttl,
    })
}

/// `POST /v1/milestones/{milestone_id}/artifacts/upload-url`: a PUT URL for a new artifact,
/// bound to its length and SHA-256 (the room's freelancer, while the milestone is funded).
#[utoipa::path(post, path = "/v1/milestones/{milestone_id}/artifacts/upload-url", tag = "escrow", security(("bearer" = [])),
    params(("milestone_id" = String, Path, description = "Milestone id"), ("Idempotency-Key" = String, Header, description = "Required on every mutating request; scoped to the caller")), request_body = NewUpload,
    responses((status = 201, body = SignedUrl), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 503, body = Problem)))]
pub async fn upload_url(
    State(state): State<Shared>,
    caller: Caller,
    Path(milestone_id): Path<String>,
    ApiJson(body): ApiJson<NewUpload>,
) -> Result<(StatusCode, Json<SignedUrl>), ApiError> {
    let url = state
        .escrow()
        .upload_url(&caller, &milestone_id, body, signer(&state))
        .await?;
    Ok((StatusCode::CREATED, Json(url)))
}

/// `POST /v1/milestones/{milestone_id}/artifacts`: registers an uploaded object once the
/// store confirms its length and SHA-256 (409 `artifact_missing` / `artifact_mismatch`).
#[utoipa::path(post, path = "/v1/milestones/{milestone_id}/artifacts", tag = "escrow", security(("bearer" = [])),
    params(("milestone_id" = String, Path, description = "Milestone id"), ("Idempotency-Key" = String, Header, description = "Required on every mutating request; scoped to the caller")), request_body = NewArtifact,
    responses((status = 201, body = ArtifactView), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 503, body = Problem)))]
pub async fn register(
    State(state): State<Shared>,
    caller: Caller,
    Path(milestone_id): Path<String>,
    ApiJson(body): ApiJson<NewArtifact>,
) -> Result<(StatusCode, Json<ArtifactView>), ApiError> {
    let a = state
        .escrow()
        .register_artifact(&caller, &milestone_id, body, state.artifacts.as_ref())
        .await?;
    Ok((StatusCode::CREATED, Json(a)))
}

/// `GET /v1/milestones/{milestone_id}/artifacts`: metadata, for the room's members and the
/// system (admins and reviewers 403).
#[utoipa::path(get, path = "/v1/milestones/{milestone_id}/artifacts", tag = "escrow", security(("bearer" = [])),
    params(("milestone_id" = String, Path, description = "Milestone id")),
    responses((status = 200, body = Vec<ArtifactView>), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn list(
    State(state): State<Shared>,
    caller: Caller,
    Path(milestone_id): Path<String>,
) -> Result<Json<Vec<ArtifactView>>, ApiError> {
    Ok(Json(
        state.escrow().artifacts(&caller, &milestone_id).await?,
    ))
}

/// `GET /v1/artifacts/{artifact_id}/download-url`: a GET URL for the owner; for the
/// system from submitted on; for the client once transferred. Audited before and after for
/// everyone but the owner.
#[utoipa::path(get, path = "/v1/artifacts/{artifact_id}/download-url", tag = "escrow", security(("bearer" = [])),
    params(("artifact_id" = String, Path, description = "Artifact id")),
    responses((status = 200, body = SignedUrl), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 503, body = Problem)))]
pub async fn download_url(
    State(state): State<Shared>,
    caller: Caller,
    Path(artifact_id): Path<String>,
) -> Result<Json<SignedUrl>, ApiError> {
    Ok(Json(
        state
            .escrow()
            .download_url(&caller, &artifact_id, signer(&state))
            .await?,
    ))
}
