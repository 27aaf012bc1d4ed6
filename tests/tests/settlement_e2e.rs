//! Money end to end, against real api processes, the sandbox provider and its signed
//! webhooks, on SQLite and on PostgreSQL: funding, the swap saga (also when the api dies
//! between any two of its steps), refunds, and webhooks that are forged, stale, replayed or
//! delivered twice.

use std::time::Duration;

use enclosure_api::auth::Role;
use enclosure_tests::api::{ApiStack, Backend};
use enclosure_tests::escrow::{
    Http, Sandbox, Terms, active_room, deliver, download, escrow_settings, fund_and_pay,
    milestone_state, money, wait_money, wait_refunded, wait_settled, wait_state, wall_ms,
};
use enclosure_tests::on_both;
use serde_json::{Value, json};

/// Fund, deliver, accept: the escrow is paid out once, less the fee, the milestone is
/// transferred and the room closes; every step is in the room's trail.
async fn the_swap_pays_out_once_less_the_fee(backend: Backend) {
    let stack = ApiStack::start(backend, 1, escrow_settings()).await;
    let sandbox = Sandbox::of(&stack);
    let alice = Http::new(&stack, "alice", Role::Client);
    let bob = Http::new(&stack, "bob", Role::Freelancer);
    let (room, ms) = active_room(&alice, &bob, "bob", 500, 86_400_000, &[Terms::default()]).await;
    let m = &ms[0];

    // Funding: the client asks, pays at the provider, and only the provider's event funds.
    let p = alice
        .post_ok(&format!("/v1/milestones/{m}/fund"), json!({}), 201)
        .await;
    let pid = p["provider_payment_id"].as_str().expect("pid").to_string();
    assert_eq!(milestone_state(&alice, &room, m).await, "open");
    // Asking again answers the same pending payment, not a second one.
    let again = alice
        .post_ok(&format!("/v1/milestones/{m}/fund"), json!({}), 201)
        .await;
    assert_eq!(again["provider_payment_id"], p["provider_payment_id"]);
    // The freelancer does not fund; a stranger does not see the milestone.
    let (status, _) = bob
        .post(&format!("/v1/milestones/{m}/fund"), json!({}))
        .await;
    assert_eq!(status, 403);
    let mallory = Http::new(&stack, "mallory", Role::Client);
    let (status, _) = mallory
        .post(&format!("/v1/milestones/{m}/fund"), json!({}))
        .await;
    assert_eq!(status, 404);
    sandbox.confirm(&pid, "succeed").await;
    wait_state(&alice, &room, m, "funded").await;
    assert_eq!(money(&alice, m).await["payment"]["state"], "escrowed");

    let work = b"the logo, final";
    let artifact = deliver(&bob, &room, m, work).await;
    // Validated, not yet swapped: the client may not download.
    let (status, v) = alice
        .get(&format!("/v1/artifacts/{artifact}/download-url"))
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (409, Some("artifact_locked")),
        "{v}"
    );
    alice
        .post_ok(&format!("/v1/milestones/{m}/accept"), json!({}), 200)
        .await;
    wait_state(&alice, &room, m, "transferred").await;

    let mv = wait_settled(&bob, m).await;
    assert_eq!(mv["payment"]["state"], "released", "{mv}");
    let s = &mv["settlements"][0];
    assert_eq!(
        (&s["kind"], &s["step"], &s["amount_minor"], &s["fee_minor"]),
        (
            &json!("release"),
            &json!("done"),
            &json!(47_500),
            &json!(2_500)
        ),
        "{mv}"
    );
    // The swap granted the download: the client fetches exactly the validated bytes.
    assert_eq!(download(&alice, &artifact).await, work);
    let at_provider = sandbox.payment(&pid).await;
    assert_eq!(at_provider["status"], "transferred", "{at_provider}");
    assert_eq!(sandbox.count_events("transfer.paid", &pid).await, 1);
    let (_, r) = alice.get(&format!("/v1/rooms/{room}")).await;
    assert_eq!(r["state"], "closed", "{r}");

    // Once transferred nothing moves any more, for anyone.
    let (status, _) = bob
        .post(&format!("/v1/milestones/{m}/dispute"), json!({}))
        .await;
    assert_eq!(status, 409);

    let (_, trail) = alice.get(&format!("/v1/rooms/{room}/audit")).await;
    let actions: Vec<&str> = trail
        .as_array()
        .expect("trail")
        .iter()
        .filter(|t| t["outcome"] == "ok")
        .filter_map(|t| t["action"].as_str())
        .collect();
    for want in [
        "escrow.payment.fund",
        "escrow.payment.succeeded",
        "escrow.milestone.submit",
        "escrow.milestone.validate",
        "escrow.milestone.accept",
        "escrow.settlement.release",
        "escrow.payment.transferred",
        "escrow.milestone.transfer",
    ] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
}
on_both!(swap, the_swap_pays_out_once_less_the_fee);

