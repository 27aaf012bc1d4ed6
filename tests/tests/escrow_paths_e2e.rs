//! Every side exit of a milestone over HTTPS, against real api processes, the payment sandbox
//! and the S3 store, on SQLite and on PostgreSQL: reject and resubmit, a dispute an admin
//! releases, funding expiry, delivery expiry and the client's refund, automatic acceptance,
//! and a sweep of illegal moves by every role at every reachable resting state (with no
//! artifact download for admins or reviewers in any of them).
//!
//! The happy path, a dispute refunded, mutual cancel and payment after expiry are in
//! settlement_e2e.rs.

use std::time::{Duration, Instant};

use enclosure_api::auth::Role;
use enclosure_tests::api::{ApiStack, Backend};
use enclosure_tests::escrow::{
    Http, RoomTerms, Sandbox, Terms, active_room, active_room_with, deliver, download,
    escrow_settings, fund_and_pay, milestone, milestone_state, money, room_state, rows, trail,
    upload_artifact, wait_refunded, wait_settled, wait_state, wall_ms,
};
use enclosure_tests::on_both;
use serde_json::{Value, json};

fn code(r: &(u16, Value)) -> (u16, &str) {
    (r.0, r.1["code"].as_str().unwrap_or(""))
}

/// The swap paid out `payout + fee` once, to the freelancer, and refunded nothing.
async fn assert_paid_out_once(sandbox: &Sandbox, mv: &Value, pid: &str, payout: i64, fee: i64) {
    assert_eq!(mv["payment"]["state"], "released", "{mv}");
    let s = &mv["settlements"][0];
    assert_eq!(
        (&s["kind"], &s["step"], &s["amount_minor"], &s["fee_minor"]),
        (
            &json!("release"),
            &json!("done"),
            &json!(payout),
            &json!(fee)
        ),
        "{mv}"
    );
    assert_eq!(mv["settlements"].as_array().map(Vec::len), Some(1), "{mv}");
    assert_eq!(sandbox.payment(pid).await["status"], "transferred");
    assert_eq!(sandbox.count_events("transfer.paid", pid).await, 1);
    assert_eq!(sandbox.count_events("refund.succeeded", pid).await, 0);
}

