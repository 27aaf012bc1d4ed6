//! `GET /v1/attestation?nonce=HEX`: a fresh attestation document for the caller's nonce.

use axum::Json;
use axum::extract::{Query, State};
use base64::Engine;
use enclosure_protocol::message::MAX_ATTEST_FIELD;
use enclosure_protocol::{Request, Response};
use serde::{Deserialize, Serialize};

use crate::ApiError;
use crate::error::Problem;
use crate::server::Shared;

/// Query parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttestationQuery {
    /// The caller's freshness nonce, hex, 1 to 512 bytes.
    pub nonce: Option<String>,
}

/// The answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttestationAnswer {
    /// The COSE_Sign1 attestation document, base64.
    pub document: String,
    /// The enclave instance key the document binds, PEM (SPKI).
    pub instance_public_key: String,
}

/// Asks the enclave for a document binding its instance key and the caller's nonce.
#[utoipa::path(get, path = "/v1/attestation", tag = "attestation", params(AttestationQuery),
    responses((status = 200, body = AttestationAnswer), (status = 400, body = Problem), (status = 503, body = Problem)))]
pub async fn attestation(
    State(state): State<Shared>,
    Query(q): Query<AttestationQuery>,
) -> Result<Json<AttestationAnswer>, ApiError> {
    let hex_nonce = q
        .nonce
        .ok_or_else(|| ApiError::BadRequest("the nonce query parameter is required".into()))?;
    let nonce =
        hex::decode(&hex_nonce).map_err(|_| ApiError::BadRequest("nonce must be hex".into()))?;
    if nonce.is_empty() || nonce.len() > MAX_ATTEST_FIELD {
        return Err(ApiError::BadRequest(format!(
            "nonce must be 1 to {MAX_ATTEST_FIELD} bytes"
        )));
    }
    let document = match state
        .enclave
        .call(Request::Attest {
            nonce,
            user_data: vec![],
        })
        .await?
    {
        Response::Attestation { document } => document,
        _ => return Err(ApiError::Internal("unexpected answer to Attest".into())),
    };
    let instance_key = match state.enclave.call(Request::Health).await? {
        Response::Health {
            instance_public_key,
            ..
        } => instance_public_key,
        _ => return Err(ApiError::Internal("unexpected answer to Health".into())),
    };
    // The key here is a convenience; clients must take the key from the verified document,
    // which is what the SDK does.
    Ok(Json(AttestationAnswer {
        document: base64::engine::general_purpose::STANDARD.encode(document),
        instance_public_key: crate::pem::encode("PUBLIC KEY", &instance_key),
    }))
}
