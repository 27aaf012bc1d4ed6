//! HTTP routes under `/v1`.

pub mod attestation;
pub mod health;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::server::AppState;

/// The api's router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/health", get(health::health))
        .route("/v1/attestation", get(attestation::attestation))
        .with_state(state)
}
