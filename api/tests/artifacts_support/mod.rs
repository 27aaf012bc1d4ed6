//! Shared setup for the artifact tests: a local store on a loopback port in a temporary data
//! directory, and a presigner holding the same key pair.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use enclosure_api::artifacts::server::{LocalStore, LocalStoreConfig, objects_root};
use enclosure_api::artifacts::{ArtifactStore, ObjectKey, PresignedRequest};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

pub const BUCKET: &str = "enclosure-artifacts";
pub const REGION: &str = "us-east-1";
pub const ACCESS_KEY: &str = "ENCLOSURETEST";
pub const SECRET: &str = "test-secret-not-for-production";
pub const TTL: Duration = Duration::from_secs(120);

pub struct Stack {
    pub store: Option<LocalStore>,
    pub presigner: ArtifactStore,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

pub async fn start() -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::start(LocalStoreConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        bucket: BUCKET.into(),
        region: REGION.into(),
        access_key: ACCESS_KEY.into(),
        secret_key: Zeroizing::new(SECRET.into()),
    })
    .await
    .unwrap();
    let presigner = presigner_with(&store.endpoint_url(), SECRET);
    Stack {
        store: Some(store),
        presigner,
        http: reqwest::Client::new(),
        dir,
    }
}

pub fn presigner_with(endpoint: &str, secret: &str) -> ArtifactStore {
    ArtifactStore::new(
        endpoint,
        BUCKET,
        REGION,
        ACCESS_KEY,
        Zeroizing::new(secret.into()),
    )
    .unwrap()
}

impl Stack {
    pub fn endpoint(&self) -> String {
        self.store.as_ref().unwrap().endpoint_url()
    }

    /// Sends a presigned request as a client would: the signed headers verbatim, and `body`.
    pub async fn send(&self, p: &PresignedRequest, body: Vec<u8>) -> reqwest::Response {
        let method = reqwest::Method::from_bytes(p.method.as_bytes()).unwrap();
        let mut req = self.http.request(method, p.url.clone());
        for (name, value) in &p.headers {
            // The true length goes out below, whatever was signed.
            if *name != "content-length" {
                req = req.header(*name, value);
            }
        }
        if p.method == "PUT" {
            // reqwest sets content-length from a non-empty body, but leaves it out for an
            // empty one, where `content-length: 0` (signed or not) must be sent by hand.
            if body.is_empty() {
                req = req.header("content-length", "0");
            }
            req = req.body(body);
        }
        req.send().await.unwrap()
    }

    /// Every file under the store's object root, relative to it, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        let root = objects_root(self.dir.path());
        let mut out = Vec::new();
        walk(&root, &root, &mut out);
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).unwrap().to_path_buf());
        }
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub fn key(artifact: &str) -> ObjectKey {
    ObjectKey::for_artifact("room-1", "milestone-1", artifact).unwrap()
}