/// Waits (polling, with a timeout) until the wall clock is past `deadline_ms`.
async fn wait_past(deadline_ms: i64) {
    let limit = Instant::now() + Duration::from_secs(60);
    while wall_ms() <= deadline_ms + 1 {
        assert!(
            Instant::now() < limit,
            "the clock never passed {deadline_ms}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The client rejects twice under terms allowing one revision: the first rejection sends
/// the milestone back to funded (a revision used, inspection stopped), a resubmission needs
/// a new artifact while the rejected one stays frozen and locked, and the second rejection is
/// refused; the client then accepts and downloads both versions after the swap.
async fn reject_and_resubmit(backend: Backend) {
    let stack = ApiStack::start(backend, 1, escrow_settings()).await;
    let sandbox = Sandbox::of(&stack);
    let alice = Http::new(&stack, "alice", Role::Client);
    let bob = Http::new(&stack, "bob", Role::Freelancer);
    let terms = RoomTerms {
        fee_bps: 250,
        max_revisions: 1,
        ..RoomTerms::default()
    };
    let (room, ms) = active_room_with(&alice, &bob, "bob", terms, &[Terms::default()]).await;
    let m = &ms[0];
    let pid = fund_and_pay(&alice, &sandbox, &room, m).await;

    let first = deliver(&bob, &room, m, b"the logo, first draft").await;
    let validated = milestone(&alice, &room, m).await;
    assert_eq!(validated["revisions_used"], 0);
    assert!(validated["inspection_ends_ms"].is_i64(), "{validated}");
    let (_, listed) = bob.get(&format!("/v1/milestones/{m}/artifacts")).await;
    let frozen_at = listed[0]["frozen_at_ms"].clone();
    assert!(frozen_at.is_i64(), "{listed}");

    // The freelancer may not reject for the client.
    let r = bob
        .post(&format!("/v1/milestones/{m}/reject"), json!({}))
        .await;
    assert_eq!(code(&r), (403, "forbidden"), "{}", r.1);
    let v = alice
        .post_ok(&format!("/v1/milestones/{m}/reject"), json!({}), 200)
        .await;
    assert_eq!(
        (&v["state"], &v["revisions_used"], &v["inspection_ends_ms"]),
        (&json!("funded"), &json!(1), &Value::Null),
        "{v}"
    );
    // Back to funded: the client cannot accept what it rejected, nor read it.
    let r = alice
        .post(&format!("/v1/milestones/{m}/accept"), json!({}))
        .await;
    assert_eq!(code(&r), (409, "illegal_transition"), "{}", r.1);
    let r = alice
        .get(&format!("/v1/artifacts/{first}/download-url"))
        .await;
    assert_eq!(code(&r), (409, "artifact_locked"), "{}", r.1);
    // Resubmitting the rejected work alone is refused: it is frozen, a new artifact is due.
    let r = bob
        .post(&format!("/v1/milestones/{m}/submit"), json!({}))
        .await;
    assert_eq!(code(&r), (409, "guard_failed"), "{}", r.1);
    assert_eq!(milestone_state(&alice, &room, m).await, "funded");

    let second = deliver(&bob, &room, m, b"the logo, revised").await;
    let (_, listed) = bob.get(&format!("/v1/milestones/{m}/artifacts")).await;
    let listed = listed.as_array().expect("artifacts").clone();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let old = listed
        .iter()
        .find(|a| a["id"] == first.as_str())
        .expect("v1");
    let new = listed
        .iter()
        .find(|a| a["id"] == second.as_str())
        .expect("v2");
    assert_eq!(
        old["frozen_at_ms"], frozen_at,
        "the first stays frozen as it was"
    );
    assert!(new["frozen_at_ms"].as_i64() >= frozen_at.as_i64(), "{new}");

    // No revision left: the second rejection is refused and changes nothing.
    let r = alice
        .post(&format!("/v1/milestones/{m}/reject"), json!({}))
        .await;
    assert_eq!(code(&r), (409, "guard_failed"), "{}", r.1);
    let still = milestone(&alice, &room, m).await;
    assert_eq!(
        (&still["state"], &still["revisions_used"]),
        (&json!("validated"), &json!(1)),
        "{still}"
    );

    alice
        .post_ok(&format!("/v1/milestones/{m}/accept"), json!({}), 200)
        .await;
    wait_state(&alice, &room, m, "transferred").await;
    let mv = wait_settled(&alice, m).await;
    assert_paid_out_once(&sandbox, &mv, &pid, 48_750, 1_250).await;
    assert_eq!(download(&alice, &second).await, b"the logo, revised");
    assert_eq!(download(&alice, &first).await, b"the logo, first draft");

    let t = trail(&alice, &room).await;
    assert_eq!(rows(&t, m, "escrow.milestone.reject", "ok").len(), 1);
    assert_eq!(rows(&t, m, "escrow.milestone.reject", "refused").len(), 2);
    assert_eq!(rows(&t, m, "escrow.milestone.submit", "ok").len(), 2);
    assert_eq!(rows(&t, m, "escrow.milestone.submit", "refused").len(), 1);
    assert_eq!(rows(&t, m, "escrow.milestone.validate", "ok").len(), 2);
}
on_both!(reject_resubmit, reject_and_resubmit);

/// The client disputes validated work and an admin resolves it in the freelancer's favour:
/// the milestone goes on to the swap without the client accepting, pays out once less the
/// fee, and the client downloads the work.
async fn a_dispute_released_goes_on_to_the_swap(backend: Backend) {
    let stack = ApiStack::start(backend, 1, escrow_settings()).await;
    let sandbox = Sandbox::of(&stack);
    let alice = Http::new(&stack, "alice", Role::Client);
    let bob = Http::new(&stack, "bob", Role::Freelancer);
    let admin = Http::new(&stack, "ops", Role::Admin);
    let (room, ms) = active_room(&alice, &bob, "bob", 500, 86_400_000, &[Terms::default()]).await;
    let m = &ms[0];
    let pid = fund_and_pay(&alice, &sandbox, &room, m).await;
    let work = b"the logo, disputed";
    let artifact = deliver(&bob, &room, m, work).await;

    // Nothing to resolve before a dispute.
    let r = admin
        .post(
            &format!("/v1/milestones/{m}/resolve"),
            json!({"resolution": "release"}),
        )
        .await;
    assert_eq!(code(&r), (409, "illegal_transition"), "{}", r.1);
    let v = alice
        .post_ok(&format!("/v1/milestones/{m}/dispute"), json!({}), 200)
        .await;
    assert_eq!(v["state"], "disputed", "{v}");
    // Disputed: the parties decide nothing, the client reads nothing, no money moves.
    for (who, verb) in [(&alice, "accept"), (&bob, "dispute"), (&alice, "dispute")] {
        let r = who
            .post(&format!("/v1/milestones/{m}/{verb}"), json!({}))
            .await;
        assert_eq!(code(&r), (409, "illegal_transition"), "{verb}: {}", r.1);
    }
    for who in [&alice, &bob] {
        let r = who
            .post(
                &format!("/v1/milestones/{m}/resolve"),
                json!({"resolution": "release"}),
            )
            .await;
        assert_eq!(code(&r), (403, "forbidden"), "{}", r.1);
    }
    let r = alice
        .get(&format!("/v1/artifacts/{artifact}/download-url"))
        .await;
    assert_eq!(code(&r), (409, "artifact_locked"), "{}", r.1);
    assert_eq!(money(&alice, m).await["payment"]["state"], "escrowed");

    let v = admin
        .post_ok(
            &format!("/v1/milestones/{m}/resolve"),
            json!({"resolution": "release"}),
            200,
        )
        .await;
    assert_eq!(v["state"], "accepted", "{v}");
    wait_state(&alice, &room, m, "transferred").await;
    let mv = wait_settled(&bob, m).await;
    assert_paid_out_once(&sandbox, &mv, &pid, 47_500, 2_500).await;
    assert_eq!(download(&alice, &artifact).await, work);
    assert_eq!(room_state(&alice, &room).await, "closed");

    let t = trail(&alice, &room).await;
    let resolved = rows(&t, m, "escrow.milestone.resolve_release", "ok");
    assert_eq!(resolved.len(), 1, "{t:?}");
    assert_eq!(resolved[0]["actor"], "ops");
    assert_eq!(rows(&t, m, "escrow.milestone.dispute", "ok").len(), 1);
    assert!(rows(&t, m, "escrow.milestone.accept", "ok").is_empty());
    assert_eq!(rows(&t, m, "escrow.milestone.transfer", "ok").len(), 1);
    assert!(!rows(&t, m, "escrow.settlement.release", "ok").is_empty());
}
on_both!(dispute_released, a_dispute_released_goes_on_to_the_swap);

/// Nobody pays: the scheduler expires the milestone once its funding deadline passed (not
/// before, and not its sibling with a later deadline), and funding is refused from then on.
async fn an_unfunded_milestone_expires_after_its_deadline(backend: Backend) {
    let stack = ApiStack::start(backend, 1, escrow_settings()).await;
    let alice = Http::new(&stack, "alice", Role::Client);
    let bob = Http::new(&stack, "bob", Role::Freelancer);
    // Only creating the room must beat this deadline.
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
        &[short, Terms::default()],
    )
    .await;
    let deadline = milestone(&alice, &room, &ms[0]).await["funding_deadline_ms"]
        .as_i64()
        .expect("deadline");

    wait_state(&alice, &room, &ms[0], "expired").await;
    let t = trail(&alice, &room).await;
    let expired = rows(&t, &ms[0], "escrow.milestone.expire", "ok");
    assert_eq!(expired.len(), 1, "{t:?}");
    assert_eq!(expired[0]["actor"], "system:scheduler");
    let at = expired[0]["at_ms"].as_i64().expect("at_ms");
    assert!(at > deadline, "expired at {at}, deadline {deadline}");

    // Funding is refused now; no payment was created for it.
    let r = alice
        .post(&format!("/v1/milestones/{}/fund", ms[0]), json!({}))
        .await;
    assert_eq!(code(&r), (409, "illegal_transition"), "{}", r.1);
    assert_eq!(money(&alice, &ms[0]).await["payment"], Value::Null);
    // Expiry is final: nothing else moves it either.
    let r = bob
        .post(&format!("/v1/milestones/{}/dispute", ms[0]), json!({}))
        .await;
    assert_eq!(code(&r), (409, "illegal_transition"), "{}", r.1);

    // The other milestone keeps its own deadline, so the room stays active.
    assert_eq!(milestone_state(&alice, &room, &ms[1]).await, "open");
    assert_eq!(room_state(&alice, &room).await, "active");
    assert!(rows(&t, &ms[1], "escrow.milestone.expire", "ok").is_empty());
}
on_both!(
    funding_expiry,
    an_unfunded_milestone_expires_after_its_deadline
);

/// Funded but never delivered: the client's refund is refused before the delivery deadline
/// (409 guard_failed) and only the client may ask; after the deadline it is allowed, and the
/// refund saga returns the money once at the provider.
async fn a_missed_delivery_refunds_the_client(backend: Backend) {
    let stack = ApiStack::start(backend, 1, escrow_settings()).await;
    let sandbox = Sandbox::of(&stack);
    let alice = Http::new(&stack, "alice", Role::Client);
    let bob = Http::new(&stack, "bob", Role::Freelancer);
    let admin = Http::new(&stack, "ops", Role::Admin);
    // Funding happens right away; delivery is due seconds later, leaving a loaded machine
    // ample time to ask (and be refused) before it.
    let late = Terms {
        funding_in_ms: 15_000,
        delivery_in_ms: 20_000,
        ..Terms::default()
    };
    let (room, ms) = active_room(&alice, &bob, "bob", 500, 86_400_000, &[late]).await;
    let m = &ms[0];
    let pid = fund_and_pay(&alice, &sandbox, &room, m).await;
    let deadline = milestone(&alice, &room, m).await["delivery_deadline_ms"]
        .as_i64()
        .expect("deadline");

    let refund = format!("/v1/milestones/{m}/refund");
    let r = alice.post(&refund, json!({})).await;
    assert!(
        wall_ms() < deadline,
        "the machine was too slow to ask before the deadline"
    );
    assert_eq!(code(&r), (409, "guard_failed"), "{}", r.1);
    for who in [&bob, &admin] {
        let r = who.post(&refund, json!({})).await;
        assert_eq!(code(&r), (403, "forbidden"), "{}", r.1);
    }
    assert_eq!(milestone_state(&alice, &room, m).await, "funded");

    wait_past(deadline).await;
    let v = alice.post_ok(&refund, json!({}), 200).await;
    assert_eq!(v["state"], "refunded", "{v}");
    let mv = wait_refunded(&alice, m).await;
    let s = &mv["settlements"][0];
    assert_eq!(
        (&s["kind"], &s["amount_minor"], &s["fee_minor"]),
        (&json!("refund"), &json!(50_000), &json!(0)),
        "{mv}"
    );
    assert_eq!(sandbox.payment(&pid).await["status"], "refunded");
    assert_eq!(sandbox.count_events("refund.succeeded", &pid).await, 1);
    assert_eq!(sandbox.count_events("transfer.paid", &pid).await, 0);

    // Refunded is final: a second refund, a late submission, a dispute are all refused.
    let r = alice.post(&refund, json!({})).await;
    assert_eq!(code(&r), (409, "illegal_transition"), "{}", r.1);
    for verb in ["submit", "dispute"] {
        let r = bob
            .post(&format!("/v1/milestones/{m}/{verb}"), json!({}))
            .await;
        assert_eq!(code(&r), (409, "illegal_transition"), "{verb}: {}", r.1);
    }
    assert_eq!(room_state(&alice, &room).await, "closed");
    let t = trail(&alice, &room).await;
    assert_eq!(rows(&t, m, "escrow.milestone.refund_late", "ok").len(), 1);
    assert_eq!(
        rows(&t, m, "escrow.milestone.refund_late", "refused").len(),
        4
    );
}
on_both!(delivery_expiry, a_missed_delivery_refunds_the_client);

/// The client never decides: once the inspection period after validation ran out the
/// scheduler accepts, and the swap completes and pays out without the client.
async fn silence_is_acceptance(backend: Backend) {
    let stack = ApiStack::start(backend, 1, escrow_settings()).await;
    let sandbox = Sandbox::of(&stack);
    let alice = Http::new(&stack, "alice", Role::Client);
    let bob = Http::new(&stack, "bob", Role::Freelancer);
    let inspection = 1_500;
    let (room, ms) = active_room(&alice, &bob, "bob", 500, inspection, &[Terms::default()]).await;
    let m = &ms[0];
    let pid = fund_and_pay(&alice, &sandbox, &room, m).await;
    let work = b"the logo, unanswered";
    let artifact = upload_artifact(&bob, m, work).await;
    bob.post_ok(&format!("/v1/milestones/{m}/submit"), json!({}), 200)
        .await;
    // Validation, inspection, acceptance and the swap all happen without a request.
    wait_state(&bob, &room, m, "transferred").await;
    let mv = wait_settled(&bob, m).await;
    assert_paid_out_once(&sandbox, &mv, &pid, 47_500, 2_500).await;
    assert_eq!(download(&alice, &artifact).await, work);

    let t = trail(&bob, &room).await;
    let validated = rows(&t, m, "escrow.milestone.validate", "ok");
    let accepted = rows(&t, m, "escrow.milestone.auto_accept", "ok");
    assert_eq!((validated.len(), accepted.len()), (1, 1), "{t:?}");
    assert_eq!(accepted[0]["actor"], "system:scheduler");
    let (v_at, a_at) = (
        validated[0]["at_ms"].as_i64().expect("at"),
        accepted[0]["at_ms"].as_i64().expect("at"),
    );
    assert!(
        a_at > v_at + inspection,
        "accepted at {a_at}, validated at {v_at}: before the inspection ended"
    );
    // The client did nothing after paying.
    let after_funding: Vec<&Value> = t
        .iter()
        .filter(|r| r["actor"] == "alice" && r["action"] != "escrow.payment.fund")
        .filter(|r| {
            r["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("escrow.milestone"))
        })
        .collect();
    assert!(after_funding.is_empty(), "{after_funding:?}");
}
on_both!(auto_accept, silence_is_acceptance);

/// The milestone moves the routes name; resolve takes a body.
const MOVES: [&str; 12] = [
    "fund",
    "submit",
    "validate",
    "accept",
    "reject",
    "dispute",
    "refund",
    "cancel",
    "expire",
    "auto-accept",
    "resolve-release",
    "resolve-refund",
];

/// Which moves a role takes from some state (for the others the answer is 403 anywhere).
fn takes(role: &str, mv: &str) -> bool {
    match role {
        "client" => ["fund", "accept", "reject", "dispute", "refund", "cancel"].contains(&mv),
        "freelancer" => ["submit", "dispute", "cancel"].contains(&mv),
        "admin" => mv.starts_with("resolve-"),
        "system" => ["validate", "expire", "auto-accept"].contains(&mv),
        _ => false,
    }
}

/// Legal (or would change the record) from `state` for `role`: not tried by the sweep.
fn legal(state: &str, role: &str, mv: &str) -> bool {
    matches!(
        (state, role, mv),
        ("open", "client", "fund")
            | ("funded", "freelancer", "submit")
            | ("funded", "client" | "freelancer", "dispute" | "cancel")
            | ("validated", "client", "accept" | "reject")
            | ("validated", "client" | "freelancer", "dispute")
            | ("disputed", "admin", "resolve-release" | "resolve-refund")
    )
}

/// The answer for a role that takes the move, from a state where it is not legal.
fn wrong_state(state: &str, role: &str, mv: &str) -> &'static str {
    match (state, role, mv) {
        // The move exists here, but its precondition does not hold yet.
        ("open", "system", "expire")
        | ("funded", "client", "refund")
        | ("validated", "system", "auto-accept") => "guard_failed",
        _ => "illegal_transition",
    }
}

/// Every role tries every move at every resting state a milestone can be left in: a role
/// that never takes a move gets 403, a stranger 404, the right role in the wrong state 409,
/// and nothing changes. Admins and reviewers never get a download URL (403), in any state.
async fn illegal_moves_are_refused_for_every_role(backend: Backend) {
    let stack = ApiStack::start(backend, 1, escrow_settings()).await;
    let sandbox = Sandbox::of(&stack);
    let alice = Http::new(&stack, "alice", Role::Client);
    let bob = Http::new(&stack, "bob", Role::Freelancer);
    // Only creating the room must beat this deadline.
    let short = Terms {
        funding_in_ms: 6_000,
        delivery_in_ms: 600_000,
        ..Terms::default()
    };
    let mut terms = vec![Terms::default(); 6];
    terms.push(short);
    let (room, ms) = active_room(&alice, &bob, "bob", 500, 86_400_000, &terms).await;

    // One milestone left in each state; every one past open holds an artifact.
    let mut artifacts = Vec::new();
    // 1: funded, an artifact uploaded and registered, not submitted.
    fund_and_pay(&alice, &sandbox, &room, &ms[1]).await;
    artifacts.push(("funded", upload_artifact(&bob, &ms[1], b"draft").await));
    // 2: validated, inspection running.
    fund_and_pay(&alice, &sandbox, &room, &ms[2]).await;
    artifacts.push(("validated", deliver(&bob, &room, &ms[2], b"v").await));
    // 3: disputed.
    fund_and_pay(&alice, &sandbox, &room, &ms[3]).await;
    artifacts.push(("disputed", deliver(&bob, &room, &ms[3], b"d").await));
    bob.post_ok(&format!("/v1/milestones/{}/dispute", ms[3]), json!({}), 200)
        .await;
    // 4: transferred.
    fund_and_pay(&alice, &sandbox, &room, &ms[4]).await;
    artifacts.push(("transferred", deliver(&bob, &room, &ms[4], b"t").await));
    alice
        .post_ok(&format!("/v1/milestones/{}/accept", ms[4]), json!({}), 200)
        .await;
    wait_state(&alice, &room, &ms[4], "transferred").await;
    wait_settled(&alice, &ms[4]).await;
    // 5: refunded by an admin after a dispute, with a frozen artifact.
    fund_and_pay(&alice, &sandbox, &room, &ms[5]).await;
    artifacts.push(("refunded", deliver(&bob, &room, &ms[5], b"r").await));
    bob.post_ok(&format!("/v1/milestones/{}/dispute", ms[5]), json!({}), 200)
        .await;
    Http::new(&stack, "ops", Role::Admin)
        .post_ok(
            &format!("/v1/milestones/{}/resolve", ms[5]),
            json!({"resolution": "refund"}),
            200,
        )
        .await;
    wait_refunded(&alice, &ms[5]).await;
    // 6: expired, never funded.
    wait_state(&alice, &room, &ms[6], "expired").await;
    let states = [
        "open",
        "funded",
        "validated",
        "disputed",
        "transferred",
        "refunded",
        "expired",
    ];
    for (m, s) in ms.iter().zip(states) {
        assert_eq!(milestone_state(&alice, &room, m).await, s);
    }
    let before = room_snapshot(&alice, &room).await;

    let callers: Vec<(&str, Http)> = vec![
        ("client", Http::new(&stack, "alice", Role::Client)),
        ("freelancer", Http::new(&stack, "bob", Role::Freelancer)),
        ("admin", Http::new(&stack, "ops", Role::Admin)),
        ("system", Http::new(&stack, "system:ops", Role::System)),
        ("reviewer", Http::new(&stack, "reviewer", Role::Reviewer)),
        // A party under the other party's role.
        (
            "as-other-party",
            Http::new(&stack, "alice", Role::Freelancer),
        ),
        ("stranger", Http::new(&stack, "mallory", Role::Client)),
        ("stranger", Http::new(&stack, "eve", Role::Freelancer)),
    ];
    let mut tried = 0;
    for (m, state) in ms.iter().zip(states) {
        for (role, who) in &callers {
            for mv in MOVES {
                if legal(state, role, mv) {
                    continue;
                }
                let (path, body) = match mv.strip_prefix("resolve-") {
                    Some(r) => ("resolve", json!({ "resolution": r })),
                    None => (mv, json!({})),
                };
                let r = who.post(&format!("/v1/milestones/{m}/{path}"), body).await;
                let want = match *role {
                    "stranger" => (404, "not_found"),
                    r if !takes(r, mv) => (403, "forbidden"),
                    r => (409, wrong_state(state, r, mv)),
                };
                assert_eq!(code(&r), want, "{role} {mv} at {state}: {}", r.1);
                tried += 1;
            }
        }
    }
    assert!(tried > 500, "{tried}");
    // Refusals change nothing (the refunded milestone's saga touches only its payment).
    assert_eq!(room_snapshot(&alice, &room).await, before);

    // No download URL for staff, whatever the state; a stranger learns nothing.
    let admin = Http::new(&stack, "ops", Role::Admin);
    let reviewer = Http::new(&stack, "reviewer", Role::Reviewer);
    let mallory = Http::new(&stack, "mallory", Role::Client);
    for (state, a) in &artifacts {
        let dl = format!("/v1/artifacts/{a}/download-url");
        for who in [&admin, &reviewer] {
            let r = who.get(&dl).await;
            assert_eq!(code(&r), (403, "forbidden"), "at {state}: {}", r.1);
            assert!(r.1.get("url").is_none());
        }
        assert_eq!(code(&mallory.get(&dl).await), (404, "not_found"));
        // The owner always reads their own work.
        assert_eq!(bob.get(&dl).await.0, 200, "at {state}");
    }
    // The client reads only what was swapped.
    for (state, a) in &artifacts {
        let r = alice.get(&format!("/v1/artifacts/{a}/download-url")).await;
        let want = if *state == "transferred" {
            (200, "")
        } else {
            (409, "artifact_locked")
        };
        assert_eq!(code(&r), want, "client at {state}: {}", r.1);
    }
}
on_both!(illegal_moves, illegal_moves_are_refused_for_every_role);

/// Each milestone's state, version and revisions, and the room's state and version.
async fn room_snapshot(who: &Http<'_>, room_id: &str) -> Value {
    let (status, r) = who.get(&format!("/v1/rooms/{room_id}")).await;
    assert_eq!(status, 200, "{r}");
    let ms: Vec<Value> = r["milestones"]
        .as_array()
        .expect("milestones")
        .iter()
        .map(|m| {
            json!([
                m["id"],
                m["state"],
                m["version"],
                m["revisions_used"],
                m["client_cancelled"],
                m["freelancer_cancelled"]
            ])
        })
        .collect();
    json!({"state": r["state"], "version": r["version"], "milestones": ms})
}