/// Where the api aborts, one swap per point: every pair of consecutive saga steps.
const CRASH_POINTS: [&str; 5] = [
    "settlement.opened",
    "settlement.after_call",
    "settlement.requested",
    "webhook.applied",
    "settlement.completed",
];

/// The api dies between each pair of saga steps and starts again: each swap completes
/// exactly once and no money moves twice.
async fn a_crash_between_saga_steps_loses_and_repeats_nothing(backend: Backend) {
    let mut stack = ApiStack::start(backend, 1, escrow_settings()).await;
    let sandbox = Sandbox::of(&stack);
    let terms = vec![Terms::default(); CRASH_POINTS.len()];
    let (room, ms, pids) = {
        let alice = Http::new(&stack, "alice", Role::Client);
        let bob = Http::new(&stack, "bob", Role::Freelancer);
        let (room, ms) = active_room(&alice, &bob, "bob", 250, 86_400_000, &terms).await;
        let mut pids = Vec::new();
        for m in &ms {
            pids.push(fund_and_pay(&alice, &sandbox, &room, m).await);
            deliver(&bob, &room, m, b"the logo, final").await;
        }
        (room, ms, pids)
    };
    for (i, point) in CRASH_POINTS.iter().enumerate() {
        stack
            .start_api_with_env(0, &[("ENCLOSURE_CRASH_AT", point)])
            .await;
        let accepted = stack
            .http()
            .post(format!(
                "{}/v1/milestones/{}/accept",
                stack.apis[0].url, ms[i]
            ))
            .bearer_auth(stack.token("alice", Role::Client))
            .header("Idempotency-Key", format!("crash-accept-{i}"))
            .json(&json!({}))
            .send()
            .await;
        // The scheduler can open the saga, and so abort the api, after the accept committed
        // but before its answer left; the milestone moving on below shows the commit.
        if let Ok(r) = accepted {
            assert_eq!(r.status(), 200, "{point}: {}", r.text().await.unwrap());
        }
        let status = stack.apis[0].proc.wait_exit(Duration::from_secs(60));
        assert!(
            status.is_some_and(|s| !s.success()),
            "the api should have aborted at {point}:\n{}",
            stack.apis[0].proc.log()
        );
        stack.start_api(0).await;
        let alice = Http::new(&stack, "alice", Role::Client);
        wait_state(&alice, &room, &ms[i], "transferred").await;
        let mv = wait_settled(&alice, &ms[i]).await;
        assert_eq!(mv["payment"]["state"], "released", "{point}: {mv}");
        assert_eq!(
            sandbox.count_events("transfer.paid", &pids[i]).await,
            1,
            "{point}: one payout"
        );
    }
    // Nothing else moved: every payout happened once, and to the freelancer.
    for pid in &pids {
        let p = sandbox.payment(pid).await;
        assert_eq!(p["status"], "transferred", "{p}");
        assert_eq!(sandbox.count_events("transfer.paid", pid).await, 1);
    }
}
on_both!(crash, a_crash_between_saga_steps_loses_and_repeats_nothing);

