//! Escrow routes: rooms, their terms and audit trail, milestones and their transitions. Each
//! handler hands the verified caller and the time to one named service in `crate::escrow`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use crate::ApiError;
use crate::auth::Caller;
use crate::error::Problem;
use crate::escrow::{
    AuditTrailEntry, MilestoneView, NewNote, NewRoom, NoteView, Resolution, RoomView,
};
use crate::json::ApiJson;
use crate::server::Shared;

/// Body of a transition: optionally, the version the caller saw, so the move happens only
/// if nothing changed since (otherwise 409 `lost_race`).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// The room's or milestone's `version` as last read.
    pub expected_version: Option<i64>,
}

/// Body of `POST /v1/milestones/{id}/resolve`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    /// release (on to the swap) or refund.
    pub resolution: Resolution,
    /// The milestone's `version` as last read.
    pub expected_version: Option<i64>,
}

/// Query of a room's audit trail.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrailQuery {
    /// Entries after this sequence number.
    #[serde(default)]
    pub after: i64,
    /// Page size, 1 to 500 (default 100).
    pub limit: Option<u32>,
}

/// `POST /v1/rooms`.
#[utoipa::path(post, path = "/v1/rooms", tag = "escrow", security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "Required on every mutating request; scoped to the caller")), request_body = NewRoom,
    responses((status = 201, body = RoomView), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn create_room(
    State(state): State<Shared>,
    caller: Caller,
    ApiJson(body): ApiJson<NewRoom>,
) -> Result<(StatusCode, Json<RoomView>), ApiError> {
    let room = state.escrow().create_room(&caller, body).await?;
    Ok((StatusCode::CREATED, Json(room)))
}

/// `GET /v1/rooms`: the rooms the caller is a party to.
#[utoipa::path(get, path = "/v1/rooms", tag = "escrow", security(("bearer" = [])),
    responses((status = 200, body = Vec<RoomView>), (status = 401, body = Problem)))]
pub async fn list_rooms(
    State(state): State<Shared>,
    caller: Caller,
) -> Result<Json<Vec<RoomView>>, ApiError> {
    Ok(Json(state.escrow().rooms(&caller).await?))
}

/// `GET /v1/rooms/{room_id}`.
#[utoipa::path(get, path = "/v1/rooms/{room_id}", tag = "escrow", security(("bearer" = [])),
    params(("room_id" = String, Path, description = "Room id")),
    responses((status = 200, body = RoomView), (status = 404, body = Problem)))]
pub async fn get_room(
    State(state): State<Shared>,
    caller: Caller,
    Path(room_id): Path<String>,
) -> Result<Json<RoomView>, ApiError> {
    Ok(Json(state.escrow().room(&caller, &room_id).await?))
}

