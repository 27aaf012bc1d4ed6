//! `enclosure-s3` as a process: it prints its endpoint, serves presigned URLs minted with the
//! same key pair, refuses a non-loopback address, and never takes the secret from argv.

mod artifacts_support;

use std::process::Stdio;

use artifacts_support::*;
use tokio::io::AsyncBufReadExt as _;

fn command(data_dir: &std::path::Path, listen: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_enclosure-s3"));
    cmd.arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", listen, "--bucket", BUCKET, "--region", REGION])
        .args(["--access-key", ACCESS_KEY])
        .env("ENCLOSURE_S3_SECRET_KEY", SECRET)
        // DEBUG everywhere: s3s must still stay quiet about requests and signatures.
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn the_binary_serves_presigned_urls_on_the_printed_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = command(dir.path(), "127.0.0.1:0").spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let endpoint = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .expect("no endpoint line within 30 s")
        .unwrap()
        .expect("stdout closed before the endpoint line");
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");

    let presigner = presigner_with(&endpoint, SECRET);
    let http = reqwest::Client::new();
    let body = b"artifact bytes".to_vec();
    let k = key("a1");
    let put = presigner
        .presign_put(&k, body.len() as u64, &sha256(&body), TTL)
        .unwrap();
    let mut req = http.put(put.url.clone()).body(body.clone());
    for (name, value) in &put.headers {
        if *name != "content-length" {
            req = req.header(*name, value);
        }
    }
    assert!(req.send().await.unwrap().status().is_success());
    let get = presigner.presign_get(&k, TTL).unwrap();
    let got = http
        .get(get.url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), &body[..]);
    let stored = dir.path().join("s3").join(BUCKET).join(k.as_str());
    assert_eq!(std::fs::read(stored).unwrap(), body);

    // A forged request: at DEBUG s3s would log the signature it expected for it.
    let forged = presigner_with(&endpoint, "another-secret")
        .presign_get(&k, TTL)
        .unwrap();
    assert_eq!(http.get(forged.url).send().await.unwrap().status(), 403);

    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(SECRET), "the secret reached the log");
    assert!(
        !stderr.contains("X-Amz-Signature"),
        "a signature reached the log"
    );
    assert!(
        !stderr.contains("signature mismatch"),
        "s3s debug output reached the log"
    );
}

#[tokio::test]
async fn the_binary_refuses_a_non_loopback_address() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path(), "0.0.0.0:0").output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}
