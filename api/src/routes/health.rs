//! `GET /v1/health`: the api, the database and the enclave, each reported.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use enclosure_protocol::{Request, Response};
use serde::Serialize;

use crate::server::Shared;

/// The health report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthReport {
    /// "ok" when every part is healthy, "degraded" otherwise.
    pub status: &'static str,
    /// The api process itself.
    pub api: ComponentHealth,
    /// The database.
    pub database: DatabaseHealth,
    /// The enclave, through the proxy.
    pub enclave: EnclaveHealth,
}

/// A part that is simply up or down.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ComponentHealth {
    /// "ok" or "down".
    pub status: &'static str,
}

/// The database, and which backend it is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DatabaseHealth {
    /// "ok" or "down".
    pub status: &'static str,
    /// "sqlite" or "postgres".
    pub backend: &'static str,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the enclave says about itself.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EnclaveHealth {
    /// "ok" or "down".
    pub status: &'static str,
    /// "nitro" or "dev", when reachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Keys the enclave holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_count: Option<u64>,
    /// Whether the ticket key is provisioned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioned: Option<bool>,
    /// Enclave uptime in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<u64>,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Reports health; 200 when all is well, 503 otherwise, with the same body shape.
#[utoipa::path(get, path = "/v1/health", tag = "health",
    responses((status = 200, body = HealthReport), (status = 503, body = HealthReport)))]
pub async fn health(State(state): State<Shared>) -> (StatusCode, Json<HealthReport>) {
    let enclave = match state.enclave.call(Request::Health).await {
        Ok(Response::Health {
            mode,
            key_count,
            provisioned,
            uptime_secs,
            ..
        }) => EnclaveHealth {
            status: "ok",
            mode: Some(mode),
            key_count: Some(key_count),
            provisioned: Some(provisioned),
            uptime_secs: Some(uptime_secs),
            error: None,
        },
        Ok(_) => down("unexpected answer to Health".into()),
        Err(e) => down(e.to_string()),
    };
    let database = match state.store.ping().await {
        Ok(()) => DatabaseHealth {
            status: "ok",
            backend: state.store.backend_name(),
            error: None,
        },
        Err(e) => DatabaseHealth {
            status: "down",
            backend: state.store.backend_name(),
            error: Some(e.to_string()),
        },
    };
    let ok = enclave.status == "ok" && database.status == "ok";
    let report = HealthReport {
        status: if ok { "ok" } else { "degraded" },
        api: ComponentHealth { status: "ok" },
        database,
        enclave,
    };
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(report))
}

fn down(error: String) -> EnclaveHealth {
    EnclaveHealth {
        status: "down",
        mode: None,
        key_count: None,
        provisioned: None,
        uptime_secs: None,
        error: Some(error),
    }
}