/// `POST /v1/rooms/{room_id}/accept`: the caller accepts the terms.
#[utoipa::path(post, path = "/v1/rooms/{room_id}/accept", tag = "escrow", security(("bearer" = [])),
    params(("room_id" = String, Path, description = "Room id"), ("Idempotency-Key" = String, Header, description = "Required on every mutating request; scoped to the caller")), request_body = Decision,
    responses((status = 200, body = RoomView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn accept_terms(
    State(state): State<Shared>,
    caller: Caller,
    Path(room_id): Path<String>,
    ApiJson(body): ApiJson<Decision>,
) -> Result<Json<RoomView>, ApiError> {
    Ok(Json(
        state
            .escrow()
            .accept_terms(&caller, &room_id, body.expected_version)
            .await?,
    ))
}

/// `POST /v1/rooms/{room_id}/cancel`: before any milestone was funded.
#[utoipa::path(post, path = "/v1/rooms/{room_id}/cancel", tag = "escrow", security(("bearer" = [])),
    params(("room_id" = String, Path, description = "Room id"), ("Idempotency-Key" = String, Header, description = "Required on every mutating request; scoped to the caller")), request_body = Decision,
    responses((status = 200, body = RoomView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn cancel_room(
    State(state): State<Shared>,
    caller: Caller,
    Path(room_id): Path<String>,
    ApiJson(body): ApiJson<Decision>,
) -> Result<Json<RoomView>, ApiError> {
    Ok(Json(
        state
            .escrow()
            .cancel_room(&caller, &room_id, body.expected_version)
            .await?,
    ))
}

/// `GET /v1/rooms/{room_id}/audit`: the room's trail, for its members.
#[utoipa::path(get, path = "/v1/rooms/{room_id}/audit", tag = "escrow", security(("bearer" = [])),
    params(("room_id" = String, Path, description = "Room id"), TrailQuery),
    responses((status = 200, body = Vec<AuditTrailEntry>), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn room_audit(
    State(state): State<Shared>,
    caller: Caller,
    Path(room_id): Path<String>,
    Query(q): Query<TrailQuery>,
) -> Result<Json<Vec<AuditTrailEntry>>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=super::audit::MAX_LIMIT).contains(&limit) || q.after < 0 {
        return Err(ApiError::BadRequest(
            "limit must be 1 to 500 and after must not be negative".into(),
        ));
    }
    Ok(Json(
        state
            .escrow()
            .room_audit(&caller, &room_id, q.after, limit)
            .await?,
    ))
}

/// Declares one milestone transition route: `POST /v1/milestones/{milestone_id}/<verb>`.
macro_rules! transition_route {
    ($name:ident, $path:literal, $doc:literal, |$e:ident, $c:ident, $id:ident, $v:ident| $call:expr) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "escrow",
            security(("bearer" = [])),
            params(("milestone_id" = String, Path, description = "Milestone id"), ("Idempotency-Key" = String, Header, description = "Required on every mutating request; scoped to the caller")),
            request_body = Decision,
            responses((status = 200, body = MilestoneView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
        pub async fn $name(
            State(state): State<Shared>,
            $c: Caller,
            Path($id): Path<String>,
            ApiJson(body): ApiJson<Decision>,
        ) -> Result<Json<MilestoneView>, ApiError> {
            let $e = state.escrow();
            let $v = body.expected_version;
            Ok(Json($call.await?))
        }
    };
}

/// `POST /v1/milestones/{milestone_id}/submit`: the freelancer submits; each registered
/// artifact is checked against the store, then frozen.
#[utoipa::path(post, path = "/v1/milestones/{milestone_id}/submit", tag = "escrow", security(("bearer" = [])),
    params(("milestone_id" = String, Path, description = "Milestone id"), ("Idempotency-Key" = String, Header, description = "Required on every mutating request; scoped to the caller")), request_body = Decision,
    responses((status = 200, body = MilestoneView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 503, body = Problem)))]
pub async fn submit(
    State(state): State<Shared>,
    caller: Caller,
    Path(milestone_id): Path<String>,
    ApiJson(body): ApiJson<Decision>,
) -> Result<Json<MilestoneView>, ApiError> {
    Ok(Json(
        state
            .escrow()
            .submit(
                &caller,
                &milestone_id,
                body.expected_version,
                state.artifacts.as_ref(),
            )
            .await?,
    ))
}

/// `POST /v1/milestones/{milestone_id}/validate`: the system validates the submission after
/// hashing every frozen artifact itself.
#[utoipa::path(post, path = "/v1/milestones/{milestone_id}/validate", tag = "escrow", security(("bearer" = [])),
    params(("milestone_id" = String, Path, description = "Milestone id"), ("Idempotency-Key" = String, Header, description = "Required on every mutating request; scoped to the caller")), request_body = Decision,
    responses((status = 200, body = MilestoneView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 503, body = Problem)))]
