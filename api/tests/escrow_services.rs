//! The escrow services against a real store, each test on SQLite and on PostgreSQL: the happy
//! path, every action by every role from every reachable state, fifty racing decisions on
//! one milestone, and what non-members see.

#[macro_use]
#[path = "store_harness.rs"]
mod harness;
#[path = "escrow_fixtures.rs"]
mod fixtures;

use enclosure_api::ApiError;
use enclosure_api::auth::Caller;
use enclosure_api::escrow::{Escrow, MilestoneView, NewNote, Resolution};
use enclosure_policy::escrow::{
    Actor, MilestoneAction, MilestoneFacts, MilestoneState, PaymentEvent, milestone_transition,
};
use fixtures::*;
use harness::{Kind, TestDb};

on_both!(escrow_happy_path_and_room_trail, |db| {
    let store = db.store().await;
    let room = active_room(&store, 1).await;
    let id = room.milestones[0].id.clone();
    let w = work().await;
    let funded = fund(&store, &id).await;
    assert_eq!(funded.state, "funded");
    deliver(&store, &w, &id, b"the logo").await;
    let e = at(&store, T0 + 10);
    e.submit(&bob(), &id, None, w.store())
        .await
        .expect("submit");
    let v = e
        .validate(&system(), &id, None, w.store())
        .await
        .expect("validate");
    assert_eq!(v.inspection_ends_ms, Some(T0 + 10 + INSPECTION_MS));
    let a = e
        .accept(&alice(), &id, Some(v.version))
        .await
        .expect("accept");
    assert_eq!(a.state, "accepted");

    // Both members read the whole trail, the other party's entries included.
    for member in [alice(), bob()] {
        let trail = e
            .room_audit(&member, &room.id, 0, 100)
            .await
            .expect("trail");
        let actions: Vec<&str> = trail.iter().map(|t| t.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "escrow.room.create",
                "escrow.room.accept",
                "escrow.room.accept",
                "escrow.payment.create",
                "escrow.payment.succeeded",
                "escrow.artifact.upload_url",
                "escrow.artifact.register",
                "escrow.milestone.submit",
                "escrow.milestone.validate",
                "escrow.milestone.accept",
            ]
        );
        assert!(trail.iter().all(|t| t.outcome == "ok"));
        assert_eq!(
            trail[9].detail.as_deref(),
            Some(format!("validated->accepted room={} milestone={id}", room.id).as_str())
        );
    }
    assert!(matches!(
        e.room_audit(&mallory(), &room.id, 0, 100).await,
        Err(ApiError::NotFound)
    ));
    assert!(
        store
            .verify_audit_chain()
            .await
            .expect("verify")
            .is_intact()
    );
});

