//! Shared set-up for the `escrow_*` tests: callers, terms, a local artifact store, and
//! milestones driven through the services into a given state.
#![allow(dead_code)]

use enclosure_api::artifacts::ArtifactStore;
use enclosure_api::artifacts::server::{LocalStore, LocalStoreConfig};
use enclosure_api::auth::{Caller, Role};
use enclosure_api::escrow::{
    ArtifactView, Escrow, MilestoneView, NewArtifact, NewMilestone, NewRoom, NewUpload, RoomView,
    SignedUrl, UrlSigner,
};
use enclosure_api::store::Store;
use enclosure_policy::escrow::{MilestoneState, PaymentEvent};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// Setup time: every deadline lies after it.
pub const T0: i64 = 1_800_000_000_000;
/// Funding deadline of every fixture milestone.
pub const FUNDING_DEADLINE: i64 = T0 + 3_600_000;
/// Delivery deadline.
pub const DELIVERY_DEADLINE: i64 = T0 + 7_200_000;
/// Inspection period.
pub const INSPECTION_MS: i64 = 600_000;
/// A time after every deadline and inspection period.
pub const LATE: i64 = T0 + 100_000_000;

pub fn caller(sub: &str, role: Role) -> Caller {
    Caller {
        sub: sub.into(),
        role,
    }
}

pub fn alice() -> Caller {
    caller("alice", Role::Client)
}
pub fn bob() -> Caller {
    caller("bob", Role::Freelancer)
}
pub fn admin() -> Caller {
    caller("root", Role::Admin)
}
pub fn system() -> Caller {
    caller("system:test", Role::System)
}
pub fn reviewer() -> Caller {
    caller("rita", Role::Reviewer)
}
/// A client who is no member of alice's rooms.
pub fn mallory() -> Caller {
    caller("mallory", Role::Client)
}

pub fn at(store: &Store, now_ms: i64) -> Escrow<'_> {
    Escrow { store, now_ms }
}

/// The wall clock in unix ms. URLs must be dated by it: the artifact store refuses URLs
/// dated in its future, and the fixture times (`T0`) lie in 2027.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// A local artifact store on a loopback port and a presigner holding its key pair; both live
/// as long as this value.
pub struct Work {
    /// The store (stopped on drop).
    pub s3: LocalStore,
    /// The api's presigner for it.
    pub presigner: ArtifactStore,
    /// Its data directory.
    pub dir: tempfile::TempDir,
    /// A plain HTTP client, as an uploader would use.
    pub http: reqwest::Client,
}

/// Starts a [`Work`].
pub async fn work() -> Work {
    let dir = tempfile::tempdir().expect("temporary directory");
    let secret = "escrow-fixture-secret";
    let s3 = LocalStore::start(LocalStoreConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("address"),
        bucket: "enclosure-artifacts".into(),
        region: "us-east-1".into(),
        access_key: "ENCLOSUREFIXTURE".into(),
        secret_key: Zeroizing::new(secret.into()),
    })
    .await
    .expect("local artifact store");
    let presigner = ArtifactStore::new(
        &s3.endpoint_url(),
        "enclosure-artifacts",
        "us-east-1",
        "ENCLOSUREFIXTURE",
        Zeroizing::new(secret.into()),
    )
    .expect("presigner");
    Work {
        s3,
        presigner,
        dir,
        http: reqwest::Client::new(),
    }
}

impl Work {
    /// The store, as submit and validate take it.
    pub fn store(&self) -> Option<&ArtifactStore> {
        Some(&self.presigner)
    }

    /// The store with a 120 s URL lifetime, as the URL-minting services take it.
    pub fn signer(&self) -> Option<UrlSigner<'_>> {
        Some(UrlSigner {
            store: &self.presigner,
            ttl: std::time::Duration::from_secs(120),
        })
    }

    /// Sends `body` with a signed URL as a client would (the signed headers verbatim but the
    /// length, which follows the body); answers the HTTP status and the response body.
    pub async fn send(&self, u: &SignedUrl, body: Vec<u8>) -> (u16, Vec<u8>) {
        let method = reqwest::Method::from_bytes(u.method.as_bytes()).expect("method");
        let mut req = self.http.request(method, &u.url);
        for h in &u.headers {
            if h[0] != "content-length" {
                req = req.header(h[0].as_str(), h[1].as_str());
            }
        }
        if u.method == "PUT" {
            req = req.body(body);
        }
        let resp = req.send().await.expect("artifact store request");
        let status = resp.status().as_u16();
        (status, resp.bytes().await.expect("body").to_vec())
    }
}

/// SHA-256, hex.
pub fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What the freelancer declares for `bytes`.
pub fn upload_of(bytes: &[u8]) -> NewUpload {
    NewUpload {
        name: "logo.png".into(),
        content_type: "image/png".into(),
        size_bytes: bytes.len() as u64,
        sha256: sha_hex(bytes),
    }
}