pub async fn validate(
    State(state): State<Shared>,
    caller: Caller,
    Path(milestone_id): Path<String>,
    ApiJson(body): ApiJson<Decision>,
) -> Result<Json<MilestoneView>, ApiError> {
    Ok(Json(
        state
            .escrow()
            .validate(
                &caller,
                &milestone_id,
                body.expected_version,
                state.artifacts.as_ref(),
            )
            .await?,
    ))
}
transition_route!(
    accept,
    "/v1/milestones/{milestone_id}/accept",
    "The client accepts validated work.",
    |e, c, id, v| e.accept(&c, &id, v)
);
transition_route!(
    reject,
    "/v1/milestones/{milestone_id}/reject",
    "The client rejects validated work (one revision).",
    |e, c, id, v| e.reject(&c, &id, v)
);
transition_route!(
    dispute,
    "/v1/milestones/{milestone_id}/dispute",
    "Either party disputes.",
    |e, c, id, v| e.dispute(&c, &id, v)
);
transition_route!(
    refund_late,
    "/v1/milestones/{milestone_id}/refund",
    "The client takes the escrow back after a missed delivery deadline.",
    |e, c, id, v| e.refund_late(&c, &id, v)
);
transition_route!(
    cancel_milestone,
    "/v1/milestones/{milestone_id}/cancel",
    "A party asks to cancel; both asking refunds.",
    |e, c, id, v| e.cancel_milestone(&c, &id, v)
);
transition_route!(
    expire,
    "/v1/milestones/{milestone_id}/expire",
    "The system expires a milestone whose funding deadline passed.",
    |e, c, id, _v| e.expire(&c, &id)
);
transition_route!(
    auto_accept,
    "/v1/milestones/{milestone_id}/auto-accept",
    "The system accepts once the inspection period ended.",
    |e, c, id, _v| e.auto_accept(&c, &id)
);

/// `POST /v1/milestones/{milestone_id}/resolve`: an admin resolves a dispute.
#[utoipa::path(post, path = "/v1/milestones/{milestone_id}/resolve", tag = "escrow", security(("bearer" = [])),
    params(("milestone_id" = String, Path, description = "Milestone id"), ("Idempotency-Key" = String, Header, description = "Required on every mutating request; scoped to the caller")), request_body = ResolveBody,
    responses((status = 200, body = MilestoneView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn resolve(
    State(state): State<Shared>,
    caller: Caller,
    Path(milestone_id): Path<String>,
    ApiJson(body): ApiJson<ResolveBody>,
) -> Result<Json<MilestoneView>, ApiError> {
    Ok(Json(
        state
            .escrow()
            .resolve(
                &caller,
                &milestone_id,
                body.resolution,
                body.expected_version,
            )
            .await?,
    ))
}

/// `POST /v1/rooms/{room_id}/notes`: a reviewer annotates a room.
#[utoipa::path(post, path = "/v1/rooms/{room_id}/notes", tag = "escrow", security(("bearer" = [])),
    params(("room_id" = String, Path, description = "Room id"), ("Idempotency-Key" = String, Header, description = "Required on every mutating request; scoped to the caller")), request_body = NewNote,
    responses((status = 201, body = NoteView), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn add_note(
    State(state): State<Shared>,
    caller: Caller,
    Path(room_id): Path<String>,
    ApiJson(body): ApiJson<NewNote>,
) -> Result<(StatusCode, Json<NoteView>), ApiError> {
    let note = state.escrow().add_note(&caller, &room_id, body).await?;
    Ok((StatusCode::CREATED, Json(note)))
}

/// `GET /v1/rooms/{room_id}/notes`.
#[utoipa::path(get, path = "/v1/rooms/{room_id}/notes", tag = "escrow", security(("bearer" = [])),
    params(("room_id" = String, Path, description = "Room id")),
    responses((status = 200, body = Vec<NoteView>), (status = 404, body = Problem)))]
pub async fn list_notes(
    State(state): State<Shared>,
    caller: Caller,
    Path(room_id): Path<String>,
) -> Result<Json<Vec<NoteView>>, ApiError> {
    Ok(Json(state.escrow().notes(&caller, &room_id).await?))
}