on_both!(escrow_side_exits, |db| {
    let store = db.store().await;
    let w = work().await;
    let e = at(&store, T0);
    // Reject and resubmit, until the revisions run out.
    let m = milestone_in(&store, &w, MilestoneState::Validated)
        .await
        .expect("validated");
    let r = e.reject(&alice(), &m.id, None).await.expect("reject");
    assert_eq!((r.state.as_str(), r.revisions_used), ("funded", 1));
    // A revision is new work: submitting needs a newly registered artifact.
    let again = e
        .submit(&bob(), &m.id, None, w.store())
        .await
        .expect_err("nothing new");
    assert!(
        matches!(
            again,
            ApiError::Conflict {
                code: "guard_failed",
                ..
            }
        ),
        "{again:?}"
    );
    deliver(&store, &w, &m.id, b"revised").await;
    e.submit(&bob(), &m.id, None, w.store())
        .await
        .expect("resubmit");
    e.validate(&system(), &m.id, None, w.store())
        .await
        .expect("validate");
    let err = e
        .reject(&alice(), &m.id, None)
        .await
        .expect_err("no revisions left");
    assert!(
        matches!(
            err,
            ApiError::Conflict {
                code: "guard_failed",
                ..
            }
        ),
        "{err:?}"
    );
    // Automatic acceptance only after the inspection period.
    assert!(e.auto_accept(&system(), &m.id).await.is_err());
    let auto = at(&store, LATE)
        .auto_accept(&system(), &m.id)
        .await
        .expect("auto");
    assert_eq!(auto.state, "accepted");

    // A dispute resolved by refund settles the room's only milestone: the room closes.
    let d = milestone_in(&store, &w, MilestoneState::Disputed)
        .await
        .expect("disputed");
    let refunded = e
        .resolve(&admin(), &d.id, Resolution::Refund, None)
        .await
        .expect("refund");
    assert_eq!(refunded.state, "refunded");
    let room = e.room(&alice(), &d.room_id).await.expect("room");
    assert_eq!(room.state, "closed");
    let d = milestone_in(&store, &w, MilestoneState::Disputed)
        .await
        .expect("disputed");
    let released = e
        .resolve(&admin(), &d.id, Resolution::Release, None)
        .await
        .expect("release");
    assert_eq!(released.state, "accepted");

    // Mutual cancel: the first request only records it.
    let f = milestone_in(&store, &w, MilestoneState::Funded)
        .await
        .expect("funded");
    let one = e
        .cancel_milestone(&alice(), &f.id, None)
        .await
        .expect("client");
    assert_eq!((one.state.as_str(), one.client_cancelled), ("funded", true));
    let both = e
        .cancel_milestone(&bob(), &f.id, None)
        .await
        .expect("freelancer");
    assert_eq!(both.state, "refunded");

    // A room cancels only before funding.
    let room = active_room(&store, 2).await;
    fund(&store, &room.milestones[0].id).await;
    let err = e
        .cancel_room(&bob(), &room.id, None)
        .await
        .expect_err("funded");
    assert!(
        matches!(
            err,
            ApiError::Conflict {
                code: "guard_failed",
                ..
            }
        ),
        "{err:?}"
    );
    let fresh = e.create_room(&alice(), terms(1)).await.expect("room");
    let c = e
        .cancel_room(&bob(), &fresh.id, None)
        .await
        .expect("cancel draft");
    assert_eq!(c.state, "cancelled");
    // Nothing moves in a cancelled room, not even for the system.
    let err = e
        .register_payment(&system(), &fresh.milestones[0].id, "sandbox", "pi_x")
        .await
        .expect_err("cancelled room");
    assert!(matches!(err, ApiError::Conflict { .. }), "{err:?}");
});

const ACTIONS: [MilestoneAction; 12] = [
    MilestoneAction::Fund,
    MilestoneAction::Submit,
    MilestoneAction::Validate,
    MilestoneAction::Accept,
    MilestoneAction::AutoAccept,
    MilestoneAction::Reject,
    MilestoneAction::Dispute,
    MilestoneAction::ResolveRelease,
    MilestoneAction::ResolveRefund,
    MilestoneAction::Expire,
    MilestoneAction::RefundLate,
    MilestoneAction::CancelMutual,
];

/// Calls the service for `action`. Funding goes through a payment event (the only way).
async fn perform(
    e: &Escrow<'_>,
    w: &Work,
    c: &Caller,
    m: &MilestoneView,
    action: MilestoneAction,
) -> Result<(), ApiError> {
    let id = m.id.as_str();
    match action {
        MilestoneAction::Fund => {
            let pid = format!("pi_{id}_{}", c.sub);
            // Registering is system-only too; if it fails, so does funding.
            e.register_payment(c, id, "sandbox", &pid).await?;
            e.apply_payment_event(c, "sandbox", &pid, PaymentEvent::Succeeded)
                .await
                .map(|_| ())
        }
        MilestoneAction::Submit => e.submit(c, id, None, w.store()).await.map(|_| ()),
        MilestoneAction::Validate => e.validate(c, id, None, w.store()).await.map(|_| ()),
        MilestoneAction::Accept => e.accept(c, id, None).await.map(|_| ()),
        MilestoneAction::AutoAccept => e.auto_accept(c, id).await.map(|_| ()),
        MilestoneAction::Reject => e.reject(c, id, None).await.map(|_| ()),
        MilestoneAction::Dispute => e.dispute(c, id, None).await.map(|_| ()),
        MilestoneAction::ResolveRelease => e
            .resolve(c, id, Resolution::Release, None)
            .await
            .map(|_| ()),
        MilestoneAction::ResolveRefund => {
            e.resolve(c, id, Resolution::Refund, None).await.map(|_| ())
        }
        MilestoneAction::Expire => e.expire(c, id).await.map(|_| ()),
        MilestoneAction::RefundLate => e.refund_late(c, id, None).await.map(|_| ()),
        MilestoneAction::CancelMutual => e.cancel_milestone(c, id, None).await.map(|_| ()),
        other => panic!("no service for {other}"),
    }
}

