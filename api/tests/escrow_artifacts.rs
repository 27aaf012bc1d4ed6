//! Escrow artifacts against a real store and a local S3-compatible store, each test on SQLite
//! and on PostgreSQL: upload and registration (and what the store and the api refuse), submit
//! and validate checking the objects, download URLs gated by role and state and audited for
//! non-owners, and URLs refused after expiry, on a changed path or for the wrong party.

#[macro_use]
#[path = "store_harness.rs"]
mod harness;
#[path = "escrow_fixtures.rs"]
mod fixtures;

use std::path::PathBuf;

use enclosure_api::ApiError;
use enclosure_api::auth::{Caller, Role};
use enclosure_api::escrow::{Escrow, SignedUrl};
use enclosure_api::store::Store;
use enclosure_api::store::escrow::{MilestoneChange, Moved, Viewer};
use enclosure_policy::escrow::MilestoneState;
use fixtures::*;
use harness::{Kind, TestDb};

fn code_of(r: &Result<impl std::fmt::Debug, ApiError>) -> (u16, &'static str) {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(e) => {
            let (s, c) = e.status_and_code();
            (s.as_u16(), c)
        }
    }
}

/// A funded milestone of a fresh active room.
async fn funded(store: &Store) -> String {
    let room = active_room(store, 1).await;
    let id = room.milestones[0].id.clone();
    fund(store, &id).await;
    id
}

/// The file the local store keeps an artifact's bytes in.
fn object_file(w: &Work, artifact_id: &str) -> PathBuf {
    fn find(dir: &std::path::Path, name: &str) -> Option<PathBuf> {
        for entry in std::fs::read_dir(dir).ok()? {
            let path = entry.ok()?.path();
            if path.is_dir() {
                if let Some(p) = find(&path, name) {
                    return Some(p);
                }
            } else if path.file_name().is_some_and(|n| n == name) {
                return Some(path);
            }
        }
        None
    }
    find(w.dir.path(), artifact_id).expect("the object's file")
}

/// The milestone as the system reads it, moved by the store to `to` (the swap saga's move,
/// which no service in this crate makes yet).
async fn store_move(store: &Store, milestone_id: &str, to: MilestoneState) {
    let sys = Viewer {
        sub: "system:test",
        role: "system",
    };
    let (_, m) = store
        .milestone(sys, milestone_id)
        .await
        .expect("read")
        .expect("exists");
    let change = MilestoneChange {
        to,
        revisions_used: m.revisions_used,
        inspection_ends_ms: m.inspection_ends_ms,
        client_cancelled: m.client_cancelled,
        freelancer_cancelled: m.freelancer_cancelled,
    };
    let moved = store
        .move_milestone(sys, &m, change, T0)
        .await
        .expect("move");
    assert!(matches!(moved, Moved::Done(_)), "{moved:?}");
}

async fn download(e: &Escrow<'_>, w: &Work, c: &Caller, id: &str) -> Result<SignedUrl, ApiError> {
    e.download_url(c, id, w.signer()).await
}

