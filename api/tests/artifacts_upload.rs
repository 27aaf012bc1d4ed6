//! A presigned PUT accepts exactly the bytes it was minted for: any other length or hash is
//! refused, and a refused PUT leaves nothing in the store.

mod artifacts_support;

use artifacts_support::*;

#[tokio::test]
async fn a_body_other_than_the_bound_one_is_refused_and_nothing_is_written() {
    let stack = start().await;
    let k = key("a1");
    let promised = b"the agreed deliverable, version 1".to_vec();
    let put = stack
        .presigner
        .presign_put(&k, promised.len() as u64, &sha256(&promised), TTL)
        .unwrap();
    let before = stack.files();
    assert!(before.is_empty(), "{before:?}");

    // Same length, other bytes, the promised hash headers.
    let mut same_len = promised.clone();
    same_len[0] ^= 1;
    assert_eq!(stack.send(&put, same_len).await.status(), 400);
    assert_eq!(
        stack.files(),
        before,
        "same-length tampered body left something"
    );

    // Another length (reqwest sends the true content-length, which is signed differently).
    for other in [
        promised[..10].to_vec(),
        [&promised[..], b"+extra"].concat(),
        Vec::new(),
    ] {
        assert_eq!(stack.send(&put, other).await.status(), 403);
        assert_eq!(stack.files(), before, "other-length body left something");
    }

    // The other body with hash headers rewritten to match it: the signature no longer holds.
    let other = b"a different deliverable, version 2".to_vec();
    let mut forged = put.clone();
    forged.headers = vec![
        ("content-length", other.len().to_string()),
        (
            "x-amz-checksum-sha256",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, sha256(&other)),
        ),
        ("x-amz-content-sha256", hex::encode(sha256(&other))),
    ];
    assert_eq!(stack.send(&forged, other).await.status(), 403);
    assert_eq!(stack.files(), before);

    // The promised hash header missing altogether.
    let mut req = stack.http.put(put.url.clone());
    req = req.header("x-amz-content-sha256", hex::encode(sha256(&promised)));
    assert_eq!(
        req.body(promised.clone()).send().await.unwrap().status(),
        403
    );
    assert_eq!(stack.files(), before);

    assert_eq!(stack.presigner.head(&k).await.unwrap(), None);

    // The promised bytes still go through on the same URL.
    assert!(
        stack
            .send(&put, promised.clone())
            .await
            .status()
            .is_success()
    );
    let info = stack.presigner.head(&k).await.unwrap().unwrap();
    assert_eq!(
        (info.size, info.sha256),
        (promised.len() as u64, sha256(&promised))
    );
}

#[tokio::test]
async fn a_body_cut_short_is_refused_and_nothing_is_written() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let stack = start().await;
    let body = vec![7u8; 64 * 1024];
    let put = stack
        .presigner
        .presign_put(&key("a1"), body.len() as u64, &sha256(&body), TTL)
        .unwrap();
    let addr = stack.store.as_ref().unwrap().local_addr();
    let mut head = format!(
        "PUT {}?{} HTTP/1.1\r\nhost: {addr}\r\n",
        put.url.path(),
        put.url.query().unwrap()
    );
    for (name, value) in &put.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body[..body.len() / 2]).await.unwrap();
    conn.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The server may still be unwinding the connection: its partial file must go soon.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !stack.files().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(stack.files().is_empty(), "{:?}", stack.files());
}

#[tokio::test]
async fn the_store_checks_the_checksum_header_before_committing() {
    // Signed with the right secret but inconsistently: the body matches x-amz-content-sha256
    // (which s3s checks while streaming) but not x-amz-checksum-sha256. s3s-fs alone compares
    // the checksum only after renaming the object into place; the store's own layer refuses
    // the body before that.
    let stack = start().await;
    let body = b"actual bytes".to_vec();
    let claimed = sha256(b"claimed bytes");
    let length = body.len().to_string();
    let checksum = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, claimed);
    let content_sha = hex::encode(sha256(&body));
    let headers = [
        ("content-length", length.as_str()),
        ("x-amz-checksum-sha256", checksum.as_str()),
        ("x-amz-content-sha256", content_sha.as_str()),
    ];
    let url = url::Url::parse(&format!(
        "{}/{BUCKET}/{}",
        stack.endpoint(),
        key("a1").as_str()
    ))
    .unwrap();
    let url = rusty_s3::signing::sign(
        &jiff::Timestamp::now(),
        rusty_s3::Method::Put,
        url,
        ACCESS_KEY,
        SECRET,
        None,
        REGION,
        60,
        std::iter::empty(),
        headers.iter().copied(),
    );
    let status = stack
        .http
        .put(url)
        .header("x-amz-checksum-sha256", checksum.as_str())
        .header("x-amz-content-sha256", content_sha.as_str())
        .body(body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 400);
    assert!(stack.files().is_empty(), "{:?}", stack.files());
}