/// What the policy says `actor` may do, with the milestone's facts at `now`.
fn policy_allows(m: &MilestoneView, action: MilestoneAction, actor: Actor, now: i64) -> bool {
    let state = MilestoneState::parse(&m.state).expect("state");
    let facts = MilestoneFacts {
        now_ms: now,
        funding_deadline_ms: m.funding_deadline_ms,
        delivery_deadline_ms: m.delivery_deadline_ms,
        inspection_ends_ms: m.inspection_ends_ms.unwrap_or(i64::MAX),
        revisions_used: m.revisions_used as u32,
        max_revisions: 1,
        // A cancel request is allowed when the other side's request would complete it.
        client_cancelled: action == MilestoneAction::CancelMutual || m.client_cancelled,
        freelancer_cancelled: action == MilestoneAction::CancelMutual || m.freelancer_cancelled,
    };
    milestone_transition(state, action, actor, &facts).is_ok()
}

on_both!(escrow_every_action_by_every_role_from_every_state, |db| {
    let store = db.store().await;
    let w = work().await;
    // (caller, the actor the policy sees, or None when the caller must be refused anyway)
    let callers = [
        (alice(), Some(Actor::Client)),
        (bob(), Some(Actor::Freelancer)),
        (admin(), Some(Actor::Admin)),
        (system(), Some(Actor::System)),
        (reviewer(), Some(Actor::Reviewer)),
        (mallory(), None),
        // alice is the room's client; with a freelancer token she is neither party.
        (caller("alice", enclosure_api::auth::Role::Freelancer), None),
    ];
    let mut allowed_seen = 0;
    for &state in MilestoneState::ALL {
        for now in [T0 + 1, LATE] {
            let Some(m) = milestone_in(&store, &w, state).await else {
                continue;
            };
            let e = at(&store, now);
            let mut allowed = Vec::new();
            for action in ACTIONS {
                for (c, actor) in &callers {
                    let expect_ok = actor.is_some_and(|a| policy_allows(&m, action, a, now));
                    if expect_ok {
                        allowed.push((c.clone(), action));
                        continue;
                    }
                    let err = perform(&e, &w, c, &m, action)
                        .await
                        .expect_err(&format!("{state} {action} by {c:?} at {now}"));
                    let (status, _) = err.status_and_code();
                    assert!(
                        matches!(status.as_u16(), 403 | 404 | 409),
                        "{state} {action} by {c:?}: {err:?}"
                    );
                    // System-only payment operations refuse other roles before any lookup.
                    if c.sub == "mallory" && action != MilestoneAction::Fund {
                        assert_eq!(status.as_u16(), 404, "non-members learn nothing");
                    }
                    let after = current(&store, &m.id).await;
                    assert_eq!(after.version, m.version, "a refusal changes nothing");
                }
            }
            // Each allowed move, on a fresh milestone in the same state.
            for (c, action) in allowed {
                let fresh = milestone_in(&store, &w, state).await.expect("reachable");
                perform(&e, &w, &c, &fresh, action)
                    .await
                    .unwrap_or_else(|err| panic!("{state} {action} by {c:?}: {err:?}"));
                assert_ne!(current(&store, &fresh.id).await.version, fresh.version);
                allowed_seen += 1;
            }
        }
    }
    assert!(allowed_seen >= 15, "{allowed_seen}");
    assert!(
        store
            .verify_audit_chain()
            .await
            .expect("verify")
            .is_intact()
    );
});

