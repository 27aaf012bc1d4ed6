//! Escrow artifacts over HTTPS against real processes (enclave, proxy, api, the payment
//! sandbox, `enclosure-s3`), on SQLite and on PostgreSQL: the freelancer uploads with a
//! presigned PUT and registers, submit freezes and closes uploads, the validator validates,
//! download URLs follow the role and state (and the audit trail shows each non-owner attempt
//! before and after), a URL moved onto another object is refused by the store, and the routes
//! are in the OpenAPI document with an Idempotency-Key on each POST.

use enclosure_api::auth::Role;
use enclosure_tests::api::{ApiSettings, ApiStack, Backend};
use enclosure_tests::escrow::{
    Http, RoomTerms, Sandbox, Terms, active_room_with, fund_and_pay, wall_ms,
};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// Sends a signed URL from the api to the artifact store, as a client would.
async fn use_url(u: &Value, body: &[u8]) -> (u16, Vec<u8>) {
    let method = reqwest::Method::from_bytes(u["method"].as_str().expect("method").as_bytes())
        .expect("method");
    let mut req = reqwest::Client::new().request(method, u["url"].as_str().expect("url"));
    for h in u["headers"].as_array().expect("headers") {
        let (name, value) = (h[0].as_str().expect("name"), h[1].as_str().expect("value"));
        if name != "content-length" {
            req = req.header(name, value);
        }
    }
    if u["method"] == "PUT" {
        req = req.body(body.to_vec());
    }
    let resp = req.send().await.expect("artifact store");
    let status = resp.status().as_u16();
    (status, resp.bytes().await.expect("body").to_vec())
}

fn code(v: &(u16, Value)) -> (u16, &str) {
    (v.0, v.1["code"].as_str().unwrap_or(""))
}

