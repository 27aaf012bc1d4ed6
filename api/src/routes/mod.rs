//! HTTP routes under `/v1`, registered together with their OpenAPI descriptions so the
//! served document cannot drift from the routes.

pub mod artifacts;
pub mod attestation;
pub mod audit;
pub mod escrow;
pub mod health;
pub mod keys;
pub mod payments;

use axum::Router;
use axum::routing::get;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::server::Shared;

#[derive(OpenApi)]
#[openapi(
    info(title = "Enclosure API", description = "Enclave-first escrow and signing"),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The routes and the OpenAPI document that describes exactly them.
pub fn router_and_spec(state: Shared) -> (Router, utoipa::openapi::OpenApi) {
    let (router, spec) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::health))
        .routes(routes!(attestation::attestation))
        .routes(routes!(keys::create_identity, keys::list_identities))
        .routes(routes!(keys::create_key))
        .routes(routes!(keys::get_key, keys::destroy_key))
        .routes(routes!(keys::sign))
        .routes(routes!(audit::list))
        .routes(routes!(escrow::create_room, escrow::list_rooms))
        .routes(routes!(escrow::get_room))
        .routes(routes!(escrow::accept_terms))
        .routes(routes!(escrow::cancel_room))
        .routes(routes!(escrow::room_audit))
        .routes(routes!(escrow::add_note, escrow::list_notes))
        .routes(routes!(escrow::submit))
        .routes(routes!(escrow::validate))
        .routes(routes!(escrow::accept))
        .routes(routes!(escrow::reject))
        .routes(routes!(escrow::dispute))
        .routes(routes!(escrow::resolve))
        .routes(routes!(escrow::refund_late))
        .routes(routes!(escrow::cancel_milestone))
        .routes(routes!(escrow::expire))
        .routes(routes!(escrow::auto_accept))
        .routes(routes!(payments::fund))
        .routes(routes!(payments::money))
        .routes(routes!(payments::webhook))
        .routes(routes!(artifacts::upload_url))
        .routes(routes!(artifacts::register, artifacts::list))
        .routes(routes!(artifacts::download_url))
        .with_state(state)
        .split_for_parts();
    let json = spec.clone();
    let router = router.route(
        "/v1/openapi.json",
        get(move || {
            let json = json.clone();
            async move { axum::Json(json) }
        }),
    );
    (router, spec)
}
