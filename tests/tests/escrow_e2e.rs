//! Escrow over HTTPS against real api processes, on SQLite and on PostgreSQL: rooms and their
//! terms, refusals by role, state and membership as problem+json, idempotent retries, the
//! room's audit trail, and the routes in the OpenAPI document.

use enclosure_api::auth::Role;
use enclosure_tests::api::{ApiSettings, ApiStack, Backend};
use enclosure_tests::escrow::Http;
use serde_json::json;

async fn escrow_over_https(backend: Backend) {
    let stack = ApiStack::start(backend, 1, ApiSettings::default()).await;
    let alice = Http::new(&stack, "alice", Role::Client);
    let bob = Http::new(&stack, "bob", Role::Freelancer);
    let mallory = Http::new(&stack, "mallory", Role::Client);
    let system = Http::new(&stack, "scheduler", Role::System);
    let now_ms = enclosure_tests::now() as i64 * 1000;
    let terms = json!({
        "title": "logo design", "freelancer": "bob", "currency": "EUR",
        "platform_fee_bps": 500, "inspection_period_ms": 86_400_000, "max_revisions": 2,
        "milestones": [{"title": "sketches", "price_minor": 50_000,
                        "funding_deadline_ms": now_ms + 3_600_000,
                        "delivery_deadline_ms": now_ms + 7_200_000}],
    });

    // Only a client creates a room; an Idempotency-Key is required, and a retry replays.
    let (status, body) = bob.post("/v1/rooms", terms.clone()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, _) = alice
        .send(
            reqwest::Method::POST,
            "/v1/rooms",
            Some(terms.clone()),
            None,
        )
        .await;
    assert_eq!(status, 400, "no Idempotency-Key");
    let (status, room) = alice
        .send(
            reqwest::Method::POST,
            "/v1/rooms",
            Some(terms.clone()),
            Some("room-1"),
        )
        .await;
    assert_eq!(status, 201, "{room}");
    let (status, again) = alice
        .send(
            reqwest::Method::POST,
            "/v1/rooms",
            Some(terms.clone()),
            Some("room-1"),
        )
        .await;
    assert_eq!(
        (status, &again["id"]),
        (201, &room["id"]),
        "replayed, not a second room"
    );
    let room_id = room["id"].as_str().expect("id").to_string();
    let milestone_id = room["milestones"][0]["id"]
        .as_str()
        .expect("milestone")
        .to_string();
    assert_eq!(room["state"], "draft");

    // Strangers see nothing; the parties accept, and the second acceptance activates.
    assert_eq!(mallory.get(&format!("/v1/rooms/{room_id}")).await.0, 404);
    assert_eq!(mallory.get("/v1/rooms").await.1, json!([]));
    let (status, r) = alice
        .post(&format!("/v1/rooms/{room_id}/accept"), json!({}))
        .await;
    assert_eq!((status, &r["state"]), (200, &json!("draft")), "{r}");
    let (status, r) = bob
        .post(
            &format!("/v1/rooms/{room_id}/accept"),
            json!({"expected_version": 1}),
        )
        .await;
    assert_eq!((status, &r["state"]), (200, &json!("active")), "{r}");

    // Refusals: wrong state (409), wrong role (403), not a member (404), stale version (409).
    let m = format!("/v1/milestones/{milestone_id}");
    let (status, body) = bob.post(&format!("{m}/submit"), json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("illegal_transition")),
        "{body}"
    );
    let (status, body) = bob.post(&format!("{m}/accept"), json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, _) = mallory.post(&format!("{m}/dispute"), json!({})).await;
    assert_eq!(status, 404);
    let (status, body) = system.post(&format!("{m}/expire"), json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("guard_failed")),
        "{body}"
    );
    let (status, body) = alice
        .post(
            &format!("/v1/rooms/{room_id}/cancel"),
            json!({"expected_version": 0}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("lost_race")),
        "{body}"
    );
    let (status, body) = alice
        .post(&format!("{m}/resolve"), json!({"resolution": "refund"}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );

    // Both members read the trail, refusals included; a stranger's attempts are not in it.
    let (status, trail) = bob.get(&format!("/v1/rooms/{room_id}/audit")).await;
    assert_eq!(status, 200, "{trail}");
    let rows: Vec<(String, String)> = trail
        .as_array()
        .expect("array")
        .iter()
        .map(|t| {
            (
                t["action"].as_str().unwrap_or("").to_string(),
                t["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("escrow.room.create", "ok"),
        ("escrow.room.accept", "ok"),
        ("escrow.room.accept", "ok"),
        ("escrow.milestone.submit", "refused"),
        ("escrow.milestone.accept", "refused"),
        ("escrow.milestone.expire", "refused"),
        ("escrow.room.cancel", "refused"),
        ("escrow.milestone.resolve_refund", "refused"),
    ]
    .iter()
    .map(|(a, o)| (a.to_string(), o.to_string()))
    .collect();
    assert_eq!(rows, want);
    assert_eq!(
        mallory.get(&format!("/v1/rooms/{room_id}/audit")).await.0,
        404
    );
    // Nothing was funded, so the room can still be cancelled (with the current version).
    let (status, r) = alice
        .post(&format!("/v1/rooms/{room_id}/cancel"), json!({}))
        .await;
    assert_eq!((status, &r["state"]), (200, &json!("cancelled")), "{r}");

    // Every escrow route is documented, mutating ones with an Idempotency-Key.
    let (_, spec) = alice.get("/v1/openapi.json").await;
    let accept =
        spec["paths"]["/v1/milestones/{milestone_id}/accept"]["post"]["parameters"].to_string();
    assert!(accept.contains("Idempotency-Key"), "{accept}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escrow_over_https_sqlite() {
    escrow_over_https(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escrow_over_https_postgres() {
    escrow_over_https(Backend::Postgres).await;
}
