//! Escrow over HTTPS for the end-to-end tests: a caller with a dev token, the payment
//! sandbox standing in for the client's bank, and the steps every escrow test repeats.

use std::time::{Duration, Instant};

use enclosure_api::auth::Role;
use serde_json::{Value, json};

use crate::api::{ApiSettings, ApiStack};

/// A stack for escrow tests: the sandbox provider and S3 store, a scheduler every 200 ms, and
/// saga leases short enough that a restarted api resumes a crashed one's work quickly.
pub fn escrow_settings() -> ApiSettings {
    ApiSettings {
        escrow: true,
        scheduler_interval_ms: Some(200),
        settlement_lease_ms: Some(2_000),
        ..ApiSettings::default()
    }
}

/// A caller of api 0 over HTTPS with a dev token.
pub struct Http<'a> {
    stack: &'a ApiStack,
    client: reqwest::Client,
    token: String,
}

impl<'a> Http<'a> {
    /// `sub` with `role`.
    pub fn new(stack: &'a ApiStack, sub: &str, role: Role) -> Self {
        Http {
            stack,
            client: stack.http(),
            token: stack.token(sub, role),
        }
    }

    /// One request; the status and the JSON body (`Null` when there is none).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.stack.apis[0].url))
            .bearer_auth(&self.token);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let value = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, value)
    }

    /// GET.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None, None).await
    }

    /// POST with a fresh Idempotency-Key.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let key = hex::encode(rand::random::<[u8; 12]>());
        self.send(reqwest::Method::POST, path, Some(body), Some(&key))
            .await
    }

    /// POST that must answer `want`; the body otherwise in the panic.
    pub async fn post_ok(&self, path: &str, body: Value, want: u16) -> Value {
        let (status, v) = self.post(path, body).await;
        assert_eq!(status, want, "POST {path}: {v}");
        v
    }
}

/// The sandbox provider's own API, as the client's bank and as an auditor of money moves.
pub struct Sandbox {
    client: reqwest::Client,
    url: String,
    key: String,
}

impl Sandbox {
    /// The sandbox of `stack` (started with `ApiSettings::escrow`).
    pub fn of(stack: &ApiStack) -> Sandbox {
        let e = stack.escrow.as_ref().expect("the stack runs the sandbox");
        Sandbox {
            client: reqwest::Client::new(),
            url: e.sandbox_url.clone(),
            key: e.sandbox_key.clone(),
        }
    }

    /// The client pays (or fails to pay) a payment.
    pub async fn confirm(&self, provider_payment_id: &str, outcome: &str) {
        let resp = self
            .client
            .post(format!(
                "{}/v1/payments/{provider_payment_id}/confirm",
                self.url
            ))
            .bearer_auth(&self.key)
            .header("Idempotency-Key", format!("confirm-{provider_payment_id}"))
            .json(&json!({ "outcome": outcome }))
            .send()
            .await
            .expect("sandbox");
        assert!(resp.status().is_success(), "confirm: {}", resp.status());
    }

    /// Refunds a payment at the provider directly, behind the api's back (an operator at
    /// the provider's console, say).
    pub async fn refund_directly(&self, provider_payment_id: &str) {
        let resp = self
            .client
            .post(format!("{}/v1/refunds", self.url))
            .bearer_auth(&self.key)
            .header("Idempotency-Key", format!("console-{provider_payment_id}"))
            .json(&json!({ "payment_id": provider_payment_id }))
            .send()
            .await
            .expect("sandbox");
        assert!(resp.status().is_success(), "refund: {}", resp.status());
    }

    /// The payment as the provider sees it.
    pub async fn payment(&self, provider_payment_id: &str) -> Value {
        self.get(&format!("/v1/payments/{provider_payment_id}"))
            .await
    }

    /// Every event the sandbox emitted, with its delivery record.
    pub async fn events(&self) -> Vec<Value> {
        self.get("/v1/events")
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// How many events of `kind` concern `provider_payment_id`.
    pub async fn count_events(&self, kind: &str, provider_payment_id: &str) -> usize {
        self.events()
            .await
            .iter()
            .filter(|e| e["type"] == kind)
            .filter(|e| {
                serde_json::from_str::<Value>(e["body"].as_str().unwrap_or("{}"))
                    .map(|b| b["data"]["payment_id"] == provider_payment_id)
                    .unwrap_or(false)
            })
            .count()
    }

    /// Changes how deliveries behave (duplicate, delay, reorder…).
    pub async fn set_delivery(&self, mode: Value) {
        let resp = self
            .client
            .put(format!("{}/v1/sandbox/delivery", self.url))
            .bearer_auth(&self.key)
            .json(&mode)
            .send()
            .await
            .expect("sandbox");
        assert!(
            resp.status().is_success(),
            "delivery mode: {}",
            resp.status()
        );
    }

    async fn get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("sandbox")
            .json()
            .await
            .expect("sandbox JSON")
    }
}

