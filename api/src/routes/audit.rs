//! `GET /v1/audit?after=SEQ&limit=N`: admins see every entry, everyone else their own.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};

use crate::ApiError;
use crate::auth::{Caller, Role};
use crate::error::Problem;
use crate::keys::rfc3339;
use crate::server::Shared;

/// Largest page.
pub const MAX_LIMIT: u32 = 500;

/// Query parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries after this sequence number.
    #[serde(default)]
    pub after: i64,
    /// Page size, 1 to 500 (default 100).
    pub limit: Option<u32>,
}

/// One audit entry as shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditView {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Who acted.
    pub actor: String,
    /// Their role.
    pub actor_role: String,
    /// What they did.
    pub action: String,
    /// The identity concerned.
    pub identity_id: Option<String>,
    /// The key concerned.
    pub key_id: Option<String>,
    /// The ticket used.
    pub ticket_id: Option<String>,
    /// ok, refused or error.
    pub outcome: String,
    /// The refusal code, when refused.
    pub detail: Option<String>,
    /// RFC 3339 time.
    pub at: String,
    /// This row's chain hash, hex.
    pub hash: String,
}

/// Lists audit entries.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, body = Vec<AuditView>), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn list(
    State(state): State<Shared>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditView>>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) || q.after < 0 {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_LIMIT} and after must not be negative"
        )));
    }
    let rows = state
        .store
        .list_audit(&caller.sub, caller.role == Role::Admin, q.after, limit)
        .await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| AuditView {
                seq: r.seq,
                actor: r.actor,
                actor_role: r.actor_role,
                action: r.action,
                identity_id: r.identity_id,
                key_id: r.key_id,
                ticket_id: r.ticket_id,
                outcome: r.outcome,
                detail: r.detail,
                at: rfc3339(r.at_ms),
                hash: hex::encode(r.hash),
            })
            .collect(),
    ))
}