fn webhook_secret(stack: &ApiStack) -> Vec<u8> {
    let (_, path) = enclosure_api::payments::dev_secret_paths(stack.dir());
    std::fs::read_to_string(path)
        .expect("webhook secret")
        .trim()
        .as_bytes()
        .to_vec()
}

async fn post_webhook(stack: &ApiStack, signature: &str, body: &[u8]) -> (u16, Value) {
    let resp = stack
        .http()
        .post(format!("{}/v1/webhooks/payments", stack.apis[0].url))
        .header("Stripe-Signature", signature)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .expect("webhook");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Forged, stale, replayed, unconfirmed and duplicated webhooks: nothing moves twice, and
/// nothing moves on the body's word alone.
async fn webhooks_move_money_once_and_only_when_true(backend: Backend) {
    let stack = ApiStack::start(backend, 1, escrow_settings()).await;
    let sandbox = Sandbox::of(&stack);
    let alice = Http::new(&stack, "alice", Role::Client);
    let bob = Http::new(&stack, "bob", Role::Freelancer);
    let (room, ms) = active_room(
        &alice,
        &bob,
        "bob",
        0,
        86_400_000,
        &[Terms::default(), Terms::default()],
    )
    .await;
    let p = alice
        .post_ok(&format!("/v1/milestones/{}/fund", ms[0]), json!({}), 201)
        .await;
    let pid = p["provider_payment_id"].as_str().expect("pid").to_string();
    let now = (wall_ms() / 1000) as u64;
    let body = format!(
        r#"{{"id":"evt_forged_1","type":"payment.succeeded","created":{now},"data":{{"payment_id":"{pid}","reference":"{}","amount_minor":50000,"currency":"EUR"}}}}"#,
        ms[0]
    );
    let secret = webhook_secret(&stack);

    // Forged: signed with another secret, or not signed at all.
    let forged = enclosure_policy::webhook::sign(b"not-the-secret", now, body.as_bytes());
    let (status, v) = post_webhook(&stack, &forged, body.as_bytes()).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("webhook_refused")),
        "{v}"
    );
    // Stale: the right secret, signed 10 minutes ago.
    let stale = enclosure_policy::webhook::sign(&secret, now - 600, body.as_bytes());
    let (status, v) = post_webhook(&stack, &stale, body.as_bytes()).await;
    assert_eq!((status, v["code"].as_str()), (400, Some("webhook_refused")));
    // Correctly signed but untrue: the provider, asked back, says the payment is pending.
    let signed = enclosure_policy::webhook::sign(&secret, now, body.as_bytes());
    let (status, v) = post_webhook(&stack, &signed, body.as_bytes()).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (409, Some("event_deferred")),
        "{v}"
    );
    assert_eq!(milestone_state(&alice, &room, &ms[0]).await, "open");
    assert_eq!(money(&alice, &ms[0]).await["payment"]["state"], "pending");

    // Every event delivered twice: the milestone is funded once.
    sandbox.set_delivery(json!({"duplicate": true})).await;
    sandbox.confirm(&pid, "succeed").await;
    wait_state(&alice, &room, &ms[0], "funded").await;
    // The sandbox saw both copies acknowledged.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let delivered = sandbox
            .events()
            .await
            .iter()
            .find(|e| e["type"] == "payment.succeeded")
            .map(|e| e["delivered"].as_u64().unwrap_or(0))
            .unwrap_or(0);
        if delivered >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "both copies delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sandbox.set_delivery(json!({"duplicate": false})).await;

    // Replay: the genuine event, re-signed now (as an attacker with the secret could not,
    // but a provider retry would), is recognised by its id and changes nothing.
    let events = sandbox.events().await;
    let genuine = events
        .iter()
        .find(|e| e["type"] == "payment.succeeded")
        .expect("the genuine event");
    let genuine_body = genuine["body"].as_str().expect("body").as_bytes().to_vec();
    let resigned = enclosure_policy::webhook::sign(&secret, now, &genuine_body);
    let (status, v) = post_webhook(&stack, &resigned, &genuine_body).await;
    assert_eq!((status, &v["outcome"]), (200, &json!("duplicate")), "{v}");

    let (_, trail) = alice.get(&format!("/v1/rooms/{room}/audit")).await;
    let funded = trail
        .as_array()
        .expect("trail")
        .iter()
        .filter(|t| t["action"] == "escrow.payment.succeeded" && t["outcome"] == "ok")
        .count();
    assert_eq!(funded, 1, "the payment moved once: {trail}");
    // The other milestone's payment was never touched by any of this.
    assert_eq!(money(&alice, &ms[1]).await["payment"], Value::Null);
}
on_both!(webhooks, webhooks_move_money_once_and_only_when_true);