/// Terms of one milestone: price, and funding and delivery deadlines from now.
#[derive(Debug, Clone, Copy)]
pub struct Terms {
    /// Price in minor units.
    pub price_minor: i64,
    /// Funding deadline, from now.
    pub funding_in_ms: i64,
    /// Delivery deadline, from now.
    pub delivery_in_ms: i64,
}

impl Default for Terms {
    fn default() -> Self {
        Terms {
            price_minor: 50_000,
            funding_in_ms: 3_600_000,
            delivery_in_ms: 7_200_000,
        }
    }
}

/// Milliseconds since the epoch, to the millisecond (deadlines and URL lifetimes are
/// checked against this).
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Terms of a room as a whole.
#[derive(Debug, Clone, Copy)]
pub struct RoomTerms {
    /// Platform fee in basis points, deducted on release.
    pub fee_bps: i64,
    /// The client's inspection period of each validated submission.
    pub inspection_ms: i64,
    /// Rejections allowed per milestone.
    pub max_revisions: i64,
}

impl Default for RoomTerms {
    fn default() -> Self {
        RoomTerms {
            fee_bps: 500,
            inspection_ms: 86_400_000,
            max_revisions: 2,
        }
    }
}

/// A room between `client` and `freelancer` that both accepted; its id and milestone ids.
pub async fn active_room(
    client: &Http<'_>,
    freelancer: &Http<'_>,
    freelancer_sub: &str,
    fee_bps: i64,
    inspection_ms: i64,
    milestones: &[Terms],
) -> (String, Vec<String>) {
    let terms = RoomTerms {
        fee_bps,
        inspection_ms,
        max_revisions: 2,
    };
    active_room_with(client, freelancer, freelancer_sub, terms, milestones).await
}

/// [`active_room`] with every room term chosen.
pub async fn active_room_with(
    client: &Http<'_>,
    freelancer: &Http<'_>,
    freelancer_sub: &str,
    terms: RoomTerms,
    milestones: &[Terms],
) -> (String, Vec<String>) {
    let RoomTerms {
        fee_bps,
        inspection_ms,
        max_revisions,
    } = terms;
    let now = wall_ms();
    let ms: Vec<Value> = milestones
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({"title": format!("part {i}"), "price_minor": t.price_minor,
                   "funding_deadline_ms": now + t.funding_in_ms,
                   "delivery_deadline_ms": now + t.delivery_in_ms})
        })
        .collect();
    let room = client
        .post_ok(
            "/v1/rooms",
            json!({"title": "e2e", "freelancer": freelancer_sub, "currency": "EUR",
                   "platform_fee_bps": fee_bps, "inspection_period_ms": inspection_ms,
                   "max_revisions": max_revisions, "milestones": ms}),
            201,
        )
        .await;
    let id = room["id"].as_str().expect("room id").to_string();
    client
        .post_ok(&format!("/v1/rooms/{id}/accept"), json!({}), 200)
        .await;
    let r = freelancer
        .post_ok(&format!("/v1/rooms/{id}/accept"), json!({}), 200)
        .await;
    assert_eq!(r["state"], "active");
    let ids = room["milestones"]
        .as_array()
        .expect("milestones")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect();
    (id, ids)
}

/// A milestone's state as `who` reads it in its room.
pub async fn milestone_state(who: &Http<'_>, room_id: &str, milestone_id: &str) -> String {
    milestone(who, room_id, milestone_id).await["state"]
        .as_str()
        .expect("a state")
        .to_string()
}