on_both!(escrow_artifacts_upload_and_register, |db| {
    let store = db.store().await;
    let w = work().await;
    let id = funded(&store).await;
    let e = at(&store, wall_ms());
    let bytes = b"the finished logo".to_vec();

    // Only the room's freelancer gets an upload URL, and only for a well-formed declaration.
    for (c, want) in [
        (alice(), 403),
        (admin(), 403),
        (system(), 403),
        (reviewer(), 403),
        (mallory(), 404),
        // The room's client under another role is refused, as by every escrow service.
        (caller("alice", Role::Freelancer), 403),
    ] {
        let r = e.upload_url(&c, &id, upload_of(&bytes), w.signer()).await;
        assert_eq!(code_of(&r).0, want, "{c:?}");
    }
    let mut bad = upload_of(&bytes);
    bad.name = "../etc/passwd".into();
    assert_eq!(
        code_of(&e.upload_url(&bob(), &id, bad, w.signer()).await).0,
        400
    );
    let mut bad = upload_of(&bytes);
    bad.sha256 = "00".into();
    assert_eq!(
        code_of(&e.upload_url(&bob(), &id, bad, w.signer()).await).0,
        400
    );
    let mut bad = upload_of(&bytes);
    bad.size_bytes = 0;
    assert_eq!(
        code_of(&e.upload_url(&bob(), &id, bad, w.signer()).await).0,
        400
    );
    assert_eq!(
        code_of(&e.upload_url(&bob(), &id, upload_of(&bytes), None).await),
        (503, "artifacts_unavailable")
    );

    // The store refuses a body of another length or another hash under the URL.
    let u = e
        .upload_url(&bob(), &id, upload_of(&bytes), w.signer())
        .await
        .expect("upload URL");
    assert_eq!((u.method.as_str(), u.headers.len()), ("PUT", 3));
    let mut other = bytes.clone();
    other[0] ^= 1;
    assert_ne!(w.send(&u, other.clone()).await.0, 200, "another hash");
    assert_ne!(w.send(&u, b"short".to_vec()).await.0, 200, "another length");
    // Nothing is there yet: registration is refused and writes nothing.
    let r = e
        .register_artifact(&bob(), &id, registration(&u, &bytes), w.store())
        .await;
    assert_eq!(code_of(&r), (409, "artifact_missing"));
    assert!(e.artifacts(&bob(), &id).await.expect("list").is_empty());

    assert_eq!(w.send(&u, bytes.clone()).await.0, 200);
    // Declaring another hash or length than what was stored is refused, nothing written.
    let r = e
        .register_artifact(&bob(), &id, registration(&u, &other), w.store())
        .await;
    assert_eq!(code_of(&r), (409, "artifact_mismatch"));
    let r = e
        .register_artifact(&bob(), &id, registration(&u, b"short"), w.store())
        .await;
    assert_eq!(code_of(&r), (409, "artifact_mismatch"));
    // An id no URL was minted for in this milestone finds nothing.
    let mut never = registration(&u, &bytes);
    never.artifact_id = uuid::Uuid::new_v4().to_string();
    let r = e.register_artifact(&bob(), &id, never, w.store()).await;
    assert_eq!(code_of(&r), (409, "artifact_missing"));
    // The client cannot register the freelancer's upload.
    let r = e
        .register_artifact(&alice(), &id, registration(&u, &bytes), w.store())
        .await;
    assert_eq!(code_of(&r).0, 403);
    assert!(e.artifacts(&bob(), &id).await.expect("list").is_empty());

    let a = e
        .register_artifact(&bob(), &id, registration(&u, &bytes), w.store())
        .await
        .expect("register");
    assert_eq!(
        (
            a.size_bytes,
            a.sha256.as_str(),
            a.frozen_at_ms,
            a.owner.as_str()
        ),
        (bytes.len() as i64, sha_hex(&bytes).as_str(), None, "bob")
    );
    let r = e
        .register_artifact(&bob(), &id, registration(&u, &bytes), w.store())
        .await;
    assert_eq!(code_of(&r), (409, "artifact_exists"));

    // Metadata: members and the system; admins and reviewers refused; strangers see nothing.
    for c in [alice(), bob(), system()] {
        let list = e.artifacts(&c, &id).await.expect("list");
        assert_eq!(list.len(), 1, "{c:?}");
    }
    for (c, want) in [
        (admin(), 403),
        (reviewer(), 403),
        (mallory(), 404),
        (caller("alice", Role::Freelancer), 403),
    ] {
        assert_eq!(code_of(&e.artifacts(&c, &id).await).0, want, "{c:?}");
    }
});

on_both!(
    escrow_artifacts_submit_and_validate_check_the_objects,
    |db| {
        let store = db.store().await;
        let w = work().await;
        let id = funded(&store).await;
        let e = at(&store, T0 + 1);

        // Nothing to submit yet.
        let r = e.submit(&bob(), &id, None, w.store()).await;
        assert_eq!(code_of(&r), (409, "guard_failed"));
        // A registered object that changed in the store is refused at submit.
        let a = deliver(&store, &w, &id, b"first draft").await;
        std::fs::write(object_file(&w, &a.id), b"a longer, different draft").expect("overwrite");
        let r = e.submit(&bob(), &id, None, w.store()).await;
        assert_eq!(code_of(&r), (409, "artifact_mismatch"));
        assert_eq!(current(&store, &id).await.state, "funded");

        // On a fresh milestone: submit freezes, then uploads are closed.
        let id = funded(&store).await;
        let a = deliver(&store, &w, &id, b"final").await;
        let r = e.submit(&bob(), &id, None, None).await;
        assert_eq!(code_of(&r), (503, "artifacts_unavailable"));
        let s = e
            .submit(&bob(), &id, None, w.store())
            .await
            .expect("submit");
        assert_eq!(s.state, "submitted");
        let list = e.artifacts(&bob(), &id).await.expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].frozen_at_ms, Some(T0 + 1));
        let late = at(&store, wall_ms());
        let r = late
            .upload_url(&bob(), &id, upload_of(b"more"), w.signer())
            .await;
        assert_eq!(code_of(&r), (409, "not_funded"));

        // The validator hashes the bytes itself: same length, other content is refused, and
        // the milestone stays submitted; a missing object likewise.
        let file = object_file(&w, &a.id);
        std::fs::write(&file, b"FINAL").expect("overwrite");
        let r = e.validate(&system(), &id, None, w.store()).await;
        assert_eq!(code_of(&r), (409, "artifact_mismatch"));
        std::fs::remove_file(&file).expect("remove");
        let r = e.validate(&system(), &id, None, w.store()).await;
        assert_eq!(code_of(&r), (409, "artifact_missing"));
        assert_eq!(current(&store, &id).await.state, "submitted");
        std::fs::write(&file, b"final").expect("restore");
        let r = e.validate(&system(), &id, None, None).await;
        assert_eq!(code_of(&r), (503, "artifacts_unavailable"));
        let v = e
            .validate(&system(), &id, None, w.store())
            .await
            .expect("validate");
        assert_eq!(v.state, "validated");

        // Each refusal is in the room's trail with its code.
        let trail = e
            .room_audit(&alice(), &v.room_id, 0, 500)
            .await
            .expect("trail");
        let refused: Vec<String> = trail
            .iter()
            .filter(|t| t.outcome != "ok")
            .map(|t| {
                let code = t.detail.as_deref().unwrap_or("");
                format!("{} {}", t.action, code.split(' ').next().unwrap_or(""))
            })
            .collect();
        assert_eq!(
            refused,
            [
                "escrow.milestone.submit artifacts_unavailable",
                "escrow.artifact.upload_url not_funded",
                "escrow.milestone.validate artifact_mismatch",
                "escrow.milestone.validate artifact_missing",
                "escrow.milestone.validate artifacts_unavailable",
            ]
        );
    }
);