/// The ways money goes back: a dispute an admin refunds, both parties cancelling, and a
/// payment that arrives after the milestone expired; each refunded once at the provider.
async fn refunds_return_the_escrow_once(backend: Backend) {
    let stack = ApiStack::start(backend, 1, escrow_settings()).await;
    let sandbox = Sandbox::of(&stack);
    let alice = Http::new(&stack, "alice", Role::Client);
    let bob = Http::new(&stack, "bob", Role::Freelancer);
    let admin = Http::new(&stack, "ops", Role::Admin);
    let short = Terms {
        funding_in_ms: 6_000,
        delivery_in_ms: 600_000,
        ..Terms::default()
    };
    let (room, ms) = active_room(
        &alice,
        &bob,
        "bob",
        500,
        86_400_000,
        &[Terms::default(), Terms::default(), short],
    )
    .await;
    // The short milestone's payment is created first, well inside its funding deadline; it
    // is paid only after the deadline, below.
    let p = alice
        .post_ok(&format!("/v1/milestones/{}/fund", ms[2]), json!({}), 201)
        .await;
    let p2 = p["provider_payment_id"].as_str().expect("pid").to_string();

    // A dispute, resolved by an admin with a refund.
    let p0 = fund_and_pay(&alice, &sandbox, &room, &ms[0]).await;
    bob.post_ok(&format!("/v1/milestones/{}/dispute", ms[0]), json!({}), 200)
        .await;
    admin
        .post_ok(
            &format!("/v1/milestones/{}/resolve", ms[0]),
            json!({"resolution": "refund"}),
            200,
        )
        .await;

    // Both parties cancel a funded milestone.
    let p1 = fund_and_pay(&alice, &sandbox, &room, &ms[1]).await;
    alice
        .post_ok(&format!("/v1/milestones/{}/cancel", ms[1]), json!({}), 200)
        .await;
    bob.post_ok(&format!("/v1/milestones/{}/cancel", ms[1]), json!({}), 200)
        .await;

    // Payment created in time, paid after the funding deadline: expired, then refunded.
    wait_state(&alice, &room, &ms[2], "expired").await;
    sandbox.confirm(&p2, "succeed").await;

    for (m, pid) in [(&ms[0], &p0), (&ms[1], &p1), (&ms[2], &p2)] {
        let mv = wait_refunded(&alice, m).await;
        assert_eq!(mv["settlements"][0]["kind"], "refund");
        assert_eq!(mv["settlements"][0]["fee_minor"], 0, "no fee on a refund");
        assert_eq!(sandbox.payment(pid).await["status"], "refunded");
        assert_eq!(sandbox.count_events("refund.succeeded", pid).await, 1);
        assert_eq!(sandbox.count_events("transfer.paid", pid).await, 0);
    }
    let (_, r) = alice.get(&format!("/v1/rooms/{room}")).await;
    assert_eq!(r["state"], "closed", "every milestone settled: {r}");
}
on_both!(refunds, refunds_return_the_escrow_once);