on_both!(escrow_fifty_racing_decisions_one_winner, |db| {
    let store = db.store().await;
    let w = work().await;
    let m = milestone_in(&store, &w, MilestoneState::Validated)
        .await
        .expect("validated");
    let before = at(&store, T0)
        .room_audit(&alice(), &m.room_id, 0, 500)
        .await
        .expect("trail")
        .len();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let e = at(&store, T0 + 1);
            let v = Some(m.version);
            match i % 4 {
                0 => e.accept(&alice(), &m.id, v).await,
                1 => e.reject(&alice(), &m.id, v).await,
                2 => e.dispute(&alice(), &m.id, v).await,
                _ => e.dispute(&bob(), &m.id, v).await,
            }
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => wins += 1,
            Err(ApiError::Conflict { .. }) => {}
            Err(other) => panic!("a loser must get 409, got {other:?}"),
        }
    }
    assert_eq!(wins, 1, "exactly one decision wins");
    let trail = at(&store, T0)
        .room_audit(&bob(), &m.room_id, 0, 500)
        .await
        .expect("trail");
    let attempts = &trail[before..];
    assert_eq!(attempts.len(), 50, "every attempt is audited");
    assert_eq!(attempts.iter().filter(|t| t.outcome == "ok").count(), 1);
    assert_eq!(
        attempts.iter().filter(|t| t.outcome == "refused").count(),
        49
    );
    assert!(
        store
            .verify_audit_chain()
            .await
            .expect("verify")
            .is_intact()
    );
});

on_both!(escrow_non_members_see_nothing, |db| {
    let store = db.store().await;
    let room = active_room(&store, 1).await;
    let id = room.milestones[0].id.clone();
    let e = at(&store, T0);
    assert!(matches!(
        e.room(&mallory(), &room.id).await,
        Err(ApiError::NotFound)
    ));
    assert!(e.rooms(&mallory()).await.expect("list").is_empty());
    assert_eq!(e.rooms(&alice()).await.expect("list").len(), 1);
    assert_eq!(e.rooms(&bob()).await.expect("list").len(), 1);
    for r in [
        e.submit(&mallory(), &id, None, None).await,
        e.dispute(
            &caller("mallory", enclosure_api::auth::Role::Freelancer),
            &id,
            None,
        )
        .await,
    ] {
        assert!(matches!(r, Err(ApiError::NotFound)), "{r:?}");
    }
    // Admins and reviewers read the room; reviewers move nothing.
    assert!(e.room(&admin(), &room.id).await.is_ok());
    assert!(e.room(&reviewer(), &room.id).await.is_ok());
    assert!(matches!(
        e.dispute(&reviewer(), &id, None).await,
        Err(ApiError::Forbidden)
    ));
    // Reviewers annotate; nobody else may, and strangers cannot read the notes.
    let note = NewNote {
        milestone_id: Some(id.clone()),
        body: "the palette differs from the brief".into(),
    };
    let n = e
        .add_note(&reviewer(), &room.id, note.clone())
        .await
        .expect("note");
    assert_eq!(n.author, "rita");
    for c in [alice(), bob(), admin(), system()] {
        let r = e.add_note(&c, &room.id, note.clone()).await;
        assert!(matches!(r, Err(ApiError::Forbidden)), "{r:?}");
    }
    assert_eq!(e.notes(&alice(), &room.id).await.expect("notes").len(), 1);
    assert!(matches!(
        e.notes(&mallory(), &room.id).await,
        Err(ApiError::NotFound)
    ));
    // A stranger's refused attempts stay out of the room's trail.
    let trail = e
        .room_audit(&alice(), &room.id, 0, 100)
        .await
        .expect("trail");
    assert!(trail.iter().all(|t| t.actor != "mallory"), "{trail:?}");
    let _ = Kind::Sqlite;
});
