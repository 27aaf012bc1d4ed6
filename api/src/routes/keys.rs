//! Identity, key and signing routes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine;
use serde::Deserialize;

use crate::ApiError;
use crate::auth::Caller;
use crate::error::Problem;
use crate::json::ApiJson;
use crate::keys::{self, IdentityView, KeyView, SignatureView};
use crate::server::Shared;

/// Body of `POST /v1/identities`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewIdentity {
    /// Display name.
    pub name: String,
}

/// Body of `POST /v1/keys/{key_id}/sign`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignBody {
    /// The message, base64.
    pub message: String,
}

/// `POST /v1/identities`.
#[utoipa::path(post, path = "/v1/identities", tag = "identities", security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "Required on every mutating request; scoped to the caller")), request_body = NewIdentity,
    responses((status = 201, body = IdentityView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 422, body = Problem)))]
pub async fn create_identity(
    State(state): State<Shared>,
    caller: Caller,
    ApiJson(body): ApiJson<NewIdentity>,
) -> Result<(StatusCode, Json<IdentityView>), ApiError> {
    let v = keys::create_identity(&state, &caller, &body.name).await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// `GET /v1/identities`.
#[utoipa::path(get, path = "/v1/identities", tag = "identities", security(("bearer" = [])),
    responses((status = 200, body = Vec<IdentityView>), (status = 401, body = Problem)))]
pub async fn list_identities(
    State(state): State<Shared>,
    caller: Caller,
) -> Result<Json<Vec<IdentityView>>, ApiError> {
    Ok(Json(keys::list_identities(&state, &caller).await?))
}

/// `POST /v1/identities/{id}/keys`.
#[utoipa::path(post, path = "/v1/identities/{id}/keys", tag = "keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "Identity id"), ("Idempotency-Key" = String, Header, description = "Required on every mutating request; scoped to the caller")),
    responses((status = 201, body = KeyView), (status = 404, body = Problem), (status = 429, body = Problem), (status = 503, body = Problem)))]
pub async fn create_key(
    State(state): State<Shared>,
    caller: Caller,
    Path(identity_id): Path<String>,
) -> Result<(StatusCode, Json<KeyView>), ApiError> {
    let v = keys::generate_key(&state, &caller, &identity_id).await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// `GET /v1/keys/{key_id}`.
#[utoipa::path(get, path = "/v1/keys/{key_id}", tag = "keys", security(("bearer" = [])),
    params(("key_id" = String, Path, description = "Key id")),
    responses((status = 200, body = KeyView), (status = 404, body = Problem)))]
pub async fn get_key(
    State(state): State<Shared>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    Ok(Json(keys::get_key(&state, &caller, &key_id).await?))
}

/// `POST /v1/keys/{key_id}/sign`.
#[utoipa::path(post, path = "/v1/keys/{key_id}/sign", tag = "keys", security(("bearer" = [])),
    params(("key_id" = String, Path, description = "Key id"), ("Idempotency-Key" = String, Header, description = "Required on every mutating request; scoped to the caller")), request_body = SignBody,
    responses((status = 200, body = SignatureView), (status = 400, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem), (status = 415, body = Problem), (status = 429, body = Problem), (status = 503, body = Problem)))]
pub async fn sign(
    State(state): State<Shared>,
    caller: Caller,
    Path(key_id): Path<String>,
    ApiJson(body): ApiJson<SignBody>,
) -> Result<Json<SignatureView>, ApiError> {
    let message = base64::engine::general_purpose::STANDARD
        .decode(body.message.as_bytes())
        .map_err(|_| ApiError::BadRequest("message must be base64".into()))?;
    Ok(Json(keys::sign(&state, &caller, &key_id, &message).await?))
}

/// `DELETE /v1/keys/{key_id}`.
#[utoipa::path(delete, path = "/v1/keys/{key_id}", tag = "keys", security(("bearer" = [])),
    params(("key_id" = String, Path, description = "Key id"), ("Idempotency-Key" = String, Header, description = "Required on every mutating request; scoped to the caller")),
    responses((status = 204), (status = 404, body = Problem), (status = 503, body = Problem)))]
pub async fn destroy_key(
    State(state): State<Shared>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    keys::destroy(&state, &caller, &key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