/// Two api processes on one database, each running its scheduler: every swap is claimed by
/// one of them and pays out exactly once.
async fn two_schedulers_pay_each_swap_once(backend: Backend) {
    let stack = ApiStack::start(backend, 2, escrow_settings()).await;
    let sandbox = Sandbox::of(&stack);
    let alice = Http::new(&stack, "alice", Role::Client);
    let bob = Http::new(&stack, "bob", Role::Freelancer);
    let terms = vec![Terms::default(); 4];
    let (room, ms) = active_room(&alice, &bob, "bob", 100, 86_400_000, &terms).await;
    let mut pids = Vec::new();
    for m in &ms {
        pids.push(fund_and_pay(&alice, &sandbox, &room, m).await);
        deliver(&bob, &room, m, m.as_bytes()).await;
    }
    // Accept all at once; both schedulers race for the sagas.
    let accept = |m: &str| {
        let path = format!("/v1/milestones/{m}/accept");
        let alice = &alice;
        async move { alice.post_ok(&path, json!({}), 200).await }
    };
    tokio::join!(
        accept(&ms[0]),
        accept(&ms[1]),
        accept(&ms[2]),
        accept(&ms[3])
    );
    for (m, pid) in ms.iter().zip(&pids) {
        let mv = wait_settled(&alice, m).await;
        assert_eq!(mv["settlements"][0]["amount_minor"], 49_500, "{mv}");
        assert_eq!(sandbox.count_events("transfer.paid", pid).await, 1);
    }
    let (_, r) = alice.get(&format!("/v1/rooms/{room}")).await;
    assert_eq!(r["state"], "closed", "{r}");
}
on_both!(two_schedulers, two_schedulers_pay_each_swap_once);

/// A swap that cannot complete stalls for an admin and moves no money: the escrow was
/// refunded at the provider behind the api's back, so the payout is never attempted twice
/// nor forced; the milestone shows needs_admin, and an admin settles it.
async fn a_swap_that_cannot_complete_waits_for_an_admin(backend: Backend) {
    let stack = ApiStack::start(backend, 1, escrow_settings()).await;
    let sandbox = Sandbox::of(&stack);
    let alice = Http::new(&stack, "alice", Role::Client);
    let bob = Http::new(&stack, "bob", Role::Freelancer);
    let admin = Http::new(&stack, "ops", Role::Admin);
    let (room, ms) = active_room(&alice, &bob, "bob", 500, 86_400_000, &[Terms::default()]).await;
    let m = &ms[0];
    let pid = fund_and_pay(&alice, &sandbox, &room, m).await;
    deliver(&bob, &room, m, b"work").await;
    sandbox.refund_directly(&pid).await;
    // The provider's refund event is true, so the api records it.
    wait_money(&alice, m, "refund event applied", |mv| {
        mv["payment"]["state"] == "refunded"
    })
    .await;
    alice
        .post_ok(&format!("/v1/milestones/{m}/accept"), json!({}), 200)
        .await;
    wait_state(&admin, &room, m, "needs_admin").await;
    let mv = money(&admin, m).await;
    assert_eq!(mv["settlements"][0]["step"], "stalled", "{mv}");
    assert!(
        mv["settlements"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("refunded")),
        "{mv}"
    );
    assert_eq!(sandbox.count_events("transfer.paid", &pid).await, 0);
    // Only an admin moves it on; nobody else may.
    let (status, _) = alice
        .post(
            &format!("/v1/milestones/{m}/resolve"),
            json!({"resolution": "refund"}),
        )
        .await;
    assert_eq!(status, 403);
    admin
        .post_ok(
            &format!("/v1/milestones/{m}/resolve"),
            json!({"resolution": "refund"}),
            200,
        )
        .await;
    wait_state(&alice, &room, m, "refunded").await;
    let (_, r) = alice.get(&format!("/v1/rooms/{room}")).await;
    assert_eq!(r["state"], "closed", "{r}");
    assert_eq!(sandbox.count_events("transfer.paid", &pid).await, 0);
    assert_eq!(sandbox.count_events("refund.succeeded", &pid).await, 1);
}
on_both!(stall, a_swap_that_cannot_complete_waits_for_an_admin);
