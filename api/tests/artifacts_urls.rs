//! Presigned URLs against the local store: the round trip, and every way a URL is refused
//! (expired, moved to another key, signed with another secret, outside the lifetime window,
//! stretched past 300 s, scoped to another region, carrying unsigned headers).

mod artifacts_support;

use std::time::{Duration, SystemTime};

use artifacts_support::*;
use enclosure_api::artifacts::{ArtifactError, ObjectInfo};

/// Uploads `bytes` under `artifact` through a fresh PUT URL and returns the key.
async fn upload(
    stack: &Stack,
    artifact: &str,
    bytes: &[u8],
) -> enclosure_api::artifacts::ObjectKey {
    let k = key(artifact);
    let put = stack
        .presigner
        .presign_put(&k, bytes.len() as u64, &sha256(bytes), TTL)
        .unwrap();
    let resp = stack.send(&put, bytes.to_vec()).await;
    assert!(resp.status().is_success(), "upload: {}", resp.status());
    k
}

#[tokio::test]
async fn presigned_put_then_get_round_trips_the_bytes() {
    let stack = start().await;
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let k = upload(&stack, "a1", &bytes).await;

    let get = stack.presigner.presign_get(&k, TTL).unwrap();
    let resp = stack.send(&get, Vec::new()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &bytes[..]);

    let want = ObjectInfo {
        size: bytes.len() as u64,
        sha256: sha256(&bytes),
    };
    assert_eq!(stack.presigner.head(&k).await.unwrap(), Some(want));
    assert_eq!(
        stack.presigner.digest(&k, 1 << 20).await.unwrap(),
        Some(want)
    );
    assert!(matches!(
        stack.presigner.digest(&k, 1000).await,
        Err(ArtifactError::DigestTooLarge { .. })
    ));
    assert_eq!(stack.presigner.head(&key("absent")).await.unwrap(), None);
    stack.store.unwrap().shutdown().await;
}

#[tokio::test]
async fn an_empty_artifact_round_trips() {
    let stack = start().await;
    let k = upload(&stack, "empty", b"").await;
    let info = stack.presigner.head(&k).await.unwrap().unwrap();
    assert_eq!((info.size, info.sha256), (0, sha256(b"")));
}

#[tokio::test]
async fn a_url_used_after_expiry_is_refused() {
    let stack = start().await;
    let k = upload(&stack, "a1", b"delivered work").await;
    let long_ago = SystemTime::now() - Duration::from_secs(200);

    let get = stack
        .presigner
        .presign_get_at(&k, Duration::from_secs(60), long_ago)
        .unwrap();
    assert!(get.expires_at < SystemTime::now());
    assert_eq!(stack.send(&get, Vec::new()).await.status(), 403);

    let before = stack.files();
    let body = b"late upload".to_vec();
    let put = stack
        .presigner
        .presign_put_at(
            &key("a2"),
            body.len() as u64,
            &sha256(&body),
            Duration::from_secs(60),
            long_ago,
        )
        .unwrap();
    assert_eq!(stack.send(&put, body).await.status(), 403);
    assert_eq!(stack.files(), before, "an expired PUT wrote something");

    // Just inside its lifetime the same kind of URL still works.
    let recent = SystemTime::now() - Duration::from_secs(50);
    let get = stack
        .presigner
        .presign_get_at(&k, Duration::from_secs(60), recent)
        .unwrap();
    assert_eq!(stack.send(&get, Vec::new()).await.status(), 200);
}

#[tokio::test]
async fn a_url_with_a_changed_path_is_refused() {
    let stack = start().await;
    let mine = upload(&stack, "mine", b"mine").await;
    let theirs = upload(&stack, "theirs", b"someone else's work").await;

    let mut get = stack.presigner.presign_get(&mine, TTL).unwrap();
    get.url.set_path(&format!("/{BUCKET}/{}", theirs.as_str()));
    assert_eq!(stack.send(&get, Vec::new()).await.status(), 403);

    // Another room entirely, and a traversal attempt, fare no better.
    for path in [
        format!("/{BUCKET}/rooms/room-2/milestones/milestone-1/theirs"),
        format!("/{BUCKET}/rooms/room-1/milestones/milestone-1/mine/../theirs"),
        format!("/{BUCKET}/rooms/room-1/milestones/milestone-1/mine%2F..%2Ftheirs"),
    ] {
        get.url.set_path(&path);
        let status = stack.send(&get, Vec::new()).await.status();
        assert!(status.is_client_error(), "{path}: {status}");
    }

    let before = stack.files();
    let body = b"overwrite attempt".to_vec();
    let mut put = stack
        .presigner
        .presign_put(&key("new"), body.len() as u64, &sha256(&body), TTL)
        .unwrap();
    put.url.set_path(&format!("/{BUCKET}/{}", theirs.as_str()));
    assert_eq!(stack.send(&put, body).await.status(), 403);
    assert_eq!(stack.files(), before, "a moved PUT wrote something");
    let info = stack.presigner.head(&theirs).await.unwrap().unwrap();
    assert_eq!(info.sha256, sha256(b"someone else's work"));
}