async fn artifacts_over_https(backend: Backend) {
    // The payment sandbox and the S3 store, with the scheduler off: the system's explicit
    // validation below is the point, and a scheduler would race it.
    let settings = ApiSettings {
        escrow: true,
        scheduler_interval_ms: Some(0),
        ..ApiSettings::default()
    };
    let stack = &ApiStack::start(backend, 1, settings).await;
    let alice = Http::new(stack, "alice", Role::Client);
    let bob = Http::new(stack, "bob", Role::Freelancer);
    let system = Http::new(stack, "system:validator", Role::System);
    let admin = Http::new(stack, "root", Role::Admin);
    let mallory = Http::new(stack, "mallory", Role::Client);

    // An active room with one milestone, funded by the client paying at the sandbox.
    let terms = RoomTerms {
        fee_bps: 500,
        inspection_ms: 600_000,
        max_revisions: 1,
    };
    let price = Terms {
        price_minor: 10_000,
        ..Terms::default()
    };
    let (room_id, ms) = active_room_with(&alice, &bob, "bob", terms, &[price]).await;
    let mid = ms[0].clone();
    fund_and_pay(&alice, &Sandbox::of(stack), &room_id, &mid).await;

    // Upload: URL, PUT to the store, register. The store refuses a body of another hash.
    let m = format!("/v1/milestones/{mid}");
    let bytes = b"the logo, final".to_vec();
    let declared = json!({"name": "logo.svg", "content_type": "image/svg+xml",
        "size_bytes": bytes.len(), "sha256": hex::encode(Sha256::digest(&bytes))});
    assert_eq!(
        code(
            &alice
                .post(&format!("{m}/artifacts/upload-url"), declared.clone())
                .await
        ),
        (403, "forbidden")
    );
    let (status, put) = bob
        .post(&format!("{m}/artifacts/upload-url"), declared.clone())
        .await;
    assert_eq!(
        (status, put["method"].as_str()),
        (201, Some("PUT")),
        "{put}"
    );
    let artifact_id = put["artifact_id"].as_str().expect("id").to_string();
    let mut forged = bytes.clone();
    forged[0] ^= 1;
    assert_ne!(use_url(&put, &forged).await.0, 200, "another hash");
    let mut registration = declared.clone();
    registration["artifact_id"] = json!(artifact_id);
    assert_eq!(
        code(
            &bob.post(&format!("{m}/artifacts"), registration.clone())
                .await
        ),
        (409, "artifact_missing")
    );
    assert_eq!(use_url(&put, &bytes).await.0, 200);
    let (status, a) = bob
        .post(&format!("{m}/artifacts"), registration.clone())
        .await;
    assert_eq!((status, a["frozen_at_ms"].is_null()), (201, true), "{a}");
    // A second object, for the moved-URL check below.
    let second = b"a sketch".to_vec();
    let (_, put2) = bob
        .post(
            &format!("{m}/artifacts/upload-url"),
            json!({"name": "sketch.png", "content_type": "image/png",
                   "size_bytes": second.len(), "sha256": hex::encode(Sha256::digest(&second))}),
        )
        .await;
    assert_eq!(use_url(&put2, &second).await.0, 200);
    let second_id = put2["artifact_id"].as_str().expect("id").to_string();
    let r = bob
        .post(
            &format!("{m}/artifacts"),
            json!({"artifact_id": second_id, "name": "sketch.png", "content_type": "image/png",
                   "size_bytes": second.len(), "sha256": hex::encode(Sha256::digest(&second))}),
        )
        .await;
    assert_eq!(r.0, 201, "{}", r.1);

    // Metadata: members yes, admins no, strangers nothing.
    let (status, list) = alice.get(&format!("{m}/artifacts")).await;
    assert_eq!((status, list.as_array().map(Vec::len)), (200, Some(2)));
    assert_eq!(admin.get(&format!("{m}/artifacts")).await.0, 403);
    assert_eq!(mallory.get(&format!("{m}/artifacts")).await.0, 404);

    // Download before submission: the owner only.
    let dl = format!("/v1/artifacts/{artifact_id}/download-url");
    assert_eq!(code(&alice.get(&dl).await), (409, "artifact_locked"));
    assert_eq!(code(&system.get(&dl).await), (409, "artifact_locked"));
    assert_eq!(code(&admin.get(&dl).await), (403, "forbidden"));
    assert_eq!(code(&mallory.get(&dl).await), (404, "not_found"));
    let (status, get) = bob.get(&dl).await;
    assert_eq!(status, 200, "{get}");
    assert_eq!(use_url(&get, &[]).await, (200, bytes.clone()));
    // The configured lifetime (the default, 120 s), from the signing second.
    let left = get["expires_at_ms"].as_i64().expect("expiry") - wall_ms();
    assert!((100_000..=120_000).contains(&left), "{left}");
    // The same signature on another object's path: refused by the store.
    let mut moved = get.clone();
    moved["url"] = json!(
        get["url"]
            .as_str()
            .expect("url")
            .replace(&artifact_id, &second_id)
    );
    assert_eq!(use_url(&moved, &[]).await.0, 403);

    // Submit freezes both and closes uploads; the validator reads them and validates.
    let (status, s) = bob.post(&format!("{m}/submit"), json!({})).await;
    assert_eq!((status, &s["state"]), (200, &json!("submitted")), "{s}");
    assert_eq!(
        code(
            &bob.post(&format!("{m}/artifacts/upload-url"), declared.clone())
                .await
        ),
        (409, "not_funded")
    );
    let (status, get) = system.get(&dl).await;
    assert_eq!(status, 200, "{get}");
    assert_eq!(use_url(&get, &[]).await, (200, bytes.clone()));
    let (status, v) = system.post(&format!("{m}/validate"), json!({})).await;
    assert_eq!((status, &v["state"]), (200, &json!("validated")), "{v}");
    assert_eq!(code(&alice.get(&dl).await), (409, "artifact_locked"));

    // The trail: each non-owner attempt recorded before and after; no URL in it.
    let (status, trail) = bob
        .get(&format!("/v1/rooms/{room_id}/audit?limit=500"))
        .await;
    assert_eq!(status, 200, "{trail}");
    let rows: Vec<(String, String, String)> = trail
        .as_array()
        .expect("array")
        .iter()
        .filter(|t| {
            t["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("escrow.artifact.download_url"))
        })
        .map(|t| {
            (
                t["actor"].as_str().unwrap_or("").to_string(),
                t["action"].as_str().unwrap_or("").to_string(),
                t["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("alice", ".requested", "ok"),
        ("alice", "", "refused"),
        ("system:validator", ".requested", "ok"),
        ("system:validator", "", "refused"),
        ("root", ".requested", "ok"),
        ("root", "", "refused"),
        ("bob", "", "ok"),
        ("system:validator", ".requested", "ok"),
        ("system:validator", "", "ok"),
        ("alice", ".requested", "ok"),
        ("alice", "", "refused"),
    ]
    .iter()
    .map(|(who, phase, outcome)| {
        (
            who.to_string(),
            format!("escrow.artifact.download_url{phase}"),
            outcome.to_string(),
        )
    })
    .collect();
    assert_eq!(rows, want);
    assert!(!trail.to_string().contains("X-Amz-Signature"));

    // Every artifact route is documented; the POSTs with an Idempotency-Key.
    let (_, spec) = alice.get("/v1/openapi.json").await;
    for (path, method) in [
        ("/v1/milestones/{milestone_id}/artifacts/upload-url", "post"),
        ("/v1/milestones/{milestone_id}/artifacts", "post"),
        ("/v1/milestones/{milestone_id}/artifacts", "get"),
        ("/v1/artifacts/{artifact_id}/download-url", "get"),
    ] {
        let op = &spec["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        if method == "post" {
            assert!(
                op["parameters"].to_string().contains("Idempotency-Key"),
                "{path}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_over_https_sqlite() {
    artifacts_over_https(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_over_https_postgres() {
    artifacts_over_https(Backend::Postgres).await;
}