/// The registration of what `u` was minted for, declaring `bytes`.
pub fn registration(u: &SignedUrl, bytes: &[u8]) -> NewArtifact {
    NewArtifact {
        artifact_id: u.artifact_id.clone(),
        name: "logo.png".into(),
        content_type: "image/png".into(),
        size_bytes: bytes.len() as u64,
        sha256: sha_hex(bytes),
    }
}

/// The freelancer uploads `bytes` through a fresh PUT URL and registers them as an artifact
/// of the (funded) milestone.
pub async fn deliver(store: &Store, w: &Work, milestone_id: &str, bytes: &[u8]) -> ArtifactView {
    let e = at(store, wall_ms());
    let u = e
        .upload_url(&bob(), milestone_id, upload_of(bytes), w.signer())
        .await
        .expect("upload URL");
    let (status, _) = w.send(&u, bytes.to_vec()).await;
    assert_eq!(status, 200, "upload");
    e.register_artifact(&bob(), milestone_id, registration(&u, bytes), w.store())
        .await
        .expect("register")
}

pub fn terms(milestones: usize) -> NewRoom {
    NewRoom {
        title: "logo design".into(),
        freelancer: "bob".into(),
        currency: "EUR".into(),
        platform_fee_bps: 500,
        inspection_period_ms: INSPECTION_MS,
        max_revisions: 1,
        milestones: (0..milestones)
            .map(|i| NewMilestone {
                title: format!("part {i}"),
                price_minor: 10_000,
                funding_deadline_ms: FUNDING_DEADLINE,
                delivery_deadline_ms: DELIVERY_DEADLINE,
            })
            .collect(),
    }
}

/// A room both parties accepted.
pub async fn active_room(store: &Store, milestones: usize) -> RoomView {
    let e = at(store, T0);
    let room = e
        .create_room(&alice(), terms(milestones))
        .await
        .expect("create");
    e.accept_terms(&alice(), &room.id, None)
        .await
        .expect("client accepts");
    let room = e
        .accept_terms(&bob(), &room.id, None)
        .await
        .expect("freelancer accepts");
    assert_eq!(room.state, "active");
    room
}

/// Funds a milestone through a payment and the provider's success event.
pub async fn fund(store: &Store, milestone_id: &str) -> MilestoneView {
    let e = at(store, T0);
    let pid = format!("pi_{milestone_id}");
    e.register_payment(&system(), milestone_id, "sandbox", &pid)
        .await
        .expect("payment");
    e.apply_payment_event(&system(), "sandbox", &pid, PaymentEvent::Succeeded)
        .await
        .expect("succeeded");
    current(store, milestone_id).await
}

/// The milestone as the system sees it.
pub async fn current(store: &Store, milestone_id: &str) -> MilestoneView {
    let e = at(store, T0);
    let sys = system();
    let rooms = store
        .milestone(
            enclosure_api::store::escrow::Viewer {
                sub: &sys.sub,
                role: "system",
            },
            milestone_id,
        )
        .await
        .expect("read")
        .expect("exists");
    let _ = e;
    MilestoneView::from(&rooms.1)
}

/// A fresh active room with one milestone driven into `state` through the services.
/// Returns `None` for states no service reaches (transferred, needs_admin: the swap saga).
/// Funded milestones come with one registered artifact, so that they can be submitted.
pub async fn milestone_in(store: &Store, w: &Work, state: MilestoneState) -> Option<MilestoneView> {
    let room = active_room(store, 1).await;
    let id = room.milestones[0].id.clone();
    let e = at(store, T0);
    let m = match state {
        MilestoneState::Open => current(store, &id).await,
        MilestoneState::Expired => at(store, LATE)
            .expire(&system(), &id)
            .await
            .expect("expire"),
        MilestoneState::Transferred | MilestoneState::NeedsAdmin => return None,
        _ => {
            let funded = fund(store, &id).await;
            if state != MilestoneState::Refunded {
                deliver(store, w, &id, b"the work").await;
            }
            match state {
                MilestoneState::Funded => funded,
                MilestoneState::Refunded => at(store, LATE)
                    .refund_late(&alice(), &id, None)
                    .await
                    .expect("refund"),
                MilestoneState::Disputed => e.dispute(&bob(), &id, None).await.expect("dispute"),
                _ => {
                    let s = e
                        .submit(&bob(), &id, None, w.store())
                        .await
                        .expect("submit");
                    if state == MilestoneState::Submitted {
                        s
                    } else {
                        let v = e
                            .validate(&system(), &id, None, w.store())
                            .await
                            .expect("validate");
                        if state == MilestoneState::Validated {
                            v
                        } else {
                            e.accept(&alice(), &id, None).await.expect("accept")
                        }
                    }
                }
            }
        }
    };
    assert_eq!(m.state, state.as_str());
    Some(m)
}