/// Polls until the milestone is in `want` (the scheduler and webhooks are asynchronous).
pub async fn wait_state(who: &Http<'_>, room_id: &str, milestone_id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = milestone_state(who, room_id, milestone_id).await;
        if s == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "milestone {milestone_id} stayed {s}, never {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The client funds a milestone and pays at the sandbox; waits until it is funded.
/// Answers the provider's payment id.
pub async fn fund_and_pay(
    client: &Http<'_>,
    sandbox: &Sandbox,
    room_id: &str,
    milestone_id: &str,
) -> String {
    let p = client
        .post_ok(
            &format!("/v1/milestones/{milestone_id}/fund"),
            json!({}),
            201,
        )
        .await;
    assert_eq!(p["state"], "pending", "{p}");
    let pid = p["provider_payment_id"]
        .as_str()
        .expect("provider id")
        .to_string();
    sandbox.confirm(&pid, "succeed").await;
    wait_state(client, room_id, milestone_id, "funded").await;
    pid
}

/// The milestone's money as `who` sees it.
pub async fn money(who: &Http<'_>, milestone_id: &str) -> Value {
    let (status, v) = who
        .get(&format!("/v1/milestones/{milestone_id}/payment"))
        .await;
    assert_eq!(status, 200, "{v}");
    v
}

/// The freelancer uploads `bytes` through a presigned PUT and registers the artifact;
/// answers its id.
pub async fn upload_artifact(freelancer: &Http<'_>, milestone_id: &str, bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let sha = hex::encode(sha2::Sha256::digest(bytes));
    let meta = json!({"name": "work.bin", "content_type": "application/octet-stream",
                      "size_bytes": bytes.len(), "sha256": sha});
    let put = freelancer
        .post_ok(
            &format!("/v1/milestones/{milestone_id}/artifacts/upload-url"),
            meta.clone(),
            201,
        )
        .await;
    let mut req = reqwest::Client::new()
        .put(put["url"].as_str().expect("url"))
        .body(bytes.to_vec());
    for h in put["headers"].as_array().expect("headers") {
        let (name, value) = (h[0].as_str().expect("name"), h[1].as_str().expect("value"));
        // reqwest sets content-length from the body itself.
        if !name.eq_ignore_ascii_case("content-length") {
            req = req.header(name, value);
        }
    }
    let resp = req.send().await.expect("upload");
    assert!(resp.status().is_success(), "upload: {}", resp.status());
    let id = put["artifact_id"]
        .as_str()
        .expect("artifact id")
        .to_string();
    let mut body = meta;
    body["artifact_id"] = json!(id);
    freelancer
        .post_ok(
            &format!("/v1/milestones/{milestone_id}/artifacts"),
            body,
            201,
        )
        .await;
    id
}

/// The freelancer uploads one artifact and submits; the scheduler validates. Answers the
/// artifact's id.
pub async fn deliver(
    freelancer: &Http<'_>,
    room_id: &str,
    milestone_id: &str,
    bytes: &[u8],
) -> String {
    let id = upload_artifact(freelancer, milestone_id, bytes).await;
    freelancer
        .post_ok(
            &format!("/v1/milestones/{milestone_id}/submit"),
            json!({}),
            200,
        )
        .await;
    wait_state(freelancer, room_id, milestone_id, "validated").await;
    id
}

/// Polls the milestone's money view until `done` holds (webhooks and the scheduler are
/// asynchronous); `what` names the wait in the failure message.
pub async fn wait_money(
    who: &Http<'_>,
    milestone_id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mv = money(who, milestone_id).await;
        if done(&mv) {
            return mv;
        }
        assert!(Instant::now() < deadline, "never {what}: {mv}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until the milestone's first settlement is done (the step is written just after the
/// milestone moves); answers the money view.
pub async fn wait_settled(who: &Http<'_>, milestone_id: &str) -> Value {
    wait_money(who, milestone_id, "settled", |mv| {
        mv["settlements"][0]["step"] == "done"
    })
    .await
}

/// A milestone as `who` reads it in its room.
pub async fn milestone(who: &Http<'_>, room_id: &str, milestone_id: &str) -> Value {
    let (status, room) = who.get(&format!("/v1/rooms/{room_id}")).await;
    assert_eq!(status, 200, "{room}");
    room["milestones"]
        .as_array()
        .expect("milestones")
        .iter()
        .find(|m| m["id"] == milestone_id)
        .cloned()
        .expect("the milestone")
}

/// The room's state as `who` reads it.
pub async fn room_state(who: &Http<'_>, room_id: &str) -> String {
    let (status, room) = who.get(&format!("/v1/rooms/{room_id}")).await;
    assert_eq!(status, 200, "{room}");
    room["state"].as_str().expect("state").to_string()
}

/// Polls until the milestone's money is back with the client: the payment refunded and
/// its refund settlement done; answers the money view.
pub async fn wait_refunded(who: &Http<'_>, milestone_id: &str) -> Value {
    wait_money(who, milestone_id, "refunded", |mv| {
        mv["payment"]["state"] == "refunded" && mv["settlements"][0]["step"] == "done"
    })
    .await
}

/// The room's audit trail as `who` reads it (up to 500 rows, oldest first).
pub async fn trail(who: &Http<'_>, room_id: &str) -> Vec<Value> {
    let (status, t) = who
        .get(&format!("/v1/rooms/{room_id}/audit?limit=500"))
        .await;
    assert_eq!(status, 200, "{t}");
    t.as_array().expect("trail").clone()
}

/// The rows of `trail` about `milestone_id` with `action` and `outcome`.
pub fn rows<'t>(
    trail: &'t [Value],
    milestone_id: &str,
    action: &str,
    outcome: &str,
) -> Vec<&'t Value> {
    let tag = format!("milestone={milestone_id}");
    trail
        .iter()
        .filter(|t| t["action"] == action && t["outcome"] == outcome)
        .filter(|t| t["detail"].as_str().is_some_and(|d| d.contains(&tag)))
        .collect()
}

/// Downloads an artifact as `who` through the URL the api hands out; the bytes.
pub async fn download(who: &Http<'_>, artifact_id: &str) -> Vec<u8> {
    let (status, url) = who
        .get(&format!("/v1/artifacts/{artifact_id}/download-url"))
        .await;
    assert_eq!(status, 200, "{url}");
    let resp = reqwest::get(url["url"].as_str().expect("url"))
        .await
        .expect("download");
    assert!(resp.status().is_success(), "download: {}", resp.status());
    resp.bytes().await.expect("bytes").to_vec()
}