on_both!(escrow_artifacts_download_gated_by_role_and_state, |db| {
    let store = db.store().await;
    let w = work().await;
    let room = active_room(&store, 1).await;
    let id = room.milestones[0].id.clone();
    fund(&store, &id).await;
    let body = b"the deliverable".to_vec();
    let a = deliver(&store, &w, &id, &body).await;
    let e = at(&store, wall_ms());
    let freelancer_alice = caller("alice", Role::Freelancer);

    // Who may read in which state: Ok(()) or the status.
    let expect = |state: MilestoneState, who: &Caller| -> Result<(), u16> {
        let after_submit = state != MilestoneState::Funded;
        match who.role {
            _ if who.sub == "mallory" || (who.sub == "alice" && who.role == Role::Freelancer) => {
                Err(404)
            }
            Role::Freelancer => Ok(()),
            Role::System if after_submit => Ok(()),
            Role::Client if state == MilestoneState::Transferred => Ok(()),
            Role::Admin | Role::Reviewer => Err(403),
            _ => Err(409),
        }
    };
    let everyone = [
        bob(),
        alice(),
        system(),
        admin(),
        reviewer(),
        mallory(),
        freelancer_alice,
    ];
    let mut issued_to_non_owners = 0;
    let mut non_owner_attempts_seen = 0;
    for state in [
        MilestoneState::Funded,
        MilestoneState::Submitted,
        MilestoneState::Validated,
        MilestoneState::Accepted,
        MilestoneState::Transferred,
    ] {
        match state {
            MilestoneState::Funded => {}
            MilestoneState::Submitted => {
                at(&store, T0)
                    .submit(&bob(), &id, None, w.store())
                    .await
                    .expect("submit");
            }
            MilestoneState::Validated => {
                at(&store, T0)
                    .validate(&system(), &id, None, w.store())
                    .await
                    .expect("validate");
            }
            MilestoneState::Accepted => {
                at(&store, T0)
                    .accept(&alice(), &id, None)
                    .await
                    .expect("accept");
            }
            _ => store_move(&store, &id, MilestoneState::Transferred).await,
        }
        assert_eq!(current(&store, &id).await.state, state.as_str());
        for c in &everyone {
            let got = download(&e, &w, c, &a.id).await;
            match (expect(state, c), got) {
                (Ok(()), Ok(u)) => {
                    assert_eq!(u.method, "GET");
                    assert!(u.headers.is_empty());
                    let (status, bytes) = w.send(&u, Vec::new()).await;
                    assert_eq!((status, bytes), (200, body.clone()), "{state} {c:?}");
                    if c.sub != "bob" {
                        issued_to_non_owners += 1;
                    }
                }
                (Err(want), Err(err)) => {
                    assert_eq!(err.status_and_code().0.as_u16(), want, "{state} {c:?}");
                }
                (want, got) => panic!("{state} {c:?}: wanted {want:?}, got {got:?}"),
            }
            if c.sub != "bob" && c.sub != "mallory" && c.role != Role::Freelancer {
                non_owner_attempts_seen += 1;
            }
        }
    }
    // system from submitted (4 states) and the client once transferred.
    assert_eq!(issued_to_non_owners, 5);

    // Every non-owner attempt by someone who sees the room is in its trail twice: the
    // request before anything was decided, then the outcome. The owner's reads once.
    let trail = e
        .room_audit(&alice(), &room.id, 0, 500)
        .await
        .expect("trail");
    let requested: Vec<_> = trail
        .iter()
        .filter(|t| t.action == "escrow.artifact.download_url.requested")
        .collect();
    let outcomes: Vec<_> = trail
        .iter()
        .filter(|t| t.action == "escrow.artifact.download_url")
        .collect();
    assert_eq!(requested.len(), non_owner_attempts_seen);
    assert!(
        requested
            .iter()
            .all(|t| t.actor != "bob" && t.outcome == "ok")
    );
    assert_eq!(
        outcomes.len(),
        non_owner_attempts_seen + 5,
        "plus bob's five"
    );
    for r in &requested {
        // The outcome row follows its request, from the same caller.
        let next = outcomes
            .iter()
            .find(|o| o.seq > r.seq && o.actor == r.actor)
            .expect("an outcome after the request");
        assert!(next.seq > r.seq);
    }
    let admin_rows: Vec<(&str, &str)> = trail
        .iter()
        .filter(|t| t.actor == "root")
        .map(|t| (t.action.as_str(), t.outcome.as_str()))
        .collect();
    assert_eq!(
        admin_rows,
        [
            ("escrow.artifact.download_url.requested", "ok"),
            ("escrow.artifact.download_url", "refused")
        ]
        .repeat(5)
    );
    assert!(trail.iter().all(|t| t.actor != "mallory"));
    assert!(
        trail
            .iter()
            .all(|t| !t.detail.as_deref().unwrap_or("").contains("X-Amz")),
        "no URL in the audit"
    );
    // Strangers' attempts are audited too, outside the room's trail.
    let all = store
        .list_audit("root", true, 0, 10_000)
        .await
        .expect("audit");
    assert_eq!(
        all.iter()
            .filter(|r| r.actor == "mallory" && r.action.starts_with("escrow.artifact.download_url"))
            .count(),
        10
    );
    assert!(
        store
            .verify_audit_chain()
            .await
            .expect("verify")
            .is_intact()
    );
});