#[tokio::test]
async fn a_url_signed_with_another_secret_is_refused() {
    let stack = start().await;
    let k = upload(&stack, "a1", b"work").await;
    let forger = presigner_with(&stack.endpoint(), "some-other-secret");

    let get = forger.presign_get(&k, TTL).unwrap();
    assert_eq!(stack.send(&get, Vec::new()).await.status(), 403);

    let before = stack.files();
    let body = b"forged".to_vec();
    let put = forger
        .presign_put(&key("a2"), body.len() as u64, &sha256(&body), TTL)
        .unwrap();
    assert_eq!(stack.send(&put, body).await.status(), 403);
    assert_eq!(stack.files(), before);
    assert!(matches!(
        forger.head(&k).await,
        Err(ArtifactError::Refused { status: 403 })
    ));
}

#[tokio::test]
async fn lifetimes_outside_60_to_300_seconds_are_refused_by_the_presigner() {
    let stack = start().await;
    let k = key("a1");
    for secs in [0u64, 1, 59, 301, 3600, 7 * 86_400] {
        let ttl = Duration::from_secs(secs);
        assert!(matches!(
            stack.presigner.presign_get(&k, ttl),
            Err(ArtifactError::TtlOutOfRange { .. })
        ));
        assert!(matches!(
            stack.presigner.presign_put(&k, 1, &[0; 32], ttl),
            Err(ArtifactError::TtlOutOfRange { .. })
        ));
    }
    for secs in [60u64, 300] {
        assert!(
            stack
                .presigner
                .presign_get(&k, Duration::from_secs(secs))
                .is_ok()
        );
    }
}

/// Signs with rusty-s3 directly (the right secret), to reach the store's own rules.
fn raw_sign(
    stack: &Stack,
    method: rusty_s3::Method,
    path: &str,
    region: &str,
    expires: u64,
    headers: &[(&str, &str)],
) -> url::Url {
    let url = url::Url::parse(&format!("{}{path}", stack.endpoint())).unwrap();
    rusty_s3::signing::sign(
        &jiff::Timestamp::now(),
        method,
        url,
        ACCESS_KEY,
        SECRET,
        None,
        region,
        expires,
        std::iter::empty(),
        headers.iter().copied(),
    )
}

#[tokio::test]
async fn the_store_refuses_what_the_presigner_would_never_sign() {
    let stack = start().await;
    let k = upload(&stack, "a1", b"work").await;
    let object = format!("/{BUCKET}/{}", k.as_str());
    let http = &stack.http;

    // A correctly signed URL that lives longer than 300 s.
    let url = raw_sign(&stack, rusty_s3::Method::Get, &object, REGION, 3600, &[]);
    assert_eq!(http.get(url).send().await.unwrap().status(), 403);

    // Scoped to another region.
    let url = raw_sign(&stack, rusty_s3::Method::Get, &object, "eu-west-1", 60, &[]);
    assert_eq!(http.get(url).send().await.unwrap().status(), 403);

    // A key outside the artifact form, and a bucket listing.
    let url = raw_sign(
        &stack,
        rusty_s3::Method::Get,
        &format!("/{BUCKET}/other"),
        REGION,
        60,
        &[],
    );
    assert_eq!(http.get(url).send().await.unwrap().status(), 403);
    let url = raw_sign(
        &stack,
        rusty_s3::Method::Get,
        &format!("/{BUCKET}/"),
        REGION,
        60,
        &[],
    );
    assert_eq!(http.get(url).send().await.unwrap().status(), 403);

    // A PUT that does not bind length and hash.
    let url = raw_sign(
        &stack,
        rusty_s3::Method::Put,
        &format!("/{BUCKET}/{}", key("a2").as_str()),
        REGION,
        60,
        &[],
    );
    let before = stack.files();
    assert_eq!(http.put(url).body("x").send().await.unwrap().status(), 403);
    assert_eq!(stack.files(), before);

    // A delete, even correctly signed.
    let url = raw_sign(&stack, rusty_s3::Method::Delete, &object, REGION, 60, &[]);
    assert_eq!(http.delete(url).send().await.unwrap().status(), 403);
    assert!(stack.presigner.head(&k).await.unwrap().is_some());

    // No signature at all.
    let url = format!("{}{object}", stack.endpoint());
    assert_eq!(http.get(url).send().await.unwrap().status(), 403);
}

#[tokio::test]
async fn unsigned_amz_headers_on_a_valid_url_are_refused() {
    let stack = start().await;
    let theirs = upload(&stack, "theirs", b"someone else's work").await;
    let body = b"mine".to_vec();
    let put = stack
        .presigner
        .presign_put(&key("mine"), body.len() as u64, &sha256(&body), TTL)
        .unwrap();
    let before = stack.files();
    for (name, value) in [
        ("x-amz-meta-note", "hello".to_string()),
        // A wrong MD5 that s3s-fs would only notice after committing the object.
        ("content-md5", "AAAAAAAAAAAAAAAAAAAAAA==".to_string()),
        // Would turn the PUT into a server-side copy of another room's artifact.
        ("x-amz-copy-source", format!("{BUCKET}/{}", theirs.as_str())),
    ] {
        let mut req = stack.http.put(put.url.clone()).header(name, value);
        for (h, v) in &put.headers {
            if *h != "content-length" {
                req = req.header(*h, v);
            }
        }
        let status = req.body(body.clone()).send().await.unwrap().status();
        assert_eq!(status, 403, "{name}");
    }
    assert_eq!(stack.files(), before);
}