on_both!(
    escrow_artifact_urls_refused_expired_moved_or_wrong_party,
    |db| {
        let store = db.store().await;
        let w = work().await;
        let id = funded(&store).await;
        let first = deliver(&store, &w, &id, b"first").await;
        let second = deliver(&store, &w, &id, b"second").await;

        // Expired: minted ten minutes ago with a 120 s lifetime.
        let old = at(&store, wall_ms() - 600_000);
        let u = download(&old, &w, &bob(), &first.id).await.expect("minted");
        assert_eq!(
            u.expires_at_ms,
            (old.now_ms / 1000 + 120) * 1000,
            "the signer's lifetime"
        );
        assert_eq!(w.send(&u, Vec::new()).await.0, 403, "expired");
        // A current URL works; moved onto another artifact's key it does not.
        let e = at(&store, wall_ms());
        let u = download(&e, &w, &bob(), &first.id).await.expect("minted");
        assert_eq!(w.send(&u, Vec::new()).await, (200, b"first".to_vec()));
        let moved = SignedUrl {
            url: u.url.replace(&first.id, &second.id),
            ..u.clone()
        };
        assert_ne!(moved.url, u.url);
        assert_eq!(w.send(&moved, Vec::new()).await.0, 403, "changed path");
        // An upload URL moved onto an existing artifact cannot overwrite it.
        let put = e
            .upload_url(&bob(), &id, upload_of(b"third"), w.signer())
            .await
            .expect("upload URL");
        let moved_put = SignedUrl {
            url: put.url.replace(&put.artifact_id, &first.id),
            ..put.clone()
        };
        assert_ne!(w.send(&moved_put, b"third".to_vec()).await.0, 200);
        assert_eq!(
            w.send(
                &download(&e, &w, &bob(), &first.id).await.expect("url"),
                Vec::new()
            )
            .await,
            (200, b"first".to_vec())
        );
        // The wrong party gets no URL at all.
        for (c, want) in [
            (alice(), (409, "artifact_locked")),
            (admin(), (403, "forbidden")),
            (reviewer(), (403, "forbidden")),
            (system(), (409, "artifact_locked")),
            (mallory(), (404, "not_found")),
            (caller("mallory", Role::Freelancer), (404, "not_found")),
        ] {
            assert_eq!(
                code_of(&download(&e, &w, &c, &first.id).await),
                want,
                "{c:?}"
            );
        }
        assert_eq!(
            code_of(&download(&e, &w, &bob(), "../../etc").await),
            (404, "not_found")
        );
        let _ = Kind::Sqlite;
    }
);
